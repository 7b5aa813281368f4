"""The demo's workload: a small controller-like program with the unmodified
Python `kubernetes` client and its in-cluster config. It does what real
controllers do: lists and watches, creates a ConfigMap and a Postgres custom
resource, patches them several ways (merge, JSON, strategic, server-side
apply), updates a status, reads a Secret, meets a 404 and a 409, and deletes
things. It prints one line per step.

usage: workload.py NAMESPACE
"""
import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

GROUP, VERSION, PLURAL = "postgrescontroller.kubeplus", "v1", "postgreses"


def step(text):
    print(f"  {text}", flush=True)


def main():
    ns = sys.argv[1]
    config.load_incluster_config()
    core = client.CoreV1Api()
    custom = client.CustomObjectsApi()

    listed = core.list_namespaced_config_map(ns)
    step(f"listed {len(listed.items)} ConfigMaps")
    events = list(watch.Watch().stream(core.list_namespaced_config_map, ns, timeout_seconds=1))
    step(f"watched ConfigMaps: {len(events)} events")

    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"), data={"mode": "demo"}))
    core.patch_namespaced_config_map("settings", ns, {"data": {"mode": "live"}})  # strategic merge
    step("created ConfigMap settings, patched it (strategic merge)")

    pg = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Postgres", "metadata": {"name": "client25"},
          "spec": {"replicas": 1, "image": "postgres:15", "users": [{"name": "alice", "role": "reader"}]}}
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, pg)
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "client25", {"spec": {"replicas": 2}})  # merge
    api = client.ApiClient()
    api.call_api(f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}/client25", "PATCH",
                 header_params={"Content-Type": "application/json-patch+json", "Accept": "application/json"},
                 body=[{"op": "replace", "path": "/spec/image", "value": "postgres:16"}], auth_settings=["BearerToken"])
    applied = dict(pg, spec={"replicas": 3, "image": "postgres:16", "users": [{"name": "alice", "role": "admin"}]})
    api.call_api(f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}/client25", "PATCH",
                 query_params=[("fieldManager", "demo-controller"), ("force", "true")],
                 header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
                 body=applied, auth_settings=["BearerToken"])
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "client25", {"status": {"ready": True}})
    step("created Postgres client25, patched it (merge, JSON patch, server-side apply), set its status")

    secret = core.read_namespaced_secret("db-password", ns)
    step(f"read Secret db-password ({len(secret.data or {})} keys; its values never leave the pod)")

    try:
        core.read_namespaced_config_map("missing", ns)
    except ApiException as e:
        step(f"read ConfigMap missing: {e.status}")
    stale = core.read_namespaced_config_map("settings", ns)
    stale.metadata.resource_version = "1"
    try:
        core.replace_namespaced_config_map("settings", ns, stale)
    except ApiException as e:
        step(f"replaced ConfigMap settings with a stale resourceVersion: {e.status}")

    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "client25")
    core.delete_namespaced_config_map("settings", ns)
    step("deleted Postgres client25 and ConfigMap settings")


if __name__ == "__main__":
    main()
