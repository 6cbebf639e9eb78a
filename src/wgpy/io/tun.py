"""Linux TUN devices (``/dev/net/tun``, ``IFF_TUN | IFF_NO_PI``).

With ``offload`` (the default unless ``WGPY_DATAPATH=batch``) the device
is opened with ``IFF_VNET_HDR`` and told with
``TUNSETOFFLOAD`` that we take checksum offload, TSO4/TSO6 and (if the
kernel knows it) USO: every read and write then carries a 10-byte
``virtio_net_hdr`` and reads may be 64 KB super-segments (``io.offload``).

A TUN a launcher opened (``WG_TUN_FD``) is taken as it is (``Tun.from_fd``):
its flags, not ``WGPY_DATAPATH``, say whether the vnet header is on.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from pathlib import Path

TUNSETIFF = 0x400454CA
TUNGETIFF = 0x800454D2
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40
SIOCSIFMTU = 0x8922
SIOCGIFMTU = 0x8921
IFNAMSIZ = 16


class TunError(OSError):
    pass


def interface_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def validate_name(name: str) -> None:
    if not name or len(name) >= IFNAMSIZ or "/" in name or name in (".", "..") or any(
        c.isspace() for c in name
    ):
        raise TunError(f"invalid interface name {name!r} (1-15 characters, no '/' or spaces)")


def datapath_mode() -> str:
    """``WGPY_DATAPATH``: ``offload`` (default) or ``batch`` (no vnet header: for
    comparing, and for kernels whose TUN takes no offloads)."""
    return "batch" if os.environ.get("WGPY_DATAPATH") == "batch" else "offload"


def _set_offload(fd: int) -> int:
    """Enable what the kernel supports; 0 when it takes no offload at all."""
    base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
    for flags in (base | TUN_F_USO4 | TUN_F_USO6, base):
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
            return flags
        except OSError:
            continue
    return 0


class Tun:
    """An open TUN interface.  Reads and writes are whole IP packets, behind a
    ``virtio_net_hdr`` when ``vnet_hdr`` is set."""

    def __init__(self, fd: int, name: str, vnet_hdr: bool = False, offloads: int = 0) -> None:
        self.fd = fd
        self.name = name
        self.vnet_hdr = vnet_hdr
        self.offloads = offloads

    @classmethod
    def create(cls, name: str, mtu: int, offload: bool | None = None) -> Tun:
        validate_name(name)
        if interface_exists(name):
            raise TunError(f"interface {name} already exists")
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise TunError(f"cannot open /dev/net/tun: {e.strerror}") from e
        try:
            if offload is None:
                offload = datapath_mode() == "offload"
            flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
            ifr = struct.pack("16sH22x", name.encode(), flags)
            res = fcntl.ioctl(fd, TUNSETIFF, ifr)
            actual = res[:IFNAMSIZ].rstrip(b"\0").decode()
            tun = cls(fd, actual, offload, _set_offload(fd) if offload else 0)
            tun.set_mtu(mtu)
        except OSError as e:
            os.close(fd)
            raise TunError(f"cannot create TUN interface {name}: {e.strerror}") from e
        os.set_blocking(fd, False)
        return tun

    @classmethod
    def from_fd(cls, fd: int, mtu: int) -> Tun:
        """The TUN interface open on ``fd``, passed by a launcher (``WG_TUN_FD``),
        as wireguard-go's ``CreateTUNFromFile`` takes it: the name and flags come
        from ``TUNGETIFF``; with ``IFF_VNET_HDR`` set (by the launcher, whatever
        ``WGPY_DATAPATH`` says) the offloads are turned on as for one we create;
        the MTU is set to ``mtu`` if it differs; the fd is made non-blocking and
        close-on-exec.

        :raises TunError: ``fd`` is not an attached ``IFF_TUN | IFF_NO_PI`` device.
        """
        try:
            res = fcntl.ioctl(fd, TUNGETIFF, bytes(40))  # struct ifreq
        except OSError as e:
            if e.errno == errno.EBADF:
                raise TunError(f"file descriptor {fd}: {e.strerror}") from None
            raise TunError(f"file descriptor {fd} is not a TUN interface: {e.strerror}") from None
        name = res[:IFNAMSIZ].rstrip(b"\0").decode(errors="replace")
        flags: int = struct.unpack_from("H", res, IFNAMSIZ)[0]
        if flags & (IFF_TUN | IFF_TAP) != IFF_TUN:
            raise TunError(f"{name} (file descriptor {fd}) is a TAP, not a TUN interface")
        if not flags & IFF_NO_PI:
            raise TunError(f"{name} (file descriptor {fd}) was opened without IFF_NO_PI")
        vnet = bool(flags & IFF_VNET_HDR)
        tun = cls(fd, name, vnet, _set_offload(fd) if vnet else 0)
        try:
            if tun.mtu() != mtu:
                tun.set_mtu(mtu)
        except OSError as e:
            raise TunError(f"cannot set the MTU of {name}: {e.strerror}") from None
        os.set_blocking(fd, False)
        os.set_inheritable(fd, False)
        return tun

    def _ifreq_ioctl(self, request: int, value: int = 0) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            ifr = struct.pack("16si20x", self.name.encode(), value)
            res = fcntl.ioctl(s.fileno(), request, ifr)
        return int(struct.unpack_from("i", res, 16)[0])

    def set_mtu(self, mtu: int) -> None:
        self._ifreq_ioctl(SIOCSIFMTU, mtu)

    def mtu(self) -> int:
        return self._ifreq_ioctl(SIOCGIFMTU)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
