#!/usr/bin/env bash
# Builds the control plane's binaries (kube-apiserver, kube-controller-manager,
# kubectl, etcd) from the Go modules beside this script, at the versions in
# hack/versions.env, and prints the directory that holds them.
#
# The result is cached outside the work tree, so that a fresh clone on the same
# machine (as CI is) reuses it: under $APIWITNESS_BIN_CACHE, by default
# ~/.cache/apiwitness/bin/<key>, where the key names the versions and hashes the
# go.sum files and this script. A rebuild happens only when one of those changes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.env
source "$here/../versions.env"
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0

command -v go >/dev/null || { echo "build: go is not installed (hack/setup.sh installs what the project needs)" >&2; exit 127; }

sum_hash=$(cat "$here/k8s/go.sum" "$here/etcd/go.sum" "$here/build.sh" | sha256sum | cut -c1-12)
key="kube-${KUBE_VERSION}_etcd-${ETCD_VERSION}_${sum_hash}"
out="${APIWITNESS_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/apiwitness/bin}/$key"
binaries=(kube-apiserver kube-controller-manager kubectl etcd)

have_all() { for b in "${binaries[@]}"; do [ -x "$out/$b" ] || return 1; done; }
if have_all; then echo "$out"; exit 0; fi

mkdir -p "$out.partial"
major=${KUBE_VERSION#v}; major=${major%%.*}
minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# /version must report the real release, as it would on a released binary.
version_flags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_flags+=" -X ${pkg}.gitVersion=${KUBE_VERSION}"
  version_flags+=" -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
  version_flags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
done

started=$(date +%s)
(
  cd "$here/k8s"
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    echo "build: $cmd ${KUBE_VERSION}" >&2
    go build -trimpath -ldflags "-s -w${version_flags}" -o "$out.partial/$cmd" "k8s.io/kubernetes/cmd/$cmd"
  done
)
(
  cd "$here/etcd"
  echo "build: etcd ${ETCD_VERSION}" >&2
  go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}" \
    -o "$out.partial/etcd" go.etcd.io/etcd/server/v3
)
rm -rf "$out"
mv "$out.partial" "$out"
echo "build: done in $(( $(date +%s) - started ))s into $out" >&2
echo "$out"
