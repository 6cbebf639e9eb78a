"""NAT mapping classification from ``_whoami`` answers (sans-IO).

Theory of operation: the client sends a ``_whoami.ZONE TXT`` query from one
UDP socket to two registry listeners (two addresses, or two ports of one
address).  Each answer carries the source address and port the listener
saw.  If every listener saw the same mapping, the NAT keeps one mapping per
socket (endpoint-independent, "cone") and the mapping the registry sees for
the WireGuard socket is usable by other peers.  If the mappings differ, the
NAT allocates per destination (RFC 4787 "endpoint-dependent", a symmetric
NAT, e.g. MASQUERADE ``--random-fully``): the published mapping is useless
and hole punching will fail.  If the mapping is the socket's own address,
there is no NAT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from wgpy.control.endpoint import format_endpoint
from wgpy.discovery.records import NatKind
from wgpy.protocol.events import Endpoint


@dataclass(frozen=True)
class Observation:
    """The mapping one listener (``probe``) reported for our socket."""

    probe: str
    mapped: Endpoint


@dataclass(frozen=True)
class NatReport:
    kind: NatKind
    detail: str

    def __str__(self) -> str:
        return f"NAT type: {self.kind.value} ({self.detail})"


def classify(local: Endpoint | None, observations: Sequence[Observation]) -> NatReport:
    """Classify the NAT from the mappings two or more listeners saw.

    :param local: the probing socket's own address, if bound to a specific one.
    """
    if not observations:
        return NatReport(NatKind.UNKNOWN, "no probe answered")
    seen = sorted({o.mapped for o in observations})
    if len(seen) > 1:
        per = ", ".join(f"{o.probe} saw {format_endpoint(*o.mapped)}" for o in observations)
        return NatReport(
            NatKind.SYMMETRIC,
            f"mapping differs per destination: {per}; "
            "the published endpoint will not work for other peers, hole punching will fail",
        )
    if local is not None and seen[0] == local:
        return NatReport(NatKind.OPEN,
                         f"no translation, {format_endpoint(*local)} seen as itself")
    if len(observations) < 2:
        return NatReport(NatKind.UNKNOWN,
                         f"only one probe answered ({format_endpoint(*seen[0])})")
    return NatReport(
        NatKind.CONE,
        f"mapping {format_endpoint(*seen[0])} is the same for {len(observations)} destinations",
    )
