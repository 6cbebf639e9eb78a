"""Finding and talking to userspace WireGuard devices, as wg(8) does.

``wg show interfaces`` lists sockets in directory (readdir) order, skipping
any socket nobody listens on (and deleting it: the process is gone), so this
does the same rather than sorting.  Errors are ``DeviceError`` with an errno
so commands can print wg's ``perror``-style messages.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

from wgpy.control import uapi
from wgpy.control.uapi import DeviceInfo, UapiError, UapiProtocolError
from wgpy.control.uapi_client import UapiClient


class DeviceError(Exception):
    def __init__(self, errno: int) -> None:
        self.errno = abs(errno)
        super().__init__(os.strerror(self.errno))


def socket_dir() -> Path:
    return uapi.SOCKET_DIR


def _connectable(path: Path) -> bool:
    try:
        if not stat.S_ISSOCK(path.stat().st_mode):
            return False
    except OSError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except ConnectionRefusedError:
            try:  # the process is gone: clean up, as wg does
                path.unlink()
            except OSError:
                pass
            return False
        except OSError:
            return True
    return True


def list_devices() -> list[str]:
    """Interfaces with a live UAPI socket, in directory order (like ``wg``)."""
    d = socket_dir()
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise DeviceError(e.errno or errno_mod.EIO) from None
    out = []
    for n in names:
        if len(n) <= len(".sock") or not n.endswith(".sock"):
            continue
        name = n[: -len(".sock")]
        if _connectable(d / n):
            out.append(name)
    return out


def _check(name: str) -> None:
    if "/" in name:
        raise DeviceError(errno_mod.EINVAL)
    try:
        st = (socket_dir() / f"{name}.sock").stat()
    except OSError as e:
        raise DeviceError(e.errno or errno_mod.ENOENT) from None
    if not stat.S_ISSOCK(st.st_mode):
        raise DeviceError(errno_mod.EBADF)


@contextlib.contextmanager
def _device_errors() -> Iterator[None]:
    """Turn what talking to a device can raise into ``DeviceError``, with the errno
    wg would report (the device's own errno made positive)."""
    try:
        yield
    except UapiError as e:
        raise DeviceError(e.errno) from None
    except UapiProtocolError:
        raise DeviceError(errno_mod.EPROTO) from None
    except OSError as e:
        raise DeviceError(e.errno or errno_mod.EIO) from None


def get_device(name: str) -> DeviceInfo:
    """:raises DeviceError: with the errno wg would report."""
    _check(name)
    with _device_errors():
        return UapiClient(name, socket_dir()).get()


def set_device(name: str, lines: list[str]) -> None:
    """:raises DeviceError: with the errno the device answered (made positive)."""
    _check(name)
    with _device_errors():
        UapiClient(name, socket_dir()).set(lines)
