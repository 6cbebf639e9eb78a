"""The console against a running device (wgpyd by default, or WGPY_TEST_DEVICE) in a
lab namespace, with a real client in another: changes reach the device one peer at a
time, the other peers' sessions go on, traffic is recorded and kept, a device that
disappears is reported and the file still changes cleanly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wgpy.control.config import parse_quick_config
from wgpy.testing.lab import Lab, require
from wgpy.testing.nodes import ping, start
from wgpy.testing.uilab import Browserless, LabServer, console_app
from wgpy.ui.store import Store

pytestmark = pytest.mark.netns


def test_changes_reach_the_device_and_spare_other_sessions(lab: Lab) -> None:
    require("wg", "wireguard-go")
    s = LabServer(lab)
    node = start(lab, s.cli, "wgpyd", "10.66.0.2/24", port=51000)  # its session must survive
    s.up(f"\n[Peer]\n# Name = laptop\nPublicKey = {node.public}\nAllowedIPs = 10.66.0.2/32\n")
    server_pub = parse_quick_config(s.conf.read_text(), s.conf, s.ifname).device.private_key
    assert server_pub is not None
    node.wg(f"set {node.ifname} peer {server_pub.public_key().to_base64()} "
            "allowed-ips 10.66.0.0/24 endpoint 10.77.0.1:51820")
    ping(lab, s.cli, "10.66.0.1")
    before = s.handshakes()[node.public]
    assert before > 0
    with console_app(lab.workdir, [s.conf]) as (url, console):
        b = Browserless(url)
        b.login()
        page = b.get(f"/if/{s.ifname}").text
        assert "laptop" in page and "10.77.0.2:51000" in page  # the live endpoint
        # Create: the device gets the peer, its key, its address.
        b.submit(f"/if/{s.ifname}/create", peer_name="alice")
        assert re.fullmatch(r"Created alice with 10\.66\.0\.3/32\.", b.flashes()[0])
        alice = next(k for k in s.handshakes() if k != node.public)
        assert f"{alice}\t10.66.0.3/32" in s.wg("allowed-ips")
        assert re.search(rf"{re.escape(alice)}\t\S{{43}}=", s.wg("preshared-keys"))
        peer = f"/if/{s.ifname}/peer/{alice.rstrip('=').replace('+', '-').replace('/', '_')}"
        # Disable: gone from the device, kept in the file; enable: back as it was.
        b.get(peer)
        b.submit(f"{peer}/disable")
        assert alice not in s.wg("peers") and f"#~ PublicKey = {alice}" in s.conf.read_text()
        b.get(peer)
        b.submit(f"{peer}/enable")
        assert f"{alice}\t10.66.0.3/32" in s.wg("allowed-ips")
        assert re.search(rf"{re.escape(alice)}\t\S{{43}}=", s.wg("preshared-keys"))
        # The laptop's session was never touched: no new handshake was needed.
        ping(lab, s.cli, "10.66.0.1")
        assert s.handshakes()[node.public] == before
        # A peer added on the device by hand is shown as drift; syncconf removes it.
        stray = lab.run(None, "wg genkey | wg pubkey").stdout.strip()
        lab.run(s.srv, f"wg set {s.ifname} peer {stray} allowed-ips 10.66.0.200/32")
        b.get(f"/if/{s.ifname}")
        assert "on the device but not in the file" in b.page
        b.submit(f"/if/{s.ifname}/sync")
        assert b.flashes()[0].startswith(f"The device {s.ifname} now matches")
        assert stray not in s.wg("peers") and alice in s.wg("peers")
        assert "on the device but not in the file" not in b.page
        ping(lab, s.cli, "10.66.0.1")
        assert s.handshakes()[node.public] == before
        # Delete: gone from both.
        b.get(peer)
        b.submit(f"{peer}/delete")
        assert alice not in s.wg("peers") and alice not in s.conf.read_text()
        # Traffic: samples of the laptop's counters, rates in the JSON the chart reads.
        lab.wait_for("two samples", lambda: len(console.store.samples(
            s.ifname, node.public, 0)) >= 2, timeout=10)
        ping(lab, s.cli, "10.66.0.1", count=5)
        lab.wait_for("a sample after the ping", lambda: console.store.samples(
            s.ifname, node.public, 0)[-1].rx > console.store.samples(
                s.ifname, node.public, 0)[0].rx, timeout=10)
        slug = node.public.rstrip("=").replace("+", "-").replace("/", "_")
        data = b.http.get(f"/api/if/{s.ifname}/peer/{slug}/traffic").json()
        points = data["peers"][slug]["points"]
        assert points and max(p[1] for p in points) > 0 and data["peers"][slug]["rx"] > 0
        log = b.get("/log").text
        for what in ("created client", "disabled", "enabled", "applied", "deleted"):
            assert what in log
        b.close()
    # The history outlives the console.
    store = Store(lab.workdir / "state" / "console.db")
    kept = store.samples(s.ifname, node.public, 0)
    store.close()
    assert len(kept) >= 2 and kept[-1].rx > 0


def test_a_device_that_disappears(lab: Lab) -> None:
    require("wg", "wireguard-go")
    s = LabServer(lab)
    s.up()
    with console_app(lab.workdir, [s.conf]) as (url, _):
        b = Browserless(url)
        b.login()
        b.submit(f"/if/{s.ifname}/create", peer_name="before")
        assert b.flashes()[0] == "Created before with 10.66.0.2/32."
        lab.run(s.srv, f"ip link del {s.ifname}")  # the daemon exits with its interface
        lab.wait_for("the device to go", lambda: not Path(
            f"/var/run/wireguard/{s.ifname}.sock").exists() or lab.run(
                None, f"wg show {s.ifname}", check=False).returncode != 0, timeout=10)
        page = b.get(f"/if/{s.ifname}").text
        assert f"the device {s.ifname} is not running or does not answer" in page
        assert "before" in page  # the file still says who the peers are
        b.submit(f"/if/{s.ifname}/create", peer_name="after")
        msg = b.flashes()[0]
        assert msg.startswith("Created after with 10.66.0.3/32. The file is saved, but the "
                              f"device {s.ifname} did not take the change")
        assert msg.endswith("it applies when the interface is next brought up.")
        text = s.conf.read_text()
        assert "# Name = before" in text and "# Name = after" in text
        parse_quick_config(text, s.conf, s.ifname)  # whole and valid
        b.close()
