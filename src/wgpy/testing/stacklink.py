"""Two ``wgpy.netstack`` stacks joined by an in-memory link, with a fake clock.

The link can lose, delay (with jitter, which reorders), duplicate and
corrupt packets, drawing from a seeded generator, so a run is reproducible
and a hypothesis failure replays.  ``run_until`` moves the clock from event
to event (the next arrival, the next stack deadline), so a transfer that
takes minutes of simulated retransmission timeouts runs in milliseconds,
and every run is bounded in steps and in simulated time.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass

from wgpy.netstack import Stack, TcpConfig

A_ADDR4, B_ADDR4 = "10.66.0.1", "10.66.0.2"
A_ADDR6, B_ADDR6 = "fd00:66::1", "fd00:66::2"


@dataclass
class LinkParams:
    loss: float = 0.0  # probability a packet is lost
    delay: float = 0.005  # one-way, seconds
    jitter: float = 0.0  # added uniformly in [0, jitter): reorders packets
    duplicate: float = 0.0
    corrupt: float = 0.0  # probability one byte of a packet is flipped
    batch: int = 64  # packets handed to ``receive`` at once (arrivals at one instant)
    rate: float = 0.0  # bytes/s each way through a bottleneck; 0: unlimited
    queue: float = 0.05  # seconds of packets the bottleneck holds before it drops (tail drop)


class LinkError(AssertionError):
    pass


class StackLink:
    """Stacks ``a`` and ``b`` and the packets in flight between them."""

    def __init__(self, seed: int = 1, params: LinkParams | None = None, mtu: int = 1420,
                 config: TcpConfig | None = None, verify_checksums: bool = True) -> None:
        self.params = params or LinkParams()
        self.random = random.Random(seed)
        ra = random.Random(seed * 2 + 1)
        rb = random.Random(seed * 2 + 2)
        self.now = 1000.0
        self.a = Stack([A_ADDR4, A_ADDR6], mtu, ra.randbytes, config, verify_checksums)
        self.b = Stack([B_ADDR4, B_ADDR6], mtu, rb.randbytes, config, verify_checksums)
        self._flight: list[tuple[float, int, int, bytes]] = []  # (arrival, seq, to b?, packet)
        self._seq = 0
        self.sent = 0
        self.lost = 0
        self._free = [self.now, self.now]  # when each direction's bottleneck is idle (to a, to b)
        # Observers: called with (sender is a, packet) for every packet sent.
        self.taps: list[Callable[[bool, bytes], None]] = []

    def pump(self) -> None:
        """Put what both stacks want sent on the wire."""
        p = self.params
        for from_a, stack in ((True, self.a), (False, self.b)):
            for pkt in stack.take_output():
                data = bytes(pkt)
                self.sent += 1
                for tap in self.taps:
                    tap(from_a, data)
                if self.random.random() < p.loss:
                    self.lost += 1
                    continue
                copies = 2 if self.random.random() < p.duplicate else 1
                for _ in range(copies):
                    if self.random.random() < p.corrupt and data:
                        i = self.random.randrange(len(data))
                        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
                    sent_at = self.now
                    if p.rate:
                        d = 1 if from_a else 0
                        start = max(self.now, self._free[d])
                        if start - self.now > p.queue:
                            self.lost += 1  # the bottleneck's queue is full
                            continue
                        sent_at = self._free[d] = start + len(data) / p.rate
                    when = sent_at + p.delay + self.random.random() * p.jitter
                    self._seq += 1
                    heapq.heappush(self._flight, (when, self._seq, 1 if from_a else 0, data))

    def step(self) -> bool:
        """Advance to the next event and run it; False when nothing is left to do."""
        self.pump()
        times = [t for t in (self.a.next_deadline(), self.b.next_deadline()) if t is not None]
        if self._flight:
            times.append(self._flight[0][0])
        if not times:
            return False
        self.now = max(self.now, min(times))
        arrivals: dict[int, list[bytes]] = {0: [], 1: []}
        while self._flight and self._flight[0][0] <= self.now:
            _, _, to_b, data = heapq.heappop(self._flight)
            arrivals[to_b].append(data)
        for to_b, packets in arrivals.items():
            stack = self.b if to_b else self.a
            for i in range(0, len(packets), self.params.batch):
                stack.receive(packets[i : i + self.params.batch], self.now)
        self.a.tick(self.now)
        self.b.tick(self.now)
        self.pump()
        return True

    def run_until(self, done: Callable[[], bool], max_time: float = 600.0,
                  max_steps: int = 2_000_000) -> None:
        """Step until ``done()``; :raises LinkError: when it does not come within
        ``max_time`` simulated seconds or ``max_steps`` steps, or nothing is left."""
        end = self.now + max_time
        for _ in range(max_steps):
            if done():
                return
            if self.now > end:
                raise LinkError(f"not done after {max_time} simulated seconds")
            if not self.step():
                if done():
                    return
                raise LinkError("the link went quiet before it was done")
        raise LinkError(f"not done after {max_steps} steps")
