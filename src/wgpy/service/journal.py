"""Log lines that fit systemd's journal.

A service whose stderr is connected to the journal finds ``JOURNAL_STREAM``
(``DEVICE:INODE`` of that stream) in its environment.  The journal stamps
every line itself, so a timestamp of our own would show twice; and it reads
a ``<N>`` prefix (syslog priority: 3 error, 4 warning, 6 info, 7 debug) as
the line's priority.  ``connected`` tells whether stderr is that stream
(the variable is inherited by children whose stderr may go elsewhere, so
the device and inode are compared, as systemd.exec(5) advises).
"""

from __future__ import annotations

import logging
import os
import sys

ERR, WARNING, INFO, DEBUG = 3, 4, 6, 7


def connected(fd: int = 2) -> bool:
    """Whether ``fd`` is the journal stream ``JOURNAL_STREAM`` names."""
    text = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = text.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def priority(levelno: int) -> int:
    """The syslog priority of a ``logging`` level."""
    if levelno >= logging.ERROR:
        return ERR
    if levelno >= logging.WARNING:
        return WARNING
    if levelno >= logging.INFO:
        return INFO
    return DEBUG


class JournalFormatter(logging.Formatter):
    """Prefixes each line (each line of a multi-line record) with its priority."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def configure_logging(fmt: str, level: int) -> None:
    """``logging.basicConfig`` to stderr with ``fmt`` (which has no time of its
    own), with priority prefixes when stderr is the journal."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter(fmt) if connected() else logging.Formatter(fmt))
    logging.basicConfig(level=level, handlers=[handler], force=True)
