"""What the userspace tests run as the unprivileged user: one scenario per
subcommand, each printing one JSON object (what it saw) for the test to
check.  They use only the public API of ``wgpy.userspace``.

    python3 -m wgpy.testing.userclient check-no-tun
    python3 -m wgpy.testing.userclient download CONFIG HOST PORT PATH
    python3 -m wgpy.testing.userclient upload CONFIG HOST PORT BYTES
    ...
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import fcntl
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from wgpy.userspace import Tunnel

TUNSETIFF = 0x400454CA


def check_no_tun(args: argparse.Namespace) -> dict[str, Any]:
    """What this process may do: its uid, capabilities and whether a TUN opens."""
    caps = {}
    for line in open("/proc/self/status"):
        if line.startswith("Cap"):
            k, v = line.split(":")
            caps[k] = int(v.strip(), 16)
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
    except OSError as e:
        tun = f"open: {errno.errorcode.get(e.errno or 0, e.errno)}"
    else:
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"wgpytest%d", 0x0001 | 0x1000))
            tun = "created"
        except OSError as e:
            tun = f"TUNSETIFF: {errno.errorcode.get(e.errno or 0, e.errno)}"
        os.close(fd)
    return {"uid": os.getuid(), "euid": os.geteuid(), "caps": caps, "tun": tun}


def _http_get(tun: Tunnel, host: str, port: int, path: str) -> tuple[str, bytes, float]:
    """A plain HTTP/1.0 GET over a tunnel socket: (status line, body, seconds)."""
    t = time.monotonic()
    with tun.create_connection((host, port)) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        f = s.makefile("rb")
        status = f.readline().decode().strip()
        while f.readline() not in (b"\r\n", b"\n", b""):
            pass
        h = hashlib.sha256()
        n = 0
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
        f.close()
    return status, h.hexdigest().encode() + b" " + str(n).encode(), time.monotonic() - t


def download(args: argparse.Namespace) -> dict[str, Any]:
    with Tunnel(args.config, timeout=args.timeout) as tun:
        status, digest, seconds = _http_get(tun, args.host, args.port, args.path)
    sha, n = digest.decode().split()
    return {"status": status, "sha256": sha, "bytes": int(n), "seconds": seconds}


def upload(args: argparse.Namespace) -> dict[str, Any]:
    """Send BYTES pseudo-random bytes to the sink, half-close, read its sha256."""
    h = hashlib.sha256()
    with Tunnel(args.config, timeout=args.timeout) as tun:
        t = time.monotonic()
        with tun.create_connection((args.host, args.port)) as s:
            block = hashlib.sha256(b"wgpy").digest() * (1 << 15)  # 1 MiB, not all equal
            left = args.bytes
            i = 0
            while left:
                chunk = bytes([i & 0xFF]) + block[1 : min(len(block), left)]
                s.sendall(chunk)
                h.update(chunk)
                left -= len(chunk)
                i += 1
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while data := s.recv(4096):
                reply += data
        seconds = time.monotonic() - t
    sha, n = reply.decode().split()
    return {"sent_sha256": h.hexdigest(), "sink_sha256": sha, "sink_bytes": int(n),
            "seconds": seconds}


def concurrent(args: argparse.Namespace) -> dict[str, Any]:
    """N connections open at once to the echo server, each echoing its own data."""
    ok = 0
    errors: list[str] = []
    lock = threading.Lock()
    with Tunnel(args.config, timeout=args.timeout) as tun:
        socks = [tun.create_connection((args.host, args.port)) for _ in range(args.n)]

        def run(i: int) -> None:
            nonlocal ok
            s = socks[i]
            data = os.urandom(1000 + i * 37)
            try:
                s.sendall(data)
                got = b""
                while len(got) < len(data):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                s.close()
                with lock:
                    if got == data:
                        ok += 1
                    else:
                        errors.append(f"{i}: echo mismatch")
            except OSError as e:
                with lock:
                    errors.append(f"{i}: {e}")

        threads = [threading.Thread(target=run, args=(i,)) for i in range(args.n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(args.timeout)
    return {"open_at_once": len(socks), "ok": ok, "errors": errors[:10]}


def closes(args: argparse.Namespace) -> dict[str, Any]:
    """FIN and RST in both directions against the behave server."""
    out: dict[str, Any] = {}
    with Tunnel(args.config, timeout=args.timeout) as tun:
        addr = (args.host, args.port)
        # The peer sends a FIN: we read its data, then b"".
        with tun.create_connection(addr) as s:
            s.sendall(b"fin peer-fin\n")
            data = b""
            while chunk := s.recv(100):
                data += chunk
            out["peer_fin_read"] = data.decode()
            s.sendall(b"after the peer's fin\n")  # half-close: we may still send
        # The peer resets: our recv raises ConnectionResetError.
        s = tun.create_connection(addr)
        s.sendall(b"rst peer-rst\n")
        try:
            got = b""
            for _ in range(10):
                chunk = s.recv(100)
                got += chunk
                if not chunk:
                    break
            out["peer_rst"] = f"no error, read {got!r}"
        except ConnectionResetError as e:
            out["peer_rst"] = f"ConnectionResetError errno={e.errno}"
        s.close()
        # We send a FIN (shutdown) and the peer sees EOF after our bytes.
        with tun.create_connection(addr) as s:
            s.sendall(b"wait our-fin\n")
            out["our_fin_greeting"] = s.recv(3).decode()
            s.sendall(b"x" * 5000)
            s.shutdown(socket.SHUT_WR)
            # Half-closed: we still read; the server closes after logging our FIN.
            out["our_fin_then_read"] = repr(s.recv(10))
        # We reset: close with unread data in the receive buffer sends a RST.
        s = tun.create_connection(addr)
        s.sendall(b"wait our-rst\n")
        time.sleep(0.3)  # "ok\n" arrives and stays unread
        s.sendall(b"y" * 100)
        s.close()
        time.sleep(1.0)
    return out


def probe(args: argparse.Namespace) -> dict[str, Any]:
    """ping, DNS (UDP, and TCP after a truncated answer), UDP echo, listen."""
    out: dict[str, Any] = {}
    with Tunnel(args.config, timeout=args.timeout) as tun:
        out["ping4_ms"] = round(tun.ping(args.host) * 1000, 3)
        out["ping6_ms"] = round(tun.ping(args.host6) * 1000, 3)
        out["resolve"] = sorted(tun.resolve(args.name))
        out["resolve_many"] = len(tun.resolve("many.lab"))  # truncated over UDP: TCP
        try:
            tun.resolve("nosuch.lab")
            out["nxdomain"] = "resolved?"
        except socket.gaierror as e:
            out["nxdomain"] = f"gaierror {e.errno}"
        with tun.udp_socket() as u:
            u.settimeout(5)
            u.sendto(b"udp through the tunnel", (args.host, args.udp_port))
            data, src = u.recvfrom(100)
            out["udp_echo"] = [data.decode(), list(src)]
        status, digest, _ = _http_get(tun, args.name, args.http_port, "/small.txt")
        out["http_by_name"] = status
        lst = tun.listen(args.listen_port)
        out["listening"] = list(lst.getsockname())
        print(json.dumps({"listening": True}), flush=True)
        # The test connects from the peer's side now; echo one line back.
        lst.settimeout(args.timeout)
        conn, peer = lst.accept()
        line = conn.recv(100)
        conn.sendall(b"echo: " + line)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(10)
        conn.close()
        out["accepted_from"] = peer[0]
        lst.close()
    return out


def asyncio_echo(args: argparse.Namespace) -> dict[str, Any]:
    """open_connection to the echo server and start_server on the tunnel."""

    async def run() -> dict[str, Any]:
        with Tunnel(args.config, timeout=args.timeout) as tun:
            reader, writer = await tun.open_connection(args.host, args.port)
            payload = os.urandom(300_000)
            writer.write(payload)
            await writer.drain()
            got = await reader.readexactly(len(payload))
            writer.close()
            await writer.wait_closed()
            return {"echo_ok": got == payload, "bytes": len(got)}

    return asyncio.run(run())


def silent(args: argparse.Namespace) -> dict[str, Any]:
    """Connect through a peer that never answers: the error and how long it took."""
    with Tunnel(args.config, timeout=args.timeout) as tun:
        t = time.monotonic()
        try:
            tun.create_connection((args.host, args.port))
            return {"result": "connected?"}
        except OSError as e:
            return {"error": type(e).__name__, "message": str(e),
                    "seconds": time.monotonic() - t}


def httpx_get(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from wgpy.userspace.httpx_transport import TunnelTransport

    with Tunnel(args.config, timeout=args.timeout) as tun:
        with httpx.Client(transport=TunnelTransport(tun)) as client:
            r = client.get(args.url)
            return {"status": r.status_code, "text": r.text}


SCENARIOS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "check-no-tun": check_no_tun, "download": download, "upload": upload,
    "concurrent": concurrent, "closes": closes, "probe": probe,
    "asyncio-echo": asyncio_echo, "silent": silent, "httpx-get": httpx_get,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="wgpy.testing.userclient")
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("config", nargs="?")
    p.add_argument("--host", default="10.99.0.1")
    p.add_argument("--host6", default="fd00:99::1")
    p.add_argument("--name", default="peer.lab")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--udp-port", type=int, default=7)
    p.add_argument("--listen-port", type=int, default=8080)
    p.add_argument("--path", default="/")
    p.add_argument("--url", default="")
    p.add_argument("--bytes", type=int, default=1 << 20)
    p.add_argument("-n", type=int, default=10)
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args(argv)
    result = SCENARIOS[args.scenario](args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
