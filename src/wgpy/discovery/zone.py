"""Zone versions, SOA serials and zone transfers (AXFR, IXFR) (sans-IO).

Theory of operation.  The registry's data changes whenever a peer's
endpoint does, which behind NATs may be often.  Secondaries (a BIND 9
``type secondary`` zone, say) learn of a change by NOTIFY and fetch it by
IXFR or AXFR.  So that they are not made to transfer at the rhythm of every
roaming keepalive, a ``Journal`` records a new *version* (a new serial, the
zone's records at that moment) at most once per ``min_interval`` seconds:
changes in between are folded into the next version.

Serials start at the Unix time the registry started and go up by one per
version.  With ``min_interval`` of at least a second there are never more
versions than seconds, so a restarted registry starts above every serial
it served before and its secondaries follow it.

The journal keeps the last ``keep`` versions.  An IXFR from one of them gets
the difference in one step (RFC 1995 section 4 allows a server to condense
the versions in between); from anything older, the whole zone, as RFC 1995
says; from the current serial, the SOA alone.

Answers for ordinary queries are built from the live data, not from the
journal: only transfers and the SOA serial follow versions.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.serial

RR = tuple[dns.name.Name, dns.rdata.Rdata]
DEFAULT_KEEP = 64
MESSAGE_BUDGET = 60000  # bytes of records per transfer message, below 64 KB with room for TSIG


@dataclass(frozen=True)
class Version:
    serial: int
    records: frozenset[RR]


def next_serial(serial: int) -> int:
    """RFC 1982 increment, skipping 0 (some secondaries read 0 as "no zone")."""
    n = (serial + 1) % 2**32
    return n or 1


class Journal:
    """The serial and the recent versions of one zone.

    :param serial: the first serial (the shell passes the Unix time).
    :param min_interval: seconds between two versions, at least 1.
    """

    def __init__(self, serial: int, min_interval: float = 2.0, keep: int = DEFAULT_KEEP) -> None:
        if min_interval < 1.0:
            raise ValueError("versions must be at least a second apart")
        self.serial = serial % 2**32 or 1
        self.min_interval = min_interval
        self.versions: deque[Version] = deque(maxlen=max(1, keep))
        self.digest = b""
        self.last_version_at = float("-inf")
        self.pending = False  # the data changed, the version waits for min_interval

    def changed(self, digest: bytes, now: float) -> bool:
        """Whether a new version should be recorded now for data with ``digest``."""
        if digest == self.digest:
            self.pending = False
            return False
        if not self.versions:
            return True  # the first version keeps the initial serial
        if now - self.last_version_at < self.min_interval:
            self.pending = True
            return False
        return True

    def record(self, digest: bytes, records: frozenset[RR], now: float) -> int:
        """Record a version of the zone; returns its serial."""
        if self.versions:
            self.serial = next_serial(self.serial)
        self.versions.append(Version(self.serial, records))
        self.digest = digest
        self.last_version_at = now
        self.pending = False
        return self.serial

    @property
    def current(self) -> Version | None:
        return self.versions[-1] if self.versions else None

    def up_to_date(self, serial: int) -> bool:
        return bool(dns.serial.Serial(serial) >= dns.serial.Serial(self.serial))

    def difference(self, serial: int) -> tuple[list[RR], list[RR]] | None:
        """(deleted, added) since version ``serial``; None when it is not kept."""
        cur = self.current
        if cur is None:
            return None
        for v in self.versions:
            if v.serial == serial:
                return sorted_rrs(v.records - cur.records), sorted_rrs(cur.records - v.records)
        return None


def sorted_rrs(rrs: Iterable[RR]) -> list[RR]:
    return sorted(rrs, key=lambda rr: (rr[0], rr[1].rdtype, rr[1].to_digestable()))


def to_rrsets(rrs: Iterable[RR], ttl: int) -> list[dns.rrset.RRset]:
    """Group records by owner and type, keeping their order of first appearance."""
    out: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], dns.rrset.RRset] = {}
    for name, rd in rrs:
        key = (name, rd.rdtype)
        rrset = out.get(key)
        if rrset is None:
            rrset = out[key] = dns.rrset.RRset(name, dns.rdataclass.IN, rd.rdtype)
        rrset.add(rd, ttl)
    return list(out.values())


def records_of(rrsets: Iterable[dns.rrset.RRset]) -> frozenset[RR]:
    return frozenset((rrset.name, rd) for rrset in rrsets for rd in rrset)


def axfr_answer(soa: dns.rrset.RRset, rrsets: Sequence[dns.rrset.RRset]) -> list[dns.rrset.RRset]:
    """The answer records of a full transfer: SOA, the zone, SOA (RFC 5936 2.2)."""
    return [soa, *rrsets, soa]


def ixfr_answer(
    soa: dns.rrset.RRset, old_soa: dns.rrset.RRset, deleted: Sequence[dns.rrset.RRset],
    added: Sequence[dns.rrset.RRset],
) -> list[dns.rrset.RRset]:
    """One condensed IXFR difference (RFC 1995 section 4)."""
    return [soa, old_soa, *deleted, soa, *added, soa]


def split_messages(answer: Sequence[dns.rrset.RRset]) -> list[list[dns.rrset.RRset]]:
    """Cut a transfer's answer into groups that fit a TCP message each; an RRset
    too large for one message is cut too (RFC 5936 allows it)."""
    groups: list[list[dns.rrset.RRset]] = [[]]
    size = 0
    for rrset in answer:
        for part, n in _parts(rrset):
            if groups[-1] and size + n > MESSAGE_BUDGET:
                groups.append([])
                size = 0
            groups[-1].append(part)
            size += n
    return groups


def _parts(rrset: dns.rrset.RRset) -> list[tuple[dns.rrset.RRset, int]]:
    """The RRset in pieces of at most MESSAGE_BUDGET bytes each, with their sizes
    (uncompressed: an upper bound of what they take in a message)."""
    out: list[tuple[dns.rrset.RRset, int]] = []
    part = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype)
    size = 0
    for rd in rrset:
        one = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype)
        one.add(rd, rrset.ttl)
        buf = io.BytesIO()
        one.to_wire(buf)
        n = len(buf.getvalue())
        if len(part) and size + n > MESSAGE_BUDGET:
            out.append((part, size))
            part = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype)
            size = 0
        part.add(rd, rrset.ttl)
        size += n
    out.append((part, size))
    return out


def render_stream(
    query: dns.message.Message, groups: Sequence[Sequence[dns.rrset.RRset]]
) -> list[bytes]:
    """The wire messages of a transfer, signed as one TSIG stream when the
    query was signed (RFC 8945 5.3.1: every message, each MAC chained to the
    previous one)."""
    wires: list[bytes] = []
    ctx = None
    multi = len(groups) > 1
    for i, group in enumerate(groups):
        msg = dns.message.make_response(query)
        msg.flags |= dns.flags.AA
        if i:
            msg.question = []
        msg.answer = list(group)
        wires.append(msg.to_wire(multi=multi, tsig_ctx=ctx))
        ctx = msg.tsig_ctx
    return wires
