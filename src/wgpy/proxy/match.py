"""Rule matching, allow/deny lists and origin choice (sans-IO).

For a new connection or UDP flow the server asks, in order:

1. :meth:`Router.match` — the first rule (file order) whose protocol, prefix
   and port cover the original destination;
2. :meth:`Router.admit` — the rule's Deny list wins, then a non-empty Allow
   list must contain the client;
3. :meth:`Router.candidates` — origins to try, round-robin, healthy ones
   first.  Every address returned comes from the configuration: the only
   thing taken from the client is the port, and only for "same port" origins.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from wgpy.control.endpoint import Endpoint

from .config import IPAddress, Origin, ProxyConfig, Rule
from .health import HealthBook, Target

REFUSED_NO_RULE = "no-rule"
REFUSED_DENY = "denied"
REFUSED_NOT_ALLOWED = "not-allowed"


def health_target(rule: Rule, origin: Origin) -> Target | None:
    """What to probe for ``origin`` in ``rule``, or None when it is not probed."""
    if not rule.health_check:
        return None
    port = origin.port if origin.port is not None else rule.health_port
    return (str(origin.host), port) if port is not None else None


def health_targets(cfg: ProxyConfig) -> list[Target]:
    out: list[Target] = []
    for r in cfg.rules:
        if "tcp" not in r.protocols:
            continue  # a TCP connect says nothing about a UDP-only service
        for o in (*r.origins, *(o for _, os_ in r.table for o in os_)):
            t = health_target(r, o)
            if t is not None and t not in out:
                out.append(t)
    return out


# An origin as candidates() needs it: its address as text, its port (None:
# the port the client dialled) and what health checks probe (None: nothing).
_Entry = tuple[str, int | None, Target | None]


def _entries(rule: Rule, origins: Sequence[Origin]) -> list[_Entry]:
    return [(str(o.host), o.port, health_target(rule, o)) for o in origins]


class Router:
    def __init__(self, cfg: ProxyConfig, health: HealthBook) -> None:
        self.cfg = cfg
        self.health = health
        self._rr: dict[tuple[str, str], int] = {}
        self._tables = {r.name: {str(a): os_ for a, os_ in r.table} for r in cfg.rules}
        # per rule, computed once: (entries of Origin, {address: entries of its Map line})
        self._entries = {r.name: (_entries(r, r.origins),
                                  {str(a): _entries(r, os_) for a, os_ in r.table})
                         for r in cfg.rules}  # fmt: skip

    def match(self, protocol: str, dst: IPAddress, port: int) -> Rule | None:
        """The first rule publishing ``dst:port`` over ``protocol``."""
        for r in self.cfg.rules:
            if protocol not in r.protocols:
                continue
            if not any(dst in p for p in r.prefixes):
                continue
            if any(lo <= port <= hi for lo, hi in r.ports):
                return r
        return None

    @staticmethod
    def admit(rule: Rule, src: IPAddress) -> str | None:
        """``None`` if ``src`` may use ``rule``, else the refusal reason."""
        if any(src in n for n in rule.deny):
            return REFUSED_DENY
        if rule.allow and not any(src in n for n in rule.allow):
            return REFUSED_NOT_ALLOWED
        return None

    def origins_for(self, rule: Rule, dst: IPAddress) -> Sequence[Origin]:
        return self._tables[rule.name].get(str(dst), rule.origins)

    def candidates(self, rule: Rule, dst: IPAddress, port: int) -> list[Endpoint]:
        """Origins to try for ``dst:port``: rotated round-robin, healthy first.

        Down origins stay at the end as a last resort, so a rule whose
        origins are all marked down still tries rather than refusing.
        """
        default, table = self._entries[rule.name]
        origins, where = default, ""
        if table:
            where = str(dst)
            if where in table:
                origins = table[where]
            else:
                where = ""
        if not origins:
            return []
        key = (rule.name, where)
        start = self._rr.get(key, 0) % len(origins)
        self._rr[key] = start + 1
        up: list[Endpoint] = []
        down: list[Endpoint] = []
        is_up = self.health.is_up
        for host, oport, t in origins[start:] + origins[:start]:
            (up if t is None or is_up(t) else down).append(
                (host, oport if oport is not None else port))
        return up + down


def parse_ip(text: str) -> IPAddress:
    """An address as the kernel reports it (strips a v6 scope id)."""
    if ":" not in text:
        # inet_pton (a pure conversion, no I/O) is several times quicker
        # than ipaddress's own parser, and this runs for every connection.
        try:
            return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
        except OSError:
            pass  # not a dotted quad: ipaddress explains why below
    return ipaddress.ip_address(text.split("%", 1)[0])
