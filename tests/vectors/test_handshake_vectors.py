"""The handshake against an independent Noise implementation, and frozen vectors.

WireGuard's handshake is Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s with the
prologue IDENTIFIER: Noise's InitializeSymmetric(name) gives C = H =
HASH(CONSTRUCTION) (the name is longer than 32 bytes), MixHash(prologue)
gives H = HASH(C ‖ IDENTIFIER), and the IK pre-message mixes the responder's
static key.  In a psk handshake Noise also mixes each ephemeral into the
chaining key, which is WireGuard's C = KDF1(C, E^pub).  Message 1's payload
is the TAI64N timestamp, message 2's is empty, and Split() gives the
transport keys.  So the `noiseprotocol` package (PyPI) must agree with us
byte for byte, given the same ephemerals.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable
from typing import Any

import pytest

from wgpy.protocol import Device, SendDatagram, WriteTun, messages, noise, tai64n
from wgpy.protocol.constants import IDENTIFIER
from wgpy.protocol.cookie import CookieGenerator
from wgpy.protocol.crypto import aead_decrypt, aead_encrypt, clamp, public_key

NAME = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
WALL = 1_700_000_000.25


def _key(label: str) -> bytes:
    return hashlib.blake2s(label.encode()).digest()


I_PRIV = clamp(_key("wgpy test initiator static"))
R_PRIV = clamp(_key("wgpy test responder static"))
I_EPH = clamp(_key("wgpy test initiator ephemeral"))
R_EPH = clamp(_key("wgpy test responder ephemeral"))
PSK = _key("wgpy test psk")
I_INDEX = 0x11223344
R_INDEX = 0x55667788


def _mac1(receiver_public: bytes, covered: bytes) -> bytes:
    # Written from protocol.md, not through wgpy.protocol.cookie.
    key = hashlib.blake2s(b"mac1----" + receiver_public).digest()
    return hashlib.blake2s(covered, key=key, digest_size=16).digest()


def _fixed(value: bytes) -> Callable[[int], bytes]:
    return lambda n: value[:n]


def _our_initiation(psk: bytes) -> tuple[noise.StaticIdentity, noise.Handshake, bytes]:
    ident = noise.StaticIdentity.from_private(I_PRIV)
    hs = noise.Handshake(public_key(R_PRIV))
    hs.preshared_key = psk
    hs.precompute(ident)
    msg = noise.create_initiation(ident, hs, I_INDEX, _fixed(I_EPH), WALL)
    assert msg is not None
    data = CookieGenerator(public_key(R_PRIV)).add_macs(msg.pack(), 0.0)
    return ident, hs, data


def _noise(initiator: bool, psk: bytes, eph: bytes) -> Any:  # noiseprotocol is untyped
    conn_mod = pytest.importorskip("noise.connection")
    conn = conn_mod.NoiseConnection.from_name(NAME)
    if initiator:
        conn.set_as_initiator()
        conn.set_keypair_from_private_bytes(conn_mod.Keypair.STATIC, I_PRIV)
        conn.set_keypair_from_public_bytes(conn_mod.Keypair.REMOTE_STATIC, public_key(R_PRIV))
    else:
        conn.set_as_responder()
        conn.set_keypair_from_private_bytes(conn_mod.Keypair.STATIC, R_PRIV)
    conn.set_keypair_from_private_bytes(conn_mod.Keypair.EPHEMERAL, eph)
    conn.set_prologue(IDENTIFIER)
    conn.set_psks(psk)
    conn.start_handshake()
    return conn


PSKS = [pytest.param(bytes(32), id="no-psk"), pytest.param(PSK, id="psk")]
pytestmark = pytest.mark.filterwarnings("ignore:One of ephemeral keypairs")


@pytest.mark.parametrize("psk", PSKS)
def test_our_initiator_against_noiseprotocol_responder(psk: bytes) -> None:
    ident, hs, data = _our_initiation(psk)
    msg = messages.parse(data)
    assert isinstance(msg, messages.Initiation)
    assert msg.mac1 == _mac1(public_key(R_PRIV), data[:116]) and msg.mac2 == bytes(16)

    resp_noise = _noise(False, psk, R_EPH)
    body1 = msg.ephemeral + msg.encrypted_static + msg.encrypted_timestamp
    payload = resp_noise.read_message(body1)
    assert bytes(payload) == tai64n.tai64n(WALL)
    body = bytes(resp_noise.write_message(b""))
    assert len(body) == 32 + 16

    response = messages.Response(R_INDEX, I_INDEX, body[:32], body[32:])
    assert noise.consume_response(ident, hs, response)
    keys = noise.begin_session(hs)
    assert keys.is_initiator and (keys.local_index, keys.remote_index) == (I_INDEX, R_INDEX)
    # Transport: noise's cipher states count nonces from 0 like our counters.
    for counter in range(3):
        sealed = aead_encrypt(keys.send, counter, b"to responder %d" % counter, b"")
        assert bytes(resp_noise.decrypt(sealed)) == b"to responder %d" % counter
        back = resp_noise.encrypt(b"to initiator %d" % counter)
        assert aead_decrypt(keys.receive, counter, back, b"") == b"to initiator %d" % counter


@pytest.mark.parametrize("psk", PSKS)
def test_noiseprotocol_initiator_against_our_responder(psk: bytes) -> None:
    init_noise = _noise(True, psk, I_EPH)
    body = bytes(init_noise.write_message(tai64n.tai64n(WALL)))
    assert len(body) == 32 + 48 + 28
    msg = messages.Initiation(I_INDEX, body[:32], body[32:80], body[80:])

    ident = noise.StaticIdentity.from_private(R_PRIV)
    opened = noise.open_initiation(ident, msg)
    assert opened is not None and opened.remote_static == public_key(I_PRIV)
    hs = noise.Handshake(public_key(I_PRIV))
    hs.preshared_key = psk
    hs.precompute(ident)
    done = noise.finish_initiation(opened, msg, hs)
    assert done is not None and done.timestamp == tai64n.tai64n(WALL)
    noise.accept_initiation(hs, done, 0.0)
    resp = noise.create_response(hs, R_INDEX, _fixed(R_EPH))
    assert resp is not None and resp.receiver == I_INDEX
    assert init_noise.read_message(resp.ephemeral + resp.encrypted_nothing) == b""
    keys = noise.begin_session(hs)
    assert not keys.is_initiator
    for counter in range(3):
        sealed = init_noise.encrypt(b"ping %d" % counter)
        assert aead_decrypt(keys.receive, counter, sealed, b"") == b"ping %d" % counter
        back = aead_encrypt(keys.send, counter, b"pong %d" % counter, b"")
        assert bytes(init_noise.decrypt(back)) == b"pong %d" % counter


def test_wrong_psk_fails_at_message_2() -> None:
    ident, hs, data = _our_initiation(PSK)
    msg = messages.parse(data)
    assert isinstance(msg, messages.Initiation)
    resp_noise = _noise(False, bytes(32), R_EPH)
    resp_noise.read_message(msg.ephemeral + msg.encrypted_static + msg.encrypted_timestamp)
    body = bytes(resp_noise.write_message(b""))
    assert not noise.consume_response(
        ident, hs, messages.Response(R_INDEX, I_INDEX, body[:32], body[32:])
    )


class _Rng:
    """Returns queued values first, then deterministic filler."""

    def __init__(self, *queued: bytes) -> None:
        self.queued = list(queued)
        self.n = 0

    def __call__(self, n: int) -> bytes:
        if self.queued:
            v = self.queued.pop(0)
            assert len(v) == n, (len(v), n)
            return v
        self.n += 1
        return hashlib.blake2s(b"filler%d" % self.n).digest()[:n]


def test_device_responder_against_noiseprotocol_initiator() -> None:
    """A whole datagram exchange: noise initiator -> Device -> noise, then data."""
    dev = Device(_Rng(R_INDEX.to_bytes(4, "little"), R_EPH))
    dev.set_private_key(R_PRIV)
    peer = dev.add_peer(public_key(I_PRIV))
    peer.preshared_key = PSK
    dev.allowed_ips.insert(ipaddress.ip_network("10.9.0.1/32"), peer)

    init_noise = _noise(True, PSK, I_EPH)
    body = bytes(init_noise.write_message(tai64n.tai64n(WALL)))
    head = messages.MESSAGE_INITIATION.to_bytes(4, "little") + I_INDEX.to_bytes(4, "little")
    covered = head + body
    datagram = covered + _mac1(public_key(R_PRIV), covered) + bytes(16)
    src = ("10.0.0.1", 51820)
    out = dev.decapsulate(datagram, src, 1.0, WALL)
    sends = [a for a in out if isinstance(a, SendDatagram)]
    assert len(sends) == 1 and sends[0].endpoint == src
    resp = messages.parse(sends[0].data)
    assert isinstance(resp, messages.Response)
    assert (resp.sender, resp.receiver) == (R_INDEX, I_INDEX)
    assert resp.mac1 == _mac1(public_key(I_PRIV), sends[0].data[:60])
    assert resp.ephemeral == public_key(R_EPH)
    init_noise.read_message(resp.ephemeral + resp.encrypted_nothing)

    inner = bytes.fromhex("4500001c000000004011") + bytes(2) + bytes([10, 9, 0, 1, 10, 9, 0, 2])
    inner += bytes(8)
    padded = inner + bytes(-len(inner) % 16)
    transport = messages.TransportHeader.pack(R_INDEX, 0) + init_noise.encrypt(padded)
    out = dev.decapsulate(transport, src, 1.1, WALL)
    assert [p for a in out if isinstance(a, WriteTun) for p in a.packets] == [inner]
    assert peer.keypairs.current is not None  # confirmed by the first data


def test_device_initiator_against_noiseprotocol_responder() -> None:
    dev = Device(_Rng(I_INDEX.to_bytes(4, "little"), I_EPH))
    dev.set_private_key(I_PRIV)
    peer = dev.add_peer(public_key(R_PRIV))
    dev.allowed_ips.insert(ipaddress.ip_network("10.9.0.2/32"), peer)
    peer.endpoint = ("10.0.0.2", 51821)
    inner = bytes.fromhex("45000020000000004011") + bytes(2) + bytes([10, 9, 0, 1, 10, 9, 0, 2])
    inner += b"abcdefghijkl"
    out = dev.encapsulate(inner, 1.0, WALL)
    sends = [a for a in out if isinstance(a, SendDatagram)]
    assert len(sends) == 1
    init = messages.parse(sends[0].data)
    assert isinstance(init, messages.Initiation) and init.sender == I_INDEX
    assert init.mac1 == _mac1(public_key(R_PRIV), sends[0].data[:116])

    resp_noise = _noise(False, bytes(32), R_EPH)
    ts = resp_noise.read_message(init.ephemeral + init.encrypted_static + init.encrypted_timestamp)
    assert bytes(ts) == tai64n.tai64n(WALL)
    body = bytes(resp_noise.write_message(b""))
    covered = (
        messages.MESSAGE_RESPONSE.to_bytes(4, "little")
        + R_INDEX.to_bytes(4, "little")
        + I_INDEX.to_bytes(4, "little")
        + body
    )
    datagram = covered + _mac1(public_key(I_PRIV), covered) + bytes(16)
    out = dev.decapsulate(datagram, ("10.0.0.2", 51821), 1.1, WALL)
    sends = [a for a in out if isinstance(a, SendDatagram)]
    # The staged packet goes out at once on the new session, counter 0.
    assert len(sends) == 1
    hdr = messages.TransportHeader.unpack(sends[0].data)
    receiver, counter = hdr.receiver, hdr.counter
    assert (receiver, counter) == (R_INDEX, 0)
    plain = bytes(resp_noise.decrypt(sends[0].data[16:]))
    assert plain[: len(inner)] == inner and len(plain) % 16 == 0


# -- Frozen vectors -------------------------------------------------------------
# Produced once by wgpy with the fixed keys above and cross-checked at the time
# by the noiseprotocol tests in this file; they catch any later change in the
# bytes we put on the wire.

FROZEN_INITIATION = (
    "0100000044332211ddea528ddf34fbda7b65ec7cab9ed46cb6bae4722a12234b"
    "efd51d804c9b55208e8b6963f8959474b61d5bd538b018eb7d623001ac6a2370"
    "bad44774b1036ac13af4ebc9694e612b443728434c22cfd62da00c6334740b05"
    "23c44ba749a5783b2e1e6ea47efe742458adc192e702112d8640a5bca8452095"
    "7f55f09b00000000000000000000000000000000"
)
FROZEN_RESPONSE = (
    "0200000088776655443322112401b96d9b1dcaddfb9696ae66f22581ecab260f"
    "5d607a3ab9b8050b00fc9620a5ca229697cbc43f2f1f644646b4e0fe24658aaa"
    "b497ab01201de8cf0296e50400000000000000000000000000000000"
)
FROZEN_T_SEND_I = "e8ed9303ea90c449fd167782d4ba5b922952bee3fe1ca9da53956e969f6c8828"
FROZEN_T_RECV_I = "e6e22ee9f02342d014b91b26833679e5e162c153ef62a5c8150fb6a1602815e5"
FROZEN_FIRST_DATA = (
    "04000000887766550000000000000000d9d4f385165a4734312610e373a84998"
    "194925ff28082647b01fad7b0f9497e9"
)


def _frozen_run() -> dict[str, bytes]:
    ident_i, hs_i, init = _our_initiation(PSK)
    ident_r = noise.StaticIdentity.from_private(R_PRIV)
    msg = messages.parse(init)
    assert isinstance(msg, messages.Initiation)
    opened = noise.open_initiation(ident_r, msg)
    assert opened is not None
    hs_r = noise.Handshake(opened.remote_static)
    hs_r.preshared_key = PSK
    hs_r.precompute(ident_r)
    done = noise.finish_initiation(opened, msg, hs_r)
    assert done is not None
    noise.accept_initiation(hs_r, done, 0.0)
    resp = noise.create_response(hs_r, R_INDEX, _fixed(R_EPH))
    assert resp is not None
    resp_data = CookieGenerator(public_key(I_PRIV)).add_macs(resp.pack(), 0.0)
    keys_r = noise.begin_session(hs_r)
    parsed = messages.parse(resp_data)
    assert isinstance(parsed, messages.Response)
    assert noise.consume_response(ident_i, hs_i, parsed)
    keys_i = noise.begin_session(hs_i)
    assert (keys_i.send, keys_i.receive) == (keys_r.receive, keys_r.send)
    first = messages.TransportHeader.pack(R_INDEX, 0) + aead_encrypt(
        keys_i.send, 0, b"frozen".ljust(16, b"\0"), b""
    )
    return {
        "initiation": init,
        "response": resp_data,
        "t_send_i": keys_i.send,
        "t_recv_i": keys_i.receive,
        "first_data": first,
    }


def test_frozen_handshake_vectors() -> None:
    got = _frozen_run()
    assert got["initiation"].hex() == FROZEN_INITIATION
    assert got["response"].hex() == FROZEN_RESPONSE
    assert got["t_send_i"].hex() == FROZEN_T_SEND_I
    assert got["t_recv_i"].hex() == FROZEN_T_RECV_I
    assert got["first_data"].hex() == FROZEN_FIRST_DATA
