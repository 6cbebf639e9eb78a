"""The discovery client: DNS lookups and UAPI sets around ``PathSelector``.

One ``refresh`` reads the device, looks up every peer's records (the NAT
mapping and the LAN candidates), optionally adds unknown peers (``mesh``),
publishes our LAN candidates, and now and then probes the NAT type.  A
``tick`` runs each peer's ``PathSelector`` against the device's counters and
applies the endpoint it chooses.  ``run_once`` is one refresh plus ticks
until every search settles (bounded); ``run_forever`` refreshes every
``interval`` and ticks every second.

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
from prometheus_client.core import Metric

from wgpy.control.endpoint import format_endpoint
from wgpy.control.keys import Key
from wgpy.control.uapi import DeviceInfo, PeerInfo, UapiError, UapiProtocolError
from wgpy.control.uapi_client import UapiClient
from wgpy.discovery import records
from wgpy.discovery.metrics import DiscoverCounters, PathBook, discover_families, path_kind
from wgpy.discovery.nat import NatReport, Observation, classify
from wgpy.discovery.paths import Candidate, Observed, PathSelector, order_candidates
from wgpy.discovery.records import IPAddress, IPNetwork, Kind, Names, NatKind, canonical_endpoint
from wgpy.discovery.registry import route_owner
from wgpy.discovery.server import peer_views, public_key_of
from wgpy.discovery.update import build_update, detect_lan_addresses
from wgpy.protocol.events import Endpoint
from wgpy.service import notify

log = logging.getLogger("wgpy.discover")

NAT_PROBE_EVERY = 10  # refreshes between NAT type probes
MAX_MESH_PEERS = 256


class RegistryUnreachable(Exception):
    pass


@dataclass
class DiscoverOptions:
    interface: str
    registry: Endpoint
    names: Names
    mesh: bool = False
    keepalive: int = 25  # persistent keepalive for peers that --mesh adds
    use_lan: bool = True
    publish_lan: bool = True
    lan_addresses: list[IPAddress] | None = None  # None: detect
    nat_probes: list[Endpoint] = field(default_factory=list)
    dns_timeout: float = 2.0
    try_timeout: float = 6.0
    interval: float = 15.0
    ttl: int = 30  # TTL of the records we publish


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
        self.clock = clock
        self.wall = wall
        self.out = out
        self.selectors: dict[bytes, PathSelector] = {}
        self.records: dict[bytes, PeerRecords] = {}
        self.nat_report: NatReport | None = None
        self.our_public: Endpoint | None = None
        self.registry_peer: bytes | None = None
        self.status: dict[bytes, str] = {}
        self._refreshes = 0
        self._remote_nat: dict[bytes, str] = {}
        self._warned: set[str] = set()
        self.pathbook = PathBook()  # metrics: each peer's path and since when
        self.counters = DiscoverCounters()

    # -- DNS -----------------------------------------------------------------

    def _query(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        host, port = self.opts.registry
        q = dns.message.make_query(name, rdtype)
        try:
            response, _tcp = dns.query.udp_with_fallback(
                q, host, timeout=self.opts.dns_timeout, port=port
            )
        except (dns.exception.DNSException, OSError) as e:
            raise RegistryUnreachable(
                f"registry {format_endpoint(host, port)} did not answer {name} "
                f"{dns.rdatatype.to_text(rdtype)}: {e or type(e).__name__}"
            ) from e
        return response

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

    # -- one refresh -----------------------------------------------------------

    def refresh(self) -> None:
        """Look everything up again; RegistryUnreachable or UapiError on failure."""
        info = self.uapi.get()
        if not info.private_key:
            raise RegistryUnreachable(f"{self.opts.interface} has no private key configured")
        me = public_key_of(info.private_key)
        reg_ip = ipaddress.ip_address(self.opts.registry[0].split("%")[0])
        owner = route_owner(reg_ip, peer_views(info))
        self.registry_peer = owner.public_key if owner else None
        if owner is None and "no-route" not in self._warned:
            self._warned.add("no-route")
            log.warning("registry %s is not inside any peer's allowed IPs: queries will not go "
                        "through the tunnel and LAN candidate updates will be refused",
                        self.opts.registry[0])
        self._refreshes += 1
        if self.opts.nat_probes and (self._refreshes % NAT_PROBE_EVERY == 1):
            self.probe_nat()
        if self.opts.publish_lan:
            self.publish(info, me)  # first: a peer starting at the same time may see it
        own = self.lookup(me)
        self.our_public = own.nat[0] if own else None
        for peer in info.peers:
            if peer.public_key == self.registry_peer:
                continue
            recs = self.lookup(peer.public_key)
            self._note(peer.public_key, recs)
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

    # -- NAT type ----------------------------------------------------------------

    def probe_nat(self) -> NatReport:
        """Ask two or more registry listeners which mapping they see for one socket."""
        family = socket.AF_INET6 if ":" in self.opts.nat_probes[0][0] else socket.AF_INET
        obs: list[Observation] = []
        local: Endpoint | None = None
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
            port = sock.getsockname()[1]
            for host, pport in self.opts.nat_probes:
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
        host, port = self.opts.registry
        try:
            r = dns.query.udp(msg, host, timeout=self.opts.dns_timeout, port=port)
        except (dns.exception.DNSException, OSError) as e:
            raise RegistryUnreachable(f"LAN candidate update to {host}: {e}") from e
        rcode = r.rcode()
        key = f"publish-{rcode}"
        if rcode != dns.rcode.NOERROR:
            if key not in self._warned:
                log.warning("registry refused our LAN candidates (%s); see its log",
                            dns.rcode.to_text(rcode))
            self._warned.add(key)
        elif key not in self._warned:
            self._warned.add(key)
            log.info("published LAN candidates %s port %d",
                     ", ".join(map(str, addrs)) or "(none)", info.listen_port)

    def mesh(self, info: DeviceInfo, me: bytes) -> None:
        """Add peers the registry lists that the device does not know yet."""
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
        now, wall = self.clock(), self.wall()
        busy = False
        for peer in info.peers:
            key = peer.public_key
            recs = self.records.get(key)
            if key == self.registry_peer or recs is None:
                continue
            sel = self.selectors.get(key)
            if sel is None:
                pka = peer.persistent_keepalive_interval
                sel = PathSelector(try_timeout=self.opts.try_timeout,
                                   stale_after=max(10.0, 3.0 * pka + 2.0),
                                   retry_after=max(20.0, 3 * self.opts.try_timeout))
                self.selectors[key] = sel
            candidates = order_candidates(recs.nat, recs.lan, self.our_public)
            observed = Observed(peer.endpoint, peer.rx_bytes,
                                can_nudge=peer.persistent_keepalive_interval > 0,
                                handshake_age=_age(peer, wall))
            action, events = sel.step(now, observed, candidates)
            self.pathbook.observe(key, path_kind(sel, now, observed, candidates),
                                  peer.endpoint, now)
            short = Key(key).short_name()
            for ev in events:
                level = logging.WARNING if ev.kind == "exhausted" else logging.INFO
                self.say(f"{short}: {ev.message}", level)
                if ev.kind == "confirmed" and sel.confirmed is not None:
                    self.status[key] = f"direct via {sel.confirmed}"
            if action is not None:
                self._set_endpoint(peer, action.candidate, action.nudge)
                log.info("%s: %s", short, action.reason)
                self.status[key] = f"trying {action.candidate}"
            if sel.trying is not None:
                busy = True
            elif key not in self.status or self.status[key].startswith("trying"):
                self.status[key] = f"endpoint {peer.endpoint or 'none'}"
        return busy

    def _set_endpoint(self, peer: PeerInfo, c: Candidate, nudge: bool) -> None:
        lines = [f"public_key={peer.public_key.hex()}", "update_only=true"]
        if peer.endpoint != c.text:
            lines.append(f"endpoint={c.text}")
        pka = peer.persistent_keepalive_interval
        if nudge and pka:
            # Turning persistent keepalive off and on makes the device send a
            # keepalive now (wireguard-go, the kernel), starting a handshake.
            lines += ["persistent_keepalive_interval=0", f"persistent_keepalive_interval={pka}"]
        if len(lines) > 2:
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
            if now >= next_refresh:
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
            stop.wait(0.25 if busy else 1.0)
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
