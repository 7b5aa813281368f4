#!/usr/bin/env bash
# The instructions the interceptor executes for one proxied and recorded
# request, counted by callgrind: a figure that does not move with the load
# of the machine, where a timed run's does by 10 to 20% between runs. It is
# for comparing two builds of the interceptor (a change against the commit
# before it), not for comparing against other proxies: an instruction of one
# program's crypto or copies costs what it costs, whatever the count says.
#
#   hack/bench/instructions.sh                  # the interceptor of this tree
#   APIWITNESS_BENCH_INTERCEPTOR=A APIWITNESS_BENCH_BASELINE_INTERCEPTOR=B \
#     hack/bench/instructions.sh --requests 4000
#
# Each case runs the interceptor under callgrind twice, for a few requests
# and for `--requests` more, and divides the difference of the two totals
# by that difference of requests: start-up, the TLS handshakes and the
# certificate loading fall out. Every record is shipped, zstd NDJSON, to a
# local sink, as in hack/bench/interceptor.sh. The upstream is a local TLS
# nginx serving JSON shaped as the apiserver's: a ConfigMap of 1 KiB of data
# with its managedFields (1.4 KB), and a list of 50 Pods (about 200 KB).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
requests=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --requests) requests=$2; shift 2 ;;
    *) echo "usage: $0 [--requests N]" >&2; exit 2 ;;
  esac
done
case "$requests" in
  ''|*[!0-9]*) echo "instructions: --requests takes a whole number, not '$requests'" >&2; exit 2 ;;
esac
[ "$requests" -ge 50 ] || { echo "instructions: --requests must be at least 50" >&2; exit 2; }

if ! command -v valgrind >/dev/null || ! command -v nginx >/dev/null || ! command -v h2load >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind nginx nghttp2-client >/dev/null
fi

interceptor=${APIWITNESS_BENCH_INTERCEPTOR:-$("$repo/hack/build-interceptor.sh")}
baseline=${APIWITNESS_BENCH_BASELINE_INTERCEPTOR:-}

work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

pki_dir=$work
# shellcheck source=../lib/pki.sh
. "$repo/hack/lib/pki.sh"
pki_new_ca ca bench-ca
pki_new_cert tls ca /CN=bench.local serverAuth "DNS:bench.local,IP:127.0.0.1"
cat "$work/tls.crt" "$work/ca.crt" > "$work/chain.crt"

python3 - "$work" <<'PY'
import base64, json, os, sys
work = sys.argv[1]
def managed(fields, manager="kubectl-create"):
    return [{"manager": manager, "operation": "Update", "apiVersion": "v1",
             "time": "2026-12-01T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields}]
configmap = {
    "kind": "ConfigMap", "apiVersion": "v1",
    "metadata": {"name": "small", "namespace": "apiwitness-bench",
                 "uid": "0b5a3f52-8a61-4d47-9c36-1f0c8e0d6a11", "resourceVersion": "48211",
                 "creationTimestamp": "2026-12-01T10:00:00Z",
                 "managedFields": managed({"f:data": {".": {}, "f:v": {}}})},
    "data": {"v": base64.b64encode(os.urandom(768)).decode()},
}
def pod(i):
    container = lambda name, image: {
        "name": name, "image": image, "args": ["--port=8080", "--log-level=info"],
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "env": [{"name": "MODE", "value": "bench"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}],
        "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
                           "timeoutSeconds": 1, "periodSeconds": 5, "successThreshold": 1, "failureThreshold": 3},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/web"}],
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent"}
    return {
        "metadata": {"name": f"bench-{i}", "namespace": "apiwitness-bench",
                     "uid": f"4c1d2e3f-0000-4000-8000-{i:012d}", "resourceVersion": str(40000 + i),
                     "creationTimestamp": "2026-12-01T10:00:00Z",
                     "labels": {"app": "bench", "tier": "web", "index": str(i)},
                     "annotations": {"example.com/owner": "bench", "example.com/revision": str(i)},
                     "managedFields": managed({"f:metadata": {"f:labels": {".": {}, "f:app": {}, "f:index": {}, "f:tier": {}}},
                                               "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}}},
                                              "kubectl-client-side-apply")},
        "spec": {"volumes": [{"name": "config", "configMap": {"name": "small", "defaultMode": 420}}],
                 "containers": [container("web", f"registry.example/web:1.{i}"),
                                container("sidecar", "registry.example/sidecar:2.0")],
                 "restartPolicy": "Always", "terminationGracePeriodSeconds": 5, "dnsPolicy": "ClusterFirst",
                 "serviceAccountName": "bench", "serviceAccount": "bench", "securityContext": {},
                 "schedulerName": "default-scheduler", "priority": 0, "enableServiceLinks": True,
                 "preemptionPolicy": "PreemptLowerPriority"},
        "status": {"phase": "Pending", "qosClass": "Burstable"}}
pods = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "48211"},
        "items": [pod(i) for i in range(1, 51)]}
for name, doc in (("configmap", configmap), ("pods", pods)):
    with open(os.path.join(work, name), "w") as f:
        f.write(json.dumps(doc, separators=(",", ":")) + "\n")
PY

up=18453; sink=18454; listen=18455; admin=18495
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  default_type application/json;
  server {
    listen 127.0.0.1:$up ssl http2;
    ssl_certificate $work/chain.crt;
    ssl_certificate_key $work/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    root $work;
  }
  server {
    listen 127.0.0.1:$sink;
    location / { client_max_body_size 64m; return 200 '{"errors":[]}'; }
  }
}
EOF
nginx -c "$work/nginx.conf"
sleep 0.3

# BIN REQUESTS PATH [h2load args...] -> the instructions callgrind counted
count() {
  local bin=$1 n=$2 path=$3 out="$work/callgrind.out"
  shift 3
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --mode explicit \
    --upstream "https://127.0.0.1:$up" --listen "127.0.0.1:$listen" --worker-threads 1 \
    --upstream-server-name bench.local --upstream-ca-file "$work/ca.crt" \
    --tls-cert-file "$work/chain.crt" --tls-key-file "$work/tls.key" \
    --aggregator-url "http://127.0.0.1:$sink/ingest" --batch-wait 100ms \
    --admin-addr "127.0.0.1:$admin" --token-file /nonexistent --log warn >"$work/interceptor.log" 2>&1 &
  local pid=$! ready=0
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && { ready=1; break; }
    sleep 0.1
  done
  if [ "$ready" != 1 ]; then
    kill "$pid" 2>/dev/null || true
    echo "instructions: the interceptor did not become ready:" >&2; cat "$work/interceptor.log" >&2; exit 1
  fi
  h2load "$@" -t1 -c4 -m1 -n "$n" "https://127.0.0.1:$listen/$path" >"$work/h2load.out" 2>&1
  if ! grep -q "succeeded, 0 failed" "$work/h2load.out" || ! grep -q "$n succeeded" "$work/h2load.out"; then
    kill "$pid" 2>/dev/null || true
    echo "instructions: not every request succeeded:" >&2; cat "$work/h2load.out" >&2; exit 1
  fi
  # Shipped before it stops: the last batch is part of what a request costs.
  sleep 1
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

# LABEL PATH REQUESTS [h2load args...]
measure() {
  local label=$1 path=$2 n=$3
  shift 3
  local few=$((n / 5)) a b ours base
  a=$(count "$interceptor" "$few" "$path" "$@")
  b=$(count "$interceptor" $((few + n)) "$path" "$@")
  ours=$(( (b - a) / n ))
  printf '| %s | interceptor | %d | - |\n' "$label" "$ours"
  [ -n "$baseline" ] || return 0
  a=$(count "$baseline" "$few" "$path" "$@")
  b=$(count "$baseline" $((few + n)) "$path" "$@")
  base=$(( (b - a) / n ))
  awk -v l="$label" -v b="$base" -v o="$ours" 'BEGIN {printf "| %s | baseline | %d | %.3f |\n", l, b, o / b}'
}

echo "| request | build | instructions a request | interceptor / baseline |"
echo "|---|---|---:|---:|"
measure "ConfigMap, 1.4 KB of JSON, HTTP/1.1 client" configmap "$requests" --h1
measure "ConfigMap, 1.4 KB of JSON, HTTP/2 client" configmap "$requests"
measure "50 Pods, $(wc -c < "$work/pods") bytes of JSON, HTTP/1.1 client" pods $((requests / 10)) --h1
echo "(callgrind; the slope between $((requests / 5)) and $((requests / 5 + requests)) requests, a tenth of those for the list; h2load -t1 -c4 -m1)"
