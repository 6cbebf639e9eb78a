"""The Noise_IKpsk2 handshake as WireGuard uses it.

Theory of operation: each peer has one ``Handshake`` whose ``state`` follows
ZEROED -> INITIATION_CREATED -> (response consumed) ZEROED on the initiator,
and ZEROED -> INITIATION_CONSUMED -> RESPONSE_CREATED -> ZEROED on the
responder; ``begin_session`` derives the transport keys and zeroes the
handshake.  Functions take the static identity, the handshake, and what they
need of time and randomness; they return None (drop) on any failure and
mutate the handshake only once every check has passed.  Each Noise step is
marked with its token.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from wgpy.protocol import tai64n
from wgpy.protocol.constants import CONSTRUCTION, IDENTIFIER, TIMESTAMP_LEN, ZERO_KEY
from wgpy.protocol.crypto import (
    aead_decrypt,
    aead_encrypt,
    clamp,
    dh,
    hash_,
    kdf1,
    kdf2,
    kdf3,
    public_key,
)
from wgpy.protocol.messages import Initiation, Response

INITIAL_CHAIN_KEY = hash_(CONSTRUCTION)
INITIAL_HASH = hash_(INITIAL_CHAIN_KEY, IDENTIFIER)


class HandshakeState(enum.Enum):
    ZEROED = 0
    INITIATION_CREATED = 1
    INITIATION_CONSUMED = 2
    RESPONSE_CREATED = 3


@dataclass
class StaticIdentity:
    private: bytes
    public: bytes

    @classmethod
    def from_private(cls, private: bytes) -> StaticIdentity:
        return cls(private, public_key(private))

    def __repr__(self) -> str:
        return "StaticIdentity(<redacted>)"


class Handshake:
    """Per-peer handshake state.  Secrets live here only while a handshake runs."""

    def __init__(self, remote_static: bytes) -> None:
        self.state = HandshakeState.ZEROED
        self.remote_static = remote_static
        self.preshared_key = ZERO_KEY
        self.precomputed_static_static: bytes | None = None
        self.hash = b""
        self.chain_key = b""
        self.local_ephemeral = b""
        self.remote_ephemeral = b""
        self.local_index = 0
        self.remote_index = 0
        self.latest_timestamp = bytes(TIMESTAMP_LEN)
        self.last_initiation_consumption = float("-inf")
        # The next initiation's first steps, and the next response's ephemeral
        # and se, made ahead (``Device.prepare``); they survive ``clear()``:
        # they belong to no handshake yet.
        self.prepared: PreparedInitiation | None = None
        self.prepared_response: PreparedResponse | None = None

    def __repr__(self) -> str:
        return f"Handshake(state={self.state.name})"

    def precompute(self, identity: StaticIdentity | None) -> None:
        """Recompute DH(S_local, S_remote); None marks a low-order or missing key."""
        self.prepared = None
        self.precomputed_static_static = (
            dh(identity.private, self.remote_static) if identity is not None else None
        )

    def clear(self) -> None:
        self.state = HandshakeState.ZEROED
        self.hash = self.chain_key = self.local_ephemeral = self.remote_ephemeral = b""
        self.local_index = self.remote_index = 0


def _mix_hash(h: bytes, data: bytes) -> bytes:
    return hash_(h, data)


@dataclass(slots=True)
class Ephemeral:
    """A fresh ephemeral key pair, drawn before it is needed (see ``Device.prepare``)."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls, rng: Callable[[int], bytes]) -> Ephemeral:
        private = clamp(rng(32))
        return cls(private, public_key(private))

    def __repr__(self) -> str:
        return "Ephemeral(<redacted>)"


@dataclass(slots=True)
class PreparedInitiation:
    """Message 1 up to its {t} step: e, es, s and ss depend on neither the time nor
    the sender index, so they can be computed while the device is idle.  Used at
    most once; valid only for the keys it was made with."""

    ephemeral: Ephemeral
    encrypted_static: bytes
    chain_key: bytes  # after ss
    hash: bytes  # after s
    timestamp_key: bytes
    local_static: bytes
    remote_static: bytes

    def __repr__(self) -> str:
        return "PreparedInitiation(<redacted>)"


@dataclass(slots=True)
class PreparedResponse:
    """Message 2's ephemeral key and its se secret, DH(e_responder, S_initiator):
    neither depends on the initiation, only on the peer's static key, so the
    responder can compute them while idle and do one DH fewer (of three) while
    the initiator waits.  Used at most once."""

    ephemeral: Ephemeral
    se: bytes

    def __repr__(self) -> str:
        return "PreparedResponse(<redacted>)"


def prepare_response(hs: Handshake, rng: Callable[[int], bytes]) -> PreparedResponse | None:
    """A fresh ephemeral and its se with the peer; None if the peer's key is unusable."""
    eph = Ephemeral.generate(rng)
    se = dh(eph.private, hs.remote_static)
    return PreparedResponse(eph, se) if se is not None else None


def prepare_initiation(
    identity: StaticIdentity, hs: Handshake, rng: Callable[[int], bytes]
) -> PreparedInitiation | None:
    """The e, es, s and ss steps of message 1; None if the peer's key is unusable."""
    if hs.precomputed_static_static is None:
        return None
    c = INITIAL_CHAIN_KEY
    h = _mix_hash(INITIAL_HASH, hs.remote_static)
    # e
    eph = Ephemeral.generate(rng)
    c = kdf1(c, eph.public)
    h = _mix_hash(h, eph.public)
    # es
    shared = dh(eph.private, hs.remote_static)
    if shared is None:
        return None
    c, k = kdf2(c, shared)
    # s
    enc_static = aead_encrypt(k, 0, identity.public, h)
    h = _mix_hash(h, enc_static)
    # ss
    c, k = kdf2(c, hs.precomputed_static_static)
    return PreparedInitiation(eph, enc_static, c, h, k, identity.public, hs.remote_static)


def create_initiation(
    identity: StaticIdentity,
    hs: Handshake,
    sender_index: int,
    rng: Callable[[int], bytes],
    wall: float,
) -> Initiation | None:
    """Build message 1 (without MACs); None if the peer's key is unusable.

    Takes ``hs.prepared`` if it was made for these keys, else does every step."""
    pre = hs.prepared
    hs.prepared = None
    if pre is None or pre.local_static != identity.public or pre.remote_static != hs.remote_static:
        pre = prepare_initiation(identity, hs, rng)
        if pre is None:
            return None
    # {t}
    enc_ts = aead_encrypt(pre.timestamp_key, 0, tai64n.tai64n(wall), pre.hash)
    h = _mix_hash(pre.hash, enc_ts)

    hs.state = HandshakeState.INITIATION_CREATED
    hs.chain_key, hs.hash = pre.chain_key, h
    hs.local_ephemeral = pre.ephemeral.private
    hs.local_index = sender_index
    return Initiation(sender_index, pre.ephemeral.public, pre.encrypted_static, enc_ts)


@dataclass
class ConsumedInitiation:
    """What the responder learned from a valid initiation, before the peer checks."""

    remote_static: bytes
    timestamp: bytes
    chain_key: bytes
    hash: bytes
    remote_ephemeral: bytes
    remote_index: int


def open_initiation(identity: StaticIdentity, msg: Initiation) -> ConsumedInitiation | None:
    """Decrypt the initiator's identity and timestamp; no state is touched."""
    c = INITIAL_CHAIN_KEY
    h = _mix_hash(INITIAL_HASH, identity.public)
    # e
    c = kdf1(c, msg.ephemeral)
    h = _mix_hash(h, msg.ephemeral)
    # es
    shared = dh(identity.private, msg.ephemeral)
    if shared is None:
        return None
    c, k = kdf2(c, shared)
    # s
    remote_static = aead_decrypt(k, 0, msg.encrypted_static, h)
    if remote_static is None:
        return None
    h = _mix_hash(h, msg.encrypted_static)
    return ConsumedInitiation(remote_static, b"", c, h, msg.ephemeral, msg.sender)


def finish_initiation(
    opened: ConsumedInitiation, msg: Initiation, hs: Handshake
) -> ConsumedInitiation | None:
    """The ss and {t} steps, with the peer's precomputed static-static secret."""
    if hs.precomputed_static_static is None:
        return None
    # ss
    c, k = kdf2(opened.chain_key, hs.precomputed_static_static)
    # {t}
    timestamp = aead_decrypt(k, 0, msg.encrypted_timestamp, opened.hash)
    if timestamp is None:
        return None
    h = _mix_hash(opened.hash, msg.encrypted_timestamp)
    return ConsumedInitiation(
        opened.remote_static, timestamp, c, h, opened.remote_ephemeral, opened.remote_index
    )


def accept_initiation(hs: Handshake, done: ConsumedInitiation, now: float) -> None:
    """Commit a checked initiation to the peer's handshake (responder side)."""
    hs.state = HandshakeState.INITIATION_CONSUMED
    hs.chain_key, hs.hash = done.chain_key, done.hash
    hs.remote_ephemeral = done.remote_ephemeral
    hs.remote_index = done.remote_index
    hs.latest_timestamp = done.timestamp
    hs.last_initiation_consumption = now


def create_response(
    hs: Handshake,
    sender_index: int,
    rng: Callable[[int], bytes],
    ephemeral: Ephemeral | None = None,
) -> Response | None:
    """Build message 2 (without MACs) after an initiation was consumed.

    Takes ``hs.prepared_response`` if there is one; else the ephemeral key is
    ``ephemeral`` (unused before) or drawn now."""
    if hs.state is not HandshakeState.INITIATION_CONSUMED:
        return None
    pre = hs.prepared_response
    hs.prepared_response = None
    c, h = hs.chain_key, hs.hash
    # e
    se: bytes | None
    if pre is not None:
        eph, se = pre.ephemeral, pre.se
    else:
        eph = ephemeral if ephemeral is not None else Ephemeral.generate(rng)
        se = dh(eph.private, hs.remote_static)
    eph_pub = eph.public
    c = kdf1(c, eph_pub)
    h = _mix_hash(h, eph_pub)
    # ee
    ee = dh(eph.private, hs.remote_ephemeral)
    # se (above)
    if ee is None or se is None:
        return None
    c = kdf1(c, ee)
    c = kdf1(c, se)
    # psk
    c, t, k = kdf3(c, hs.preshared_key)
    h = _mix_hash(h, t)
    # {}
    empty = aead_encrypt(k, 0, b"", h)
    h = _mix_hash(h, empty)

    hs.state = HandshakeState.RESPONSE_CREATED
    hs.chain_key, hs.hash = c, h
    hs.local_ephemeral = eph.private
    hs.local_index = sender_index
    return Response(sender_index, hs.remote_index, eph_pub, empty)


def consume_response(identity: StaticIdentity, hs: Handshake, msg: Response) -> bool:
    """Check message 2 against our pending initiation; on success the handshake holds
    the final chaining key, ready for ``begin_session``."""
    if hs.state is not HandshakeState.INITIATION_CREATED or msg.receiver != hs.local_index:
        return False
    c, h = hs.chain_key, hs.hash
    # e
    c = kdf1(c, msg.ephemeral)
    h = _mix_hash(h, msg.ephemeral)
    # ee
    ee = dh(hs.local_ephemeral, msg.ephemeral)
    # se
    se = dh(identity.private, msg.ephemeral)
    if ee is None or se is None:
        return False
    c = kdf1(c, ee)
    c = kdf1(c, se)
    # psk
    c, t, k = kdf3(c, hs.preshared_key)
    h = _mix_hash(h, t)
    # {}
    if aead_decrypt(k, 0, msg.encrypted_nothing, h) is None:
        return False
    h = _mix_hash(h, msg.encrypted_nothing)
    hs.chain_key, hs.hash = c, h
    hs.remote_index = msg.sender
    hs.remote_ephemeral = msg.ephemeral
    return True


@dataclass
class SessionKeys:
    send: bytes
    receive: bytes
    is_initiator: bool
    local_index: int
    remote_index: int

    def __repr__(self) -> str:
        return f"SessionKeys(initiator={self.is_initiator}, <redacted>)"


def begin_session(hs: Handshake) -> SessionKeys:
    """Derive transport keys from a finished handshake and zero the handshake."""
    is_initiator = hs.state is HandshakeState.INITIATION_CREATED
    t1, t2 = kdf2(hs.chain_key, b"")
    send, recv = (t1, t2) if is_initiator else (t2, t1)
    keys = SessionKeys(send, recv, is_initiator, hs.local_index, hs.remote_index)
    hs.clear()
    return keys


def timestamp_is_newer(hs: Handshake, timestamp: bytes) -> bool:
    return tai64n.after(timestamp, hs.latest_timestamp)
