"""Transfer rates from cumulative counters (pure).

A device reports each peer's bytes received and sent since the device
started; the store keeps those counters.  A rate is the difference of two
consecutive samples over their interval; a counter that went down means the
device restarted, and the new value is what was transferred since.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """A peer's cumulative counters at Unix time ``ts``."""

    ts: float
    rx: int
    tx: int


@dataclass(frozen=True)
class Point:
    ts: float
    rx_rate: float  # bytes a second, received from the peer
    tx_rate: float  # bytes a second, sent to the peer


def rates(samples: list[Sample]) -> list[Point]:
    out: list[Point] = []
    for a, b in zip(samples, samples[1:], strict=False):
        dt = b.ts - a.ts
        if dt <= 0:
            continue
        rx = b.rx - a.rx if b.rx >= a.rx else b.rx
        tx = b.tx - a.tx if b.tx >= a.tx else b.tx
        out.append(Point(b.ts, rx / dt, tx / dt))
    return out


def downsample(points: list[Point], limit: int) -> list[Point]:
    """At most ``limit`` points: consecutive points averaged in equal groups."""
    if limit <= 0 or len(points) <= limit:
        return points
    size = -(-len(points) // limit)
    out = []
    for i in range(0, len(points), size):
        group = points[i:i + size]
        out.append(Point(group[-1].ts, sum(p.rx_rate for p in group) / len(group),
                         sum(p.tx_rate for p in group) / len(group)))
    return out


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def human_ago(seconds: float) -> str:
    """``wg show``'s wording, shortened: '1 minute, 5 seconds ago'."""
    s = int(seconds)
    if s < 1:
        return "now"
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if s >= size:
            n, s = divmod(s, size)
            parts.append(f"{n} {unit}{'s' if n != 1 else ''}")
    return ", ".join(parts[:2]) + " ago"
