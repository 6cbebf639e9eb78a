"""The systemd units and the readiness protocol, without systemd as PID 1:

* ``systemd-analyze verify`` passes, without a single warning, on every unit
  as ``wgpy systemd install`` writes it;
* wgpyd, ``wgpy up --foreground`` (wgpy@.service) and ``wgpy exporter``,
  started with ``NOTIFY_SOCKET`` pointing at a socket of the test, send
  READY=1 only once they serve (the test uses the service the moment READY
  arrives) and STOPPING=1 when told to stop;
* with ``JOURNAL_STREAM`` naming their stderr, their lines carry no
  timestamp of their own and start with a syslog priority.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.nodes import wgpyd_argv
from wgpy.testing.prom import free_port
from wgpy.testing.sdnotify import NotifyListener, journal_env, journal_lines
from wgpy.tools import systemd

pytestmark = pytest.mark.netns

def test_every_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        require("systemd-analyze")
    units = tmp_path / "units"
    assert systemd.main(["install", "--dir", str(units)]) == 0
    names = sorted(p.name for p in units.iterdir())
    assert names == ["wgpy-discover@.service", "wgpy-exporter.service", "wgpy-proxy.service",
                     "wgpy-registry@.service", "wgpy@.service"]
    for name in names:
        text = (units / name).read_text()
        assert "Type=notify" in text and "Restart=on-failure" in text
        assert "CapabilityBoundingSet=" in text and "ProtectSystem=strict" in text
        assert "/usr/local/bin/" not in text or str(systemd.bindir()) == "/usr/local/bin"
        target = units / name.replace("@.", "@wg0.") if "@." in name else units / name
        p = subprocess.run(["systemd-analyze", "verify", str(target)], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), \
            (name, p.stdout, p.stderr)
    # The wgpyd unit never leaves the choice to wg-quick.
    quick = (units / "wgpy@.service").read_text()
    assert "ExecStart=" + str(systemd.bindir() / "wgpy") + " up --foreground %i" in quick
    assert f"WG_QUICK_USERSPACE_IMPLEMENTATION={systemd.bindir() / 'wgpyd'}" in quick
    assert "ExecReload=/bin/kill -HUP $MAINPID" in (units / "wgpy-proxy.service").read_text()


def test_a_broken_unit_fails_verify(tmp_path: Path) -> None:
    """The check above can fail: a unit naming a missing program does."""
    require("systemd-analyze")
    bad = tmp_path / "wgpy-exporter.service"
    bad.write_text(systemd.units()["wgpy-exporter.service"])  # /usr/local/bin/wgpy
    if Path("/usr/local/bin/wgpy").exists():
        pytest.skip("wgpy is installed in /usr/local/bin")
    p = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode != 0 and "/usr/local/bin/wgpy" in p.stderr


def test_wgpyd_is_ready_when_its_socket_is_served(lab: Lab) -> None:
    require("ip", "wg")
    ns = lab.netns("sd")
    ifname = lab.wg_name()
    log = lab.workdir / "wgpyd.log"
    with NotifyListener(lab.workdir) as n:
        p = lab.popen(ns, [*wgpyd_argv(), "-f", ifname], log="wgpyd.log",
                      env={**n.env(), **journal_env(log), "LOG_LEVEL": "verbose"})
        ready = n.wait("READY=1")
        assert ready.get("STATUS") == f"serving {ifname}"
        # The moment READY=1 arrived, the UAPI socket answers.
        lab.run(ns, f"wg show {ifname}", timeout=5)
        os.killpg(p.pid, signal.SIGTERM)
        assert n.wait("STOPPING=1")["STATUS"] == "received SIGTERM"
        p.wait(10)
    lines = journal_lines(log.read_text())
    assert any(line.startswith(f"<7>DEBUG: ({ifname}) Device started") for line in lines)


def test_wgpy_up_foreground_is_the_wgpyd_unit(lab: Lab) -> None:
    require("ip", "wg")
    ns = lab.netns("up")
    ifname = lab.wg_name()
    key = lab.run(None, "wg genkey").stdout.strip()
    peer = lab.run(None, ["wg", "pubkey"], input=lab.run(None, "wg genkey").stdout.encode())
    conf = lab.workdir / f"{ifname}.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {key}\nAddress = 10.98.0.1/24\n"
                    f"ListenPort = 51820\n\n[Peer]\nPublicKey = {peer.stdout.strip()}\n"
                    "AllowedIPs = 10.98.1.0/24\n")
    conf.chmod(0o600)
    env = {"WG_QUICK_USERSPACE_IMPLEMENTATION": wgpyd_argv()[0]} \
        if len(wgpyd_argv()) == 1 else {}
    argv = [sys.executable, "-m", "wgpy.tools.cli", "up", "--foreground", str(conf)]
    with NotifyListener(lab.workdir) as n:
        p = lab.popen(ns, argv, env={**n.env(), **env}, log="up.log")
        n.wait("READY=1", timeout=30)
        # Configured the moment READY=1 arrived: address, route, keys.
        assert "10.98.0.1/24" in lab.run(ns, f"ip -o addr show dev {ifname}").stdout
        assert f"10.98.1.0/24 dev {ifname}" in lab.run(ns, "ip route").stdout
        assert lab.run(ns, f"wg show {ifname} listen-port").stdout.strip() == "51820"
        os.kill(p.pid, signal.SIGTERM)
        n.wait("STOPPING=1")
        assert p.wait(20) == 0
        assert lab.run(ns, f"ip link show {ifname}", check=False).returncode != 0
        # wgpyd dies: the interface is cleaned up and the unit fails (restart).
        p = lab.popen(ns, argv, env={**n.env(), **env}, log="up2.log")
        n.wait("READY=1", timeout=30)
        lab.run(ns, f"pkill -KILL -f 'wgpy.tools.daemon -f {ifname}|wgpyd -f {ifname}'")
        assert p.wait(20) == 1
        assert "exited with status -9" in lab.log("up2.log")
    # Started without its configuration: one line, exit 1.
    missing = lab.run(ns, [sys.executable, "-m", "wgpy.tools.cli", "up", "--foreground",
                           str(lab.workdir / "wgnone.conf")], check=False)
    assert missing.returncode == 1
    assert "Traceback" not in missing.stderr and "wgnone.conf" in missing.stderr


def test_the_exporter_is_ready_when_it_serves(lab: Lab) -> None:
    require("ip")
    port = free_port()
    log = lab.workdir / "exporter.log"
    with NotifyListener(lab.workdir) as n:
        p = lab.popen(None, [sys.executable, "-m", "wgpy.tools.exporter", "--listen",
                             f"127.0.0.1:{port}", "--interface", "wgnone0"],
                      env={**n.env(), **journal_env(log)}, log="exporter.log")
        n.wait("READY=1")
        out = lab.run(None, ["curl", "-sS", f"http://127.0.0.1:{port}/metrics"], timeout=10)
        assert 'wgpy_exporter_device_up{device="wgnone0"} 0.0' in out.stdout
        os.killpg(p.pid, signal.SIGTERM)
        n.wait("STOPPING=1")
        assert p.wait(10) == 0
    lines = journal_lines(log.read_text())
    assert any(line.startswith("<6>wgpy exporter: INFO: serving /metrics") for line in lines)
    assert any(line.startswith("<3>wgpy exporter: ERROR: wgnone0:") for line in lines)
