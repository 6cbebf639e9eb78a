"""Choosing a peer's endpoint among its published candidates (sans-IO).

Theory of operation: WireGuard holds one endpoint per peer, so candidates
are tried one at a time.  For each peer the client feeds ``PathSelector.step``
the candidates from DNS and an ``Observed`` view of the device (current
endpoint, received bytes); ``step`` returns at most one ``SetEndpoint``.

* A peer whose received-byte counter moved within ``stale_after`` seconds is
  healthy: it is left alone, whatever DNS says (the tunnel works; roaming
  keeps the endpoint right).
* Otherwise the candidates are tried in order.  Trying means: set the
  endpoint, nudge a keepalive, and wait up to ``try_timeout`` for received
  bytes while the device still shows that endpoint (WireGuard moves the
  endpoint to the source of every authenticated packet, so an unchanged
  endpoint with new bytes means the path works).
* When every candidate failed, the first one stays set (the NAT mapping is
  the best guess, as in wgsd) and a new round starts after ``retry_after``.

LAN candidates come first when the peer sits behind our own public address
(same NAT), last otherwise: a LAN address of a far-away peer is rarely
reachable, and trying it first would cost ``try_timeout`` for every pair.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from wgpy.control.endpoint import format_endpoint
from wgpy.protocol.events import Endpoint


class Origin(enum.Enum):
    LAN = "lan"  # published by the peer itself (DNS UPDATE)
    NAT = "nat"  # the mapping the registry sees


@dataclass(frozen=True)
class Candidate:
    endpoint: Endpoint
    origin: Origin

    def __str__(self) -> str:
        return f"{self.text} ({self.origin.value})"

    @property
    def text(self) -> str:
        """The endpoint as the UAPI prints it (``[fd00::1]:51820``)."""
        return format_endpoint(*self.endpoint)


@dataclass(frozen=True)
class Observed:
    """The device's view of one peer.  ``endpoint`` as UAPI prints it, or None."""

    endpoint: str | None
    rx_bytes: int
    can_nudge: bool = True  # persistent keepalive is on, so a try can be confirmed
    handshake_age: float | None = None  # seconds since the last handshake, None if never


@dataclass(frozen=True)
class SetEndpoint:
    candidate: Candidate
    reason: str
    nudge: bool


@dataclass(frozen=True)
class Event:
    """Something worth a log line: ``kind`` is confirmed, failed, exhausted or healthy."""

    kind: str
    message: str


def order_candidates(
    nat: Sequence[Endpoint], lan: Sequence[Endpoint], our_public: Endpoint | None
) -> list[Candidate]:
    """LAN first when the peer is behind our own public address, NAT mapping first otherwise."""
    nat_c = [Candidate(e, Origin.NAT) for e in nat]
    lan_c = [Candidate(e, Origin.LAN) for e in lan]
    same_nat = our_public is not None and any(e[0] == our_public[0] for e in nat)
    return lan_c + nat_c if same_nat or not nat_c else nat_c + lan_c


@dataclass
class PathSelector:
    """Per-peer state of the candidate search.  All times are monotonic seconds."""

    try_timeout: float = 6.0
    stale_after: float = 15.0
    retry_after: float = 20.0
    trying: Candidate | None = None
    tried: list[Candidate] = field(default_factory=list)
    started: float = 0.0
    rx_at_start: int = 0
    confirmed: Candidate | None = None
    last_rx: int = -1
    last_rx_change: float = float("-inf")
    next_round: float = float("-inf")

    def healthy(self, now: float, observed: Observed) -> bool:
        if now - self.last_rx_change < self.stale_after:
            return True
        age = observed.handshake_age
        return age is not None and 0 <= age < self.stale_after

    def step(
        self, now: float, observed: Observed, candidates: Sequence[Candidate]
    ) -> tuple[SetEndpoint | None, list[Event]]:
        """Advance the search; return the endpoint to set (if any) and events to log."""
        events: list[Event] = []
        if observed.rx_bytes != self.last_rx:
            if self.last_rx >= 0:
                self.last_rx_change = now
            self.last_rx = observed.rx_bytes
        if not candidates:
            self.trying = None
            return None, events
        if self.trying is not None:
            t = self.trying
            first = candidates[0]
            if t not in candidates:
                self.trying = None  # the records changed under us; start over
            elif first != t and first not in self.tried and candidates.index(t) > 0:
                # A better candidate appeared (e.g. the peer just published its LAN
                # address): switch now, so the device's next handshake goes there.
                self.tried.append(t)
                return self._try(first, now, observed, "better candidate published", events)
            elif observed.endpoint == t.text and observed.rx_bytes > self.rx_at_start:
                self.trying, self.confirmed = None, t
                self.tried.clear()
                events.append(Event("confirmed", f"direct path via {t} after "
                                                  f"{now - self.started:.1f}s"))
                return None, events
            elif now - self.started < self.try_timeout:
                return None, events
            else:
                events.append(Event("failed", f"no reply via {t} in {self.try_timeout:g}s"))
                self.tried.append(t)
                self.trying = None
                rest = [c for c in candidates if c not in self.tried]
                if rest:
                    return self._try(rest[0], now, observed, "next candidate", events)
                self.tried.clear()
                self.next_round = now + self.retry_after
                events.append(Event("exhausted", f"no candidate answered; keeping {candidates[0]}"
                                                 f", next round in {self.retry_after:g}s"))
                return self._set_if_differs(candidates[0], observed, "best guess", events)
        if self.healthy(now, observed):
            return None, events
        if now < self.next_round:
            return None, events
        if not observed.can_nudge:
            # Without persistent keepalive a try cannot be confirmed: set the best guess.
            return self._set_if_differs(candidates[0], observed, "no keepalive to confirm", events)
        return self._try(candidates[0], now, observed, "path is idle", events)

    def _try(
        self, c: Candidate, now: float, observed: Observed, why: str, events: list[Event]
    ) -> tuple[SetEndpoint, list[Event]]:
        self.trying, self.started, self.rx_at_start = c, now, observed.rx_bytes
        return SetEndpoint(c, f"trying {c}: {why}", nudge=True), events

    def _set_if_differs(
        self, c: Candidate, observed: Observed, why: str, events: list[Event]
    ) -> tuple[SetEndpoint | None, list[Event]]:
        if observed.endpoint == c.text:
            return None, events
        return SetEndpoint(c, f"setting {c}: {why}", nudge=False), events
