#!/usr/bin/env bash
# Install wgpy and everything its tests and demo need (Debian, as root).
set -euo pipefail
cd "$(dirname "$0")/.."

# prometheus, haproxy, apache2-utils (ab) and systemd (systemd-analyze) are for
# the operations tests and bench/proxy.py, bind9 for the NAT lab's BIND 9
# secondary (named, tsig-keygen): the tests run their own instances
# (never the system services, which these packages do not start without
# systemd as PID 1 or with a policy-rc.d that forbids it).
PKGS=(wireguard-go wireguard-tools iperf3 iproute2 iputils-ping nftables iptables
      bind9-dnsutils curl netcat-openbsd conntrack procps kmod tshark xxd
      prometheus haproxy apache2-utils systemd util-linux
      bind9  # named and tsig-keygen: the NAT lab's BIND 9 secondary
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
