"""When to send NOTIFY to each secondary, and when to give up (sans-IO).

RFC 1996: after a change the primary sends NOTIFY (opcode 4, the zone's SOA
as the question) to each secondary over UDP and repeats it until the
secondary answers, waiting longer each time.  A secondary that answers with
an error will not change its mind on a retry; one that never answers is
given up on after ``tries``, and its refresh timer takes over.

``NotifySchedule`` holds one ``Target`` per secondary.  The shell asks
``due(now)`` what to send, tells ``sent`` the query id it used, and passes
every answer to ``answered``; ``next_deadline()`` says when to look again.
A newer serial restarts a target's tries.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from wgpy.protocol.events import Endpoint

DEFAULT_TRIES = 6
FIRST_WAIT = 1.0
MAX_WAIT = 16.0


class Outcome(enum.Enum):
    ACKNOWLEDGED = "acknowledged"
    ERROR = "answered with an error"
    STRAY = "not a pending notify"


@dataclass
class Target:
    endpoint: Endpoint
    serial: int | None = None  # the serial being announced; None when nothing is pending
    tries: int = 0
    next_at: float = float("inf")
    query_id: int | None = None
    acked: int | None = None  # the last serial the secondary acknowledged


class NotifySchedule:
    def __init__(self, targets: Sequence[Endpoint], tries: int = DEFAULT_TRIES) -> None:
        self.targets = [Target(ep) for ep in targets]
        self.tries = tries
        self.stats: Counter[str] = Counter()
        self.given_up: list[Target] = []

    def changed(self, serial: int, now: float) -> None:
        """A new version ``serial`` exists: announce it to every secondary now."""
        for t in self.targets:
            t.serial, t.tries, t.next_at, t.query_id = serial, 0, now, None

    def due(self, now: float) -> list[Target]:
        """Targets to send a NOTIFY to now (those given up on are dropped, counted)."""
        out = []
        for t in self.targets:
            if t.serial is None or now < t.next_at:
                continue
            if t.tries >= self.tries:
                self.stats["gave_up"] += 1
                self.given_up.append(Target(t.endpoint, t.serial, t.tries))
                t.serial, t.next_at, t.query_id = None, float("inf"), None
                continue
            out.append(t)
        return out

    def drain_given_up(self) -> list[Target]:
        """Targets given up on since the last call (their serial, for a log line)."""
        out, self.given_up = self.given_up, []
        return out

    def sent(self, target: Target, query_id: int, now: float) -> None:
        target.query_id = query_id
        target.tries += 1
        target.next_at = now + min(MAX_WAIT, FIRST_WAIT * 2 ** (target.tries - 1))
        self.stats["sent"] += 1

    def answered(self, source: Endpoint, query_id: int, ok: bool) -> Outcome:
        """An answer from ``source`` to the NOTIFY with ``query_id``."""
        for t in self.targets:
            if t.endpoint == source and t.query_id == query_id and t.serial is not None:
                if ok:
                    t.acked = t.serial
                    self.stats["acknowledged"] += 1
                else:
                    self.stats["errors"] += 1
                t.serial, t.next_at, t.query_id = None, float("inf"), None
                return Outcome.ACKNOWLEDGED if ok else Outcome.ERROR
        self.stats["stray"] += 1
        return Outcome.STRAY

    def next_deadline(self) -> float:
        return min((t.next_at for t in self.targets if t.serial is not None),
                   default=float("inf"))
