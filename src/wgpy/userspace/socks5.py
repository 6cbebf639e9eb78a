"""SOCKS5 (RFC 1928) with username/password (RFC 1929), and the HTTP proxy's
request head: parsers and reply builders, no I/O.

Each parser takes the bytes received so far and returns what it found and
how many bytes it used, ``None`` when it needs more, or raises
``ProxyProtocolError`` with the reply the client should get (the protocol's
own error reply) before the connection is closed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

VERSION: Final = 5
AUTH_VERSION: Final = 1
METHOD_NONE: Final = 0x00
METHOD_USERPASS: Final = 0x02
METHOD_UNACCEPTABLE: Final = 0xFF
CMD_CONNECT: Final = 1
CMD_BIND: Final = 2
CMD_UDP_ASSOCIATE: Final = 3
ATYP_IPV4: Final = 1
ATYP_DOMAIN: Final = 3
ATYP_IPV6: Final = 4

# Reply codes (RFC 1928 6)
SUCCEEDED: Final = 0
GENERAL_FAILURE: Final = 1
NOT_ALLOWED: Final = 2
NETWORK_UNREACHABLE: Final = 3
HOST_UNREACHABLE: Final = 4
CONNECTION_REFUSED: Final = 5
TTL_EXPIRED: Final = 6
COMMAND_NOT_SUPPORTED: Final = 7
ADDRESS_TYPE_NOT_SUPPORTED: Final = 8

MAX_HTTP_HEAD: Final = 16384


class ProxyProtocolError(Exception):
    """The client broke the protocol: send ``reply`` (may be empty) and close."""

    def __init__(self, reason: str, reply: bytes = b"") -> None:
        super().__init__(reason)
        self.reply = reply


@dataclass(frozen=True)
class Request:
    command: int
    host: str  # an address or a name (ATYP 3)
    port: int


def parse_greeting(data: bytes) -> tuple[list[int], int] | None:
    """The methods a client offers (VER, NMETHODS, METHODS)."""
    if len(data) < 2:
        return None
    if data[0] != VERSION:
        raise ProxyProtocolError(f"not SOCKS5 (version byte {data[0]})")
    n = data[1]
    if n == 0:
        raise ProxyProtocolError("no authentication methods offered",
                                 bytes((VERSION, METHOD_UNACCEPTABLE)))
    if len(data) < 2 + n:
        return None
    return list(data[2 : 2 + n]), 2 + n


def choose_method(offered: list[int], need_auth: bool) -> bytes:
    """The method selection reply; raises when nothing offered is acceptable."""
    want = METHOD_USERPASS if need_auth else METHOD_NONE
    if want not in offered:
        raise ProxyProtocolError(
            "client offers no acceptable method" + (" (username/password required)"
                                                    if need_auth else ""),
            bytes((VERSION, METHOD_UNACCEPTABLE)))
    return bytes((VERSION, want))


def parse_auth(data: bytes) -> tuple[bytes, bytes, int] | None:
    """RFC 1929: (username, password, bytes used)."""
    if len(data) < 2:
        return None
    if data[0] != AUTH_VERSION:
        raise ProxyProtocolError("bad username/password version", bytes((AUTH_VERSION, 1)))
    ulen = data[1]
    if len(data) < 3 + ulen:
        return None
    plen = data[2 + ulen]
    end = 3 + ulen + plen
    if len(data) < end:
        return None
    return data[2 : 2 + ulen], data[3 + ulen : end], end


def check_credentials(user: bytes, password: bytes, want_user: bytes, want_password: bytes
                      ) -> bool:
    # Both compared, always, in constant time: no early exit tells which was wrong.
    ok_user = hmac.compare_digest(user, want_user)
    ok_pass = hmac.compare_digest(password, want_password)
    return ok_user and ok_pass


def auth_reply(ok: bool) -> bytes:
    return bytes((AUTH_VERSION, 0 if ok else 1))


def _parse_address(data: bytes, off: int) -> tuple[str, int, int] | None:
    """(host, port, end) of an ATYP/ADDR/PORT field starting at ``off``."""
    if len(data) < off + 1:
        return None
    atyp = data[off]
    if atyp == ATYP_IPV4:
        end = off + 1 + 4
        if len(data) < end + 2:
            return None
        host = str(ipaddress.IPv4Address(data[off + 1 : end]))
    elif atyp == ATYP_IPV6:
        end = off + 1 + 16
        if len(data) < end + 2:
            return None
        host = str(ipaddress.IPv6Address(data[off + 1 : end]))
    elif atyp == ATYP_DOMAIN:
        if len(data) < off + 2:
            return None
        n = data[off + 1]
        end = off + 2 + n
        if len(data) < end + 2:
            return None
        try:
            host = data[off + 2 : end].decode("idna" if any(b > 127 for b in
                                                             data[off + 2 : end]) else "ascii")
        except UnicodeError:
            raise ProxyProtocolError("undecodable domain name",
                                     reply(GENERAL_FAILURE)) from None
        if not host or any(c in host for c in "\0/ "):
            raise ProxyProtocolError("bad domain name", reply(GENERAL_FAILURE))
    else:
        raise ProxyProtocolError(f"address type {atyp} not supported",
                                 reply(ADDRESS_TYPE_NOT_SUPPORTED))
    (port,) = struct.unpack_from("!H", data, end)
    return host, port, end + 2


def parse_request(data: bytes) -> tuple[Request, int] | None:
    """VER CMD RSV ATYP DST.ADDR DST.PORT."""
    if len(data) < 4:
        return None
    if data[0] != VERSION:
        raise ProxyProtocolError("bad version in request", reply(GENERAL_FAILURE))
    cmd = data[1]
    parsed = _parse_address(data, 3)
    if parsed is None:
        return None
    host, port, end = parsed
    if cmd not in (CMD_CONNECT, CMD_UDP_ASSOCIATE):
        raise ProxyProtocolError(f"command {cmd} not supported", reply(COMMAND_NOT_SUPPORTED))
    return Request(cmd, host, port), end


def _encode_address(host: str, port: int) -> bytes:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna")[:255]
        return bytes((ATYP_DOMAIN, len(name))) + name + struct.pack("!H", port)
    atyp = ATYP_IPV4 if ip.version == 4 else ATYP_IPV6
    return bytes((atyp,)) + ip.packed + struct.pack("!H", port)


def reply(code: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
    """VER REP RSV ATYP BND.ADDR BND.PORT."""
    return bytes((VERSION, code, 0)) + _encode_address(host, port)


def parse_udp(data: bytes) -> tuple[str, int, bytes] | None:
    """A client's UDP datagram (RSV RSV FRAG ATYP DST.ADDR DST.PORT DATA):
    (host, port, payload); None for a fragment (dropped: RFC 1928 7 lets a
    server without reassembly drop them) or a malformed header."""
    if len(data) < 4 or data[0] or data[1] or data[2]:
        return None
    try:
        parsed = _parse_address(data, 3)
    except ProxyProtocolError:
        return None
    if parsed is None:
        return None
    host, port, end = parsed
    return host, port, data[end:]


def build_udp(host: str, port: int, payload: bytes) -> bytes:
    return b"\0\0\0" + _encode_address(host, port) + payload


# -- the HTTP proxy -------------------------------------------------------------------
@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str  # host:port for CONNECT, an absolute URI otherwise
    version: str
    headers: list[tuple[str, str]]
    head_len: int

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def http_response(status: int, reason: str, extra: str = "", body: str = "") -> bytes:
    payload = body.encode()
    head = (f"HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + payload


def parse_http_head(data: bytes) -> HttpRequest | None:
    """A request line and headers ending in an empty line (RFC 9112 2-3)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HTTP_HEAD:
            raise ProxyProtocolError("request head too large",
                                     http_response(431, "Request Header Fields Too Large"))
        return None
    try:
        lines = data[:end].decode("latin-1").split("\r\n")
    except UnicodeError:  # pragma: no cover - latin-1 decodes anything
        raise ProxyProtocolError("bad request", http_response(400, "Bad Request")) from None
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        raise ProxyProtocolError("bad request line", http_response(400, "Bad Request"))
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise ProxyProtocolError("bad header line", http_response(400, "Bad Request"))
        headers.append((name, value.strip()))
    return HttpRequest(parts[0].upper(), parts[1], parts[2], headers, end + 4)


def http_basic_ok(req: HttpRequest, user: bytes, password: bytes) -> bool:
    """Whether ``Proxy-Authorization: Basic`` carries the right credentials."""
    value = req.header("Proxy-Authorization") or ""
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    got_user, sep, got_pass = decoded.partition(b":")
    return bool(sep) and check_credentials(got_user, got_pass, user, password)
