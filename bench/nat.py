"""NAT traversal figures in the NAT lab (docs/nat-lab.md), measured in one run.

    sudo python3 bench/nat.py                  # 3 rounds (a few minutes)
    sudo python3 bench/nat.py --rounds 5 --out /tmp/natbench
    sudo python3 bench/nat.py --smoke          # one short round: checks that it works

Each round builds two labs of ``wgpy.testing.natlab`` (a registry on the
public side, two NAT routers that behave like home routers, a peer behind
each, the device ``wgpyd`` unless ``WGPY_TEST_DEVICE=wireguard-go``) and
measures:

* **time to a direct path**: both NATs port-preserving (cone); from starting
  ``wgpy discover`` on both peers (``--interval 2``, defaults otherwise) to
  the first answered ping between the peers through the tunnel (pings 1 s
  apart at most, so the figure is late by up to that much);
* **secondary convergence**: a BIND 9 secondary (``named``) of the zone
  (registry with ``--secondary`` and ``--serial-interval 1``); from changing
  peer A's listen port to BIND answering the new SRV (polled with ``dig``
  every 0.1 s), three times per round;
* **throughput direct**: iperf3 TCP from peer A to peer B through the tunnel;
* **time to the relay**: both NATs ``MASQUERADE --random-fully`` (symmetric);
  from starting discover to the first answered ping (the direct tries fail
  first, after ``--try-timeout``, 6 s by default);
* **throughput relayed**: iperf3 as above, through the relay; meanwhile the
  registry process's CPU time (utime + stime of every thread, from /proc) is
  read before and after, giving the relay's CPU per Gbit/s (the registry's
  DNS work in that time is negligible beside it);
* **throughput through a hub peer**: the same two peers with the registry as
  a plain WireGuard hub instead (each peer's registry entry also routes the
  other's tunnel address; the registry's device decrypts and re-encrypts).

It prints medians with min-max and writes ``results.json`` (every sample).
Everything runs inside namespaces it creates (10.0.0.0/8 and 192.168.0.0/16
addresses only) and is torn down at the end, on an error, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from subprocess import Popen

from wgpy.testing.lab import Lab, require
from wgpy.testing.natlab import (
    DEVICE,
    REG_PUBLIC,
    REG_TUNNEL,
    SECONDARY,
    ZONE,
    Host,
    NatLab,
    wait_ping,
)

RELAY_PORTS = "40000-40009"
ROWS = ("time to a direct path (s)", "secondary convergence (s)", "time to the relay (s)",
        "throughput direct (Mbit/s)", "throughput relayed (Mbit/s)",
        "throughput via a hub peer (Mbit/s)", "relay CPU per Gbit/s (%)")


@contextmanager
def nat_lab(root: Path, random_fully: bool,
            *registry_args: str) -> Iterator[tuple[NatLab, Host, Host]]:
    work = Path(tempfile.mkdtemp(prefix="labs-", dir=root))
    lab = Lab(work)
    try:
        nl = NatLab(lab)
        nl.build_internet()
        nl.build_registry()
        a, b = nl.two_peers(random_a=random_fully, random_b=random_fully)
        nl.start_registry("--relay", REG_PUBLIC, "--relay-ports", RELAY_PORTS, *registry_args)
        nl.wait_registry_sees(a, b)
        yield nl, a, b
    finally:
        lab.close()
        shutil.rmtree(work, ignore_errors=True)


def time_to_ping(nl: NatLab, a: Host, b: Host,
                 timeout: float) -> tuple[float, list[Popen[bytes]]]:
    """Start discover on both peers; the seconds until a ping answers, and the two."""
    start = time.monotonic()
    procs = [nl.start_discover(p) for p in (a, b)]
    wait_ping(nl, a, b.tunnel, timeout=timeout)
    return time.monotonic() - start, procs


def iperf(nl: NatLab, a: Host, b: Host, seconds: int) -> float:
    """Mbit/s of one iperf3 TCP run from a to b through the tunnel."""
    nl.lab.popen(b.ns, f"iperf3 -s -1 -B {b.tunnel}", log=f"iperf3-s-{b.ifname}.log")
    nl.lab.wait_for("iperf3 to listen", lambda: "5201" in nl.run(b.ns, "ss -Htln"), 10, 0.1)
    out = nl.run(a.ns, f"iperf3 -c {b.tunnel} -t {seconds} -J")
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e6


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def b32(public_b64: str) -> str:
    return base64.b32encode(base64.b64decode(public_b64)).decode()


def direct_round(root: Path, seconds: int, changes: int, out: dict[str, list[float]]) -> None:
    with nat_lab(root, False, "--secondary", SECONDARY, "--serial-interval", "1") as (nl, a, b):
        took, _ = time_to_ping(nl, a, b, timeout=60)
        assert nl.endpoints(a)[b.public].startswith(nl.nat_public["B"] + ":"), "not direct"
        out[ROWS[0]].append(took)
        sec = nl.build_secondary()
        query = f"{b32(a.public)}._wireguard._udp.{ZONE} SRV"

        def bind_has(port: int) -> Callable[[], bool]:
            return lambda: f" {port} " in nl.dig(sec, SECONDARY, query, check=False)

        nl.lab.wait_for("BIND to load the zone", bind_has(51820), 30, 0.2)
        for i in range(changes):
            port = 52000 + i
            start = time.monotonic()
            nl.run(a.ns, f"wg set {a.ifname} listen-port {port}")
            nl.lab.wait_for("BIND to answer the new port", bind_has(port), 30, 0.1)
            out[ROWS[1]].append(time.monotonic() - start)
        wait_ping(nl, a, b.tunnel, timeout=30)  # discover followed the change
        out[ROWS[3]].append(iperf(nl, a, b, seconds))


def relay_round(root: Path, seconds: int, out: dict[str, list[float]]) -> None:
    with nat_lab(root, True) as (nl, a, b):
        took, discovers = time_to_ping(nl, a, b, timeout=90)
        out[ROWS[2]].append(took)
        assert nl.endpoints(a)[b.public].startswith(f"{REG_PUBLIC}:"), "not relayed"
        proc = nl.registry_proc
        assert proc is not None
        before = cpu_seconds(proc.pid)
        mbit = iperf(nl, a, b, seconds)
        cpu = cpu_seconds(proc.pid) - before
        out[ROWS[4]].append(mbit)
        # CPU share of one core at 1 Gbit/s: (cpu / seconds) / (Gbit/s).
        out[ROWS[6]].append(100 * cpu / seconds / (mbit / 1000))

        # The registry as a plain hub peer: discover stops, the peers forget each
        # other, and each routes the other's tunnel address to the registry.
        assert nl.reg is not None
        for d in discovers:
            d.send_signal(signal.SIGINT)
            d.wait(timeout=10)
        nl.run(nl.reg.ns, "sysctl -qw net.ipv4.ip_forward=1")
        for x, y in ((a, b), (b, a)):
            nl.run(x.ns, f"wg set {x.ifname} peer {y.public} remove")
            nl.run(x.ns, f"wg set {x.ifname} peer {nl.reg.public} "
                         f"allowed-ips {REG_TUNNEL}/32,{y.tunnel}/32")
        wait_ping(nl, a, b.tunnel, timeout=20)
        out[ROWS[5]].append(iperf(nl, a, b, seconds))


def summary(rows: dict[str, list[float]]) -> str:
    lines = ["| figure | median | min-max | n |", "|---|---|---|---|"]
    for name in ROWS:
        xs = rows[name]
        if xs:
            lines.append(f"| {name} | {statistics.median(xs):.1f} | "
                         f"{min(xs):.1f}-{max(xs):.1f} | {len(xs)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--seconds", type=int, default=10, help="iperf3 seconds (default 10)")
    ap.add_argument("--out", type=Path, default=None, help="write results.json here")
    ap.add_argument("--smoke", action="store_true", help="one short round, to check it works")
    args = ap.parse_args(argv)
    require("ip", "wg", "iperf3", "iptables", "conntrack", "dig", "named")
    if os.geteuid() != 0:
        print("bench/nat.py needs root (network namespaces)", file=sys.stderr)
        return 1
    rounds, seconds, changes = (1, 1, 1) if args.smoke else (args.rounds, args.seconds, 3)
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="natbench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[float]] = {name: [] for name in ROWS}
    for r in range(rounds):
        print(f"round {r + 1}/{rounds}", flush=True)
        direct_round(out_dir, seconds, changes, rows)
        relay_round(out_dir, seconds, rows)
    doc = {"device": DEVICE, "rounds": rounds, "iperf_seconds": seconds,
           "cpus": os.cpu_count(), "samples": rows}
    (out_dir / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"device {DEVICE}, {rounds} round(s), iperf3 {seconds} s, {os.cpu_count()} CPUs")
    print(summary(rows))
    print(f"samples in {out_dir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
