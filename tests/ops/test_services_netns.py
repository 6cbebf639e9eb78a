"""``wgpy registry``, ``wgpy discover`` and ``wgpy proxy`` as services: each,
started with ``NOTIFY_SOCKET`` pointing at a socket of the test, sends
READY=1 only once it serves (the test uses it the moment READY arrives),
RELOADING=1 and READY=1 around the proxy's reload, STOPPING=1 on SIGTERM;
their ``--metrics`` endpoints show what they count (the registry's queries
by type and rcode and updates, discover's path per peer, what
``wgpy proxy status`` shows), and under ``JOURNAL_STREAM`` their lines carry
priorities, never a timestamp.  A service started without its configuration
says so in one line and exits non-zero."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from wgpy.testing.lab import Lab, require
from wgpy.testing.natlab import CLI, DEVICE, REG_PUBLIC, REG_TUNNEL, ZONE, NatLab, wait_ping
from wgpy.testing.proxylab import build, start_origin, status
from wgpy.testing.sdnotify import NotifyListener, journal_env, journal_lines

pytestmark = pytest.mark.netns

Samples = list[tuple[str, dict[str, str], float]]


def scrape(lab: Lab, ns: str, port: int) -> Samples:
    out = lab.run(ns, ["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{port}/metrics"],
                  timeout=15).stdout
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(out)
            for s in f.samples]


def value(samples: Samples, metric: str, **labels: str) -> float:
    hits = [v for n, lb, v in samples
            if n == metric and all(lb.get(k) == x for k, x in labels.items())]
    assert len(hits) == 1, (metric, labels, hits)
    return hits[0]


def test_registry_and_discover(lab: Lab) -> None:
    require("wg", DEVICE, "dig", "iptables", "curl")
    nl = NatLab(lab)
    nl.build_internet()
    reg = nl.build_registry()
    a, b = nl.two_peers()
    nl.wait_registry_sees(a, b)
    args = lab.workdir / "registry.args"
    args.write_text(f"--zone {ZONE}   # as /etc/wgpy/registry-IF.args\n"
                    f"--listen {REG_PUBLIC}:53 --listen {REG_PUBLIC}:5353\n"
                    f"--listen {REG_TUNNEL}:53\n"
                    "--metrics 127.0.0.1:9587 --ttl 1\n")
    log = lab.workdir / "registry.log"
    with NotifyListener(lab.workdir, "reg.sock") as n:
        lab.popen(reg.ns, [*CLI, "registry", "--interface", reg.ifname, f"@{args}"],
                  env={**n.env(), **journal_env(log)}, log="registry.log")
        n.wait("READY=1")
        # Serving the moment READY=1 came: no retry, one try of one second.
        assert nl.dig(reg.ns, REG_PUBLIC, f"{ZONE} SOA") != ""
        # Another registry on the same address never gets ready: exit 1.
        second = lab.popen(reg.ns, [*CLI, "registry", "--interface", reg.ifname, "--zone", ZONE,
                                    "--listen", f"{REG_PUBLIC}:53"], env=n.env(), log="r2.log")
        assert second.wait(15) == 1
        assert "cannot listen on 10.200.0.2:53" in lab.log("r2.log")
        assert all(m.get("READY") != "1" for m in n.drain())
    for q in (f"_wireguard._udp.{ZONE} PTR", f"nosuch.{ZONE} A", f"{ZONE} NS",
              "example.com A"):
        nl.dig(reg.ns, REG_PUBLIC, q, check=False)
    assert nl.send_update(a.ns, REG_PUBLIC, a.public, "192.168.1.99") == "REFUSED"
    s = scrape(lab, reg.ns, 9587)
    z = {"zone": ZONE}
    assert value(s, "wgpy_registry_queries_total", type="PTR", **z) >= 1
    assert value(s, "wgpy_registry_queries_total", type="SOA", **z) >= 1
    assert value(s, "wgpy_registry_responses_total", rcode="NXDOMAIN", **z) >= 1
    assert value(s, "wgpy_registry_responses_total", rcode="REFUSED", **z) >= 2
    assert value(s, "wgpy_registry_updates_total", result="refused", **z) == 1
    assert value(s, "wgpy_registry_published_peers", **z) == 2
    assert value(s, "wgpy_registry_device_up", **z) == 1
    lines = journal_lines(log.read_text())
    assert any(line.startswith("<6>wgpy registry: INFO: serving zone") for line in lines)
    assert any(line.startswith("<4>wgpy registry: WARNING: refused update") for line in lines)

    # discover: ready once it asked the registry; its path metric goes from
    # none to direct when the hole is punched.
    with NotifyListener(lab.workdir, "disc.sock") as n:
        dlog = lab.workdir / "discover.log"
        argv = nl.discover_argv(a, "--interval", "2", "--metrics", "127.0.0.1:9588")
        lab.popen(a.ns, argv, env={**n.env(), **journal_env(dlog)}, log="discover.log")
        n.wait("READY=1", timeout=20)
        s = scrape(lab, a.ns, 9588)
        assert value(s, "wgpy_discover_refreshes_total", device=a.ifname, result="ok") >= 1
        assert value(s, "wgpy_discover_registry_up", device=a.ifname) == 1
        nl.start_discover(b)
        wait_ping(nl, a, b.tunnel, timeout=30)

        def direct() -> bool:
            s = scrape(lab, a.ns, 9588)
            return value(s, "wgpy_discover_peer_path", device=a.ifname, public_key=b.public,
                         path="direct") == 1

        lab.wait_for("discover's path metric to say direct", direct, timeout=15, step=0.5)
        s = scrape(lab, a.ns, 9588)
        for kind in ("lan", "relayed", "none"):
            assert value(s, "wgpy_discover_peer_path", device=a.ifname, public_key=b.public,
                         path=kind) == 0
        assert value(s, "wgpy_discover_peer_path_seconds", device=a.ifname,
                     public_key=b.public) < 60
        assert value(s, "wgpy_discover_peer_endpoint_info", device=a.ifname,
                     public_key=b.public, endpoint=nl.endpoints(a)[b.public]) == 1
        assert value(s, "wgpy_discover_endpoint_sets_total", device=a.ifname) >= 1
    assert any(line.startswith("<6>wgpy discover: INFO:") for line in journal_lines(
        dlog.read_text()))
    # Started without its options file (as the units run them): one line, exit 2.
    for ns, command in ((a.ns, "discover"), (reg.ns, "registry")):
        missing = lab.workdir / f"{command}-none.args"
        bad = lab.run(ns, [*CLI, command, "--interface", a.ifname, f"@{missing}"], check=False)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
        assert "No such file or directory" in bad.stderr and str(missing) in bad.stderr


PROXY_CONF = """\
[Proxy]
ListenPort = 15001
ControlSocket = {ctl}
HealthInterval = 300ms

[Rule]
Name = web
Prefix = 10.77.0.0/24
Origin = 10.99.0.2:8080
Deny = 192.168.50.3/32
"""


def test_proxy(lab: Lab) -> None:
    require("nft", "curl", "wg")
    topo = build(lab)
    start_origin(topo, "tcp,10.99.0.2,8080,A")
    conf, ctl = lab.workdir / "proxy.conf", lab.workdir / "ctl.sock"
    conf.write_text(PROXY_CONF.format(ctl=ctl))
    log = lab.workdir / "proxy.log"
    with NotifyListener(lab.workdir, "proxy.sock") as n:
        p = lab.popen(topo.prx, [sys.executable, "-m", "wgpy.proxy", "run", "--setup",
                                 "--config", str(conf), "--metrics", "127.0.0.1:9589"],
                      env={**n.env(), **journal_env(log)}, log="proxy.log")
        n.wait("READY=1", timeout=20)
        # Listeners, setup and origin in place the moment READY=1 came.
        rc, out = topo.curl("http://10.77.0.5:443/", timeout=5)
        assert rc == 0, out
        assert topo.curl("http://10.77.0.5/", "--interface", "192.168.50.3")[0] != 0  # Deny
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        os.kill(p.pid, signal.SIGHUP)
        reloading = n.wait("RELOADING=1")
        assert before <= int(reloading["MONOTONIC_USEC"]) <= \
            time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert n.wait("READY=1")["STATUS"] == "serving 1 rule(s)"
        st = status(ctl)
        s = scrape(lab, topo.prx, 9589)
        web = st["rules"]["web"]  # type: ignore[index]
        assert value(s, "wgpy_proxy_connections_total", rule="web") == web["connections"] >= 1
        assert value(s, "wgpy_proxy_bytes_total", rule="web", direction="down") == \
            web["bytes_down"] > 0
        assert value(s, "wgpy_proxy_refused_total", rule="web", reason="denied") == \
            web["refused"]["denied"] == 1
        assert value(s, "wgpy_proxy_origin_up", origin="10.99.0.2:8080") == 1
        assert value(s, "wgpy_proxy_reloads_total", result="ok") == 1
        os.kill(p.pid, signal.SIGTERM)
        n.wait("STOPPING=1")
        assert p.wait(20) == 0
    lines = journal_lines(log.read_text())
    assert any(line.startswith("<6>wgpy-proxy: INFO serving 1 rule(s)") for line in lines)
    # Started without its configuration: one line, exit 2.
    missing = lab.run(topo.prx, [sys.executable, "-m", "wgpy.proxy", "run", "--config",
                                 str(Path(lab.workdir) / "none.conf")], check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "none.conf" in missing.stderr and "No such file" in missing.stderr
