"""Runs inside a netns pod whose interceptor rotates its certificate every few
seconds. One Python client keeps its pooled (keep-alive) connections and makes
a request every 0.25 s; every second a fresh TLS connection reads the serial
of the certificate being served. Prints what it saw as one JSON object.

usage: keepalive_probe.py NAMESPACE SECONDS
"""
import json
import os
import socket
import ssl
import sys
import time

from kubernetes import client, config

SA = "/var/run/secrets/kubernetes.io/serviceaccount"


def served_serial(host: str) -> str:
    context = ssl.create_default_context(cafile=f"{SA}/ca.crt")
    context.check_hostname = False
    with socket.create_connection((host, 443), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="kubernetes.default.svc") as tls:
            der = tls.getpeercert(binary_form=True)
    return der.hex()[-64:]


def main() -> None:
    namespace, seconds = sys.argv[1], float(sys.argv[2])
    config.load_incluster_config()
    core = client.CoreV1Api()
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    failures, requests, serials = [], 0, []
    deadline = time.time() + seconds
    next_probe = 0.0
    while time.time() < deadline:
        try:
            core.list_namespaced_config_map(namespace, limit=1)
            requests += 1
        except Exception as e:  # every failure is reported, none is fatal
            failures.append(repr(e)[:200])
        if time.time() >= next_probe:
            try:
                serial = served_serial(host)
                if not serials or serials[-1] != serial:
                    serials.append(serial)
            except Exception as e:  # a fresh connection that fails is one too
                failures.append(f"new connection at {time.time():.3f}: {repr(e)[:200]}")
            next_probe = time.time() + 1.0
        time.sleep(0.25)
    print(json.dumps({"requests": requests, "failures": failures, "serials": serials}))


if __name__ == "__main__":
    main()
