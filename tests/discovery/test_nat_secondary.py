"""A real BIND 9 secondary carries the registry's zone (needs root; runs under CI=true).

Issue 13 point 4 (NOTIFY, IXFR over TCP, TSIG, discover through BIND and a
dead server first) and point 7 (transfers from unlisted addresses, TSIG
failures, NOTIFY floods), in the NAT lab.  ``named`` runs in the lab's own
namespace with a configuration of its own; the lab stops it.
"""

from __future__ import annotations

import base64
import re
import time

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.natlab import REG_PUBLIC, SECONDARY, ZONE, NatLab, wait_ping

pytestmark = pytest.mark.netns

DEAD = "10.203.0.99"  # nothing answers there


def b32(public_b64: str) -> str:
    return base64.b32encode(base64.b64decode(public_b64)).decode()


NOTIFY_FLOOD = f"""
import socket, dns.message, dns.opcode
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
for i in range(300):
    q = dns.message.make_query("{ZONE}.", "SOA")
    q.set_opcode(dns.opcode.NOTIFY)
    s.sendto(q.to_wire(), ("{REG_PUBLIC}", 53))
answers = 0
try:
    while True:
        s.recv(512)
        answers += 1
except TimeoutError:
    pass
print(answers)
"""


@pytest.fixture
def nl(lab: Lab) -> NatLab:
    require("wg", "dig", "iptables", "named", "tsig-keygen")
    n = NatLab(lab)
    n.build_internet()
    n.build_registry()
    return n


def test_bind_follows_the_registry_and_discover_uses_it(nl: NatLab) -> None:
    keyfile = nl.lab.workdir / "xfr.key"
    keyfile.write_text(nl.lab.run(None, "tsig-keygen -a hmac-sha256 xfr").stdout)
    keyfile.chmod(0o600)
    secret = re.search(r'secret "([^"]+)"', keyfile.read_text())
    assert secret is not None
    a, b = nl.two_peers()
    assert nl.reg is not None
    nl.start_registry("--secondary", SECONDARY, "--tsig-keyfile", str(keyfile),
                      "--serial-interval", "1")
    nl.wait_registry_sees(a, b)
    sec = nl.build_secondary(str(keyfile))
    srv_a = f"{b32(a.public)}._wireguard._udp.{ZONE} SRV"

    def bind_srv_a() -> str:
        return nl.dig(sec, SECONDARY, srv_a, check=False)

    nl.lab.wait_for("BIND to load the zone", lambda: " 51820 " in bind_srv_a(), 20, 0.2)
    assert nl.dig(sec, SECONDARY, f"{b32(b.public)}.{ZONE} A") == nl.nat_public["B"]

    # discover asks a dead server first, then BIND (not the registry), and connects.
    for p in (a, b):
        nl.start_discover(p, "--no-lan", probes=False, registry=(DEAD, SECONDARY))
    took = wait_ping(nl, a, b.tunnel, timeout=40)
    print(f"direct tunnel found through BIND after {took:.1f}s")
    assert nl.endpoints(a)[b.public].startswith(nl.nat_public["B"] + ":")
    assert f"registry {SECONDARY}:53 answers; {DEAD}:53 did not" in \
        nl.lab.log(f"discover-{a.ifname}.log")

    # A's mapping changes (a new listen port): BIND answers the new SRV within a few
    # seconds.  BIND never refreshes faster than min-refresh-time (300 s): this
    # came by NOTIFY and IXFR.
    before = nl.registry_stats()
    start = time.monotonic()
    nl.run(a.ns, f"wg set {a.ifname} listen-port 51999")
    nl.lab.wait_for("BIND to answer A's new port", lambda: " 51999 " in bind_srv_a(), 15, 0.1)
    converged = time.monotonic() - start
    print(f"BIND answered the new SRV {converged:.1f}s after the endpoint changed")
    assert converged < 10
    after = nl.registry_stats()
    assert after["xfr.ixfr.incremental"] > before.get("xfr.ixfr.incremental", 0)
    assert after["notify.acknowledged"] > before.get("notify.acknowledged", 0)
    named_log = nl.lab.log("named.log")
    assert "notify from 10.200.0.2" in named_log and "Transfer status: success" in named_log
    wait_ping(nl, b, a.tunnel, timeout=20)  # b follows through BIND

    # Point 7: each refused or dropped, counted, logged once; nothing else changes.
    serial = nl.registry_stats()["serial"]
    denied = nl.run(nl.inet, f"dig -y hmac-sha256:xfr:{secret.group(1)} @{REG_PUBLIC} "
                             f"{ZONE} AXFR", check=False)
    assert "Transfer failed" in denied, denied  # not a listed secondary
    bad = base64.b64encode(b"not the key" * 3).decode()
    badsig = nl.run(sec, f"dig -y hmac-sha256:xfr:{bad} @{REG_PUBLIC} {ZONE} AXFR",
                    check=False)
    assert "tsig verify failure" in badsig or "BADSIG" in badsig, badsig
    unsigned = nl.run(sec, f"dig @{REG_PUBLIC} {ZONE} AXFR", check=False)
    assert "Transfer failed" in unsigned, unsigned
    answered = int(nl.run(nl.inet, f"python3 -c '{NOTIFY_FLOOD}'").strip())
    stats = nl.registry_stats()
    assert stats["xfr.refused"] == 2 and stats["tsig.badsig"] == 1
    assert stats["notify.refused"] == 300 and 0 < answered < 100, answered
    assert stats["notify.dropped"] == 300 - answered
    assert stats["serial"] == serial
    log = nl.lab.log("registry.log")
    assert len(re.findall(r"refused notify: ", log)) == 1
    assert len(re.findall(r"refused xfr: ", log)) == 1  # two refusals, one window
    assert " 51999 " in bind_srv_a() and nl.ping(a, b.tunnel)
