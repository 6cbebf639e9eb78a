"""WireGuard devices as Prometheus metrics, in the families dashboards read.

Theory of operation: each scrape reads every device over its UAPI socket
(``get=1``, and ``stats=1`` for wgpyd's own counters) on a small pool of
threads, each read bounded by a timeout, and turns the readings into metric
families.  A device that is gone or does not answer costs its own series
only: it is reported with ``wgpy_exporter_device_up 0`` and one log line per
change of its error, and every other device is served as usual.

The families, checked against the exporters' sources:

* mdlayher/wireguard_exporter (``collector.go``, the family Grafana
  dashboard 12177 reads), always:
  ``wireguard_device_info{device,public_key}``,
  ``wireguard_peer_info{device,public_key,endpoint,name}``,
  ``wireguard_peer_allowed_ips_info{device,public_key,allowed_ips,family}``,
  ``wireguard_peer_receive_bytes_total{device,public_key}``,
  ``wireguard_peer_transmit_bytes_total{device,public_key}`` and
  ``wireguard_peer_last_handshake_seconds{device,public_key}`` (Unix time,
  0 before the first handshake).  ``name`` is the peer's friendly name, or
  empty.
* MindFlavor/prometheus_wireguard_exporter (``src/wireguard.rs``), with
  ``mindflavor=True``: ``wireguard_sent_bytes_total``,
  ``wireguard_received_bytes_total`` and ``wireguard_latest_handshake_seconds``,
  labelled ``interface``, ``public_key``, ``allowed_ips`` (comma-separated, as
  ``wg show dump`` prints them) and ``friendly_name`` where the configuration
  file has a ``# friendly_name = ...`` comment in the peer's section.
* wgpyd's internals (``wgpy_device_*{device}``): what no other
  implementation exposes, from the ``stats=1`` UAPI extension.  A device
  that closes the connection on it (wireguard-go) is remembered, per socket,
  and not asked again.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import re
import stat
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from wgpy.control.keys import InvalidKey, Key
from wgpy.control.uapi import SOCKET_DIR, DeviceInfo, UapiError, UapiProtocolError
from wgpy.control.uapi_client import UapiClient
from wgpy.protocol.constants import ZERO_KEY
from wgpy.protocol.errors import ConfigError

log = logging.getLogger("wgpy.exporter")

DEFAULT_TIMEOUT = 2.0
MAX_WORKERS = 8

# wgpyd's stats=1 fields -> (metric, help).  Counters get "_total" in the
# exposition; values are as wgpyd counts them (docs/architecture.md, "Counters").
COUNTERS = {
    "initiations_sent": ("wgpy_device_handshake_initiations_sent",
                         "Handshake initiations sent"),
    "initiations_received": ("wgpy_device_handshake_initiations_received",
                             "Valid handshake initiations accepted"),
    "responses_sent": ("wgpy_device_handshake_responses_sent", "Handshake responses sent"),
    "responses_received": ("wgpy_device_handshake_responses_received",
                           "Valid handshake responses consumed"),
    "handshakes_completed": ("wgpy_device_handshakes_completed",
                             "Sessions established, as initiator or responder"),
    "cookie_replies_sent": ("wgpy_device_cookie_replies_sent",
                            "Cookie replies sent while under load"),
    "cookie_replies_received": ("wgpy_device_cookie_replies_received",
                                "Valid cookie replies received"),
    "unreachable_sent": ("wgpy_device_icmp_unreachable_sent",
                         "Packets answered with ICMP destination unreachable"),
    "uapi.set_refused": ("wgpy_device_uapi_sets_refused",
                         "UAPI set requests answered with a non-zero errno"),
    "uapi.closed_idle": ("wgpy_device_uapi_connections_closed_idle",
                         "UAPI connections closed for being idle or to make room"),
}
GAUGES = {
    "under_load": ("wgpy_device_under_load", "1 while the device is under load (cookies)"),
    "peers": ("wgpy_device_peers", "Configured peers"),
    "indices": ("wgpy_device_session_indices", "Live session indices"),
    "keypairs": ("wgpy_device_keypairs", "Live session keypairs"),
    "staged_packets": ("wgpy_device_staged_packets", "Packets waiting for a handshake"),
    "ratelimiter": ("wgpy_device_ratelimiter_sources",
                    "Sources the handshake rate limiter tracks"),
    "uapi.connections": ("wgpy_device_uapi_connections", "Open UAPI connections"),
}
UAPI_OPS = ("get", "set", "stats")


# -- friendly names ---------------------------------------------------------------

_SECTION = re.compile(r"\s*\[([^\]]*)\]\s*$")
_PUBLIC_KEY = re.compile(r"\s*publickey\s*=\s*([^#\s]+)", re.IGNORECASE)
_FRIENDLY = re.compile(r"\s*#\s*friendly_name\s*=(.*)$")


def parse_friendly_names(text: str, filename: str) -> dict[str, str]:
    """``{public key (base64): name}`` from a WireGuard configuration file's
    ``# friendly_name = NAME`` comments, each inside the ``[Peer]`` section
    it names (MindFlavor's convention).

    :raises ConfigError: a named peer section without a valid PublicKey.
    """
    names: dict[str, str] = {}
    key: str | None = None
    name: str | None = None
    start = 0

    def close() -> None:
        if name is None:
            return
        if key is None:
            raise ConfigError("a friendly_name in a [Peer] section without PublicKey",
                              filename, start)
        try:
            Key.from_base64(key)
        except InvalidKey:
            raise ConfigError("the PublicKey of a named peer is not a valid key",
                              filename, start) from None
        names[key] = name

    in_peer = False
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _SECTION.match(line)
        if m:
            if in_peer:
                close()
            in_peer = m.group(1).strip().lower() in ("peer", "wireguardpeer")
            key, name, start = None, None, lineno
            continue
        if not in_peer:
            continue
        if m := _FRIENDLY.match(line):
            name = m.group(1).strip()
        elif m := _PUBLIC_KEY.match(line):
            key = m.group(1)
    if in_peer:
        close()
    return names


@dataclass
class NameFile:
    """A configuration file read for friendly names, again whenever it changes;
    a file that became unreadable or bad keeps the names last read (logged)."""

    path: Path
    names: dict[str, str] = field(default_factory=dict)
    _stamp: tuple[int, int] | None = None
    _error: str = ""

    def load(self) -> dict[str, str]:
        """Read the file if it changed.  :raises ConfigError: on the first read."""
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_ino)
            if stamp != self._stamp:
                text = self.path.read_text(errors="replace")
                self.names = parse_friendly_names(text, str(self.path))
                self._stamp = stamp
            self._error = ""
        except (OSError, ConfigError) as e:
            reason = str(e) if isinstance(e, ConfigError) else \
                f"{self.path}: {e.strerror or e}"
            if self._stamp is None:
                raise ConfigError(reason) from None
            if reason != self._error:
                log.error("keeping the friendly names last read: %s", reason)
            self._error = reason
        return self.names


# -- reading devices --------------------------------------------------------------


@dataclass
class Reading:
    """One device's answers at one scrape."""

    name: str
    info: DeviceInfo | None = None
    stats: dict[str, int] | None = None
    error: str = ""
    seconds: float = 0.0


def _socket_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class DeviceCollector:
    """The collector ``wgpy exporter`` registers: devices in, metric families out.

    :param interfaces: the devices to read; empty: every socket in ``directory``.
    :param name_files: configuration files with friendly names.
    :param mindflavor: also emit MindFlavor's family.
    """

    def __init__(
        self,
        interfaces: Sequence[str] = (),
        name_files: Sequence[NameFile] = (),
        mindflavor: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        directory: Path = SOCKET_DIR,
    ) -> None:
        self.interfaces = list(interfaces)
        self.name_files = list(name_files)
        self.mindflavor = mindflavor
        self.timeout = timeout
        self.directory = directory
        self.errors: Counter[str] = Counter()
        self._pool = concurrent.futures.ThreadPoolExecutor(MAX_WORKERS, "wgpy-exporter")
        self._no_stats: set[tuple[int, int]] = set()  # sockets that do not speak stats=1
        self._last_error: dict[str, str] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- which devices ---------------------------------------------------------
    def devices(self) -> list[str]:
        if self.interfaces:
            return list(self.interfaces)
        try:
            entries = sorted(os.listdir(self.directory))
        except OSError:
            return []
        out = []
        for n in entries:
            if not n.endswith(".sock") or len(n) <= len(".sock"):
                continue
            try:
                if not stat.S_ISSOCK((self.directory / n).stat().st_mode):
                    continue
            except OSError:
                continue
            out.append(n[: -len(".sock")])
        return out

    # -- reading ---------------------------------------------------------------
    def read(self, name: str) -> Reading:
        """One device's get (and stats, when it speaks it).  Never raises."""
        t0 = time.monotonic()
        r = Reading(name)
        client = UapiClient(name, self.directory, timeout=self.timeout)
        sock_id = _socket_id(client.path)
        try:
            r.info = client.get()
            if sock_id is not None and sock_id not in self._no_stats:
                r.stats = client.stats()
                if r.stats is None:
                    self._no_stats.add(sock_id)
        except UapiError as e:
            r.error = str(e)
        except UapiProtocolError as e:
            r.error = f"not a UAPI device: {e}"
        except TimeoutError:
            r.error = f"no answer on {client.path} within {self.timeout:g} s"
        except OSError as e:
            r.error = f"{client.path}: {e.strerror or e}"
        r.seconds = time.monotonic() - t0
        return r

    def read_all(self) -> list[Reading]:
        names = self.devices()
        futures = {n: self._pool.submit(self.read, n) for n in names}
        out = []
        for n, fut in futures.items():
            try:
                out.append(fut.result(timeout=self.timeout * 2 + 1))
            except concurrent.futures.TimeoutError:
                out.append(Reading(n, error=f"no answer within {self.timeout:g} s"))
        for r in out:
            self._note(r)
        return out

    def _note(self, r: Reading) -> None:
        """Count a failed read; log each device's error when it changes."""
        last = self._last_error.get(r.name, "")
        if r.error:
            self.errors[r.name] += 1
            if r.error != last:
                log.error("%s: %s (its metrics are left out; other devices are served)",
                          r.name, r.error)
        elif last:
            log.info("%s: answering again", r.name)
        self._last_error[r.name] = r.error

    def friendly_names(self) -> dict[str, str]:
        names: dict[str, str] = {}
        for f in self.name_files:
            try:
                names.update(f.load())
            except ConfigError as e:
                log.error("%s", e)
        return names

    # -- the collector ---------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        readings = self.read_all()
        names = self.friendly_names()
        yield from exporter_families(readings, self.errors)
        yield from mdlayher_families(readings, names)
        if self.mindflavor:
            yield from mindflavor_families(readings, names)
        yield from wgpy_families(readings)


# -- the families -------------------------------------------------------------------


def _b64(key: bytes) -> str:
    return Key(key).to_base64()


def _device_key(info: DeviceInfo) -> str:
    if info.private_key is None or info.private_key == ZERO_KEY:
        return _b64(ZERO_KEY)  # wgctrl's zero key: no private key set
    return Key(info.private_key).public_key().to_base64()


def _family(cidr: str) -> str:
    return "IPv6" if ":" in cidr else "IPv4"


def exporter_families(readings: Iterable[Reading], errors: Counter[str]) -> Iterator[Metric]:
    up = GaugeMetricFamily("wgpy_exporter_device_up",
                           "1 if the device answered its UAPI socket at this scrape",
                           labels=["device"])
    took = GaugeMetricFamily("wgpy_exporter_device_scrape_seconds",
                             "Time to read the device at this scrape", labels=["device"])
    failed = CounterMetricFamily("wgpy_exporter_device_errors",
                                 "Scrapes at which the device could not be read",
                                 labels=["device"])
    for r in readings:
        up.add_metric([r.name], 0.0 if r.error else 1.0)
        took.add_metric([r.name], r.seconds)
        failed.add_metric([r.name], float(errors[r.name]))
    yield from (up, took, failed)


def mdlayher_families(readings: Iterable[Reading], names: dict[str, str]) -> Iterator[Metric]:
    labels = ["device", "public_key"]
    device = GaugeMetricFamily("wireguard_device_info", "Metadata about a device.",
                               labels=labels)
    peer = GaugeMetricFamily(
        "wireguard_peer_info",
        "Metadata about a peer. The public_key label on peer metrics refers to the peer's "
        "public key; not the device's public key.", labels=[*labels, "endpoint", "name"])
    allowed = GaugeMetricFamily(
        "wireguard_peer_allowed_ips_info",
        "Metadata about each of a peer's allowed IP subnets for a given device.",
        labels=[*labels, "allowed_ips", "family"])
    rx = CounterMetricFamily("wireguard_peer_receive_bytes",
                             "Number of bytes received from a given peer.", labels=labels)
    tx = CounterMetricFamily("wireguard_peer_transmit_bytes",
                             "Number of bytes transmitted to a given peer.", labels=labels)
    hs = GaugeMetricFamily("wireguard_peer_last_handshake_seconds",
                           "UNIX timestamp for the last handshake with a given peer.",
                           labels=labels)
    for r in readings:
        if r.info is None:
            continue
        device.add_metric([r.name, _device_key(r.info)], 1.0)
        for p in r.info.peers:
            pub = _b64(p.public_key)
            peer.add_metric([r.name, pub, p.endpoint or "", names.get(pub, "")], 1.0)
            for cidr in p.allowed_ips:
                allowed.add_metric([r.name, pub, cidr, _family(cidr)], 1.0)
            rx.add_metric([r.name, pub], float(p.rx_bytes))
            tx.add_metric([r.name, pub], float(p.tx_bytes))
            # Whole seconds, as wgctrl's LastHandshakeTime.Unix(); 0 if never.
            hs.add_metric([r.name, pub], float(p.last_handshake_time_sec))
    yield from (device, peer, allowed, rx, tx, hs)


def mindflavor_families(readings: Iterable[Reading], names: dict[str, str]) -> Iterator[Metric]:
    sent = CounterMetricFamily("wireguard_sent_bytes", "Bytes sent to the peer")
    received = CounterMetricFamily("wireguard_received_bytes", "Bytes received from the peer")
    latest = GaugeMetricFamily("wireguard_latest_handshake_seconds",
                               "UNIX timestamp seconds of the last handshake")
    for r in readings:
        if r.info is None:
            continue
        for p in r.info.peers:
            pub = _b64(p.public_key)
            labels = {"interface": r.name, "public_key": pub,
                      "allowed_ips": ",".join(p.allowed_ips) or "(none)"}
            if pub in names:
                labels["friendly_name"] = names[pub]
            # Label sets differ per peer (friendly_name), so samples are added raw.
            sent.add_sample("wireguard_sent_bytes_total", labels, float(p.tx_bytes))
            received.add_sample("wireguard_received_bytes_total", labels, float(p.rx_bytes))
            latest.add_sample("wireguard_latest_handshake_seconds", labels,
                              float(p.last_handshake_time_sec))
    yield from (sent, received, latest)


def wgpy_families(readings: Iterable[Reading]) -> Iterator[Metric]:
    """wgpyd's own counters, for the devices that answered ``stats=1``."""
    counters = {k: CounterMetricFamily(m, h, labels=["device"]) for k, (m, h) in COUNTERS.items()}
    gauges = {k: GaugeMetricFamily(m, h, labels=["device"]) for k, (m, h) in GAUGES.items()}
    under = CounterMetricFamily("wgpy_device_under_load_seconds",
                                "Time spent under load", labels=["device"])
    drops = CounterMetricFamily("wgpy_device_dropped",
                                "Datagrams or packets dropped, by reason",
                                labels=["device", "reason"])
    send_errors = CounterMetricFamily("wgpy_device_send_errors",
                                      "UDP datagrams that could not be sent, by errno",
                                      labels=["device", "errno"])
    uapi = CounterMetricFamily("wgpy_device_uapi_requests", "UAPI requests answered, by operation",
                               labels=["device", "op"])
    for r in readings:
        st = r.stats
        if st is None or r.error:
            continue
        for k, fam in counters.items():
            fam.add_metric([r.name], float(st.get(k, 0)))  # 0: wgpyd omits zero refusals
        for k, gfam in gauges.items():
            if k in st:
                gfam.add_metric([r.name], float(st[k]))
        if "under_load_ms" in st:
            under.add_metric([r.name], st["under_load_ms"] / 1000)
        for k, v in st.items():
            if k.startswith("drop."):
                drops.add_metric([r.name, k[5:].lower()], float(v))
            elif k.startswith("send_error."):
                send_errors.add_metric([r.name, k[11:]], float(v))
        for op in UAPI_OPS:
            uapi.add_metric([r.name, op], float(st.get(f"uapi.{op}", 0)))
    yield from counters.values()
    yield from gauges.values()
    yield from (under, drops, send_errors, uapi)
