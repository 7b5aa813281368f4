"""A Deployment rolled out three times by the unmodified Python client (JSON
bodies): created with one image, then patched to two more. Prints the
resourceVersion of each answer as a JSON list.

usage: rollout.py NAMESPACE NAME IMAGE [IMAGE]...
"""
import json
import sys

from kubernetes import client, config


def main() -> None:
    namespace, name, first, *later = sys.argv[1:]
    config.load_incluster_config()
    apps = client.AppsV1Api()
    labels = {"app": name}
    created = apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="web", image=first)]),
                ),
            ),
        ),
    )
    versions = [created.metadata.resource_version]
    for image in later:
        patched = apps.patch_namespaced_deployment(
            name, namespace, {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}}
        )
        versions.append(patched.metadata.resource_version)
    print(json.dumps(versions))


if __name__ == "__main__":
    main()
