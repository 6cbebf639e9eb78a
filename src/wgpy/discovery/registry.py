"""The authoritative registry: DNS queries and UPDATEs in, responses out (sans-IO).

Theory of operation: the server shell reads the device's peer table (a
``Snapshot``) and hands each datagram to ``Registry.handle_wire`` with the
``Source`` it came from and the current monotonic time.  The registry keeps
only what the device cannot tell it: LAN candidates that peers published by
DNS UPDATE, each with a lease that ``now`` expires.

Answers follow RFC 1034/2308: a name that exists without the asked type is
NODATA (NOERROR, empty answer, SOA in authority); a name that does not exist
is NXDOMAIN with the SOA; names outside the zone are REFUSED.  Per-peer names
exist only while the peer has an endpoint (as in wgsd).

Trust: an UPDATE may only change the LAN records of one key, must arrive
through the WireGuard interface (``Source.via_tunnel``, which the shell
derives from the arrival interface) and its source address must route to
that same key by longest-prefix match over the allowed IPs, exactly as
WireGuard's cryptokey routing authenticated it.  Garbage never raises: it is
answered FORMERR when the header can be read, and dropped otherwise.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.rrset
import dns.update

from wgpy.control.endpoint import format_endpoint
from wgpy.control.keys import Key
from wgpy.discovery import records
from wgpy.discovery.records import IPAddress, IPNetwork, Kind, Names, NatKind
from wgpy.protocol.events import Endpoint

DEFAULT_TTL = 5
DEFAULT_LEASE = 600.0
MAX_LAN_ADDRESSES = 8
UDP_DEFAULT_PAYLOAD = 512
UDP_MAX_PAYLOAD = 4096
TCP_MAX = 65535

RRMap = dict[dns.rdatatype.RdataType, list[dns.rdata.Rdata]]


@dataclass(frozen=True)
class PeerView:
    """What the registry needs to know about one peer of the device."""

    public_key: bytes
    endpoint: Endpoint | None  # canonical numeric text (records.canonical_endpoint)
    allowed_ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    """The device's peers at one moment, plus the registry itself when ``--self``."""

    peers: Sequence[PeerView]
    self_peer: PeerView | None = None


@dataclass(frozen=True)
class Source:
    """Where a message came from.

    :param via_tunnel: the message arrived on the WireGuard interface, so its
        source address was authenticated by WireGuard.
    """

    ip: IPAddress
    port: int
    via_tunnel: bool = False
    transport: str = "udp"


@dataclass(frozen=True)
class LanCandidates:
    port: int | None
    addresses: tuple[IPAddress, ...]
    nat: NatKind | None
    expires: float

    @property
    def publishable(self) -> bool:
        return self.port is not None and bool(self.addresses)


class UpdateRefused(Exception):
    """An UPDATE that is well-formed but not allowed; carries the rcode to send."""

    def __init__(self, rcode: dns.rcode.Rcode, reason: str) -> None:
        super().__init__(reason)
        self.rcode = rcode
        self.reason = reason


def _network(cidr: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None


def route_owner(ip: IPAddress, peers: Iterable[PeerView]) -> PeerView | None:
    """The peer whose allowed IPs hold ``ip`` by longest-prefix match, or None."""
    best: tuple[int, PeerView] | None = None
    for peer in peers:
        for cidr in peer.allowed_ips:
            net = _network(cidr)
            if net is None or net.version != ip.version or ip not in net:
                continue
            if best is None or net.prefixlen > best[0]:
                best = (net.prefixlen, peer)
    return best[1] if best else None


# Query types counted by name in ``stats`` (``qtype.A``); any other is
# ``qtype.other``, so a scan of all 65,536 types adds one counter, not 65,536.
COUNTED_QTYPES = frozenset({"A", "AAAA", "SRV", "TXT", "PTR", "SOA", "NS", "ANY", "AXFR", "IXFR"})


class Registry:
    """Answers queries for one zone from a device snapshot; stores LAN candidates.

    :param names: the zone's ``Names``.
    :param ttl: TTL of the published records and the negative-caching TTL.
    :param ns_addresses: addresses of the name server host (NS target), if known.
    :param lease: seconds an accepted LAN-candidate UPDATE stays valid.
    """

    def __init__(
        self,
        names: Names,
        ttl: int = DEFAULT_TTL,
        ns_addresses: Sequence[IPAddress] = (),
        lease: float = DEFAULT_LEASE,
    ) -> None:
        if not 0 <= ttl <= 2**31 - 1:
            raise ValueError("ttl out of range")
        self.names = names
        self.ttl = ttl
        self.ns_addresses = tuple(ns_addresses)
        self.lease = lease
        self.lan: dict[bytes, LanCandidates] = {}
        self.stats: Counter[str] = Counter()
        self._serial = 1
        self._digest = b""
        self.last_refusal = ""  # why the last UPDATE was refused, for the shell's log
        self.last_accepted: tuple[bytes, LanCandidates] | None = None

    # -- entry point --------------------------------------------------------

    def handle_wire(
        self, wire: bytes, source: Source, snapshot: Snapshot, now: float
    ) -> bytes | None:
        """Process one wire message; return the response bytes, or None to drop.

        :param now: monotonic seconds, for LAN-candidate leases.
        """
        self.stats["messages"] += 1
        try:
            query = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError, UnicodeError, struct.error):
            return self._formerr_from_header(wire)
        if query.flags & dns.flags.QR:
            self.stats["dropped"] += 1
            return None  # a response: never answer one (no loops)
        response = self.respond(query, source, snapshot, now)
        self.stats[f"rcode.{dns.rcode.to_text(response.rcode())}"] += 1
        return self._to_wire(response, self._max_size(query, source))

    def respond(
        self, query: dns.message.Message, source: Source, snapshot: Snapshot, now: float
    ) -> dns.message.Message:
        """The response to a parsed query or UPDATE."""
        self._expire(snapshot, now)
        opcode = query.opcode()
        if opcode == dns.opcode.UPDATE and isinstance(query, dns.update.UpdateMessage):
            return self._update(query, source, snapshot, now)
        response = dns.message.make_response(query)
        if opcode != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)
            return response
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        self.stats["queries"] += 1
        qtype = dns.rdatatype.to_text(query.question[0].rdtype)
        self.stats[f"qtype.{qtype if qtype in COUNTED_QTYPES else 'other'}"] += 1
        self._answer(query.question[0], response, source, snapshot)
        return response

    # -- queries ------------------------------------------------------------

    def _answer(
        self,
        question: dns.rrset.RRset,
        response: dns.message.Message,
        source: Source,
        snapshot: Snapshot,
    ) -> None:
        qname, qtype = question.name, question.rdtype
        if question.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
            response.set_rcode(dns.rcode.REFUSED)
            return
        kind, key = self.names.classify(qname)
        if kind is Kind.OUTSIDE:
            response.set_rcode(dns.rcode.REFUSED)
            return
        response.flags |= dns.flags.AA
        if qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            response.set_rcode(dns.rcode.REFUSED)
            return
        rrs = self._records_at(kind, key, source, snapshot)
        if rrs is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            self._add_soa(response, snapshot)
            return
        types = list(rrs) if qtype == dns.rdatatype.ANY else [qtype] if qtype in rrs else []
        if not types:
            self._add_soa(response, snapshot)  # NODATA
            return
        ttl = 0 if kind is Kind.WHOAMI else self.ttl
        for t in types:
            self._add(response.answer, qname, t, rrs[t], ttl if t != dns.rdatatype.SOA else None)
        self._add_additional(response, types, rrs, source, snapshot)

    def _add_additional(
        self,
        response: dns.message.Message,
        types: list[dns.rdatatype.RdataType],
        rrs: RRMap,
        source: Source,
        snapshot: Snapshot,
    ) -> None:
        targets: list[dns.name.Name] = []
        if dns.rdatatype.SRV in types:
            targets += [r.target for r in rrs[dns.rdatatype.SRV]]  # type: ignore[attr-defined]
            owner = response.question[0].name
            targets.append(owner)  # the instance's TXT (RFC 6763 section 12.2)
        if dns.rdatatype.PTR in types:
            for r in rrs[dns.rdatatype.PTR]:
                target = r.target  # type: ignore[attr-defined]
                targets.append(target)
                kind, key = self.names.classify(target)
                inst = self._records_at(kind, key, source, snapshot) or {}
                targets += [s.target for s in inst.get(dns.rdatatype.SRV, [])]  # type: ignore[attr-defined]
        if dns.rdatatype.NS in types:
            targets.append(self.names.ns_host)
        seen: set[tuple[dns.name.Name, dns.rdatatype.RdataType]] = set()
        for name in targets:
            kind, key = self.names.classify(name)
            at = self._records_at(kind, key, source, snapshot) or {}
            for t in (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.SRV, dns.rdatatype.TXT):
                if t in at and (name, t) not in seen and not _in(response.answer, name, t):
                    seen.add((name, t))
                    self._add(response.additional, name, t, at[t], self.ttl)

    def _add(
        self,
        section: list[dns.rrset.RRset],
        name: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        rdatas: list[dns.rdata.Rdata],
        ttl: int | None,
    ) -> None:
        rrset = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
        for r in rdatas:
            rrset.add(r, ttl if ttl is not None else self.ttl)
        section.append(rrset)

    def _add_soa(self, response: dns.message.Message, snapshot: Snapshot) -> None:
        self._add(response.authority, self.names.zone, dns.rdatatype.SOA, [self._soa(snapshot)],
                  self.ttl)

    def _soa(self, snapshot: Snapshot) -> dns.rdata.Rdata:
        digest = self._content_digest(snapshot)
        if digest != self._digest:
            if self._digest:
                self._serial = (self._serial % 0xFFFFFFFF) + 1
            self._digest = digest
        rname = dns.name.Name(("hostmaster",)).concatenate(self.names.zone)
        return dns.rdtypes.ANY.SOA.SOA(  # type: ignore[no-untyped-call]
            dns.rdataclass.IN, dns.rdatatype.SOA, self.names.ns_host, rname,
            self._serial, 3600, 600, 86400, self.ttl,
        )

    def _content_digest(self, snapshot: Snapshot) -> bytes:
        h = hashlib.blake2s(digest_size=16)
        for p in self._published(snapshot).values():
            ep = format_endpoint(*p.endpoint) if p.endpoint else ""
            h.update(p.public_key + ep.encode() + ",".join(p.allowed_ips).encode())
        for key in sorted(self.lan):
            c = self.lan[key]
            h.update(key + repr((c.port, c.addresses, c.nat)).encode())
        return h.digest()

    def _published(self, snapshot: Snapshot) -> dict[bytes, PeerView]:
        peers = list(snapshot.peers)
        if snapshot.self_peer is not None:
            peers.append(snapshot.self_peer)
        return {p.public_key: p for p in peers if p.endpoint is not None}

    def _records_at(
        self, kind: Kind, key: bytes | None, source: Source, snapshot: Snapshot
    ) -> RRMap | None:
        """The records a name holds, ``{}`` for an empty non-terminal, None if it does not exist."""
        n = self.names
        if kind is Kind.APEX:
            return {
                dns.rdatatype.SOA: [self._soa(snapshot)],
                dns.rdatatype.NS: [dns.rdtypes.ANY.NS.NS(  # type: ignore[no-untyped-call]
                    dns.rdataclass.IN, dns.rdatatype.NS, n.ns_host)],
            }
        if kind is Kind.NS_HOST:
            return _addresses(self.ns_addresses)
        if kind in (Kind.UDP, Kind.LAN_PARENT):
            return {}
        if kind is Kind.WHOAMI:
            out = _addresses([source.ip])
            out[dns.rdatatype.TXT] = [records.txt([f"addr={source.ip}", f"port={source.port}"])]
            return out
        published = self._published(snapshot)
        if kind is Kind.SERVICE:
            ptrs = [records.ptr(n.instance(k)) for k in sorted(published)]
            return {dns.rdatatype.PTR: ptrs} if ptrs else {}
        if kind is Kind.LAN_SERVICE:
            keys = sorted(k for k, c in self.lan.items() if c.publishable and k in published)
            if not keys:
                return {}
            return {dns.rdatatype.PTR: [records.ptr(n.lan_instance(k)) for k in keys]}
        if key is None or key not in published:
            return None
        peer = published[key]
        assert peer.endpoint is not None  # _published keeps only peers with one
        lan = self.lan.get(key)
        if kind is Kind.INSTANCE:
            nat = lan.nat if lan else None
            return {
                dns.rdatatype.SRV: [records.srv(peer.endpoint[1], n.host(key))],
                dns.rdatatype.TXT: [records.txt(records.peer_txt(key, peer.allowed_ips, nat))],
            }
        if kind is Kind.HOST:
            return _addresses([ipaddress.ip_address(peer.endpoint[0])])
        if lan is None or not lan.publishable or lan.port is None:
            return None
        if kind is Kind.LAN_INSTANCE:
            strings = [f"txtvers={records.TXT_VERSION}"]
            if lan.nat is not None:
                strings.append(f"nat={lan.nat.value}")
            return {
                dns.rdatatype.SRV: [records.srv(lan.port, n.lan_host(key))],
                dns.rdatatype.TXT: [records.txt(strings)],
            }
        if kind is Kind.LAN_HOST:
            return _addresses(lan.addresses)
        return None

    # -- updates ------------------------------------------------------------

    def _update(
        self, msg: dns.update.UpdateMessage, source: Source, snapshot: Snapshot, now: float
    ) -> dns.message.Message:
        response = dns.message.make_response(msg)
        self.stats["updates"] += 1
        try:
            key, state = self._apply_update(msg, source, snapshot, now)
        except UpdateRefused as e:
            self.stats["updates.refused"] += 1
            self.last_refusal = e.reason
            response.set_rcode(e.rcode)
            return response
        old = self.lan.get(key)
        if state.port is None and not state.addresses and state.nat is None:
            self.lan.pop(key, None)
        else:
            self.lan[key] = state
        self.stats["updates.accepted"] += 1
        if old is None or (old.port, old.addresses, old.nat) != (
            state.port, state.addresses, state.nat
        ):
            self.last_accepted = (key, state)  # a change, worth a log line
        return response

    def _apply_update(
        self, msg: dns.update.UpdateMessage, source: Source, snapshot: Snapshot, now: float
    ) -> tuple[bytes, LanCandidates]:
        zone = msg.zone
        if len(zone) != 1 or zone[0].rdtype != dns.rdatatype.SOA:
            raise UpdateRefused(dns.rcode.FORMERR, "zone section must hold one SOA question")
        if zone[0].name != self.names.zone:
            raise UpdateRefused(dns.rcode.NOTAUTH, f"not authoritative for {zone[0].name}")
        if msg.prerequisite:
            raise UpdateRefused(dns.rcode.REFUSED, "prerequisites are not supported")
        if not msg.update:
            raise UpdateRefused(dns.rcode.FORMERR, "empty update section")
        key = self._update_key(msg.update)
        if source.transport != "udp":
            raise UpdateRefused(dns.rcode.REFUSED, "updates are accepted over UDP only")
        if not source.via_tunnel:
            raise UpdateRefused(
                dns.rcode.REFUSED, f"update from {source.ip} did not arrive through the tunnel"
            )
        owner = route_owner(source.ip, snapshot.peers)
        if owner is None or owner.public_key != key:
            raise UpdateRefused(
                dns.rcode.REFUSED,
                f"source {source.ip} is not in the allowed IPs of {Key(key).short_name()}",
            )
        old = self.lan.get(key)
        port = old.port if old else None
        addrs = list(old.addresses) if old else []
        nat = old.nat if old else None
        for rrset in msg.update:
            kind, _ = self.names.classify(rrset.name)
            if rrset.deleting is not None:
                if rrset.deleting != dns.rdataclass.ANY:
                    raise UpdateRefused(dns.rcode.REFUSED, "only RRset deletions are supported")
                t = rrset.rdtype
                if kind is Kind.LAN_INSTANCE and t in (dns.rdatatype.ANY, dns.rdatatype.SRV):
                    port = None
                if kind is Kind.LAN_INSTANCE and t in (dns.rdatatype.ANY, dns.rdatatype.TXT):
                    nat = None
                if kind is Kind.LAN_HOST and t in (dns.rdatatype.ANY, dns.rdatatype.A):
                    addrs = [a for a in addrs if a.version != 4]
                if kind is Kind.LAN_HOST and t in (dns.rdatatype.ANY, dns.rdatatype.AAAA):
                    addrs = [a for a in addrs if a.version != 6]
                continue
            port, nat = self._apply_add(rrset, kind, key, port, nat, addrs)
        if len(addrs) > MAX_LAN_ADDRESSES:
            raise UpdateRefused(dns.rcode.REFUSED, f"more than {MAX_LAN_ADDRESSES} LAN addresses")
        return key, LanCandidates(port, tuple(addrs), nat, now + self.lease)

    def _update_key(self, rrsets: Sequence[dns.rrset.RRset]) -> bytes:
        keys: set[bytes] = set()
        for rrset in rrsets:
            kind, key = self.names.classify(rrset.name)
            if kind is Kind.OUTSIDE:
                raise UpdateRefused(dns.rcode.NOTZONE, f"{rrset.name} is outside the zone")
            if kind not in (Kind.LAN_INSTANCE, Kind.LAN_HOST) or key is None:
                raise UpdateRefused(
                    dns.rcode.REFUSED, f"{rrset.name} is not a LAN-candidate name"
                )
            keys.add(key)
        if len(keys) != 1:
            raise UpdateRefused(dns.rcode.REFUSED, "an update may change one key's records only")
        return keys.pop()

    def _apply_add(
        self,
        rrset: dns.rrset.RRset,
        kind: Kind,
        key: bytes,
        port: int | None,
        nat: NatKind | None,
        addrs: list[IPAddress],
    ) -> tuple[int | None, NatKind | None]:
        t = rrset.rdtype
        if kind is Kind.LAN_INSTANCE and t == dns.rdatatype.SRV:
            recs = list(rrset)
            if len(recs) != 1:
                raise UpdateRefused(dns.rcode.REFUSED, "exactly one LAN SRV record is allowed")
            rec = recs[0]
            if not isinstance(rec, dns.rdtypes.IN.SRV.SRV):
                raise UpdateRefused(dns.rcode.REFUSED, "the LAN SRV record must be class IN")
            if rec.target != self.names.lan_host(key):
                raise UpdateRefused(dns.rcode.REFUSED, "the SRV target must be the key's LAN host")
            if not 0 < rec.port < 65536:
                raise UpdateRefused(dns.rcode.REFUSED, "bad SRV port")
            return rec.port, nat
        if kind is Kind.LAN_INSTANCE and t == dns.rdatatype.TXT:
            for rec in rrset:
                if not isinstance(rec, dns.rdtypes.ANY.TXT.TXT):
                    raise UpdateRefused(dns.rcode.REFUSED, "malformed TXT record")
                value = records.parse_txt(rec.strings).get("nat")
                if value is not None:
                    try:
                        nat = NatKind(value)
                    except ValueError:
                        raise UpdateRefused(dns.rcode.REFUSED, f"unknown nat={value!r}") from None
            return port, nat
        if kind is Kind.LAN_HOST and t in (dns.rdatatype.A, dns.rdatatype.AAAA):
            for rec in rrset:
                if not isinstance(rec, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA):
                    raise UpdateRefused(dns.rcode.REFUSED, "LAN addresses must be class IN")
                ip = ipaddress.ip_address(rec.address)
                if not _usable_candidate(ip):
                    raise UpdateRefused(dns.rcode.REFUSED, f"{ip} cannot be a LAN candidate")
                if ip not in addrs:
                    addrs.append(ip)
            return port, nat
        raise UpdateRefused(
            dns.rcode.REFUSED, f"{dns.rdatatype.to_text(t)} records cannot be added at {rrset.name}"
        )

    def _expire(self, snapshot: Snapshot, now: float) -> None:
        present = {p.public_key for p in snapshot.peers}
        for key in [k for k, c in self.lan.items() if c.expires <= now or k not in present]:
            del self.lan[key]
            self.stats["lan.expired"] += 1

    # -- wire helpers --------------------------------------------------------

    def _max_size(self, query: dns.message.Message, source: Source) -> int:
        if source.transport == "tcp":
            return TCP_MAX
        if query.edns >= 0:
            return max(UDP_DEFAULT_PAYLOAD, min(query.payload, UDP_MAX_PAYLOAD))
        return UDP_DEFAULT_PAYLOAD

    def _to_wire(self, response: dns.message.Message, max_size: int) -> bytes:
        try:
            return response.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            pass
        response.additional = []  # additional data may go without TC (RFC 2181 9)
        try:
            return response.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            pass
        self.stats["truncated"] += 1
        response.answer = []
        response.authority = []
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=max_size)

    def _formerr_from_header(self, wire: bytes) -> bytes | None:
        self.stats["formerr"] += 1
        if len(wire) < 12:
            return None
        qid, flags = struct.unpack("!HH", wire[:4])
        if flags & dns.flags.QR:
            return None
        response = dns.message.Message(id=qid)
        opcode_bits = flags & 0x7800
        response.flags = dns.flags.QR | opcode_bits | (flags & dns.flags.RD)
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire()


def _in(section: list[dns.rrset.RRset], name: dns.name.Name, t: dns.rdatatype.RdataType) -> bool:
    return any(r.name == name and r.rdtype == t for r in section)


def _addresses(ips: Iterable[IPAddress]) -> RRMap:
    out: RRMap = {}
    for ip in ips:
        out.setdefault(records.address_type(ip), []).append(records.address(ip))
    return out


def _usable_candidate(ip: IPAddress) -> bool:
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local:
        return False
    return ip != ipaddress.IPv4Address("255.255.255.255")
