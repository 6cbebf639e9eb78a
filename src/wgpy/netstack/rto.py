"""The retransmission timer's value, RFC 6298.

SRTT and RTTVAR from RTT samples (2.2, 2.3, with alpha 1/8 and beta 1/4),
RTO = SRTT + max(G, 4 RTTVAR) bounded below and above (2.4, 2.5), doubled
on each expiry (5.5) and kept doubled until a new sample.  Samples come
only from segments that were not retransmitted (Karn's algorithm, 3): the
connection times one segment at a time and forgets it when it retransmits.

The lower bound is Linux's 200 ms, not the RFC's 1 s (2.4 allows a smaller
one): a tunnel's round trips are those of a LAN or the Internet, and a
second of silence after each tail loss would be what users notice.
"""

from __future__ import annotations

from typing import Final

INITIAL_RTO: Final = 1.0  # 2.1
MIN_RTO: Final = 0.2
MAX_RTO: Final = 60.0  # 2.5: "a maximum value MAY be placed ... at least 60 seconds"
CLOCK_GRANULARITY: Final = 0.001  # G


class RttEstimator:
    """SRTT/RTTVAR and the current RTO (with its backoff)."""

    __slots__ = ("srtt", "rttvar", "rto", "backoff", "min_rto", "max_rto")

    def __init__(self, min_rto: float = MIN_RTO, max_rto: float = MAX_RTO,
                 initial: float = INITIAL_RTO) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.rto = initial
        self.backoff = 0

    def sample(self, rtt: float) -> None:
        """Take a measured round trip (of a segment sent once) into account."""
        rtt = max(rtt, 0.0)
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.backoff = 0
        self.rto = min(self.max_rto, max(self.min_rto,
                                         self.srtt + max(CLOCK_GRANULARITY, 4 * self.rttvar)))

    def expired(self) -> None:
        """The timer went off: back off (5.5)."""
        self.backoff += 1
        self.rto = min(self.max_rto, self.rto * 2)
