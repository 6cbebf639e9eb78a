"""``wgpy doctor`` in a lab where things are broken on purpose, one at a time:
each problem is found, named, and its fix, run as printed, makes it go away."""

from __future__ import annotations

import re
import sys
import time

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.nodes import WgNode, connect, ping, start, two_hosts

pytestmark = pytest.mark.netns

DOCTOR = [sys.executable, "-m", "wgpy.tools.doctor"]


def doctor(lab: Lab, ns: str, *args: str, prefix: str = "") -> tuple[int, list[tuple[str, str]]]:
    """Run the doctor in ``ns``; its exit status and (problem, fix) pairs."""
    argv = " ".join([*DOCTOR, *args])
    p = lab.run(ns, f"{prefix}{argv}", check=False, timeout=60)
    assert "Traceback" not in p.stderr, p.stderr
    pairs = re.findall(r"^\S.*?: (.*)\n  fix: (.*)$", p.stdout, re.M)
    assert p.returncode == (1 if pairs else 0), (p.returncode, p.stdout, p.stderr)
    return p.returncode, pairs


def only(pairs: list[tuple[str, str]], needle: str) -> str:
    hits = [fix for problem, fix in pairs if needle in problem]
    assert len(hits) == 1, (needle, pairs)
    return hits[0]


def fixed(lab: Lab, ns: str, fix: str) -> None:
    lab.run(ns, fix.split("   #")[0])  # the command, without its comment


def test_doctor_finds_and_fixes(lab: Lab) -> None:
    require("ip", "wg", "nft", "unshare")
    a, b = two_hosts(lab)
    na: WgNode = start(lab, a, "wgpyd", "10.99.0.1/24")
    nb = start(lab, b, "wgpyd", "10.99.0.2/24")
    connect(na, nb, "10.99.0.1/32", "10.99.0.2/32,10.98.1.0/24", "10.77.0.1:51820",
            "10.77.0.2:51820")
    lab.run(a, f"ip route add 10.98.1.0/24 dev {na.ifname} && sysctl -qw net.ipv4.ip_forward=1")
    ping(lab, a, "10.99.0.2")
    iface = na.ifname
    assert doctor(lab, a, iface) == (0, [])

    # Forwarding off (a fresh namespace's default).
    lab.run(a, "sysctl -qw net.ipv4.ip_forward=0")
    _, pairs = doctor(lab, a, iface)
    fix = only(pairs, "net.ipv4.ip_forward is 0")
    assert fix.startswith("sysctl -w net.ipv4.ip_forward=1")
    fixed(lab, a, fix)
    assert doctor(lab, a, iface) == (0, [])

    # A firewall that drops everything it does not know.
    lab.run(a, "nft add table inet filter && nft add chain inet filter input "
               "'{ type filter hook input priority 0; policy drop; }' && "
               "nft add rule inet filter input ct state established,related accept")
    _, pairs = doctor(lab, a, iface)
    fix = only(pairs, "the firewall drops WireGuard's datagrams (UDP port 51820, IPv4)")
    assert fix == "nft insert rule inet filter input udp dport 51820 accept"
    fixed(lab, a, fix)
    assert doctor(lab, a, iface) == (0, [])

    # An allowed IP whose route is gone, and the interface down.
    lab.run(a, "ip route del 10.98.1.0/24")
    _, pairs = doctor(lab, a, iface)
    fix = only(pairs, "allowed IP 10.98.1.0/24")
    assert fix == f"ip route add 10.98.1.0/24 dev {iface}"
    fixed(lab, a, fix)
    lab.run(a, f"ip link set {iface} down")
    _, pairs = doctor(lab, a, iface)
    fixed(lab, a, only(pairs, f"{iface} is down"))
    lab.run(a, f"ip route replace 10.98.1.0/24 dev {iface}")  # down took the routes away
    lab.run(a, f"ip addr replace 10.99.0.1/24 dev {iface}")
    assert doctor(lab, a, iface) == (0, [])

    # No TUN device (in a mount namespace of its own: the host keeps its own).
    hide = "unshare -m bash -c 'mount -t tmpfs none /dev/net && "
    p = lab.run(a, hide + " ".join(DOCTOR) + f" {iface}'", check=False)
    fix = only(re.findall(r"^\S.*?: (.*)\n  fix: (.*)$", p.stdout, re.M), "no TUN device")
    p = lab.run(a, hide + fix.replace("'", "'\\''") + " >/dev/null; " + " ".join(DOCTOR)
                + f" {iface}'", check=False)
    assert p.returncode == 0 and "no problem found" in p.stdout, p.stdout + p.stderr

    # A peer that went silent, and one that never answered.
    lab.run(b, f"ip link del {nb.ifname}")
    lab.run(a, f"wg set {iface} peer {lab.run(None, 'wg genkey | wg pubkey').stdout.strip()}"
               " allowed-ips 10.99.0.9/32 endpoint 10.77.0.9:51820")
    time.sleep(2)
    _, pairs = doctor(lab, a, iface, "--handshake-age", "1")
    fix = only(pairs, f"peer {nb.public} (endpoint 10.77.0.2:51820): the last handshake was")
    assert fix.startswith(f"wgpy set {iface} peer {nb.public} endpoint HOST:PORT")
    only(pairs, "(endpoint 10.77.0.9:51820): no handshake yet")

    # An interface that is not there.
    _, pairs = doctor(lab, a, "wgnone0")
    assert only(pairs, "no interface wgnone0").startswith("wgpy up wgnone0")


PROXY = """\
[Proxy]
ControlSocket = {ctl}
NftTable = wgpydoc

[Rule]
Name = web
Prefix = 10.77.9.0/24
Origin = 10.99.0.2:8080
"""


def test_doctor_proxy_setup_and_registry(lab: Lab) -> None:
    require("ip", "nft", "wg", "dig")
    ns = lab.netns("doc")
    conf = lab.workdir / "proxy.conf"
    conf.write_text(PROXY.format(ctl=lab.workdir / "ctl.sock"))
    _, pairs = doctor(lab, ns, "--proxy", str(conf))
    fix = only(pairs, "the nftables table inet wgpydoc is absent")
    assert fix == f"wgpy proxy setup --config {conf}"
    only(pairs, "the AnyIP route local 10.77.9.0/24 (table local) is absent")
    only(pairs, "no ip rule for fwmark 0x2a0")
    lab.run(ns, [sys.executable, "-m", "wgpy.tools.cli", "proxy", "setup", "--config", str(conf)])
    _, pairs = doctor(lab, ns, "--proxy", str(conf))
    assert [p for p, _ in pairs] == [f"no proxy answers on {lab.workdir / 'ctl.sock'}"]
    conf.write_text(PROXY.format(ctl=lab.workdir / "ctl.sock").replace("Origin", "Origni"))
    _, pairs = doctor(lab, ns, "--proxy", str(conf))
    assert only(pairs, "the configuration does not load").startswith("wgpy proxy check")
    # A registry that is not running.
    _, pairs = doctor(lab, ns, "--registry", "127.0.0.1:5399", "--zone", "wg.test")
    only(pairs, "127.0.0.1:5399 does not answer for wg.test")
