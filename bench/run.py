"""Benchmark wgpyd against wireguard-go in two namespaces over a veth.

    sudo python3 bench/run.py                 # 3 rounds (minutes)
    sudo python3 bench/run.py --rounds 5 --out /tmp/wgbench
    sudo python3 bench/run.py --smoke         # a few seconds: checks that it works

Each round brings up every pair (wireguard-go<->wireguard-go, wgpyd<->wgpyd,
wgpyd<->wireguard-go; the first named is the sender, in namespace A) on a
fresh pair of namespaces and daemons, all at once.  Latency (handshake
probes, pings) is measured alternating between the pairs in short slices,
throughput one pair at a time in a rotated order, so that the drifting load
of a shared machine falls on all of them alike.  Then it loads 10,000
peers into each implementation, and floods each as a responder with
handshake initiations.  Per round, ping RTT is the median of 200 echoes
(10 ms apart) and the handshake probe runs 16 times.  It prints medians with
min-max and the ratio to wireguard-go<->wireguard-go, and writes results.json (every sample) and
results.png (if matplotlib is installed: ``pip install wgpy[bench]``).

Everything runs inside namespaces it creates (10.0.0.0/8 addresses only) and
is torn down at the end, on an error, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import functools
import importlib.util
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
from wgpy.testing.lab import Lab, LabError, have_root_netns  # noqa: E402
from wgpy.testing.nodes import WgNode, connect, start, two_hosts  # noqa: E402

GO = "wireguard-go"
PY = "wgpyd"
PAIRS: list[tuple[str, str]] = [(GO, GO), (PY, PY), (PY, GO)]
REFERENCE = (GO, GO)
TUN_A, TUN_B = "10.78.0.1", "10.78.0.2"
PING_SLICE = 20  # echoes per pair before the next pair's turn
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    scale: float = 1.0  # display = value / scale


METRICS = [
    Metric("tcp1", "iperf3 TCP, 1 stream", "Gbit/s", True, 1e9),
    Metric("tcp4", "iperf3 TCP, 4 streams", "Gbit/s", True, 1e9),
    Metric("tcp1_rev", "iperf3 TCP, 1 stream, B->A", "Gbit/s", True, 1e9),
    Metric("udp64_pps", "UDP 64-byte packets/s", "kpps", True, 1e3),
    Metric("udp1420_pps", "UDP 1420-byte packets/s", "kpps", True, 1e3),
    Metric("ping_ms", "ping RTT", "ms", False),
    Metric("ping_cpu_ms", "CPU per ping (both daemons)", "ms", False),
    Metric("handshake_ms", "wg set endpoint -> first reply", "ms", False),
    Metric("cpu_s_per_gb", "CPU s per GB (both daemons, TCP 1)", "s/GB", False),
    Metric("rss_mb", "resident memory (sender, after traffic)", "MB", False),
    Metric("peers_rss_mb", "memory for {peers} peers", "MB", False),
    Metric("peers_load_s", "wg setconf {peers} peers", "s", False),
    Metric("flood_hs_per_s", "handshake responses/s under flood", "1/s", True),
    Metric("flood_cookies_per_s", "cookie replies/s under flood", "1/s", True),
    Metric("flood_ping_ms", "ping RTT during the flood", "ms", False),
]


@dataclass
class Settings:
    rounds: int
    seconds: float  # per TCP test
    udp_seconds: float
    pings: int
    handshakes: int
    peers: int
    flood_seconds: float
    full: bool  # tcp4, tcp1_rev, udp64 too


@dataclass
class Results:
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, row: str, key: str, value: float | None) -> None:
        if value is None:
            return
        self.samples.setdefault(row, {}).setdefault(key, []).append(value)


def pair_name(pair: tuple[str, str]) -> str:
    short = {GO: "wg-go", PY: "wgpyd"}
    return f"{short[pair[0]]}<->{short[pair[1]]}"


def dir_name(pair: tuple[str, str]) -> str:
    return pair_name(pair).replace("<->", "-")


# -- process accounting ---------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def daemon_pid(lab: Lab) -> int:
    # `ip netns exec` execs in place, so the Popen's pid is the daemon's.
    return lab.procs[-1].pid


# -- one pair ---------------------------------------------------------------
@dataclass
class Pair:
    lab: Lab
    a: WgNode
    b: WgNode
    pid_a: int
    pid_b: int
    endpoint_b: str


def build_pair(lab: Lab, pair: tuple[str, str]) -> Pair:
    ns_a, ns_b = two_hosts(lab)
    quiet = {"LOG_LEVEL": "error"}
    a = start(lab, ns_a, pair[0], f"{TUN_A}/24", port=51820, extra_env=quiet)
    pid_a = daemon_pid(lab)
    b = start(lab, ns_b, pair[1], f"{TUN_B}/24", port=51821, extra_env=quiet)
    pid_b = daemon_pid(lab)
    # No endpoints yet: the handshake probe sets A's, B learns A's from it.
    connect(a, b, f"{TUN_A}/32", f"{TUN_B}/32", None, None)
    lab.popen(ns_b, "iperf3 -s -p 5201", log="iperf3-server.log")
    return Pair(lab, a, b, pid_a, pid_b, "10.77.0.2:51821")


def probe(lab: Lab, ns: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    p = lab.run(ns, [sys.executable, str(HERE / "probe.py"), *args], timeout=timeout)
    result: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return result


def handshake_probe(p: Pair, first: bool) -> float | None:
    if not first:
        # Forget the session on A (B keeps its own: a new initiation replaces it).
        p.a.wg(f"set {p.a.ifname} peer {p.b.public} remove")
        p.a.wg(f"set {p.a.ifname} peer {p.b.public} allowed-ips {TUN_B}/32")
    r = probe(p.lab, p.a.ns, "handshake", p.a.ifname, p.b.public, p.endpoint_b, TUN_B)
    return float(r["ms"]) if r["ms"] > 0 else None


def ping_rtts(lab: Lab, ns: str, count: int, interval: float = 0.01) -> list[float]:
    """The RTTs of the echo replies, in ms."""
    p = lab.run(ns, f"ping -c {count} -i {interval} -W 1 {TUN_B}", check=False, timeout=60)
    return [float(line.split("time=")[1].split()[0])
            for line in p.stdout.splitlines() if "time=" in line]


def iperf(lab: Lab, ns: str, args: str, seconds: float) -> dict[str, Any]:
    p = lab.run(
        ns,
        f"iperf3 -c {TUN_B} -p 5201 -J -t {seconds:g} {args}",
        check=False,
        timeout=seconds + 30,
    )
    try:
        result: dict[str, Any] = json.loads(p.stdout)
    except json.JSONDecodeError:
        return {"error": p.stdout[-300:] + p.stderr[-300:]}
    return result


def tcp_run(p: Pair, res: Results, row: str, key: str, args: str, s: Settings) -> None:
    cpu0 = cpu_seconds(p.pid_a) + cpu_seconds(p.pid_b)
    r = iperf(p.lab, p.a.ns, args, s.seconds)
    cpu1 = cpu_seconds(p.pid_a) + cpu_seconds(p.pid_b)
    if "error" in r:
        res.notes.append(f"{row} {key}: iperf3 failed: {r['error']}")
        return
    received = r["end"]["sum_received"]
    res.add(row, key, float(received["bits_per_second"]))
    if key == "tcp1" and received["bytes"] > 0:
        res.add(row, "cpu_s_per_gb", (cpu1 - cpu0) / (received["bytes"] / 1e9))


def udp_run(p: Pair, res: Results, row: str, key: str, ip_size: int, s: Settings) -> None:
    r = iperf(p.lab, p.a.ns, f"-u -b 0 -l {ip_size - 28}", s.udp_seconds)
    if "error" in r:
        res.notes.append(f"{row} {key}: iperf3 failed: {r['error']}")
        return
    total = r["end"]["sum"]
    received = total["packets"] - total["lost_packets"]
    res.add(row, key, received / max(total["seconds"], 1e-9))


def measure_latency(pairs: dict[str, Pair], res: Results, s: Settings) -> None:
    """Handshake probes and pings, alternating between the pairs in short slices.

    The machine's load drifts within minutes (docs/performance.md has a run
    where wireguard-go's ping median rose by two thirds between rounds):
    measured one pair after the other, that drift became the ratio.
    Interleaved, it falls on all pairs alike.  Ping RTT is the median of the
    echoes (ping's own average lets one stall of the shared vCPUs move it),
    with the daemons' CPU time over the same echoes: a lower RTT bought with
    busy polling shows its price."""
    for i in range(s.handshakes):
        for row, p in pairs.items():
            res.add(row, "handshake_ms", handshake_probe(p, first=i == 0))
    rtts: dict[str, list[float]] = {row: [] for row in pairs}
    cpu: dict[str, float] = {row: 0.0 for row in pairs}
    slices = max(1, s.pings // PING_SLICE)
    for _ in range(slices):
        for row, p in pairs.items():
            cpu0 = cpu_seconds(p.pid_a) + cpu_seconds(p.pid_b)
            rtts[row] += ping_rtts(p.lab, p.a.ns, s.pings // slices)
            cpu[row] += cpu_seconds(p.pid_a) + cpu_seconds(p.pid_b) - cpu0
    for row in pairs:
        if rtts[row]:
            res.add(row, "ping_ms", statistics.median(rtts[row]))
            res.add(row, "ping_cpu_ms", cpu[row] / len(rtts[row]) * 1e3)
        else:
            res.notes.append(f"{row}: no echo reply through the tunnel")


def measure_throughput(p: Pair, res: Results, row: str, s: Settings, flood: bool) -> None:
    tcp_run(p, res, row, "tcp1", "", s)
    if s.full:
        tcp_run(p, res, row, "tcp4", "-P 4", s)
        tcp_run(p, res, row, "tcp1_rev", "-R", s)
        udp_run(p, res, row, "udp64_pps", 64, s)
    udp_run(p, res, row, "udp1420_pps", 1420, s)
    res.add(row, "rss_mb", rss_mb(p.pid_a))
    if flood:
        run_flood(p, res, row, s)


def run_round(work: Path, rnd: int, order: list[tuple[str, str]], res: Results, s: Settings,
              flood: bool) -> None:
    """Every pair up at once (idle daemons cost nothing), latency interleaved,
    then each pair's throughput alone."""
    labs: list[Lab] = []
    pairs: dict[str, Pair] = {}
    try:
        for pair in order:
            row = pair_name(pair)
            d = work / f"r{rnd}-{dir_name(pair)}"
            d.mkdir(parents=True, exist_ok=True)
            lab = Lab(d)
            labs.append(lab)
            try:
                pairs[row] = build_pair(lab, pair)
            except (LabError, subprocess.TimeoutExpired, OSError) as e:
                res.notes.append(f"r{rnd} {row}: {type(e).__name__}: {str(e)[:400]}")
        print(f"round {rnd + 1}/{s.rounds}: latency, interleaved", file=sys.stderr)
        _guarded(res, f"r{rnd} latency", lambda: measure_latency(pairs, res, s))
        for pair in order:
            row = pair_name(pair)
            if row in pairs:
                print(f"round {rnd + 1}/{s.rounds}: throughput {row}", file=sys.stderr)
                _guarded(res, f"r{rnd} {row}", functools.partial(
                    measure_throughput, pairs[row], res, row, s, flood and pair[0] == pair[1]))
    finally:
        for lab in labs:
            lab.close()


def _guarded(res: Results, name: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except (LabError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as e:
        res.notes.append(f"{name}: {type(e).__name__}: {str(e)[:400]}")


# -- handshake flood ----------------------------------------------------------
def run_flood(p: Pair, res: Results, row: str, s: Settings) -> None:
    lab = p.lab
    nkeys = 64
    privs = [base64.b64encode(os.urandom(32)).decode() for _ in range(nkeys)]
    keyfile = lab.workdir / "flood.keys"
    keyfile.write_text("\n".join(privs) + "\n")
    pubs = subprocess.run(
        ["bash", "-c", f"while read k; do echo $k | wg pubkey; done < {keyfile}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    conf = lab.workdir / "flood.conf"
    conf.write_text("".join(f"[Peer]\nPublicKey = {k}\n" for k in pubs))
    lab.run(p.b.ns, f"wg addconf {p.b.ifname} {conf}")
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", p.a.ns, "ping", "-q", "-i", "0.01",
         "-w", str(math.ceil(s.flood_seconds) + 2), TUN_B],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        flood = lab.run(p.a.ns, [
            sys.executable, "-m", "wgpy.testing.flood", "--target", p.endpoint_b,
            "--pub", p.b.public, "--valid", str(keyfile), "--rate", "2000",
            "--duration", str(s.flood_seconds)], timeout=120)
        r = json.loads(flood.stdout.strip().splitlines()[-1])
    finally:
        pinger.send_signal(signal.SIGINT)
        out, _ = pinger.communicate(timeout=10)
    res.add(row, "flood_hs_per_s", float(r["responses_per_s"]))
    res.add(row, "flood_cookies_per_s", float(r["cookie_replies_per_s"]))
    rtts = [ln for ln in out.splitlines() if "min/avg/max" in ln]
    if rtts:
        res.add(row, "flood_ping_ms", float(rtts[0].split("=")[1].split("/")[1]))
    else:
        res.notes.append(f"{row}: no ping reply during the flood: {out.strip()[-200:]!r}")


# -- 10,000 peers -------------------------------------------------------------
def run_peers(lab: Lab, impl: str, res: Results, s: Settings) -> None:
    row = pair_name((impl, impl))
    ns = lab.netns("peers")
    node = start(lab, ns, impl, "10.79.0.1/16", extra_env={"LOG_LEVEL": "error"})
    pid = daemon_pid(lab)
    time.sleep(0.2)
    before = rss_mb(pid)
    lines = [f"[Interface]\nPrivateKey = {node.private}\n"]
    for i in range(s.peers):
        key = base64.b64encode(os.urandom(32)).decode()
        ip = f"10.{80 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"
        lines.append(f"[Peer]\nPublicKey = {key}\nAllowedIPs = {ip}/32\n")
    conf = lab.workdir / "peers.conf"
    conf.write_text("".join(lines))
    t0 = time.perf_counter()
    lab.run(ns, f"wg setconf {node.ifname} {conf}", timeout=300)
    elapsed = time.perf_counter() - t0
    count = len(node.wg(f"show {node.ifname} peers").stdout.split())
    if count != s.peers:
        res.notes.append(f"{row}: {count} of {s.peers} peers loaded")
    res.add(row, "peers_load_s", elapsed)
    res.add(row, "peers_rss_mb", rss_mb(pid) - before)


# -- report -------------------------------------------------------------------
def summarize(res: Results) -> dict[str, dict[str, dict[str, float]]]:
    ref = pair_name(REFERENCE)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row, metrics in res.samples.items():
        for key, values in metrics.items():
            med = statistics.median(values)
            entry = {"median": med, "min": min(values), "max": max(values), "n": len(values)}
            refvals = res.samples.get(ref, {}).get(key)
            if refvals:
                refmed = statistics.median(refvals)
                if refmed:
                    entry["ratio"] = med / refmed
            out.setdefault(row, {})[key] = entry
    return out


def fmt(v: float) -> str:
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def table(summary: dict[str, dict[str, dict[str, float]]], peers: int) -> str:
    rows = [pair_name(p) for p in PAIRS]
    head = ["metric", "unit"] + rows
    body = []
    for m in METRICS:
        cells = [m.label.format(peers=f"{peers:,}"), m.unit]
        present = False
        for row in rows:
            e = summary.get(row, {}).get(m.key)
            if e is None:
                cells.append("-")
                continue
            present = True
            text = f"{fmt(e['median'] / m.scale)} ({fmt(e['min'] / m.scale)}-"
            text += f"{fmt(e['max'] / m.scale)})"
            if "ratio" in e and row != pair_name(REFERENCE):
                text += f" x{e['ratio']:.2f}"
            cells.append(text)
        if present:
            body.append(cells)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in body:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)


def chart(summary: dict[str, dict[str, dict[str, float]]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [pair_name(p) for p in PAIRS if pair_name(p) != pair_name(REFERENCE)]
    metrics = [m for m in METRICS if any("ratio" in summary.get(r, {}).get(m.key, {})
                                         for r in rows)]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(metrics) * len(rows) + 1.5))
    height = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        ys = [j + i * height for j in range(len(metrics))]
        vals = [summary.get(row, {}).get(m.key, {}).get("ratio", 0.0) for m in metrics]
        bars = ax.barh(ys, vals, height=height, label=row)
        for bar, v in zip(bars, vals, strict=True):
            if v:
                ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:.2f}",
                        va="center", fontsize=7)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(metrics))])
    ax.set_yticklabels(
        [f"{m.label} ({'higher' if m.higher_is_better else 'lower'} is better)".format(
            peers="N") for m in metrics],
        fontsize=8,
    )
    ax.invert_yaxis()
    ax.set_xlabel("median / median of wireguard-go<->wireguard-go (same run)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- main ---------------------------------------------------------------------
def settings(args: argparse.Namespace) -> Settings:
    if args.smoke:
        return Settings(rounds=1, seconds=1, udp_seconds=1, pings=10, handshakes=1,
                        peers=100, flood_seconds=0.5, full=False)
    return Settings(rounds=args.rounds, seconds=args.seconds, udp_seconds=3, pings=200,
                    handshakes=16, peers=args.peers, flood_seconds=2, full=True)


def check_tools() -> str | None:
    ok, why = have_root_netns()
    if not ok:
        return why
    for tool in ("wireguard-go", "wg", "iperf3", "ping"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    # Without it every wgpyd pair fails on its own and the table comes out empty.
    if shutil.which("wgpyd") is None and importlib.util.find_spec("wgpy") is None:
        return "needs wgpyd: run ./scripts/setup.sh (or pip install -e .) first"
    return None


def with_lab(workdir: Path, name: str, fn: Callable[[Lab], None], res: Results) -> None:
    d = workdir / name
    d.mkdir(parents=True, exist_ok=True)
    lab = Lab(d)
    try:
        fn(lab)
    except (LabError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as e:
        res.notes.append(f"{name}: {type(e).__name__}: {str(e)[:400]}")
    finally:
        lab.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__.split("\n\n")[0],
        epilog="Run as root. Every pair is measured in every round on fresh namespaces "
        "and daemons, latency interleaved between the pairs, throughput in a rotated "
        "order; the table gives medians, min-max and the "
        "ratio to wireguard-go<->wireguard-go. Results: results.json and (with the "
        "bench extra's matplotlib) results.png in --out. A benchmark, not a test: "
        "the machine's load moves absolute numbers, so compare ratios within a run.",
    )
    ap.add_argument("--smoke", action="store_true", help="one short round: checks it works")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every pair (default 3)")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each TCP test")
    ap.add_argument("--peers", type=int, default=10000,
                    help="peers loaded with wg setconf for the memory/load test (default 10000)")
    ap.add_argument("--out", type=Path, default=None, help="directory for results (default: tmp)")
    ap.add_argument("--pairs", default="wg-go-wg-go,wgpyd-wgpyd,wgpyd-wg-go",
                    help="comma-separated pairs to run (table names, with - for <->)")
    ap.add_argument("--no-peers", action="store_true", help="skip the 10,000-peer and flood tests")
    args = ap.parse_args(argv)
    why = check_tools()
    if why:
        print(f"bench: cannot run: {why}", file=sys.stderr)
        return 2
    s = settings(args)
    chosen = [p for p in PAIRS if dir_name(p) in args.pairs.split(",")]
    out = args.out or Path(tempfile.mkdtemp(prefix="wgpy-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="labs-", dir=out))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    res = Results()
    started = time.time()
    try:
        for rnd in range(s.rounds):
            order = chosen[rnd % len(chosen):] + chosen[: rnd % len(chosen)]
            print(f"round {rnd + 1}/{s.rounds}: {', '.join(map(pair_name, order))}",
                  file=sys.stderr)
            run_round(work, rnd, order, res, s, flood=not args.no_peers)
            for impl in () if args.no_peers else (GO, PY) if rnd % 2 == 0 else (PY, GO):
                print(f"round {rnd + 1}/{s.rounds}: {s.peers} peers on {impl}", file=sys.stderr)
                with_lab(work, f"r{rnd}-peers-{impl}",
                         functools.partial(run_peers, impl=impl, res=res, s=s), res)
    except KeyboardInterrupt:
        print("bench: interrupted; namespaces torn down", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarize(res)
    text = table(summary, s.peers)
    print(text)
    for note in res.notes:
        print(f"note: {note}")
    doc = {
        "settings": vars(s),
        "started": started,
        "seconds": time.time() - started,
        "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
        "samples": res.samples,
        "summary": summary,
        "notes": res.notes,
        "table": text,
    }
    (out / "results.json").write_text(json.dumps(doc, indent=2))
    png = out / "results.png"
    print(f"wrote {out / 'results.json'}" + (f" and {png}" if chart(summary, png) else
                                             " (no chart: pip install matplotlib)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
