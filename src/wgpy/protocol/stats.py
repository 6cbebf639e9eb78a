"""A device's counters, and the line ``kill -USR1`` makes wgpyd log.

The counters are kept by the core as it works (``DeviceStats``); the I/O
layer adds its own (send errors by errno).  ``stats_line`` builds the
operator's one-line view from the device's public state alone, so what
operators see is tested in memory.  docs/architecture.md has the table of
every counter: where it is kept, what it counts and where it is shown.
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

    def drop(self, reason: DropReason, n: int = 1) -> None:
        self.drops[reason] += n


def errno_name(code: int) -> str:
    """``ENETUNREACH`` for 101: the symbolic name of an errno, or its number."""
    return errno.errorcode.get(code, str(code))


def stats_line(device: Device, now: float, send_errors: Mapping[int, int] | None = None) -> str:
    """``stats key=value ...``: the device's state and counters, drops by reason
    (``drop.REASON``) and UDP send errors by errno (``send_error.ENAME``),
    zero counts of drops and errors left out.  Holds no secret."""
    st = device.stats
    fields = [
        f"under_load={int(device.under_load(now))}",
        f"peers={len(device.peers)}",
        f"indices={len(device.indices)}",
        f"ratelimiter={device.ratelimiter_entries}",
        f"initiations_sent={st.initiations_sent}",
        f"initiations_received={st.initiations_received}",
        f"responses_sent={st.responses_sent}",
        f"responses_received={st.responses_received}",
        f"handshakes_completed={st.handshakes_completed}",
        f"cookie_replies_sent={st.cookie_replies_sent}",
        f"cookie_replies_received={st.cookie_replies_received}",
        f"unreachable_sent={st.unreachable_sent}",
    ]
    fields += [f"drop.{r.name}={n}" for r, n in sorted(st.drops.items(), key=lambda x: x[0].name)
               if n]
    if send_errors:
        fields += [f"send_error.{errno_name(e)}={n}"
                   for e, n in sorted(send_errors.items(), key=lambda x: errno_name(x[0])) if n]
    return "stats " + " ".join(fields)
