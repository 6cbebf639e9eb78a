"""Actions the core returns for the I/O layer to carry out, in order."""

from __future__ import annotations

from dataclasses import dataclass

Endpoint = tuple[str, int]


@dataclass(frozen=True, slots=True)
class SendDatagram:
    """Send ``data`` over UDP to ``endpoint``."""

    endpoint: Endpoint
    data: bytes


@dataclass(frozen=True, slots=True)
class LogEvent:
    """A debug message for ``LOG_LEVEL=verbose`` (the core emits them only when
    ``Device.verbose`` is set); none holds a secret."""

    message: str
    # Per-packet messages (drops) that a flood could multiply: the I/O layer
    # may thin them out, as the kernel's net_dbg_ratelimited does.
    rate_limited: bool = False


@dataclass(frozen=True, slots=True)
class HandshakeKeys:
    """Secrets of a completed handshake, for a Wireshark key log (only when asked for)."""

    local_static_private: bytes
    remote_static_public: bytes
    local_ephemeral_private: bytes
    preshared_key: bytes

    def __repr__(self) -> str:
        return "HandshakeKeys(<redacted>)"


@dataclass(frozen=True, slots=True)
class SendBatch:
    """Send transport datagrams to ``endpoint``: laid end to end in ``data``, in order,
    their lengths in ``sizes`` (so the I/O layer can use UDP GSO on equal-sized runs)."""

    endpoint: Endpoint
    data: bytearray
    sizes: list[int]


@dataclass(frozen=True, slots=True)
class WriteTun:
    """Deliver decrypted inner IP packets to the TUN interface, in order."""

    packets: list[bytes]


Action = (
    SendDatagram | SendBatch | WriteTun | LogEvent | HandshakeKeys
)
