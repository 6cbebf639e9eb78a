"""``wgpy exporter`` against real devices: wgpyd and wireguard-go joined by a
tunnel in two namespaces, read over their UAPI sockets (shared by every
namespace) by an exporter on loopback.  Then the bad cases: a device that
does not exist, one that stops answering (SIGSTOP), one that vanishes, a
friendly-names file that is missing, a port that is taken."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from wgpy.testing.lab import Lab, require
from wgpy.testing.nodes import WgNode, connect, ping, start, two_hosts
from wgpy.testing.prom import free_port

pytestmark = pytest.mark.netns


Samples = list[tuple[str, dict[str, str], float]]


def scrape(port: int, timeout: float = 15) -> Samples:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout).read()
    return [(s.name, s.labels, s.value)
            for f in text_string_to_metric_families(text.decode()) for s in f.samples]


def value(samples: Samples, metric: str, **labels: str) -> float:
    hits = [v for n, lb, v in samples if n == metric and all(lb.get(k) == x
                                                             for k, x in labels.items())]
    assert len(hits) == 1, (metric, labels, hits)
    return hits[0]


def has(samples: Samples, metric: str, **labels: str) -> bool:
    return any(n == metric and all(lb.get(k) == x for k, x in labels.items())
               for n, lb, _ in samples)


@dataclass
class Tunnel:
    lab: Lab
    py: WgNode
    go: WgNode


@pytest.fixture(scope="module")
def tunnel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tunnel]:
    require("ip", "wg", "wireguard-go", "ping")
    lab = Lab(tmp_path_factory.mktemp("exporter"))
    try:
        a, b = two_hosts(lab)
        py = start(lab, a, "wgpyd", "10.99.0.1/24")
        go = start(lab, b, "wireguard-go", "10.99.0.2/24")
        connect(py, go, "10.99.0.1/32", "10.99.0.2/32", "10.77.0.1:51820", "10.77.0.2:51820")
        ping(lab, a, "10.99.0.2")
        yield Tunnel(lab, py, go)
    finally:
        lab.close()


def exporter(lab: Lab, *args: str, log: str = "exporter.log") -> tuple[subprocess.Popen[bytes],
                                                                          int]:
    port = free_port()
    p = lab.popen(None, [sys.executable, "-m", "wgpy.tools.exporter",
                         "--listen", f"127.0.0.1:{port}", *args], log=log)

    def up() -> bool:
        assert p.poll() is None, lab.log(log)
        try:
            scrape(port, timeout=1)
            return True
        except OSError:
            return False

    lab.wait_for("exporter", up, timeout=15)
    return p, port


def test_both_families_and_wgpyds_internals(tunnel: Tunnel) -> None:
    lab, py, go = tunnel.lab, tunnel.py, tunnel.go
    names = lab.workdir / "names.conf"
    names.write_text(f"[Peer]\n# friendly_name = the go side\nPublicKey = {go.public}\n")
    _, port = exporter(lab, "-i", py.ifname, "-i", go.ifname, "-n", str(names), "--mindflavor")
    for _ in range(3):  # wireguard-go is asked stats=1 once, not at every scrape
        s = scrape(port)
    for node, other in ((py, go), (go, py)):
        dev, pub = node.ifname, other.public
        assert value(s, "wgpy_exporter_device_up", device=dev) == 1
        assert value(s, "wireguard_device_info", device=dev, public_key=node.public) == 1
        ep = node.show("endpoints").split()[1]
        name = "the go side" if other is go else ""
        assert value(s, "wireguard_peer_info", device=dev, public_key=pub, endpoint=ep,
                     name=name) == 1
        cidr = node.show("allowed-ips").split()[1]
        assert value(s, "wireguard_peer_allowed_ips_info", device=dev, public_key=pub,
                     allowed_ips=cidr, family="IPv4") == 1
        rx, tx = map(int, node.show("transfer").split()[1:3])
        assert value(s, "wireguard_peer_receive_bytes_total", device=dev, public_key=pub) == rx
        assert value(s, "wireguard_peer_transmit_bytes_total", device=dev, public_key=pub) == tx
        hs = int(node.show("latest-handshakes").split()[1])
        assert value(s, "wireguard_peer_last_handshake_seconds", device=dev,
                     public_key=pub) == hs > 0
        mf = {"interface": dev, "public_key": pub, "allowed_ips": cidr}
        if name:
            mf["friendly_name"] = name
        assert value(s, "wireguard_sent_bytes_total", **mf) == tx
        assert value(s, "wireguard_received_bytes_total", **mf) == rx
        assert value(s, "wireguard_latest_handshake_seconds", **mf) == hs
    assert not any("friendly_name" in lb for n, lb, _ in s
                   if n == "wireguard_sent_bytes_total" and lb["interface"] == go.ifname)
    # wgpyd's internals, for wgpyd only.
    assert value(s, "wgpy_device_handshakes_completed_total", device=py.ifname) >= 1
    assert value(s, "wgpy_device_keypairs", device=py.ifname) >= 1
    assert value(s, "wgpy_device_uapi_requests_total", device=py.ifname, op="stats") >= 3
    assert value(s, "wgpy_device_peers", device=py.ifname) == 1
    assert not has(s, "wgpy_device_peers", device=go.ifname)
    assert go.logtext().count("invalid UAPI operation: stats=1") == 1


def test_wgpyds_internals_under_a_flood_and_garbage(tunnel: Tunnel) -> None:
    """What only wgpyd exposes, moved by real traffic: a flood of spoofed
    initiations (wgpy.testing.flood) puts it under load, so it answers with
    cookie replies and counts the time; garbage datagrams are dropped and
    counted by reason."""
    lab, py, go = tunnel.lab, tunnel.py, tunnel.go
    _, port = exporter(lab, "-i", py.ifname, log="flood-exporter.log")
    dev = py.ifname
    s0 = scrape(port)
    assert value(s0, "wgpy_device_under_load", device=dev) == 0
    # The flood comes from the wireguard-go side, from addresses it routes locally.
    lab.run(go.ns, "ip route add local 10.88.0.0/24 dev lo")
    lab.run(py.ns, "ip route add 10.88.0.0/24 via 10.77.0.2")
    try:
        lab.run(go.ns, [sys.executable, "-c",
                        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                        "for _ in range(7): s.sendto(b'\\x09' * 40, ('10.77.0.1', 51820))"])
        lab.run(go.ns, [sys.executable, "-m", "wgpy.testing.flood", "--target", "10.77.0.1:51820",
                        "--pub", py.public, "--rate", "3000", "--duration", "2",
                        "--spoof", "10.88.0.0/24"], timeout=60)
    finally:
        lab.run(py.ns, "ip route del 10.88.0.0/24 via 10.77.0.2", check=False)
        lab.run(go.ns, "ip route del local 10.88.0.0/24 dev lo", check=False)

    def moved(metric: str, **labels: str) -> float:
        before = value(s0, metric, **labels) if has(s0, metric, **labels) else 0.0
        return value(s, metric, **labels) - before

    s = scrape(port)
    assert moved("wgpy_device_cookie_replies_sent_total", device=dev) >= 1
    assert moved("wgpy_device_under_load_seconds_total", device=dev) > 0
    assert moved("wgpy_device_dropped_total", device=dev, reason="malformed") == 7
    # Junk with a valid mac1 (never a valid initiation: that counter stays):
    # refused as undecryptable, or for want of a cookie once under load.
    assert moved("wgpy_device_handshake_initiations_received_total", device=dev) == 0
    assert moved("wgpy_device_dropped_total", device=dev, reason="bad_mac2") + \
        moved("wgpy_device_dropped_total", device=dev, reason="handshake_decrypt") >= 1000
    ping(lab, py.ns, "10.99.0.2")  # the tunnel itself is unharmed


def test_a_bad_device_costs_its_own_series_only(tunnel: Tunnel) -> None:
    lab, py, go = tunnel.lab, tunnel.py, tunnel.go
    _, port = exporter(lab, "-i", py.ifname, "-i", go.ifname, "-i", "wgghost0", "--timeout", "1",
                       log="bad.log")
    s = scrape(port)
    assert value(s, "wgpy_exporter_device_up", device="wgghost0") == 0
    assert value(s, "wgpy_exporter_device_up", device=py.ifname) == 1
    # wireguard-go stops answering: its socket still accepts, nobody reads.
    pid = int(lab.run(go.ns, f"pgrep -f 'wireguard-go -f {go.ifname}'").stdout.split()[0])
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        s = scrape(port)
        assert time.monotonic() - t0 < 5
        assert value(s, "wgpy_exporter_device_up", device=go.ifname) == 0
        assert not has(s, "wireguard_device_info", device=go.ifname)
        assert value(s, "wgpy_exporter_device_up", device=py.ifname) == 1
        assert has(s, "wireguard_peer_info", device=py.ifname)
    finally:
        os.kill(pid, signal.SIGCONT)
    lab.wait_for("wireguard-go answers again",
                 lambda: value(scrape(port), "wgpy_exporter_device_up", device=go.ifname) == 1)
    log = lab.log("bad.log")
    assert "wgghost0: Unable to access interface wgghost0: No such file or directory" in log
    assert f"{go.ifname}: no answer on /var/run/wireguard/{go.ifname}.sock within 1 s" in log
    assert f"{go.ifname}: answering again" in log
    assert "Traceback" not in log


def test_a_device_that_vanishes_and_startup_errors(tunnel: Tunnel) -> None:
    lab, py = tunnel.lab, tunnel.py
    _, port = exporter(lab, log="all.log")  # every device: ours and any other
    assert has(scrape(port), "wireguard_device_info", device=py.ifname)
    lab.run(py.ns, f"ip link del {py.ifname}")  # wgpyd exits, its socket goes
    lab.wait_for("wgpyd gone", lambda: not Path(f"/var/run/wireguard/{py.ifname}.sock").exists())
    s = scrape(port)
    assert not has(s, "wireguard_device_info", device=py.ifname)
    assert has(s, "wireguard_device_info", device=tunnel.go.ifname)
    assert "Traceback" not in lab.log("all.log")
    # Bad starts: a clear line and an exit status, no traceback.
    missing = lab.run(None, [sys.executable, "-m", "wgpy.tools.exporter", "-n",
                             str(lab.workdir / "nope.conf")], check=False, timeout=20)
    assert missing.returncode == 2
    assert missing.stderr.strip() == \
        f"wgpy exporter: {lab.workdir / 'nope.conf'}: No such file or directory"
    taken = lab.run(None, [sys.executable, "-m", "wgpy.tools.exporter", "--listen",
                           f"127.0.0.1:{port}"], check=False, timeout=20)
    assert taken.returncode == 1
    assert taken.stderr.strip() == (f"wgpy exporter: cannot listen on 127.0.0.1:{port} for "
                                    "metrics: Address already in use")
