#!/usr/bin/env python3
"""Reads a Pod object (JSON on stdin) the way the kubelet would, so that a
network-namespace pod can play one of its containers faithfully.

  podspec.py env CONTAINER     the container's env, resolved (values and
                               downward-API fieldRefs), NUL-separated KEY=VALUE
  podspec.py uid CONTAINER     its runAsUser (container, else pod), or nothing
  podspec.py names             the init containers, then the containers
"""
import json
import sys


def container(pod, name):
    spec = pod["spec"]
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        if c["name"] == name:
            return c
    sys.exit(f"podspec: no container {name} in pod {pod['metadata'].get('name')}")


def field(pod, path):
    at = pod
    for part in path.split("."):
        at = at.get(part, "") if isinstance(at, dict) else ""
    return at if isinstance(at, str) else ""


def main():
    pod = json.load(sys.stdin)
    what = sys.argv[1]
    if what == "env":
        out = []
        for e in container(pod, sys.argv[2]).get("env", []):
            ref = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            value = field(pod, ref) if ref else e.get("value", "")
            out.append(f"{e['name']}={value}")
        sys.stdout.write("\0".join(out) + ("\0" if out else ""))
    elif what == "uid":
        c = container(pod, sys.argv[2])
        uid = c.get("securityContext", {}).get("runAsUser", pod["spec"].get("securityContext", {}).get("runAsUser"))
        if uid is not None:
            print(uid)
    elif what == "names":
        spec = pod["spec"]
        print(" ".join(c["name"] for c in spec.get("initContainers", []) + spec.get("containers", [])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
