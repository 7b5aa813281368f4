#!/usr/bin/env bash
# Builds the interceptor in release mode and prints the binary's path.
#
#   hack/build-interceptor.sh          a plain release build
#   hack/build-interceptor.sh --pgo    a profile-guided build
#
# --pgo builds an instrumented interceptor, runs it under the interceptor
# bench's load for a short while (hack/bench/interceptor.sh in its training
# mode: HTTP/1.1 and HTTP/2 clients, 1 KiB and 64 KiB bodies, a local TLS
# upstream and, when hack/cluster is up, the kube-apiserver), and builds
# again with what the run counted: the compiler lays out the hot paths
# together and inlines along them. On the bench that took 7 to 24% off the
# interceptor's CPU a request (docs/benchmarks.md). Code the training does
# not run is compiled as cold; it works the same, but may be slower than in
# a plain build.
#
# The profile is cached, keyed by the compiler's version and the content of
# every file the interceptor is built from (not the bench's: a profile
# from an older training load still fits the code), under
# ${XDG_CACHE_HOME:-~/.cache}/apiwitness/pgo/<key>/merged.profdata, and
# printed on stderr: an image build can take it (see interceptor/Dockerfile).
# The two builds have target directories of their own under
# $CARGO_TARGET_DIR (or target/), since their compiler flags differ from a
# plain build's.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}

case "${1:-}" in
  "") cd "$repo" && cargo build --release -q -p apiwitness-interceptor
      echo "$target/release/apiwitness-interceptor"; exit 0 ;;
  --pgo) ;;
  *) echo "usage: $0 [--pgo]" >&2; exit 2 ;;
esac

# llvm-profdata merges the raw counts; it must come with the compiler in use.
sysroot=$(rustc --print sysroot)
find_profdata() { find "$sysroot/lib/rustlib" -name llvm-profdata -type f 2>/dev/null | head -1; }
profdata=$(find_profdata)
if [ -z "$profdata" ]; then
  rustup component add llvm-tools >&2
  profdata=$(find_profdata)
fi
[ -n "$profdata" ] || { echo "build-interceptor: llvm-profdata not found under $sysroot" >&2; exit 1; }

cd "$repo"
# Named, the target keeps RUSTFLAGS off build scripts and proc macros: only
# the interceptor's own code is instrumented, and only it writes counts.
host=$(rustc -vV | sed -n 's/^host: //p')
sources=$(git ls-files -z Cargo.toml Cargo.lock interceptor record runtime hack/build-interceptor.sh |
  xargs -0 cat | sha256sum | cut -c1-16)
key="$(rustc --version | tr -c 'a-zA-Z0-9.\n' _)_$sources"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/apiwitness/pgo/$key"
if [ ! -s "$cache/merged.profdata" ]; then
  rm -rf "$cache"
  mkdir -p "$cache/raw"
  echo "build-interceptor: building the instrumented interceptor" >&2
  RUSTFLAGS="-Cprofile-generate=$cache/raw" \
    cargo build --release -q -p apiwitness-interceptor --target "$host" --target-dir "$target/pgo-generate"
  echo "build-interceptor: training it under the bench's load" >&2
  APIWITNESS_BENCH_TRAINING=1 \
    APIWITNESS_BENCH_INTERCEPTOR="$target/pgo-generate/$host/release/apiwitness-interceptor" \
    "$repo/hack/bench/interceptor.sh" --duration 3 --rounds 1 >/dev/null
  ls "$cache"/raw/*.profraw >/dev/null 2>&1 || { echo "build-interceptor: the training wrote no profile" >&2; exit 1; }
  "$profdata" merge -o "$cache/merged.profdata.partial" "$cache/raw"
  mv "$cache/merged.profdata.partial" "$cache/merged.profdata"
  rm -rf "$cache/raw"
fi
echo "build-interceptor: profile $cache/merged.profdata" >&2
RUSTFLAGS="-Cprofile-use=$cache/merged.profdata" \
  cargo build --release -q -p apiwitness-interceptor --target "$host" --target-dir "$target/pgo-use"
echo "$target/pgo-use/$host/release/apiwitness-interceptor"
