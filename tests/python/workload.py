"""A small controller-like workload with the unmodified Python `kubernetes`
client and its in-cluster config: create, read, list, watch, patch, a 404,
and a deletecollection. Prints what it saw as one JSON object.

usage: workload.py NAMESPACE
"""
import json
import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def main() -> None:
    namespace = sys.argv[1]
    config.load_incluster_config()
    core = client.CoreV1Api()
    labels = {"app.kubernetes.io/part-of": "apiwitness-e2e"}
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-1", labels=labels), data={"k": "v"}),
    )
    read = core.read_namespaced_config_map("py-1", namespace)
    core.list_namespaced_config_map(namespace, label_selector="app.kubernetes.io/part-of=apiwitness-e2e")
    seen = []
    for event in watch.Watch().stream(core.list_namespaced_config_map, namespace, timeout_seconds=2):
        seen.append([event["type"], event["object"].metadata.name])
    core.patch_namespaced_config_map("py-1", namespace, {"data": {"k": "v2"}})
    missing = None
    try:
        core.read_namespaced_config_map("py-gone", namespace)
    except ApiException as e:
        missing = e.status
    core.delete_collection_namespaced_config_map(
        namespace, label_selector="app.kubernetes.io/part-of=apiwitness-e2e"
    )
    print(json.dumps({
        "read_resource_version": read.metadata.resource_version,
        "watched": seen,
        "missing_status": missing,
    }))


if __name__ == "__main__":
    main()
