"""The discovery client: DNS lookups and UAPI sets around ``PathSelector``.

One ``refresh`` reads the device, looks up every peer's records (the NAT
mapping, the LAN candidates and, for peers without a healthy direct path,
our endpoint on the relay), optionally adds unknown peers and removes
vanished ones (``mesh``), publishes our LAN candidates, and now and then
probes the NAT type (at the listeners given, or those the zone publishes).
A ``tick`` runs each peer's ``PathSelector`` against the device's counters,
applies the endpoint it chooses, and asks the registry for a relay when the
selector wants one.  ``run_once`` is one refresh plus ticks until every
search settles (bounded); ``run_forever`` refreshes every ``interval`` and
ticks every quarter second while a search runs, every second otherwise.

The peer through which the registry is reached is never touched: changing
its endpoint from DNS data could cut the client off from the registry.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rdtypes.ANY.PTR
import dns.tsig
import dns.update
from prometheus_client.core import Metric

from wgpy.control.endpoint import format_endpoint
from wgpy.control.keys import Key
from wgpy.control.uapi import DeviceInfo, PeerInfo, UapiError, UapiProtocolError
from wgpy.control.uapi_client import UapiClient
from wgpy.discovery import records
from wgpy.discovery.dnsclient import RegistryClient, RegistryUnreachable
from wgpy.discovery.mesh import DEFAULT_GRACE, MeshBook
from wgpy.discovery.metrics import DiscoverCounters, PathBook, discover_families, path_kind
from wgpy.discovery.nat import NatReport, Observation, classify
from wgpy.discovery.paths import (
    Candidate,
    Observed,
    Origin,
    PathSelector,
    PathState,
    order_candidates,
)
from wgpy.discovery.records import IPAddress, IPNetwork, Kind, Names, NatKind, canonical_endpoint
from wgpy.discovery.registry import route_owner
from wgpy.discovery.server import peer_views, public_key_of
from wgpy.discovery.update import build_update, detect_lan_addresses
from wgpy.protocol.events import Endpoint
from wgpy.service import notify

__all__ = ["DiscoverOptions", "Discoverer", "RegistryUnreachable"]

log = logging.getLogger("wgpy.discover")

NAT_PROBE_EVERY = 10  # refreshes between NAT type probes
MAX_MESH_PEERS = 256
RELAY_ASK_EVERY = 5.0  # seconds between relay requests for one peer


@dataclass
class DiscoverOptions:
    interface: str
    registry: Endpoint | list[Endpoint]  # one server, or several in order of preference
    names: Names
    mesh: bool = False
    keepalive: int = 25  # persistent keepalive for peers that --mesh adds
    mesh_grace: float = DEFAULT_GRACE
    use_lan: bool = True
    publish_lan: bool = True
    lan_addresses: list[IPAddress] | None = None  # None: detect
    nat_probes: list[Endpoint] = field(default_factory=list)  # empty: the zone's
    use_relay: bool = True
    dns_timeout: float = 2.0
    try_timeout: float = 6.0
    direct_retry: float = 45.0  # the longest wait between direct tries from the relay
    interval: float = 15.0
    ttl: int = 30  # TTL of the records we publish
    tsig_key: dns.tsig.Key | None = None

    @property
    def registries(self) -> list[Endpoint]:
        return list(self.registry) if isinstance(self.registry, list) else [self.registry]


@dataclass
class PeerRecords:
    nat: list[Endpoint]
    lan: list[Endpoint]
    txt: dict[str, str]


def network_list(cidrs: list[str]) -> list[IPNetwork]:
    out = []
    for c in cidrs:
        try:
            out.append(ipaddress.ip_network(c, strict=False))
        except ValueError:
            continue
    return out


class Discoverer:
    def __init__(
        self,
        opts: DiscoverOptions,
        uapi: UapiClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        out: TextIO | None = None,
    ) -> None:
        self.opts = opts
        self.uapi = uapi or UapiClient(opts.interface)
        self.dns = RegistryClient(opts.registries, opts.dns_timeout, opts.tsig_key)
        self.clock = clock
        self.wall = wall
        self.out = out
        self.selectors: dict[bytes, PathSelector] = {}
        self.records: dict[bytes, PeerRecords] = {}
        self.relays: dict[bytes, Candidate] = {}  # our endpoint on the relay, per peer
        self.paths: dict[bytes, PathState] = {}
        self.mesh_book = MeshBook(opts.mesh_grace)
        self.nat_report: NatReport | None = None
        self.our_public: Endpoint | None = None
        self.registry_peers: set[bytes] = set()
        self.status: dict[bytes, str] = {}
        self._refreshes = 0
        self._remote_nat: dict[bytes, str] = {}
        self._relay_asked: dict[bytes, float] = {}
        self._warned: set[str] = set()
        self.pathbook = PathBook()  # metrics: each peer's path and since when
        self.counters = DiscoverCounters()

    @property
    def registry_peer(self) -> bytes | None:
        """The peer through which the (first) registry is reached, if any."""
        return next(iter(sorted(self.registry_peers)), None)

    # -- DNS -----------------------------------------------------------------

    def _query(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        return self.dns.query(name, rdtype)

    def lookup(self, key: bytes) -> PeerRecords | None:
        """A peer's published endpoints, or None when the registry has none."""
        n = self.opts.names
        r = self._query(n.instance(key), dns.rdatatype.SRV)
        if r.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise RegistryUnreachable(f"registry answered {dns.rcode.to_text(r.rcode())}")
        nat = records.endpoints_from_srv_response(r, n.instance(key))
        if not nat:
            return None
        txt = records.txt_from_response(r, n.instance(key))
        lan: list[Endpoint] = []
        if self.opts.use_lan:
            lr = self._query(n.lan_instance(key), dns.rdatatype.SRV)
            lan = records.endpoints_from_srv_response(lr, n.lan_instance(key))
        return PeerRecords(nat, lan, txt)

    def lookup_relay(self, me: bytes, peer: bytes) -> Candidate | None:
        """Our endpoint on the relay for ``peer``, if the registry allocated one."""
        name = self.opts.names.relay_instance(me, peer)
        r = self._query(name, dns.rdatatype.SRV)
        found = records.endpoints_from_srv_response(r, name)
        if not found:
            return None
        v6 = self.our_public is not None and ":" in self.our_public[0]
        same = [e for e in found if (":" in e[0]) == v6]
        return Candidate((same or found)[0], Origin.RELAY)

    # -- one refresh -----------------------------------------------------------

    def refresh(self) -> None:
        """Look everything up again; RegistryUnreachable or UapiError on failure."""
        info = self.uapi.get()
        if not info.private_key:
            raise RegistryUnreachable(f"{self.opts.interface} has no private key configured")
        me = public_key_of(info.private_key)
        views = peer_views(info)
        self.registry_peers = set()
        for host, _port in self.opts.registries:
            owner = route_owner(ipaddress.ip_address(host.split("%")[0]), views)
            if owner is not None:
                self.registry_peers.add(owner.public_key)
        if not self.registry_peers and "no-route" not in self._warned:
            self._warned.add("no-route")
            log.warning("no --registry address is inside any peer's allowed IPs: queries will "
                        "not go through the tunnel and LAN candidate updates will be refused")
        self._refreshes += 1
        own = self.lookup(me)
        self.our_public = own.nat[0] if own else None  # its family decides the probes'
        # While relayed, the NAT type is measured every pass: a NAT that stops
        # being symmetric is what lets a relayed peer go direct.
        relayed = any(s is PathState.RELAYED for s in self.paths.values())
        if self._refreshes % NAT_PROBE_EVERY == 1 or relayed:
            self.probe_nat()
        if self.opts.publish_lan:
            self.publish(info, me)  # before the lookups: a peer starting now may see it
        for peer in info.peers:
            if peer.public_key in self.registry_peers:
                continue
            recs = self.lookup(peer.public_key)
            self._note(peer.public_key, recs)
            if self.opts.use_relay and recs is not None and \
                    self.paths.get(peer.public_key) not in (PathState.DIRECT, PathState.LAN):
                self._note_relay(peer.public_key, self.lookup_relay(me, peer.public_key))
        if self.opts.mesh:
            self.mesh(info, me)

    def _note(self, key: bytes, recs: PeerRecords | None) -> None:
        short = Key(key).short_name()
        if recs is None:
            if self.records.pop(key, None) is not None or key not in self.status:
                log.info("%s: no endpoint published (is it connected to the registry?)",
                         short)
            self.status[key] = "no records"
            return
        old = self.records.get(key)
        self.records[key] = recs
        if old is None or old.nat != recs.nat or old.lan != recs.lan:
            lan = _endpoints_text(recs.lan) or "none"
            log.info("%s: mapping %s, LAN candidates %s", short, _endpoints_text(recs.nat), lan)
        nat = recs.txt.get("nat", "")
        if nat != self._remote_nat.get(key, ""):
            self._remote_nat[key] = nat
            if nat == NatKind.SYMMETRIC.value:
                self.say(f"{short} is behind a symmetric NAT: its published mapping "
                         "will not accept us; a direct path is unlikely", logging.WARNING)

    def _note_relay(self, key: bytes, relay: Candidate | None) -> None:
        old = self.relays.get(key)
        if relay == old:
            return
        short = Key(key).short_name()
        if relay is None:
            del self.relays[key]
            log.info("%s: the relay allocation ended", short)
        else:
            self.relays[key] = relay
            log.info("%s: relay endpoint %s", short, relay.text)

    def request_relay(self, me: bytes, peer: bytes) -> Candidate | None:
        """Ask the registry (through the tunnel) for a relay to ``peer``; our endpoint on it."""
        n = self.opts.names
        msg = dns.update.UpdateMessage(n.zone)
        msg.add(n.relay_instance(me, peer), self.opts.ttl, records.srv(0, n.relay_host))
        rcode, server = self.dns.update(msg)
        short = Key(peer).short_name()
        if rcode != dns.rcode.NOERROR:
            key = f"relay-{rcode}"
            if key not in self._warned:
                self._warned.add(key)
                log.warning("%s: the registry refused a relay (%s); see its log", short,
                            dns.rcode.to_text(rcode))
            return None
        relay = self.lookup_relay(me, peer)
        self._note_relay(peer, relay)
        return relay

    # -- NAT type ----------------------------------------------------------------

    def nat_probes(self) -> list[Endpoint]:
        """``--nat-probe``, or the listeners the zone publishes."""
        if self.opts.nat_probes:
            return self.opts.nat_probes
        n = self.opts.names
        try:
            r = self._query(n.probe_service, dns.rdatatype.SRV)
        except RegistryUnreachable as e:
            log.warning("cannot look up the NAT probe listeners: %s", e)
            return []
        found = records.endpoints_from_srv_response(r, n.probe_service)
        v4 = [e for e in found if ":" not in e[0]]
        v6 = [e for e in found if ":" in e[0]]
        # Probe in the family we reach the registry's public side with: the mapping
        # that matters is the one our WireGuard traffic gets.
        if self.our_public is not None and ":" in self.our_public[0]:
            return v6 or v4
        return v4 or v6

    def probe_nat(self) -> NatReport | None:
        """Ask two or more registry listeners which mapping they see for one socket."""
        probes = self.nat_probes()
        if not probes:
            if "no-probes" not in self._warned:
                self._warned.add("no-probes")
                log.info("no NAT probe listeners (none published, no --nat-probe): "
                         "NAT type not measured")
            return None
        family = socket.AF_INET6 if ":" in probes[0][0] else socket.AF_INET
        obs: list[Observation] = []
        local: Endpoint | None = None
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
            port = sock.getsockname()[1]
            for host, pport in probes:
                if (":" in host) != (family == socket.AF_INET6):
                    continue
                probe = format_endpoint(host, pport)
                try:
                    r = dns.query.udp(dns.message.make_query(self.opts.names.whoami, "TXT"), host,
                                      timeout=self.opts.dns_timeout, port=pport, sock=sock)
                    txt = records.txt_from_response(r, self.opts.names.whoami)
                    mapped = canonical_endpoint(txt["addr"], int(txt["port"]))
                except (dns.exception.DNSException, OSError, KeyError, ValueError) as e:
                    log.warning("NAT probe %s failed: %s", probe, e or type(e).__name__)
                    continue
                obs.append(Observation(probe, mapped))
                if local is None:
                    local = _local_endpoint(family, host, pport, port)
        report = classify(local, obs)
        if self.nat_report is None or report.kind != self.nat_report.kind:
            self.say(str(report), logging.WARNING if report.kind is NatKind.SYMMETRIC
                     else logging.INFO)
        self.nat_report = report
        return report

    # -- publishing and mesh --------------------------------------------------------

    def publish(self, info: DeviceInfo, me: bytes) -> None:
        if self.opts.lan_addresses is not None:
            addrs = list(self.opts.lan_addresses)
        else:
            exclude = [net for p in info.peers for net in network_list(p.allowed_ips)]
            try:
                addrs = detect_lan_addresses(self.opts.interface, exclude)
            except OSError as e:
                log.warning("cannot list local addresses: %s", e)
                addrs = []
        nat = self.nat_report.kind if self.nat_report else None
        msg = build_update(self.opts.names, me, info.listen_port, addrs, nat, self.opts.ttl)
        rcode, server = self.dns.update(msg)
        key = f"publish-{rcode}"
        if rcode != dns.rcode.NOERROR:
            if key not in self._warned:
                log.warning("registry refused our LAN candidates (%s from %s); see its log",
                            dns.rcode.to_text(rcode), format_endpoint(*server))
            self._warned.add(key)
        elif key not in self._warned:
            self._warned.add(key)
            log.info("published LAN candidates %s port %d",
                     ", ".join(map(str, addrs)) or "(none)", info.listen_port)

    def mesh(self, info: DeviceInfo, me: bytes) -> None:
        """Add peers the registry lists that the device does not know yet; remove
        those we added that it has stopped listing (after the grace period)."""
        n = self.opts.names
        r = self._query(n.service, dns.rdatatype.PTR)
        known = {p.public_key for p in info.peers}
        taken = [net for p in info.peers for net in network_list(p.allowed_ips)]
        keys: list[bytes] = []
        for rrset in r.answer:
            if rrset.name != n.service or rrset.rdtype != dns.rdatatype.PTR:
                continue
            for rec in rrset:
                if not isinstance(rec, dns.rdtypes.ANY.PTR.PTR):
                    continue  # a reply of another class: not ours to trust
                kind, key = n.classify(rec.target)
                if kind is Kind.INSTANCE and key is not None and key not in keys:
                    keys.append(key)
        now = self.clock()
        self.mesh_book.listed(keys, now)
        for key in list(self.mesh_book.last_listed):
            if key not in known:
                self.mesh_book.forget(key)  # removed by someone else
        for key in self.mesh_book.vanished(now):
            self.uapi.set([f"public_key={key.hex()}", "remove=true"])
            self.records.pop(key, None)
            self.relays.pop(key, None)
            self.paths.pop(key, None)
            self.status.pop(key, None)
            self.selectors.pop(key, None)
            self.say(f"mesh: removed {Key(key).short_name()}: not listed by the registry "
                     f"for {self.mesh_book.grace:g}s")
        for key in keys[:MAX_MESH_PEERS]:
            if key == me or key in known:
                continue
            recs = self.lookup(key)
            if recs is None:
                continue
            allowed = self._mesh_allowed(key, recs, taken)
            if allowed is None:
                continue
            lines = [f"public_key={key.hex()}", f"endpoint={format_endpoint(*recs.nat[0])}",
                     f"persistent_keepalive_interval={self.opts.keepalive}",
                     "replace_allowed_ips=true"] + [f"allowed_ip={a}" for a in allowed]
            self.uapi.set(lines)
            self.mesh_book.added(key, now)
            taken += allowed
            self._note(key, recs)
            self.say(f"mesh: added {Key(key).short_name()} allowed "
                     f"{','.join(map(str, allowed))} at {format_endpoint(*recs.nat[0])}")

    def _mesh_allowed(
        self, key: bytes, recs: PeerRecords, taken: list[IPNetwork]
    ) -> list[IPNetwork] | None:
        short = Key(key).short_name()
        txt = recs.txt
        if txt.get("txtvers") != str(records.TXT_VERSION) or txt.get("pub") != \
                Key(key).to_base64():
            log.warning("mesh: skipping %s: TXT record missing or for another key", short)
            return None
        try:
            allowed = [ipaddress.ip_network(a, strict=False)
                       for a in txt.get("allowed", "").split(",") if a]
        except ValueError:
            log.warning("mesh: skipping %s: bad allowed IPs %r", short, txt.get("allowed"))
            return None
        clash = [str(a) for a in allowed for t in taken if a.version == t.version and a.overlaps(t)]
        if clash:
            # WireGuard would move these routes away from the peer that has them.
            log.warning("mesh: skipping %s: allowed IPs %s overlap configured peers",
                        short, ", ".join(clash))
            return None
        return allowed

    # -- endpoint selection ---------------------------------------------------------

    def tick(self) -> bool:
        """Run every peer's selector once; True while some search is in progress."""
        info = self.uapi.get()
        me = public_key_of(info.private_key) if info.private_key else b""
        now, wall = self.clock(), self.wall()
        busy = False
        for peer in info.peers:
            key = peer.public_key
            recs = self.records.get(key)
            if key in self.registry_peers or recs is None:
                continue
            sel = self.selectors.get(key)
            if sel is None:
                pka = peer.persistent_keepalive_interval
                sel = PathSelector(try_timeout=self.opts.try_timeout,
                                   stale_after=max(10.0, 3.0 * pka + 2.0),
                                   retry_after=max(20.0, 3 * self.opts.try_timeout),
                                   direct_retry_max=self.opts.direct_retry,
                                   direct_retry_min=min(5.0, self.opts.direct_retry))
                self.selectors[key] = sel
            candidates = order_candidates(recs.nat, recs.lan, self.our_public)
            observed = Observed(peer.endpoint, peer.rx_bytes,
                                can_nudge=peer.persistent_keepalive_interval > 0,
                                handshake_age=_age(peer, wall))
            relay = self.relays.get(key)
            ours = self.nat_report is not None and self.nat_report.kind is NatKind.SYMMETRIC
            theirs = self._remote_nat.get(key) == NatKind.SYMMETRIC.value
            asked_by_peer = key in self.relays and key not in self._relay_asked
            action, events = sel.step(now, observed, candidates, relay,
                                      prefer_relay=ours or theirs or asked_by_peer,
                                      hopeless=ours and theirs)
            self.pathbook.observe(key, path_kind(sel, now, observed, candidates, relay),
                                  peer.endpoint, now)
            short = Key(key).short_name()
            for ev in events:
                level = {"exhausted": logging.WARNING, "probe-failed": logging.DEBUG}.get(
                    ev.kind, logging.INFO)
                self.say(f"{short}: {ev.message}", level)
            if action is not None:
                self._set_endpoint(peer, action.candidate, action.nudge)
                log.info("%s: %s", short, action.reason)
                self.status[key] = f"trying {action.candidate}"
            if sel.wants_relay and relay is None and self.opts.use_relay and me and \
                    now - self._relay_asked.get(key, float("-inf")) >= RELAY_ASK_EVERY:
                self._relay_asked[key] = now
                try:
                    self.request_relay(me, key)
                except RegistryUnreachable as e:
                    log.warning("%s: cannot ask for a relay: %s", short, e)
            if action is None:  # else the device has changed since ``observed``
                self._track_state(key, sel, now, observed, candidates, relay)
            if sel.trying is not None and sel.fallback is None:
                busy = True
        return busy

    def _track_state(
        self, key: bytes, sel: PathSelector, now: float, observed: Observed,
        candidates: list[Candidate], relay: Candidate | None,
    ) -> None:
        if sel.trying is not None:
            return  # a try is under way: the endpoint says nothing yet
        state = sel.state(now, observed, candidates, relay)
        old = self.paths.get(key)
        self.paths[key] = state
        if old != state or self.status.get(key, "").startswith("try"):
            where = observed.endpoint or "none"
            self.status[key] = f"{state.value} via {where}"
            if old is not None and old != state:
                log.info("%s: path %s -> %s (%s)", Key(key).short_name(), old.value,
                         state.value, where)

    def _set_endpoint(self, peer: PeerInfo, c: Candidate, nudge: bool) -> None:
        head = [f"public_key={peer.public_key.hex()}", "update_only=true"]
        lines = list(head)
        if peer.endpoint != c.text:
            lines.append(f"endpoint={c.text}")
        pka = peer.persistent_keepalive_interval
        if nudge and pka:
            # Turning persistent keepalive off and on makes the device send a
            # keepalive now (wgpyd, wireguard-go, the kernel), starting a
            # handshake if needed.  Two sets: wgpyd applies a set as a whole, so
            # "0" then "N" in one set would leave N and send nothing.
            self.uapi.set([*lines, "persistent_keepalive_interval=0"])
            self.uapi.set([*head, f"persistent_keepalive_interval={pka}"])
            self.counters.endpoint_sets += 1
        elif len(lines) > len(head):
            self.uapi.set(lines)
            self.counters.endpoint_sets += 1

    # -- drivers ----------------------------------------------------------------------

    def run_once(self, max_wait: float | None = None) -> int:
        """One refresh, then ticks until every search settles or ``max_wait`` passes."""
        self.refresh()
        limit = max_wait if max_wait is not None else self.opts.try_timeout * 3 + 2
        deadline = self.clock() + limit
        while self.tick() and self.clock() < deadline:
            time.sleep(0.25)
        return 0

    def run_forever(self, stop: threading.Event) -> int:
        next_refresh = self.clock()
        failures = 0
        while not stop.is_set():
            now = self.clock()
            # A direct probe from the relay loses packets until it ends: a refresh
            # (DNS round trips, NAT probes) waits for it rather than prolong it.
            probing = any(s.fallback is not None for s in self.selectors.values())
            if now >= next_refresh and not probing:
                try:
                    self.refresh()
                    if failures:
                        log.info("registry reachable again")
                    failures = 0
                    self.counters.refreshes += 1
                    self.counters.registry_ok = True
                except (RegistryUnreachable, UapiError, UapiProtocolError) as e:
                    failures += 1
                    self.counters.refresh_failures += 1
                    self.counters.registry_ok = False
                    if failures == 1 or failures % 10 == 0:
                        log.warning("%s (attempt %d)", e, failures)
                if self.counters.refreshes + self.counters.refresh_failures == 1:
                    # Serving: the device was read and the registry asked once.
                    notify.ready("registry reachable" if failures == 0 else
                                 "registry not reachable yet")
                next_refresh = now + self.opts.interval
            try:
                busy = self.tick()
            except (UapiError, UapiProtocolError) as e:
                log.warning("cannot read %s: %s", self.opts.interface, e)
                busy = False
            trying = any(s.trying is not None for s in self.selectors.values())
            stop.wait(0.25 if busy or trying else 1.0)
        return 0

    def metrics(self) -> Iterator[Metric]:
        """This discover's metrics (``discovery.metrics``), for a scrape thread."""
        nat = self.nat_report.kind.value if self.nat_report is not None else None
        return discover_families(self.opts.interface, self.pathbook, self.counters, nat,
                                 self.clock)

    def say(self, message: str, level: int = logging.INFO) -> None:
        """Report to the output stream when there is one (``--once``), else to the log."""
        if self.out is not None:
            log.debug("%s", message)
            if level > logging.DEBUG:
                print(message, file=self.out, flush=True)
        else:
            log.log(level, "%s", message)

    def summary(self) -> list[str]:
        lines = []
        if self.nat_report is not None:
            lines.append(str(self.nat_report))
        for key, status in sorted(self.status.items()):
            lines.append(f"{Key(key).to_base64()}  {status}")
        return lines


def _endpoints_text(endpoints: list[Endpoint]) -> str:
    return ", ".join(format_endpoint(*e) for e in endpoints)


def _age(peer: PeerInfo, wall: float) -> float | None:
    if not peer.last_handshake_time_sec:
        return None
    return wall - (peer.last_handshake_time_sec + peer.last_handshake_time_nsec / 1e9)


def _local_endpoint(family: int, host: str, port: int, local_port: int) -> Endpoint | None:
    """The source address the kernel picks towards ``host`` (no packet is sent)."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return canonical_endpoint(s.getsockname()[0], local_port)
    except OSError:
        return None
