"""Would the firewall drop a new UDP datagram to a port?  (For ``wgpy doctor``.)

A pure evaluation of ``nft -j list ruleset`` (iptables-nft's rules appear
there too) for one packet: a new UDP datagram, from some address outside
this host, to ``port``, over IPv4 or IPv6.  Every base chain on the input
hook of a matching family is walked in priority order, following jumps and
gotos (bounded), as the kernel would; the packet is dropped if one of them
ends in drop or reject.

A rule matches only if each of its conditions certainly holds for such a
packet: the protocol and destination port (single values, sets, ranges),
connection tracking state ``new``, and an input interface other than
``lo``.  A rule with any other condition (source or destination address,
marks, ...) is taken as not matching, so the answer is about a peer the
rules do not single out.  Counters, logs and other statements are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 16

Json = Any


@dataclass(frozen=True)
class Verdict:
    dropped: bool
    chain: str  # "FAMILY TABLE CHAIN" that decided, or "" when nothing dropped
    by_policy: bool = False


def _values(right: Json) -> list[Json]:
    if isinstance(right, dict) and "set" in right:
        return list(right["set"])
    if isinstance(right, list):
        return right
    return [right]


def _port_in(port: int, right: Json) -> bool:
    for v in _values(right):
        if isinstance(v, int) and v == port:
            return True
        if isinstance(v, dict) and "range" in v:
            lo, hi = v["range"]
            if isinstance(lo, int) and isinstance(hi, int) and lo <= port <= hi:
                return True
    return False


def _match(expr: Mapping[str, Json], port: int, version: int) -> bool | None:
    """True/False for a condition we can decide for our packet; None if unknown."""
    op = expr.get("op", "==")
    left, right = expr.get("left"), expr.get("right")
    if not isinstance(left, dict):
        return None
    result: bool | None = None
    if "payload" in left:
        pl = left["payload"]
        proto, fld = pl.get("protocol"), pl.get("field")
        if fld == "dport" and proto in ("udp", "th"):
            result = _port_in(port, right)
        elif fld == "dport" and proto in ("tcp", "sctp", "dccp"):
            result = False  # a UDP packet has no TCP port
        elif (proto, fld) in (("ip", "protocol"), ("ip6", "nexthdr")):
            if (proto == "ip") != (version == 4):
                result = False
            else:
                result = any(v in ("udp", 17) for v in _values(right))
    elif "meta" in left:
        key = left["meta"].get("key")
        if key == "l4proto":
            result = any(v in ("udp", 17) for v in _values(right))
        elif key == "nfproto":
            result = any(v == f"ipv{version}" for v in _values(right))
        elif key in ("iif", "iifname"):
            result = not any(v == "lo" for v in _values(right))
    elif "ct" in left and left["ct"].get("key") == "state":
        result = any(v == "new" for v in _values(right))
    if result is None:
        return None
    return not result if op == "!=" else result


def _walk(chains: Mapping[tuple[str, str, str], list[list[Json]]], key: tuple[str, str, str],
          port: int, version: int, depth: int) -> str | None:
    """The verdict of one chain for our packet: "accept", "drop" or None (fell off)."""
    if depth > MAX_DEPTH:
        return None
    for exprs in chains.get(key, []):
        for e in exprs:
            if not isinstance(e, dict) or not e:
                continue
            kind, body = next(iter(e.items()))
            if kind == "match":
                if not _match(body, port, version):
                    break  # this rule does not apply: the next one
            elif kind in ("accept", "drop", "reject"):
                return "accept" if kind == "accept" else "drop"
            elif kind in ("jump", "goto"):
                target = (key[0], key[1], body.get("target", ""))
                v = _walk(chains, target, port, version, depth + 1)
                if v is not None or kind == "goto":
                    return v
            # counter, log, limit, ...: statements, not conditions
    return None


def udp_port_verdict(ruleset: Json, port: int, version: int = 4) -> Verdict:
    """Whether a new UDP datagram to ``port`` (IPv``version``) would be dropped."""
    items = ruleset.get("nftables", []) if isinstance(ruleset, dict) else []
    chains: dict[tuple[str, str, str], list[list[Json]]] = {}
    bases: list[tuple[int, tuple[str, str, str], str]] = []
    families = ("inet", "ip" if version == 4 else "ip6")
    for item in items:
        if "chain" in item:
            c = item["chain"]
            key = (c.get("family", ""), c.get("table", ""), c.get("name", ""))
            chains.setdefault(key, [])
            if c.get("hook") == "input" and c.get("type") == "filter" and key[0] in families:
                prio = c.get("prio", 0)
                bases.append((prio if isinstance(prio, int) else 0, key,
                               c.get("policy", "accept")))
        elif "rule" in item:
            r = item["rule"]
            key = (r.get("family", ""), r.get("table", ""), r.get("chain", ""))
            chains.setdefault(key, []).append(list(r.get("expr", [])))
    for _, key, policy in sorted(bases):
        v = _walk(chains, key, port, version, 0)
        name = " ".join(key)
        if v == "drop":
            return Verdict(True, name)
        if v is None and policy == "drop":
            return Verdict(True, name, by_policy=True)
    return Verdict(False, "")


def accept_rule(chain: str, port: int) -> str:
    """The command that lets our datagrams through ``chain`` ("FAMILY TABLE CHAIN")."""
    return f"nft insert rule {chain} udp dport {port} accept"


def families_of(cidrs: Sequence[str]) -> set[int]:
    return {6 if ":" in c else 4 for c in cidrs}
