"""A device's counters, and the two views operators get of them.

The counters are kept by the core as it works (``DeviceStats``); the I/O
layer adds its own (send errors by errno, UAPI requests).  ``stats_fields``
builds the operator's view from the device's public state alone, so what
operators see is tested in memory; ``stats_line`` is the line ``kill -USR1``
makes wgpyd log, and the UAPI's ``stats=1`` request (wgpy's extension, read
by ``wgpy exporter``) answers the same fields as ``key=value`` lines.
docs/architecture.md has the table of every counter: where it is kept,
what it counts and where it is shown.
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wgpy.protocol.errors import DropReason

if TYPE_CHECKING:
    from wgpy.protocol.device import Device


@dataclass
class DeviceStats:
    """The device's counters (docs/architecture.md has the table of what each
    counts and where it is shown)."""

    drops: Counter[DropReason] = field(default_factory=Counter)
    initiations_sent: int = 0
    initiations_received: int = 0  # valid and accepted: each one answered
    responses_sent: int = 0
    responses_received: int = 0  # valid: each one completes a handshake
    handshakes_completed: int = 0  # as initiator (response) or responder (confirmed)
    cookie_replies_sent: int = 0
    cookie_replies_received: int = 0  # valid: a cookie was stored
    unreachable_sent: int = 0  # packets answered with an ICMP destination unreachable
    under_load_seconds: float = 0.0  # completed periods under load (Device.time_under_load)

    def drop(self, reason: DropReason, n: int = 1) -> None:
        self.drops[reason] += n


def errno_name(code: int) -> str:
    """``ENETUNREACH`` for 101: the symbolic name of an errno, or its number."""
    return errno.errorcode.get(code, str(code))


def stats_fields(
    device: Device, now: float, send_errors: Mapping[int, int] | None = None
) -> list[tuple[str, int]]:
    """The device's state and counters as ``(name, value)`` pairs: drops by
    reason (``drop.REASON``) and UDP send errors by errno (``send_error.ENAME``),
    zero counts of those left out.  Holds no secret."""
    st = device.stats
    fields = [
        ("under_load", int(device.under_load(now))),
        ("under_load_ms", int(device.time_under_load(now) * 1000)),
        ("peers", len(device.peers)),
        ("indices", len(device.indices)),
        ("keypairs", device.keypairs),
        ("staged_packets", device.staged_packets),
        ("ratelimiter", device.ratelimiter_entries),
        ("initiations_sent", st.initiations_sent),
        ("initiations_received", st.initiations_received),
        ("responses_sent", st.responses_sent),
        ("responses_received", st.responses_received),
        ("handshakes_completed", st.handshakes_completed),
        ("cookie_replies_sent", st.cookie_replies_sent),
        ("cookie_replies_received", st.cookie_replies_received),
        ("unreachable_sent", st.unreachable_sent),
    ]
    fields += [(f"drop.{r.name}", n)
               for r, n in sorted(st.drops.items(), key=lambda x: x[0].name) if n]
    if send_errors:
        fields += [(f"send_error.{errno_name(e)}", n)
                   for e, n in sorted(send_errors.items(), key=lambda x: errno_name(x[0])) if n]
    return fields


def stats_line(device: Device, now: float, send_errors: Mapping[int, int] | None = None) -> str:
    """``stats key=value ...``: :func:`stats_fields` on one line (``kill -USR1``)."""
    return "stats " + " ".join(f"{k}={v}" for k, v in stats_fields(device, now, send_errors))
