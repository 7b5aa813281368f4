"""Watches a namespace's ConfigMaps with the unmodified Python client, for
a while, and prints each event's type, name and resourceVersion as JSON
lines. Prints "watching" first, once the watch is open.

usage: watch_configmaps.py NAMESPACE SECONDS
"""
import json
import sys

from kubernetes import client, config, watch


def main() -> None:
    namespace, seconds = sys.argv[1], int(sys.argv[2])
    config.load_incluster_config()
    core = client.CoreV1Api()
    listed = core.list_namespaced_config_map(namespace)
    print("watching", flush=True)
    stream = watch.Watch().stream(
        core.list_namespaced_config_map,
        namespace,
        resource_version=listed.metadata.resource_version,
        timeout_seconds=seconds,
    )
    for event in stream:
        o = event["object"]
        print(json.dumps([event["type"], o.metadata.name, o.metadata.resource_version]), flush=True)


if __name__ == "__main__":
    main()
