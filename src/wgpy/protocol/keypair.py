"""Transport keypairs and the previous/current/next rotation of one peer.

Theory of operation: a keypair is born from a finished handshake.  The
initiator may use it at once; the responder puts it in ``next`` and may send
on it only after the initiator's first transport message arrives on it (key
confirmation), keeping the old ``current`` for sending until then.  One AEAD
object per direction is cached for the keypair's life: building one per
packet costs more than the encryption.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from wgpy.protocol.noise import SessionKeys
from wgpy.protocol.replay import ReplayWindow


class Keypair:
    __slots__ = (
        "send",
        "receive",
        "send_counter",
        "replay",
        "created",
        "is_initiator",
        "local_index",
        "remote_index",
    )

    def __init__(self, keys: SessionKeys, now: float) -> None:
        self.send = ChaCha20Poly1305(keys.send)
        self.receive = ChaCha20Poly1305(keys.receive)
        self.send_counter = 0
        self.replay = ReplayWindow()
        self.created = now
        self.is_initiator = keys.is_initiator
        self.local_index = keys.local_index
        self.remote_index = keys.remote_index

    def __repr__(self) -> str:
        return f"Keypair(local={self.local_index:#x}, initiator={self.is_initiator})"


class Keypairs:
    """previous / current / next keypairs of one peer."""

    __slots__ = ("previous", "current", "next")

    def __init__(self) -> None:
        self.previous: Keypair | None = None
        self.current: Keypair | None = None
        self.next: Keypair | None = None

    def install(self, kp: Keypair) -> list[Keypair]:
        """Add a new keypair; return those retired (their indices must be freed)."""
        retired: list[Keypair] = []
        if kp.is_initiator:
            if self.next is not None:
                # A keypair never confirmed by the peer is superseded.
                if self.previous is not None:
                    retired.append(self.previous)
                self.previous = self.next
                self.next = None
                if self.current is not None:
                    retired.append(self.current)
            else:
                if self.previous is not None:
                    retired.append(self.previous)
                self.previous = self.current
            self.current = kp
        else:
            if self.next is not None:
                retired.append(self.next)
            self.next = kp
            if self.previous is not None:
                retired.append(self.previous)
            self.previous = None
        return retired

    def confirm(self, kp: Keypair) -> Keypair | None:
        """The peer used ``next``: promote it.  Returns a retired keypair, if any."""
        if kp is not self.next:
            return None
        retired = self.previous
        self.previous = self.current
        self.current = kp
        self.next = None
        return retired

    def all(self) -> list[Keypair]:
        return [k for k in (self.previous, self.current, self.next) if k is not None]

    def clear(self) -> list[Keypair]:
        gone = self.all()
        self.previous = self.current = self.next = None
        return gone
