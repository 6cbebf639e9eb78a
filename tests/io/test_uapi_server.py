"""The UAPI server's bounds, in memory: request size, open connections, idle
clients, clients that never read, inherited sockets (io/uapi_server.py).

Each server test runs a real ``EventLoop`` with a ``UapiServer`` on a UNIX
socket in a temporary directory; the clients run in a thread.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wgpy.control.config import parse_config, to_uapi
from wgpy.control.uapi import EINVAL
from wgpy.io.loop import EventLoop
from wgpy.io.uapi_server import (
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_REQUEST_BYTES,
    MAX_REQUEST_LINES,
    RequestReader,
    UapiFdError,
    UapiServer,
    adopt_listener,
    listen,
)

# Example keys from wg(8)'s manual page.
PRIVATE = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
PEER_A = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
PEER_B = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="


def set_request(total: int) -> bytes:
    """A set request of exactly ``total`` bytes, ``set=1`` to the blank line."""
    left = total - len(b"set=1\n") - 1
    lines = []
    while left > 0:
        n = min(60000, left)
        if left - n == 1:
            n -= 1  # a line is at least one character and its newline
        lines.append(b"k=" + b"v" * (n - 3) + b"\n")
        left -= n
    req = b"set=1\n" + b"".join(lines) + b"\n"
    assert len(req) == total
    return req


# -- the framing's bounds --------------------------------------------------------


def test_a_set_of_the_byte_bound_is_read_and_one_byte_more_is_refused() -> None:
    exact = set_request(MAX_REQUEST_BYTES)
    r = RequestReader()
    got = r.feed(exact)
    assert len(got) == 1 and got[0][0] == "set" and not r.done
    assert sum(len(line) + 1 for line in got[0][1]) + 7 == MAX_REQUEST_BYTES
    r = RequestReader()
    got = []
    over = set_request(MAX_REQUEST_BYTES + 1)
    for i in range(0, len(over), 1 << 16):  # as the socket delivers it
        got += r.feed(over[i:i + (1 << 16)])
    assert got == [("invalid", [])] and r.done and not r.eof
    assert r.feed(b"get=1\n\n") == []  # nothing after a refusal


def test_stats_is_framed_like_get_and_anything_after_its_line_is_refused() -> None:
    r = RequestReader()
    assert r.feed(b"stats=1\n\nget=1\n\n") == [("stats", []), ("get", [])]
    assert not r.done
    r = RequestReader()
    assert r.feed(b"stats=1\nx\n") == [("invalid", [])]
    assert r.done
    r = RequestReader()
    assert r.feed(b"stats=2\n\n") == [] and r.done  # unknown: closed quietly


def test_the_line_bound_still_holds_within_the_byte_bound() -> None:
    r = RequestReader()
    got = r.feed(b"set=1\n" + b"a\n" * (MAX_REQUEST_LINES + 1))
    assert got == [("invalid", [])] and r.done


def test_the_largest_tested_configuration_fits_with_room() -> None:
    """tests/hardening/test_kernel_scenarios.py loads 130,560 allowed IPs on one
    peer with wg setconf; the request wg sends for it, made by our own setconf,
    is well under the bound."""
    ips = [f"{x}.{y}.0.0/16" for x in range(1, 256) for y in range(256)]
    ips += [f"{x:x}::{y:x}/128" for x in range(1, 256) for y in range(256)]
    text = (f"[Interface]\nPrivateKey = {PRIVATE}\n[Peer]\nPublicKey = {PEER_A}\n"
            "Endpoint = 10.77.0.2:1111\nAllowedIPs = " + ", ".join(ips) + "\n"
            f"[Peer]\nPublicKey = {PEER_B}\nAllowedIPs = 10.99.0.0/24\n")
    lines = to_uapi(parse_config(text, "big.conf"))
    request = ("set=1\n" + "".join(f"{line}\n" for line in lines) + "\n").encode()
    assert len(request) * 4 < MAX_REQUEST_BYTES, len(request)
    got = RequestReader().feed(request)
    assert len(got) == 1 and got[0][0] == "set" and len(got[0][1]) == len(lines)


# -- the server -----------------------------------------------------------------


class Served:
    """A UapiServer on a real socket; ``run(client)`` runs the loop until the
    client thread returns (bounded in time), re-raising what it raised."""

    def __init__(self, tmp: Path, handler: Callable[[str, list[str]], str],
                 max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.path = tmp / "t.sock"
        self.errors: list[str] = []
        self.loop = EventLoop(on_error=self.errors.append)
        self.lsock = listen("t", tmp)
        self.server = UapiServer(self.loop, self.lsock, handler,
                                 max_connections=max_connections, idle_timeout=idle_timeout)

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(str(self.path))
        return s

    def run(self, client: Callable[[], None], timeout: float = 30) -> None:
        failure: list[BaseException] = []

        def wrapped() -> None:
            try:
                client()
            except BaseException as e:  # noqa: BLE001 - handed to the test
                failure.append(e)

        t = threading.Thread(target=wrapped, daemon=True)

        def stop_when_done() -> None:
            if t.is_alive():
                self.loop.call_later(0.01, stop_when_done)
            else:
                self.loop.stop()

        t.start()
        self.loop.call_later(0.01, stop_when_done)
        self.loop.call_later(timeout, self.loop.stop)
        self.loop.run()
        t.join(5)
        assert not t.is_alive(), "client still running after the loop stopped"
        if failure:
            raise failure[0]

    def close(self) -> None:
        self.server.close()
        self.lsock.close()
        self.loop.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    made: list[Served] = []

    def make(handler: Callable[[str, list[str]], str], max_connections: int = MAX_CONNECTIONS,
             idle_timeout: float = IDLE_TIMEOUT) -> Served:
        made.append(Served(tmp_path, handler, max_connections, idle_timeout))
        return made[-1]

    yield make
    for s in made:
        s.close()


def read_all(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def read_reply(s: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\n\n"):
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        buf += chunk
    return buf


def counting_handler(calls: list[tuple[str, int]], reply: str = "") -> Callable[..., str]:
    def handler(op: str, lines: list[str]) -> str:
        calls.append((op, len(lines)))
        return reply + "errno=0\n\n"

    return handler


def test_a_set_over_the_bound_gets_einval_after_the_client_sent_it_all(
    serve: Callable[..., Served],
) -> None:
    calls: list[tuple[str, int]] = []
    srv = serve(counting_handler(calls))
    replies: list[bytes] = []

    def client() -> None:
        for size in (MAX_REQUEST_BYTES + 1, 2 * MAX_REQUEST_BYTES, MAX_REQUEST_BYTES):
            with srv.connect() as c:
                c.sendall(set_request(size))  # not cut off half-way: the rest is drained
                c.shutdown(socket.SHUT_WR)
                replies.append(read_all(c))

    srv.run(client)
    assert replies[0] == replies[1] == f"errno={EINVAL}\n\n".encode()
    assert replies[2] == b"errno=0\n\n"
    assert [op for op, _ in calls] == ["set"]  # the refused one never reached the device
    assert srv.server.connections == 0 and not srv.errors


def test_the_connection_idle_longest_makes_room(serve: Callable[..., Served]) -> None:
    calls: list[tuple[str, int]] = []
    srv = serve(counting_handler(calls, "x=1\n"), max_connections=4)
    seen: dict[str, bytes] = {}

    def client() -> None:
        empty = srv.connect()
        time.sleep(0.05)
        half = srv.connect()
        half.sendall(b"set=1\nlisten_port=")
        time.sleep(0.05)
        unread = srv.connect()
        unread.sendall(b"get=1\n\n")
        time.sleep(0.05)
        quiet = srv.connect()
        time.sleep(0.05)
        with srv.connect() as fifth:
            fifth.sendall(b"get=1\n\n")
            seen["fifth"] = read_reply(fifth)
        seen["empty"] = empty.recv(1)  # closed to make room: EOF
        half.sendall(b"1\n\n")  # the others are still served
        seen["half"] = read_reply(half)
        seen["unread"] = read_reply(unread)
        for s in (empty, half, unread, quiet):
            s.close()

    srv.run(client)
    assert seen == {"fifth": b"x=1\nerrno=0\n\n", "empty": b"", "half": b"x=1\nerrno=0\n\n",
                    "unread": b"x=1\nerrno=0\n\n"}
    assert srv.server.closed_idle == 1
    assert calls == [("get", 0), ("get", 0), ("set", 1)]


def test_idle_connections_time_out_and_busy_ones_do_not(serve: Callable[..., Served]) -> None:
    srv = serve(counting_handler([]), idle_timeout=0.3)
    got: dict[str, float | int] = {}

    def client() -> None:
        t0 = time.monotonic()
        idle = srv.connect()
        busy = srv.connect()
        answers = 0
        while time.monotonic() - t0 < 1.0:  # one get every 0.1 s on one connection
            busy.sendall(b"get=1\n\n")
            answers += read_reply(busy) == b"errno=0\n\n"
            time.sleep(0.1)
        got["answers"] = answers
        idle.settimeout(5)
        assert idle.recv(1) == b""
        got["idle_closed_after"] = time.monotonic() - t0
        busy.sendall(b"get=1\n\n")
        got["busy_still_served"] = read_reply(busy) == b"errno=0\n\n"
        idle.close()
        busy.close()

    srv.run(client)
    assert got["answers"] >= 5 and got["busy_still_served"]
    assert srv.server.closed_idle >= 1


def test_a_client_that_never_reads_holds_one_reply_not_one_per_request(
    serve: Callable[..., Served],
) -> None:
    calls: list[tuple[str, int]] = []
    srv = serve(counting_handler(calls, "x=" + "y" * (64 << 10) + "\n"))
    seen: dict[str, int] = {}

    def client() -> None:
        c = srv.connect()
        c.sendall(b"get=1\n\n" * 2000)
        time.sleep(0.5)  # not reading: the socket buffers fill, then we wait
        seen["answered_while_blocked"] = len(calls)
        c.close()
        deadline = time.monotonic() + 5
        while srv.server.connections and time.monotonic() < deadline:
            time.sleep(0.01)
        seen["open_after_close"] = srv.server.connections

    srv.run(client)
    # A few replies fit in the socket buffers; not thousands.
    assert 1 <= seen["answered_while_blocked"] < 50, seen
    assert seen["open_after_close"] == 0


def test_a_failing_handler_answers_eio_and_is_reported(serve: Callable[..., Served]) -> None:
    def handler(op: str, lines: list[str]) -> str:
        raise RuntimeError("bug")

    srv = serve(handler)
    replies: list[bytes] = []

    def client() -> None:
        with srv.connect() as c:
            c.sendall(b"get=1\n\nget=1\n\n")
            replies.append(read_all(c))

    srv.run(client)
    assert replies == [f"errno=-{errno.EIO}\n\n".encode()]
    assert len(srv.errors) == 1 and "RuntimeError: bug" in srv.errors[0]


def test_the_backlog_takes_a_burst_nobody_accepts_yet(tmp_path: Path) -> None:
    sock = listen("b", tmp_path)
    clients = []
    try:
        for _ in range(300):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            clients.append(c)
            c.connect(str(tmp_path / "b.sock"))  # BlockingIOError if the backlog were full
    finally:
        for c in clients:
            c.close()
        sock.close()


# -- an inherited socket (WG_UAPI_FD) ----------------------------------------------


def test_adopt_takes_a_listening_unix_socket_and_says_what_else_is_wrong(
    tmp_path: Path,
) -> None:
    good = listen("a", tmp_path)
    fd = os.dup(good.fileno())
    os.set_inheritable(fd, True)
    sock, path = adopt_listener(fd)
    try:
        assert path == tmp_path / "a.sock" and sock.fileno() == fd
        assert not sock.getblocking() and not os.get_inheritable(fd)
    finally:
        sock.close()
        good.close()
    r, w = os.pipe()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unlistening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unlistening.bind(str(tmp_path / "u.sock"))
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(f"\0wgpy-test-{os.getpid()}-{tmp_path.name}")  # no path to watch
    abstract.listen(1)
    unlinked = listen("gone", tmp_path)
    (tmp_path / "gone.sock").unlink()
    try:
        for fdn, text in ((r, "is not a socket"), (udp.fileno(), "is not a UNIX stream socket"),
                          (unlistening.fileno(), "is not listening"),
                          (abstract.fileno(), "is not bound to a path"),
                          (unlinked.fileno(), "gone.sock, which is no longer there"),
                          (9999, "Bad file descriptor")):
            with pytest.raises(UapiFdError) as e:
                adopt_listener(fdn)
            assert text in str(e.value)
            if fdn != 9999:
                os.fstat(fdn)  # an fd that is refused is left open, as it was
    finally:
        for s in (udp, unlistening, abstract, unlinked):
            s.close()
        os.close(r)
        os.close(w)


# -- out of descriptors ---------------------------------------------------------

_EMFILE_CHILD = """
import os, resource, sys, time
from pathlib import Path
from wgpy.io.loop import EventLoop
from wgpy.io.uapi_server import UapiServer, listen

tmp = Path(sys.argv[1])
loop = EventLoop()
lsock = listen("e", tmp)
server = UapiServer(loop, lsock, lambda op, lines: "errno=0\\n\\n")
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
filler = []
try:
    while True:
        filler.append(os.open(os.devnull, os.O_RDONLY))  # every descriptor taken
except OSError:
    pass
print("full", flush=True)
cpu0 = time.process_time()

def free_one():
    print(f"cpu {time.process_time() - cpu0:.3f}", flush=True)
    os.close(filler.pop())

loop.call_later(1.0, free_one)
loop.call_later(10, loop.stop)  # the test kills it sooner
loop.run()
"""


def test_out_of_descriptors_with_no_client_to_close_waits_without_spinning(
    tmp_path: Path,
) -> None:
    """EMFILE on accept with no connection of ours to close: the listener is set
    aside and retried, not polled in a busy loop (it stays readable), and the
    waiting client is served once a descriptor is free."""
    child = subprocess.Popen([sys.executable, "-c", _EMFILE_CHILD, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "full"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(10)
            c.connect(str(tmp_path / "e.sock"))  # queued by the kernel
            c.sendall(b"get=1\n\n")
            cpu = float(child.stdout.readline().split()[1])
            assert read_reply(c) == b"errno=0\n\n"  # served once an fd was free
        assert cpu < 0.3, f"{cpu:.3f} s of CPU in 1 s out of descriptors"
    finally:
        child.kill()
        child.wait(5)
