"""Runs inside a netns pod with the unmodified Python `kubernetes` client and
its in-cluster config. Prints one JSON object describing what it saw, so the
Rust test asserts on facts rather than on log text.

usage: incluster_probe.py NAMESPACE ALLOWED_CONFIGMAP
"""
import json
import sys

from kubernetes import client, config
from kubernetes.client.rest import ApiException


def main() -> None:
    namespace, configmap = sys.argv[1], sys.argv[2]
    config.load_incluster_config()
    host = client.Configuration.get_default_copy().host
    core = client.CoreV1Api()
    names = [cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items]
    got = core.read_namespaced_config_map(configmap, namespace).data
    review = client.AuthenticationV1Api().create_self_subject_review(
        client.V1SelfSubjectReview()
    )
    forbidden_status = None
    try:
        core.list_namespaced_secret(namespace)
    except ApiException as e:
        forbidden_status = e.status
    print(json.dumps({
        "host": host,
        "configmaps": names,
        "configmap_data": got,
        "username": review.status.user_info.username,
        "secrets_list_status": forbidden_status,
    }))


if __name__ == "__main__":
    main()
