"""End to end: client ns -> proxy ns (TPROXY) -> WireGuard tunnel -> origin ns.

One topology serves the whole module (building it and the tunnel costs a
few seconds); tests run in file order and the last one stops the proxy and
checks that teardown restored the proxy namespace's ruleset and routes.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.proxylab import (
    Topology,
    build,
    fd_count,
    rule_stats,
    snapshot,
    start_origin,
    start_proxy,
    status,
    tunnel_tools,
)

pytestmark = pytest.mark.netns

CONF = """\
[Proxy]
ListenPort = 15001
ControlSocket = {ctl}
HealthInterval = 300ms
HealthTimeout = 500ms
ConnectTimeout = 2
MaxConnections = 3000

[Rule]                            # line 9
Name = web
Prefix = 10.77.0.0/25, fd00:77::/64
Origin = {web_origin}

[Rule]
Name = pp2
Prefix = 10.77.0.128/27, fd00:77:1::/64
Protocol = tcp, udp
Origin = 10.99.0.2:8081
ProxyProtocol = v2

[Rule]
Name = pp1
Prefix = 10.77.0.160/27
Origin = 10.99.0.2:8083
ProxyProtocol = v1

[Rule]
Name = rr
Prefix = 10.77.0.192/27
Ports = 1000-1999
Origin = 10.99.0.2:8082, 10.99.0.3:8082, 10.99.0.3:8089

[Rule]
Name = same
Prefix = 10.77.0.224/28
Ports = 7000-7002
Origin = 10.99.0.3
Map = 10.77.0.230 -> 10.99.0.2:8080
HealthPort = 7000

[Rule]
Name = guarded
Prefix = 10.77.1.0/24
Deny = 192.168.50.3/32
Origin = 10.99.0.2:8080

[Rule]
Name = echo
Prefix = 10.77.2.0/24
Origin = 10.99.0.2:9000
MaxPerSource = 2000

[Rule]
Name = limited
Prefix = 10.77.3.0/24
Origin = 10.99.0.2:9000
MaxPerSource = 2

[Rule]
Name = blackhole
Prefix = 10.77.4.0/24
Origin = 10.99.0.4:80             # routed into the tunnel, but nobody answers
ConnectTimeout = 500ms
HealthCheck = no
"""

ORIGINS = [
    "tcp,10.99.0.2,8080,A", "tcp,10.99.0.2,8081,A,pp", "udp,10.99.0.2,8081,A,pp",
    "tcp,10.99.0.2,8083,A,pp", "tcp,10.99.0.2,8082,A", "tcp,10.99.0.3,8082,B",
    "tcp,10.99.0.3,7000,B", "tcp,10.99.0.3,7001,B", "tcp,10.99.0.3,7002,B",
    "tcp,10.99.0.2,9000,E",
]  # fmt: skip

rng = random.Random(int(os.environ.get("WGPY_TEST_SEED", time.time())))


class Env:
    def __init__(self, topo: Topology, conf: Path, ctl: Path, before: str) -> None:
        self.topo, self.conf, self.ctl, self.before = topo, conf, ctl, before
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0

    @property
    def lab(self) -> Lab:
        return self.topo.lab

    def write_conf(self, web_origin: str = "10.99.0.2:8080") -> None:
        self.conf.write_text(CONF.format(ctl=self.ctl, web_origin=web_origin))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    require("nft", "curl", "nc", *tunnel_tools())
    lab = Lab(tmp_path_factory.mktemp("proxy"))
    try:
        topo = build(lab)
        start_origin(topo, *ORIGINS)
        conf, ctl = lab.workdir / "proxy.conf", lab.workdir / "ctl.sock"
        e = Env(topo, conf, ctl, snapshot(lab, topo.prx))
        e.write_conf()
        lab.run(topo.prx, [sys.executable, "-m", "wgpy.proxy", "setup", "--config", str(conf)])
        e.proc = start_proxy(topo, conf, ctl)
        e.pid = e.proc.pid
        yield e
    finally:
        lab.close()


def _count(stats: dict[str, object], key: str) -> int:
    value = stats[key]
    assert isinstance(value, int), (key, value)
    return value


def proxy_cli(env: Env, *argv: str) -> subprocess.CompletedProcess[str]:
    """``wgpy proxy ARGV`` in the proxy's namespace, as an operator runs it."""
    return env.lab.run(env.topo.prx, [sys.executable, "-m", "wgpy.proxy", *argv], check=False)


def v4(prefix: str, lo: int, hi: int) -> str:
    return f"{prefix}.{rng.randrange(lo, hi)}"


def port() -> int:
    return rng.randrange(1, 65536)


def test_curl_random_addresses_and_ports_reach_origin(env: Env) -> None:
    for _ in range(4):
        addr, p = v4("10.77.0", 1, 127), port()
        rc, out = env.topo.curl(f"http://{addr}:{p}/")
        assert rc == 0 and "origin=A port=8080" in out, (addr, p, out)
    for _ in range(2):
        addr, p = f"fd00:77::{rng.randrange(1, 0xFFFF):x}", port()
        rc, out = env.topo.curl(f"http://[{addr}]:{p}/")
        assert rc == 0 and "origin=A port=8080" in out, (addr, p, out)
    st = rule_stats(env.ctl, "web")
    assert _count(st, "connections") >= 6 and _count(st, "bytes_down") > 0


def test_proxy_protocol_v2_and_v1_carry_the_real_client(env: Env) -> None:
    for url_host, client in ((v4("10.77.0", 128, 160), "192.168.50.2"),
                             (f"[fd00:77:1::{rng.randrange(1, 999)}]", "fd00:50::2")):  # fmt: skip
        p = port()
        rc, out = env.topo.curl(f"http://{url_host}:{p}/")
        assert rc == 0, out
        m = re.search(r"client=(\S+):(\d+) dst=(\S+):(\d+)", out)
        assert m, out
        assert m.group(1) == client  # not the proxy's tunnel address 10.99.0.1
        assert f"[{m.group(3)}]" == url_host or m.group(3) == url_host
        assert int(m.group(4)) == p
    addr, p = v4("10.77.0", 160, 192), port()
    rc, out = env.topo.curl(f"http://{addr}:{p}/")
    assert rc == 0 and "client=192.168.50.2:" in out and f"dst={addr}:{p}" in out, out


def test_udp_round_trips_v4_and_v6(env: Env) -> None:
    for host, client in ((v4("10.77.0", 128, 160), "192.168.50.2"),
                         (f"fd00:77:1::{rng.randrange(1, 999):x}", "fd00:50::2")):  # fmt: skip
        p = port()
        # nc -u connects its socket, so a reply only arrives if it comes from host:p.
        r = env.lab.run(env.topo.cli, f"printf ping-{p} | timeout 5 nc -u -w2 {host} {p}",
                        check=False)  # fmt: skip
        assert f"origin=A client={client}:" in r.stdout and f"data=ping-{p}" in r.stdout, (
            host, p, r.stdout, r.stderr)  # fmt: skip
    st = rule_stats(env.ctl, "pp2")
    assert _count(st, "udp_flows") >= 2 and _count(st, "udp_datagrams_down") >= 2


def test_same_port_origin_and_per_address_map(env: Env) -> None:
    for p in (7000, 7001, 7002):
        rc, out = env.topo.curl(f"http://{v4('10.77.0', 225, 230)}:{p}/")
        assert rc == 0 and f"origin=B port={p}" in out, out
    rc, out = env.topo.curl("http://10.77.0.230:7001/")
    assert rc == 0 and "origin=A port=8080" in out, out
    # A port outside the rule is not diverted; AnyIP makes the kernel refuse it.
    t0 = time.monotonic()
    rc, out = env.topo.curl(f"http://{v4('10.77.0', 225, 230)}:7005/", timeout=5)
    assert rc == 7 and time.monotonic() - t0 < 3, out


def test_round_robin_and_dead_origin_taken_out(env: Env) -> None:
    seen = []
    for _ in range(6):
        rc, out = env.topo.curl(f"http://{v4('10.77.0', 193, 223)}:{rng.randrange(1000, 2000)}/")
        assert rc == 0, out  # the dead origin is skipped, never surfaced
        m = re.search(r"origin=(\w)", out)
        assert m, out
        seen.append(m.group(1))
    assert set(seen) == {"A", "B"}, seen

    def dead_down() -> bool:
        origins = status(env.ctl)["origins"]
        assert isinstance(origins, dict)
        return origins["10.99.0.3:8089"]["up"] is False and origins["10.99.0.3:8082"]["up"]

    env.lab.wait_for("health check to mark 10.99.0.3:8089 down", dead_down, timeout=10)
    fails = rule_stats(env.ctl, "rr")["origin_failures"]
    for _ in range(4):
        rc, out = env.topo.curl(f"http://{v4('10.77.0', 193, 223)}:{rng.randrange(1000, 2000)}/")
        assert rc == 0, out
    assert rule_stats(env.ctl, "rr")["origin_failures"] == fails  # no longer dialled


def test_denied_cidr_gets_a_reset_not_a_hang(env: Env) -> None:
    addr, p = v4("10.77.1", 1, 255), port()
    t0 = time.monotonic()
    rc, out = env.topo.curl(f"http://{addr}:{p}/", "--interface", "192.168.50.3", timeout=8)
    assert rc in (7, 52, 56), (rc, out)  # refused / empty reply / reset
    assert time.monotonic() - t0 < 3
    assert "reset" in out.lower() or rc == 7, out
    rc, out = env.topo.curl(f"http://{addr}:{p}/", "--interface", "192.168.50.2")
    assert rc == 0 and "origin=A" in out, out
    assert rule_stats(env.ctl, "guarded")["refused"] == {"denied": 1}


def test_nc_half_close_and_unmatched_traffic(env: Env) -> None:
    host, p = v4("10.77.2", 1, 255), port()
    r = env.lab.run(env.topo.cli, f"printf hello | timeout 5 nc -N {host} {p}", check=False)
    assert r.stdout.startswith("helloBYE origin=E client=10.99.0.1:"), (r.stdout, r.stderr)


def test_per_source_limit_refuses_with_a_reset(env: Env) -> None:
    lab = env.lab
    ready, release = lab.workdir / "ready-l", lab.workdir / "release-l"
    p = lab.popen(env.topo.cli, [sys.executable, "-m", "wgpy.testing.many_clients", "2",
                                 "10.77.3", str(ready), str(release), "30"],
                  log="limited.log")  # fmt: skip
    lab.wait_for("2 held connections", ready.exists, timeout=20)
    try:
        t0 = time.monotonic()
        rc, out = env.topo.curl(f"http://{v4('10.77.3', 1, 255)}:{port()}/", timeout=8)
        assert rc in (7, 52, 56) and time.monotonic() - t0 < 3, (rc, out)  # RST, no hang
        assert rule_stats(env.ctl, "limited")["refused"] == {"source-limit": 1}
    finally:
        release.touch()
    assert p.wait(timeout=30) == 0, lab.log("limited.log")


def test_connect_timeout_to_a_silent_origin_ends_in_a_reset(env: Env) -> None:
    t0 = time.monotonic()
    rc, out = env.topo.curl(f"http://{v4('10.77.4', 1, 255)}:{port()}/", timeout=8)
    elapsed = time.monotonic() - t0
    assert rc in (52, 56) and 0.4 < elapsed < 3, (rc, out, elapsed)
    st = rule_stats(env.ctl, "blackhole")
    assert st["refused"] == {"origin-unreachable": 1} and st["origin_failures"] == 1


def test_thousand_concurrent_connections_no_fd_leak(env: Env) -> None:
    lab = env.lab
    fds_before = fd_count(env.pid)
    ready, release = lab.workdir / "ready", lab.workdir / "release"
    p = lab.popen(env.topo.cli, [sys.executable, "-m", "wgpy.testing.many_clients", "1000",
                                 "10.77.2", str(ready), str(release), "60"],
                  log="many.log")  # fmt: skip
    lab.wait_for("1000 connections open", ready.exists, timeout=90, step=0.2)
    assert '"open": 1000' in ready.read_text(), (ready.read_text(), lab.log("many.log"))
    st = status(env.ctl)
    held = fd_count(env.pid)
    assert st["active_tcp"] == 1000 and held >= fds_before + 2000, (st["active_tcp"], held)
    release.touch()
    assert p.wait(timeout=90) == 0, lab.log("many.log")
    lab.wait_for("proxy to release every connection",
                 lambda: status(env.ctl)["active_tcp"] == 0, timeout=20)  # fmt: skip
    lab.wait_for("fd count back to its baseline",
                 lambda: fd_count(env.pid) <= fds_before, timeout=10)  # fmt: skip
    assert fd_count(env.pid) == fds_before
    print("many:", lab.log("many.log").strip(), "fds", fds_before, held)


def test_sighup_reload_keeps_live_connections_and_refuses_bad_config(env: Env) -> None:
    lab = env.lab
    ready, release = lab.workdir / "ready2", lab.workdir / "release2"
    p = lab.popen(env.topo.cli, [sys.executable, "-m", "wgpy.testing.many_clients", "20",
                                 "10.77.2", str(ready), str(release), "60"],
                  log="held.log")  # fmt: skip
    lab.wait_for("20 held connections", ready.exists, timeout=30)
    good = env.conf.read_text()
    try:
        env.conf.write_text(good.replace("Origin = 10.99.0.2:8080\n", "Origin = 10.99.0.2:80800\n"))
        os.kill(env.pid, signal.SIGHUP)
        lab.wait_for("refused reload", lambda: status(env.ctl)["reload_failures"] == 1)
        err = status(env.ctl)["last_reload_error"]
        assert f"{env.conf}:12: origin:" in str(err), err
        rc, out = env.topo.curl(f"http://{v4('10.77.0', 1, 127)}:{port()}/")
        assert rc == 0 and "origin=A port=8080" in out, out  # old rules still serve
        # While the file does not parse, the tools still reach the proxy, and
        # `reload` reports the proxy's own verdict.
        r = proxy_cli(env, "reload", "--config", str(env.conf))
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert r.stderr == ("wgpy proxy: reload refused, the running configuration stays: "
                            f"{env.conf}:12: origin: 80800 is out of range 1..65535\n")
        r = proxy_cli(env, "status", "--config", str(env.conf))
        assert r.returncode == 0 and "reloads 0 (2 refused)" in r.stdout, (r.stdout, r.stderr)
        assert f"last refused reload: {env.conf}:12: origin: 80800" in r.stdout

        env.write_conf(web_origin="10.99.0.3:8082")
        r = proxy_cli(env, "reload", "--config", str(env.conf))
        assert (r.returncode, r.stdout) == (0, f"reloaded {env.conf}: 9 rule(s)\n"), r.stderr
        assert status(env.ctl)["reloads"] == 1
        rc, out = env.topo.curl(f"http://{v4('10.77.0', 1, 127)}:{port()}/")
        assert rc == 0 and "origin=B port=8082" in out, out
        assert status(env.ctl)["active_tcp"] == 20
    finally:
        env.conf.write_text(good)
        release.touch()
    assert p.wait(timeout=30) == 0, lab.log("held.log")  # all 20 still echoed after reload
    os.kill(env.pid, signal.SIGHUP)
    lab.wait_for("reload back", lambda: status(env.ctl)["reloads"] == 2)


def test_stop_and_teardown_restore_the_proxy_namespace(env: Env) -> None:
    lab = env.lab
    out = lab.run(None, [sys.executable, "-m", "wgpy.proxy", "status", "--socket",
                         str(env.ctl)]).stdout  # fmt: skip
    assert "rule web:" in out and "origin 10.99.0.3:8089: DOWN" in out, out
    installed = snapshot(lab, env.topo.prx)
    assert installed != env.before
    # Removing the setup under a running proxy would leave it serving nothing.
    r = proxy_cli(env, "teardown", "--config", str(env.conf))
    assert r.returncode == 1 and r.stderr == (
        f"wgpy proxy: a proxy (pid {env.pid}) still serves this setup on {env.ctl}: "
        "stop it first (SIGTERM), or use --force\n"), r.stderr
    assert snapshot(lab, env.topo.prx) == installed
    os.kill(env.pid, signal.SIGTERM)
    assert env.proc is not None and env.proc.wait(timeout=10) == 0, lab.log("proxy.log")
    assert not env.ctl.exists()
    lab.run(env.topo.prx, [sys.executable, "-m", "wgpy.proxy", "teardown", "--config",
                           str(env.conf)])  # fmt: skip
    assert snapshot(lab, env.topo.prx) == env.before
