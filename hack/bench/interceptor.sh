#!/usr/bin/env bash
# Benchmark: the interceptor against the proxies it is measured by, in one run,
# on the same upstreams, with the same load generator (wrk, keep-alive).
#
#   direct         the client talks to the upstream itself
#   interceptor    through apiwitness-interceptor (release build), recording on
#                  and shipping every record to a sink
#   nginx          nginx as a TLS-terminating reverse proxy (Debian's package)
#   mitmproxy      mitmdump in reverse mode (from PyPI)
#
# Upstreams: a local TLS server (nginx serving 1 KiB and 64 KiB bodies), and
# the real kube-apiserver of hack/cluster (a 1 KiB and a 64 KiB ConfigMap,
# and a list of 50 Pods as JSON and as protobuf).
# It also measures new TLS connections (Connection: close), the interceptor's
# peak RSS, the CPU the interceptor and nginx spend a request, and both at a
# fixed 1000 req/s (latency below saturation, and RSS at the rate the memory
# target names), and prints every figure with its ratio to nginx.
#
#   hack/bench/interceptor.sh [--duration 10] [--connections 16] [--workers 1] [--rounds 3] [--pgo]
#
# --pgo measures a profile-guided build of the interceptor
# (hack/build-interceptor.sh --pgo), with a plain build in the same rounds as
# the row "interceptor (baseline build)".
#
# --workers is the number of threads the interceptor serves with
# (--worker-threads) and of nginx's worker processes, the same for both.
# mitmproxy has one. The upstream nginx always has one per core.
#
# The interceptor and nginx run --rounds times each, one after the other, and
# each figure is the median of its rounds: on a small machine the apiserver's
# own rate drifts by 10 to 20% from one run to the next.
#
# Every upstream is measured with an HTTP/1.1 client (wrk) and an HTTP/2
# client (h2load, as client-go speaks to the apiserver).
#
# Everything listens on 127.0.0.1; it stops what it started on exit.
#
# To look into one row: APIWITNESS_BENCH_ONLY=TEXT runs only the rows whose
# label holds TEXT (such as "ConfigMap large"), and APIWITNESS_BENCH_PERF_DIR=DIR
# has perf record the interceptor and nginx's workers in each of their rounds,
# into DIR (then perf report -i DIR/<file>). APIWITNESS_BENCH_STRACE_DIR=DIR
# has strace count their system calls instead (which slows them down; read
# the counts, not the rates). With APIWITNESS_BENCH_PERF_EVENTS=E1,E2 as
# well, perf counts those events (perf stat) instead of sampling: say
# probe_libc:malloc, once `perf probe -x <libc> malloc` has made it.
# APIWITNESS_BENCH_PERF_FREQ sets the sampling rate (499 a second by default).
# APIWITNESS_BENCH_INTERCEPTOR=FILE measures that binary instead of building one,
# and APIWITNESS_BENCH_BASELINE_INTERCEPTOR=FILE adds a round of that binary
# after each round of nginx, as the row "interceptor (baseline build)": two
# builds compared in one run (hack/build-interceptor.sh --pgo against a plain
# build, say; --pgo does just that).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
duration=10
connections=16
proxy_workers=1
rounds=3
pgo=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --workers) proxy_workers=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --pgo) pgo=1; shift ;;
    *) echo "usage: $0 [--duration SECONDS] [--connections N] [--workers N] [--rounds N] [--pgo]" >&2; exit 2 ;;
  esac
done

need() { command -v "$1" >/dev/null || { echo "bench: $1 is missing ($2)" >&2; exit 127; }; }
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null || ! command -v h2load >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx nghttp2-client >/dev/null
fi
# Training (for a profile-guided build, hack/build-interceptor.sh --pgo) runs
# only the interceptor's rounds: nothing is compared.
training=${APIWITNESS_BENCH_TRAINING:-0}
[ "$training" = 1 ] || command -v mitmdump >/dev/null || python3 -m pip install -q --disable-pip-version-check mitmproxy
need wrk "apt-get install wrk"; need nginx "apt-get install nginx"; need h2load "apt-get install nghttp2-client"
[ "$training" = 1 ] || need mitmdump "pip install mitmproxy"

work=$(mktemp -d)
# nginx workers run unprivileged and read their files from here.
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx-up.pid" ] && kill "$(cat "$work/nginx-up.pid")" 2>/dev/null || true
  [ -f "$work/nginx-proxy.pid" ] && kill "$(cat "$work/nginx-proxy.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${APIWITNESS_BENCH_INTERCEPTOR:-}" ]; then
  interceptor=$APIWITNESS_BENCH_INTERCEPTOR
elif [ "$pgo" = 1 ]; then
  echo "bench: building the interceptor (release, profile-guided), and a plain build as the baseline" >&2
  interceptor=$("$repo/hack/build-interceptor.sh" --pgo)
  : "${APIWITNESS_BENCH_BASELINE_INTERCEPTOR:=$("$repo/hack/build-interceptor.sh")}"
else
  echo "bench: building the interceptor (release)" >&2
  interceptor=$("$repo/hack/build-interceptor.sh")
fi

# Certificates: one CA; the upstream and every proxy serve "bench.local".
openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca.key"
openssl req -x509 -new -key "$work/ca.key" -subj /CN=bench-ca -days 2 -out "$work/ca.crt" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$work/tls.key"
openssl req -new -key "$work/tls.key" -subj /CN=bench.local -out "$work/tls.csr"
printf 'subjectAltName=DNS:bench.local,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$work/ext"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial -days 2 \
  -extfile "$work/ext" -out "$work/tls.crt" 2>/dev/null
cat "$work/tls.crt" "$work/ca.crt" > "$work/chain.crt"
head -c 768 /dev/urandom | base64 -w0 > "$work/1k"
head -c 49152 /dev/urandom | base64 -w0 > "$work/64k"

up=18443; icpt=18444; nginx_proxy=18445; mitm=18446; sink=18447; admin=18490
workers=$(nproc)

# Debian's nginx (1.22) speaks TLS 1.2 only unless told otherwise; clients,
# the interceptor and the apiserver speak 1.3, and so do both nginx servers
# here (before, nginx resumed a new connection without a key exchange).
cat > "$work/nginx-up.conf" <<EOF
worker_processes $workers;
pid $work/nginx-up.pid;
error_log $work/nginx-up.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$up ssl http2;
    ssl_certificate $work/chain.crt;
    ssl_certificate_key $work/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    root $work;
    location /ingest { return 200 '{"errors":[]}'; }
  }
  server {
    listen 127.0.0.1:$sink;
    location / { client_max_body_size 64m; return 200 '{"errors":[]}'; }
  }
}
EOF
write_proxy_conf() { # TARGET_HOSTPORT CA SERVER_NAME
  cat > "$work/nginx-proxy.conf" <<EOF
worker_processes $proxy_workers;
pid $work/nginx-proxy.pid;
error_log $work/nginx-proxy.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream target { server $1; keepalive 64; }
  server {
    listen 127.0.0.1:$nginx_proxy ssl http2;
    ssl_certificate $work/chain.crt;
    ssl_certificate_key $work/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass https://target;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $2;
      proxy_ssl_server_name on;
      proxy_ssl_name $3;
      proxy_ssl_session_reuse on;
    }
  }
}
EOF
}

run_wrk() { # URL [extra wrk args] -> "rps p50_ms p99_ms"
  local url=$1; shift
  local out
  out=$(wrk -t2 -c"$connections" -d"${duration}s" --latency "$@" "$url" 2>&1) || { echo "0 0 0"; return; }
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}
run_h2load() { # URL [extra h2load args] -> "rps p50_ms p99_ms"
  local url=$1; shift
  local out log=$work/h2load.log
  rm -f "$log"
  out=$(h2load -t$((connections < 2 ? connections : 2)) -c"$connections" -m1 -D "$duration" --log-file="$log" "$@" "$url" 2>&1) || { echo "0 0 0"; return; }
  local rps
  rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' <<<"$out")
  # The log has a line a request: start (us), status, duration (us).
  read -r p50 p99 < <(awk '{print $3}' "$log" | sort -n | awk '{v[NR]=$1} END {
    if (NR == 0) { print "0 0"; exit }
    i50 = int(NR * 0.50); if (i50 < 1) i50 = 1; i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
    printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000 }')
  echo "$rps $p50 $p99"
}
median() { # lines of "rps p50 p99 cpu_us" -> the median of each column
  local col out=()
  for col in 1 2 3 4; do
    out+=("$(awk -v c="$col" '{print $c}' <<<"$1" | sort -g | awk '{v[NR]=$1} END {print v[int((NR + 1) / 2)]}')")
  done
  echo "${out[*]}"
}
to_ms() { # wrk prints 812.00us, 1.20ms or 2.01s
  local v=$1
  case "$v" in
    *us) awk -v x="${v%us}" 'BEGIN{printf "%.3f", x/1000}' ;;
    *ms) awk -v x="${v%ms}" 'BEGIN{printf "%.3f", x}' ;;
    *s) awk -v x="${v%s}" 'BEGIN{printf "%.3f", x*1000}' ;;
    *) echo "$v" ;;
  esac
}

start_interceptor() { # UPSTREAM_URL [SERVER_NAME] [CA] [EXTRA ARGS...]
  "$interceptor" --mode explicit --upstream "$1" --listen "127.0.0.1:$icpt" --worker-threads "$proxy_workers" \
    --upstream-server-name "${2:-bench.local}" --upstream-ca-file "${3:-$work/ca.crt}" \
    --tls-cert-file "$work/chain.crt" --tls-key-file "$work/tls.key" \
    --aggregator-url "http://127.0.0.1:$sink/ingest" --admin-addr "127.0.0.1:$admin" \
    --token-file /nonexistent --log warn "${@:4}" >"$work/interceptor.log" 2>&1 &
  icpt_pid=$!
  pids+=("$icpt_pid")
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && return; sleep 0.1; done
  echo "bench: the interceptor did not become ready:" >&2; cat "$work/interceptor.log" >&2; exit 1
}
stop_interceptor() { kill "$icpt_pid"; wait "$icpt_pid" 2>/dev/null || true; }
start_nginx_proxy() { nginx -c "$work/nginx-proxy.conf"; sleep 0.3; }
stop_nginx_proxy() { kill "$(cat "$work/nginx-proxy.pid")"; sleep 0.3; }
shipping_figures() { # -> "shipped stripped dropped", once the last batch had time to go
  sleep 2
  curl -s "http://127.0.0.1:$admin/metrics" | awk '
    /^apiwitness_interceptor_records_shipped_total / {s=$NF}
    /^apiwitness_interceptor_records_stripped_total / {t=$NF}
    /^apiwitness_interceptor_records_dropped_total / {d=$NF}
    END {printf "%d %d %d\n", s, t, d}'
}
cpu_ticks() { # PID -> user+system clock ticks (1/100 s) of the process so far
  awk '{print $14 + $15}' "/proc/$1/stat"
}
nginx_worker_ticks() { # the proxy nginx's workers, together
  local t=0 p
  for p in $(pgrep -P "$(cat "$work/nginx-proxy.pid")"); do t=$((t + $(cpu_ticks "$p"))); done
  echo "$t"
}
upstream_ticks() { # UPSTREAM_URL -> clock ticks of every process listening on its port, together
  local port=${1##*:} t=0 p
  for p in $(ss -ltnpH "sport = :${port%%/*}" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
    t=$((t + $(cpu_ticks "$p")))
  done
  echo "$t"
}
per_request() { # COUNT FIGURES("rps ...") -> COUNT a request, to two decimals
  awk -v n="$1" -v r="${2%% *}" -v d="$duration" 'BEGIN { if (r > 0) printf "%.2f", n / (r * d); else print "-" }'
}
cpu_us_per_request() { # TICKS FIGURES("rps ...") -> µs of CPU a request
  awk -v t="$1" -v r="${2%% *}" -v d="$duration" 'BEGIN { if (r > 0) printf "%.0f", t * 10000 / (r * d); else print "-" }'
}
switches() { # PIDS... -> context switches of every thread of these processes so far
  local p
  for p in "$@"; do cat /proc/"$p"/task/*/status 2>/dev/null; done |
    awk '/^(non)?voluntary_ctxt_switches/ {n += $2} END {print n + 0}'
}
peak_rss_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
larger() { awk -v a="$1" -v b="$2" 'BEGIN {print (b > a) ? b : a}'; }

start_mitm() { # UPSTREAM_URL
  mitmdump --mode "reverse:$1" --listen-host 127.0.0.1 --listen-port "$mitm" -q \
    --set ssl_insecure=true --set connection_strategy=lazy --set "confdir=$work/mitm" >"$work/mitm.log" 2>&1 &
  mitm_pid=$!
  pids+=("$mitm_pid")
  for _ in $(seq 1 150); do curl -sk -o /dev/null "https://127.0.0.1:$mitm/" && return; sleep 0.1; done
  echo "bench: mitmdump did not start:" >&2; cat "$work/mitm.log" >&2; exit 1
}
stop_mitm() { kill "$mitm_pid"; wait "$mitm_pid" 2>/dev/null || true; }

results=()
record() { results+=("$1|$2|$3"); printf '  %-44s %-12s %s\n' "$1" "$2" "$3" >&2; }

record_rounds() { # LABEL ICPT_RUNS NGINX_RUNS RSS: the medians of both proxies' rounds, and the peak RSS
  record "$1" interceptor "$(median "${2%$'\n'}")"
  record "$1" nginx "$(median "${3%$'\n'}")"
  record "$1" interceptor-peak-rss-mib "$4"
}
wanted() { # LABEL -> whether APIWITNESS_BENCH_ONLY lets this row run
  [ -z "${APIWITNESS_BENCH_ONLY:-}" ] || [[ "$1" == *"$APIWITNESS_BENCH_ONLY"* ]]
}
perf_start() { # NAME PIDS(comma-separated): perf records them for the round, if asked
  perf_pid=""
  if [ -n "${APIWITNESS_BENCH_STRACE_DIR:-}" ]; then
    mkdir -p "$APIWITNESS_BENCH_STRACE_DIR"
    local p args=()
    for p in ${2//,/ }; do args+=(-p "$p"); done
    strace -c -f "${args[@]}" -o "$APIWITNESS_BENCH_STRACE_DIR/$1.txt" 2>/dev/null &
  elif [ -n "${APIWITNESS_BENCH_PERF_DIR:-}" ]; then
    mkdir -p "$APIWITNESS_BENCH_PERF_DIR"
    if [ -n "${APIWITNESS_BENCH_PERF_EVENTS:-}" ]; then
      perf stat -e "$APIWITNESS_BENCH_PERF_EVENTS" -p "$2" -o "$APIWITNESS_BENCH_PERF_DIR/$1.txt" >/dev/null 2>&1 &
    else
      perf record -q -F "${APIWITNESS_BENCH_PERF_FREQ:-499}" --call-graph dwarf,16384 -p "$2" \
        -o "$APIWITNESS_BENCH_PERF_DIR/$1.data" >/dev/null 2>&1 &
    fi
  else
    return 0
  fi
  perf_pid=$!
  sleep 0.5
}
perf_stop() {
  [ -n "$perf_pid" ] || return 0
  kill -INT "$perf_pid" 2>/dev/null || true
  wait "$perf_pid" 2>/dev/null || true
}

# At a fixed rate, below what either proxy can carry: the latency a client
# sees when the proxy is not the bottleneck, and the interceptor's RSS at the
# rate its memory target is set for. h2load, 10 connections of RATE/10
# requests a second each (APIWITNESS_BENCH_FIXED_RATE_CONNECTIONS=N: N
# connections; with 1, and a rate one connection cannot carry, each request
# waits for the one before: the latency a request adds alone).
fixed_rate_connections=${APIWITNESS_BENCH_FIXED_RATE_CONNECTIONS:-10}
run_h2load_fixed_rate() { # URL [extra h2load args]: run_h2load on the fixed-rate connections
  local connections=$fixed_rate_connections
  run_h2load "$@"
}

# One round of an interceptor binary, without perf or counts beside: its
# "rps p50 p99 cpu_us" into $measured, its peak RSS into $measured_rss.
# One round of one proxy: "measured" gets its figures and CPU a request.
# With perf_as=NAME, perf (or strace) records the round as
# interceptor-NAME or nginx-NAME, if asked (perf_start).
measure_interceptor() { # BINARY UPSTREAM_URL SERVER_NAME CA TOOL PATH [TOOL ARGS...]
  local binary=$1 upstream=$2 name=$3 ca=$4 tool=$5 path=$6 ticks up_ticks figures
  shift 6
  interceptor=$binary start_interceptor "$upstream" "$name" "$ca"
  [ -z "${perf_as:-}" ] || perf_start "interceptor-$perf_as" "$icpt_pid"
  ticks=$(cpu_ticks "$icpt_pid")
  up_ticks=$(upstream_ticks "$upstream")
  figures=$($tool "https://127.0.0.1:$icpt$path" "$@")
  ticks=$(($(cpu_ticks "$icpt_pid") - ticks))
  measured_upstream=$(cpu_us_per_request $(($(upstream_ticks "$upstream") - up_ticks)) "$figures")
  [ -z "${perf_as:-}" ] || perf_stop
  measured="$figures $(cpu_us_per_request "$ticks" "$figures")"
  measured_rss=$(peak_rss_mib "$icpt_pid")
  stop_interceptor
}
measure_nginx() { # TOOL PATH [TOOL ARGS...], with nginx-proxy.conf written
  local tool=$1 path=$2 ticks figures
  shift 2
  start_nginx_proxy
  [ -z "${perf_as:-}" ] || perf_start "nginx-$perf_as" "$(pgrep -d, -P "$(cat "$work/nginx-proxy.pid")")"
  ticks=$(nginx_worker_ticks)
  figures=$($tool "https://127.0.0.1:$nginx_proxy$path" "$@")
  ticks=$(($(nginx_worker_ticks) - ticks))
  [ -z "${perf_as:-}" ] || perf_stop
  measured="$figures $(cpu_us_per_request "$ticks" "$figures")"
  stop_nginx_proxy
}

headers() { # HEADER... -> "hdr": each as a -H argument
  hdr=()
  local h
  for h in "$@"; do hdr+=(-H "$h"); done
}

bench_fixed_rate() { # LABEL PATH UPSTREAM_URL SERVER_NAME CA RATE [HEADER...]
  local label="$1, $6 req/s" path=$2 upstream=$3 name=$4 ca=$5 rate=$6
  wanted "$label" || return 0
  [ "$training" = 0 ] || return 0
  local hdr
  headers "${@:7}"
  echo "bench: $label" >&2
  write_proxy_conf "${upstream#https://}" "$ca" "$name"
  local icpt_runs="" nginx_runs="" rss=0 r figures ticks measured measured_rss
  for r in $(seq 1 "$rounds"); do
    measure_interceptor "$interceptor" "$upstream" "$name" "$ca" run_h2load_fixed_rate "$path" --rps=$((rate / fixed_rate_connections)) "${hdr[@]}"
    icpt_runs+="$measured"$'\n'
    rss=$(larger "$rss" "$measured_rss")
    measure_nginx run_h2load_fixed_rate "$path" --rps=$((rate / fixed_rate_connections)) "${hdr[@]}"
    nginx_runs+="$measured"$'\n'
  done
  record_rounds "$label, HTTP/2 client" "$icpt_runs" "$nginx_runs" "$rss"
}

bench_target() { # LABEL PATH UPSTREAM_URL SERVER_NAME CA [HEADER...]
  local label=$1 path=$2 upstream=$3 name=$4 ca=$5
  wanted "$label" || return 0
  local hdr
  headers "${@:6}"
  echo "bench: $label" >&2
  [ "$training" = 1 ] || record "$label" direct "$(run_wrk "$upstream$path" "${hdr[@]}")"
  write_proxy_conf "${upstream#https://}" "$ca" "$name"
  local client tool
  for client in "HTTP/1.1" "HTTP/2"; do
    tool=run_wrk
    [ "$client" = HTTP/2 ] && tool=run_h2load
    local icpt_runs="" nginx_runs="" icpt_cs="" nginx_cs="" icpt_up="" nginx_up="" baseline_up="" baseline_runs="" baseline_rss=0 rss=0 shipped=0 stripped=0 dropped=0 r figures ticks measured measured_rss
    for r in $(seq 1 "$rounds"); do
      start_interceptor "$upstream" "$name" "$ca"
      perf_start "$(tr -c 'a-zA-Z0-9\n' - <<<"interceptor-$label-$client-$r")" "$icpt_pid"
      ticks=$(cpu_ticks "$icpt_pid")
      up_ticks=$(upstream_ticks "$upstream")
      cs=$(switches "$icpt_pid")
      figures=$($tool "https://127.0.0.1:$icpt$path" "${hdr[@]}")
      ticks=$(($(cpu_ticks "$icpt_pid") - ticks))
      icpt_up+="$(cpu_us_per_request $(($(upstream_ticks "$upstream") - up_ticks)) "$figures") "
      icpt_cs+="$(per_request $(($(switches "$icpt_pid") - cs)) "$figures") "
      perf_stop
      icpt_runs+="$figures $(cpu_us_per_request "$ticks" "$figures")"$'\n'
      rss=$(larger "$rss" "$(peak_rss_mib "$icpt_pid")")
      read -r s t d < <(shipping_figures)
      shipped=$((shipped + s)); stripped=$((stripped + t)); dropped=$((dropped + d))
      stop_interceptor
      [ "$training" = 0 ] || continue
      start_nginx_proxy
      perf_start "$(tr -c 'a-zA-Z0-9\n' - <<<"nginx-$label-$client-$r")" \
        "$(pgrep -d, -P "$(cat "$work/nginx-proxy.pid")")"
      ticks=$(nginx_worker_ticks)
      up_ticks=$(upstream_ticks "$upstream")
      nginx_workers=$(pgrep -P "$(cat "$work/nginx-proxy.pid")" | tr '\n' ' ')
      # shellcheck disable=SC2086
      cs=$(switches $nginx_workers)
      figures=$($tool "https://127.0.0.1:$nginx_proxy$path" "${hdr[@]}")
      ticks=$(($(nginx_worker_ticks) - ticks))
      nginx_up+="$(cpu_us_per_request $(($(upstream_ticks "$upstream") - up_ticks)) "$figures") "
      # shellcheck disable=SC2086
      nginx_cs+="$(per_request $(($(switches $nginx_workers) - cs)) "$figures") "
      perf_stop
      nginx_runs+="$figures $(cpu_us_per_request "$ticks" "$figures")"$'\n'
      stop_nginx_proxy
      if [ -n "${APIWITNESS_BENCH_BASELINE_INTERCEPTOR:-}" ]; then
        measure_interceptor "$APIWITNESS_BENCH_BASELINE_INTERCEPTOR" "$upstream" "$name" "$ca" "$tool" "$path" "${hdr[@]}"
        baseline_runs+="$measured"$'\n'
        baseline_up+="$measured_upstream "
        baseline_rss=$(larger "$baseline_rss" "$measured_rss")
      fi
    done
    record_rounds "$label, $client client" "$icpt_runs" "$nginx_runs" "$rss"
    if [ -n "$baseline_runs" ]; then
      record "$label, $client client" "interceptor (baseline build)" "$(median "${baseline_runs%$'\n'}")"
      record "$label, $client client" interceptor-baseline-peak-rss-mib "$baseline_rss"
    fi
    record "$label, $client client" context-switches-a-request "interceptor ${icpt_cs% }, nginx ${nginx_cs% }"
    record "$label, $client client" upstream-cpu-a-request \
      "via the interceptor ${icpt_up% }, via nginx ${nginx_up% }${baseline_up:+, via the baseline build ${baseline_up% }}"
    record "$label, $client client" interceptor-records "$shipped shipped ($stripped stripped of their bodies when the queue was full), $dropped dropped"
  done
  [ "$training" = 0 ] || return 0
  start_mitm "$upstream"
  record "$label" mitmproxy "$(run_wrk "https://127.0.0.1:$mitm$path" "${hdr[@]}")"
  stop_mitm
}

pod_list() { # N -> a List of N Pods, labelled app=bench, to apply
  local i
  echo '{"apiVersion": "v1", "kind": "List", "items": ['
  for i in $(seq 1 "$1"); do
    [ "$i" = 1 ] || echo ','
    cat <<EOF
{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "bench-$i", "namespace": "apiwitness-bench",
   "labels": {"app": "bench", "tier": "web", "index": "$i"},
   "annotations": {"example.com/owner": "bench", "example.com/revision": "$i"}},
 "spec": {"serviceAccountName": "bench", "terminationGracePeriodSeconds": 5,
   "containers": [
     {"name": "web", "image": "registry.example/web:1.$i",
      "args": ["--port=8080", "--log-level=info"],
      "ports": [{"name": "http", "containerPort": 8080}],
      "env": [{"name": "MODE", "value": "bench"},
              {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
      "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
      "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5},
      "volumeMounts": [{"name": "config", "mountPath": "/etc/web"}]},
     {"name": "sidecar", "image": "registry.example/sidecar:2.0",
      "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
   "volumes": [{"name": "config", "configMap": {"name": "small"}}]}}
EOF
  done
  echo ']}'
}

# Training only: the calls the rows above do not make, so that a
# profile-guided build does not compile them as cold: watches (JSON and
# protobuf) with events, creates, patches, deletes, and an exec (refused by
# the apiserver, which has no node to reach, after the upgrade was asked for).
train_other_calls() {
  [ "$training" = 1 ] || return 0
  echo "bench: training: watches, writes and an exec" >&2
  start_interceptor "${on_apiserver[@]}"
  local base="https://127.0.0.1:$icpt/api/v1/namespaces/apiwitness-bench" watches=() accept i
  for accept in application/json application/vnd.kubernetes.protobuf; do
    curl -sk -o /dev/null -H "$auth" -H "Accept: $accept" "$base/configmaps?watch=1&timeoutSeconds=8" &
    watches+=($!)
  done
  sleep 0.5
  for i in $(seq 1 60); do
    curl -sk -o /dev/null -H "$auth" -H 'Content-Type: application/json' -X POST \
      -d "{\"metadata\":{\"name\":\"train-$i\"},\"data\":{\"n\":\"$i\"}}" "$base/configmaps"
    curl -sk -o /dev/null -H "$auth" -H 'Content-Type: application/merge-patch+json' -X PATCH \
      -d "{\"data\":{\"m\":\"$i\"}}" "$base/configmaps/train-$i"
    curl -sk -o /dev/null -H "$auth" -H 'Accept: application/vnd.kubernetes.protobuf' "$base/configmaps/train-$i"
    curl -sk -o /dev/null -H "$auth" -X DELETE "$base/configmaps/train-$i"
  done
  curl -sk -o /dev/null -H "$auth" -X POST -H 'Connection: Upgrade' -H 'Upgrade: SPDY/3.1' \
    -H 'X-Stream-Protocol-Version: v4.channel.k8s.io' "$base/pods/bench-1/exec?command=true&stdout=true" || true
  wait "${watches[@]}" || true
  stop_interceptor
}

# Watches: $connections clients watch one ConfigMap through the proxy while
# four writers patch it (directly) `watch_patches` times; the figures are the
# events delivered a second and the proxy's CPU an event. p50 and p99 do not
# apply. JSON or protobuf (`;stream=watch` frames, which the interceptor
# decodes into JSON for each event).
watch_patches=2000
watch_round() { # PROXY_PORT ACCEPT PIDS_COMMAND -> "events_per_s - - cpu_us_per_event"
  local port=$1 accept=$2 ticks_of=$3 i watchers=() ticks started elapsed events
  local url="https://127.0.0.1:$port/api/v1/namespaces/apiwitness-bench/configmaps?watch=1&fieldSelector=metadata.name%3Dwatched&timeoutSeconds=120"
  for i in $(seq 1 "$connections"); do
    curl -sk -N -H "$auth" -H "Accept: $accept" "$url" -o "$work/watch-$i" &
    watchers+=($!)
  done
  sleep 1
  ticks=$($ticks_of)
  started=$(date +%s.%N)
  # Four writers, each patching its own key: about four times as many
  # events a second as one.
  local writers=() w
  for w in 1 2 3 4; do
    for i in $(seq 1 $((watch_patches / 4))); do
      curl -sk -o /dev/null -H "$auth" -H 'Content-Type: application/merge-patch+json' -X PATCH \
        -d "{\"data\":{\"w$w\":\"$i\"}}" "$apiserver/api/v1/namespaces/apiwitness-bench/configmaps/watched"
    done &
    writers+=($!)
  done
  wait "${writers[@]}"
  sleep 1
  ticks=$(($($ticks_of) - ticks))
  elapsed=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN {print e - s}')
  kill "${watchers[@]}" 2>/dev/null || true
  wait "${watchers[@]}" 2>/dev/null || true
  events=$((connections * watch_patches))
  # Every watcher must have seen every patch, or the figures mean nothing.
  if [ "$accept" = application/json ]; then
    for i in $(seq 1 "$connections"); do
      [ "$(grep -c MODIFIED "$work/watch-$i")" -ge "$watch_patches" ] ||
        { echo "bench: watcher $i saw $(grep -c MODIFIED "$work/watch-$i") of $watch_patches events" >&2; echo "0 - - -"; return; }
    done
  fi
  awk -v n="$events" -v t="$ticks" -v e="$elapsed" 'BEGIN { printf "%.0f - - %.1f\n", n / e, t * 10000 / n }'
}

bench_watch() { # ENCODING ACCEPT
  local label="kube-apiserver, watch events, $1" accept=$2
  wanted "$label" || return 0
  [ "$training" = 0 ] || return 0
  echo "bench: $label" >&2
  kubectl -n apiwitness-bench create configmap watched --from-literal=n=0 >/dev/null 2>&1 || true
  write_proxy_conf "${apiserver#https://}" "$APIWITNESS_CLUSTER_CA" kubernetes.default.svc
  local icpt_runs="" nginx_runs="" baseline_runs="" rss=0 r
  for r in $(seq 1 "$rounds"); do
    start_interceptor "${on_apiserver[@]}"
    icpt_runs+="$(watch_round "$icpt" "$accept" "cpu_ticks $icpt_pid")"$'\n'
    rss=$(larger "$rss" "$(peak_rss_mib "$icpt_pid")")
    stop_interceptor
    start_nginx_proxy
    nginx_runs+="$(watch_round "$nginx_proxy" "$accept" nginx_worker_ticks)"$'\n'
    stop_nginx_proxy
    if [ -n "${APIWITNESS_BENCH_BASELINE_INTERCEPTOR:-}" ]; then
      interceptor=$APIWITNESS_BENCH_BASELINE_INTERCEPTOR start_interceptor "${on_apiserver[@]}"
      baseline_runs+="$(watch_round "$icpt" "$accept" "cpu_ticks $icpt_pid")"$'\n'
      stop_interceptor
    fi
  done
  record_rounds "$label (events/s, CPU µs an event)" "$icpt_runs" "$nginx_runs" "$rss"
  [ -z "$baseline_runs" ] ||
    record "$label (events/s, CPU µs an event)" "interceptor (baseline build)" "$(median "${baseline_runs%$'\n'}")"
}

nginx -c "$work/nginx-up.conf"
sleep 0.3
local_up="https://127.0.0.1:$up"
bench_target "local TLS server, 1 KiB" /1k "$local_up" bench.local "$work/ca.crt"
bench_target "local TLS server, 64 KiB" /64k "$local_up" bench.local "$work/ca.crt"
bench_fixed_rate "local TLS server, 64 KiB" /64k "$local_up" bench.local "$work/ca.crt" 1000

# Each request on a new connection: a TLS handshake with the proxy (wrk
# resumes its session from the proxy's ticket, so no signature is made, but
# TLS 1.3 makes a key exchange every time), which then reuses its upstream
# connections. Both proxies in alternating rounds, with the CPU they spend a
# connection.
if wanted "new TLS connections, 1 KiB"; then
  echo "bench: new TLS connection per request (Connection: close)" >&2
  label="new TLS connections, 1 KiB"
  [ "$training" = 1 ] || record "$label" direct "$(run_wrk "$local_up/1k" -H 'Connection: close')"
  write_proxy_conf "${local_up#https://}" "$work/ca.crt" bench.local
  icpt_runs="" nginx_runs="" rss=0
  for r in $(seq 1 "$rounds"); do
    round=$(tr -c 'a-zA-Z0-9\n' - <<<"$label-$r")
    perf_as=$round measure_interceptor "$interceptor" "$local_up" bench.local "$work/ca.crt" \
      run_wrk /1k -H 'Connection: close'
    icpt_runs+="$measured"$'\n'
    rss=$(larger "$rss" "$measured_rss")
    [ "$training" = 0 ] || continue
    perf_as=$round measure_nginx run_wrk /1k -H 'Connection: close'
    nginx_runs+="$measured"$'\n'
  done
  [ "$training" = 1 ] || record_rounds "$label" "$icpt_runs" "$nginx_runs" "$rss"
fi

if [ "${APIWITNESS_BENCH_LOCAL_ONLY:-0}" != 1 ] && "$repo/hack/cluster" status >/dev/null 2>&1; then
  eval "$("$repo/hack/cluster" env)"
  kubectl create namespace apiwitness-bench >/dev/null 2>&1 || true
  kubectl -n apiwitness-bench create serviceaccount bench >/dev/null 2>&1 || true
  kubectl -n apiwitness-bench create rolebinding bench --clusterrole=view --serviceaccount=apiwitness-bench:bench >/dev/null 2>&1 || true
  # The watch rows and the training write in this namespace.
  kubectl -n apiwitness-bench create rolebinding bench-edit --clusterrole=edit \
    --serviceaccount=apiwitness-bench:bench >/dev/null 2>&1 || true
  kubectl -n apiwitness-bench create configmap small --from-file=v="$work/1k" >/dev/null 2>&1 || true
  kubectl -n apiwitness-bench create configmap large --from-file=v="$work/64k" >/dev/null 2>&1 || true
  if [ "$(kubectl -n apiwitness-bench get pods -l app=bench -o name | wc -l)" -lt 50 ]; then
    pod_list 50 | kubectl create -f - >/dev/null
  fi
  # Held in this shell only; never printed.
  token=$(kubectl -n apiwitness-bench create token bench --duration=1h)
  apiserver="$APIWITNESS_APISERVER"
  on_apiserver=("$apiserver" kubernetes.default.svc "$APIWITNESS_CLUSTER_CA")
  auth="Authorization: Bearer $token"
  # wrk does not verify certificates; the proxies verify the apiserver's.
  for obj in small large; do
    bench_target "kube-apiserver, ConfigMap $obj" "/api/v1/namespaces/apiwitness-bench/configmaps/$obj" \
      "${on_apiserver[@]}" "$auth"
  done
  # What client-go's informers ask for: a list of 50 Pods as JSON and as
  # protobuf.
  bench_target "kube-apiserver, 50 Pods, JSON" /api/v1/namespaces/apiwitness-bench/pods \
    "${on_apiserver[@]}" "$auth"
  bench_target "kube-apiserver, 50 Pods, protobuf" /api/v1/namespaces/apiwitness-bench/pods \
    "${on_apiserver[@]}" "$auth" "Accept: application/vnd.kubernetes.protobuf"
  # client-go's transport asks for gzip, and the apiserver compresses
  # answers over 128 KiB: the list as an informer gets it on a cluster.
  bench_target "kube-apiserver, 50 Pods, JSON, gzip" /api/v1/namespaces/apiwitness-bench/pods \
    "${on_apiserver[@]}" "$auth" "Accept-Encoding: gzip"
  bench_fixed_rate "kube-apiserver, ConfigMap small" /api/v1/namespaces/apiwitness-bench/configmaps/small \
    "${on_apiserver[@]}" 1000 "$auth"
  bench_watch JSON application/json
  bench_watch protobuf "application/vnd.kubernetes.protobuf;stream=watch"
  train_other_calls
  unset token auth
else
  echo "bench: hack/cluster is not up: the kube-apiserver rows are skipped" >&2
fi

echo
echo "| upstream | via | req/s | p50 ms | p99 ms | CPU µs a request | req/s vs nginx | p99 vs nginx |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for r in "${results[@]}"; do
  IFS='|' read -r label via figures <<<"$r"
  case "$via" in interceptor-* | context-switches-* | upstream-*) continue ;; esac
  read -r rps p50 p99 cpu <<<"$figures"
  # direct and mitmproxy (HTTP/1.1 clients) compare with nginx's HTTP/1.1 row.
  base=$(printf '%s\n' "${results[@]}" | awk -F'|' -v l="$label" -v l1="$label, HTTP/1.1 client" \
    '($1==l || $1==l1) && $2=="nginx" {print $3}')
  read -r nrps _ np99 <<<"${base:-0 0 0}"
  ratio=$(awk -v a="$rps" -v b="$nrps" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "-" }')
  lat=$(awk -v a="$p99" -v b="$np99" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "-" }')
  echo "| $label | $via | $rps | $p50 | $p99 | ${cpu:--} | $ratio | $lat |"
done
echo
echo "Interceptor peak RSS (MiB) under the load above, and the records it shipped, stripped and dropped (all rounds):"
row_figure() { # LABEL VIA -> its figures
  printf '%s\n' "${results[@]}" | awk -F'|' -v l="$1" -v v="$2" '$1==l && $2==v {print $3}'
}
for r in "${results[@]}"; do
  IFS='|' read -r label via figures <<<"$r"
  [ "$via" = interceptor-peak-rss-mib ] || continue
  echo "- $label: $figures MiB"
  baseline=$(row_figure "$label" interceptor-baseline-peak-rss-mib)
  [ -z "$baseline" ] || echo "  the baseline build: $baseline MiB"
  for what in "records:interceptor-records" \
    "context switches a request, each round:context-switches-a-request" \
    "the upstream's CPU µs a request, each round:upstream-cpu-a-request"; do
    figure=$(row_figure "$label" "${what##*:}")
    [ -z "$figure" ] || echo "  ${what%:*}: $figure"
  done
done
echo "($workers cores; the interceptor and nginx with $proxy_workers worker(s) each; wrk -t2 -c$connections -d${duration}s and h2load -t2 -c$connections -m1 -D $duration; medians of $rounds rounds)"
