"""What the registry sees: the device's peers, and where a message came from (sans-IO).

The server shell builds a ``Snapshot`` from the device's UAPI ``get`` (cached
for a fraction of a second) and a ``Source`` from each message's socket; the
sans-IO modules (``registry``, ``updates``, ``relay``) take both as values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from wgpy.discovery.records import IPAddress
from wgpy.protocol.events import Endpoint


@dataclass(frozen=True)
class PeerView:
    """What the registry needs to know about one peer of the device."""

    public_key: bytes
    endpoint: Endpoint | None  # canonical numeric text (records.canonical_endpoint)
    allowed_ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    """The device's peers at one moment, plus the registry itself when ``--self``."""

    peers: Sequence[PeerView]
    self_peer: PeerView | None = None


@dataclass(frozen=True)
class Source:
    """Where a message came from.

    :param via_tunnel: the message arrived on the WireGuard interface, so its
        source address was authenticated by WireGuard.
    :param transport: ``udp`` or ``tcp``.
    """

    ip: IPAddress
    port: int
    via_tunnel: bool = False
    transport: str = "udp"
