"""Counters reported by ``wgpy proxy status``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class RuleStats:
    connections: int = 0  # TCP connections carried to an origin
    active: int = 0
    bytes_up: int = 0  # client -> origin
    bytes_down: int = 0  # origin -> client
    origin_failures: int = 0  # failed connects to an origin (another may have worked)
    # the origin accepted, then closed or reset before sending a byte while the
    # client was still talking: the client got an empty reply
    origin_silent_closes: int = 0
    last_origin_problem: str = ""  # the latest of those, with a hint, as logged
    udp_flows: int = 0
    udp_active: int = 0
    udp_datagrams_up: int = 0
    udp_datagrams_down: int = 0
    udp_dropped: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Stats:
    def __init__(self) -> None:
        self.rules: dict[str, RuleStats] = {}
        self.unmatched = RuleStats()  # traffic no rule covers (e.g. after a reload)
        self.reloads = 0
        self.reload_failures = 0
        self.last_reload_error = ""

    def rule(self, name: str) -> RuleStats:
        st = self.rules.get(name)
        if st is None:
            st = self.rules[name] = RuleStats()
        return st
