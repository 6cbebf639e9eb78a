"""A launcher that opens the TUN and the UAPI socket itself and hands them to
wgpyd (or wireguard-go) through ``WG_TUN_FD``/``WG_UAPI_FD``, as a service
manager or a privileged helper would:

    python3 -m wgpy.testing.launcher IFNAME [--vnet] [--tun-fd N] [--uapi-fd N]
        [--foreground-env] -- COMMAND...

It creates the TUN ``IFNAME`` and ``/var/run/wireguard/IFNAME.sock``, moves
them to fds ``N`` if asked, prints one line of JSON (the interface's index,
the socket file's inode, the two fd numbers), and execs the command with the
two descriptors inherited (the command keeps the launcher's pid).
``--foreground-env`` also sets ``WG_PROCESS_FOREGROUND=1``.

It shares no code with wgpyd (a raw ``TUNSETIFF``, a plain ``bind``), so a
test through it checks wgpyd against the contract, not against itself.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import struct
import sys
from pathlib import Path

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
SOCKET_DIR = Path("/var/run/wireguard")


def _move(fd: int, to: int | None) -> int:
    """``fd`` as an inheritable fd, numbered ``to`` if given."""
    if to is None or to == fd:
        os.set_inheritable(fd, True)
        return fd
    os.dup2(fd, to, inheritable=True)
    os.close(fd)
    return to


def _out_of_the_way(fd: int) -> int:
    # Above any number asked for, so that moving one cannot close the other.
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)
    os.close(fd)
    return high


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(
        prog="python3 -m wgpy.testing.launcher",
        usage="%(prog)s IFNAME [--vnet] [--tun-fd N] [--uapi-fd N] [--foreground-env] "
        "-- COMMAND...")
    p.add_argument("ifname")
    p.add_argument("--vnet", action="store_true", help="open the TUN with IFF_VNET_HDR")
    p.add_argument("--tun-fd", type=int, help="pass the TUN as fd N (above 2)")
    p.add_argument("--uapi-fd", type=int, help="pass the UAPI socket as fd N (above 2)")
    p.add_argument("--foreground-env", action="store_true",
                   help="set WG_PROCESS_FOREGROUND=1 (the daemon does not fork)")
    if "--" not in argv:
        p.error("a command to exec is needed after --")
    cut = argv.index("--")
    args = p.parse_args(argv[:cut])
    command = argv[cut + 1:]
    if not command:
        p.error("a command to exec is needed after --")
    wanted = [n for n in (args.tun_fd, args.uapi_fd) if n is not None]
    if any(n < 3 for n in wanted) or len(set(wanted)) != len(wanted):
        p.error("--tun-fd and --uapi-fd must differ and be above 2")
    tun = os.open("/dev/net/tun", os.O_RDWR)
    flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if args.vnet else 0)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH22x", args.ifname.encode(), flags))
    SOCKET_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = SOCKET_DIR / f"{args.ifname}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(socket.SOMAXCONN)
    uapi = sock.detach()
    if wanted:
        tun, uapi = _out_of_the_way(tun), _out_of_the_way(uapi)
    tun, uapi = _move(tun, args.tun_fd), _move(uapi, args.uapi_fd)
    print(json.dumps({"ifindex": socket.if_nametoindex(args.ifname),
                      "inode": path.stat().st_ino, "tun_fd": tun, "uapi_fd": uapi}),
          flush=True)
    env = dict(os.environ, WG_TUN_FD=str(tun), WG_UAPI_FD=str(uapi))
    if args.foreground_env:
        env["WG_PROCESS_FOREGROUND"] = "1"
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    sys.exit(main())
