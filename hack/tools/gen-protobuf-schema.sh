#!/usr/bin/env bash
# Regenerates record/src/protobuf/generated.rs, the table the decoder
# turns Kubernetes protobuf bodies into JSON with, from the Go types of the
# Kubernetes release pinned in hack/versions.env. Run it after changing that
# version; the table is committed, so builds need no Go.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.env
source "$here/../versions.env"
export KUBE_VERSION GOTOOLCHAIN=local GOFLAGS=-mod=readonly
out="$here/../../record/src/protobuf/generated.rs"
(cd "$here/k8s" && go run ./protoschema) > "$out.partial"
mv "$out.partial" "$out"
echo "gen-protobuf-schema: $(grep -c '^    k(' "$out") kinds into ${out#"$here/../../"}"
