#!/usr/bin/env bash
# Builds helm and kubeconform from the Go module beside this script (chart/),
# for the chart's lint, render and install, and prints the directory that
# holds them. Cached like the control plane (build.sh), under its own key, so
# changing one never rebuilds the other.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0

command -v go >/dev/null || { echo "build: go is not installed (hack/setup.sh installs what the project needs)" >&2; exit 127; }

helm_version=$(awk '$1 == "helm.sh/helm/v3" { print $2 }' "$here/chart/go.mod")
kubeconform_version=$(awk '$1 == "github.com/yannh/kubeconform" { print $2 }' "$here/chart/go.mod")
sum_hash=$(cat "$here/chart/go.sum" "$here/build-chart-tools.sh" | sha256sum | cut -c1-12)
key="helm-${helm_version}_kubeconform-${kubeconform_version}_${sum_hash}"
out="${APIWITNESS_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/apiwitness/bin}/$key"

if [ -x "$out/helm" ] && [ -x "$out/kubeconform" ]; then echo "$out"; exit 0; fi

mkdir -p "$out.partial"
started=$(date +%s)
(
  cd "$here/chart"
  echo "build: helm ${helm_version}" >&2
  go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${helm_version}" \
    -o "$out.partial/helm" helm.sh/helm/v3/cmd/helm
  echo "build: kubeconform ${kubeconform_version}" >&2
  go build -trimpath -ldflags "-s -w" -o "$out.partial/kubeconform" github.com/yannh/kubeconform/cmd/kubeconform
)
rm -rf "$out"
mv "$out.partial" "$out"
echo "build: done in $(( $(date +%s) - started ))s into $out" >&2
echo "$out"
