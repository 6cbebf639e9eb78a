"""A blocking UAPI client: one request per connection, as wg(8) makes them.

The codec is ``control.uapi``; this module only moves its text over the
device's socket, ``/var/run/wireguard/NAME.sock``.
"""

from __future__ import annotations

import errno as errno_mod
import os
import socket
from pathlib import Path

from wgpy.control.uapi import (
    SOCKET_DIR,
    STATS_REQUEST,
    DeviceInfo,
    UapiError,
    UapiProtocolError,
    parse_get,
    parse_stats,
    socket_path,
)


def serving(path: Path) -> bool:
    """Whether the UAPI socket at ``path`` takes a connection.  Wait for this,
    not for the file: it exists from the daemon's bind() on, a moment before
    its listen(), and a daemon preempted in between refuses (ECONNREFUSED)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _failed(code: int) -> UapiError:
    try:
        text = os.strerror(abs(code))
    except (ValueError, OverflowError):
        text = "unknown error"
    return UapiError(code, f"{text} (errno={code})")


class UapiClient:
    """A blocking UAPI client for one device.  Each call uses its own connection."""

    def __init__(self, interface: str, directory: Path = SOCKET_DIR, timeout: float = 10) -> None:
        self.interface = interface
        self.path = socket_path(interface, directory)
        self.timeout = timeout

    def _exchange(self, request: bytes, allow_silence: bool = False) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            try:
                s.connect(str(self.path))
            except FileNotFoundError as e:
                raise UapiError(
                    -errno_mod.ENOENT, f"Unable to access interface {self.interface}: "
                    "No such file or directory"
                ) from e
            except ConnectionRefusedError as e:
                raise UapiError(
                    -errno_mod.ECONNREFUSED,
                    f"Unable to access interface {self.interface}: Connection refused",
                ) from e
            s.sendall(request)
            chunks: list[bytes] = []
            buf = b""
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
                buf = buf[-64:] + data
                # A reply ends with "errno=N\n\n".
                if b"\n\n" in buf and b"errno=" in buf:
                    tail = b"".join(chunks)
                    idx = tail.rfind(b"errno=")
                    if tail.find(b"\n\n", idx) != -1:
                        break
        text = b"".join(chunks).decode("utf-8", "replace")
        if allow_silence and not text:
            return ""
        if "errno=" not in text:
            raise UapiProtocolError(f"{self.path}: reply without errno")
        return text

    def get(self) -> DeviceInfo:
        text = self._exchange(b"get=1\n\n")
        try:
            return parse_get(text)
        except UapiError as e:
            raise _failed(e.errno) from None

    def stats(self) -> dict[str, int] | None:
        """wgpyd's counters (the ``stats=1`` extension), or None when the device
        closes the connection without a word, as wireguard-go does on an
        operation it does not know."""
        try:
            text = self._exchange(STATS_REQUEST, allow_silence=True)
        except ConnectionResetError:
            return None
        if not text:
            return None
        try:
            return parse_stats(text)
        except UapiError as e:
            raise _failed(e.errno) from None

    def set(self, lines: list[str]) -> None:
        """Send a set request; raise UapiError on a non-zero errno."""
        body = "".join(line + "\n" for line in lines)
        text = self._exchange(f"set=1\n{body}\n".encode())
        for raw in text.split("\n"):
            if raw.startswith("errno="):
                code = int(raw[6:])
                if code != 0:
                    raise _failed(code)
                return
