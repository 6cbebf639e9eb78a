"""The admin password (scrypt), sessions, CSRF tokens and login limits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wgpy.ui import auth


def test_hash_and_verify() -> None:
    line = auth.hash_password("s3cret-enough", log2n=10)
    scheme, log2n, r, p, salt, digest = line.split("$")
    assert (scheme, log2n, r, p) == ("scrypt", "10", "8", "1")
    assert auth.verify_password("s3cret-enough", line)
    assert not auth.verify_password("s3cret-enougH", line)
    assert not auth.verify_password("s3cret-enough", line.replace(digest, "AAAA"))
    assert not auth.verify_password("x", "garbage")
    assert not auth.verify_password("x", "scrypt$99$8$1$AAAA$AAAA")  # cost out of bounds
    # Salted: the same password never hashes the same way twice.
    assert auth.hash_password("s3cret-enough", 10) != auth.hash_password("s3cret-enough", 10)
    # The default cost is what the docs say.
    assert auth.hash_password("s3cret-enough").startswith("scrypt$15$8$1$")


def test_password_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "password"
    with pytest.raises(auth.PasswordError, match="run `wgpy ui passwd' first"):
        auth.read_password_file(path)
    auth.write_password_file(path, auth.hash_password("long enough", 10))
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert auth.verify_password("long enough", auth.read_password_file(path))
    path.write_text("plain text\n")
    with pytest.raises(auth.PasswordError, match="does not hold a password hash"):
        auth.read_password_file(path)


def test_passwd_command(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "wgpy.tools.cli", "ui", "passwd", "--state-dir", str(tmp_path)]
    env = {**os.environ}
    p = subprocess.run(cmd, input="short\n", capture_output=True, text=True, env=env)
    assert p.returncode == 1
    assert "at least 8 characters; nothing changed" in p.stderr
    assert not (tmp_path / "password").exists()
    p = subprocess.run(cmd, input="a long passphrase\n", capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    line = (tmp_path / "password").read_text()
    assert "a long passphrase" not in line and line.startswith("scrypt$15$")
    assert auth.verify_password("a long passphrase", line)


def test_sessions_expire_and_are_bounded() -> None:
    s = auth.Sessions(idle=10, lifetime=100, limit=3)
    t = s.new(0)
    assert s.get(t, 9) is not None  # and the idle timer restarts
    assert s.get(t, 18) is not None
    assert s.get(t, 29) is None  # idle too long: gone for good
    assert s.get(t, 20) is None
    t2 = s.new(0)
    for now in range(5, 100, 5):
        assert s.get(t2, now) is not None
    assert s.get(t2, 101) is None  # lifetime over, however active
    tokens = [s.new(200) for _ in range(4)]
    assert s.get(tokens[0], 200) is None and all(s.get(x, 200) for x in tokens[1:])
    assert s.get(None, 0) is None and s.get("forged", 0) is None
    sess = s.get(tokens[1], 200)
    assert sess is not None and auth.csrf_ok(sess.csrf, sess.csrf)
    assert not auth.csrf_ok(sess.csrf, None) and not auth.csrf_ok(sess.csrf, sess.csrf[:-1] + "x")


def test_login_limits_per_source_double_the_wait() -> None:
    lim = auth.LoginLimiter(free=3, max_delay=60, global_per_minute=1000)
    for i in range(3):
        assert lim.wait("a", i) == 0
        lim.failed("a", i)
    assert lim.wait("a", 2) == 1  # 4th attempt: wait 1 s after the 3rd failure
    assert lim.wait("a", 3) == 0
    lim.failed("a", 3)
    assert lim.wait("a", 3) == 2
    lim.failed("a", 5)
    assert lim.wait("a", 5) == 4
    assert lim.wait("b", 5) == 0  # another source is not held up
    for _ in range(20):
        lim.failed("a", 100)
    assert lim.wait("a", 100) == 60  # bounded by max_delay
    lim.succeeded("a")
    assert lim.wait("a", 100) == 0


def test_login_limits_over_all_sources() -> None:
    lim = auth.LoginLimiter(free=5, global_per_minute=10)
    for i in range(10):
        lim.failed(f"10.0.0.{i}", 1.0)
    assert lim.wait("10.0.0.99", 1.0) == pytest.approx(60)
    assert lim.wait("10.0.0.99", 61.0) == 0


def test_limiter_memory_is_bounded() -> None:
    lim = auth.LoginLimiter(sources=100, global_per_minute=10**6)
    for i in range(1000):
        lim.failed(f"s{i}", i * 100)
    assert len(lim.failures) == 100 and len(lim.recent) <= 1000
