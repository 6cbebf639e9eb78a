"""Probes that ``bench/run.py`` runs inside a lab namespace; each prints one JSON line.

``handshake``: time from ``wg set IF peer KEY endpoint EP`` to the first ICMP
echo reply through the tunnel (the echo is sent every 2 ms until one returns).

``flood``: a responder's handshake rate under a flood.  Valid initiations
(correct mac1, fresh timestamps, from PEERS configured keys) are made before
the clock starts with wgpy's own sans-IO handshake code, then sent as fast as
the kernel takes them for DURATION seconds; handshake responses and cookie
replies that come back are counted.  The flooder ignores cookies, as a
flooder would, so a responder that goes "under load" answers with cookie
replies instead of doing DH work.
"""

from __future__ import annotations

import argparse
import base64
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


def flood(args: argparse.Namespace) -> dict[str, float]:
    from wgpy.protocol import noise
    from wgpy.protocol.cookie import CookieGenerator

    responder = base64.b64decode(args.responder)
    privates = [base64.b64decode(line) for line in open(args.keys).read().split()]
    gen = CookieGenerator(responder)
    msgs: list[bytes] = []
    wall = time.time()
    # Initiations ordered round-robin over the peers, each peer's timestamps rising.
    per_peer = max(1, args.count // len(privates))
    identities = [noise.StaticIdentity.from_private(p) for p in privates]
    shakes = []
    for ident in identities:
        hs = noise.Handshake(responder)
        hs.precompute(ident)
        shakes.append(hs)
    t_gen = time.perf_counter()
    for i in range(per_peer):
        for j, (ident, hs) in enumerate(zip(identities, shakes, strict=True)):
            msg = noise.create_initiation(ident, hs, (i << 16) | j, os.urandom, wall + i * 0.01)
            assert msg is not None
            msgs.append(gen.add_macs(msg.pack(), 0.0))
    gen_s = time.perf_counter() - t_gen
    host, port = args.endpoint.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    counts = {1: 0, 2: 0, 3: 0, 4: 0}
    sent = 0
    # Paced: the prepared initiations spread evenly over the duration.
    interval = args.duration / len(msgs)
    t0 = time.perf_counter()
    end = t0 + args.duration
    i = 0
    while True:
        now = time.perf_counter()
        if now >= end or i >= len(msgs):
            break
        due = min(len(msgs), int((now - t0) / interval) + 1)
        while i < due:
            try:
                sock.send(msgs[i])
                sent += 1
            except BlockingIOError:
                pass
            i += 1
        for _ in range(64):
            try:
                data = sock.recv(256)
            except (BlockingIOError, ConnectionRefusedError):
                time.sleep(0.0002)
                break
            counts[data[0]] = counts.get(data[0], 0) + 1
    elapsed = time.perf_counter() - t0
    # Answers to the last messages may still be on their way.
    settle = time.perf_counter() + 0.3
    while time.perf_counter() < settle:
        try:
            data = sock.recv(256)
            counts[data[0]] = counts.get(data[0], 0) + 1
        except (BlockingIOError, ConnectionRefusedError):
            time.sleep(0.001)
    return {
        "offered_per_s": sent / elapsed,
        "responses_per_s": counts[2] / elapsed,
        "cookie_replies_per_s": counts[3] / elapsed,
        "sent": sent,
        "responses": counts[2],
        "cookie_replies": counts[3],
        "generated": len(msgs),
        "generate_s": gen_s,
        "seconds": elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="probe.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("handshake")
    h.add_argument("ifname")
    h.add_argument("peer")
    h.add_argument("endpoint")
    h.add_argument("target")
    h.add_argument("--timeout", type=float, default=5.0)
    f = sub.add_parser("flood")
    f.add_argument("responder", help="responder's public key (base64)")
    f.add_argument("endpoint", help="HOST:PORT of the responder")
    f.add_argument("keys", help="file of the flood peers' private keys (base64, one a line)")
    f.add_argument("--count", type=int, default=4000, help="initiations to prepare")
    f.add_argument("--duration", type=float, default=2.0)
    args = p.parse_args(argv)
    result = handshake(args) if args.cmd == "handshake" else flood(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
