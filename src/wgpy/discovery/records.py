"""DNS-SD names and records for WireGuard peers (sans-IO).

Theory of operation: the registry publishes, under a zone ``Z``, wgsd's
schema plus two wgpy extensions.  ``<b32>`` is a peer's public key in
RFC 4648 base32 with padding (56 characters), matched case-insensitively::

    _wireguard._udp.Z            PTR  <b32>._wireguard._udp.Z    (per peer with an endpoint)
    <b32>._wireguard._udp.Z      SRV  0 0 <port> <b32>.Z         (the mapping the registry sees)
    <b32>._wireguard._udp.Z      TXT  "txtvers=1" "pub=<base64>" "allowed=<cidr,...>" ["nat=..."]
    <b32>.Z                      A / AAAA <mapped address>

    _wireguard-lan._udp.Z        PTR  <b32>._wireguard-lan._udp.Z  (peers with LAN candidates)
    <b32>._wireguard-lan._udp.Z  SRV  0 0 <port> <b32>.lan.Z     (sent by the peer: DNS UPDATE)
    <b32>._wireguard-lan._udp.Z  TXT  "txtvers=1" ["nat=cone|symmetric|open|unknown"]
    <b32>.lan.Z                  A / AAAA <LAN addresses>

    _whoami.Z                    TXT "addr=<ip>" "port=<port>" (the querier's source, as seen)
    _wireguard-probe._udp.Z      SRV  0 0 <port> probe<n>.Z      (public listeners for NAT probes)
    probe<n>.Z                   A / AAAA <a public listener's address>

    <b32 Y>.<b32 X>._wireguard-relay._udp.Z  SRV 0 0 <port> relay.Z  (X's endpoint for Y)
    relay.Z                      A / AAAA <the relay's addresses>

The apex holds SOA and NS.  This module only builds and parses names and
rdata; which names exist and what to answer is ``registry``'s business.
"""

from __future__ import annotations

import base64
import binascii
import enum
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV

from wgpy.control.keys import Key
from wgpy.protocol.constants import KEY_LEN
from wgpy.protocol.events import Endpoint

SERVICE = "_wireguard._udp"
LAN_SERVICE = "_wireguard-lan._udp"
LAN_HOSTS = "lan"
WHOAMI = "_whoami"
PROBE_SERVICE = "_wireguard-probe._udp"
PROBE_HOST_PREFIX = "probe"
RELAY_SERVICE = "_wireguard-relay._udp"
RELAY_HOST = "relay"
TXT_VERSION = 1
LABEL_LEN = 56  # base32 of 32 bytes, with "====" padding

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class NatKind(enum.Enum):
    """How a peer's NAT maps its source port, as measured by ``nat.classify``."""

    OPEN = "open"  # no translation: the mapping is the local address
    CONE = "cone"  # the same mapping for every destination: punching works
    SYMMETRIC = "symmetric"  # a mapping per destination: the published one is useless
    UNKNOWN = "unknown"


def key_to_label(key: bytes) -> str:
    """The DNS label for a public key: base32, upper case, padded (as wgsd)."""
    if len(key) != KEY_LEN:
        raise ValueError("a WireGuard public key is 32 bytes")
    return base64.b32encode(key).decode("ascii")


def label_to_key(label: bytes | str) -> bytes | None:
    """The public key a label names, or None.  Case-insensitive; padding optional."""
    text = label.decode("ascii", "replace") if isinstance(label, bytes) else label
    text = text.upper().rstrip("=")
    if len(text) != LABEL_LEN - 4:
        return None
    try:
        key = base64.b32decode(text + "====")
    except (binascii.Error, ValueError):
        return None
    # Reject non-canonical encodings (trailing bits set) so a key has one name.
    if base64.b32encode(key).decode("ascii").rstrip("=") != text:
        return None
    return key


class Kind(enum.Enum):
    """What a query name is, relative to the zone."""

    OUTSIDE = "outside"  # not in the zone: the registry is not authoritative
    APEX = "apex"
    NS_HOST = "ns-host"
    UDP = "udp"  # _udp.Z, an empty non-terminal
    SERVICE = "service"
    LAN_SERVICE = "lan-service"
    LAN_PARENT = "lan-parent"  # lan.Z, an empty non-terminal
    WHOAMI = "whoami"
    INSTANCE = "instance"
    HOST = "host"
    LAN_INSTANCE = "lan-instance"
    LAN_HOST = "lan-host"
    PROBE_SERVICE = "probe-service"
    PROBE_HOST = "probe-host"
    RELAY_PARENT = "relay-parent"  # _wireguard-relay._udp.Z, an empty non-terminal
    RELAY_OWNER = "relay-owner"  # <b32 X>._wireguard-relay._udp.Z, an empty non-terminal
    RELAY_INSTANCE = "relay-instance"  # classify() gives X, the key whose endpoint it is
    RELAY_HOST = "relay-host"
    UNKNOWN = "unknown"  # in the zone, but no such name can exist


@dataclass(frozen=True)
class Names:
    """Builds and classifies the names of one zone."""

    zone: dns.name.Name
    ns_host: dns.name.Name

    @classmethod
    def for_zone(cls, zone: str | dns.name.Name, ns_host: str | None = None) -> Names:
        """:param zone: the zone, e.g. ``wg.example``; made absolute if relative.
        :raises ValueError: when the zone is not a valid domain name."""
        z = _absolute(zone)
        ns = _absolute(ns_host) if ns_host else dns.name.Name(("ns1",)).concatenate(z)
        return cls(z, ns)

    def _under(self, *labels: str) -> dns.name.Name:
        return dns.name.Name(labels).concatenate(self.zone)

    @property
    def service(self) -> dns.name.Name:
        return self._under(*SERVICE.split("."))

    @property
    def lan_service(self) -> dns.name.Name:
        return self._under(*LAN_SERVICE.split("."))

    @property
    def whoami(self) -> dns.name.Name:
        return self._under(WHOAMI)

    def instance(self, key: bytes) -> dns.name.Name:
        return self._under(key_to_label(key), *SERVICE.split("."))

    def host(self, key: bytes) -> dns.name.Name:
        return self._under(key_to_label(key))

    def lan_instance(self, key: bytes) -> dns.name.Name:
        return self._under(key_to_label(key), *LAN_SERVICE.split("."))

    def lan_host(self, key: bytes) -> dns.name.Name:
        return self._under(key_to_label(key), LAN_HOSTS)

    @property
    def probe_service(self) -> dns.name.Name:
        return self._under(*PROBE_SERVICE.split("."))

    def probe_host(self, index: int) -> dns.name.Name:
        """The target of the ``index``-th (from 1) probe listener address."""
        return self._under(f"{PROBE_HOST_PREFIX}{index}")

    @property
    def relay_host(self) -> dns.name.Name:
        return self._under(RELAY_HOST)

    def relay_instance(self, me: bytes, peer: bytes) -> dns.name.Name:
        """The name whose SRV is ``me``'s endpoint for ``peer`` on the relay."""
        return self._under(key_to_label(peer), key_to_label(me), *RELAY_SERVICE.split("."))

    def relay_pair(self, name: dns.name.Name) -> tuple[bytes, bytes] | None:
        """``(me, peer)`` for a relay instance name, else None."""
        if not name.is_subdomain(self.zone) or name == self.zone:
            return None
        rel = [lbl.lower() for lbl in name.relativize(self.zone).labels]
        if len(rel) != 4 or rel[2:] != [s.encode() for s in RELAY_SERVICE.split(".")]:
            return None
        peer, me = label_to_key(rel[0]), label_to_key(rel[1])
        if peer is None or me is None:
            return None
        return me, peer

    def classify(self, name: dns.name.Name) -> tuple[Kind, bytes | None]:
        """What ``name`` is, and the public key it names (for per-peer names)."""
        if not name.is_subdomain(self.zone):
            return Kind.OUTSIDE, None
        if name == self.zone:
            return Kind.APEX, None
        if name == self.ns_host:
            return Kind.NS_HOST, None
        rel = [lbl.lower() for lbl in name.relativize(self.zone).labels]
        svc = [s.encode() for s in SERVICE.split(".")]
        lan = [s.encode() for s in LAN_SERVICE.split(".")]
        if rel == [b"_udp"]:
            return Kind.UDP, None
        if rel == svc:
            return Kind.SERVICE, None
        if rel == lan:
            return Kind.LAN_SERVICE, None
        if rel == [LAN_HOSTS.encode()]:
            return Kind.LAN_PARENT, None
        if rel == [WHOAMI.encode()]:
            return Kind.WHOAMI, None
        probe = [s.encode() for s in PROBE_SERVICE.split(".")]
        relay = [s.encode() for s in RELAY_SERVICE.split(".")]
        if rel == probe:
            return Kind.PROBE_SERVICE, None
        if rel == relay:
            return Kind.RELAY_PARENT, None
        if rel == [RELAY_HOST.encode()]:
            return Kind.RELAY_HOST, None
        if len(rel) == 1 and _probe_index(rel[0]) is not None:
            return Kind.PROBE_HOST, None
        if len(rel) >= 3 and rel[-2:] == relay:
            pair = self.relay_pair(name)
            if pair is not None:
                return Kind.RELAY_INSTANCE, pair[0]
            me = label_to_key(rel[0]) if len(rel) == 3 else None
            return (Kind.RELAY_OWNER, me) if me is not None else (Kind.UNKNOWN, None)
        key = label_to_key(rel[0])
        if key is None:
            return Kind.UNKNOWN, None
        shapes = {
            (): Kind.HOST,
            tuple(svc): Kind.INSTANCE,
            tuple(lan): Kind.LAN_INSTANCE,
            (LAN_HOSTS.encode(),): Kind.LAN_HOST,
        }
        kind = shapes.get(tuple(rel[1:]))
        if kind is None:
            return Kind.UNKNOWN, None
        return kind, key


def _probe_index(label: bytes) -> int | None:
    prefix = PROBE_HOST_PREFIX.encode()
    digits = label[len(prefix):]
    if not label.startswith(prefix) or not digits.isdigit() or digits.startswith(b"0"):
        return None
    return int(digits)


def probe_index(names: Names, name: dns.name.Name) -> int | None:
    """The index of a probe host name (``probe3.Z`` -> 3), else None."""
    if not name.is_subdomain(names.zone) or name == names.zone:
        return None
    rel = name.relativize(names.zone).labels
    return _probe_index(rel[0].lower()) if len(rel) == 1 else None


def _absolute(name: str | dns.name.Name) -> dns.name.Name:
    if isinstance(name, dns.name.Name):
        return name if name.is_absolute() else name.concatenate(dns.name.root)
    try:
        n = dns.name.from_text(name.strip() or ".")
    except dns.exception.DNSException as e:
        raise ValueError(f"not a domain name: {name!r} ({e})") from e
    if n == dns.name.root:
        raise ValueError("the zone cannot be the root")
    return n


# -- rdata builders -------------------------------------------------------

IN = dns.rdataclass.IN


def ptr(target: dns.name.Name) -> dns.rdata.Rdata:
    return dns.rdtypes.ANY.PTR.PTR(IN, dns.rdatatype.PTR, target)  # type: ignore[no-untyped-call]


def srv(port: int, target: dns.name.Name, priority: int = 0, weight: int = 0) -> dns.rdata.Rdata:
    return dns.rdtypes.IN.SRV.SRV(  # type: ignore[no-untyped-call]
        IN, dns.rdatatype.SRV, priority, weight, port, target
    )


def txt(strings: Sequence[str]) -> dns.rdata.Rdata:
    return dns.rdtypes.ANY.TXT.TXT(IN, dns.rdatatype.TXT, [s.encode() for s in strings])


def address(ip: IPAddress) -> dns.rdata.Rdata:
    if ip.version == 4:
        return dns.rdtypes.IN.A.A(IN, dns.rdatatype.A, str(ip))  # type: ignore[no-untyped-call]
    return dns.rdtypes.IN.AAAA.AAAA(  # type: ignore[no-untyped-call]
        IN, dns.rdatatype.AAAA, str(ip)
    )


def address_type(ip: IPAddress) -> dns.rdatatype.RdataType:
    return dns.rdatatype.A if ip.version == 4 else dns.rdatatype.AAAA


def peer_txt(key: bytes, allowed: Iterable[str], nat: NatKind | None) -> list[str]:
    """The strings of a peer's service-instance TXT record (wgsd's, plus ``nat``)."""
    pub = Key(key).to_base64()  # as wg(8) prints it
    out = [f"txtvers={TXT_VERSION}", f"pub={pub}", f"allowed={','.join(allowed)}"]
    if nat is not None:
        out.append(f"nat={nat.value}")
    return out


def parse_txt(strings: Iterable[bytes]) -> dict[str, str]:
    """RFC 6763 section 6 key=value pairs; the first occurrence of a key wins."""
    out: dict[str, str] = {}
    for raw in strings:
        text = raw.decode("utf-8", "replace")
        key, _, value = text.partition("=")
        key = key.lower()
        if key and key not in out:
            out[key] = value
    return out


# -- client-side parsing --------------------------------------------------


def canonical_endpoint(address: str | IPAddress, port: int) -> Endpoint:
    """An endpoint whose host is the address's canonical text (``fd00::1``, never
    ``fd00:0::1``), so that endpoints compare equal exactly when they are the same
    address and port.  ValueError when ``address`` is not an IP address.

    Discovery compares endpoints from DNS answers, ``_whoami`` replies, the
    UAPI and ``getsockname``; each goes through here first.
    """
    return str(ipaddress.ip_address(address)), port


def endpoints_from_srv_response(
    response: dns.message.Message, instance: dns.name.Name
) -> list[Endpoint]:
    """Endpoints from an SRV answer and the A/AAAA records in its additional section.

    SRV records are taken in priority order (RFC 2782); each target's addresses
    in the order they appear.  Records for other names are ignored.
    """
    srvs: list[dns.rdtypes.IN.SRV.SRV] = []
    for rrset in response.answer:
        if rrset.name == instance and rrset.rdtype == dns.rdatatype.SRV:
            srvs.extend(r for r in rrset if isinstance(r, dns.rdtypes.IN.SRV.SRV))
    srvs.sort(key=lambda r: (r.priority, -r.weight))
    out: list[Endpoint] = []
    for rec in srvs:
        if not 0 < rec.port < 65536:
            continue
        for section in (response.additional, response.answer):
            for rrset in section:
                if rrset.name != rec.target:
                    continue
                if rrset.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    continue
                for r in rrset:
                    ep = canonical_endpoint(r.address, rec.port)
                    if ep not in out:
                        out.append(ep)
    return out


def txt_from_response(response: dns.message.Message, owner: dns.name.Name) -> dict[str, str]:
    """The key=value pairs of the first TXT record for ``owner`` in any section."""
    for section in (response.answer, response.additional):
        for rrset in section:
            if rrset.name == owner and rrset.rdtype == dns.rdatatype.TXT:
                for r in rrset:
                    return parse_txt(r.strings)
    return {}
