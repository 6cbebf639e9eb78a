"""``wgpy exporter``: a Prometheus exporter for every WireGuard device on the host.

The metric families and how devices are read: ``tools/device_metrics.py``.
This module is the command: arguments, the HTTP endpoint, signals and
systemd's notifications.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from wgpy.control.uapi import SOCKET_DIR
from wgpy.protocol.errors import ConfigError
from wgpy.service import journal, notify
from wgpy.service.metrics import MetricsServer, listen_address
from wgpy.tools.device_metrics import DEFAULT_TIMEOUT, DeviceCollector, NameFile

PROG = "wgpy exporter"
DEFAULT_LISTEN = ":9586"

DESCRIPTION = """\
Serve Prometheus metrics for the WireGuard devices of this host: every
userspace device with a UAPI socket in /var/run/wireguard (wgpyd,
wireguard-go), or the ones named with --interface.  Each scrape reads every
device afresh.

Families (docs/operations.md lists every metric):
  wireguard_device_info, wireguard_peer_info, wireguard_peer_allowed_ips_info,
  wireguard_peer_receive_bytes_total, wireguard_peer_transmit_bytes_total,
  wireguard_peer_last_handshake_seconds
      as mdlayher's wireguard_exporter (Grafana dashboard 12177), always;
  wireguard_sent_bytes_total, wireguard_received_bytes_total,
  wireguard_latest_handshake_seconds
      as MindFlavor's prometheus_wireguard_exporter, with --mindflavor;
  wgpy_device_*
      wgpyd's internals: handshakes, cookie replies, time under load, drops by
      reason, send errors by errno, staged packets, keypairs, UAPI requests;
  wgpy_exporter_device_up
      0 for a device that is gone or does not answer within --timeout (its
      other series are left out; every other device is served as usual).

Friendly names: a WireGuard configuration file given with --friendly-names
names a peer by a comment inside its [Peer] section, as MindFlavor's
exporter reads it:

  [Peer]
  # friendly_name = alice's laptop
  PublicKey = ...

The name is the "name" label of wireguard_peer_info and the "friendly_name"
label of MindFlavor's family.  The files are read again when they change."""

EPILOG = """\
examples:
  wgpy exporter                                # :9586, every device
  wgpy exporter --listen 127.0.0.1:9586 --interface wg0 \\
      --friendly-names /etc/wireguard/wg0.conf --mindflavor
  curl -s http://127.0.0.1:9586/metrics | grep wireguard_peer

exit status:
  0 after SIGINT or SIGTERM, 1 if the address cannot be bound, 2 on bad usage
  or a friendly-names file that cannot be read."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _listen(text: str) -> tuple[str, int]:
    try:
        return listen_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _timeout(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < v <= 60:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 60 seconds")
    return v


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                usage=f"{PROG} [--listen ADDR:PORT] [--interface IF]... "
                      "[--friendly-names FILE]... [--mindflavor] [--timeout S]",
                formatter_class=argparse.RawDescriptionHelpFormatter,
                fromfile_prefix_chars="@")
    p.add_argument("-l", "--listen", type=_listen, default=_listen(DEFAULT_LISTEN),
                   metavar="ADDR:PORT",
                   help=f"serve /metrics here (default {DEFAULT_LISTEN}, every address, the "
                        "port of both exporters above; :PORT is every address)")
    p.add_argument("-i", "--interface", action="append", default=[], metavar="IF",
                   help="read only this device (repeatable; default: every device)")
    p.add_argument("-n", "--friendly-names", action="append", default=[], metavar="FILE",
                   help="a WireGuard configuration file with '# friendly_name = NAME' comments "
                        "in [Peer] sections (repeatable)")
    p.add_argument("--mindflavor", action="store_true",
                   help="also serve MindFlavor's prometheus_wireguard_exporter family")
    p.add_argument("--timeout", type=_timeout, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"how long to wait for a device's answer (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--socket-dir", type=Path, default=SOCKET_DIR, help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help="log every scrape's errors")
    p.add_argument("-q", "--quiet", action="store_true", help="log only errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    level = logging.ERROR if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    journal.configure_logging("wgpy exporter: %(levelname)s: %(message)s", level)
    files = [NameFile(Path(f)) for f in args.friendly_names]
    try:
        for f in files:
            f.load()
    except ConfigError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    collector = DeviceCollector(args.interface, files, args.mindflavor, args.timeout,
                                args.socket_dir)
    host, port = args.listen
    try:
        server = MetricsServer(host, port, collector.collect)
    except OSError as e:
        print(f"{PROG}: {e.strerror or e}", file=sys.stderr)
        collector.close()
        return 1
    stop = threading.Event()

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    where = f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}"
    what = ", ".join(args.interface) or f"every device in {args.socket_dir}"
    logging.getLogger("wgpy.exporter").info("serving /metrics on %s for %s", where, what)
    notify.ready(f"serving /metrics on {where}")
    while not stop.wait(3600):
        pass
    notify.stopping()
    server.close()
    collector.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
