#!/usr/bin/env bash
# Installs everything apiwitness's demo and tests need on a bare Debian machine
# that has Go, Rust and Python: system packages by apt-get, the Python client
# by pip, the control plane by go (hack/tools/build.sh). Safe to rerun: each
# step is skipped when what it installs is already there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

apt_packages=(iproute2 iptables openssl curl procps util-linux psmisc postgresql nginx chromium chromium-driver)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

for t in go cargo python3; do
  command -v "$t" >/dev/null || { echo "setup: $t is required and not installed" >&2; exit 127; }
done

if ! python3 -c 'import kubernetes' 2>/dev/null; then
  echo "setup: pip install -r hack/requirements.txt"
  python3 -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
fi

rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

echo "setup: control-plane binaries in $("$here/tools/build.sh")"
echo "setup: helm and kubeconform in $("$here/tools/build-chart-tools.sh")"
