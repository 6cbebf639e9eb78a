"""systemd's side of sd_notify, for tests: a datagram socket to put in a
daemon's ``NOTIFY_SOCKET``, and the notifications it received, in order.

    with NotifyListener(lab.workdir) as n:
        lab.popen(ns, argv, env=n.env())
        n.wait("READY=1")
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path
from types import TracebackType

from wgpy.testing.lab import LabError


class NotifyListener:
    def __init__(self, directory: Path, name: str = "notify.sock") -> None:
        self.path = directory / name
        self.path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        os.chmod(self.path, 0o666)
        self.messages: list[dict[str, str]] = []

    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path)}

    def _receive(self, timeout: float) -> bool:
        self.sock.settimeout(max(0.001, timeout))
        try:
            data = self.sock.recv(4096)
        except (TimeoutError, BlockingIOError):
            return False
        fields = dict(line.partition("=")[::2] for line in data.decode().split("\n") if line)
        self.messages.append(fields)
        return True

    def wait(self, field: str, timeout: float = 15) -> dict[str, str]:
        """The first notification (received so far or within ``timeout``) that
        carries ``field`` (``"READY=1"``), which is then consumed."""
        key, _, value = field.partition("=")
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.messages):
                if m.get(key) == value:
                    del self.messages[i]
                    return m
            left = deadline - time.monotonic()
            if left <= 0 or not self._receive(left):
                raise LabError(f"no {field} within {timeout:g} s; got {self.messages}")

    def drain(self, timeout: float = 0.2) -> list[dict[str, str]]:
        while self._receive(timeout):
            pass
        return self.messages

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def journal_env(log: Path) -> dict[str, str]:
    """``JOURNAL_STREAM`` naming ``log`` (created if need be), as systemd sets it
    for a service whose stderr goes to the journal."""
    log.touch()
    st = log.stat()
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


# A timestamp of the program's own (journald adds one): 2026/12/03 or 13:45:14.
_STAMP = re.compile(r"\d{4}/\d\d/\d\d|\d\d:\d\d:\d\d")


def journal_lines(text: str) -> list[str]:
    """The non-empty lines a service wrote under ``JOURNAL_STREAM``, checked as
    journald reads them: each starts with a syslog priority (``<3>``) and
    carries no timestamp of its own.  Raises ``LabError`` naming a bad line."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise LabError("no log lines")
    for line in lines:
        if not re.match(r"<[0-7]>", line):
            raise LabError(f"no syslog priority: {line!r}")
        if _STAMP.search(line):
            raise LabError(f"a timestamp of its own: {line!r}")
    return lines
