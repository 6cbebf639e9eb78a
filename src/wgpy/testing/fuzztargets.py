"""Fuzz targets: each takes bytes and returns quietly, or raises on a real bug.

The contract under test is the project's convention 6: untrusted input yields
a drop (or a typed error for parsers), never any other exception.  Each
target also checks a property that garbage must not break:

- ``messages``: ``parse`` returns None or a message that packs back to the input;
- ``device``: any datagram, from any source, under load or not, with mac1
  recomputed so mutations reach past it, or sealed in a real session so the
  inner-packet checks see it, gives a list of actions; tables stay bounded;
- ``tun``: any packet from the TUN side is routed, staged or dropped;
- ``uapi_set``/``uapi_get``: ``parse_set`` gives a request or ``UapiError``
  (and a request applies to a device without error); ``parse_get`` gives a
  ``DeviceInfo`` or ``UapiProtocolError``/``UapiError``;
- ``config``: ``parse_config``/``parse_quick_config`` give a config or
  ``ConfigError``, and a parsed config turns into UAPI lines that
  ``parse_set`` accepts (name resolution is limited to numeric hosts, so the
  fuzzer never asks a DNS server anything);
- ``registry``: the DNS registry answers or drops any datagram;
- ``proxy_config``: the proxy's parser gives a config or its ``ConfigError``.

``TARGETS`` maps names to functions and ``seeds(name)`` gives starting inputs.
"""

from __future__ import annotations

import copy
import ipaddress
import socket
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

from wgpy.control import uapi
from wgpy.control.apply import apply_set
from wgpy.protocol import ConfigError, Device, SendDatagram
from wgpy.protocol import messages as m
from wgpy.protocol.constants import LABEL_MAC1, RATELIMIT_TABLE_MAX
from wgpy.protocol.crypto import hash_, mac, nonce
from wgpy.protocol.keypair import Keypair
from wgpy.protocol.messages import padded_length
from wgpy.testing.memnet import (
    A_EP,
    A_IP4,
    B_EP,
    B_IP4,
    MemNet,
    Node,
    established,
    ipv4_packet,
    ipv6_packet,
)

if TYPE_CHECKING:
    from wgpy.discovery.registry import Registry, Snapshot


def _numeric_names_only() -> AbstractContextManager[object]:
    """Meanwhile getaddrinfo resolves no names: no DNS traffic while fuzzing."""
    real = socket.getaddrinfo

    def numeric(host: bytes | str | None, port: bytes | str | int | None, family: int = 0,
                type: int = 0, proto: int = 0, flags: int = 0) -> object:
        return real(host, port, family, type, proto,
                    flags | socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)

    return mock.patch.object(socket, "getaddrinfo", numeric)


# -- messages ---------------------------------------------------------------

def fuzz_messages(data: bytes) -> None:
    msg = m.parse(data)
    m.message_type(data)
    if msg is None:
        return
    if isinstance(msg, m.TransportHeader):
        assert m.TransportHeader.pack(msg.receiver, msg.counter) == data[:16]
    else:
        assert msg.pack() == data, (msg, data)
        if not isinstance(msg, m.CookieReply):
            covered, mac1 = m.mac1_span(data)
            assert len(mac1) == 16 and len(covered) in (116, 60)


# -- device ----------------------------------------------------------------

class _World:
    """One established pair, built on first use and reused (fuzzing is stateful)."""

    def __init__(self) -> None:
        self.net, self.a, self.b, self.seal_kp = _established()
        self.seal_counter = 100
        self.inputs = 0

    def captured(self, t: int) -> bytes:
        src = self.b if t in (m.MESSAGE_RESPONSE, m.MESSAGE_COOKIE_REPLY) else self.a
        ws = [w.data for w in self.net.sent
              if w.src == src.endpoint and m.message_type(w.data) == t]
        return ws[-1] if ws else b""


def _established() -> tuple[MemNet, Node, Node, Keypair]:
    net, a, b = established(1234)
    kp = a.device.peers[b.public].keypairs.current
    assert kp is not None
    # b keeps accepting this session; _seal uses it with counters of its own.
    kp = copy.copy(kp)
    # A cookie reply to have one captured.
    b.device.force_under_load = True
    a.device.peers[b.public].expire_current_keypairs()
    net.send(a, ipv4_packet(A_IP4, B_IP4, b"again"))
    net.deliver()
    b.device.force_under_load = False
    for d in (a.device, b.device):
        d.verbose = True  # the log path runs too
    return net, a, b, kp


_world: _World | None = None


def world() -> _World:
    global _world
    if _world is None:
        _world = _World()
    return _world


SOURCES = [B_EP, A_EP, ("10.66.0.1", 4444), ("fd00:66::1", 4444), ("fe80::1%eth0", 1),
           ("0.0.0.0", 0), ("::ffff:10.0.0.1", 65535)]


def _seal(w: _World, inner: bytes) -> bytes:
    """A genuine transport message from a to b carrying ``inner``."""
    kp, counter = w.seal_kp, w.seal_counter
    w.seal_counter += 1
    padded = inner + bytes(padded_length(len(inner), w.a.device.mtu) - len(inner))
    return m.TransportHeader.pack(kp.remote_index, counter) + kp.send.encrypt(
        nonce(counter), padded, None)


def _remac(data: bytes, public: bytes) -> bytes:
    t = m.message_type(data)
    if t == m.MESSAGE_INITIATION and len(data) == m.INITIATION_SIZE or (
            t == m.MESSAGE_RESPONSE and len(data) == m.RESPONSE_SIZE):
        covered, _ = m.mac1_span(data)
        return m.with_macs(data, mac(hash_(LABEL_MAC1, public), covered), data[-16:])
    return data


def fuzz_device(data: bytes) -> None:
    if not data:
        return
    w = world()
    sel, payload = data[0], data[1:]
    base_kind = sel & 7
    b = w.b.device
    if base_kind == 0:
        dgram = payload
    elif base_kind == 4:
        dgram = _seal(w, payload)
    else:
        t = {1: m.MESSAGE_INITIATION, 2: m.MESSAGE_RESPONSE, 3: m.MESSAGE_COOKIE_REPLY,
             5: m.MESSAGE_TRANSPORT, 6: m.MESSAGE_INITIATION, 7: m.MESSAGE_RESPONSE}[base_kind]
        base = w.captured(t)
        if payload and base:
            k = payload[0] % len(base)
            dgram = base[:k] + payload[1:] + base[k + len(payload) - 1:]
        else:
            dgram = base
        if base_kind >= 6:
            dgram = _remac(dgram, w.b.public)
    source = SOURCES[(sel >> 3) % len(SOURCES)]
    b.force_under_load = bool(sel & 0x40)
    now = w.net.now + w.inputs * 1e-4
    acts = b.decapsulate(dgram, source, now, w.net.wall)
    assert isinstance(acts, list)
    for act in acts:
        if isinstance(act, SendDatagram):
            assert act.endpoint is not None and act.data
    w.inputs += 1
    assert len(b.indices) <= 8, len(b.indices)
    assert b.ratelimiter_entries <= RATELIMIT_TABLE_MAX


def fuzz_tun(data: bytes) -> None:
    w = world()
    acts = w.a.device.encapsulate(data, w.net.now, w.net.wall)
    assert isinstance(acts, list)
    w.a.device.peers[w.b.public].staged.clear()


# -- UAPI -----------------------------------------------------------------

def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def fuzz_uapi_set(data: bytes) -> None:
    lines = _text(data).split("\n")
    try:
        req = uapi.parse_set(lines)
    except uapi.UapiError as e:
        assert e.errno < 0
        return
    dev = Device(lambda n: bytes(range(1, n + 1)))
    apply_set(dev, req, 1000.0, 1.7e9)


def fuzz_uapi_get(data: bytes) -> None:
    try:
        info = uapi.parse_get(_text(data))
    except (uapi.UapiProtocolError, uapi.UapiError):
        return
    uapi.format_get(info)


# -- configuration files ---------------------------------------------------

def fuzz_config(data: bytes) -> None:
    from wgpy.control import config

    text = _text(data)
    with _numeric_names_only():
        try:
            dev = config.parse_config(text, "fuzz.conf")
        except ConfigError:
            dev = None
        if dev is not None:
            lines = config.to_uapi(dev)
            uapi.parse_set(lines)  # what the parser accepts, the device must accept
        try:
            config.parse_quick_config(text, Path("/nonexistent/fuzz.conf"), "wgfuzz0")
        except ConfigError:
            pass


def fuzz_registry(data: bytes) -> None:
    from wgpy.discovery.records import Names
    from wgpy.discovery.registry import PeerView, Registry, Snapshot, Source

    global _registry
    if _registry is None:
        names = Names.for_zone("wg.example")
        snap = Snapshot([
            PeerView(bytes([1]) * 32, ("10.201.0.2", 40000),
                     ("10.99.0.1/32",)),
            PeerView(bytes([2]) * 32, ("fd00::2", 51820),
                     ("10.99.0.2/32", "fd00:99::2/128")),
        ])
        _registry = (Registry(names, ttl=7), snap)
    reg, snap = _registry
    via_tunnel = bool(data[:1]) and data[0] & 1 == 1
    src = Source(ipaddress.ip_address("10.99.0.1" if via_tunnel else "10.200.0.9"), 5353,
                 via_tunnel=via_tunnel)
    out = reg.handle_wire(data, src, snap, 0.0)
    assert out is None or isinstance(out, bytes)


_registry: tuple[Registry, Snapshot] | None = None


def fuzz_proxy_config(data: bytes) -> None:
    from wgpy.protocol.errors import ConfigError
    from wgpy.proxy import config as pconfig

    try:
        pconfig.parse(_text(data), "fuzz.conf")
    except ConfigError:
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "messages": fuzz_messages,
    "device": fuzz_device,
    "tun": fuzz_tun,
    "uapi_set": fuzz_uapi_set,
    "uapi_get": fuzz_uapi_get,
    "config": fuzz_config,
    "registry": fuzz_registry,
    "proxy_config": fuzz_proxy_config,
}

KEY_A = "a" * 64
KEY_B = "0123456789abcdef" * 4
B64 = "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE="


def seeds(name: str) -> list[bytes]:
    """Valid (or nearly valid) inputs to start mutating from."""
    if name == "messages" or name == "device":
        w = world()
        msgs = [w.captured(t) for t in (1, 2, 3, 4)]
        if name == "messages":
            return [x for x in msgs if x]
        return [bytes([k]) + b"\x00" for k in range(8)] + [
            bytes([4]) + ipv4_packet(A_IP4, B_IP4),
            bytes([4]) + ipv6_packet("fd00:9::1", "fd00:9::2"),
            bytes([0]) + msgs[3]]
    if name == "tun":
        return [ipv4_packet(A_IP4, B_IP4), ipv6_packet("fd00:9::1", "fd00:9::2"), b"\x45"]
    if name == "uapi_set":
        return [f"private_key={KEY_A}\nlisten_port=51820\nfwmark=0\nreplace_peers=true\n"
                f"public_key={KEY_B}\npreshared_key={KEY_A}\nendpoint=10.0.0.1:51820\n"
                "persistent_keepalive_interval=25\nreplace_allowed_ips=true\n"
                "allowed_ip=10.0.0.0/8\nallowed_ip=fd00::/64\nprotocol_version=1\n".encode(),
                f"public_key={KEY_B}\nremove=true\nupdate_only=true\n"
                "endpoint=[fd00::1%eth0]:1\n".encode()]
    if name == "uapi_get":
        return [f"private_key={KEY_A}\nlisten_port=51820\nfwmark=3\npublic_key={KEY_B}\n"
                f"preshared_key={KEY_A}\nprotocol_version=1\nendpoint=[fd00::1]:5\n"
                "last_handshake_time_sec=1\nlast_handshake_time_nsec=2\ntx_bytes=3\n"
                "rx_bytes=4\npersistent_keepalive_interval=0\nallowed_ip=10.0.0.0/8\n"
                "errno=0\n\n".encode()]
    if name == "config":
        return [f"[Interface]\nPrivateKey = {B64}\nListenPort = 51820\nFwMark = 0x10\n"
                "Address = 10.9.0.1/24, fd00:9::1/64\nMTU = 1420\nDNS = 10.9.0.53, example\n"
                "Table = off\nPostUp = true\nSaveConfig = false\n\n"
                f"[Peer]\nPublicKey = {B64}\nPresharedKey = {B64}\n"
                "AllowedIPs = 10.9.0.2/32, fd00:9::2/128\nEndpoint = 10.0.0.2:51820\n"
                "PersistentKeepalive = 25 # comment\n".encode()]
    if name == "registry":
        import dns.message

        return [dns.message.make_query("_wireguard._udp.wg.example", "PTR").to_wire(),
                dns.message.make_query("wg.example", "SOA").to_wire()]
    if name == "proxy_config":
        return [b"[Proxy]\nListenPort = 15002\nListenAddress = 127.0.0.2, ::1\nMark = 0x10\n"
                b"ConnectTimeout = 250ms\nIdleTimeout = 2m\n\n[Rule]\nName = web\n"
                b"Prefix = 10.77.0.0/24, fd00:77::/64\nPorts = 8000-8999, 80\n"
                b"Protocol = tcp, udp\nOrigin = 10.99.0.2:8080, [fd00:99::2]:8080\n"
                b"Map = 10.77.0.9 -> 10.99.0.4:80\nProxyProtocol = v2\n"]
    raise KeyError(name)
