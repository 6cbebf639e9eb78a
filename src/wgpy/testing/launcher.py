"""A launcher that opens the TUN and the UAPI socket itself and hands them to
wgpyd (or wireguard-go) through ``WG_TUN_FD``/``WG_UAPI_FD``, as a service
manager or a privileged helper would:

    python3 -m wgpy.testing.launcher IFNAME [--vnet] -- wgpyd -f IFNAME

It prints one line of JSON (the interface's index, the socket file's inode)
and then execs the command with the two descriptors inherited.
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python3 -m wgpy.testing.launcher",
                                usage="%(prog)s IFNAME [--vnet] -- COMMAND...")
    p.add_argument("ifname")
    p.add_argument("--vnet", action="store_true", help="open the TUN with IFF_VNET_HDR")
    if "--" not in argv:
        p.error("a command to exec is needed after --")
    cut = argv.index("--")
    args = p.parse_args(argv[:cut])
    command = argv[cut + 1:]
    if not command:
        p.error("a command to exec is needed after --")
    tun = os.open("/dev/net/tun", os.O_RDWR)
    flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if args.vnet else 0)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH22x", args.ifname.encode(), flags))
    SOCKET_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = SOCKET_DIR / f"{args.ifname}.sock"
    uapi = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    uapi.bind(str(path))
    os.chmod(path, 0o600)
    uapi.listen(socket.SOMAXCONN)
    print(json.dumps({"ifindex": socket.if_nametoindex(args.ifname),
                      "inode": path.stat().st_ino}), flush=True)
    os.set_inheritable(tun, True)
    os.set_inheritable(uapi.fileno(), True)
    env = dict(os.environ, WG_TUN_FD=str(tun), WG_UAPI_FD=str(uapi.fileno()))
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    sys.exit(main())
