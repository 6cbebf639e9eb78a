"""wgpyd answers packets no peer takes with ICMP destination unreachable (as the
kernel's WireGuard does), and counts UDP sends that fail, by errno."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.nodes import WgNode, connect, start, two_hosts

pytestmark = pytest.mark.netns


def _pid(lab: Lab, node: WgNode) -> int:
    p = lab.run(node.ns, f"pgrep -f -- '-f {node.ifname}$'", check=False)
    pids = [int(x) for x in p.stdout.split()]
    assert len(pids) == 1, p.stdout
    return pids[0]


def _stats(lab: Lab, node: WgNode) -> dict[str, int]:
    before = lab.log(node.log).count(" stats ")
    os.kill(_pid(lab, node), signal.SIGUSR1)
    lab.wait_for("stats line", lambda: lab.log(node.log).count(" stats ") > before, timeout=10)
    line = [x for x in lab.log(node.log).splitlines() if " stats " in x][-1]
    return {k: int(v) for k, v in re.findall(r"([\w.]+)=(\d+)", line)}


def test_ping_to_an_address_no_peer_covers_fails_at_once(lab: Lab) -> None:
    require("wg", "ping")
    a_ns, b_ns = two_hosts(lab)
    a = start(lab, a_ns, "wgpyd", "10.60.0.1/24", "fd00:60::1/64")
    b = start(lab, b_ns, "wireguard-go", "10.60.0.2/24", "fd00:60::2/64")
    connect(a, b, "10.60.0.1/32,fd00:60::1/128", "10.60.0.2/32,fd00:60::2/128",
            "10.77.0.1:51820", "10.77.0.2:51820")
    # In the interface's subnet, but no peer's allowed IPs: host unreachable.
    t0 = time.monotonic()
    p = lab.run(a_ns, "ping -n -c 1 -W 5 10.60.0.99", check=False, timeout=20)
    assert p.returncode != 0
    assert "Destination Host Unreachable" in p.stdout, p.stdout
    assert "From 10.60.0.99 " in p.stdout, p.stdout  # from the address itself
    assert time.monotonic() - t0 < 3  # not the 5 s timeout
    p6 = lab.run(a_ns, "ping -6 -n -c 1 -W 5 fd00:60::99", check=False, timeout=20)
    assert p6.returncode != 0
    assert "Address unreachable" in p6.stdout, p6.stdout
    # A peer without an endpoint is unreachable too (as in the kernel).
    lab.run(a_ns, f"wg set {a.ifname} peer {'A' * 42}A= allowed-ips 10.60.0.50/32")
    p = lab.run(a_ns, "ping -n -c 1 -W 5 10.60.0.50", check=False, timeout=20)
    assert "Destination Host Unreachable" in p.stdout, p.stdout
    # The tunnel itself is unaffected.
    assert lab.run(a_ns, "ping -n -c 2 -i 0.2 -W 2 10.60.0.2", check=False).returncode == 0
    s = _stats(lab, a)
    # NO_ROUTE also counts the interface's own IPv6 multicast (router
    # solicitations), which gets no error.
    assert s["unreachable_sent"] == 3 and s["drop.NO_ROUTE"] >= 2
    assert s["drop.NO_ENDPOINT"] == 1


def test_failed_sends_are_counted_by_errno(lab: Lab) -> None:
    require("wg", "ping")
    a_ns, b_ns = two_hosts(lab)
    a = start(lab, a_ns, "wgpyd", "10.61.0.1/24")
    b = start(lab, b_ns, "wgpyd", "10.61.0.2/24")
    # An endpoint in a network a's namespace has no route to.
    connect(a, b, "10.61.0.1/32", "10.61.0.2/32", None, "10.254.254.1:51820")
    lab.run(a_ns, "ping -n -c 1 -W 1 10.61.0.2", check=False, timeout=20)
    s = _stats(lab, a)
    assert s.get("send_error.ENETUNREACH", 0) >= 1, s
    assert s["initiations_sent"] == 1  # counted as sent: it left the core
