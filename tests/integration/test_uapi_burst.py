"""The UAPI socket under a burst of clients, some of them idle or broken.

Several monitoring agents and config tools poll one device at once; some
clients connect and send nothing, stop half-way through a request, or never
read their reply.  wgpyd must accept them all (a listen backlog of the
system's maximum, as wireguard-go), answer every complete request, and stay
reachable for the next ``wg show`` while they hang on: a bounded number of
open connections, the one idle longest closed to make room.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from wgpy.control import uapi
from wgpy.io.uapi_server import MAX_CONNECTIONS
from wgpy.testing.lab import Lab, require
from wgpy.testing.nodes import start

pytestmark = pytest.mark.netns

RUN = Path("/var/run/wireguard")
KINDS = ("empty", "half", "unread", "complete")
PAYLOAD = {"empty": b"", "half": b"set=1\nlisten_port=", "unread": b"get=1\n\n",
           "complete": b"get=1\n\n"}


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def burst(path: Path, n: int) -> tuple[list[tuple[str, socket.socket]], int]:
    """Open ``n`` connections back to back (non-blocking connects: a full backlog
    is a refusal, not a wait), each sending its kind's bytes at once."""
    opened: list[tuple[str, socket.socket]] = []
    refused = 0
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(str(path))
        except (BlockingIOError, ConnectionRefusedError):
            refused += 1
            s.close()
            continue
        if PAYLOAD[kind]:
            s.send(PAYLOAD[kind])
        opened.append((kind, s))
    return opened, refused


def read_reply(s: socket.socket, timeout: float, replies: int = 1) -> bytes:
    """Read until ``replies`` replies (each ends ``errno=N`` and a blank line)."""
    s.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while not (buf.endswith(b"\n\n") and buf.count(b"errno=") >= replies) \
            and time.monotonic() < deadline:
        try:
            data = s.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            break
        buf += data
    return buf


def waiting_reply(s: socket.socket) -> bytes:
    try:
        return s.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, ConnectionResetError):
        return b""


def test_a_burst_of_200_clients_is_accepted_and_answered(lab: Lab) -> None:
    require("wg")
    ns = lab.netns("burst")
    node = start(lab, ns, "wgpyd", extra_env={"LOG_LEVEL": "error"})
    pid = lab.procs[-1].pid
    path = RUN / f"{node.ifname}.sock"
    baseline = fd_count(pid)
    expected = node.wg(f"show {node.ifname} dump").stdout
    opened, refused = burst(path, 200)
    try:
        assert refused == 0, f"{refused} of 200 connections refused"
        complete = [s for kind, s in opened if kind == "complete"]
        unread = [s for kind, s in opened if kind == "unread"]
        for s in complete:
            reply = read_reply(s, 10)
            assert reply.endswith(b"errno=0\n\n"), reply[-100:]
            uapi.parse_get(reply.decode())
        # The replies of clients that never read are waiting in their sockets.
        lab.wait_for("replies to the unread requests",
                     lambda: all(waiting_reply(s).startswith(b"private_key=") for s in unread),
                     timeout=10)
        # With every connection still open, the next wg show is answered.
        t0 = time.monotonic()
        assert node.wg(f"show {node.ifname} dump").stdout == expected
        assert time.monotonic() - t0 < 5
        assert fd_count(pid) <= baseline + MAX_CONNECTIONS
    finally:
        for _, s in opened:
            s.close()
    lab.wait_for("fds back to the baseline", lambda: fd_count(pid) <= baseline, timeout=10)
    assert lab.procs[-1].poll() is None
    assert "Traceback" not in node.logtext()


def test_idle_clients_beyond_the_limit_cannot_starve_wg(lab: Lab) -> None:
    """More idle and half-open clients than the daemon keeps: the oldest are
    closed to make room, so wg still gets in, and the daemon's fds stay bounded."""
    require("wg")
    ns = lab.netns("idle")
    node = start(lab, ns, "wgpyd", extra_env={"LOG_LEVEL": "error"})
    pid = lab.procs[-1].pid
    path = RUN / f"{node.ifname}.sock"
    baseline = fd_count(pid)
    held: list[socket.socket] = []
    try:
        for i in range(MAX_CONNECTIONS + 101):  # silent, half a set, half a get
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(str(path))
            if i % 3 == 1:
                s.sendall(b"set=1\nlisten_port=5182")
            elif i % 3 == 2:
                s.sendall(b"get=1\n")
            held.append(s)
        for _ in range(3):
            t0 = time.monotonic()
            assert node.wg(f"show {node.ifname} listen-port").stdout.strip() == "51820"
            assert time.monotonic() - t0 < 5
        lab.wait_for("the daemon to settle", lambda: fd_count(pid) <= baseline + MAX_CONNECTIONS)
        # The oldest idle clients were closed (EOF), the newest are still served.
        assert held[0].recv(1) == b""
        newest = held[max(i for i in range(len(held)) if i % 3 == 1)]  # the last half set
        newest.sendall(b"1\n\nget=1\n\n")  # completes its half request, then asks
        reply = read_reply(newest, 5, replies=2)
        assert reply.startswith(b"errno=0\n\nprivate_key=") and b"listen_port=51821\n" in reply
    finally:
        for s in held:
            s.close()
    lab.wait_for("fds back to the baseline", lambda: fd_count(pid) <= baseline, timeout=10)
    assert "Traceback" not in node.logtext()
