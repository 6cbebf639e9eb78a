"""``wgpy registry`` and ``wgpy discover``: argument parsing and process setup."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from wgpy.control.endpoint import split_host_port
from wgpy.control.uapi import UapiError, UapiProtocolError
from wgpy.control.uapi_client import UapiClient
from wgpy.discovery.client import Discoverer, DiscoverOptions, RegistryUnreachable
from wgpy.discovery.mesh import DEFAULT_GRACE
from wgpy.discovery.records import IPAddress, Names
from wgpy.discovery.registry import DEFAULT_LEASE, DEFAULT_SERIAL_INTERVAL, DEFAULT_TTL, Registry
from wgpy.discovery.relay import (
    DEFAULT_IDLE,
    DEFAULT_MAX_PER_PEER,
    DEFAULT_MAX_TOTAL,
    DEFAULT_PORTS,
    RelayTable,
)
from wgpy.discovery.server import RegistryServer, SelfConfig, run
from wgpy.discovery.tsigkeys import Keyring, parse_keyfile
from wgpy.discovery.update import interface_addresses
from wgpy.protocol.errors import ConfigError
from wgpy.protocol.events import Endpoint
from wgpy.service import journal, notify
from wgpy.service.metrics import MetricsServer, listen_address
from wgpy.service.metrics import serve as serve_metrics

REGISTRY_DESCRIPTION = """\
Serve the peers of a WireGuard device as DNS-SD records, so that peers behind
NAT can find each other's public mapping and connect directly.

The registry is an authoritative DNS server (UDP and TCP) for ZONE.  It reads
the live peer table of INTERFACE over the UAPI socket
(/var/run/wireguard/INTERFACE.sock, served by wgpyd or wireguard-go) and
answers with the endpoint each peer was last seen at, which for a peer behind
NAT is its NAT mapping.  Peers keep a tunnel to the registry with persistent
keepalive; `wgpy discover` on each peer reads the records and sets endpoints.

records (B32 is a public key in base32, matched case-insensitively):
  _wireguard._udp.ZONE        PTR  B32._wireguard._udp.ZONE   (each peer with an endpoint)
  B32._wireguard._udp.ZONE    SRV  0 0 PORT B32.ZONE          (A/AAAA in the additional section)
  B32._wireguard._udp.ZONE    TXT  "txtvers=1" "pub=BASE64" "allowed=CIDR,..." ["nat=KIND"]
  B32.ZONE                    A or AAAA
  _wireguard-lan._udp.ZONE    PTR, SRV, TXT and B32.lan.ZONE A/AAAA: LAN candidates
                              that peers publish by DNS UPDATE
  _whoami.ZONE                TXT "addr=IP" "port=PORT": the querier's source, as seen
  _wireguard-probe._udp.ZONE  SRV  0 0 PORT probeN.ZONE: the public listeners for NAT
                              type probes (--probe), so discover needs no --nat-probe
  B32Y.B32X._wireguard-relay._udp.ZONE  SRV 0 0 PORT relay.ZONE: X's endpoint for Y
                              on the relay (--relay), once X asked for one
  ZONE                        SOA and NS (NS host: ns1.ZONE unless --ns-name)

Updates (RFC 2136) publish LAN candidates and ask for relays.  They are
accepted only when they arrive on INTERFACE (UDP, or TCP to a --listen
address of INTERFACE) and only for the key whose allowed IPs hold the
update's source address: WireGuard's own authentication is the credential.

The relay (--relay) carries WireGuard datagrams unchanged between two peers
that cannot reach each other directly: a UDP port per peer and pair, no keys,
so the registry learns nothing of the traffic.  Allocations end after
--relay-idle seconds without traffic.

Secondaries (--secondary, e.g. BIND 9) get NOTIFY when the data changes (at
most once per --serial-interval) and may transfer the zone (AXFR, IXFR, over
TCP); with --tsig-keyfile, transfers must be signed with a key of that file.

The registry runs in the foreground and logs to stderr until SIGINT or
SIGTERM, as a service manager (systemd, runit, s6) expects; in a shell, put
it in the background with `&`.
"""

REGISTRY_EPILOG = """\
examples:
  wgpy registry --interface wg0 --zone wg.example.net \\
      --listen 203.0.113.1:53 --listen 203.0.113.1:5353 --listen 10.99.0.254:53
  dig @10.99.0.254 _wireguard._udp.wg.example.net PTR
  wgpy registry --interface wg0 --zone wg.example.net --relay 203.0.113.1 \\
      --secondary 198.51.100.53 --tsig-keyfile /etc/wgpy/xfr.key \\
      --listen 203.0.113.1:53 --listen 203.0.113.1:5353 --listen 10.99.0.254:53
  kill -USR1 PID     # log one line of counters

exit status:
  0 after SIGINT or SIGTERM, 1 if a listener cannot be bound or the device or
  the key file cannot be read, 2 on bad usage.
"""

DISCOVER_DESCRIPTION = """\
Look up the endpoints of INTERFACE's peers in a wgpy (or wgsd) registry and
set them on the device, so that two peers behind NATs connect directly.

For every configured peer, discover queries B32._wireguard._udp.ZONE SRV for
the NAT mapping the registry sees and B32._wireguard-lan._udp.ZONE SRV for the
LAN addresses the peer published.  Candidates are tried one at a time: the
endpoint is set (update only, when it differs), a keepalive is nudged, and the
candidate is kept if the peer answers through it within --try-timeout.  LAN
candidates go first when the peer shares our public address (same NAT), last
otherwise.  A peer whose traffic is flowing is left alone.  Hole punching
needs persistent keepalive on both peers (1 to 25 seconds).

discover also publishes this host's LAN addresses (DNS UPDATE through the
tunnel) and asks the registry's NAT probe listeners (those the zone
publishes, or --nat-probe) which mapping they see: if our NAT is symmetric (a
mapping per destination), the published mapping cannot work for other peers.

When no direct candidate answers, or either side's NAT is symmetric, discover
asks the registry for a relay (through the tunnel) and points the peer's
endpoint at it.  The relay forwards the sealed WireGuard datagrams as they
are; the session stays end to end.  A relayed peer keeps trying direct
candidates, briefly and with a growing wait (up to --direct-retry), and
leaves the relay as soon as one answers.

With several --registry servers (the registry and secondaries such as BIND
that carry its zone), queries go to the first that answers, and updates to
the first that accepts them.

The peer whose allowed IPs hold a registry address is never changed.

Without --once, discover keeps running in the foreground, looking up again
every --interval seconds and logging to stderr, until SIGINT or SIGTERM, as a
service manager (systemd, runit, s6) expects; in a shell, put it in the
background with `&`.  With --once it does one pass and prints a summary on
stdout, for cron.
"""

DISCOVER_EPILOG = """\
examples:
  wgpy discover --interface wg0 --registry 10.99.0.254 --zone wg.example.net --once
  wgpy discover --interface wg0 --registry 10.99.0.254 --zone wg.example.net --mesh
  wgpy discover --interface wg0 --registry 10.99.0.254 --registry 198.51.100.53 \\
      --zone wg.example.net --tsig-keyfile /etc/wgpy/update.key

exit status:
  0 on success (--once) or after SIGINT/SIGTERM, 1 if the device or the
  registry cannot be used, 2 on bad usage.
"""


class _Parser(argparse.ArgumentParser):
    """Exits 2 with ``PROG: error: reason``; ``@FILE`` reads arguments from FILE
    (what the systemd units use): shell words, ``#`` comments, any per line."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(fromfile_prefix_chars="@", **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)

    def convert_arg_line_to_args(self, arg_line: str) -> list[str]:
        try:
            return shlex.split(arg_line, comments=True)
        except ValueError as e:
            self.error(f"in an @FILE line: {e}")
            raise  # not reached: error() exits


def _split(text: str) -> tuple[str, int | None]:
    """``ADDR``, ``ADDR:PORT``, ``[V6]:PORT`` or ``NAME[:PORT]`` -> (ip text, port or None)."""
    text = text.strip()
    try:
        host, port_text = split_host_port(text, port_optional=True)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad address {text!r}: {e}") from None
    port = _port(port_text) if port_text else None
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port or 53, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as e:
        raise argparse.ArgumentTypeError(f"cannot resolve {host!r}: {e}") from e
    return str(infos[0][4][0]), port


def _hostport(text: str, default_port: int) -> Endpoint:
    host, port = _split(text)
    return host, port or default_port


def _port(text: str) -> int:
    try:
        p = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port {text!r}") from None
    if not 0 < p < 65536:
        raise argparse.ArgumentTypeError(f"port {p} out of range")
    return p


def _dest53(text: str) -> Endpoint:
    return _hostport(text, 53)


def _ip(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def _cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a CIDR prefix: {text!r}") from None


def _zone(text: str) -> Names:
    try:
        return Names.for_zone(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < v < 86400 * 365:
        raise argparse.ArgumentTypeError(f"{text} is out of range")
    return v


def _ttl(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= v <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"{v} is out of range")
    return v


def _count(text: str) -> int:
    v = _ttl(text)
    if not 0 < v <= 65535:
        raise argparse.ArgumentTypeError(f"{v} is out of range (1 to 65535)")
    return v


def _port_range(text: str) -> range:
    low, sep, high = text.partition("-")
    lo = _port(low)
    hi = _port(high) if sep else lo
    if hi - lo < 1:
        raise argparse.ArgumentTypeError(f"bad port range {text!r}: give LOW-HIGH, LOW < HIGH")
    return range(lo, hi + 1)


def _serial_interval(text: str) -> float:
    v = _nonneg_float(text)
    if v < 1:
        raise argparse.ArgumentTypeError("the serial interval is at least 1 second")
    return v


def _keyring(path: str) -> Keyring:
    try:
        with open(path, encoding="utf-8") as f:
            return parse_keyfile(f.read(), path)
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}", path) from None
    except UnicodeDecodeError:
        raise ConfigError("not a text file", path) from None


def _keepalive(text: str) -> int:
    v = _ttl(text)
    if not 0 < v <= 65535:
        raise argparse.ArgumentTypeError("keepalive must be 1 to 65535 seconds")
    return v


def _logging(verbose: int, quiet: bool, name: str) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    journal.configure_logging(f"{name}: %(levelname)s: %(message)s", level)


def _metrics(text: str) -> str:
    try:
        listen_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


METRICS_HELP = ("serve Prometheus metrics on http://ADDR:PORT/metrics (docs/operations.md "
                "lists them; off by default)")


def registry_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="wgpy registry",
        usage="wgpy registry --interface IF --zone ZONE [--listen ADDR[:PORT]]... [options]",
        description=REGISTRY_DESCRIPTION,
        epilog=REGISTRY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-i", "--interface", required=True, metavar="IF",
                   help="the WireGuard device whose peers are published")
    p.add_argument("-z", "--zone", required=True, type=_zone, metavar="ZONE",
                   help="the DNS zone to serve, e.g. wg.example.net")
    p.add_argument("-l", "--listen", action="append", type=_dest53, metavar="ADDR[:PORT]",
                   help="listen for UDP and TCP queries here (repeatable; port 53 by default; "
                        "default 0.0.0.0:53). Listen on a tunnel address to receive "
                        "LAN candidate updates, and on two public ports for NAT type probes")
    p.add_argument("--ttl", type=_ttl, default=DEFAULT_TTL, metavar="SECONDS",
                   help=f"TTL of answers and of negative caching (default {DEFAULT_TTL}; "
                        "wgsd uses 0)")
    p.add_argument("--lease", type=_nonneg_float, default=DEFAULT_LEASE, metavar="SECONDS",
                   help=f"how long published LAN candidates live (default {DEFAULT_LEASE:g})")
    p.add_argument("--self", dest="self_", action="store_true",
                   help="also publish the registry's own key and endpoint")
    p.add_argument("--self-endpoint", type=_split, metavar="ADDR[:PORT]",
                   help="the endpoint --self publishes (default: the address a query arrived "
                        "on, with the device's listen port; nothing for queries via the tunnel)")
    p.add_argument("--self-allowed", action="append", type=_cidr, default=[], metavar="CIDR",
                   help="allowed IPs --self publishes in its TXT record (repeatable)")
    p.add_argument("--ns-name", metavar="NAME",
                   help="the zone's NS host (default ns1.ZONE); its A/AAAA are the specific "
                        "--listen addresses")
    p.add_argument("--refresh", type=_nonneg_float, default=0.5, metavar="SECONDS",
                   help="cache the device's peer table this long (default 0.5)")
    p.add_argument("--metrics", type=_metrics, metavar="ADDR:PORT", help=METRICS_HELP)
    p.add_argument("--probe", action="append", type=_dest53, metavar="ADDR[:PORT]",
                   help="a public listener to publish for NAT type probes (repeatable; "
                        "default: the specific --listen addresses not on INTERFACE)")
    relay = p.add_argument_group("relay")
    relay.add_argument("--relay", action="append", type=_ip, default=[], metavar="ADDR",
                       help="run the relay on this public address (one per address family)")
    relay.add_argument("--relay-ports", type=_port_range, default=DEFAULT_PORTS,
                       metavar="LOW-HIGH", help="UDP ports for relay allocations (default "
                       f"{DEFAULT_PORTS[0]}-{DEFAULT_PORTS[-1]}; open them in the firewall)")
    relay.add_argument("--relay-idle", type=_nonneg_float, default=DEFAULT_IDLE,
                       metavar="SECONDS", help="end an allocation after this long without "
                       f"traffic (default {DEFAULT_IDLE:g})")
    relay.add_argument("--relay-max", type=_count, default=DEFAULT_MAX_TOTAL, metavar="N",
                       help=f"at most N allocations in all (default {DEFAULT_MAX_TOTAL})")
    relay.add_argument("--relay-max-per-peer", type=_count, default=DEFAULT_MAX_PER_PEER,
                       metavar="N", help="at most N allocations involving one peer "
                       f"(default {DEFAULT_MAX_PER_PEER})")
    sec = p.add_argument_group("secondaries")
    sec.add_argument("--secondary", action="append", type=_dest53, default=[],
                     metavar="ADDR[:PORT]", help="send NOTIFY here when the data changes, and "
                     "let it transfer the zone (repeatable)")
    sec.add_argument("--allow-transfer", action="append", type=_cidr, default=[],
                     metavar="CIDR", help="also let these addresses transfer the zone")
    sec.add_argument("--tsig-keyfile", metavar="FILE",
                     help="TSIG keys in BIND's syntax (tsig-keygen): transfers must be signed "
                          "with one, and NOTIFYs are signed with the first")
    sec.add_argument("--update-tsig", action="store_true",
                     help="UPDATEs must be signed too (besides arriving through the tunnel)")
    sec.add_argument("--serial-interval", type=_serial_interval,
                     default=DEFAULT_SERIAL_INTERVAL, metavar="SECONDS",
                     help="at most one new SOA serial (and NOTIFY) per this many seconds "
                          f"(default {DEFAULT_SERIAL_INTERVAL:g}, at least 1)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log every query")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    return p


def registry_main(argv: Sequence[str]) -> int:
    """``wgpy registry ARGS``: run the DNS-SD registry until SIGINT/SIGTERM."""
    args = registry_parser().parse_args(list(argv))
    _logging(args.verbose, args.quiet, "wgpy registry")
    names: Names = args.zone
    if args.ns_name:
        try:
            names = Names.for_zone(names.zone, args.ns_name)
        except ValueError as e:
            print(f"wgpy registry: error: --ns-name: {e}", file=sys.stderr)
            return 2
    listen: list[Endpoint] = args.listen or [("0.0.0.0", 53)]
    ns_addrs = [ip for ip in (ipaddress.ip_address(h) for h, _ in listen) if not ip.is_unspecified]
    keyring = None
    try:
        if args.tsig_keyfile:
            keyring = _keyring(args.tsig_keyfile)
        relay = _relay_table(args)
    except (ConfigError, ValueError) as e:
        print(f"wgpy registry: error: {e}", file=sys.stderr)
        return 1 if isinstance(e, ConfigError) else 2
    if args.update_tsig and keyring is None:
        print("wgpy registry: error: --update-tsig needs --tsig-keyfile", file=sys.stderr)
        return 2
    acl = [ipaddress.ip_network(f"{h}/{32 if ':' not in h else 128}") for h, _ in args.secondary]
    acl += [ipaddress.ip_network(c) for c in args.allow_transfer]
    registry = Registry(names, ttl=args.ttl, ns_addresses=ns_addrs, lease=args.lease,
                        serial=int(time.time()), serial_interval=args.serial_interval,
                        transfer_acl=acl, keyring=keyring, update_needs_tsig=args.update_tsig,
                        relay=relay, probes=_probes(args.probe, listen, args.interface))
    self_cfg = None
    if args.self_ or args.self_endpoint or args.self_allowed:
        host = ipaddress.ip_address(args.self_endpoint[0]) if args.self_endpoint else None
        port = args.self_endpoint[1] if args.self_endpoint else None
        self_cfg = SelfConfig(host, port, tuple(args.self_allowed))
    uapi = UapiClient(args.interface)
    try:
        uapi.get()
    except (UapiError, UapiProtocolError, OSError) as e:
        print(f"wgpy registry: error: cannot read {args.interface}: {e}", file=sys.stderr)
        return 1
    server = RegistryServer(registry, args.interface, listen, uapi, self_cfg, args.refresh,
                            secondaries=args.secondary)
    return run(server, args.metrics)


def _relay_table(args: argparse.Namespace) -> RelayTable | None:
    if not args.relay:
        return None
    addresses: dict[int, str] = {}
    for ip in args.relay:
        if ip.version in addresses:
            raise ValueError(f"--relay: one address per family ({addresses[ip.version]} "
                             f"and {ip})")
        if ip.is_unspecified:
            raise ValueError("--relay needs a specific address (it is published)")
        addresses[ip.version] = str(ip)
    return RelayTable(addresses, args.relay_ports, args.relay_idle, args.relay_max,
                      args.relay_max_per_peer)


def _probes(given: list[Endpoint] | None, listen: list[Endpoint], interface: str) -> list[Endpoint]:
    """--probe, or the specific --listen addresses that are not the tunnel's."""
    if given is not None:
        return given
    try:
        tunnel = {str(a) for a in interface_addresses(interface)}
    except OSError:
        tunnel = set()
    out = []
    for host, port in listen:
        ip = ipaddress.ip_address(host)
        if not (ip.is_unspecified or ip.is_loopback or host in tunnel):
            out.append((host, port))
    return out


def discover_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="wgpy discover",
        usage="wgpy discover --interface IF --registry ADDR[:PORT] --zone ZONE "
              "[--once | --interval SECONDS] [options]",
        description=DISCOVER_DESCRIPTION,
        epilog=DISCOVER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-i", "--interface", required=True, metavar="IF",
                   help="the local WireGuard device whose peer endpoints are set")
    p.add_argument("-r", "--registry", required=True, action="append", type=_dest53,
                   metavar="ADDR[:PORT]",
                   help="the registry's DNS listener, normally its tunnel address (port 53 by "
                        "default); repeat it for secondaries to fall back to, in order")
    p.add_argument("-z", "--zone", required=True, type=_zone, metavar="ZONE",
                   help="the registry's zone")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true",
                      help="look up, set, wait for the tries to settle, print a summary and "
                           "exit (for cron, like wgsd-client)")
    mode.add_argument("--interval", type=_nonneg_float, default=15.0, metavar="SECONDS",
                      help="keep running (in the foreground), looking up again this often "
                           "(default 15)")
    p.add_argument("--mesh", action="store_true",
                   help="also add peers the registry lists that INTERFACE does not have, "
                        "with the allowed IPs from their TXT records (never ones that overlap "
                        "configured peers)")
    p.add_argument("--keepalive", type=_keepalive, default=25, metavar="SECONDS",
                   help="persistent keepalive for peers added by --mesh (default 25)")
    p.add_argument("--mesh-grace", type=_nonneg_float, default=DEFAULT_GRACE, metavar="SECONDS",
                   help="remove a peer --mesh added once the registry has not listed it for "
                        f"this long (default {DEFAULT_GRACE:g}); configured peers are never "
                        "removed")
    p.add_argument("--no-lan", action="store_true",
                   help="neither publish nor use LAN candidates")
    p.add_argument("--lan-address", action="append", type=_ip, metavar="ADDR",
                   help="publish this LAN address (repeatable; default: every global address "
                        "of this host outside the tunnel)")
    p.add_argument("--nat-probe", action="append", type=_dest53, default=[],
                   metavar="ADDR[:PORT]",
                   help="a public registry listener to ask for our mapping; give two (two "
                        "addresses or ports) to detect a symmetric NAT (default: the "
                        "listeners the zone publishes)")
    p.add_argument("--no-relay", action="store_true",
                   help="never ask for or use the registry's relay")
    p.add_argument("--direct-retry", type=_nonneg_float, default=45.0, metavar="SECONDS",
                   help="while relayed, try a direct path again at least this often "
                        "(default 45; each try costs up to a second of lost packets)")
    p.add_argument("--tsig-keyfile", metavar="FILE",
                   help="sign updates with the first key of this file (BIND syntax), for a "
                        "registry run with --update-tsig")
    p.add_argument("--try-timeout", type=_nonneg_float, default=6.0, metavar="SECONDS",
                   help="how long to wait for a reply through a candidate (default 6)")
    p.add_argument("--timeout", type=_nonneg_float, default=2.0, metavar="SECONDS",
                   help="DNS query timeout (default 2)")
    p.add_argument("--metrics", type=_metrics, metavar="ADDR:PORT", help=METRICS_HELP)
    p.add_argument("-v", "--verbose", action="count", default=0, help="log more")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    return p


def discover_main(argv: Sequence[str]) -> int:
    """``wgpy discover ARGS``: set peer endpoints from the registry, once or until a signal."""
    args = discover_parser().parse_args(list(argv))
    _logging(args.verbose, args.quiet, "wgpy discover")
    key = None
    if args.tsig_keyfile:
        try:
            key = next(iter(_keyring(args.tsig_keyfile).values()))
        except ConfigError as e:
            print(f"wgpy discover: error: {e}", file=sys.stderr)
            return 1
    opts = DiscoverOptions(
        interface=args.interface,
        registry=args.registry,
        names=args.zone,
        mesh=args.mesh,
        keepalive=args.keepalive,
        use_lan=not args.no_lan,
        publish_lan=not args.no_lan,
        lan_addresses=args.lan_address,
        nat_probes=args.nat_probe,
        mesh_grace=args.mesh_grace,
        use_relay=not args.no_relay,
        direct_retry=args.direct_retry,
        tsig_key=key,
        dns_timeout=args.timeout,
        try_timeout=args.try_timeout,
        interval=args.interval,
    )
    disc = Discoverer(opts, out=sys.stdout if args.once else None)
    try:
        if args.once:
            rc = disc.run_once()
            for line in disc.summary():
                print(line)
            return rc
        stop = threading.Event()

        def _stop(_sig: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        exporter: MetricsServer | None = None
        if args.metrics:
            try:
                exporter = serve_metrics(args.metrics, disc.metrics)
            except OSError as e:
                print(f"wgpy discover: error: {e.strerror or e}", file=sys.stderr)
                return 1
        try:
            return disc.run_forever(stop)
        finally:
            notify.stopping()
            if exporter is not None:
                exporter.close()
    except (UapiError, UapiProtocolError) as e:
        print(f"wgpy discover: error: {args.interface}: {e}", file=sys.stderr)
        return 1
    except RegistryUnreachable as e:
        print(f"wgpy discover: error: {e}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m wgpy.discovery.cli {registry|discover} ...`` until the wgpy CLI lands."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"registry": registry_main, "discover": discover_main}
    if not argv or argv[0] not in commands:
        print("usage: python3 -m wgpy.discovery.cli {registry|discover} [--help | ARGS]",
              file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
