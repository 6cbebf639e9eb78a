"""NAT traversal end to end in a namespace lab (needs root; runs under CI=true).

Each test builds its own lab; see natlab.py for the topology.
"""

from __future__ import annotations

import base64
import time

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.natlab import (
    DEVICE,
    REG_PUBLIC,
    REG_TUNNEL,
    WG_PORT,
    ZONE,
    NatLab,
    wait_ping,
)

pytestmark = pytest.mark.netns


def b32(public_b64: str) -> str:
    return base64.b32encode(base64.b64decode(public_b64)).decode()


@pytest.fixture
def nl(lab: Lab) -> NatLab:
    require("wg", DEVICE, "dig", "iptables", "iperf3")
    n = NatLab(lab)
    n.build_internet()
    n.build_registry()
    return n


def test_two_nats_direct_tunnel(nl: NatLab) -> None:
    nl.build_nat("A", 1)
    nl.build_nat("B", 2)
    a = nl.build_peer("A", "A", "10.99.0.1")
    b = nl.build_peer("B", "B", "10.99.0.2")
    assert nl.reg is not None
    for p in (a, b):
        nl.connect_to_registry(p)
    nl.add_peer(a, b)  # b learns of a through --mesh
    nl.start_registry()
    nl.wait_registry_sees(a, b)

    # The registry publishes each peer's NAT mapping (dig, as a newcomer would check).
    ptr = nl.dig(nl.reg.ns, REG_PUBLIC, f"_wireguard._udp.{ZONE} PTR").split()
    assert sorted(ptr) == sorted(f"{b32(p.public)}._wireguard._udp.{ZONE}." for p in (a, b))
    srv_a = nl.dig_full(nl.reg.ns, f"{b32(a.public).lower()}._wireguard._udp.{ZONE} SRV")
    assert "status: NOERROR" in srv_a and "flags: qr aa" in srv_a
    flat = " ".join(srv_a.split())
    assert f"IN SRV 0 0 {WG_PORT} {b32(a.public)}.{ZONE}." in flat
    additional = flat.split("ADDITIONAL SECTION:")[1]
    assert f"{b32(a.public)}.{ZONE}. 1 IN A {nl.nat_public['A']}" in additional
    host_b = nl.dig(nl.reg.ns, REG_PUBLIC, f"{b32(b.public)}.{ZONE} A")
    assert host_b == nl.nat_public["B"]
    txt_b = nl.dig(nl.reg.ns, REG_PUBLIC, f"{b32(b.public)}._wireguard._udp.{ZONE} TXT")
    assert f'"txtvers=1" "pub={b.public}" "allowed={b.tunnel}/32"' in txt_b
    nx = nl.dig_full(nl.reg.ns, f"{b32(nl.reg.public)}._wireguard._udp.{ZONE} SRV")
    assert "status: NXDOMAIN" in nx and "SOA" in nx
    nodata = nl.dig_full(nl.reg.ns, f"{b32(a.public)}.{ZONE} AAAA")
    assert "status: NOERROR" in nodata and "ANSWER: 0" in nodata and "SOA" in nodata
    tcp = nl.run(nl.reg.ns, f"dig +tcp +short @{REG_PUBLIC} _wireguard._udp.{ZONE} PTR")
    assert len(tcp.split()) == 2

    start = time.monotonic()
    disc_a = nl.start_discover(a)
    nl.start_discover(b, "--mesh", "--keepalive", "1")
    wait_ping(nl, a, b.tunnel, timeout=30)
    punched = time.monotonic() - start
    wait_ping(nl, b, a.tunnel, timeout=5)
    print(f"direct tunnel through two NATs after {punched:.1f}s")

    # Each peer reaches the other at the other NAT's public address.
    assert nl.endpoints(a)[b.public].startswith(nl.nat_public["B"] + ":")
    assert nl.endpoints(b)[a.public].startswith(nl.nat_public["A"] + ":")

    before = nl.transfer(nl.reg)
    nl.lab.popen(b.ns, f"iperf3 -s -1 -B {b.tunnel}", log="iperf-server.log")
    nl.lab.wait_for("iperf3 server", lambda: "5201" in nl.run(b.ns, "ss -ltn"), 5)
    out = nl.run(a.ns, f"iperf3 -c {b.tunnel} -t 2 -J", check=True)
    assert '"bits_per_second"' in out
    after = nl.transfer(nl.reg)
    peer_ab = nl.transfer(a)[b.public]
    # The iperf data went through the A-B tunnel, not through the registry.
    assert peer_ab[1] > 1_000_000
    for p in (a, b):
        moved = sum(after[p.public]) - sum(before[p.public])
        assert moved < peer_ab[1] / 50, (p.public, moved, peer_ab)

    # LAN candidate updates: authorised through the tunnel, refused from outside it.
    log = nl.lab.log("registry.log")
    assert "LAN candidates for" in log
    lan = nl.dig(nl.reg.ns, REG_PUBLIC, f"{b32(a.public)}.lan.{ZONE} A")
    assert lan == a.lan
    nat_txt = nl.dig(nl.reg.ns, REG_PUBLIC, f"{b32(a.public)}._wireguard._udp.{ZONE} TXT")
    assert '"nat=cone"' in nat_txt
    disc_a.terminate()  # SIGTERM: a clean exit, and no more refreshes racing the checks below
    assert disc_a.wait(timeout=5) == 0
    # From outside the tunnel (the public address), even for one's own key: refused.
    assert nl.send_update(a.ns, REG_PUBLIC, a.public, "192.168.1.99") == "REFUSED"
    # Through the tunnel, for another peer's key: refused.
    assert nl.send_update(a.ns, REG_TUNNEL, b.public, "192.168.1.99") == "REFUSED"
    # Through the tunnel, for one's own key: accepted.
    assert nl.send_update(a.ns, REG_TUNNEL, a.public, "192.168.1.99") == "NOERROR"
    assert nl.dig(nl.reg.ns, REG_PUBLIC, f"{b32(a.public)}.lan.{ZONE} A") == "192.168.1.99"


def test_same_nat_uses_lan_candidates(nl: NatLab) -> None:
    nl.build_nat("A", 1)
    a = nl.build_peer("A", "A", "10.99.0.1")
    c = nl.build_peer("C", "A", "10.99.0.3")
    for p in (a, c):
        nl.connect_to_registry(p)
    nl.add_peer(a, c)
    nl.add_peer(c, a)
    nl.start_registry()
    nl.wait_registry_sees(a, c)
    assert nl.reg is not None
    eps = nl.endpoints(nl.reg)
    # One NAT, two sockets on 51820: the NAT had to give them different ports.
    assert eps[a.public] != eps[c.public]
    assert eps[a.public].split(":")[0] == eps[c.public].split(":")[0] == nl.nat_public["A"]

    nl.start_discover(a)
    nl.start_discover(c)
    took = wait_ping(nl, a, c.tunnel, timeout=30)
    print(f"direct tunnel over the shared LAN after {took:.1f}s")
    assert nl.endpoints(a)[c.public] == f"{c.lan}:{WG_PORT}"
    assert nl.endpoints(c)[a.public] == f"{a.lan}:{WG_PORT}"


def test_random_fully_is_reported_symmetric(nl: NatLab) -> None:
    a, b = nl.two_peers(random_a=True)
    nl.start_registry()
    nl.wait_registry_sees(a, b)
    argv = " ".join(nl.discover_argv(a, "--once"))
    out = nl.run(a.ns, argv)
    assert "NAT type: symmetric" in out
    # The cone side is told that its peer's mapping will not work.
    assert nl.reg is not None
    assert "nat=symmetric" in nl.dig(nl.reg.ns, REG_PUBLIC,
                                     f"{b32(a.public)}._wireguard._udp.{ZONE} TXT")
    out_b = nl.run(b.ns, " ".join(nl.discover_argv(b, "--once", "--try-timeout", "1")))
    assert "NAT type: cone" in out_b
    assert "behind a symmetric NAT" in out_b
