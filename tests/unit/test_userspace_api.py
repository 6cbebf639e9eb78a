"""The wgpy.userspace API between two tunnels in one process over loopback
(wgpy.testing.usertunnels): no root, real sockets, real WireGuard."""

from __future__ import annotations

import asyncio
import datetime
import errno
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from wgpy.protocol import ConfigError
from wgpy.testing.usertunnels import A4, B4, B6, pair, write_pair
from wgpy.userspace import Tunnel, TunnelSocket
from wgpy.userspace.httpx_transport import TunnelTransport
from wgpy.userspace.tls import TlsStream


@pytest.fixture
def tunnels(tmp_path: Path) -> Iterator[tuple[Tunnel, Tunnel]]:
    a, b = pair(tmp_path)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def serve(b: Tunnel, port: int, handler: object) -> threading.Thread:
    """Accept one connection on ``b`` and run ``handler(sock)`` in a thread."""
    lst = b.listen(port)

    def run() -> None:
        conn, _ = lst.accept()
        try:
            handler(conn)  # type: ignore[operator]
        finally:
            conn.close()
            lst.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_stream_semantics(tunnels: tuple[Tunnel, Tunnel]) -> None:
    a, b = tunnels

    def echo_until_eof(conn: TunnelSocket) -> None:
        while data := conn.recv(65536):
            conn.sendall(data.upper())

    t = serve(b, 7000, echo_until_eof)
    with a.create_connection((B4, 7000)) as s:
        assert s.getpeername() == (B4, 7000) and s.getsockname()[0] == A4
        payload = os.urandom(3_000_000).hex().encode()[:3_000_000]
        sender = threading.Thread(target=s.sendall, args=(payload,))
        sender.start()
        f = s.makefile("rb")
        got = f.read(len(payload))
        sender.join()
        assert got == payload.upper()
        s.settimeout(0.2)
        with pytest.raises(TimeoutError):
            s.recv(10)  # nothing comes: the timeout, as a socket's
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.recv(10)
        s.setblocking(True)
        s.shutdown(socket.SHUT_WR)  # half-close: the server sees EOF and returns
        assert s.recv(10) == b""
        f.close()
    t.join(5)


def test_refused_and_reset(tunnels: tuple[Tunnel, Tunnel]) -> None:
    a, b = tunnels
    with pytest.raises(ConnectionRefusedError) as e:
        a.create_connection((B4, 7001))
    assert "connecting to 10.93.0.2:7001" in str(e.value)

    def reset(conn: TunnelSocket) -> None:
        conn.recv(5)
        conn.sendall(b"unread")  # then close with the client's next bytes unread: a RST
        time.sleep(0.2)

    t = serve(b, 7002, reset)
    with a.create_connection((B4, 7002)) as s:
        s.sendall(b"hello")
        assert s.recv(6) == b"unread"
        s.sendall(b"these stay unread on the server")
        with pytest.raises(ConnectionResetError):
            while s.recv(100):
                pass
    t.join(5)


def test_udp_ping_and_ipv6(tunnels: tuple[Tunnel, Tunnel]) -> None:
    a, b = tunnels
    with b.udp_socket(5353) as ub, a.udp_socket() as ua:
        ub.settimeout(5)
        ua.settimeout(5)
        ua.sendto(b"question", (B4, 5353))
        data, src = ub.recvfrom(100)
        assert data == b"question" and src == (A4, ua.getsockname()[1])
        ub.sendto(b"answer", src)
        assert ua.recvfrom(100) == (b"answer", (B4, 5353))
    assert 0 < a.ping(B4) < 1 and 0 < a.ping(B6) < 1
    with pytest.raises(TimeoutError):
        a.ping("10.93.0.77", timeout=0.3)  # routed nowhere: no reply

    def answer(conn: TunnelSocket) -> None:
        conn.sendall(b"v6 ok")

    t = serve(b, 7003, answer)
    with a.create_connection((B6, 7003)) as s:
        assert s.family == socket.AF_INET6 and s.recv(10) == b"v6 ok"
    t.join(5)


def test_names_without_dns_fail_clearly(tunnels: tuple[Tunnel, Tunnel]) -> None:
    a, _ = tunnels
    assert a.resolve("10.93.0.2") == ["10.93.0.2"]
    with pytest.raises(socket.gaierror) as e:
        a.create_connection(("intranet.example", 80))
    assert "no DNS server" in str(e.value)


def test_unroutable_destination_fails_at_once(tunnels: tuple[Tunnel, Tunnel]) -> None:
    a, _ = tunnels
    t = time.monotonic()
    with pytest.raises(OSError) as e:
        a.create_connection(("10.55.0.1", 80))  # no peer's AllowedIPs: ICMP unreachable
    assert e.value.errno == errno.EHOSTUNREACH and time.monotonic() - t < 1


def test_asyncio_streams_both_ways(tunnels: tuple[Tunnel, Tunnel]) -> None:
    a, b = tunnels

    async def main() -> bytes:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read()  # to EOF
            writer.write(data[::-1])
            await writer.drain()
            writer.close()

        server = await b.start_server(handler, 7004)
        reader, writer = await a.open_connection(B4, 7004)
        writer.write(b"abc" * 100_000)
        writer.write_eof()
        got = await reader.read()
        writer.close()
        server.close()
        await server.wait_closed()
        return got

    assert asyncio.run(main()) == (b"abc" * 100_000)[::-1]


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "b.tunnel")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("b.tunnel")]), False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_tls_and_httpx_over_the_tunnel(tunnels: tuple[Tunnel, Tunnel], tmp_path: Path) -> None:
    a, b = tunnels
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    def https(conn: TunnelSocket) -> None:
        tls = TlsStream(conn, server_ctx, server_side=True)
        head = b""
        while b"\r\n\r\n" not in head:
            head += tls.recv(4096)
        body = b"secret over TLS over WireGuard"
        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                    % (len(body), body))
        tls.close()

    t = serve(b, 7443, https)
    # A name the tunnel cannot resolve is only for the certificate: connect by address.
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False
    with httpx.Client(transport=TunnelTransport(a, verify=client_ctx)) as http:
        r = http.get(f"https://{B4}:7443/")
    assert r.status_code == 200 and r.text == "secret over TLS over WireGuard"
    t.join(5)
    # Verification is httpx's: a context that does not trust the certificate fails.
    t = serve(b, 7444, https)
    with httpx.Client(transport=TunnelTransport(a)) as http, pytest.raises(httpx.ConnectError):
        http.get(f"https://{B4}:7444/")
    t.join(5)


def test_silent_peer_times_out_with_the_reason(tmp_path: Path) -> None:
    from wgpy.testing.usertunnels import free_udp_port

    a_conf, _ = write_pair(tmp_path, b_port=free_udp_port())  # nobody listens there
    with Tunnel(a_conf, timeout=1.5) as a:
        t = time.monotonic()
        with pytest.raises(TimeoutError) as e:
            a.create_connection((B4, 80))
        took = time.monotonic() - t
    assert 1.4 < took < 3
    assert "no WireGuard handshake with peer" in str(e.value)
    assert "after 1.5 s" in str(e.value)


def test_config_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("[Interface]\nPrivateKey = AAAA\n")
    with pytest.raises(ConfigError) as e:
        Tunnel(bad)
    assert "bad.conf:2" in str(e.value)
    a_conf, _ = write_pair(tmp_path)
    text = a_conf.read_text()
    no_addr = tmp_path / "noaddr.conf"
    no_addr.write_text("\n".join(x for x in text.splitlines() if not x.startswith("Address")))
    with pytest.raises(ConfigError) as e:
        Tunnel(no_addr)
    assert "no Address" in str(e.value) and "noaddr.conf" in str(e.value)
    with pytest.raises(ConfigError) as e:
        Tunnel(tmp_path / "missing.conf")
    assert "missing.conf" in str(e.value)
