"""Shared pieces for the hardening tests: attacker-built messages and state snapshots.

An attacker who knows only the responder's public key can build handshake
messages with a valid mac1 (mac1 is keyed by the receiver's public key) and,
once it holds a cookie for its own source address, a valid mac2 as well;
everything else in such a message is random.  ``snapshot`` captures every
piece of device state that an unauthenticated packet must not change.
"""

from __future__ import annotations

import ipaddress
import os
import struct

from wgpy.protocol import Device
from wgpy.protocol import messages as m
from wgpy.protocol.constants import LABEL_COOKIE, LABEL_MAC1
from wgpy.protocol.crypto import hash_, mac, nonce, xaead_decrypt
from wgpy.protocol.keypair import Keypair
from wgpy.protocol.messages import padded_length


def junk_initiation(responder_public: bytes, sender: int | None = None,
                    cookie: bytes | None = None, body: bytes | None = None) -> bytes:
    """An initiation with a valid mac1 (and mac2 when ``cookie``) and a random body."""
    if sender is None:
        sender = int.from_bytes(os.urandom(4), "little")
    rest = body if body is not None else os.urandom(32 + 48 + 28)
    covered = struct.pack("<II", m.MESSAGE_INITIATION, sender) + rest
    return with_macs(covered + bytes(32), responder_public, cookie)


def with_macs(data: bytes, receiver_public: bytes, cookie: bytes | None = None) -> bytes:
    """Recompute mac1 (and mac2 from ``cookie``, else zeros) of a handshake message."""
    covered, _ = m.mac1_span(data)
    mac1 = mac(hash_(LABEL_MAC1, receiver_public), covered)
    mac2 = bytes(16)
    if cookie is not None:
        covered2, _ = m.mac2_span(m.with_macs(data, mac1, mac2))
        mac2 = mac(cookie, covered2)
    return m.with_macs(data, mac1, mac2)


def open_cookie_reply(reply: bytes, responder_public: bytes, answered: bytes) -> bytes:
    """The cookie inside a reply to ``answered`` (what a real initiator stores)."""
    r = m.CookieReply.unpack(reply)
    _, mac1 = m.mac1_span(answered)
    cookie = xaead_decrypt(hash_(LABEL_COOKIE, responder_public), r.nonce,
                           r.encrypted_cookie, mac1)
    assert cookie is not None and len(cookie) == 16
    return cookie


def transport(kp: Keypair, counter: int, packet: bytes, mtu: int = 1420) -> bytes:
    """A transport message under ``kp`` with an arbitrary counter (as a replaying or
    reordering network would deliver it)."""
    padded = packet + bytes(padded_length(len(packet), mtu) - len(packet))
    return m.TransportHeader.pack(kp.remote_index, counter) + kp.send.encrypt(
        nonce(counter), padded, None)


def snapshot(dev: Device) -> dict[str, object]:
    """Everything about ``dev`` that unauthenticated input must leave alone."""
    state: dict[str, object] = {
        "indices": sorted(dev.indices),
        "limiter": dev.ratelimiter_entries,
        "under_load_until": dev._under_load_until,
        "cookie_secret": (dev._cookies._secret, dev._cookies._secret_time),
        "stats": (dev.stats.initiations_received, dev.stats.responses_received,
                  dev.stats.handshakes_completed, dev.stats.responses_sent,
                  dev.stats.cookie_replies_sent, dev.stats.cookie_replies_received),
        "heap": len(dev._heap),
    }
    for key, p in dev.peers.items():
        hs = p.handshake
        kps = [(kp.local_index, kp.remote_index, kp.send_counter, kp.replay._last,
                bytes(kp.replay._ring)) for kp in p.keypairs.all()]
        state[key.hex()] = (
            p.endpoint, p.rx_bytes, p.tx_bytes, p.last_handshake_wall, len(p.staged),
            hs.state, hs.local_index, hs.remote_index, hs.latest_timestamp,
            hs.last_initiation_consumption, hs.chain_key, hs.hash, kps,
            p.cookies._cookie, p.cookies._cookie_time, p.cookies._last_mac1,
            timer_state(p.timers),
        )
    return state


def timer_state(t: object) -> tuple[object, ...]:
    slots = [s for s in getattr(type(t), "__slots__", ()) if s not in ("_schedule", "_jitter")]
    return tuple(repr(getattr(t, s)) for s in slots)


def v4(addr: str) -> int:
    return int(ipaddress.IPv4Address(addr))
