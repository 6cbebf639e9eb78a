"""A real Prometheus (Debian's ``prometheus``, our own instance on loopback)
scrapes ``wgpy exporter`` while iperf3 runs through a wgpyd tunnel: PromQL's
``rate()`` on the peer's byte counter matches iperf3's figure within 10 %.

The counter counts WireGuard messages (the inner packet with its IP and TCP
headers, and WireGuard's 32 bytes of header and tag), as the kernel's
WireGuard and wireguard-go count them; iperf3 counts only the TCP payload:
at the default MTU of 1420 the counter runs about 6 % above iperf3's figure.
The lab uses jumbo frames (veth MTU 9000, tunnel MTU 8920), as a data-centre
link would, so that the comparison measures the pipeline (exporter, scrape,
rate()) and not the headers."""

from __future__ import annotations

import json
import sys
import time

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.nodes import connect, ping, start, two_hosts
from wgpy.testing.prom import Prometheus, free_port

pytestmark = pytest.mark.netns

SECONDS = 12
WINDOW = 8  # the rate's range, inside the run


def test_prometheus_rate_matches_iperf3(lab: Lab) -> None:
    require("ip", "wg", "iperf3", "prometheus")
    a, b = two_hosts(lab)
    na = start(lab, a, "wgpyd", "10.99.0.1/24")
    nb = start(lab, b, "wgpyd", "10.99.0.2/24")
    connect(na, nb, "10.99.0.1/32", "10.99.0.2/32", "10.77.0.1:51820", "10.77.0.2:51820")
    for ns, node in ((a, na), (b, nb)):
        lab.run(ns, f"ip link set eth0 mtu 9000 && ip link set {node.ifname} mtu 8920")
    ping(lab, a, "10.99.0.2")
    port = free_port()
    lab.popen(None, [sys.executable, "-m", "wgpy.tools.exporter", "--listen",
                     f"127.0.0.1:{port}", "-i", na.ifname], log="exporter.log")
    prom = Prometheus.start(lab, [f"127.0.0.1:{port}"], interval=1.0)
    lab.wait_for("the first scrape", prom.targets_up, timeout=15, step=0.5)
    lab.popen(b, ["iperf3", "-s", "-B", "10.99.0.2", "-1"], log="iperf3-server.log")
    lab.wait_for("iperf3 server", lambda: "5201" in lab.run(b, "ss -ltn").stdout)
    run = lab.run(a, ["iperf3", "-c", "10.99.0.2", "-t", str(SECONDS), "-J"],
                  timeout=SECONDS + 30)
    doc = json.loads(run.stdout)
    t0 = float(doc["start"]["timestamp"]["timesecs"])
    end = t0 + SECONDS - 1
    # iperf3's figure over the window the rate covers: bytes per second.
    window = [iv["sum"] for iv in doc["intervals"]
              if iv["sum"]["start"] >= SECONDS - 1 - WINDOW - 0.01
              and iv["sum"]["end"] <= SECONDS - 1 + 0.01]
    assert len(window) == WINDOW
    iperf_rate = sum(w["bytes"] for w in window) / sum(w["seconds"] for w in window)
    time.sleep(max(0.0, end + 2.5 - time.time()))  # the scrapes after the window
    promql = (f'rate(wireguard_peer_transmit_bytes_total{{device="{na.ifname}",'
              f'public_key="{nb.public}"}}[{WINDOW}s])')
    result = prom.query(promql, at=end)
    assert len(result) == 1, result
    prom_rate = result[0][1]
    ratio = prom_rate / iperf_rate
    print(f"iperf3 {iperf_rate * 8 / 1e6:.0f} Mbit/s, Prometheus rate() "
          f"{prom_rate * 8 / 1e6:.0f} Mbit/s, ratio {ratio:.3f}")
    assert iperf_rate > 0 and prom_rate > 0
    assert 0.9 <= ratio <= 1.1, (prom_rate, iperf_rate)
