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
"""

from __future__ import annotations

import errno as errno_mod
import ipaddress
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
            raise UapiProtocolError(f"line without '=': {raw!r}")
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
        except ValueError as e:
            raise UapiProtocolError(f"bad value in {raw!r}: {e}") from e
    return info


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


# Error texts are logged by the daemon and read by whoever runs ``wg``: they
# never echo a whole line (it may hold a key), only a named key and a
# bounded piece of a value that is not secret.
_SHOWN = 64


def _shown_key(key: str) -> str:
    """A key name fit to print: an identifier of sane length, else nothing."""
    if len(key) <= 32 and key.replace("_", "").isalnum() and key.isascii():
        return key
    return "(not shown)"


def _bool_true(key: str, value: str) -> bool:
    if value != "true":
        raise UapiError(EINVAL, f"failed to set {key}, invalid value: {value[:16]!r}")
    return True


def _uint(key: str, value: str, bits: int) -> int:
    # isdigit() alone admits "²" and other Unicode digits int() refuses.
    # A length bound first: int() refuses strings of over 4,300 digits.
    if not (value.isascii() and value.isdigit()) or len(value) > 20:
        raise UapiError(EINVAL, f"invalid {key}: {value[:_SHOWN]!r}")
    n = int(value)
    if n >= 1 << bits:
        raise UapiError(EINVAL, f"invalid {key}: {value!r} out of range")
    return n


def _key(key: str, value: str) -> bytes:
    try:
        k = _hexkey(value)
    except ValueError:
        raise UapiError(EINVAL, f"failed to set {key}: invalid hex key") from None
    return k


def parse_set(lines: list[str]) -> SetRequest:
    """Parse the lines of a set request (without ``set=1`` and the blank line).

    Raises ``UapiError`` with wireguard-go's errno for the first bad line;
    nothing has been applied at that point, which is what makes a set
    all-or-nothing.
    """
    req = SetRequest()
    peer: PeerChange | None = None
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep:
            raise UapiError(EPROTO, "failed to parse a line without '=' (not shown)")
        if key == "public_key":
            peer = PeerChange(public_key=_key(key, value))
            req.peers.append(peer)
            continue
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
                raise UapiError(EINVAL, f"invalid UAPI device key: {_shown_key(key)}")
            continue
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
                raise UapiError(EINVAL, f"failed to set endpoint {value[:_SHOWN]!r}") from None
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
                raise UapiError(
                    EINVAL, f"failed to set allowed ip: {value[:_SHOWN]!r}"
                ) from None
            if remove:
                if net in peer.allowed_ips:
                    peer.allowed_ips.remove(net)
                peer.removed_ips.append(net)
            else:
                peer.allowed_ips.append(net)
        elif key == "protocol_version":
            if value != "1":
                raise UapiError(EINVAL, f"invalid protocol version: {value[:16]!r}")
        else:
            raise UapiError(EINVAL, f"invalid UAPI peer key: {_shown_key(key)}")
    return req


def socket_path(interface: str, directory: Path = SOCKET_DIR) -> Path:
    return directory / f"{interface}.sock"
