"""The probe that ``bench/run.py`` runs inside a lab namespace; it prints one JSON line.

``handshake``: time from ``wg set IF peer KEY endpoint EP`` to the first ICMP
echo reply through the tunnel (the echo is sent every 2 ms until one returns).

(The flood is ``wgpy.testing.flood --valid``, shared with the hardening tests.)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import time

_ICMP = struct.Struct("!BBHHH")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    return ~s & 0xFFFF


def _echo(ident: int, seq: int) -> bytes:
    payload = b"wgpy-bench-probe"
    head = _ICMP.pack(8, 0, 0, ident, seq)
    csum = _checksum(head + payload)
    return _ICMP.pack(8, 0, csum, ident, seq) + payload


def handshake(args: argparse.Namespace) -> dict[str, float]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    ident = os.getpid() & 0xFFFF
    t0 = time.perf_counter()
    subprocess.run(
        ["wg", "set", args.ifname, "peer", args.peer, "endpoint", args.endpoint], check=True
    )
    t_set = time.perf_counter()
    deadline = t0 + args.timeout
    seq = 0
    next_send = 0.0
    while True:
        now = time.perf_counter()
        if now > deadline:
            return {"ms": -1.0, "wg_set_ms": (t_set - t0) * 1e3}
        if now >= next_send:
            seq += 1
            sock.sendto(_echo(ident, seq), (args.target, 0))
            next_send = now + 0.002
        try:
            data = sock.recv(2048)
        except BlockingIOError:
            time.sleep(0.0002)
            continue
        ihl = (data[0] & 0x0F) * 4
        icmp_type, _, _, rid, _ = _ICMP.unpack_from(data, ihl)
        if icmp_type == 0 and rid == ident:
            done = time.perf_counter()
            return {"ms": (done - t0) * 1e3, "wg_set_ms": (t_set - t0) * 1e3}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="probe.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("handshake")
    h.add_argument("ifname")
    h.add_argument("peer")
    h.add_argument("endpoint")
    h.add_argument("target")
    h.add_argument("--timeout", type=float, default=5.0)
    args = p.parse_args(argv)
    result = handshake(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
