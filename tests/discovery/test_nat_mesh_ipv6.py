"""IPv6 behind stateful firewalls, --mesh removal and UPDATE over TCP, in the NAT lab.

Issue 13 point 5 (needs root; runs under CI=true).  The lab is dual-stack
(docs/nat-lab.md's IPv6 section): every peer reaches the registry over IPv6,
so the registry publishes AAAA records, and the routers' IPv6 firewalls drop
what nobody inside asked for.
"""

from __future__ import annotations

import time

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.natlab import REG_PUBLIC, REG_TUNNEL, ZONE, NatLab, wait_ping

pytestmark = pytest.mark.netns


@pytest.fixture
def nl(lab: Lab) -> NatLab:
    require("wg", "dig", "iptables", "ip6tables")
    n = NatLab(lab)
    n.build_internet(v6=True)
    n.build_registry()
    return n


def test_ipv6_through_stateful_firewalls_mesh_removal_and_tcp_updates(nl: NatLab) -> None:
    nl.build_nat("A", 1)
    nl.build_nat("B", 2)
    a = nl.build_peer("A", "A", "10.99.0.1")
    b = nl.build_peer("B", "B", "10.99.0.2")
    c = nl.build_peer("C", "A", "10.99.0.3")
    assert nl.reg is not None
    for p in (a, b, c):
        nl.connect_to_registry(p, v6=True)
    nl.add_peer(a, b)
    nl.add_peer(b, a)  # configured on b: --mesh must never remove it
    nl.start_registry()
    nl.wait_registry_sees(a, b, c)
    assert nl.endpoints(nl.reg)[a.public] == f"[{a.lan6}]:51820"  # no NAT on IPv6

    # The firewalls drop unsolicited inbound IPv6: b cannot reach a's address first.
    assert not nl.ping(b, a.lan6, timeout=1)
    for p in (a, b):
        nl.start_discover(p, *(("--mesh", "--keepalive", "1", "--mesh-grace", "5")
                               if p is b else ()), probes=False)
    took = wait_ping(nl, a, b.tunnel, timeout=30)
    print(f"direct IPv6 tunnel through two stateful firewalls after {took:.1f}s")
    assert nl.endpoints(a)[b.public] == f"[{b.lan6}]:51820"
    assert nl.endpoints(b)[a.public] == f"[{a.lan6}]:51820"
    # The NAT probes came from the zone, over IPv6: no translation there.
    assert "NAT type: open" in nl.lab.log(f"discover-{a.ifname}.log")

    # --mesh added c on b.
    nl.lab.wait_for("b's discover to add c", lambda: c.public in nl.endpoints(b), 15, 0.2)

    # UPDATE over TCP: through the tunnel, accepted; from outside it, refused.
    assert nl.send_update(a.ns, REG_TUNNEL, a.public, "192.168.1.77", tcp=True) == "NOERROR"
    lan = nl.dig(nl.reg.ns, REG_PUBLIC, f"{b32(a.public)}.lan.{ZONE} A")
    assert lan == "192.168.1.77"
    assert nl.send_update(a.ns, REG_PUBLIC, a.public, "192.168.1.78", tcp=True) == "REFUSED"

    # c and a leave the registry; after the grace period b removes c (which --mesh
    # added) and keeps a (configured), whose direct tunnel goes on.
    for p in (c, a):
        nl.run(nl.reg.ns, f"wg set {nl.reg.ifname} peer {p.public} remove")
    gone = time.monotonic()
    nl.lab.wait_for("b's discover to remove c", lambda: c.public not in nl.endpoints(b), 20, 0.2)
    assert time.monotonic() - gone >= 5 - 2  # the grace, less one --interval
    assert a.public in nl.endpoints(b)
    assert "mesh: removed" in nl.lab.log(f"discover-{b.ifname}.log")
    time.sleep(3)
    assert a.public in nl.endpoints(b) and nl.ping(b, a.tunnel)


def b32(public_b64: str) -> str:
    import base64

    return base64.b32encode(base64.b64decode(public_b64)).decode()
