"""Connection admission: a global limit, per-rule and per-source limits, and
an optional per-source rate of new connections (a token bucket).

Sans-IO: the caller passes ``now`` (monotonic seconds) and must call
:meth:`Limiter.release` exactly once for every successful :meth:`acquire`.
"""

from __future__ import annotations

from dataclasses import dataclass

REFUSED_GLOBAL = "global-limit"
REFUSED_RULE = "rule-limit"
REFUSED_SOURCE = "source-limit"
REFUSED_RATE = "source-rate"
_MAX_BUCKETS = 65536  # prune idle buckets above this many


@dataclass
class _Bucket:
    tokens: float
    last: float


class Limiter:
    """Counts live connections (or UDP flows) and decides admission."""

    def __init__(self, global_max: int) -> None:
        self.global_max = global_max
        self.total = 0
        self._per_rule: dict[str, int] = {}
        self._per_source: dict[tuple[str, str], int] = {}
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def acquire(
        self,
        rule: str,
        src: str,
        now: float,
        *,
        rule_max: int = 0,
        source_max: int = 0,
        rate: float = 0.0,
    ) -> str | None:
        """Take a slot; return ``None`` on success or the refusal reason.

        :param rule: the rule's name (limits are per rule and per source in it).
        :param src: the client address as text.
        :param now: monotonic seconds, for the rate bucket.
        :param rule_max: the rule's own concurrent limit, 0 for none.
        :param source_max: concurrent connections allowed per source, 0 for none.
        :param rate: new connections per second per source, 0 for unlimited.
        """
        key = (rule, src)
        if self.total >= self.global_max:
            return REFUSED_GLOBAL
        if rule_max and self._per_rule.get(rule, 0) >= rule_max:
            return REFUSED_RULE
        if source_max and self._per_source.get(key, 0) >= source_max:
            return REFUSED_SOURCE
        if rate > 0 and not self._take_token(key, now, rate):
            return REFUSED_RATE
        self.total += 1
        self._per_rule[rule] = self._per_rule.get(rule, 0) + 1
        self._per_source[key] = self._per_source.get(key, 0) + 1
        return None

    def release(self, rule: str, src: str) -> None:
        """Give back a slot taken by a successful :meth:`acquire`."""
        key = (rule, src)
        n = self._per_source.get(key, 0)
        if n <= 0:
            raise RuntimeError(f"release without acquire for {key}")
        self.total -= 1
        if n == 1:
            del self._per_source[key]
        else:
            self._per_source[key] = n - 1
        r = self._per_rule[rule] - 1
        if r:
            self._per_rule[rule] = r
        else:
            del self._per_rule[rule]

    def active(self, rule: str | None = None, src: str | None = None) -> int:
        if rule is None:
            return self.total
        if src is None:
            return self._per_rule.get(rule, 0)
        return self._per_source.get((rule, src), 0)

    def _take_token(self, key: tuple[str, str], now: float, rate: float) -> bool:
        burst = max(1.0, rate)
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._prune(now, rate)
            b = self._buckets[key] = _Bucket(burst, now)
        b.tokens = min(burst, b.tokens + max(0.0, now - b.last) * rate)
        b.last = now
        if b.tokens < 1.0:
            return False
        b.tokens -= 1.0
        return True

    def _prune(self, now: float, rate: float) -> None:
        # A bucket that would be full again carries no information.
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.last) * rate >= rate]
        for k in full:
            del self._buckets[k]
