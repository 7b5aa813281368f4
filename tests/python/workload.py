"""A small controller-like workload with the unmodified Python `kubernetes`
client and its in-cluster config: create, read (a 40 KiB ConfigMap too, as
the bytes the apiserver sent), list, watch, patch, a 404, and a
deletecollection. Prints what it saw as one JSON object.

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
    # Large enough to travel apart from its record's line, unchecked, and
    # small enough that the apiserver does not gzip it.
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="py-large", labels=labels),
            data={"big": "0123456789abcdef" * 2560},
        ),
    )
    large = core.read_namespaced_config_map("py-large", namespace, _preload_content=False)
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
        "large_body": large.data.decode(),
        "watched": seen,
        "missing_status": missing,
    }))


if __name__ == "__main__":
    main()
