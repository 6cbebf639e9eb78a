"""wgpyd against Debian's wireguard-go (and itself), configured by the real wg.

Each test builds its own namespaces; the ``lab`` fixture removes them, the
daemons and the UAPI sockets even when the test fails.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.nodes import WgNode, connect, ping, start, two_hosts

pytestmark = pytest.mark.netns

PAIRS = [("wgpyd", "wireguard-go"), ("wgpyd", "wgpyd")]


def tunnel(lab: Lab, impl_a: str, impl_b: str,
           psk: Path | None = None) -> tuple[WgNode, WgNode]:
    a_ns, b_ns = two_hosts(lab)
    a = start(lab, a_ns, impl_a, "10.99.0.1/24", "fd00:99::1/64")
    b = start(lab, b_ns, impl_b, "10.99.0.2/24", "fd00:99::2/64")
    connect(a, b, "10.99.0.1/32,fd00:99::1/128", "10.99.0.2/32,fd00:99::2/128",
            "10.77.0.1:51820", "10.77.0.2:51820", psk=psk)
    return a, b


def transfer(node: WgNode) -> tuple[int, int]:
    line = node.show("transfer").split()
    return int(line[1]), int(line[2])  # rx, tx


@pytest.mark.parametrize("impl_a,impl_b", PAIRS)
@pytest.mark.parametrize("initiator", ["a", "b"])
def test_handshake_either_side_and_ping_v4_v6(lab: Lab, impl_a: str, impl_b: str,
                                               initiator: str) -> None:
    require("wg", "wireguard-go", "ping")
    a, b = tunnel(lab, impl_a, impl_b)
    first, second = (a, b) if initiator == "a" else (b, a)
    target = "10.99.0.2" if first is a else "10.99.0.1"
    ping(lab, first.ns, target)
    ping(lab, second.ns, "10.99.0.1" if second is b else "10.99.0.2")
    ping(lab, a.ns, "fd00:99::2")
    ping(lab, b.ns, "fd00:99::1")
    # wg show on both sides: a handshake and matching byte counts.
    for node in (a, b):
        ts = int(node.show("latest-handshakes").split()[1])
        assert abs(time.time() - ts) < 60, node.show("latest-handshakes")
    a_rx, a_tx = transfer(a)
    b_rx, b_tx = transfer(b)
    assert a_rx > 0 and a_tx > 0
    assert (a_rx, a_tx) == (b_tx, b_rx)
    out = a.wg("show").stdout
    assert "latest handshake:" in out and "transfer:" in out


@pytest.mark.parametrize("impl_a,impl_b", PAIRS)
def test_iperf3_tcp(lab: Lab, impl_a: str, impl_b: str) -> None:
    require("wg", "wireguard-go", "iperf3")
    a, b = tunnel(lab, impl_a, impl_b)
    lab.popen(b.ns, "iperf3 -s -1 -B 10.99.0.2", log="iperf-server.log")
    lab.wait_for("iperf3 server", lambda: lab.run(
        b.ns, "ss -ltn 'sport = :5201'", check=False).stdout.count("LISTEN") > 0)
    p = lab.run(a.ns, "iperf3 -c 10.99.0.2 -t 2 -J", timeout=60)
    result = json.loads(p.stdout)
    received = result["end"]["sum_received"]["bytes"]
    assert received > 1_000_000, received
    a_rx, a_tx = transfer(a)
    assert a_tx > received


def test_psk(lab: Lab, tmp_path: object) -> None:
    require("wg", "wireguard-go")
    psk = lab.workdir / "psk"
    psk.write_text(lab.run(None, "wg genpsk").stdout)
    os.chmod(psk, 0o600)
    a, b = tunnel(lab, "wgpyd", "wireguard-go", psk=psk)
    ping(lab, a.ns, "10.99.0.2")
    assert a.show("preshared-keys").split()[1] == psk.read_text().strip()


def test_psk_mismatch_never_completes(lab: Lab) -> None:
    require("wg", "wireguard-go")
    psk = lab.workdir / "psk"
    psk.write_text(lab.run(None, "wg genpsk").stdout)
    a, b = tunnel(lab, "wgpyd", "wireguard-go")
    a.wg(f"set {a.ifname} peer {b.public} preshared-key {psk}")
    assert not ping(lab, a.ns, "10.99.0.2", count=2, check=False)
    assert a.show("latest-handshakes").split()[1] == "0"


def test_spoofed_inner_source_dropped(lab: Lab) -> None:
    require("wg", "wireguard-go")
    a, b = tunnel(lab, "wgpyd", "wireguard-go")
    ping(lab, b.ns, "10.99.0.1")
    # b sends from an address that a does not allow for b.
    lab.run(b.ns, f"ip addr add 10.99.0.66/24 dev {b.ifname}")
    assert not ping(lab, b.ns, "10.99.0.1", count=2, check=False, source="10.99.0.66")
    assert "inner source not in the peer's allowed IPs" in a.logtext()


@pytest.mark.parametrize("mover", ["wgpyd", "wireguard-go"])
def test_roaming_mid_stream(lab: Lab, mover: str) -> None:
    require("wg", "wireguard-go", "ping")
    a, b = tunnel(lab, "wgpyd", "wireguard-go")
    moving, staying = (a, b) if mover == "wgpyd" else (b, a)
    old = "10.77.0.1" if moving is a else "10.77.0.2"
    new = "10.77.0.33" if moving is a else "10.77.0.44"
    target = "10.99.0.2" if moving is a else "10.99.0.1"
    lab.popen(moving.ns, f"ping -i 0.1 -c 200 {target}", log="stream.log")
    lab.wait_for("traffic", lambda: "bytes from" in lab.log("stream.log"))
    # Move: new address, new port, old address gone.
    # (deleting a primary address first: its secondaries would go with it)
    lab.run(moving.ns, f"ip addr del {old}/24 dev eth0; ip addr add {new}/24 dev eth0")
    moving.wg(f"set {moving.ifname} listen-port 52999")
    lab.wait_for(
        "endpoint update",
        lambda: f"{new}:52999" in staying.show("endpoints"),
        timeout=15,
    )
    # Replies now reach the new address: the stream goes on.
    n = lab.log("stream.log").count("bytes from")
    lab.wait_for("replies after roaming", lambda: lab.log("stream.log").count("bytes from") > n + 5)


def test_persistent_keepalive_keeps_nat_mapping(lab: Lab) -> None:
    """a (wgpyd) sits behind a MASQUERADE NAT with a 2 s UDP timeout; b can reach it
    only while a's keepalives refresh the mapping."""
    require("wg", "wireguard-go", "iptables")
    a_ns, nat, b_ns = lab.netns("inside"), lab.netns("nat"), lab.netns("outside")
    lab.veth(a_ns, nat, "eth0", "lan")
    lab.veth(nat, b_ns, "wan", "eth0")
    lab.run(a_ns, "ip addr add 192.168.77.2/24 dev eth0; ip route add default via 192.168.77.1")
    lab.run(nat, "ip addr add 192.168.77.1/24 dev lan; ip addr add 10.78.0.1/24 dev wan")
    lab.run(nat, "sysctl -qw net.ipv4.ip_forward=1")
    lab.run(nat, "iptables -t nat -A POSTROUTING -o wan -j MASQUERADE")
    lab.run(nat, "iptables -A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT;"
                 "iptables -A FORWARD -i wan -j DROP")
    lab.run(nat, "sysctl -qw net.netfilter.nf_conntrack_udp_timeout=2 "
                 "net.netfilter.nf_conntrack_udp_timeout_stream=2")
    lab.run(b_ns, "ip addr add 10.78.0.2/24 dev eth0")
    a = start(lab, a_ns, "wgpyd", "10.99.0.1/24")
    b = start(lab, b_ns, "wireguard-go", "10.99.0.2/24")
    connect(a, b, "10.99.0.1/32", "10.99.0.2/32", None, "10.78.0.2:51820", keepalive=1)
    # Turning keepalive on sends one at once: b learns a's NAT mapping.
    lab.wait_for("b learns a's mapping", lambda: "10.78.0.1:" in b.show("endpoints"), timeout=10)
    time.sleep(5)  # more than twice the NAT timeout with no traffic but keepalives
    ping(lab, b.ns, "10.99.0.1")
    # Control: with keepalive off the mapping expires and b can no longer reach a.
    a.wg(f"set {a.ifname} peer {b.public} persistent-keepalive 0")
    lab.wait_for("NAT mapping to expire", lambda: lab.run(
        nat, "conntrack -L -p udp 2>/dev/null", check=False).stdout.count("dport=51820") == 0,
        timeout=20, step=0.5)
    assert not ping(lab, b.ns, "10.99.0.1", count=2, check=False)


def test_wg_show_dump_fields(lab: Lab) -> None:
    require("wg", "wireguard-go")
    a, b = tunnel(lab, "wgpyd", "wireguard-go")
    ping(lab, a.ns, "10.99.0.2", count=1)
    dump = a.wg(f"show {a.ifname} dump").stdout.splitlines()
    iface = dump[0].split("\t")
    assert iface[1] == a.public and iface[2] == "51820"
    peer = dump[1].split("\t")
    assert peer[0] == b.public
    assert peer[2] == "10.77.0.2:51820"
    assert peer[3] == "10.99.0.2/32,fd00:99::2/128"
    assert int(peer[4]) > 0 and int(peer[5]) > 0 and int(peer[6]) > 0
    assert re.fullmatch(r"off|\d+", peer[7])


@pytest.mark.parametrize("impl_b", ["wireguard-go", "wgpyd"])
def test_ipv6_outer_transport(lab: Lab, impl_b: str) -> None:
    """The tunnel itself runs over IPv6 (outer), carrying IPv4 and IPv6 inside."""
    require("wg", "wireguard-go")
    a_ns, b_ns = two_hosts(lab)
    a = start(lab, a_ns, "wgpyd", "10.99.0.1/24", "fd00:99::1/64")
    b = start(lab, b_ns, impl_b, "10.99.0.2/24", "fd00:99::2/64")
    connect(a, b, "10.99.0.1/32,fd00:99::1/128", "10.99.0.2/32,fd00:99::2/128",
            "[fd00:77::1]:51820", "[fd00:77::2]:51820")
    ping(lab, a.ns, "10.99.0.2")
    ping(lab, b.ns, "fd00:99::1")
    assert b.show("endpoints").split()[1] == "[fd00:77::1]:51820"
    assert a.show("endpoints").split()[1] == "[fd00:77::2]:51820"
