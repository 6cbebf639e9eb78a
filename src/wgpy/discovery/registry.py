"""The authoritative registry: DNS messages in, responses out (sans-IO).

Theory of operation: the server shell reads the device's peer table (a
``Snapshot``) and hands each message to ``Registry.handle_all`` with the
``Source`` it came from and the current monotonic time; it gets back the
messages to send (several for a zone transfer, none to drop).  The registry
keeps only what the device cannot tell it: LAN candidates that peers
published by DNS UPDATE, each with a lease that ``now`` expires, the relay
allocations (``relay.RelayTable``), and the zone's versions
(``zone.Journal``), which the shell's clock advances with ``observe``.

Answers follow RFC 1034/2308: a name that exists without the asked type is
NODATA (NOERROR, empty answer, SOA in authority); a name that does not exist
is NXDOMAIN with the SOA; names outside the zone are REFUSED.  Per-peer names
exist only while the peer has an endpoint (as in wgsd).

Messages and who may send them:

* queries: anyone;
* UPDATE (``updates``): through the tunnel, from an address that routes to
  the key it writes; with ``update_needs_tsig``, also signed;
* AXFR/IXFR (``zone``): over TCP, from a ``transfer_acl`` address, signed
  when a keyring is configured (IXFR over UDP gets the SOA alone);
* NOTIFY: never (the registry is the primary): REFUSED.

A TSIG that does not verify is answered NOTAUTH with the TSIG error (BADKEY,
BADSIG, BADTIME), as RFC 8945 says.  Refusals are answered within a
``Budget`` per kind and dropped beyond it, counted in ``stats``, and logged
through a ``LogLimiter`` (``drain_logs``).  Garbage never raises: it is
answered FORMERR when the header can be read, and dropped otherwise.

dnspython reads the wall clock itself when it signs or verifies TSIG; that
is the one clock this module does not take as an argument.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import struct
from collections import Counter
from collections.abc import Iterable, Sequence

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
import dns.rrset
import dns.tsig
import dns.update

from wgpy.control.endpoint import format_endpoint
from wgpy.control.keys import Key
from wgpy.discovery import records, zone
from wgpy.discovery.ratelog import Budget, LogLimiter
from wgpy.discovery.records import IPAddress, IPNetwork, Kind, Names
from wgpy.discovery.relay import Allocation, RelayRefused, RelayTable
from wgpy.discovery.snapshot import PeerView, Snapshot, Source
from wgpy.discovery.tsigkeys import Keyring
from wgpy.discovery.updates import (
    LanCandidates,
    UpdateRefused,
    parse_update,
    route_owner,
)
from wgpy.protocol.events import Endpoint

__all__ = [
    "DEFAULT_LEASE", "DEFAULT_TTL", "LanCandidates", "PeerView", "Registry", "Snapshot",
    "Source", "UpdateRefused", "route_owner", "unverified_keyring",
]

DEFAULT_TTL = 5
DEFAULT_LEASE = 600.0
DEFAULT_SERIAL_INTERVAL = 2.0
UDP_DEFAULT_PAYLOAD = 512
UDP_MAX_PAYLOAD = 4096
TCP_MAX = 65535

TSIG_ERRORS: dict[int, str] = {dns.rcode.BADSIG: "BADSIG", dns.rcode.BADKEY: "BADKEY",
                               dns.rcode.BADTIME: "BADTIME"}  # 16 is also BADVERS: name them here
RRMap = dict[dns.rdatatype.RdataType, list[dns.rdata.Rdata]]
LogLine = tuple[int, str]


def unverified_keyring(_msg: dns.message.Message, _name: dns.name.Name) -> bool:
    """A keyring that parses a TSIG without checking it (to answer a bad one)."""
    return False


# Query types counted by name in ``stats`` (``qtype.A``); any other is
# ``qtype.other``, so a scan of all 65,536 types adds one counter, not 65,536.
COUNTED_QTYPES = frozenset({"A", "AAAA", "SRV", "TXT", "PTR", "SOA", "NS", "ANY", "AXFR", "IXFR"})


class Registry:
    """Answers queries for one zone from a device snapshot; stores LAN candidates.

    :param names: the zone's ``Names``.
    :param ttl: TTL of the published records and the negative-caching TTL.
    :param ns_addresses: addresses of the name server host (NS target), if known.
    :param lease: seconds an accepted LAN-candidate UPDATE stays valid.
    :param serial: the first SOA serial (the shell passes the Unix time).
    :param serial_interval: seconds between two zone versions (serial bumps).
    :param transfer_acl: addresses that may transfer the zone (the secondaries).
    :param keyring: TSIG keys; with keys, transfers must be signed by one.
    :param update_needs_tsig: UPDATEs must be signed too (besides the tunnel check).
    :param relay: the relay's allocation table, if this registry runs one.
    :param probes: public listeners published for NAT type probes.
    """

    def __init__(
        self,
        names: Names,
        ttl: int = DEFAULT_TTL,
        ns_addresses: Sequence[IPAddress] = (),
        lease: float = DEFAULT_LEASE,
        *,
        serial: int = 1,
        serial_interval: float = DEFAULT_SERIAL_INTERVAL,
        transfer_acl: Sequence[IPNetwork] = (),
        keyring: Keyring | None = None,
        update_needs_tsig: bool = False,
        relay: RelayTable | None = None,
        probes: Sequence[Endpoint] = (),
        budget: Budget | None = None,
        log_window: float = 10.0,
    ) -> None:
        if not 0 <= ttl <= 2**31 - 1:
            raise ValueError("ttl out of range")
        if update_needs_tsig and not keyring:
            raise ValueError("signed updates need a keyring")
        self.names = names
        self.ttl = ttl
        self.ns_addresses = tuple(ns_addresses)
        self.lease = lease
        self.lan: dict[bytes, LanCandidates] = {}
        self.stats: Counter[str] = Counter()
        self.journal = zone.Journal(serial, serial_interval)
        self.transfer_acl = tuple(transfer_acl)
        self.keyring = keyring or None
        self.update_needs_tsig = update_needs_tsig
        self.relay = relay
        self.probes = tuple(probes)
        self.budget = budget or Budget()
        self.loglimit = LogLimiter(log_window)
        self.logs: list[LogLine] = []
        self.relay_ended: list[Allocation] = []  # for the shell to close their sockets
        self.last_refusal = ""  # why the last message was refused
        self.last_accepted: tuple[bytes, LanCandidates] | None = None

    # -- entry points ---------------------------------------------------------

    def handle_wire(
        self, wire: bytes, source: Source, snapshot: Snapshot, now: float
    ) -> bytes | None:
        """Process one message that has one answer; return it, or None to drop.

        :param now: monotonic seconds, for leases and rate limits.
        """
        out = self.handle_all(wire, source, snapshot, now)
        return out[0] if out else None

    def handle_all(
        self, wire: bytes, source: Source, snapshot: Snapshot, now: float, wall: float = 0.0
    ) -> list[bytes]:
        """Process one message; return the messages to send (none: drop it).

        :param wall: Unix time, for the TSIG BADTIME answer's clock.
        """
        self.stats["messages"] += 1
        if len(wire) >= 3 and wire[2] & 0x80:
            self.stats["dropped"] += 1
            return []  # a response: never answer one (no loops)
        try:
            query = dns.message.from_wire(wire, keyring=self.keyring)
        except (dns.message.UnknownTSIGKey, dns.tsig.BadKey, dns.tsig.BadAlgorithm):
            return self._tsig_failure(wire, dns.rcode.BADKEY, source, now, wall)
        except dns.tsig.BadSignature:
            return self._tsig_failure(wire, dns.rcode.BADSIG, source, now, wall)
        except dns.tsig.BadTime:
            return self._tsig_failure(wire, dns.rcode.BADTIME, source, now, wall)
        except (dns.exception.DNSException, ValueError, UnicodeError, struct.error):
            reply = self._formerr_from_header(wire)
            return [reply] if reply else []
        if query.flags & dns.flags.QR:
            self.stats["dropped"] += 1
            return []
        if query.opcode() == dns.opcode.QUERY and len(query.question) == 1 and \
                query.question[0].rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            return self._transfer(query, source, snapshot, now)
        response = self.respond(query, source, snapshot, now)
        if response is None:
            return []
        self.stats[f"rcode.{dns.rcode.to_text(response.rcode())}"] += 1
        return [self._to_wire(response, self._max_size(query, source))]

    def respond(
        self, query: dns.message.Message, source: Source, snapshot: Snapshot, now: float
    ) -> dns.message.Message | None:
        """The response to a parsed query, UPDATE or NOTIFY (None: drop it)."""
        self._expire(snapshot, now)
        opcode = query.opcode()
        if opcode == dns.opcode.UPDATE and isinstance(query, dns.update.UpdateMessage):
            return self._update(query, source, snapshot, now)
        if opcode == dns.opcode.NOTIFY:
            # We are the primary: nobody announces changes of this zone to us.
            return self._refuse(query, "notify", dns.rcode.REFUSED,
                                f"NOTIFY from {source.ip}: this registry is the primary", now)
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

    def observe(self, snapshot: Snapshot, now: float) -> int | None:
        """Advance the zone's clock: expire what is due and, when the data
        changed and ``serial_interval`` has passed, record a new version.
        Returns the new serial, or None.  The shell calls it every refresh,
        with a snapshot whose self-endpoint does not depend on a query."""
        self._expire(snapshot, now)
        if self.relay is not None:
            public = {p.public_key: p.endpoint[0] for p in snapshot.peers if p.endpoint}
            self.relay_ended += self.relay.observe(public, now)
        digest = self._content_digest(snapshot)
        if not self.journal.changed(digest, now):
            return None
        rrs = zone.records_of(self.zone_rrsets(snapshot))
        return self.journal.record(digest, rrs, now)

    def drain_logs(self) -> list[LogLine]:
        """Log lines (level, text) since the last call, already rate-limited."""
        out, self.logs = self.logs, []
        return out

    def notify_message(self, query_id: int) -> dns.message.Message:
        """A NOTIFY for the current serial (RFC 1996), signed with the first key."""
        msg = dns.message.Message(id=query_id)
        msg.set_opcode(dns.opcode.NOTIFY)
        msg.flags |= dns.flags.AA
        msg.question = [dns.rrset.RRset(self.names.zone, dns.rdataclass.IN, dns.rdatatype.SOA)]
        soa = dns.rrset.RRset(self.names.zone, dns.rdataclass.IN, dns.rdatatype.SOA)
        soa.add(self._soa(), self.ttl)
        msg.answer = [soa]
        if self.keyring:
            msg.use_tsig(self.keyring)
        return msg

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
        rrs = self._records_at(qname, kind, key, source, snapshot)
        if rrs is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            self._add_soa(response)
            return
        types = list(rrs) if qtype == dns.rdatatype.ANY else [qtype] if qtype in rrs else []
        if not types:
            self._add_soa(response)  # NODATA
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
                inst = self._records_at_name(target, source, snapshot) or {}
                targets += [s.target for s in inst.get(dns.rdatatype.SRV, [])]  # type: ignore[attr-defined]
        if dns.rdatatype.NS in types:
            targets.append(self.names.ns_host)
        seen: set[tuple[dns.name.Name, dns.rdatatype.RdataType]] = set()
        for name in targets:
            at = self._records_at_name(name, source, snapshot) or {}
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

    def _add_soa(self, response: dns.message.Message) -> None:
        self._add(response.authority, self.names.zone, dns.rdatatype.SOA, [self._soa()], self.ttl)

    def _soa(self, serial: int | None = None) -> dns.rdata.Rdata:
        rname = dns.name.Name(("hostmaster",)).concatenate(self.names.zone)
        return dns.rdtypes.ANY.SOA.SOA(  # type: ignore[no-untyped-call]
            dns.rdataclass.IN, dns.rdatatype.SOA, self.names.ns_host, rname,
            self.journal.serial if serial is None else serial, 3600, 600, 86400, self.ttl,
        )

    def _content_digest(self, snapshot: Snapshot) -> bytes:
        """Changes whenever the zone's records would (cheaper than building them)."""
        h = hashlib.blake2s(digest_size=16)
        # In key order: wireguard-go lists its peers in a new order on every get
        # (a Go map), which is no change of the zone.
        published = self._published(snapshot)
        for p in (published[k] for k in sorted(published)):
            ep = format_endpoint(*p.endpoint) if p.endpoint else ""
            h.update(p.public_key + ep.encode() + ",".join(sorted(p.allowed_ips)).encode())
        for key in sorted(self.lan):
            c = self.lan[key]
            h.update(key + repr((c.port, c.addresses, c.nat)).encode())
        if self.relay is not None:
            for pair in sorted(self.relay.allocations):
                alloc = self.relay.allocations[pair]
                if alloc.ready:
                    h.update(b"".join(pair) + repr(
                        sorted((s.family, s.port) for s in alloc.sides.values())).encode())
        return h.digest()

    def _published(self, snapshot: Snapshot) -> dict[bytes, PeerView]:
        peers = list(snapshot.peers)
        if snapshot.self_peer is not None:
            peers.append(snapshot.self_peer)
        return {p.public_key: p for p in peers if p.endpoint is not None}

    def _records_at_name(
        self, name: dns.name.Name, source: Source, snapshot: Snapshot
    ) -> RRMap | None:
        kind, key = self.names.classify(name)
        return self._records_at(name, kind, key, source, snapshot)

    def _records_at(
        self, name: dns.name.Name, kind: Kind, key: bytes | None, source: Source,
        snapshot: Snapshot,
    ) -> RRMap | None:
        """The records a name holds, ``{}`` for an empty non-terminal, None if it does not exist."""
        n = self.names
        if kind is Kind.APEX:
            return {
                dns.rdatatype.SOA: [self._soa()],
                dns.rdatatype.NS: [dns.rdtypes.ANY.NS.NS(  # type: ignore[no-untyped-call]
                    dns.rdataclass.IN, dns.rdatatype.NS, n.ns_host)],
            }
        if kind is Kind.NS_HOST:
            return _addresses(self.ns_addresses)
        if kind in (Kind.UDP, Kind.LAN_PARENT, Kind.RELAY_PARENT):
            return {}
        if kind is Kind.WHOAMI:
            out = _addresses([source.ip])
            out[dns.rdatatype.TXT] = [records.txt([f"addr={source.ip}", f"port={source.port}"])]
            return out
        if kind is Kind.PROBE_SERVICE:
            if not self.probes:
                return {}
            hosts = self._probe_hosts()
            return {dns.rdatatype.SRV: [records.srv(port, n.probe_host(hosts.index(ip) + 1))
                                        for ip, port in self.probes]}
        if kind is Kind.PROBE_HOST:
            hosts = self._probe_hosts()
            index = records.probe_index(n, name)
            if index is None or index > len(hosts):
                return None
            return _addresses([ipaddress.ip_address(hosts[index - 1])])
        if kind is Kind.RELAY_HOST:
            if self.relay is None:
                return None
            return _addresses(ipaddress.ip_address(a) for a in self.relay.addresses.values())
        if kind in (Kind.RELAY_OWNER, Kind.RELAY_INSTANCE):
            return self._relay_records(name, kind, key)
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

    def _probe_hosts(self) -> list[str]:
        hosts: list[str] = []
        for ip, _port in self.probes:
            if ip not in hosts:
                hosts.append(ip)
        return hosts

    def _relay_records(self, name: dns.name.Name, kind: Kind, key: bytes | None) -> RRMap | None:
        if self.relay is None or key is None:
            return None
        if kind is Kind.RELAY_OWNER:
            held = any(a.ready and key in a.pair for a in self.relay.allocations.values())
            return {} if held else None
        pair = self.names.relay_pair(name)
        if pair is None:
            return None
        at = self.relay.endpoint_for(*pair)
        if at is None:
            return None
        return {dns.rdatatype.SRV: [records.srv(at[1], self.names.relay_host)]}

    def zone_rrsets(self, snapshot: Snapshot) -> list[dns.rrset.RRset]:
        """Every RRset of the zone but the SOA, as a transfer carries them.

        ``_whoami`` is left out: its answer depends on who asks."""
        n = self.names
        names: list[dns.name.Name] = [n.zone, n.ns_host, n.service, n.lan_service,
                                      n.probe_service]
        names += [n.probe_host(i + 1) for i in range(len(self._probe_hosts()))]
        for key in sorted(self._published(snapshot)):
            names += [n.instance(key), n.host(key), n.lan_instance(key), n.lan_host(key)]
        if self.relay is not None:
            names.append(n.relay_host)
            for pair in sorted(self.relay.allocations):
                a, b = pair
                names += [n.relay_instance(a, b), n.relay_instance(b, a)]
        out: list[dns.rrset.RRset] = []
        neutral = Source(ipaddress.ip_address("0.0.0.0"), 0)
        for name in names:
            for t, rdatas in sorted((self._records_at_name(name, neutral, snapshot) or {}).items()):
                if t == dns.rdatatype.SOA:
                    continue
                rrset = dns.rrset.RRset(name, dns.rdataclass.IN, t)
                for r in rdatas:
                    rrset.add(r, self.ttl)
                out.append(rrset)
        return out

    # -- zone transfers -----------------------------------------------------------

    def _transfer(
        self, query: dns.message.Message, source: Source, snapshot: Snapshot, now: float
    ) -> list[bytes]:
        question = query.question[0]
        kind = "axfr" if question.rdtype == dns.rdatatype.AXFR else "ixfr"
        self.stats[f"xfr.{kind}.requests"] += 1
        refusal = self._transfer_refusal(query, source)
        if refusal is not None:
            reply = self._refuse(query, "xfr", dns.rcode.REFUSED, refusal, now)
            return [reply.to_wire()] if reply is not None else []
        if self.journal.current is None:
            self.observe(snapshot, now)
        current = self.journal.current
        assert current is not None
        soa = self._soa_rrset(current.serial)
        if kind == "ixfr":
            client = _ixfr_serial(query, self.names.zone)
            if client is None:
                reply = self._refuse(query, "xfr", dns.rcode.FORMERR,
                                     f"IXFR from {source.ip} without the client's SOA", now)
                return [reply.to_wire()] if reply is not None else []
            if source.transport == "udp" or self.journal.up_to_date(client):
                # Up to date, or over UDP: the SOA alone (RFC 1995 section 2).
                return [self._stream(query, [[soa]])[0]]
            diff = self.journal.difference(client)
            if diff is not None:
                self.stats["xfr.ixfr.incremental"] += 1
                deleted, added = (zone.to_rrsets(d, self.ttl) for d in diff)
                answer = zone.ixfr_answer(soa, self._soa_rrset(client), deleted, added)
                return self._stream(query, zone.split_messages(answer))
        elif source.transport == "udp":
            reply = self._refuse(query, "xfr", dns.rcode.NOTIMP,
                                 f"AXFR over UDP from {source.ip}", now)
            return [reply.to_wire()] if reply is not None else []
        self.stats[f"xfr.{kind}.full"] += 1
        rrsets = zone.to_rrsets(zone.sorted_rrs(current.records), self.ttl)
        return self._stream(query, zone.split_messages(zone.axfr_answer(soa, rrsets)))

    def _transfer_refusal(self, query: dns.message.Message, source: Source) -> str | None:
        if query.question[0].name != self.names.zone:
            return f"transfer of {query.question[0].name}: not this zone"
        if not any(source.ip.version == net.version and source.ip in net
                   for net in self.transfer_acl):
            return f"transfer from {source.ip}: not a listed secondary"
        if self.keyring and not query.had_tsig:
            return f"transfer from {source.ip}: not signed (TSIG required)"
        return None

    def _stream(self, query: dns.message.Message,
                groups: Sequence[Sequence[dns.rrset.RRset]]) -> list[bytes]:
        self.stats["rcode.NOERROR"] += 1
        return zone.render_stream(query, groups)

    def _soa_rrset(self, serial: int) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(self.names.zone, dns.rdataclass.IN, dns.rdatatype.SOA)
        rrset.add(self._soa(serial), self.ttl)
        return rrset

    # -- updates ------------------------------------------------------------

    def _update(
        self, msg: dns.update.UpdateMessage, source: Source, snapshot: Snapshot, now: float
    ) -> dns.message.Message | None:
        self.stats["updates"] += 1
        if self.update_needs_tsig and not msg.had_tsig:
            return self._refuse(msg, "update", dns.rcode.REFUSED,
                                f"update from {source.ip}: not signed (TSIG required)", now)
        try:
            req = parse_update(msg, source, snapshot.peers, self.names,
                               self.lan.get(self._sender_key(msg) or b""), self.lease, now)
            allocations = self._relay_requests(req.key, req.relay_peers, snapshot, now)
        except UpdateRefused as e:
            category = "relay" if self._is_relay_update(msg) else "update"
            return self._refuse(msg, category, e.rcode, e.reason, now)
        response = dns.message.make_response(msg)
        for alloc in allocations:
            self.logs.append((logging.INFO, f"relay {alloc.describe()}"))
        if req.lan is not None:
            old = self.lan.get(req.key)
            state = req.lan
            if state.port is None and not state.addresses and state.nat is None:
                self.lan.pop(req.key, None)
            else:
                self.lan[req.key] = state
            if old is None or (old.port, old.addresses, old.nat) != (
                state.port, state.addresses, state.nat
            ):
                self.last_accepted = (req.key, state)  # a change, worth a log line
                addrs = ", ".join(str(a) for a in state.addresses) or "none"
                nat = state.nat.value if state.nat else "not reported"
                self.logs.append((logging.INFO, f"LAN candidates for {Key(req.key).short_name()}"
                                                f": port {state.port}, addresses {addrs}, "
                                                f"NAT {nat}"))
        self.stats["updates.accepted"] += 1
        return response

    def _sender_key(self, msg: dns.update.UpdateMessage) -> bytes | None:
        for rrset in msg.update:
            return self.names.classify(rrset.name)[1]
        return None

    def _is_relay_update(self, msg: dns.update.UpdateMessage) -> bool:
        return any(self.names.classify(r.name)[0] is Kind.RELAY_INSTANCE for r in msg.update)

    def _relay_requests(
        self, me: bytes, peers: list[bytes], snapshot: Snapshot, now: float
    ) -> list[Allocation]:
        """Make every requested allocation, or none (UpdateRefused)."""
        if not peers:
            return []
        if self.relay is None:
            raise UpdateRefused(dns.rcode.REFUSED, "this registry runs no relay")
        known = {p.public_key for p in snapshot.peers}
        for peer in peers:
            if peer not in known:
                raise UpdateRefused(dns.rcode.REFUSED, f"relay to {Key(peer).short_name()}: "
                                                       "not a peer of the registry")
        fresh: list[Allocation] = []
        try:
            for peer in peers:
                before = set(self.relay.allocations)
                alloc = self.relay.request(me, peer, now)
                if alloc.pair not in before:
                    fresh.append(alloc)
        except RelayRefused as e:
            for alloc in fresh:
                self.relay.end(alloc)  # all or nothing
            raise UpdateRefused(dns.rcode.REFUSED,
                                f"relay for {Key(me).short_name()}: {e}") from None
        self.stats["relay.requests"] += len(peers)
        return fresh

    def _expire(self, snapshot: Snapshot, now: float) -> None:
        present = {p.public_key for p in snapshot.peers}
        for key in [k for k, c in self.lan.items() if c.expires <= now or k not in present]:
            del self.lan[key]
            self.stats["lan.expired"] += 1

    # -- refusals ----------------------------------------------------------------

    def _refuse(
        self, msg: dns.message.Message, category: str, rcode: dns.rcode.Rcode, reason: str,
        now: float,
    ) -> dns.message.Message | None:
        """Count and log (rate-limited) a refusal; the answer, or None past the budget."""
        self.stats[f"{category}.refused"] += 1
        self.last_refusal = reason
        line = self.loglimit.line(category, reason, now)
        if line is not None:
            self.logs.append((logging.WARNING, f"refused {category}: {line}"))
        if not self.budget.allow(category, now):
            self.stats[f"{category}.dropped"] += 1
            return None
        response = dns.message.make_response(msg)
        response.set_rcode(rcode)
        return response

    def _tsig_failure(
        self, wire: bytes, error: int, source: Source, now: float, wall: float
    ) -> list[bytes]:
        """NOTAUTH with the TSIG error (RFC 8945 5.2): unsigned for BADKEY and
        BADSIG, signed with the server's time for BADTIME."""
        name = TSIG_ERRORS[error]
        self.stats[f"tsig.{name.lower()}"] += 1
        self.last_refusal = f"TSIG {name} from {source.ip}"
        line = self.loglimit.line("tsig", self.last_refusal, now)
        if line is not None:
            self.logs.append((logging.WARNING, f"refused tsig: {line}"))
        if not self.budget.allow("tsig", now):
            self.stats["tsig.dropped"] += 1
            return []
        try:
            msg = dns.message.from_wire(wire, keyring=unverified_keyring)
        except (dns.exception.DNSException, ValueError, UnicodeError, struct.error):
            reply = self._formerr_from_header(wire)
            return [reply] if reply else []
        if msg.flags & dns.flags.QR or msg.tsig is None:
            return []
        rd = msg.tsig[0]
        response = dns.message.make_response(msg)
        response.set_rcode(dns.rcode.NOTAUTH)
        key = self.keyring.get(msg.tsig.name) if self.keyring else None
        if error == dns.rcode.BADTIME and key is not None:
            secs = int(wall)
            response.use_tsig(key, original_id=rd.original_id, tsig_error=error,
                              other_data=struct.pack("!HI", secs >> 32, secs & 0xFFFFFFFF))
            response.request_mac = rd.mac
        else:
            unsigned = rd.replace(mac=b"", error=error, other=b"")
            response.tsig = dns.rrset.from_rdata(msg.tsig.name, 0, unsigned)
        return [response.to_wire()]

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


def _ixfr_serial(query: dns.message.Message, zone_name: dns.name.Name) -> int | None:
    """The serial the IXFR client has: the SOA in the query's authority section."""
    for rrset in query.authority:
        if rrset.name == zone_name and rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return int(rrset[0].serial)
    return None


def _in(section: list[dns.rrset.RRset], name: dns.name.Name, t: dns.rdatatype.RdataType) -> bool:
    return any(r.name == name and r.rdtype == t for r in section)


def _addresses(ips: Iterable[IPAddress]) -> RRMap:
    out: RRMap = {}
    for ip in ips:
        out.setdefault(records.address_type(ip), []).append(records.address(ip))
    return out
