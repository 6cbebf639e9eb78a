"""Small network services that tests run behind a WireGuard peer, on real
kernel sockets: a TCP echo, a sha256 sink, a UDP echo, a DNS server, and
a "behave" server that closes, resets or waits on command.

    python3 -m wgpy.testing.services tcp-echo --port 7
    python3 -m wgpy.testing.services sink --port 9000
    python3 -m wgpy.testing.services udp-echo --port 7
    python3 -m wgpy.testing.services dns --port 53 --record host.lab=10.99.0.1
    python3 -m wgpy.testing.services behave --port 9100 --log FILE

Each runs until killed (the lab kills it) and prints "ready" once it listens.
"""

from __future__ import annotations

import argparse
import hashlib
import socket
import socketserver
import struct
import sys
import threading
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

BIG_NAME = "many.lab."  # answers with more A records than fit 512 bytes: truncated over UDP


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, addr: tuple[str, int], handler: type[socketserver.BaseRequestHandler],
                 family: int) -> None:
        self.address_family = family
        super().__init__(addr, handler)


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        while data := sock.recv(65536):
            sock.sendall(data)


class Sink(socketserver.BaseRequestHandler):
    """Reads to the end, answers the sha256 (hex) and the byte count, closes."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        h = hashlib.sha256()
        n = 0
        buf = bytearray(1 << 20)
        while got := sock.recv_into(buf):
            h.update(memoryview(buf)[:got])
            n += got
        sock.sendall(f"{h.hexdigest()} {n}\n".encode())


class Behave(socketserver.BaseRequestHandler):
    """The first line says what to do: ``fin TAG`` closes at once, ``rst TAG``
    resets at once, ``wait TAG`` reads until the client ends and logs how
    (``TAG eof N`` or ``TAG reset``)."""

    log: Path

    def handle(self) -> None:
        sock: socket.socket = self.request
        line = b""
        while not line.endswith(b"\n") and len(line) < 200:
            c = sock.recv(1)
            if not c:
                return
            line += c
        verb, _, tag = line.decode().strip().partition(" ")
        if verb == "fin":
            sock.sendall(b"bye\n")
            sock.shutdown(socket.SHUT_WR)
            self._record(f"{tag} sent-fin")
            try:
                while sock.recv(65536):
                    pass
                self._record(f"{tag} eof-after-fin")
            except ConnectionResetError:
                self._record(f"{tag} reset-after-fin")
        elif verb == "rst":
            sock.sendall(b"bye\n")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            self._record(f"{tag} sent-rst")
        elif verb == "wait":
            sock.sendall(b"ok\n")
            n = 0
            try:
                while data := sock.recv(65536):
                    n += len(data)
                self._record(f"{tag} eof {n}")
            except ConnectionResetError:
                self._record(f"{tag} reset {n}")

    def _record(self, text: str) -> None:
        with self.log.open("a") as f:
            f.write(text + "\n")


def _udp_echo(host: str, port: int, family: int) -> None:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, port))
    print("ready", flush=True)
    while True:
        data, addr = s.recvfrom(65535)
        s.sendto(data, addr)


def _dns_answer(wire: bytes, records: dict[str, list[str]], udp: bool) -> bytes | None:
    try:
        query = dns.message.from_wire(wire)
    except Exception:  # noqa: BLE001 - garbage gets no answer
        return None
    resp = dns.message.make_response(query)
    resp.flags |= dns.flags.AA
    q = query.question[0]
    name = q.name.to_text().lower()
    addrs = records.get(name)
    if name == BIG_NAME:
        addrs = [f"10.99.{i // 250}.{i % 250 + 1}" for i in range(60)]
    if addrs is None:
        resp.set_rcode(dns.rcode.NXDOMAIN)
    else:
        want = [a for a in addrs if (":" in a) == (q.rdtype == dns.rdatatype.AAAA)]
        if want and q.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            resp.answer.append(dns.rrset.from_text_list(q.name, 60, "IN", q.rdtype, want))
    out = resp.to_wire()
    if udp and len(out) > 512:
        resp.answer = []
        resp.flags |= dns.flags.TC
        out = resp.to_wire()
    return out


def _dns(host: str, port: int, family: int, records: dict[str, list[str]]) -> None:
    u = socket.socket(family, socket.SOCK_DGRAM)
    u.bind((host, port))

    class Tcp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            head = sock.recv(2, socket.MSG_WAITALL)
            if len(head) < 2:
                return
            body = sock.recv(struct.unpack("!H", head)[0], socket.MSG_WAITALL)
            out = _dns_answer(body, records, udp=False)
            if out is not None:
                sock.sendall(struct.pack("!H", len(out)) + out)

    server = _Server((host, port), Tcp, family)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    while True:
        data, addr = u.recvfrom(65535)
        out = _dns_answer(data, records, udp=True)
        if out is not None:
            u.sendto(out, addr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="wgpy.testing.services")
    p.add_argument("kind", choices=["tcp-echo", "sink", "udp-echo", "dns", "behave"])
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--record", action="append", default=[], metavar="NAME=ADDR")
    p.add_argument("--log", type=Path)
    args = p.parse_args(argv)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    if args.kind == "udp-echo":
        _udp_echo(args.host, args.port, family)
    elif args.kind == "dns":
        records: dict[str, list[str]] = {}
        for r in args.record:
            name, _, addr = r.partition("=")
            records.setdefault(name.lower().rstrip(".") + ".", []).append(addr)
        _dns(args.host, args.port, family, records)
    else:
        handler: type[socketserver.BaseRequestHandler] = {
            "tcp-echo": Echo, "sink": Sink, "behave": Behave}[args.kind]
        if args.kind == "behave":
            assert args.log is not None, "--log is required for behave"
            Behave.log = args.log
        server = _Server((args.host, args.port), handler, family)
        print("ready", flush=True)
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
