"""The relay, in the NAT lab (needs root; runs under CI=true).

Issue 13 points 1 (a relay that never sees plaintext), 3 (NAT probes found in
the zone) and 7 (bad relay input), and point 2 (back to direct) in the
second test.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.natlab import REG_PUBLIC, REG_TUNNEL, ZONE, Host, NatLab, wait_ping

pytestmark = pytest.mark.netns

RELAY_PORTS = "40000-40009"


@pytest.fixture
def nl(lab: Lab) -> NatLab:
    require("wg", "dig", "iptables", "conntrack", "tshark")
    n = NatLab(lab)
    n.build_internet()
    n.build_registry()
    return n


def relay_port(nl: NatLab, host: Host, other: Host) -> int:
    ep = nl.endpoints(host)[other.public]
    assert ep.startswith(f"{REG_PUBLIC}:"), ep
    return int(ep.rsplit(":", 1)[1])


def capture(nl: NatLab, ns: str, seconds: int, name: str) -> object:
    """tshark on ``ns``'s eth0: every UDP payload to or from the relay, as hex."""
    return nl.lab.popen(ns, f"tshark -q -l -i eth0 -a duration:{seconds} -f "
                            f"'udp and host {REG_PUBLIC} and portrange 40000-40009' "
                            "-T fields -e udp.payload", log=name)


def payloads(nl: NatLab, name: str) -> set[str]:
    return {line.strip() for line in nl.lab.log(name).splitlines()
            if re.fullmatch(r"[0-9a-f]{64,}", line.strip())}


def test_symmetric_nats_on_both_sides_connect_through_the_relay(nl: NatLab) -> None:
    nl.build_nat("A", 1, random_fully=True)
    nl.build_nat("B", 2, random_fully=True)
    a = nl.build_peer("A", "A", "10.99.0.1")
    b = nl.build_peer("B", "B", "10.99.0.2")
    c = nl.build_peer("C", "B", "10.99.0.3")  # only for the per-peer limit
    assert nl.reg is not None
    for p in (a, b, c):
        nl.connect_to_registry(p)
    nl.add_peer(a, b)
    nl.add_peer(b, a)
    nl.start_registry("--relay", REG_PUBLIC, "--relay-ports", RELAY_PORTS,
                      "--relay-max-per-peer", "1")
    nl.wait_registry_sees(a, b, c)

    # Point 3: the registry publishes its public probe listeners.
    srv = nl.dig(nl.reg.ns, REG_PUBLIC, f"_wireguard-probe._udp.{ZONE} SRV").split("\n")
    assert sorted(line.split()[2] for line in srv) == ["53", "5353"]
    assert nl.dig(nl.reg.ns, REG_PUBLIC, f"probe1.{ZONE} A") == REG_PUBLIC

    start = time.monotonic()
    for p in (a, b):
        nl.start_discover(p, "--try-timeout", "3", probes=False)  # no --nat-probe
    took = wait_ping(nl, a, b.tunnel, timeout=45)
    print(f"relayed tunnel between two symmetric NATs after {time.monotonic() - start:.1f}s "
          f"(ping answered {took:.1f}s into waiting)")
    wait_ping(nl, b, a.tunnel, timeout=10)
    for p in (a, b):
        name = f"discover-{p.ifname}.log"

        def relayed(name: str = name) -> bool:
            return "relayed path via" in nl.lab.log(name)

        nl.lab.wait_for(f"{name} to say the path is relayed", relayed, 10, 0.2)
        assert "NAT type: symmetric" in nl.lab.log(name)  # found the probes in the zone
    # Each peer's endpoint for the other is its own port on the relay.
    pa, pb = relay_port(nl, a, b), relay_port(nl, b, a)
    assert pa != pb and 40000 <= min(pa, pb) and max(pa, pb) <= 40009

    # The relay forwards the sealed datagrams unchanged: what leaves alice for the
    # relay is byte for byte what reaches bob from it, and the other way round.
    # The WireGuard session is alice's and bob's; the registry's device is not in it.
    capture(nl, a.ns, 6, "cap-a.log")
    capture(nl, b.ns, 6, "cap-b.log")
    nl.lab.wait_for("tshark to capture", lambda: all(
        "Capture started" in nl.lab.log(f) for f in ("cap-a.log", "cap-b.log")), 10, 0.1)
    nl.run(a.ns, f"ping -n -q -c 10 -i 0.1 -s 1000 {b.tunnel}")
    nl.lab.wait_for("the captures to end", lambda: all(
        "packets captured" in nl.lab.log(f) for f in ("cap-a.log", "cap-b.log")), 10, 0.2)
    at_a, at_b = payloads(nl, "cap-a.log"), payloads(nl, "cap-b.log")
    big_a = {p for p in at_a if len(p) > 2000}  # the 1000-byte pings, sealed
    big_b = {p for p in at_b if len(p) > 2000}
    assert len(big_a) >= 20 and big_a == big_b, (len(big_a), len(big_b))
    reg_before = nl.transfer(nl.reg)
    stats_before = nl.registry_stats()
    nl.run(a.ns, f"ping -n -q -c 200 -i 0.01 -s 1200 {b.tunnel}")
    stats = nl.registry_stats()
    moved = stats["relay.forwarded.bytes"] - stats_before["relay.forwarded.bytes"]
    assert moved > 400 * 1200
    reg_after = nl.transfer(nl.reg)
    for p in (a, b):
        grew = sum(reg_after[p.public]) - sum(reg_before[p.public])
        assert grew < moved / 10, (grew, moved)  # keepalives and DNS only

    # Point 7, the relay's bad input; each is refused or dropped, counted, and the
    # relayed session goes on.
    assert nl.send_relay_request(a.ns, REG_PUBLIC, a.public, b.public) == "REFUSED"  # outside
    assert nl.send_relay_request(a.ns, REG_TUNNEL, b.public, a.public) == "REFUSED"  # not mine
    assert nl.send_relay_request(a.ns, REG_TUNNEL, a.public, b.public, port=5) == "REFUSED"
    assert nl.send_relay_request(a.ns, REG_TUNNEL, a.public, c.public) == "REFUSED"  # limit
    assert nl.send_relay_request(a.ns, REG_TUNNEL, a.public, b.public) == "NOERROR"  # exists
    # Datagrams to alice's relay port from another address (bob's NAT) are dropped,
    # WireGuard-looking or not; junk from alice's own address is not forwarded.
    spoof = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
             f"[s.sendto(b'\\x04\\0\\0\\0' + bytes(60), ('{REG_PUBLIC}', {pa})) "
             "for _ in range(50)]")
    nl.run(nl.nats["B"], f"python3 -c \"{spoof}\"")
    junk = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"[s.sendto(b'GET / HTTP/1.0', ('{REG_PUBLIC}', {pa})) for _ in range(30)]")
    nl.run(nl.nats["A"], f"python3 -c \"{junk}\"")
    time.sleep(0.5)
    after = nl.registry_stats()
    assert after["relay.drop.foreign_source"] - stats.get("relay.drop.foreign_source", 0) >= 50
    assert after["relay.drop.not_wireguard"] - stats.get("relay.drop.not_wireguard", 0) >= 30
    assert after["relay.refused"] == 4 and after["relay.allocations"] == 1
    assert nl.ping(a, b.tunnel, count=3, timeout=1)
    log = nl.lab.log("registry.log")
    assert len(re.findall(r"refused relay: ", log)) == 1  # once per 10 s window


def test_a_relayed_path_goes_direct_when_the_nat_allows(nl: NatLab) -> None:
    a, b = nl.two_peers(random_a=True)
    assert nl.reg is not None
    nl.start_registry("--relay", REG_PUBLIC, "--relay-ports", RELAY_PORTS,
                      "--relay-idle", "6")
    nl.wait_registry_sees(a, b)
    for p in (a, b):
        nl.start_discover(p, "--try-timeout", "3", "--direct-retry", "4", "--no-lan",
                          probes=False)
    wait_ping(nl, a, b.tunnel, timeout=45)
    nl.lab.wait_for("both ends on the relay", lambda: all(
        nl.endpoints(x)[y.public].startswith(f"{REG_PUBLIC}:4000") for x, y in ((a, b), (b, a))),
        20, 0.2)

    # Ping every 0.1 s while NAT A stops being symmetric.
    pinger = nl.lab.popen(a.ns, f"ping -n -D -i 0.1 -w 40 {b.tunnel}", log="ping.log")
    time.sleep(2)
    nl.set_nat("A", random_fully=False)
    flipped = time.monotonic()
    nl.lab.wait_for("the path to go direct", lambda: all(
        nl.endpoints(x)[y.public].startswith(nl.nat_public[n] + ":")
        for x, y, n in ((a, b, "B"), (b, a, "A"))), 40, 0.2)
    print(f"direct {time.monotonic() - flipped:.1f}s after NAT A became port-preserving")
    # The relay's counters stop: nothing more goes through it.
    time.sleep(2)
    s1 = nl.registry_stats()["relay.forwarded.datagrams"]
    time.sleep(3)
    s2 = nl.registry_stats()
    assert s2["relay.forwarded.datagrams"] == s1, (s1, s2)
    # No gap over 2 s in the ping replies, before, during and after the switch.
    time.sleep(1)
    os.killpg(pinger.pid, signal.SIGINT)  # its own session: this ping only
    pinger.wait(timeout=5)
    times = [float(t) for t in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", nl.lab.log(
        "ping.log"), re.M)]
    assert len(times) > 50
    gaps = [y - x for x, y in zip(times, times[1:], strict=False)]
    assert max(gaps) < 2.0, max(gaps)
    print(f"longest gap between ping replies: {max(gaps):.2f}s")
    # Unused, the allocation ends (--relay-idle 6): its records go, its ports close.
    nl.lab.wait_for("the relay allocation to expire",
                    lambda: nl.registry_stats()["relay.allocations"] == 0, 15, 0.5)
    assert nl.registry_stats()["relay.expired"] >= 1
    assert nl.ping(a, b.tunnel)
