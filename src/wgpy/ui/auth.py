"""The console's one admin password, its sessions, CSRF tokens and login limits.

Theory of operation:

- The password is stored as a salted scrypt hash (``hashlib.scrypt``,
  N=2^15, r=8, p=1: 32 MiB and a noticeable fraction of a second per try)
  in one line, ``scrypt$LOG2N$R$P$SALT$HASH`` (base64), in a 0600 file.
- A session is a random token in an ``HttpOnly``, ``SameSite=Strict``
  cookie (``Secure`` under TLS), kept in memory only: restarting the console
  logs everyone out.  It ends after ``idle`` seconds without a request or
  ``lifetime`` seconds in all.  Each session has its own CSRF token, which
  every form carries and every change must present.
- Logins are limited before any hash is computed: per source address, the
  first failures are free, then each attempt must wait twice as long as the
  one before (up to ``max_delay``); over all sources, at most
  ``global_per_minute`` failures a minute are judged.

Everything here takes ``now`` (seconds, monotonic) as an argument.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

SCRYPT_LOG2N = 15
SCRYPT_R = 8
SCRYPT_P = 1
_MAXMEM = 128 * 1024 * 1024
PASSWORD_MIN = 8


class PasswordError(Exception):
    """The password file is missing or unreadable, or a new password is unfit."""


def hash_password(password: str, log2n: int = SCRYPT_LOG2N) -> str:
    """A new salted scrypt hash line for ``password``."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=1 << log2n, r=SCRYPT_R,
                            p=SCRYPT_P, maxmem=_MAXMEM, dklen=32)
    return "$".join(("scrypt", str(log2n), str(SCRYPT_R), str(SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()))


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a line made by ``hash_password`` (constant time)."""
    try:
        scheme, log2n, r, p, salt64, digest64 = stored.strip().split("$")
        if scheme != "scrypt" or not 1 <= int(log2n) <= 20:
            return False
        salt, want = base64.b64decode(salt64), base64.b64decode(digest64)
        got = hashlib.scrypt(password.encode(), salt=salt, n=1 << int(log2n), r=int(r),
                             p=int(p), maxmem=_MAXMEM, dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def check_new_password(password: str) -> None:
    """:raises PasswordError: the password is too weak to protect private keys."""
    if len(password) < PASSWORD_MIN:
        raise PasswordError(f"the password must have at least {PASSWORD_MIN} characters")


def write_password_file(path: Path, line: str) -> None:
    """Write the hash line atomically, mode 0600."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_password_file(path: Path) -> str:
    """:raises PasswordError: no password has been set, or the file is unreadable."""
    try:
        line = path.read_text().strip()
    except FileNotFoundError:
        raise PasswordError(
            f"no admin password is set ({path} does not exist): run `wgpy ui passwd' first"
        ) from None
    except OSError as e:
        raise PasswordError(f"{path}: {e.strerror}") from None
    if not line.startswith("scrypt$"):
        raise PasswordError(f"{path} does not hold a password hash: run `wgpy ui passwd' again")
    return line


# -- sessions ------------------------------------------------------------------


@dataclass
class Session:
    created: float
    seen: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


class Sessions:
    """Logged-in sessions, in memory, bounded in number (oldest evicted)."""

    def __init__(self, idle: float = 1800, lifetime: float = 12 * 3600, limit: int = 64) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self.limit = limit
        self.sessions: OrderedDict[str, Session] = OrderedDict()

    def new(self, now: float) -> str:
        token = secrets.token_urlsafe(32)
        self.sessions[token] = Session(now, now)
        while len(self.sessions) > self.limit:
            self.sessions.popitem(last=False)
        return token

    def get(self, token: str | None, now: float) -> Session | None:
        """The live session of ``token`` (its idle timer restarted), or None."""
        if not token:
            return None
        s = self.sessions.get(token)
        if s is None:
            return None
        if now - s.seen > self.idle or now - s.created > self.lifetime:
            del self.sessions[token]
            return None
        s.seen = now
        return s

    def end(self, token: str | None) -> None:
        if token:
            self.sessions.pop(token, None)

    def end_all(self) -> None:
        """After a password change: every session must log in again."""
        self.sessions.clear()


def csrf_ok(expected: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())


# -- login limits ----------------------------------------------------------------


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


class LoginLimiter:
    """Failed logins by source, and over all sources; bounded memory."""

    def __init__(self, free: int = 5, max_delay: float = 900, global_per_minute: int = 30,
                 sources: int = 4096) -> None:
        self.free = free
        self.max_delay = max_delay
        self.global_per_minute = global_per_minute
        self.sources = sources
        self.failures: OrderedDict[str, _Failures] = OrderedDict()
        self.recent: list[float] = []  # times of failures in the last minute, all sources

    def wait(self, source: str, now: float) -> float:
        """Seconds ``source`` must wait before its next attempt is judged (0: now)."""
        self.recent = [t for t in self.recent if now - t < 60]
        waits = [0.0]
        if len(self.recent) >= self.global_per_minute:
            waits.append(60 - (now - self.recent[0]))
        f = self.failures.get(source)
        if f is not None and f.count >= self.free:
            delay = min(self.max_delay, 2.0 ** (f.count - self.free))
            waits.append(delay - (now - f.last))
        return max(waits)

    def failed(self, source: str, now: float) -> None:
        f = self.failures.pop(source, None) or _Failures()
        f.count += 1
        f.last = now
        self.failures[source] = f
        while len(self.failures) > self.sources:
            self.failures.popitem(last=False)
        self.recent.append(now)

    def succeeded(self, source: str) -> None:
        self.failures.pop(source, None)
