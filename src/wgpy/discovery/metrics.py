"""Prometheus metrics of ``wgpy registry`` and ``wgpy discover``.

The registry's counters are ``Registry.stats`` (sans-IO, kept as messages
are answered); a scrape copies them on the registry's loop
(``service.metrics.on_loop``) with the peer table it last read.

discover's path per peer is kept by a ``PathBook`` (sans-IO, the time is
passed in) that ``Discoverer.tick`` feeds after each peer's ``PathSelector``
step: the kind of path the peer's traffic takes and since when.  The kind
comes from discover's own state: the candidate the device's endpoint is set
to, and whether the peer's traffic flows (``PathSelector.healthy``):

* ``direct``: traffic flows on the peer's NAT mapping, or on an endpoint
  WireGuard learned by roaming (no candidate names it);
* ``lan``: traffic flows on a LAN candidate the peer published;
* ``relayed``: traffic flows through the registry's relay (the endpoint is
  the relay allocation discover was given);
* ``none``: no traffic within the selector's ``stale_after``.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from wgpy.control.keys import Key
from wgpy.discovery.paths import Candidate, Observed, PathSelector
from wgpy.discovery.paths import PathState as PathKind

PATH_KINDS = tuple(k.value for k in PathKind)


def path_kind(selector: PathSelector, now: float, observed: Observed,
              candidates: Sequence[Candidate], relay: Candidate | None = None) -> str:
    """The kind of path a peer's traffic takes (see the module's docstring):
    ``PathSelector.state``'s name for it; call after the selector's ``step``."""
    return selector.state(now, observed, candidates, relay).value


@dataclass(frozen=True)
class PathState:
    kind: str
    endpoint: str
    since: float  # monotonic time of the last change of kind


class PathBook:
    """The current path of every peer discover handles.  ``paths`` is replaced
    entry by entry with frozen values, so a scrape thread may copy it."""

    def __init__(self) -> None:
        self.paths: dict[bytes, PathState] = {}
        self.changes: Counter[str] = Counter()  # path changes, by the new kind

    def observe(self, key: bytes, kind: str, endpoint: str | None, now: float) -> None:
        old = self.paths.get(key)
        if old is not None and old.kind == kind:
            if old.endpoint != (endpoint or ""):
                self.paths[key] = PathState(kind, endpoint or "", old.since)
            return
        self.paths[key] = PathState(kind, endpoint or "", now)
        if old is not None:
            self.changes[kind] += 1

    def forget(self, keep: set[bytes]) -> None:
        for key in [k for k in self.paths if k not in keep]:
            del self.paths[key]


@dataclass
class DiscoverCounters:
    """What discover's loop counts, for its metrics."""

    refreshes: int = 0
    refresh_failures: int = 0
    endpoint_sets: int = 0
    registry_ok: bool = False


def discover_families(
    interface: str,
    book: PathBook,
    counters: DiscoverCounters,
    nat: str | None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Metric]:
    now = clock()
    labels = ["device", "public_key"]
    path = GaugeMetricFamily("wgpy_discover_peer_path",
                             "1 for the kind of path the peer's traffic takes now "
                             "(direct, lan, relayed, none), 0 for the others",
                             labels=[*labels, "path"])
    age = GaugeMetricFamily("wgpy_discover_peer_path_seconds",
                            "Seconds since the peer's path last changed kind",
                            labels=labels)
    info = GaugeMetricFamily("wgpy_discover_peer_endpoint_info",
                             "The endpoint the device has for the peer", labels=[*labels,
                                                                                 "endpoint"])
    for key, st in sorted(dict(book.paths).items()):
        pub = Key(key).to_base64()
        for kind in PATH_KINDS:
            path.add_metric([interface, pub, kind], 1.0 if st.kind == kind else 0.0)
        age.add_metric([interface, pub], max(0.0, now - st.since))
        info.add_metric([interface, pub, st.endpoint], 1.0)
    changes = CounterMetricFamily("wgpy_discover_path_changes",
                                  "Changes of a peer's path, by the new kind",
                                  labels=["device", "path"])
    for kind in PATH_KINDS:
        changes.add_metric([interface, kind], float(book.changes[kind]))
    refreshes = CounterMetricFamily("wgpy_discover_refreshes",
                                    "Look-ups of every peer in the registry",
                                    labels=["device", "result"])
    refreshes.add_metric([interface, "ok"], float(counters.refreshes))
    refreshes.add_metric([interface, "failed"], float(counters.refresh_failures))
    sets = CounterMetricFamily("wgpy_discover_endpoint_sets",
                               "Peer endpoints set on the device", labels=["device"])
    sets.add_metric([interface], float(counters.endpoint_sets))
    up = GaugeMetricFamily("wgpy_discover_registry_up",
                           "1 if the last look-up in the registry succeeded", labels=["device"])
    up.add_metric([interface], 1.0 if counters.registry_ok else 0.0)
    yield from (path, age, info, changes, refreshes, sets, up)
    if nat:
        nat_f = GaugeMetricFamily("wgpy_discover_nat_info", "This host's NAT type, as probed",
                                  labels=["device", "nat"])
        nat_f.add_metric([interface, nat], 1.0)
        yield nat_f


@dataclass(frozen=True)
class RegistrySnapshot:
    stats: dict[str, int]
    published: int  # peers with an endpoint
    peers: int
    lan_candidates: int
    device_ok: bool


def registry_families(zone: str, snap: RegistrySnapshot) -> Iterator[Metric]:
    st = snap.stats
    lab = ["zone"]
    messages = CounterMetricFamily("wgpy_registry_messages", "DNS messages received",
                                   labels=lab)
    messages.add_metric([zone], float(st.get("messages", 0)))
    queries = CounterMetricFamily("wgpy_registry_queries", "Queries answered, by query type",
                                  labels=[*lab, "type"])
    responses = CounterMetricFamily("wgpy_registry_responses", "Responses sent, by rcode",
                                    labels=[*lab, "rcode"])
    for k, v in sorted(st.items()):
        if k.startswith("qtype."):
            queries.add_metric([zone, k[6:]], float(v))
        elif k.startswith("rcode."):
            responses.add_metric([zone, k[6:]], float(v))
    updates = CounterMetricFamily("wgpy_registry_updates",
                                  "DNS UPDATEs (LAN candidates, relay requests), by result",
                                  labels=[*lab, "result"])
    updates.add_metric([zone, "accepted"], float(st.get("updates.accepted", 0)))
    updates.add_metric([zone, "refused"],
                       float(st.get("update.refused", 0) + st.get("relay.refused", 0)))
    dropped = CounterMetricFamily("wgpy_registry_dropped",
                                  "Messages dropped unanswered, by reason",
                                  labels=[*lab, "reason"])
    for reason, key in (("response", "dropped"), ("queue_full", "dropped.queue"),
                        ("tcp_clients", "dropped.tcp")):
        dropped.add_metric([zone, reason], float(st.get(key, 0)))
    malformed = CounterMetricFamily("wgpy_registry_malformed",
                                    "Messages that did not parse (answered FORMERR if possible)",
                                    labels=lab)
    malformed.add_metric([zone], float(st.get("formerr", 0)))
    truncated = CounterMetricFamily("wgpy_registry_truncated", "Responses truncated (TC)",
                                    labels=lab)
    truncated.add_metric([zone], float(st.get("truncated", 0)))
    expired = CounterMetricFamily("wgpy_registry_lan_expired",
                                  "LAN candidates whose lease ran out", labels=lab)
    expired.add_metric([zone], float(st.get("lan.expired", 0)))
    published = GaugeMetricFamily("wgpy_registry_published_peers",
                                  "Peers published (those with an endpoint)", labels=lab)
    published.add_metric([zone], float(snap.published))
    peers = GaugeMetricFamily("wgpy_registry_peers", "Peers of the device", labels=lab)
    peers.add_metric([zone], float(snap.peers))
    lan = GaugeMetricFamily("wgpy_registry_lan_candidates",
                            "Peers with LAN candidates stored", labels=lab)
    lan.add_metric([zone], float(snap.lan_candidates))
    device = GaugeMetricFamily("wgpy_registry_device_up",
                               "1 if the device's peer table could be read", labels=lab)
    device.add_metric([zone], 1.0 if snap.device_ok else 0.0)
    yield from (messages, queries, responses, updates, dropped, malformed, truncated,
                expired, published, peers, lan, device)
    yield from _zone_families(zone, st)
    yield from _relay_families(zone, st)


# The families below read the counters the SIGUSR1 line shows (``Server.counters``),
# by their keys' prefixes: what is counted there is on /metrics without a list kept
# twice.  A category's refusals are ``CATEGORY.refused``; its answers the rate
# limit held back, ``CATEGORY.dropped``.
_CATEGORY_KEY = re.compile(r"([a-z]+)\.(refused|dropped)")
_TSIG_KEY = re.compile(r"tsig\.([a-z_]+)")
_XFR_KEY = re.compile(r"xfr\.([a-z]+)\.(requests|full|incremental)")


def _zone_families(zone: str, st: dict[str, int]) -> Iterator[Metric]:
    serial = GaugeMetricFamily("wgpy_registry_serial", "The zone's SOA serial", labels=["zone"])
    serial.add_metric([zone], float(st.get("serial", 0)))
    refused = CounterMetricFamily("wgpy_registry_refused",
                                  "Requests refused, by kind (update, relay, xfr, notify, ...)",
                                  labels=["zone", "kind"])
    limited = CounterMetricFamily("wgpy_registry_rate_limited",
                                  "Refusals left unanswered by the rate limit, by kind",
                                  labels=["zone", "kind"])
    tsig = CounterMetricFamily("wgpy_registry_tsig_errors",
                               "Messages whose TSIG failed, by error", labels=["zone", "error"])
    requests = CounterMetricFamily("wgpy_registry_transfer_requests",
                                   "Zone transfer requests, by type", labels=["zone", "type"])
    served = CounterMetricFamily("wgpy_registry_transfers",
                                 "Zone transfers served, by type and form (full or incremental)",
                                 labels=["zone", "type", "form"])
    notify = CounterMetricFamily("wgpy_registry_notify",
                                 "NOTIFY messages to secondaries, by event",
                                 labels=["zone", "event"])
    for k, v in sorted(st.items()):
        if (m := _CATEGORY_KEY.fullmatch(k)) is not None:
            (refused if m.group(2) == "refused" else limited).add_metric([zone, m.group(1)],
                                                                         float(v))
        elif (m := _TSIG_KEY.fullmatch(k)) is not None:
            tsig.add_metric([zone, m.group(1)], float(v))
        elif (m := _XFR_KEY.fullmatch(k)) is not None:
            if m.group(2) == "requests":
                requests.add_metric([zone, m.group(1)], float(v))
            else:
                served.add_metric([zone, m.group(1), m.group(2)], float(v))
        elif k.startswith("notify."):
            notify.add_metric([zone, k[7:]], float(v))
    yield from (serial, refused, limited, tsig, requests, served, notify)


def _relay_families(zone: str, st: dict[str, int]) -> Iterator[Metric]:
    if "relay.allocations" not in st:
        return  # no --relay
    allocations = GaugeMetricFamily("wgpy_registry_relay_allocations",
                                    "Relay port pairs allocated now", labels=["zone"])
    allocations.add_metric([zone], float(st["relay.allocations"]))
    datagrams = CounterMetricFamily("wgpy_registry_relay_forwarded_datagrams",
                                    "Sealed WireGuard datagrams relayed", labels=["zone"])
    datagrams.add_metric([zone], float(st.get("relay.forwarded.datagrams", 0)))
    nbytes = CounterMetricFamily("wgpy_registry_relay_forwarded_bytes",
                                 "Bytes of sealed WireGuard datagrams relayed", labels=["zone"])
    nbytes.add_metric([zone], float(st.get("relay.forwarded.bytes", 0)))
    dropped = CounterMetricFamily("wgpy_registry_relay_dropped",
                                  "Datagrams the relay dropped, by reason",
                                  labels=["zone", "reason"])
    errors = CounterMetricFamily("wgpy_registry_relay_send_errors",
                                 "Relay sends that failed, by errno", labels=["zone", "errno"])
    events = CounterMetricFamily("wgpy_registry_relay_events",
                                 "Allocations made, ended, expired; mappings learned; ...",
                                 labels=["zone", "event"])
    for k, v in sorted(st.items()):
        if k.startswith("relay.drop."):
            dropped.add_metric([zone, k[11:]], float(v))
        elif k.startswith("relay.send_error."):
            errors.add_metric([zone, k[17:]], float(v))
        elif k.startswith("relay.") and not k.startswith("relay.forwarded.") and \
                k not in ("relay.allocations", "relay.refused", "relay.dropped"):
            events.add_metric([zone, k[6:]], float(v))
    yield from (allocations, datagrams, nbytes, dropped, errors, events)
