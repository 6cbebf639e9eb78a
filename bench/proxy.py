"""Benchmark ``wgpy proxy`` against HAProxy on the same TPROXY listener.

    sudo python3 bench/proxy.py                    # 3 rounds (a few minutes)
    sudo python3 bench/proxy.py --rounds 5 --seconds 5 --out /tmp/proxybench
    sudo python3 bench/proxy.py --smoke            # ~40 s: checks that it works
    sudo python3 bench/proxy.py --baseline /tmp/main/src --only rate   # a change, measured

The proxy lab of the tests (``wgpy.testing.proxylab``): a client namespace,
the proxy's namespace, and the origin's behind a WireGuard tunnel (wgpyd at
both ends).  ``wgpy proxy setup`` installs the nftables TPROXY rule, AnyIP
route and fwmark rule once; then, in each round and in rotating order,
either ``wgpy proxy run`` or HAProxy (Debian's ``haproxy``, ``mode tcp``,
``bind 127.0.0.1:15001 transparent``, the server without a port so the
client's port is kept, as the wgpy rule's ``Origin = 10.99.0.2``) listens on
the one TPROXY port, and the client measures through it:

* new connections per second: ``ab`` (apache2-utils: HTTP/1.0, a new
  connection per request, 32 at a time) against a HAProxy that answers
  ``200`` itself on the origin (so the origin is never the limit), and the
  proxy's CPU time per connection (steadier than the rate on a shared host),
  all of it and its user (not kernel) part;
* one-stream throughput: ``iperf3`` (one TCP stream, client to origin) and
  the proxy's CPU seconds per GB moved (utime+stime from /proc);
* 1,000 concurrent connections: ``wgpy.testing.connload`` opens them at once
  to an echo origin and echoes 64 bytes on each; the seconds that takes, the
  seconds of a second echo on all of them, and the proxy's resident memory
  while they are open.

``--baseline SRC`` also runs ``wgpy proxy`` from another source tree (e.g.
``git archive main src | tar -x -C /tmp/main``) as ``wgpy-base``, in the same
rounds and rotating order, to measure a change against the code before it;
``--only rate`` (or ``tput``, ``conc``, comma-separated) keeps those tests.

Medians over the rounds and the ratio wgpy/HAProxy go to stdout, every
sample to results.json.  HAProxy runs with its defaults (one thread per CPU);
wgpy proxy is one process, one thread.  Everything runs in namespaces it
creates (10.0.0.0/8 and 192.168.0.0/16 addresses) and is removed at the
end, on an error or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from wgpy.testing.lab import Lab, LabError, have_root_netns
from wgpy.testing.proxylab import Topology, build, start_origin

LISTEN = 15001
VIP = "10.77.0.5"  # any address of the published prefix
ORIGIN = "10.99.0.2"
HTTP_PORT, IPERF_PORT, ECHO_PORT = 8080, 5201, 9000
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXIES = ("haproxy", "wgpy")
BASELINE = "wgpy-base"
TESTS = ("rate", "tput", "conc")

WGPY_CONF = f"""\
[Proxy]
ListenPort = {LISTEN}
ControlSocket = {{ctl}}
MaxConnections = 20000
MaxPerSource = 20000
HealthInterval = 60

[Rule]
Name = bench
Prefix = 10.77.0.0/24
Origin = {ORIGIN}
"""

HAPROXY_CONF = f"""\
global
    maxconn 8000
    log stderr format raw local0 err

defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s

frontend tproxy
    bind 127.0.0.1:{LISTEN} transparent
    default_backend origin

backend origin
    server origin {ORIGIN}
"""

# The origin's HTTP answerer: HAProxy replying by itself, so that the
# connection-rate test measures the proxies, not a slow origin.
ORIGIN_HTTP = f"""\
global
    maxconn 8000

defaults
    mode http
    timeout client 10s
    timeout connect 5s
    timeout server 10s

frontend answer
    bind {ORIGIN}:{HTTP_PORT}
    http-request return status 200 content-type text/plain string "ok"
"""


@dataclass
class Settings:
    rounds: int
    seconds: float
    concurrent: int
    hold: float
    baseline: Path | None = None  # a source tree run as BASELINE
    tests: tuple[str, ...] = TESTS


@dataclass
class Results:
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, proxy: str, key: str, value: float | None) -> None:
        if value is not None:
            self.samples.setdefault(proxy, {}).setdefault(key, []).append(value)


METRICS = [  # key, label, unit, higher is better
    ("conn_per_s", "new connections/s (ab, 32 at a time)", "1/s", True),
    ("cpu_us_per_conn", "proxy CPU per new connection", "µs", False),
    ("user_us_per_conn", "  of which user time", "µs", False),
    ("tput_gbit", "one-stream throughput (iperf3)", "Gbit/s", True),
    ("cpu_s_per_gb", "proxy CPU per GB (one stream)", "s/GB", False),
    ("c1000_open_s", "{n} connections: open + echo", "s", False),
    ("c1000_echo_s", "{n} connections: echo on all", "s", False),
    ("c1000_rss_mb", "proxy memory with {n} open", "MB", False),
]


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def listening(lab: Lab, ns: str, port: int) -> bool:
    return f"127.0.0.1:{port}" in lab.run(ns, "ss -ltn").stdout


# -- the lab -----------------------------------------------------------------------------


def build_lab(lab: Lab) -> tuple[Topology, Path]:
    topo = build(lab)
    start_origin(topo, f"tcp,{ORIGIN},{ECHO_PORT},E")
    origin_cfg = lab.workdir / "origin-http.cfg"
    origin_cfg.write_text(ORIGIN_HTTP)
    lab.popen(topo.org, ["haproxy", "-db", "-f", str(origin_cfg)], log="origin-http.log")
    lab.popen(topo.org, ["iperf3", "-s", "-B", ORIGIN, "-p", str(IPERF_PORT)],
              log="iperf3-server.log")
    lab.wait_for("origin services", lambda: all(
        f"{ORIGIN}:{p}" in lab.run(topo.org, "ss -ltn").stdout
        for p in (HTTP_PORT, IPERF_PORT, ECHO_PORT)), timeout=20)
    conf = lab.workdir / "proxy.conf"
    conf.write_text(WGPY_CONF.format(ctl=lab.workdir / "ctl.sock"))
    lab.run(topo.prx, [sys.executable, "-m", "wgpy.proxy", "setup", "--config", str(conf)])
    return topo, conf


def start_proxy(topo: Topology, which: str, conf: Path,
                baseline: Path | None = None) -> subprocess.Popen[bytes]:
    lab = topo.lab
    env = None
    if which in ("wgpy", BASELINE):
        argv = [sys.executable, "-m", "wgpy.proxy", "run", "--config", str(conf)]
        if which == BASELINE:
            assert baseline is not None
            env = {"PYTHONPATH": str(baseline)}
    else:
        cfg = lab.workdir / "haproxy.cfg"
        cfg.write_text(HAPROXY_CONF)
        argv = ["haproxy", "-db", "-f", str(cfg)]
    p = lab.popen(topo.prx, argv, env=env, log=f"{which}.log")
    lab.wait_for(f"{which} listening", lambda: listening(lab, topo.prx, LISTEN), timeout=20)
    return p


def stop_proxy(topo: Topology, p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
    topo.lab.wait_for("the listener to close", lambda: not listening(topo.lab, topo.prx,
                                                                       LISTEN), timeout=15)


# -- the measurements ------------------------------------------------------------------


def conn_rate(topo: Topology, pid: int, seconds: float, res: Results, which: str) -> None:
    n = 200_000  # -t bounds the run; -n only caps it
    user0, sys0 = cpu_times(pid)
    p = topo.lab.run(topo.cli, f"ab -q -r -s 10 -c 32 -t {seconds:g} -n {n} "
                               f"http://{VIP}:{HTTP_PORT}/", check=False, timeout=seconds + 60)
    user1, sys1 = cpu_times(pid)
    m = re.search(r"Requests per second:\s+([\d.]+)", p.stdout)
    done = re.search(r"Complete requests:\s+(\d+)", p.stdout)
    failed = re.search(r"Failed requests:\s+(\d+)", p.stdout)
    if not m or not done:
        res.notes.append(f"{which}: ab failed: {p.stdout[-300:]}{p.stderr[-300:]}")
        return
    res.add(which, "conn_per_s", float(m.group(1)))
    if int(done.group(1)):
        # What a connection costs the proxy: steadier than the rate on a busy host.
        per_conn = 1e6 / int(done.group(1))
        res.add(which, "cpu_us_per_conn", (user1 - user0 + sys1 - sys0) * per_conn)
        res.add(which, "user_us_per_conn", (user1 - user0) * per_conn)
    if failed and int(failed.group(1)):
        res.notes.append(f"{which}: ab counted {failed.group(1)} failed requests")


def throughput(topo: Topology, pid: int, seconds: float, res: Results, which: str) -> None:
    cpu0 = cpu_seconds(pid)
    p = topo.lab.run(topo.cli, f"iperf3 -c {VIP} -p {IPERF_PORT} -J -t {seconds:g}",
                     check=False, timeout=seconds + 60)
    cpu1 = cpu_seconds(pid)
    try:
        end = json.loads(p.stdout)["end"]
        received = end["sum_received"]
    except (ValueError, KeyError):
        res.notes.append(f"{which}: iperf3 failed: {p.stdout[-300:]}{p.stderr[-300:]}")
        return
    res.add(which, "tput_gbit", received["bits_per_second"] / 1e9)
    gb = received["bytes"] / 1e9
    if gb > 0:
        res.add(which, "cpu_s_per_gb", (cpu1 - cpu0) / gb)


def concurrent(topo: Topology, pid: int, s: Settings, res: Results, which: str) -> None:
    argv = (f"ulimit -n 65536; exec {sys.executable} -m wgpy.testing.connload {VIP} "
            f"{ECHO_PORT} {s.concurrent} --hold {s.hold:g}")
    p = subprocess.Popen(["ip", "netns", "exec", topo.cli, "bash", "-c", argv],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        if line.strip() == "HOLDING":
            res.add(which, "c1000_rss_mb", rss_mb(pid))
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        res.notes.append(f"{which}: connload timed out")
        return
    try:
        r = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        res.notes.append(f"{which}: connload failed: {out[-300:]}{err[-300:]}")
        return
    if r["established"] < s.concurrent or r["failures"]:
        res.notes.append(f"{which}: {int(r['established'])}/{s.concurrent} connections, "
                         f"{int(r['failures'])} failures")
    res.add(which, "c1000_open_s", r["open_and_echo_s"])
    res.add(which, "c1000_echo_s", r["echo_all_s"])


def one_round(topo: Topology, conf: Path, order: tuple[str, ...], s: Settings,
              res: Results) -> None:
    for which in order:
        p = start_proxy(topo, which, conf, s.baseline)
        try:
            if "rate" in s.tests:
                conn_rate(topo, p.pid, s.seconds, res, which)
            if "tput" in s.tests:
                throughput(topo, p.pid, s.seconds, res, which)
            if "conc" in s.tests:
                concurrent(topo, p.pid, s, res, which)
        finally:
            stop_proxy(topo, p)


# -- report -----------------------------------------------------------------------------


def summary(res: Results) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for which, keys in res.samples.items():
        for key, vals in keys.items():
            out.setdefault(which, {})[key] = {
                "median": statistics.median(vals), "min": min(vals), "max": max(vals),
                "n": float(len(vals))}
    return out


def table(summ: dict[str, dict[str, dict[str, float]]], s: Settings) -> str:
    base = s.baseline is not None
    rows = ["| metric | unit | HAProxy | wgpy proxy | wgpy / HAProxy |"
            + (" wgpy-base | wgpy / wgpy-base |" if base else ""),
            "|---|---|---|---|---|" + ("---|---|" if base else "")]

    def cell(x: dict[str, float] | None) -> str:
        if x is None:
            return "-"
        return f"{x['median']:.3g} ({x['min']:.3g}-{x['max']:.3g})"

    def ratio(a: dict[str, float] | None, b: dict[str, float] | None) -> str:
        return f"x{a['median'] / b['median']:.2f}" if a and b and b["median"] else "-"

    for key, label, unit, _ in METRICS:
        h = summ.get("haproxy", {}).get(key)
        w = summ.get("wgpy", {}).get(key)
        if h is None and w is None:
            continue  # a test left out with --only
        row = f"| {label.format(n=s.concurrent)} | {unit} | {cell(h)} | {cell(w)} | {ratio(w, h)} |"
        if base:
            b = summ.get(BASELINE, {}).get(key)
            row += f" {cell(b)} | {ratio(w, b)} |"
        rows.append(row)
    return "\n".join(rows)


def goals(summ: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    out = []
    for key, goal, what in (("tput_gbit", 0.9, "throughput"), ("conn_per_s", 0.5,
                                                                 "connection rate")):
        h, w = summ.get("haproxy", {}).get(key), summ.get("wgpy", {}).get(key)
        if h and w and h["median"]:
            r = w["median"] / h["median"]
            out.append(f"{what}: x{r:.2f} of HAProxy (goal >= x{goal}): "
                       f"{'met' if r >= goal else 'NOT met'}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/proxy.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0, help="per rate and throughput test")
    p.add_argument("--concurrent", type=int, default=1000)
    p.add_argument("--out", type=Path, help="directory for results.json")
    p.add_argument("--baseline", type=Path, metavar="SRC",
                   help=f"also run wgpy proxy from this source tree, as {BASELINE}")
    p.add_argument("--only", default=",".join(TESTS), metavar="TESTS",
                   help=f"comma-separated tests to run, of {', '.join(TESTS)} (default: all)")
    p.add_argument("--smoke", action="store_true",
                   help="1 round, 2 s tests, 200 connections: checks that it works")
    a = p.parse_args(argv)
    ok, why = have_root_netns()
    missing = [t for t in ("haproxy", "ab", "iperf3", "nft", "wg", "curl")
               if shutil.which(t) is None]
    if not ok or missing:
        print(f"bench/proxy.py: {why or 'needs ' + ', '.join(missing)}", file=sys.stderr)
        return 1
    tests = tuple(t for t in a.only.split(",") if t)
    if not tests or set(tests) - set(TESTS):
        p.error(f"--only takes {', '.join(TESTS)}")
    if a.baseline is not None and not (a.baseline / "wgpy" / "proxy").is_dir():
        p.error(f"--baseline {a.baseline}: no wgpy/proxy package there")
    s = Settings(1, 2.0, 200, 0.5) if a.smoke else Settings(a.rounds, a.seconds,
                                                             a.concurrent, 2.0)
    s.baseline = a.baseline.resolve() if a.baseline is not None else None
    s.tests = tests
    out = a.out or Path(tempfile.mkdtemp(prefix="proxybench-"))
    out.mkdir(parents=True, exist_ok=True)
    res = Results()
    workdir = Path(tempfile.mkdtemp(prefix="labs-", dir=out))
    lab = Lab(workdir)
    try:
        topo, conf = build_lab(lab)
        proxies = (*PROXIES, BASELINE) if s.baseline is not None else PROXIES
        for r in range(s.rounds):
            k = r % len(proxies)  # each proxy goes first in turn
            order = proxies[k:] + proxies[:k]
            t0 = time.monotonic()
            one_round(topo, conf, order, s, res)
            print(f"round {r + 1}/{s.rounds}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    except (LabError, OSError, subprocess.SubprocessError) as e:
        res.notes.append(f"aborted: {e}")
        print(f"bench/proxy.py: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        res.notes.append("interrupted")
    finally:
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)
    summ = summary(res)
    print(table(summ, s))
    for line in goals(summ) + res.notes:
        print(line)
    (out / "results.json").write_text(json.dumps(
        {"settings": {**s.__dict__, "baseline": str(s.baseline) if s.baseline else None},
         "samples": res.samples, "summary": summ, "notes": res.notes},
        indent=2))
    return 0 if summ.get("wgpy") and summ.get("haproxy") else 1


if __name__ == "__main__":
    sys.exit(main())
