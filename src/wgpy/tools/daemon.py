"""``wgpyd``: the userspace WireGuard device, with wireguard-go's contract."""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from wgpy import __version__
from wgpy.control.uapi import socket_path
from wgpy.io.driver import Driver
from wgpy.io.keylog import KeyLog, KeyLogRefused
from wgpy.io.log import SILENT, Logger, parse_level
from wgpy.io.tun import Tun, TunError, interface_exists, validate_name
from wgpy.io.uapi_server import (
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_REQUEST_BYTES,
    UapiFdError,
    UapiInUse,
    adopt_listener,
    listen,
)
from wgpy.io.udp import UdpBind
from wgpy.protocol import Device
from wgpy.protocol.constants import DEFAULT_MTU

DESCRIPTION = f"""\
Create the WireGuard interface INTERFACE as a TUN device and run the
WireGuard protocol for it in userspace, as wireguard-go does.  The device
starts with no key and no peers; configure it with wg(8) or `wgpy set`,
which talk to it over the UAPI socket /var/run/wireguard/INTERFACE.sock,
and give it addresses and routes with ip(8) -- or let wg-quick(8) do all of
it:  WG_QUICK_USERSPACE_IMPLEMENTATION=wgpyd wg-quick up wg0

Unless -f is given, wgpyd returns once the interface and the socket exist
and goes on in the background.  It exits, removing both, on SIGINT or
SIGTERM, when the socket is deleted, or when the interface is deleted.

The UAPI socket serves up to {MAX_CONNECTIONS} clients at once: a new one closes
the connection idle longest, and one idle for {IDLE_TIMEOUT:.0f} seconds is closed.
A request over {MAX_REQUEST_BYTES >> 20} MiB is answered errno=-22.

A launcher (a service manager, a privileged parent) may open the TUN and
the UAPI socket itself and pass them to wgpyd as open file descriptors
(WG_TUN_FD, WG_UAPI_FD), as it would to wireguard-go."""

EPILOG = """\
environment:
  LOG_LEVEL=verbose|error|silent   what to log to stderr (default: error).
                                   verbose logs handshakes, keypairs,
                                   keepalives and dropped packets; secrets
                                   are never logged.  In the background,
                                   stderr is kept only when LOG_LEVEL is set.
  WGPY_KEYLOG=FILE                 as --keylog.
  WGPY_BUSY_POLL=USEC              as --busy-poll.
  WG_TUN_FD=N                      use the TUN interface open on inherited
                                   file descriptor N instead of creating
                                   one.  Its name (TUNGETIFF), not
                                   INTERFACE, names the device; it must be
                                   IFF_TUN|IFF_NO_PI, and IFF_VNET_HDR on it
                                   turns offloads on.  The MTU is set to
                                   1420.  wgpyd then does not insist on
                                   root (it still needs CAP_NET_ADMIN).
  WG_UAPI_FD=N                     serve the listening UNIX socket open on
                                   inherited file descriptor N instead of
                                   creating /var/run/wireguard/INTERFACE.sock.
                                   It must be bound to a path: wgpyd exits
                                   when that path is deleted, and deletes it
                                   when it exits.
  WG_PROCESS_FOREGROUND=1          as -f.
  The WG_ variables are wireguard-go's and mean what they mean to it.

exit status:
  0 on a clean shutdown, 1 when the device cannot be created (not root,
  the interface or its socket already exists, a WG_*_FD that is not what
  it should be, a key log refused, bad arguments)."""

ENV_TUN_FD = "WG_TUN_FD"
ENV_UAPI_FD = "WG_UAPI_FD"
ENV_FOREGROUND = "WG_PROCESS_FOREGROUND"


DEFAULT_BUSY_POLL_US = 1000


def _busy_poll(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of microseconds: {text!r}") from None
    if not 0 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError("must be between 0 and 1000000 microseconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wgpyd",
        usage="wgpyd [-f/--foreground] [--keylog FILE] [--busy-poll USEC] INTERFACE",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("interface", metavar="INTERFACE", help="interface name (1-15 characters)")
    p.add_argument(
        "-f", "--foreground", action="store_true", help="stay in the foreground (do not fork)"
    )
    p.add_argument(
        "--keylog",
        metavar="FILE",
        default=os.environ.get("WGPY_KEYLOG") or None,
        help="append each handshake's keys to FILE (created 0600) in the format of "
        "Wireshark's wg.keylog_file, so captures can be decrypted: "
        "tshark -o wg.keylog_file:FILE. Off by default. Whoever reads FILE can "
        "decrypt the sessions it records. wgpyd refuses (exit status 1) a FILE "
        "that is a symbolic link, not a regular file, owned by another user or "
        "hard-linked elsewhere.",
    )
    p.add_argument(
        "--busy-poll",
        metavar="USEC",
        type=_busy_poll,
        default=os.environ.get("WGPY_BUSY_POLL", str(DEFAULT_BUSY_POLL_US)),
        help="after traffic, keep polling for USEC microseconds before sleeping, "
        "yielding the CPU to any other runnable task (default "
        f"{DEFAULT_BUSY_POLL_US}; 0 turns it off). A reply that comes within "
        "that time finds wgpyd awake and its caches warm (shorter round trips, "
        "see docs/performance.md), for CPU time only while traffic flows.",
    )
    p.add_argument("--mtu", type=int, default=DEFAULT_MTU, help=argparse.SUPPRESS)
    p.add_argument("--version", action="version", version=f"wgpyd {__version__}")
    return p


def _daemonize(keep_stderr: bool) -> None:
    """Fork once into a new session; the parent exits 0 (the sockets already exist)."""
    pid = os.fork()
    if pid:
        os._exit(0)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if not keep_stderr:
        os.dup2(devnull, 2)
    os.close(devnull)


def _inherited_fd(var: str) -> int | None:
    """The fd number in ``var`` (unset or empty: None), parsed as wireguard-go does."""
    text = os.environ.get(var, "")
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) >= 1 << 31:
        raise ValueError(f"{var}={text!r} is not a file descriptor number")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name: str = args.interface
    level_text = os.environ.get("LOG_LEVEL")
    level = parse_level(level_text)
    foreground = args.foreground or os.environ.get(ENV_FOREGROUND) == "1"

    def fail(message: str) -> int:
        print(f"wgpyd: {message}", file=sys.stderr)
        return 1

    try:
        validate_name(name)
        tun_fd = _inherited_fd(ENV_TUN_FD)
        uapi_fd = _inherited_fd(ENV_UAPI_FD)
    except (TunError, ValueError) as e:
        return fail(str(e))
    if os.geteuid() != 0 and tun_fd is None:
        return fail("must be run as root (it creates a TUN interface)")
    tun: Tun | None = None
    if tun_fd is not None:
        try:
            tun = Tun.from_fd(tun_fd, args.mtu)
        except TunError as e:
            return fail(f"{ENV_TUN_FD}: {e}")
        name = tun.name  # the device is the TUN's, whatever INTERFACE says
    elif interface_exists(name):
        return fail(f"interface {name} already exists")
    logger = Logger(name, level)
    if name != args.interface:
        logger.verbose(f"Using the TUN interface {name} of {ENV_TUN_FD}={tun_fd}")

    opened = _open_rest(name, args, tun, uapi_fd, fail)
    if isinstance(opened, int):
        return opened
    tun, uapi_sock, path, bind, keylog = opened

    logger.verbose("Starting wgpyd version " + __version__)
    if not foreground:
        _daemonize(keep_stderr=bool(level_text) and logger.level != SILENT)
    device = Device(secrets.token_bytes)
    try:
        device.mtu = tun.mtu()
    except OSError:
        device.mtu = args.mtu
    driver = Driver(device, tun, bind, uapi_sock, path, logger, keylog, args.busy_poll / 1e6)
    try:
        driver.run()
    except KeyboardInterrupt:
        pass  # before the loop took SIGINT over
    logger.verbose("Shutting down")
    return 0


Opened = tuple[Tun, socket.socket, Path, UdpBind, KeyLog | None]


def _open_rest(
    name: str,
    args: argparse.Namespace,
    tun: Tun | None,
    uapi_fd: int | None,
    fail: Callable[[str], int],
) -> Opened | int:
    """Open what the device needs and was not given: the key log, the UAPI
    socket, the TUN and the UDP sockets.  On failure, close what was opened
    (removing a socket we created) and return ``fail``'s exit status."""
    undo: list[Callable[[], None]] = []

    def failed(message: str) -> int:
        for fn in reversed(undo):
            fn()
        return fail(message)

    if tun is not None:
        undo.append(tun.close)
    keylog = None
    if args.keylog:
        try:
            keylog = KeyLog(args.keylog)
        except KeyLogRefused as e:
            return failed(f"refusing to open key log {args.keylog}: {e.strerror}")
        except OSError as e:
            return failed(f"cannot open key log {args.keylog}: {e.strerror}")
        undo.append(keylog.close)
    if uapi_fd is not None:
        try:
            uapi_sock, path = adopt_listener(uapi_fd)
        except UapiFdError as e:
            return failed(f"{ENV_UAPI_FD}: {e.strerror}")
        undo.append(uapi_sock.close)
    else:
        path = socket_path(name)
        try:
            uapi_sock = listen(name)
        except UapiInUse:
            return failed(f"interface {name} is already served by another process ({path})")
        except OSError as e:
            return failed(f"cannot create UAPI socket {path}: {e.strerror}")
        undo.append(uapi_sock.close)
        undo.append(lambda: path.unlink(missing_ok=True))
    if tun is None:
        try:
            tun = Tun.create(name, args.mtu)
        except TunError as e:
            return failed(str(e))
        undo.append(tun.close)
    try:
        bind = UdpBind.open(0)
    except OSError as e:
        return failed(f"cannot open UDP socket: {e.strerror}")
    return tun, uapi_sock, path, bind, keylog


if __name__ == "__main__":
    sys.exit(main())
