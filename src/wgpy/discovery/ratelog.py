"""Rate limits for what remote input can make a server do: answer, or log (sans-IO).

Bad input arrives at whatever rate an attacker likes.  Two things must not
follow it: the answers (a refusal is still a datagram sent, and a flood of
spoofed queries would make the registry a reflector) and the log (a line per
bad datagram fills disks and hides everything else).

* ``Budget`` is a token bucket per category: ``allow(category, now)`` says
  whether this refusal may still be answered; past the budget the input is
  dropped silently (and counted by the caller).
* ``LogLimiter`` lets one line per category through per ``window`` seconds;
  the next line that gets through says how many were held back.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_WINDOW = 10.0


@dataclass
class _Bucket:
    tokens: float
    at: float


class Budget:
    """``rate`` answers per second per category, bursts of up to ``burst``."""

    def __init__(self, rate: float = 20.0, burst: float = 20.0) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, category: str, now: float) -> bool:
        b = self._buckets.get(category)
        if b is None:
            b = self._buckets[category] = _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + max(0.0, now - b.at) * self.rate)
        b.at = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True
        return False


class LogLimiter:
    """At most one line per category per ``window`` seconds."""

    def __init__(self, window: float = DEFAULT_WINDOW) -> None:
        self.window = window
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def line(self, category: str, message: str, now: float) -> str | None:
        """The line to log now for ``message``, or None when it is held back."""
        last = self._last.get(category)
        if last is not None and now - last < self.window:
            self._held[category] = self._held.get(category, 0) + 1
            return None
        self._last[category] = now
        held = self._held.pop(category, 0)
        if held:
            return f"{message} (and {held} more like it in the last {self.window:g}s)"
        return message
