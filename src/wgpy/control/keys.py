"""WireGuard keys: 32 bytes, base64 in text (44 characters), hex on the UAPI.

The base64 decoder is strict in the way ``wg(8)`` is: exactly 43 alphabet
characters and one ``=``, and the unused low bits of the last character must
be zero, so every key has exactly one accepted spelling.

Key objects never show their bytes in ``repr`` (secret hygiene); use
``to_base64()`` or ``hex()`` deliberately.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable

from wgpy.protocol.constants import KEY_LEN, ZERO_KEY
from wgpy.protocol.crypto import clamp, public_key
from wgpy.protocol.peer import short_name

KEY_LEN_BASE64 = 44

_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


class InvalidKey(ValueError):
    """A key is not the correct length or format."""


class Key:
    """A 32-byte key with a redacted ``repr``."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_LEN:
            raise InvalidKey("Key is not the correct length or format")
        self._raw = bytes(raw)

    # -- constructors -----------------------------------------------------
    @classmethod
    def from_base64(cls, text: str) -> Key:
        """Parse a base64 key exactly as ``wg`` does; raise InvalidKey otherwise."""
        if (
            len(text) != KEY_LEN_BASE64
            or text[-1] != "="
            or any(c not in _B64_ALPHABET for c in text[:-1])
        ):
            raise InvalidKey("Key is not the correct length or format")
        raw = base64.b64decode(text)
        # Reject non-canonical spellings (low bits of the last digit set).
        if base64.b64encode(raw).decode() != text:
            raise InvalidKey("Key is not the correct length or format")
        return cls(raw)

    @classmethod
    def zero(cls) -> Key:
        return cls(ZERO_KEY)

    # -- views ------------------------------------------------------------
    @property
    def raw(self) -> bytes:
        return self._raw

    def to_base64(self) -> str:
        return base64.b64encode(self._raw).decode()

    def hex(self) -> str:
        return self._raw.hex()

    def short_name(self) -> str:
        """A public key as log lines name its peer: ``peer(ABCD…WXYZ)``, the first
        and last four base64 characters, as wireguard-go and wgpyd print it.

        For public keys only: it shows a sixth of the key.
        """
        return short_name(self._raw)

    def is_zero(self) -> bool:
        return hmac.compare_digest(self._raw, ZERO_KEY)

    def public_key(self) -> Key:
        """The X25519 public key for this private key (clamping is implied)."""
        return Key(public_key(self._raw))

    # -- comparison (constant time) ----------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Key):
            return NotImplemented
        return hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return "Key(<redacted>)"

    __str__ = __repr__


def genkey(rng: Callable[[int], bytes]) -> Key:
    """A new private key: 32 bytes of ``rng`` (give it ``secrets.token_bytes``),
    clamped for X25519.  The randomness is an argument so that this module,
    which sans-IO code uses for its key helpers, draws none itself."""
    return Key(clamp(rng(KEY_LEN)))


def genpsk(rng: Callable[[int], bytes]) -> Key:
    """A new preshared key: 32 bytes of ``rng``, not clamped."""
    return Key(rng(KEY_LEN))
