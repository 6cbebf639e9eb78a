"""What a DNS UPDATE may change, and who may send it (sans-IO).

Two kinds of record can be written, both only for the sender's own key:

* LAN candidates (``<b32>._wireguard-lan._udp.Z`` SRV/TXT and
  ``<b32>.lan.Z`` A/AAAA), replaced as a whole by ``update.build_update``;
* relay requests: ``<b32 Y>.<b32 X>._wireguard-relay._udp.Z SRV 0 0 0
  relay.Z`` asks for a relay between X (the sender) and Y; the registry
  picks the port (hence 0) and publishes the SRV once the relay listens.

Trust: an UPDATE must arrive through the WireGuard interface
(``Source.via_tunnel``: the shell knows the arrival interface of UDP
datagrams, and listens for TCP on tunnel addresses with a socket bound to
the interface) and its source address must route to the key it writes, by
longest-prefix match over the allowed IPs, exactly as WireGuard's
cryptokey routing authenticated it.  ``parse_update`` checks everything
before the registry changes anything.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.rrset
import dns.update

from wgpy.control.keys import Key
from wgpy.discovery import records
from wgpy.discovery.records import IPAddress, IPNetwork, Kind, Names, NatKind
from wgpy.discovery.snapshot import PeerView, Source

MAX_LAN_ADDRESSES = 8
MAX_RELAY_REQUESTS = 8  # per UPDATE message


@dataclass(frozen=True)
class LanCandidates:
    port: int | None
    addresses: tuple[IPAddress, ...]
    nat: NatKind | None
    expires: float

    @property
    def publishable(self) -> bool:
        return self.port is not None and bool(self.addresses)


@dataclass
class UpdateRequest:
    """A checked UPDATE: whose records, and what it asks for."""

    key: bytes
    lan: LanCandidates | None = None  # None: the UPDATE holds no LAN records
    relay_peers: list[bytes] = field(default_factory=list)


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


def parse_update(
    msg: dns.update.UpdateMessage,
    source: Source,
    peers: Sequence[PeerView],
    names: Names,
    old: LanCandidates | None,
    lease: float,
    now: float,
) -> UpdateRequest:
    """Check an UPDATE completely; UpdateRefused (with its rcode) if anything is wrong.

    :param old: the sender key's current LAN candidates, which the UPDATE edits.
    """
    zone = msg.zone
    if len(zone) != 1 or zone[0].rdtype != dns.rdatatype.SOA:
        raise UpdateRefused(dns.rcode.FORMERR, "zone section must hold one SOA question")
    if zone[0].name != names.zone:
        raise UpdateRefused(dns.rcode.NOTAUTH, f"not authoritative for {zone[0].name}")
    if msg.prerequisite:
        raise UpdateRefused(dns.rcode.REFUSED, "prerequisites are not supported")
    if not msg.update:
        raise UpdateRefused(dns.rcode.FORMERR, "empty update section")
    key = _update_key(msg.update, names)
    if not source.via_tunnel:
        raise UpdateRefused(
            dns.rcode.REFUSED,
            f"update from {source.ip} ({source.transport}) did not arrive through the tunnel",
        )
    owner = route_owner(source.ip, peers)
    if owner is None or owner.public_key != key:
        raise UpdateRefused(
            dns.rcode.REFUSED,
            f"source {source.ip} is not in the allowed IPs of {Key(key).short_name()}",
        )
    request = UpdateRequest(key)
    port = old.port if old else None
    addrs = list(old.addresses) if old else []
    nat = old.nat if old else None
    lan_touched = False
    for rrset in msg.update:
        kind, _ = names.classify(rrset.name)
        if kind is Kind.RELAY_INSTANCE:
            request.relay_peers.append(_relay_request(rrset, names))
            continue
        lan_touched = True
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
        port, nat = _apply_add(rrset, kind, key, names, port, nat, addrs)
    if len(addrs) > MAX_LAN_ADDRESSES:
        raise UpdateRefused(dns.rcode.REFUSED, f"more than {MAX_LAN_ADDRESSES} LAN addresses")
    if len(request.relay_peers) > MAX_RELAY_REQUESTS:
        raise UpdateRefused(dns.rcode.REFUSED, f"more than {MAX_RELAY_REQUESTS} relay requests")
    if lan_touched:
        request.lan = LanCandidates(port, tuple(addrs), nat, now + lease)
    return request


def _update_key(rrsets: Sequence[dns.rrset.RRset], names: Names) -> bytes:
    keys: set[bytes] = set()
    for rrset in rrsets:
        kind, key = names.classify(rrset.name)
        if kind is Kind.OUTSIDE:
            raise UpdateRefused(dns.rcode.NOTZONE, f"{rrset.name} is outside the zone")
        if kind not in (Kind.LAN_INSTANCE, Kind.LAN_HOST, Kind.RELAY_INSTANCE) or key is None:
            raise UpdateRefused(
                dns.rcode.REFUSED, f"{rrset.name} is neither a LAN-candidate nor a relay name"
            )
        keys.add(key)
    if len(keys) != 1:
        raise UpdateRefused(dns.rcode.REFUSED, "an update may change one key's records only")
    return keys.pop()


def _relay_request(rrset: dns.rrset.RRset, names: Names) -> bytes:
    pair = names.relay_pair(rrset.name)
    assert pair is not None  # classify said RELAY_INSTANCE
    if rrset.deleting is not None or rrset.rdtype != dns.rdatatype.SRV:
        raise UpdateRefused(dns.rcode.REFUSED,
                            "a relay request adds one SRV record (port 0, target relay)")
    recs = list(rrset)
    if len(recs) != 1 or not isinstance(recs[0], dns.rdtypes.IN.SRV.SRV):
        raise UpdateRefused(dns.rcode.REFUSED, "a relay request holds one SRV record of class IN")
    rec = recs[0]
    if rec.port != 0 or rec.target != names.relay_host:
        raise UpdateRefused(dns.rcode.REFUSED,
                            f"a relay request is SRV 0 0 0 {names.relay_host} (the relay "
                            "picks the port)")
    return pair[1]


def _apply_add(
    rrset: dns.rrset.RRset,
    kind: Kind,
    key: bytes,
    names: Names,
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
        if rec.target != names.lan_host(key):
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


def _usable_candidate(ip: IPAddress) -> bool:
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local:
        return False
    return ip != ipaddress.IPv4Address("255.255.255.255")
