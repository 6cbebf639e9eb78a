"""Logging in wireguard-go's format and levels (``LOG_LEVEL=verbose|error|silent``).

Lines look like ``DEBUG: (wg0) 2026/11/22 10:00:00 message`` and go to
stderr.  When stderr is systemd's journal (``JOURNAL_STREAM``), which stamps
lines itself, they carry no time and start with their syslog priority
instead: ``<7>DEBUG: (wg0) message``.  No secret is ever passed to a logger.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from wgpy.service import journal

SILENT = 0
ERROR = 1
VERBOSE = 2

_LEVELS = {"silent": SILENT, "error": ERROR, "verbose": VERBOSE, "debug": VERBOSE}
_PRIORITY = {"DEBUG": journal.DEBUG, "INFO": journal.INFO, "ERROR": journal.ERR}


def parse_level(text: str | None) -> int:
    """The level named by LOG_LEVEL; unset or unknown means error (wireguard-go's default)."""
    return _LEVELS.get((text or "").strip().lower(), ERROR)


# Rate-limited messages: a burst of this many, then this many per second.
LIMITED_BURST = 10
LIMITED_PER_SECOND = 10.0


class Logger:
    def __init__(self, interface: str, level: int, stream: TextIO | None = None) -> None:
        self.interface = interface
        self.level = level
        self.stream = stream if stream is not None else sys.stderr
        self._tokens = float(LIMITED_BURST)
        self._last = time.monotonic()
        self._suppressed = 0
        try:
            self.journal = journal.connected(self.stream.fileno())
        except (OSError, ValueError, AttributeError):
            self.journal = False  # not a real file (tests)

    @property
    def verbose_enabled(self) -> bool:
        return self.level >= VERBOSE

    def _emit(self, tag: str, message: str) -> None:
        if self.journal:
            line = f"<{_PRIORITY[tag]}>{tag}: ({self.interface}) {message}\n"
        else:
            stamp = time.strftime("%Y/%m/%d %H:%M:%S")
            line = f"{tag}: ({self.interface}) {stamp} {message}\n"
        try:
            self.stream.write(line)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not take the device down

    def verbose(self, message: str) -> None:
        if self.level >= VERBOSE:
            self._emit("DEBUG", message)

    def verbose_limited(self, message: str) -> None:
        """A verbose message that a flood could repeat: at most a burst, then a trickle."""
        if self.level < VERBOSE:
            return
        now = time.monotonic()
        self._tokens = min(LIMITED_BURST, self._tokens + (now - self._last) * LIMITED_PER_SECOND)
        self._last = now
        if self._tokens < 1:
            self._suppressed += 1
            return
        self._tokens -= 1
        if self._suppressed:
            self._emit("DEBUG", f"({self._suppressed} similar messages suppressed)")
            self._suppressed = 0
        self._emit("DEBUG", message)

    def info(self, message: str) -> None:
        """Shown at every level but silent (for replies to an operator's request)."""
        if self.level > SILENT:
            self._emit("INFO", message)

    def error(self, message: str) -> None:
        if self.level >= ERROR:
            self._emit("ERROR", message)
