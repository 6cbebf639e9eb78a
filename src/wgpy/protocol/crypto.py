"""WireGuard's primitives as thin wrappers over ``cryptography`` and PyNaCl.

No cipher is implemented here: ChaCha20-Poly1305 comes from
``cryptography`` (OpenSSL), BLAKE2s from ``hashlib``, X25519 and
XChaCha20-Poly1305 (cookie replies only) from libsodium through PyNaCl.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl import bindings as _sodium
from nacl.exceptions import CryptoError
from nacl.exceptions import RuntimeError as NaclRuntimeError
from nacl.exceptions import TypeError as NaclTypeError

from wgpy.protocol.constants import ZERO_KEY

# The AEAD nonce: 4 zero bytes, then the counter (little-endian).
NONCE = struct.Struct("<4xQ")

__all__ = [
    "InvalidTag",
    "aead_decrypt",
    "aead_encrypt",
    "clamp",
    "dh",
    "hash_",
    "hmac_",
    "is_zero",
    "kdf1",
    "kdf2",
    "kdf3",
    "mac",
    "public_key",
    "xaead_decrypt",
    "xaead_encrypt",
]


def hash_(*parts: bytes) -> bytes:
    """HASH(a ‖ b ‖ …): BLAKE2s-256."""
    h = hashlib.blake2s()
    for p in parts:
        h.update(p)
    return h.digest()


def mac(key: bytes, data: bytes) -> bytes:
    """MAC(key, data): keyed BLAKE2s with a 16-byte digest."""
    return hashlib.blake2s(data, digest_size=16, key=key).digest()


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def hmac_(key: bytes, data: bytes) -> bytes:
    """HMAC-BLAKE2s (RFC 2104, block size 64).

    Written out over hashlib because ``hmac.new``'s per-call overhead is large
    next to a BLAKE2s of a few bytes, and a handshake makes dozens of them; the
    vectors test it against ``hmac``.
    """
    if len(key) > 64:
        key = hashlib.blake2s(key).digest()
    key = key.ljust(64, b"\0")
    inner = hashlib.blake2s(key.translate(_IPAD))
    inner.update(data)
    return hashlib.blake2s(key.translate(_OPAD) + inner.digest()).digest()


def _hmac_keyed(key: bytes) -> tuple[Any, Any]:
    """The inner and outer BLAKE2s states of HMAC under ``key`` (32 bytes or
    less), to be ``copy()``-ed for each message: the KDFs below make two or
    three HMACs under one key."""
    key = key.ljust(64, b"\0")
    return hashlib.blake2s(key.translate(_IPAD)), hashlib.blake2s(key.translate(_OPAD))


def _hmac_with(states: tuple[Any, Any], data: bytes) -> bytes:
    inner = states[0].copy()
    inner.update(data)
    outer = states[1].copy()
    outer.update(inner.digest())
    return outer.digest()  # type: ignore[no-any-return]


def kdf1(key: bytes, data: bytes) -> bytes:
    t0 = hmac_(key, data)
    return hmac_(t0, b"\x01")


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    t0 = _hmac_keyed(hmac_(key, data))
    t1 = _hmac_with(t0, b"\x01")
    t2 = _hmac_with(t0, t1 + b"\x02")
    return t1, t2


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    t0 = _hmac_keyed(hmac_(key, data))
    t1 = _hmac_with(t0, b"\x01")
    t2 = _hmac_with(t0, t1 + b"\x02")
    t3 = _hmac_with(t0, t2 + b"\x03")
    return t1, t2, t3


def nonce(counter: int) -> bytes:
    return NONCE.pack(counter)


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, ad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(NONCE.pack(counter), plaintext, ad)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, ad: bytes) -> bytes | None:
    """Open, or None when the tag does not verify."""
    try:
        return ChaCha20Poly1305(key).decrypt(NONCE.pack(counter), ciphertext, ad)
    except InvalidTag:
        return None


def xaead_encrypt(key: bytes, nonce24: bytes, plaintext: bytes, ad: bytes) -> bytes:
    out: bytes = _sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce24, key)
    return out


def xaead_decrypt(key: bytes, nonce24: bytes, ciphertext: bytes, ad: bytes) -> bytes | None:
    try:
        out: bytes = _sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, ad, nonce24, key
        )
    except CryptoError:
        return None
    return out


def clamp(secret: bytes) -> bytes:
    """Clamp 32 random bytes into an X25519 private key (RFC 7748)."""
    b = bytearray(secret)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


def public_key(private: bytes) -> bytes:
    """X25519(private, 9): the public key of a (clamped or not) private key."""
    out: bytes = _sodium.crypto_scalarmult_base(private)
    return out


def dh(private: bytes, public: bytes) -> bytes | None:
    """X25519; None for an all-zero result (a low-order or invalid public key).

    libsodium, not ``cryptography``: as fast when hot, but much faster in a
    process that has just woken up (OpenSSL's EVP_PKEY path is
    long), and a handshake makes three of them on the responder's side."""
    try:
        shared: bytes = _sodium.crypto_scalarmult(private, public)
    except (NaclRuntimeError, NaclTypeError):
        # libsodium refuses small-order points (whose result is all zero).
        return None
    if hmac.compare_digest(shared, ZERO_KEY):
        return None
    return shared


def is_zero(data: bytes) -> bool:
    return hmac.compare_digest(data, bytes(len(data)))
