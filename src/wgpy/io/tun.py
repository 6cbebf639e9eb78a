"""Linux TUN devices (``/dev/net/tun``, ``IFF_TUN | IFF_NO_PI``)."""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from pathlib import Path

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
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


class Tun:
    """An open TUN interface.  Reads and writes are whole IP packets."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name

    @classmethod
    def create(cls, name: str, mtu: int) -> Tun:
        validate_name(name)
        if interface_exists(name):
            raise TunError(f"interface {name} already exists")
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise TunError(f"cannot open /dev/net/tun: {e.strerror}") from e
        try:
            ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
            res = fcntl.ioctl(fd, TUNSETIFF, ifr)
            actual = res[:IFNAMSIZ].rstrip(b"\0").decode()
            tun = cls(fd, actual)
            tun.set_mtu(mtu)
        except OSError as e:
            os.close(fd)
            raise TunError(f"cannot create TUN interface {name}: {e.strerror}") from e
        os.set_blocking(fd, False)
        return tun

    @classmethod
    def from_fd(cls, fd: int) -> Tun:
        """Adopt an already-configured TUN fd (``WG_TUN_FD``, as wireguard-go)."""
        res = fcntl.ioctl(fd, 0x800454D2, bytes(40))  # TUNGETIFF
        name = res[:IFNAMSIZ].rstrip(b"\0").decode()
        os.set_blocking(fd, False)
        return cls(fd, name)

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
