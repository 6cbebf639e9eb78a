"""Why remote input was dropped, and the exception for local misuse.

Garbage from the network never raises: it yields a ``DropReason`` that the
device counts.  ``ConfigError`` is raised only for invalid local
configuration (a bad key, an impossible value, a bad line in a file).
"""

from __future__ import annotations

import enum


class DropReason(enum.Enum):
    MALFORMED = "malformed or unknown message"
    BAD_MAC1 = "invalid mac1"
    BAD_MAC2 = "cookie required (under load)"
    RATE_LIMITED = "rate limited"
    NO_PRIVATE_KEY = "no private key configured"
    UNKNOWN_PEER = "unknown peer static key"
    HANDSHAKE_DECRYPT = "handshake decryption failed"
    REPLAYED_TIMESTAMP = "replayed or stale handshake timestamp"
    INITIATION_FLOOD = "initiations arriving too fast"
    UNKNOWN_INDEX = "unknown receiver index"
    UNEXPECTED_RESPONSE = "response without a pending initiation"
    BAD_COOKIE = "invalid cookie reply"
    LOW_ORDER_KEY = "low-order public key (all-zero DH)"
    KEY_EXPIRED = "keypair expired"
    REPLAY = "replayed or too old counter"
    DECRYPT = "transport decryption failed"
    NOT_IP = "inner packet is not IPv4 or IPv6"
    BAD_INNER_LENGTH = "inner packet length invalid"
    DISALLOWED_SOURCE = "inner source not in the peer's allowed IPs"
    NO_ROUTE = "no peer for destination"
    NO_ENDPOINT = "peer has no endpoint"
    QUEUE_FULL = "staged queue full, oldest packet dropped"
    HANDSHAKE_GAVE_UP = "handshake did not complete, queued packets dropped"


class ConfigError(ValueError):
    """Invalid local configuration: a bad key, an impossible value, a malformed
    file.  Never raised for network input.

    The one configuration error of the package: the core, the wg/wg-quick
    parsers and the proxy's parser all raise it (or a subclass).  ``str(err)``
    reads ``FILE:LINE: REASON`` when the file and line are known.
    """

    def __init__(
        self, reason: str, filename: str | None = None, lineno: int | None = None
    ) -> None:
        self.reason = reason
        self.filename = filename
        self.lineno = lineno
        where = ""
        if filename is not None:
            where = f"{filename}:{lineno}: " if lineno else f"{filename}: "
        super().__init__(f"{where}{reason}")
