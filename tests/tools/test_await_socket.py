"""``wgpy up`` configures the daemon once its UAPI socket takes connections,
not once the socket's file exists: the file appears at bind(), a moment before
listen(), and a daemon preempted there would refuse the configuration."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wgpy.tools.wg_quick import QuickError, await_socket

# A daemon that binds, is slow to listen, then serves for a bounded time.
SLOW_LISTENER = """
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
time.sleep(float(sys.argv[2]))
s.listen(8)
time.sleep(10)
"""


def test_waits_past_bind_until_listen(tmp_path: Path) -> None:
    sock = tmp_path / "w.sock"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_LISTENER, str(sock), "0.6"])
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sock.exists()  # bound, not yet listening
        await_socket(proc, sock, "slow w")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(str(sock))  # refused if await_socket returned at bind()
    finally:
        proc.kill()
        proc.wait()


def test_a_daemon_that_fails_or_never_listens_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    try:
        with pytest.raises(QuickError, match="`bad w' exited with status 3"):
            await_socket(failing, tmp_path / "none.sock", "bad w")
    finally:
        failing.wait()
    monkeypatch.setenv("WGPY_SOCKET_TIMEOUT", "0.5")
    sock = tmp_path / "deaf.sock"
    deaf = subprocess.Popen([sys.executable, "-c", SLOW_LISTENER, str(sock), "30"])
    try:
        with pytest.raises(QuickError, match=r"`deaf w' did not create .*deaf\.sock within 0\.5 s"):
            await_socket(deaf, sock, "deaf w")
        assert deaf.wait(5) is not None  # terminated by await_socket
    finally:
        deaf.kill()
        deaf.wait()
