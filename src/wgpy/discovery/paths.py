"""Choosing a peer's endpoint among its published candidates (sans-IO).

Theory of operation: WireGuard holds one endpoint per peer, so candidates
are tried one at a time.  For each peer the client feeds ``PathSelector.step``
the direct candidates from DNS, the relay endpoint if there is one, and an
``Observed`` view of the device (current endpoint, received bytes); ``step``
returns at most one ``SetEndpoint``.

* A peer whose received-byte counter moved within ``stale_after`` seconds is
  healthy: it is left alone, whatever DNS says (the tunnel works; roaming
  keeps the endpoint right) -- unless it is healthy *through the relay*.
* Otherwise the candidates are tried in order (a *round*).  Trying means:
  set the endpoint, nudge a keepalive, and wait up to ``try_timeout`` for
  received bytes while the device still shows that endpoint (WireGuard moves
  the endpoint to the source of every authenticated packet, so an unchanged
  endpoint with new bytes means the path works).  The relay, once known, is
  the last candidate of a round, or the first when a direct path is
  hopeless (a symmetric NAT on either side) or the other peer already asked
  for the relay (``prefer_relay``).
* When a round fails, the best guess stays set (the relay if known, else the
  NAT mapping, as in wgsd), ``wants_relay`` asks the client to request a
  relay, and a new round starts after ``retry_after``.
* A peer that is healthy through the relay keeps trying direct candidates,
  one at a time, each for ``probe_timeout`` only (data sent meanwhile is
  lost, so the window is short) and then back to the relay, with a wait
  that doubles from ``direct_retry_min`` to ``direct_retry_max`` between
  tries (``direct_retry_max`` each while both NATs are symmetric, and a try
  at once when that stops being so).  Both sides probing opens both NATs in
  turn, so a direct path that the network allows is found even though each
  probe is short.

LAN candidates come first when the peer sits behind our own public address
(same NAT), last otherwise: a LAN address of a far-away peer is rarely
reachable, and trying it first would cost ``try_timeout`` for every pair.

``PathState`` names where a peer's traffic goes (for logs and metrics).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from wgpy.control.endpoint import format_endpoint, parse_endpoint
from wgpy.protocol.events import Endpoint


class Origin(enum.Enum):
    LAN = "lan"  # published by the peer itself (DNS UPDATE)
    NAT = "nat"  # the mapping the registry sees
    RELAY = "relay"  # the registry's relay, allocated for this pair


class PathState(enum.Enum):
    """Where a peer's traffic goes now."""

    DIRECT = "direct"  # to the peer's public mapping (or any address not ours to name)
    LAN = "lan"  # to a LAN address the peer published
    RELAYED = "relayed"  # through the registry's relay
    NONE = "none"  # nothing came back lately: no working path


RELAY_TRY = 6.0  # the shortest try of the relay: more than WireGuard's REKEY_TIMEOUT


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
    """Something worth a log line: ``kind`` is confirmed, failed, exhausted,
    relayed, probe-failed or direct."""

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


def _roamed_to(observed: Observed) -> Candidate | None:
    """The device's current endpoint as a direct candidate (None if it has none)."""
    if observed.endpoint is None:
        return None
    try:
        return Candidate(parse_endpoint(observed.endpoint), Origin.NAT)
    except ValueError:
        return None


@dataclass
class PathSelector:
    """Per-peer state of the candidate search.  All times are monotonic seconds."""

    try_timeout: float = 6.0
    stale_after: float = 15.0
    retry_after: float = 20.0
    probe_timeout: float = 1.0
    direct_retry_min: float = 5.0
    direct_retry_max: float = 45.0
    trying: Candidate | None = None
    fallback: Candidate | None = None  # while probing from the relay: where to go back
    tried: list[Candidate] = field(default_factory=list)
    started: float = 0.0
    rx_at_start: int = 0
    confirmed: Candidate | None = None
    last_rx: int = -1
    last_rx_change: float = float("-inf")
    next_round: float = float("-inf")
    wants_relay: bool = False
    relay_tried: Candidate | None = None  # the last relay tried (a new one is tried at once)
    next_direct: float = float("-inf")
    direct_wait: float = 0.0
    direct_index: int = 0
    hopeless: bool = False

    def healthy(self, now: float, observed: Observed) -> bool:
        if now - self.last_rx_change < self.stale_after:
            return True
        age = observed.handshake_age
        return age is not None and 0 <= age < self.stale_after

    def state(
        self, now: float, observed: Observed, candidates: Sequence[Candidate],
        relay: Candidate | None = None,
    ) -> PathState:
        """Where the peer's traffic goes now, as far as the device shows."""
        if observed.endpoint is None or not self.healthy(now, observed):
            return PathState.NONE
        if relay is not None and observed.endpoint == relay.text:
            return PathState.RELAYED
        if any(c.origin is Origin.LAN and c.text == observed.endpoint for c in candidates):
            return PathState.LAN
        return PathState.DIRECT

    def step(
        self, now: float, observed: Observed, candidates: Sequence[Candidate],
        relay: Candidate | None = None, prefer_relay: bool = False, hopeless: bool = False,
    ) -> tuple[SetEndpoint | None, list[Event]]:
        """Advance the search; return the endpoint to set (if any) and events to log.

        :param candidates: the direct candidates, in order (``order_candidates``).
        :param relay: our endpoint on the relay for this peer, once allocated.
        :param prefer_relay: a direct path is unlikely or the peer asked for the
            relay: the relay goes first in a round.
        :param hopeless: both NATs are symmetric: direct probes from the relay wait
            ``direct_retry_max`` each; when this turns false, the next probe is due.
        """
        events: list[Event] = []
        if hopeless != self.hopeless:
            self.hopeless = hopeless
            if not hopeless:
                self.direct_wait = 0.0
                self.next_direct = min(self.next_direct, now)  # something changed: look now
        if observed.rx_bytes != self.last_rx:
            if self.last_rx >= 0:
                self.last_rx_change = now
            self.last_rx = observed.rx_bytes
        if prefer_relay and relay is None:
            self.wants_relay = True
        pool = self._pool(candidates, relay, prefer_relay)
        if not pool:
            self.trying = self.fallback = None
            return None, events
        if self.trying is not None and self.fallback is not None:
            return self._probing(now, observed, candidates, relay, events)
        if self.trying is not None:
            return self._searching(now, observed, pool, relay, events)
        on_relay = relay is not None and observed.endpoint == relay.text
        if on_relay and self.healthy(now, observed):
            assert relay is not None
            if self.next_direct == float("-inf"):  # settle on the relay first
                self.next_direct = now + (self.direct_retry_max if self.hopeless
                                          else self.direct_retry_min)
            # From the relay only the first kind of candidate is probed: the LAN
            # addresses of a peer behind our own NAT, else its public mappings.
            probe = [c for c in candidates if c.origin is candidates[0].origin] \
                if candidates else []
            if probe and now >= self.next_direct and observed.can_nudge:
                c = probe[self.direct_index % len(probe)]
                self.direct_index += 1
                self.fallback = relay
                return self._try(c, now, observed, "probing a direct path from the relay",
                                 events)
            return None, events
        if self.healthy(now, observed):
            return None, events
        fresh_relay = relay is not None and relay != self.relay_tried
        if now < self.next_round and not (fresh_relay and self.wants_relay):
            return None, events
        if not observed.can_nudge:
            # Without persistent keepalive a try cannot be confirmed: set the best guess.
            return self._set_if_differs(pool[0], observed, "no keepalive to confirm", events)
        self.tried.clear()
        first = relay if fresh_relay and self.wants_relay and relay is not None else pool[0]
        return self._try(first, now, observed, "path is idle", events)

    def _pool(
        self, candidates: Sequence[Candidate], relay: Candidate | None, prefer_relay: bool
    ) -> list[Candidate]:
        if relay is None:
            return list(candidates)
        return [relay, *candidates] if prefer_relay else [*candidates, relay]

    def _searching(
        self, now: float, observed: Observed, pool: list[Candidate], relay: Candidate | None,
        events: list[Event],
    ) -> tuple[SetEndpoint | None, list[Event]]:
        t = self.trying
        assert t is not None
        first = pool[0]
        if t not in pool:
            self.trying = None  # the records changed under us; start over
            return None, events
        if first != t and first not in self.tried and pool.index(t) > 0:
            # A better candidate appeared (e.g. the peer just published its LAN
            # address): switch now, so the device's next handshake goes there.
            self.tried.append(t)
            return self._try(first, now, observed, "better candidate published", events)
        if observed.endpoint == t.text and observed.rx_bytes > self.rx_at_start:
            self.trying, self.confirmed = None, t
            self.tried.clear()
            if t.origin is Origin.RELAY:
                events.append(Event("relayed", f"relayed path via {t.text} after "
                                               f"{now - self.started:.1f}s"))
            else:
                self.wants_relay = False
                events.append(Event("confirmed", f"direct path via {t} after "
                                                  f"{now - self.started:.1f}s"))
            return None, events
        # Through the relay the handshake needs both peers to have sent, and
        # WireGuard retries an initiation only every REKEY_TIMEOUT (5 s).
        window = max(self.try_timeout, RELAY_TRY) if t.origin is Origin.RELAY \
            else self.try_timeout
        if now - self.started < window:
            return None, events
        events.append(Event("failed", f"no reply via {t} in {window:g}s"))
        self.tried.append(t)
        self.trying = None
        rest = [c for c in pool if c not in self.tried]
        if rest:
            return self._try(rest[0], now, observed, "next candidate", events)
        self.tried.clear()
        self.next_round = now + self.retry_after
        if relay is None:
            self.wants_relay = True
        best = relay if relay is not None else pool[0]
        events.append(Event("exhausted", f"no candidate answered; keeping {best}"
                                         f", next round in {self.retry_after:g}s"))
        return self._set_if_differs(best, observed, "best guess", events)

    def _left_relay(self, via: Candidate, how: str, now: float,
                    events: list[Event]) -> list[Event]:
        """A direct path answered while relayed: keep it, and start the backoff over."""
        self.trying = self.fallback = None
        self.confirmed = via
        self.wants_relay = False
        self.direct_wait = 0.0
        self.next_direct = float("-inf")
        events.append(Event("direct", f"direct path via {how} after "
                                      f"{now - self.started:.1f}s, leaving the relay"))
        return events

    def _probing(
        self, now: float, observed: Observed, candidates: Sequence[Candidate],
        relay: Candidate | None, events: list[Event],
    ) -> tuple[SetEndpoint | None, list[Event]]:
        t, back = self.trying, self.fallback
        assert t is not None and back is not None
        if observed.endpoint == t.text and observed.rx_bytes > self.rx_at_start:
            return None, self._left_relay(t, str(t), now, events)
        roamed_back = observed.endpoint == back.text
        elsewhere = observed.endpoint not in (t.text, back.text) and \
            (relay is None or observed.endpoint != relay.text)
        found = _roamed_to(observed) if elsewhere and observed.rx_bytes > self.rx_at_start \
            else None
        if found is not None:
            # The peer's own probe reached us directly and WireGuard roamed to where
            # it came from (our published mapping of the peer may be stale): a
            # direct path all the same.  Going back to the relay would undo it.
            return None, self._left_relay(found, f"{found} (the peer's probe)", now, events)
        if not roamed_back and now - self.started < self.probe_timeout and t in candidates:
            return None, events
        self.trying = self.fallback = None
        self.direct_wait = self.direct_retry_max if self.hopeless else min(
            self.direct_retry_max, max(self.direct_retry_min, self.direct_wait * 2))
        self.next_direct = now + self.direct_wait
        events.append(Event("probe-failed", f"no reply via {t} in {self.probe_timeout:g}s; "
                                            f"next direct try in {self.direct_wait:g}s"))
        target = relay if relay is not None else back
        if roamed_back and target == back:
            return None, events
        return SetEndpoint(target, f"back to {target}", nudge=True), events

    def _try(
        self, c: Candidate, now: float, observed: Observed, why: str, events: list[Event]
    ) -> tuple[SetEndpoint, list[Event]]:
        self.trying, self.started, self.rx_at_start = c, now, observed.rx_bytes
        if c.origin is Origin.RELAY:
            self.relay_tried = c
        return SetEndpoint(c, f"trying {c}: {why}", nudge=True), events

    def _set_if_differs(
        self, c: Candidate, observed: Observed, why: str, events: list[Event]
    ) -> tuple[SetEndpoint | None, list[Event]]:
        if observed.endpoint == c.text:
            return None, events
        return SetEndpoint(c, f"setting {c}: {why}", nudge=False), events
