"""setup/teardown in a namespace: exactly our routes, rules and nft table."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.proxylab import snapshot

pytestmark = pytest.mark.netns

CONF = """\
[Proxy]
ListenPort = 15011
NftTable = wgpy_proxy_t
[Rule]
Name = web
Prefix = 10.77.0.0/24, fd00:77::/64
Ports = 80, 443, 8000-8999
Protocol = tcp, udp
Origin = 10.99.0.2:8080
[Rule]
Name = any
Prefix = 10.78.0.0/24
Origin = 10.99.0.3
"""


def _cli(lab: Lab, ns: str, *args: str, check: bool = True) -> str:
    p = lab.run(ns, [sys.executable, "-m", "wgpy.proxy", *args], check=check)
    return p.stdout + p.stderr


def test_setup_teardown_leave_ruleset_and_local_table_unchanged(lab: Lab, tmp_path: Path) -> None:
    require("nft", "ip")
    ns = lab.netns("setup")
    # Something pre-existing of the same kinds that teardown must not touch.
    lab.run(ns, "ip route add local 10.66.0.0/24 dev lo table local"
                " && ip rule add fwmark 0x99 lookup 99 priority 99"
                " && nft add table inet other && nft add chain inet other c")  # fmt: skip
    conf = tmp_path / "p.conf"
    conf.write_text(CONF)
    before = snapshot(lab, ns)

    printed = _cli(lab, ns, "setup", "--config", str(conf), "--print")
    assert "tproxy ip to 127.0.0.1:15011" in printed
    assert "tproxy ip6 to [::1]:15011" in printed
    assert "ip -4 route add local 10.77.0.0/24 dev lo table local" in printed
    assert snapshot(lab, ns) == before, "--print must not apply anything"

    _cli(lab, ns, "setup", "--config", str(conf))
    _cli(lab, ns, "setup", "--config", str(conf))  # idempotent
    during = snapshot(lab, ns)
    assert "table inet wgpy_proxy_t" in during
    assert "local 10.77.0.0/24 dev lo proto 242" in during
    assert "local fd00:77::/64 dev lo proto 242" in during
    assert "fwmark 0x2a0 lookup 4242" in during
    assert during.count("fwmark 0x2a0 lookup 4242") == 2  # v4 + v6, not duplicated

    assert "nft delete table inet wgpy_proxy_t" in _cli(
        lab, ns, "teardown", "--config", str(conf), "--print"
    )
    _cli(lab, ns, "teardown", "--config", str(conf))
    assert snapshot(lab, ns) == before
    _cli(lab, ns, "teardown", "--config", str(conf))  # a second teardown is harmless
    assert snapshot(lab, ns) == before


def test_setup_failure_rolls_back(lab: Lab, tmp_path: Path) -> None:
    require("nft", "ip")
    ns = lab.netns("setupf")
    conf = tmp_path / "p.conf"
    conf.write_text(CONF)
    # With IPv6 off the v6 routes fail after the nft table and the v4 routes
    # went in; all of that must be taken out again.
    lab.run(ns, "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.lo.disable_ipv6=1")
    before = snapshot(lab, ns)
    p = lab.run(ns, [sys.executable, "-m", "wgpy.proxy", "setup", "--config", str(conf)],
                check=False)  # fmt: skip
    assert p.returncode == 1, p.stdout + p.stderr
    assert "ip -6 route add local" in p.stderr and "Traceback" not in p.stderr
    assert snapshot(lab, ns) == before


def test_run_with_setup_syncs_on_reload_and_cleans_up_on_exit(lab: Lab, tmp_path: Path) -> None:
    require("nft", "ip")
    ns = lab.netns("runset")
    conf, ctl = tmp_path / "p.conf", tmp_path / "ctl.sock"
    text = CONF.replace("[Proxy]\n", f"[Proxy]\nControlSocket = {ctl}\n")
    conf.write_text(text)
    before = snapshot(lab, ns)
    proc = lab.popen(ns, [sys.executable, "-m", "wgpy.proxy", "run", "--setup", "--config",
                          str(conf)], log="run.log")  # fmt: skip

    def serving() -> bool:
        assert proc.poll() is None, lab.log("run.log")
        return "serving" in lab.log("run.log")

    lab.wait_for("proxy with setup", serving, timeout=15)
    conf.write_text(text.replace("Prefix = 10.78.0.0/24", "Prefix = 10.78.0.0/24, 10.79.0.0/24"))
    proc.send_signal(signal.SIGHUP)
    lab.wait_for("synced route", lambda: "local 10.79.0.0/24" in snapshot(lab, ns), timeout=10)
    assert "10.79.0.0/24" in lab.run(ns, "nft list table inet wgpy_proxy_t").stdout
    conf.write_text(text.replace("Prefix = 10.78.0.0/24", "Prefix = 10.78.0.0/99"))
    proc.send_signal(signal.SIGHUP)
    lab.wait_for("refused reload", lambda: "reload refused" in lab.log("run.log"), timeout=10)
    assert "p.conf:13: prefix:" in lab.log("run.log")
    assert "local 10.79.0.0/24" in snapshot(lab, ns)  # nothing changed
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0, lab.log("run.log")
    assert snapshot(lab, ns) == before
