"""Benchmark the userspace tunnel against wireguard-requests and the kernel path.

    sudo python3 bench/userspace.py                  # 3 rounds (a few minutes)
    sudo python3 bench/userspace.py --rounds 5 --out /tmp/ubench
    sudo python3 bench/userspace.py --impaired       # 100 MiB each way under each impairment
    sudo python3 bench/userspace.py --smoke          # seconds: checks that it works

One wgpyd peer (``wgpy.testing.userlab``: a namespace with an HTTP server
and a sha256 sink behind the tunnel) and three clients in the client
namespace, each with its own key, measured in turn, round by round:

* ``wgpy.userspace``: this project's tunnel in the process, run as an
  unprivileged user (uid 65534) as its users would run it;
* ``wireguard-requests``: boringtun + smoltcp compiled into a Python
  extension (``pip install wgpy[bench]``), in the process, same peer;
* ``kernel TCP``: a wgpyd TUN interface in the client namespace and the
  kernel's TCP: the path a root user gets with ``wgpy up``.

Per round: the download of one 100 MiB file (the median over rounds is the
throughput) and 100 sequential small requests, each on a new connection
(the median request is the latency).  It prints medians and ratios and
writes results.json.  Everything runs inside namespaces it creates
(10.0.0.0/8 addresses only) and is torn down at the end or on an error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wgpy.testing.lab import Lab, have_root_netns
from wgpy.testing.nodes import launch
from wgpy.testing.userlab import (
    HTTP_PORT,
    PEER4,
    PEER_OUTER,
    SINK_PORT,
    SRC,
    WG_PORT,
    UserLab,
    build,
)

ROWS = ("wgpy.userspace", "wireguard-requests", "kernel TCP")
IMPAIRMENTS = {
    "loss 1%": (0.01, 0.0, 0.0),
    "loss 5%": (0.05, 0.0, 0.0),
    "reordering": (0.0, 0.001, 0.004),
    "delay 20 ms, jitter 5 ms": (0.0, 0.020, 0.005),
}
Connect = Callable[[tuple[str, int]], Any]


# -- the client side (run in the client namespace, one process per measurement) --------
def _get(connect: Connect, path: str) -> tuple[int, str]:
    with connect((PEER4, HTTP_PORT)) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {PEER4}\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise OSError("connection closed before the response head")
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.0 200"):
            raise OSError(f"unexpected response: {head[:40]!r}")
        h = hashlib.sha256(body)
        n = len(body)
        while chunk := s.recv(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()


def client(kind: str, config: str, what: str, count: int) -> dict[str, Any]:
    """One measurement with one client implementation; returns what it saw."""
    if kind == "wgpy.userspace":
        from wgpy.userspace import Tunnel

        with Tunnel(config) as tun:
            tun.create_connection((PEER4, HTTP_PORT)).close()  # handshake, not measured
            return _measure(lambda a: tun.create_connection(a), what, count)
    if kind == "wireguard-requests":
        from wireguard_requests import WireGuardConfig, wireguard_context

        with wireguard_context(WireGuardConfig.from_file(config)):
            socket.create_connection((PEER4, HTTP_PORT)).close()
            return _measure(lambda a: socket.create_connection(a), what, count)
    socket.create_connection((PEER4, HTTP_PORT)).close()
    return _measure(lambda a: socket.create_connection(a), what, count)


def _measure(connect: Connect, what: str, count: int) -> dict[str, Any]:
    if what == "download":
        t = time.monotonic()
        n, sha = _get(connect, "/big.bin")
        return {"bytes": n, "sha256": sha, "seconds": time.monotonic() - t}
    times = []
    for _ in range(count):
        t = time.monotonic()
        _get(connect, "/small.txt")
        times.append(time.monotonic() - t)
    return {"times": times}


# -- the driver ----------------------------------------------------------------------------
class Bench:
    def __init__(self, lab: Lab, mib: int) -> None:
        self.lab = lab
        self.ul: UserLab = build(lab, "wgpyd", big_file_mib=mib)
        self.mib = mib
        self.sha = subprocess.run(["sha256sum", str(self.ul.files / "big.bin")],
                                  capture_output=True, text=True, check=True).stdout.split()[0]
        self.configs = {
            "wgpy.userspace": self.ul.config,
            "wireguard-requests": self.ul.another_client("wgreq.conf", 5),
        }
        self._kernel_client()
        self.have_wgreq = subprocess.run(
            [sys.executable, "-c", "import wireguard_requests._native"],
            capture_output=True).returncode == 0

    def _kernel_client(self) -> None:
        """A wgpyd TUN interface in the client namespace, 10.99.0.4."""
        ul = self.ul
        cfg = ul.another_client("kernel.conf", 4)
        ifname = self.lab.wg_name()
        launch(self.lab, ul.client_ns, ifname, "wgpyd")
        stripped = self.lab.run(None, [sys.executable, "-m", "wgpy.tools.cli", "strip",
                                       str(cfg)], env={"PYTHONPATH": str(SRC)}).stdout
        conf = self.lab.workdir / "kernel.stripped"
        conf.write_text(stripped)
        self.lab.run(ul.client_ns, f"wg setconf {ifname} {conf} && "
                     f"ip addr add 10.99.0.4/32 dev {ifname} && ip link set {ifname} up && "
                     f"ip route add {PEER4}/32 dev {ifname}")

    def run_client(self, kind: str, what: str, count: int = 100) -> dict[str, Any]:
        argv = [sys.executable, str(Path(__file__).resolve()), "--client", kind,
                "--config", str(self.configs.get(kind, "")), "--what", what,
                "--count", str(count)]
        if kind == "wgpy.userspace":
            p = self.ul.unprivileged(argv, timeout=900)
        else:
            p = self.lab.run(self.ul.client_ns, argv, timeout=900,
                             env={"PYTHONPATH": str(SRC)})
        result: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
        if what == "download" and (result["bytes"] != self.mib << 20
                                   or result["sha256"] != self.sha):
            raise AssertionError(f"{kind}: download corrupted: {result}")
        return result

    def impaired(self, name: str, params: tuple[float, float, float]) -> dict[str, float]:
        loss, delay, jitter = params
        port = 52100 + list(IMPAIRMENTS).index(name)
        log = f"impair-{port}.log"
        self.lab.popen(self.ul.client_ns, [
            sys.executable, "-m", "wgpy.testing.impair", "--listen", f"127.0.0.1:{port}",
            "--to", f"{PEER_OUTER}:{WG_PORT}", "--loss", str(loss), "--delay", str(delay),
            "--jitter", str(jitter), "--lifetime", "3600"], env={"PYTHONPATH": str(SRC)},
            log=log)
        self.lab.wait_for("relay", lambda: "ready" in self.lab.log(log))
        cfg = self.ul.write_config(f"impaired-{port}.conf", f"127.0.0.1:{port}")
        down = self.ul.python("wgpy.testing.userclient", "download", str(cfg), "--port",
                              str(HTTP_PORT), "--path", "/big.bin", timeout=3600)
        up = self.ul.python("wgpy.testing.userclient", "upload", str(cfg), "--port",
                            str(SINK_PORT), "--bytes", str(self.mib << 20), timeout=3600)
        d = json.loads(down.stdout.strip().splitlines()[-1])
        u = json.loads(up.stdout.strip().splitlines()[-1])
        assert d["sha256"] == self.sha and u["sink_sha256"] == u["sent_sha256"]
        return {"down_s": d["seconds"], "up_s": u["seconds"]}


def summarize(samples: dict[str, dict[str, list[float]]], mib: int) -> list[str]:
    lines = [f"| client | {mib} MiB download, MiB/s (median) | small request, ms (median) |",
             "|---|---|---|"]
    med: dict[str, tuple[float, float]] = {}
    for row in ROWS:
        s = samples.get(row)
        if not s:
            lines.append(f"| {row} | not measured | not measured |")
            continue
        mbps = statistics.median(mib / t for t in s["download_s"])
        lat = statistics.median(s["request_s"]) * 1000
        med[row] = (mbps, lat)
        lines.append(f"| {row} | {mbps:.1f} | {lat:.2f} |")
    ours = med.get("wgpy.userspace")
    if ours:
        for other in ("wireguard-requests", "kernel TCP"):
            if other in med:
                lines.append(f"\nwgpy.userspace / {other}: throughput "
                             f"x{ours[0] / med[other][0]:.2f}, request latency "
                             f"x{ours[1] / med[other][1]:.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path)
    p.add_argument("--mib", type=int, default=100)
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--impaired", action="store_true",
                   help="instead: wgpy.userspace, MIB each way under each impairment")
    p.add_argument("--smoke", action="store_true", help="1 round, 8 MiB, 10 requests")
    p.add_argument("--client", choices=ROWS, help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--what", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=100, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client:
        print(json.dumps(client(args.client, args.config, args.what, args.count)))
        return 0
    ok, why = have_root_netns()
    if not ok:
        sys.stderr.write(f"bench/userspace.py: {why}\n")
        return 1
    if args.smoke:
        args.rounds, args.mib, args.requests = 1, 8, 10
    out = args.out or Path(tempfile.mkdtemp(prefix="wgpy-ubench-"))
    out.mkdir(parents=True, exist_ok=True)
    lab = Lab(Path(tempfile.mkdtemp(prefix="labs-", dir=out)))
    notes: list[str] = []
    samples: dict[str, dict[str, list[float]]] = {}
    try:
        bench = Bench(lab, args.mib)
        if args.impaired:
            results = {name: bench.impaired(name, params) for name, params in IMPAIRMENTS.items()}
            print(f"| impairment | {args.mib} MiB download, s | {args.mib} MiB upload, s |")
            print("|---|---|---|")
            for name, r in results.items():
                print(f"| {name} | {r['down_s']:.1f} | {r['up_s']:.1f} |")
            (out / "results.json").write_text(json.dumps({"impaired": results}, indent=1))
            return 0
        rows = [r for r in ROWS if r != "wireguard-requests" or bench.have_wgreq]
        if not bench.have_wgreq:
            notes.append("wireguard-requests is not installed (pip install wgpy[bench])")
        for rnd in range(args.rounds):
            order = rows[rnd % len(rows):] + rows[: rnd % len(rows)]
            for row in order:
                try:
                    d = bench.run_client(row, "download")
                    lat = bench.run_client(row, "latency", args.requests)
                except (AssertionError, subprocess.SubprocessError, OSError) as e:
                    notes.append(f"round {rnd}: {row}: {e}")
                    continue
                s = samples.setdefault(row, {"download_s": [], "request_s": []})
                s["download_s"].append(d["seconds"])
                s["request_s"].extend(lat["times"])
                print(f"round {rnd + 1} {row}: {args.mib / d['seconds']:.1f} MiB/s, "
                      f"request {statistics.median(lat['times']) * 1000:.2f} ms", flush=True)
    finally:
        lab.close()
        for leftover in out.glob("labs-*"):
            subprocess.run(["rm", "-rf", str(leftover)], check=False)
    table = summarize(samples, args.mib)
    print("\n".join(table))
    for n in notes:
        print(f"note: {n}")
    (out / "results.json").write_text(json.dumps(
        {"mib": args.mib, "samples": samples, "notes": notes, "table": table,
         "cpus": os.cpu_count()}, indent=1))
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
