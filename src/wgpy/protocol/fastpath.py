"""Batched data paths: many packets in, one action per peer out.

Theory of operation.  ``Device.encapsulate``/``decapsulate`` handle one
packet and return per-packet actions; at a few Gbit/s the Python around the
~1.7 µs AEAD call is what costs.  These functions take a whole batch (the
segments of a TUN super-segment, the datagrams of a GRO read) and do per
packet only what must be per packet: route lookup (cached while the
destination repeats), counter, padding, the AEAD into one preallocated
buffer, the replay window, the inner source check (cached).  Per peer and
batch they do once what is idempotent within one ``now``: timers, endpoint,
byte counters, key freshness.  Anything unusual (a handshake message, a
keypair awaiting confirmation, a datagram that fails a check) goes to the
single-packet path, after the batch so far has been settled, so its
behaviour and drop accounting are exactly those of ``decapsulate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from wgpy.protocol import ippacket, messages
from wgpy.protocol.constants import REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME
from wgpy.protocol.crypto import InvalidTag, nonce
from wgpy.protocol.errors import DropReason
from wgpy.protocol.events import Action, Endpoint, LogEvent, SendBatch, WriteTunBatch
from wgpy.protocol.peer import padded_length

if TYPE_CHECKING:
    from wgpy.protocol.device import Device
    from wgpy.protocol.keypair import Keypair
    from wgpy.protocol.peer import Peer

Buffer = bytes | bytearray | memoryview
_HDR = messages.TRANSPORT_HEADER_SIZE
_OVERHEAD = messages.TRANSPORT_MIN_SIZE  # header + tag


def encapsulate_batch(
    dev: Device, packets: Sequence[Buffer], now: float, wall: float
) -> list[Action]:
    out: list[Action] = []
    group: list[Buffer] = []
    gpeer: Peer | None = None
    last_dst: tuple[int, int] | None = None
    peer: Peer | None = None
    for pkt in packets:
        dst = ippacket.destination(pkt)
        if dst is None:
            dev.stats.drop(DropReason.NOT_IP)
            continue
        if dst != last_dst:
            peer = dev.allowed_ips.lookup(dst[0], dst[1])
            last_dst = dst
        if peer is None:
            dev.stats.drop(DropReason.NO_ROUTE)
            continue
        if peer is not gpeer:
            if gpeer is not None:
                _send_group(dev, gpeer, group, now, wall, out)
            group = []
            gpeer = peer
        group.append(pkt)
    if gpeer is not None:
        _send_group(dev, gpeer, group, now, wall, out)
    return out


def _send_group(
    dev: Device, peer: Peer, packets: list[Buffer], now: float, wall: float, out: list[Action]
) -> None:
    if peer.endpoint is None:
        dev.stats.drop(DropReason.NO_ENDPOINT, len(packets))
        return
    if dev.identity is None:
        dev.stats.drop(DropReason.NO_PRIVATE_KEY, len(packets))
        return
    send_batch(peer, packets, now, wall, out)


def send_batch(
    peer: Peer, packets: Sequence[Buffer], now: float, wall: float, out: list[Action]
) -> None:
    """Encrypt ``packets`` for ``peer`` into one ``SendBatch``, or fall back to one by one."""
    kp = peer.keypairs.current
    endpoint = peer.endpoint
    n = len(packets)
    if (
        peer.staged
        or kp is None
        or endpoint is None
        or not peer._usable(kp, now)
        or kp.send_counter + n >= REJECT_AFTER_MESSAGES
    ):
        for p in packets:
            peer.send_packet(bytes(p), now, wall, out)
        return
    mtu = peer.device.mtu
    sizes = [padded_length(len(p), mtu) + _OVERHEAD for p in packets]
    buf = bytearray(sum(sizes))
    _seal_all(kp, packets, sizes, memoryview(buf))
    out.append(SendBatch(endpoint, buf, sizes))
    peer.tx_bytes += len(buf)
    peer.timers.on_any_authenticated_packet_traversal(now)
    peer.timers.on_any_authenticated_packet_sent(now)
    peer.timers.on_data_sent(now)
    peer._keep_key_fresh_sending(kp, now, wall, out)


def _seal_all(kp: Keypair, packets: Sequence[Buffer], sizes: list[int], mv: memoryview) -> None:
    seal = kp.send.encrypt_into
    pack = messages.TransportHeader.pack_into
    receiver = kp.remote_index
    counter = kp.send_counter
    off = 0
    for p, size in zip(packets, sizes, strict=True):
        pad = size - _OVERHEAD - len(p)
        if pad:
            p = bytes(p) + bytes(pad)
        pack(mv[off : off + _HDR], receiver, counter)
        seal(nonce(counter), p, None, mv[off + _HDR : off + size])
        counter += 1
        off += size
    kp.send_counter = counter


class _Touched:
    """What a batch did to one peer, applied once when the batch settles."""

    __slots__ = ("peer", "rx", "data")

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.rx = 0
        self.data = 0  # data (not keepalive) packets authenticated


def decapsulate_batch(
    dev: Device, datagrams: Sequence[Buffer], source: Endpoint, now: float, wall: float
) -> list[Action]:
    out: list[Action] = []
    plain: list[bytes] = []
    touched: dict[int, _Touched] = {}
    routes: dict[tuple[int, int], Peer | None] = {}
    last_receiver = -1
    kp: Keypair | None = None
    tp: _Touched | None = None

    def settle() -> None:
        if plain:
            out.append(WriteTunBatch(plain.copy()))
            plain.clear()
        for t in touched.values():
            _settle_peer(t, source, now, wall, out)
        touched.clear()

    indices = dev._indices
    for d in datagrams:
        fast = len(d) >= _OVERHEAD and d[0] == messages.MESSAGE_TRANSPORT and not (
            d[1] or d[2] or d[3]
        )
        if fast:
            receiver, counter = messages.unpack_transport(memoryview(d))
            if receiver != last_receiver:
                entry = indices.get(receiver)
                kp = entry.keypair if entry is not None else None
                last_receiver = receiver if kp is not None else -1
                if kp is not None and entry is not None:
                    peer = entry.peer
                    if kp is peer.keypairs.next or now - kp.created >= REJECT_AFTER_TIME:
                        kp = None
                        last_receiver = -1
                    else:
                        tp = touched.get(id(peer))
                        if tp is None:
                            tp = touched[id(peer)] = _Touched(peer)
            fast = kp is not None and counter < REJECT_AFTER_MESSAGES and kp.replay.check(counter)
        if not fast:
            settle()
            last_receiver = -1
            out.extend(dev.decapsulate(bytes(d), source, now, wall))
            continue
        assert kp is not None and tp is not None
        try:
            p = kp.receive.decrypt(nonce(counter), memoryview(d)[_HDR:], None)
        except InvalidTag:
            dev._drop(DropReason.DECRYPT, source, out)
            continue
        if not kp.replay.update(counter):
            dev._drop(DropReason.REPLAY, source, out)
            continue
        # Authenticated from here on.
        tp.rx += len(d)
        if not p:
            if dev.verbose:
                out.append(LogEvent(True, f"{tp.peer.name} - Receiving keepalive packet"))
            continue
        tp.data += 1
        info = ippacket.source_and_length(p)
        if info is None:
            dev._drop(DropReason.NOT_IP, source, out)
            continue
        bits, src, length = info
        if length > len(p) or length < (20 if bits == 32 else 40):
            dev._drop(DropReason.BAD_INNER_LENGTH, source, out)
            continue
        key = (bits, src)
        if key in routes:
            owner = routes[key]
        else:
            owner = routes[key] = dev.allowed_ips.lookup(bits, src)
        if owner is not tp.peer:
            dev._drop(DropReason.DISALLOWED_SOURCE, source, out)
            continue
        plain.append(p[:length] if length < len(p) else p)
    settle()
    return out


def _settle_peer(t: _Touched, source: Endpoint, now: float, wall: float, out: list[Action]) -> None:
    peer = t.peer
    if t.rx == 0:
        return
    peer.endpoint = source
    peer.rx_bytes += t.rx
    peer.keep_key_fresh_receiving(now, wall, out)
    peer.timers.on_any_authenticated_packet_traversal(now)
    peer.timers.on_any_authenticated_packet_received(now)
    # Per packet, the hook arms the keepalive timer once and then only flags
    # "need another"; two calls have the effect of any larger number.
    for _ in range(min(t.data, 2)):
        peer.timers.on_data_received(now)
