"""The console's own state, in one SQLite file (``STATE_DIR/console.db``, 0600).

What the configuration file cannot hold lives here: the private keys of the
clients the console made (for their download and QR code; a peer added by
hand has none), expiry dates, one-time download links (only their SHA-256 is
kept), the traffic history and the change log.  The history is bounded: at
most ``max_samples`` samples per peer and none older than ``retention``
seconds; the change log keeps its last ``max_log`` lines.

All times are Unix seconds, given by the caller.  One connection is shared
by the console's threads behind a lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wgpy.ui.traffic import Sample

SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    interface TEXT NOT NULL, public_key TEXT NOT NULL, private_key TEXT,
    created REAL NOT NULL, expires REAL,
    PRIMARY KEY (interface, public_key));
CREATE TABLE IF NOT EXISTS links (
    digest TEXT PRIMARY KEY, interface TEXT NOT NULL, public_key TEXT NOT NULL,
    expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    interface TEXT NOT NULL, public_key TEXT NOT NULL, ts REAL NOT NULL,
    rx INTEGER NOT NULL, tx INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS samples_peer ON samples (interface, public_key, ts);
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, who TEXT NOT NULL,
    message TEXT NOT NULL);
"""


@dataclass(frozen=True)
class ClientRecord:
    interface: str
    public_key: str
    private_key: str | None
    created: float
    expires: float | None


@dataclass(frozen=True)
class LogLine:
    ts: float
    who: str
    message: str


def link_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Store:
    def __init__(self, path: Path, max_samples: int = 8640, retention: float = 7 * 86400,
                 max_log: int = 10000) -> None:
        self.path = path
        self.max_samples = max_samples
        self.retention = retention
        self.max_log = max_log
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Created 0600 before SQLite opens it: it holds client private keys.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        os.close(fd)
        self.lock = threading.Lock()
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        with self.lock:
            self.db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # -- clients ------------------------------------------------------------
    def add_client(self, rec: ClientRecord) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO clients VALUES (?, ?, ?, ?, ?)",
                       (rec.interface, rec.public_key, rec.private_key, rec.created, rec.expires))

    def client(self, interface: str, public_key: str) -> ClientRecord | None:
        with self.lock:
            row = self.db.execute(
                "SELECT interface, public_key, private_key, created, expires FROM clients "
                "WHERE interface = ? AND public_key = ?", (interface, public_key)).fetchone()
        return ClientRecord(*row) if row else None

    def clients(self, interface: str) -> dict[str, ClientRecord]:
        with self.lock:
            rows = self.db.execute(
                "SELECT interface, public_key, private_key, created, expires FROM clients "
                "WHERE interface = ?", (interface,)).fetchall()
        return {r[1]: ClientRecord(*r) for r in rows}

    def set_expiry(self, interface: str, public_key: str, expires: float | None,
                   now: float) -> None:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO clients VALUES (?, ?, NULL, ?, NULL)",
                       (interface, public_key, now))
            db.execute("UPDATE clients SET expires = ? WHERE interface = ? AND public_key = ?",
                       (expires, interface, public_key))

    def forget(self, interface: str, public_key: str) -> None:
        """Everything about a deleted peer: its key, links and history."""
        with self._tx() as db:
            for table in ("clients", "links", "samples"):
                db.execute(f"DELETE FROM {table} WHERE interface = ? AND public_key = ?",
                           (interface, public_key))

    # -- one-time links -------------------------------------------------------
    def add_link(self, token: str, interface: str, public_key: str, expires: float) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO links VALUES (?, ?, ?, ?)",
                       (link_digest(token), interface, public_key, expires))

    def peek_link(self, token: str, now: float) -> tuple[str, str] | None:
        """(interface, public key) of a live link, without using it up."""
        with self.lock:
            row = self.db.execute(
                "SELECT interface, public_key FROM links WHERE digest = ? AND expires > ?",
                (link_digest(token), now)).fetchone()
        return (row[0], row[1]) if row else None

    def take_link(self, token: str, now: float) -> tuple[str, str] | None:
        """Use a link up: (interface, public key) the first time, then None."""
        with self._tx() as db:
            d = link_digest(token)
            row = db.execute("SELECT interface, public_key, expires FROM links WHERE digest = ?",
                             (d,)).fetchone()
            db.execute("DELETE FROM links WHERE digest = ? OR expires <= ?", (d, now))
        if row is None or row[2] <= now:
            return None
        return row[0], row[1]

    # -- traffic history ----------------------------------------------------------
    def add_samples(self, interface: str, ts: float, counters: dict[str, tuple[int, int]]) -> None:
        """One sample per peer: ``{public key: (rx_bytes, tx_bytes)}``."""
        with self._tx() as db:
            db.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?)",
                           [(interface, k, ts, rx, tx) for k, (rx, tx) in counters.items()])
            db.execute("DELETE FROM samples WHERE ts < ?", (ts - self.retention,))
            for key in counters:
                db.execute(
                    "DELETE FROM samples WHERE interface = ? AND public_key = ? AND ts <= "
                    "(SELECT ts FROM samples WHERE interface = ? AND public_key = ? "
                    "ORDER BY ts DESC LIMIT 1 OFFSET ?)",
                    (interface, key, interface, key, self.max_samples))

    def samples(self, interface: str, public_key: str, since: float) -> list[Sample]:
        with self.lock:
            rows = self.db.execute(
                "SELECT ts, rx, tx FROM samples WHERE interface = ? AND public_key = ? "
                "AND ts >= ? ORDER BY ts", (interface, public_key, since)).fetchall()
        return [Sample(*r) for r in rows]

    def sample_count(self) -> int:
        with self.lock:
            return int(self.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    # -- change log -----------------------------------------------------------------
    def log(self, ts: float, who: str, message: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO log (ts, who, message) VALUES (?, ?, ?)", (ts, who, message))
            db.execute("DELETE FROM log WHERE id <= (SELECT MAX(id) FROM log) - ?",
                       (self.max_log,))

    def log_lines(self, limit: int = 200) -> list[LogLine]:
        with self.lock:
            rows = self.db.execute("SELECT ts, who, message FROM log ORDER BY id DESC LIMIT ?",
                                   (limit,)).fetchall()
        return [LogLine(*r) for r in rows]
