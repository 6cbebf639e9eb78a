"""The cross-platform userspace configuration protocol (UAPI): the codec.

Theory of operation: a userspace WireGuard device listens on
``/var/run/wireguard/NAME.sock``.  A request is ``get=1`` or ``set=1``
followed by ``key=value`` lines and an empty line; the reply is ``key=value``
lines (for a get) ending in ``errno=N`` and an empty line.  Errors are
negative errnos, as wireguard-go sends them (``errno=-22`` for EINVAL).

This module is the codec, sans I/O: ``DeviceInfo`` <-> get text, and set
lines -> a validated ``SetRequest``.  The blocking client is
``control.uapi_client``; the server is ``io.uapi_server`` (framing) and the
daemon's driver, which owns the state a set changes (``control.apply``).

wgpy adds one operation, ``stats=1`` followed by an empty line: wgpyd
answers its counters (``protocol.stats.stats_fields``) as ``name=value``
lines and ``errno=0``.  wg(8) never sends it; wireguard-go closes the
connection on it (an unknown operation), which is how ``wgpy exporter``
tells the two apart.

Error texts go to the daemon's log and to users' terminals, so they never
quote what may be a secret: a line without ``=`` (it may be a bare key), a
key name or value with a run of key-like characters (``shown``), or any
value of ``private_key``/``preshared_key``.  Only the errno goes back on the
socket.
"""

from __future__ import annotations

import errno as errno_mod
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from wgpy.control.endpoint import parse_endpoint
from wgpy.protocol.constants import ZERO_KEY
from wgpy.protocol.events import Endpoint

SOCKET_DIR = Path("/var/run/wireguard")


class UapiError(Exception):
    """A request failed with ``errno`` (negative, as on the wire): a set the
    device refused, or a reply that carried a non-zero errno."""

    def __init__(self, errno: int, message: str = "") -> None:
        self.errno = errno
        name = errno_mod.errorcode.get(abs(errno), "unknown error")
        super().__init__(message or f"{name} (errno={errno})")


class UapiProtocolError(Exception):
    """The reply could not be parsed: the other end does not speak UAPI."""


@dataclass
class PeerInfo:
    public_key: bytes
    preshared_key: bytes = ZERO_KEY
    protocol_version: int = 1
    endpoint: str | None = None  # "ip:port" or "[ipv6]:port", as on the wire
    last_handshake_time_sec: int = 0
    last_handshake_time_nsec: int = 0
    tx_bytes: int = 0
    rx_bytes: int = 0
    persistent_keepalive_interval: int = 0
    allowed_ips: list[str] = field(default_factory=list)


@dataclass
class DeviceInfo:
    private_key: bytes | None = None
    listen_port: int = 0
    fwmark: int = 0
    peers: list[PeerInfo] = field(default_factory=list)


def _hexkey(value: str) -> bytes:
    if len(value) != 64:
        raise ValueError("key must be 64 hex digits")
    return bytes.fromhex(value)


def format_get(info: DeviceInfo) -> str:
    """The body of a get reply, in wireguard-go's order, without the errno line."""
    out: list[str] = []
    if info.private_key is not None and info.private_key != ZERO_KEY:
        out.append(f"private_key={info.private_key.hex()}")
    if info.listen_port:
        out.append(f"listen_port={info.listen_port}")
    if info.fwmark:
        out.append(f"fwmark={info.fwmark}")
    for p in info.peers:
        out.append(f"public_key={p.public_key.hex()}")
        out.append(f"preshared_key={p.preshared_key.hex()}")
        out.append(f"protocol_version={p.protocol_version}")
        if p.endpoint is not None:
            out.append(f"endpoint={p.endpoint}")
        out.append(f"last_handshake_time_sec={p.last_handshake_time_sec}")
        out.append(f"last_handshake_time_nsec={p.last_handshake_time_nsec}")
        out.append(f"tx_bytes={p.tx_bytes}")
        out.append(f"rx_bytes={p.rx_bytes}")
        out.append(f"persistent_keepalive_interval={p.persistent_keepalive_interval}")
        out.extend(f"allowed_ip={a}" for a in p.allowed_ips)
    return "".join(line + "\n" for line in out)


def parse_get(text: str) -> DeviceInfo:
    """Parse the key=value lines of a get reply (with or without the errno line)."""
    info = DeviceInfo()
    peer: PeerInfo | None = None
    for raw in text.split("\n"):
        if not raw:
            continue
        key, sep, value = raw.partition("=")
        if not sep:
            raise UapiProtocolError(f"a reply line without '=' ({len(raw)} characters)")
        try:
            if key == "errno":
                if int(value) != 0:
                    raise UapiError(int(value))
            elif key == "public_key":
                peer = PeerInfo(public_key=_hexkey(value))
                info.peers.append(peer)
            elif peer is None:
                if key == "private_key":
                    info.private_key = _hexkey(value)
                elif key == "listen_port":
                    info.listen_port = int(value)
                elif key == "fwmark":
                    info.fwmark = int(value)
                # unknown interface keys are ignored, as wg(8) does
            elif key == "preshared_key":
                peer.preshared_key = _hexkey(value)
            elif key == "protocol_version":
                peer.protocol_version = int(value)
            elif key == "endpoint":
                peer.endpoint = value
            elif key == "last_handshake_time_sec":
                peer.last_handshake_time_sec = int(value)
            elif key == "last_handshake_time_nsec":
                peer.last_handshake_time_nsec = int(value)
            elif key == "tx_bytes":
                peer.tx_bytes = int(value)
            elif key == "rx_bytes":
                peer.rx_bytes = int(value)
            elif key == "persistent_keepalive_interval":
                peer.persistent_keepalive_interval = int(value)
            elif key == "allowed_ip":
                peer.allowed_ips.append(value)
        except ValueError:
            # Neither the line nor ValueError's text (int() quotes its input):
            # the value may be a key.
            raise UapiProtocolError(f"a reply has a bad value for {shown(key)}") from None
    return info


# -- stats (wgpy's extension) -----------------------------------------------

STATS_REQUEST = b"stats=1\n\n"


def format_stats(fields: list[tuple[str, int]]) -> str:
    """The body of a ``stats=1`` reply, without the errno line."""
    return "".join(f"{name}={value}\n" for name, value in fields)


def parse_stats(text: str) -> dict[str, int]:
    """The counters of a ``stats=1`` reply (with or without the errno line).

    :raises UapiError: the reply carried a non-zero errno.
    :raises UapiProtocolError: a line is not ``name=integer``.
    """
    out: dict[str, int] = {}
    for raw in text.split("\n"):
        if not raw:
            continue
        key, sep, value = raw.partition("=")
        if not sep or not key or not re.fullmatch(r"-?[0-9]{1,20}", value):
            raise UapiProtocolError(f"a stats line is not name=integer ({len(raw)} characters)")
        if key == "errno":
            if int(value) != 0:
                raise UapiError(int(value))
            continue
        out[key] = int(value)
    return out


# -- set requests (server side) -------------------------------------------

EINVAL = -errno_mod.EINVAL
EPROTO = -errno_mod.EPROTO
EADDRINUSE = -errno_mod.EADDRINUSE
EIO = -errno_mod.EIO

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class PeerChange:
    public_key: bytes
    remove: bool = False
    update_only: bool = False
    preshared_key: bytes | None = None
    endpoint: Endpoint | None = None
    persistent_keepalive_interval: int | None = None
    replace_allowed_ips: bool = False
    allowed_ips: list[Network] = field(default_factory=list)  # added, after any removals
    removed_ips: list[Network] = field(default_factory=list)


@dataclass
class SetRequest:
    """A parsed ``set=1`` request: validated in full before anything is applied."""

    private_key: bytes | None = None
    private_key_set: bool = False
    listen_port: int | None = None
    fwmark: int | None = None
    replace_peers: bool = False
    peers: list[PeerChange] = field(default_factory=list)


# A run of base64 or hex characters as long as a key's: 32 bytes are 43-44
# base64 or 64 hex characters; 32 leaves room for a mangled or cut one.
_KEY_LIKE = re.compile(r"[A-Za-z0-9+/]{32,}")
SHOWN_MAX = 64


def shown(text: str) -> str:
    """``text`` as an error message may quote it: repr'd and cut at SHOWN_MAX
    characters, or not at all when it has a run of characters that may be a key
    (a key pasted where a port, an address or a key name belongs)."""
    if _KEY_LIKE.search(text):
        return f"({len(text)} characters not shown: they may hold a key)"
    if len(text) > SHOWN_MAX:
        return repr(text[:SHOWN_MAX]) + f"... ({len(text)} characters)"
    return repr(text)


def _bool_true(key: str, value: str) -> bool:
    if value != "true":
        raise UapiError(EINVAL, f"failed to set {key}, invalid value: {shown(value)}")
    return True


def _uint(key: str, value: str, bits: int) -> int:
    # isdigit() alone admits "²" and other Unicode digits int() refuses.
    # A length bound first: int() refuses strings of over 4,300 digits.
    if not (value.isascii() and value.isdigit()) or len(value) > 20:
        raise UapiError(EINVAL, f"invalid {key}: {shown(value)}")
    n = int(value)
    if n >= 1 << bits:
        raise UapiError(EINVAL, f"invalid {key}: {shown(value)} out of range")
    return n


def _key(key: str, value: str) -> bytes:
    try:
        k = _hexkey(value)
    except ValueError:
        raise UapiError(EINVAL, f"failed to set {key}: invalid hex key") from None
    return k


def parse_set(lines: list[str]) -> SetRequest:
    """Parse the lines of a set request (without ``set=1`` and the blank line).

    Raises ``UapiError`` with wireguard-go's errno for the first bad line,
    its message naming the line by number (1 is the line after ``set=1``)
    and quoting nothing that may be a secret; nothing has been applied at
    that point, which is what makes a set all-or-nothing.
    """
    req = SetRequest()
    peer: PeerChange | None = None
    for lineno, line in enumerate(lines, 1):
        try:
            peer = _set_line(req, peer, line)
        except UapiError as e:
            raise UapiError(e.errno, f"line {lineno}: {e}") from None
    return req


def _set_line(req: SetRequest, peer: PeerChange | None, line: str) -> PeerChange | None:
    """Apply one line to ``req``; returns the peer that following lines are about."""
    key, sep, value = line.partition("=")
    if not sep:
        # wireguard-go quotes the line here; it may be a bare key.
        raise UapiError(EPROTO, f"no '=' in a line of {len(line)} characters (not shown)")
    if key == "public_key":
        peer = PeerChange(public_key=_key(key, value))
        req.peers.append(peer)
        return peer
    if peer is None:
        if key == "private_key":
            k = _key(key, value)
            req.private_key = None if k == ZERO_KEY else k
            req.private_key_set = True
        elif key == "listen_port":
            req.listen_port = _uint(key, value, 16)
        elif key == "fwmark":
            req.fwmark = _uint(key, value, 32) if value else 0
        elif key == "replace_peers":
            req.replace_peers = _bool_true(key, value)
        else:
            raise UapiError(EINVAL, f"invalid UAPI device key: {shown(key)}")
        return None
    if key == "update_only":
        peer.update_only = _bool_true(key, value)
    elif key == "remove":
        peer.remove = _bool_true(key, value)
    elif key == "preshared_key":
        peer.preshared_key = _key(key, value)
    elif key == "endpoint":
        try:
            peer.endpoint = parse_endpoint(value)
        except ValueError:
            raise UapiError(EINVAL, f"failed to set endpoint {shown(value)}") from None
    elif key == "persistent_keepalive_interval":
        peer.persistent_keepalive_interval = _uint(key, value, 16)
    elif key == "replace_allowed_ips":
        peer.replace_allowed_ips = _bool_true(key, value)
        peer.allowed_ips.clear()
        peer.removed_ips.clear()
    elif key == "allowed_ip":
        # "-PREFIX" removes one (wireguard-tools' ``allowed-ips -PREFIX``).
        remove = value.startswith("-")
        try:
            net = ipaddress.ip_network(value[1:] if remove else value, strict=False)
        except ValueError:
            raise UapiError(EINVAL, f"failed to set allowed ip: {shown(value)}") from None
        if remove:
            if net in peer.allowed_ips:
                peer.allowed_ips.remove(net)
            peer.removed_ips.append(net)
        else:
            peer.allowed_ips.append(net)
    elif key == "protocol_version":
        if value != "1":
            raise UapiError(EINVAL, f"invalid protocol version: {shown(value)}")
    else:
        raise UapiError(EINVAL, f"invalid UAPI peer key: {shown(key)}")
    return peer


def socket_path(interface: str, directory: Path = SOCKET_DIR) -> Path:
    return directory / f"{interface}.sock"
