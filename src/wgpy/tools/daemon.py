"""``wgpyd``: the userspace WireGuard device, with wireguard-go's contract."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
from pathlib import Path

from wgpy import __version__
from wgpy.control.uapi import socket_path
from wgpy.io.driver import Driver
from wgpy.io.keylog import KeyLog, KeyLogRefused
from wgpy.io.log import SILENT, Logger, parse_level
from wgpy.io.tun import Tun, TunError, interface_exists, validate_name
from wgpy.io.uapi_server import UapiInUse, adopt_listener, listen
from wgpy.io.udp import UdpBind
from wgpy.protocol import Device
from wgpy.protocol.constants import DEFAULT_MTU

DESCRIPTION = """\
Create the WireGuard interface INTERFACE as a TUN device and run the
WireGuard protocol for it in userspace, as wireguard-go does.  The device
starts with no key and no peers; configure it with wg(8) or `wgpy set`,
which talk to it over the UAPI socket /var/run/wireguard/INTERFACE.sock,
and give it addresses and routes with ip(8) -- or let wg-quick(8) do all of
it:  WG_QUICK_USERSPACE_IMPLEMENTATION=wgpyd wg-quick up wg0

Unless -f is given, wgpyd returns once the interface and the socket exist
and goes on in the background.  It exits, removing both, on SIGINT or
SIGTERM, when the socket is deleted, or when the interface is deleted."""

EPILOG = """\
environment:
  LOG_LEVEL=verbose|error|silent   what to log to stderr (default: error).
                                   verbose logs handshakes, keypairs,
                                   keepalives and dropped packets; secrets
                                   are never logged.  In the background,
                                   stderr is kept only when LOG_LEVEL is set.
  WGPY_KEYLOG=FILE                 as --keylog.
  WGPY_BUSY_POLL=USEC              as --busy-poll.
  WG_PROCESS_FOREGROUND=1          as -f (wireguard-go's variable).
  WG_TUN_FD=N                      use the open TUN device on file descriptor N
                                   instead of creating INTERFACE (its real name
                                   is used); it must be IFF_TUN|IFF_NO_PI, with
                                   or without IFF_VNET_HDR.  As wireguard-go: a
                                   launcher that creates the device can run
                                   wgpyd with fewer privileges.
  WG_UAPI_FD=N                     serve the UAPI on the listening unix socket
                                   on file descriptor N instead of creating
                                   /var/run/wireguard/INTERFACE.sock; wgpyd
                                   does not remove that socket file on exit.

exit status:
  0 on a clean shutdown, 1 when the device cannot be created (not root,
  the interface or its socket already exists, bad arguments)."""


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
        "decrypt the sessions it records.",
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


def _inherited_fd(variable: str) -> int | None:
    """The file descriptor a launcher passed in ``variable``, or None if unset."""
    text = os.environ.get(variable)
    if text is None:
        return None
    if not text.isdigit() or len(text) > 9:
        raise ValueError(f"{variable}={text!r} is not a file descriptor number")
    fd = int(text)
    try:
        os.fstat(fd)
    except OSError as e:
        raise ValueError(f"{variable}={fd}: {e.strerror}") from None
    os.set_inheritable(fd, False)
    return fd


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name: str = args.interface
    level_text = os.environ.get("LOG_LEVEL")
    foreground = args.foreground or os.environ.get("WG_PROCESS_FOREGROUND") == "1"

    def fail(message: str) -> int:
        print(f"wgpyd: {message}", file=sys.stderr)
        return 1

    try:
        validate_name(name)
        tun_fd = _inherited_fd("WG_TUN_FD")
        uapi_fd = _inherited_fd("WG_UAPI_FD")
    except (TunError, ValueError) as e:
        return fail(str(e))
    if os.geteuid() != 0 and tun_fd is None:
        return fail("must be run as root (it creates a TUN interface)")
    if tun_fd is None and interface_exists(name):
        return fail(f"interface {name} already exists")
    keylog = None
    if args.keylog:
        try:
            keylog = KeyLog(args.keylog)
        except KeyLogRefused as e:
            return fail(f"refusing to open key log {args.keylog}: {e.strerror}")
        except OSError as e:
            return fail(f"cannot open key log {args.keylog}: {e.strerror}")
    tun: Tun | None = None
    if tun_fd is not None:
        try:
            tun = Tun.from_fd(tun_fd)
        except TunError as e:
            return fail(str(e))
        name = tun.name  # as wireguard-go: the device's own name wins
    path = socket_path(name)
    if uapi_fd is not None:
        try:
            uapi_sock, _ = adopt_listener(uapi_fd)
        except OSError as e:
            return fail(f"WG_UAPI_FD={uapi_fd}: {e.strerror}")
    else:
        try:
            uapi_sock = listen(name)
        except UapiInUse:
            return fail(f"interface {name} is already served by another process ({path})")
        except OSError as e:
            return fail(f"cannot create UAPI socket {path}: {e.strerror}")

    def undo() -> None:
        uapi_sock.close()
        if uapi_fd is None:
            path.unlink(missing_ok=True)

    if tun is None:
        try:
            tun = Tun.create(name, args.mtu)
        except TunError as e:
            undo()
            return fail(str(e))
    try:
        bind = UdpBind.open(0)
    except OSError as e:
        tun.close()
        undo()
        return fail(f"cannot open UDP socket: {e.strerror}")

    logger = Logger(name, parse_level(level_text))
    logger.verbose("Starting wgpyd version " + __version__)
    if not foreground:
        _daemonize(keep_stderr=bool(level_text) and logger.level != SILENT)
    device = Device(secrets.token_bytes)
    with contextlib.suppress(OSError):
        device.mtu = tun.mtu()
    # The socket file this process created is removed on exit; a launcher's
    # (WG_UAPI_FD) is watched but left alone.
    uapi_path = Path(uapi_sock.getsockname() or path)
    driver = Driver(device, tun, bind, uapi_sock, uapi_path, logger, keylog,
                    args.busy_poll / 1e6, owns_uapi_path=uapi_fd is None)
    try:
        driver.run()
    except KeyboardInterrupt:
        pass  # before the loop took SIGINT over
    logger.verbose("Shutting down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
