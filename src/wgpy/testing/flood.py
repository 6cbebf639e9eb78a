"""The handshake flooder of the hardening tests and the benchmark, run in the
attacker's namespace of a lab:

    python3 -m wgpy.testing.flood --target 10.80.0.1:51820 --pub HEX --rate 4000 \\
        --duration 10 --spoof 10.88.0.0/20 --holder 10.88.200.1 --holder fd00:80::a1
    python3 -m wgpy.testing.flood --target 10.77.0.2:51821 --pub HEX --rate 2000 \\
        --duration 2 --valid KEYFILE

Initiations are paced in 1 ms slots at ``--rate`` and bounded in time and
rate.  Three kinds:

- spoofed junk (the default): a valid mac1 (it needs only the responder's
  public key) and a random body, each from another address of ``--spoof``
  (sent with IP_PKTINFO; the namespace routes the range locally, so cookie
  replies come back to it) and one of 32 source ports;
- valid initiations (``--valid KEYFILE``: private keys, base64, one a line,
  of peers the responder knows), made with wgpy's own handshake code before
  the clock starts, from one socket; the responses and cookie replies that
  come back are counted.  The flooder ignores cookies, as a flooder would,
  so a responder under load answers with cookie replies instead of DH work;
- cookie holders: one socket per ``--holder`` address (which must be local)
  that first earns a cookie by sending one initiation and opening the cookie
  reply, then sends initiations with a valid mac2 at ``--holder-rate``:
  these pass the cookie check and meet the per-source rate limiter.

Prints one JSON object with what was sent and received.  Only lab
addresses are ever used: the caller passes them.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from wgpy.protocol import messages as m
from wgpy.protocol import noise
from wgpy.protocol.constants import LABEL_COOKIE, LABEL_MAC1
from wgpy.protocol.cookie import CookieGenerator
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


def valid_initiations(responder: bytes, privates: list[bytes], count: int,
                      wall: float) -> list[bytes]:
    """``count`` initiations to ``responder``, round-robin over the peers whose
    private keys are given, each peer's timestamps rising (so none is a replay)."""
    gen = CookieGenerator(responder)
    identities = [noise.StaticIdentity.from_private(p) for p in privates]
    shakes = []
    for ident in identities:
        hs = noise.Handshake(responder)
        hs.precompute(ident)
        shakes.append(hs)
    msgs: list[bytes] = []
    for i in range(max(1, count // len(identities))):
        for j, (ident, hs) in enumerate(zip(identities, shakes, strict=True)):
            msg = noise.create_initiation(ident, hs, (i << 16) | j, os.urandom, wall + i * 0.01)
            if msg is None:
                raise SystemExit("a flood key is unusable with this responder")
            msgs.append(gen.add_macs(msg.pack(), 0.0))
    return msgs


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
    p = argparse.ArgumentParser(prog="python3 -m wgpy.testing.flood")
    p.add_argument("--target", required=True, help="HOST:PORT of the responder")
    p.add_argument("--target6", default="", help="[HOST]:PORT for IPv6 cookie holders")
    p.add_argument("--pub", required=True, help="responder public key, hex or base64")
    p.add_argument("--rate", type=float, default=2000, help="initiations per second")
    p.add_argument("--duration", type=float, default=5)
    p.add_argument("--spoof", default="10.88.0.0/20", help="junk: source addresses to use")
    p.add_argument("--valid", metavar="KEYFILE", help="send valid initiations from these keys")
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
    pub = bytes.fromhex(a.pub) if len(a.pub) == 64 else base64.b64decode(a.pub)
    mac1_key = hash_(LABEL_MAC1, pub)
    cookie_key = hash_(LABEL_COOKIE, pub)
    if a.duration > 60 or a.rate > 100_000:
        raise SystemExit("refusing: the lab flood is bounded to 60 s and 100k/s")

    valid = a.valid is not None
    if valid:
        privates = [base64.b64decode(k) for k in Path(a.valid).read_text().split()]
        pool = valid_initiations(pub, privates, int(a.rate * a.duration), time.time())
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.connect(target)
        sock.setblocking(False)
        socks = [sock]
    else:
        socks = []
        for i in range(PORTS):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.bind(("0.0.0.0", 20000 + i))
            s.setblocking(False)
            socks.append(s)
        pool = [junk(mac1_key) for _ in range(POOL)]
    spoof = list(ipaddress.IPv4Network(a.spoof).hosts())
    pktinfo = [struct.pack("=I4s4s", 0, ip.packed, ip.packed) for ip in spoof]

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
    replies = {m.MESSAGE_RESPONSE: 0, m.MESSAGE_COOKIE_REPLY: 0}
    t0 = time.monotonic()
    end = t0 + a.duration
    holder_gap = 1.0 / a.holder_rate if a.holder_rate > 0 else float("inf")
    while True:
        now = time.monotonic()
        if now >= end or (valid and sent >= len(pool)):
            break
        due = int((now - t0) * a.rate) - sent
        for _ in range(min(due, 5000, len(pool) - sent if valid else 5000)):
            try:
                if valid:
                    socks[0].send(pool[sent])
                else:
                    socks[sent % PORTS].sendmsg(
                        [pool[sent % POOL]],
                        [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo[sent % len(spoof)])],
                        0, target)
            except OSError:
                errors += 1
            sent += 1
        if valid:
            _count_replies(socks[0], replies)
        if now - t0 >= a.holder_start:
            for h in holders:
                _run_holder(h, now, holder_gap, mac1_key, cookie_key,
                            target6 if ":" in h.address and target6 else target)
        time.sleep(0.001)
    elapsed = time.monotonic() - t0
    if valid:
        # Answers to the last messages may still be on their way.
        settle = time.monotonic() + 0.3
        while time.monotonic() < settle:
            _count_replies(socks[0], replies)
            time.sleep(0.001)
    responses, cookies = replies[m.MESSAGE_RESPONSE], replies[m.MESSAGE_COOKIE_REPLY]
    print(json.dumps({
        "sent": sent, "errors": errors, "elapsed": elapsed, "rate": sent / elapsed,
        "sources": 1 if valid else len(spoof), "ports": len(socks),
        "responses": responses, "cookie_replies": cookies,
        "responses_per_s": responses / elapsed, "cookie_replies_per_s": cookies / elapsed,
        "holders": [{"address": h.address, "cookie": h.cookie is not None, "sent": h.sent,
                     "replies": h.replies} for h in holders],
    }))
    return 0


def _count_replies(sock: socket.socket, replies: dict[int, int]) -> None:
    for _ in range(256):
        try:
            data = sock.recv(256)
        except (BlockingIOError, ConnectionRefusedError):
            return
        kind = m.message_type(data)
        replies[kind] = replies.get(kind, 0) + 1


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
