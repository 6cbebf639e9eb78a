#!/usr/bin/env bash
# Install wgpy and everything its tests and demo need (Debian, as root).
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(wireguard-go wireguard-tools iperf3 iproute2 iputils-ping nftables iptables
      bind9-dnsutils curl netcat-openbsd conntrack procps kmod tshark
      chromium chromium-driver zbar-tools)  # wgpy ui's browser test
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python3 -m pip install -q --disable-pip-version-check -e ".[test]"
# pyenv installs console scripts behind shims that need a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
command -v wgpyd >/dev/null || { echo "setup: wgpyd is not on PATH after install" >&2; exit 1; }
echo "setup: ok"
