"""mac1/mac2 and cookie replies: WireGuard's defence against handshake floods.

Theory of operation: every handshake message carries mac1 = MAC(HASH(LABEL_MAC1
‖ receiver's public key), msg) so a responder can discard garbage with one
BLAKE2s and no DH.  Under load a responder also wants mac2, keyed with a
cookie that proves the sender owns its source address; a message without it
is answered with a cookie reply (the cookie sealed with XChaCha20-Poly1305
under a key derived from the responder's public key, bound to the mac1 it
answers).  ``CookieChecker`` is the receiving side of one device,
``CookieGenerator`` the sending side towards one peer.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable

from wgpy.protocol import messages
from wgpy.protocol.constants import COOKIE_REFRESH_TIME, LABEL_COOKIE, LABEL_MAC1
from wgpy.protocol.crypto import hash_, mac, xaead_decrypt, xaead_encrypt


class MacState(enum.Enum):
    INVALID_MAC1 = 0
    VALID_MAC1_NO_COOKIE = 1
    VALID_MAC1_AND_COOKIE = 2


class CookieChecker:
    """Checks incoming MACs and makes cookie replies, for one local static key."""

    def __init__(self, rng: Callable[[int], bytes]) -> None:
        self._rng = rng
        self._mac1_key = b""
        self._cookie_key = b""
        self._secret = b""
        self._secret_time = float("-inf")

    def set_public_key(self, public: bytes | None) -> None:
        if public is None:
            self._mac1_key = self._cookie_key = b""
        else:
            self._mac1_key = hash_(LABEL_MAC1, public)
            self._cookie_key = hash_(LABEL_COOKIE, public)

    def _cookie(self, source: bytes, now: float) -> bytes:
        if now - self._secret_time >= COOKIE_REFRESH_TIME:
            self._secret = self._rng(32)
            self._secret_time = now
        return mac(self._secret, source)

    def check(self, data: bytes, source: bytes, now: float) -> MacState:
        """Validate mac1 and mac2 of a handshake message from ``source`` (packed ip ‖ port)."""
        if not self._mac1_key:
            return MacState.INVALID_MAC1
        covered, mac1 = messages.mac1_span(data)
        if not hmac.compare_digest(mac(self._mac1_key, covered), mac1):
            return MacState.INVALID_MAC1
        covered2, mac2 = messages.mac2_span(data)
        if now - self._secret_time < COOKIE_REFRESH_TIME and hmac.compare_digest(
            mac(mac(self._secret, source), covered2), mac2
        ):
            return MacState.VALID_MAC1_AND_COOKIE
        return MacState.VALID_MAC1_NO_COOKIE

    def make_reply(self, data: bytes, receiver: int, source: bytes, now: float) -> bytes:
        """A cookie reply to handshake message ``data`` whose sender index is ``receiver``."""
        _, mac1 = messages.mac1_span(data)
        nonce = self._rng(24)
        sealed = xaead_encrypt(self._cookie_key, nonce, self._cookie(source, now), mac1)
        return messages.CookieReply(receiver, nonce, sealed).pack()


class CookieGenerator:
    """Adds MACs to handshake messages sent to one peer; holds the cookie it gave us."""

    def __init__(self, peer_public: bytes) -> None:
        self._mac1_key = hash_(LABEL_MAC1, peer_public)
        self._cookie_key = hash_(LABEL_COOKIE, peer_public)
        self._cookie = b""
        self._cookie_time = float("-inf")
        self._last_mac1 = b""

    def add_macs(self, data: bytes, now: float) -> bytes:
        """Return ``data`` with mac1 (and mac2 if a fresh cookie is held) filled in."""
        covered, _ = messages.mac1_span(data)
        mac1 = mac(self._mac1_key, covered)
        self._last_mac1 = mac1
        mac2 = bytes(16)
        if self._cookie and now - self._cookie_time < COOKIE_REFRESH_TIME:
            with_mac1 = messages.with_macs(data, mac1, mac2)
            covered2, _ = messages.mac2_span(with_mac1)
            mac2 = mac(self._cookie, covered2)
        return messages.with_macs(data, mac1, mac2)

    def consume_reply(self, reply: messages.CookieReply, now: float) -> bool:
        """Store the cookie from a reply to our last message; False if it does not open."""
        if not self._last_mac1:
            return False
        cookie = xaead_decrypt(
            self._cookie_key, reply.nonce, reply.encrypted_cookie, self._last_mac1
        )
        if cookie is None or len(cookie) != 16:
            return False
        self._cookie = cookie
        self._cookie_time = now
        self._last_mac1 = b""  # one reply per message sent: a replay opens nothing (as Linux)
        return True
