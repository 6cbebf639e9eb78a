"""wgpyd's event loop (io/loop.py) and the UAPI framing it serves (io/uapi_server.py)."""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.io.loop import EventLoop
from wgpy.io.uapi_server import MAX_LINE, RequestReader, UapiServer


class _RecordingLoop(EventLoop):
    """The loop, keeping the errors it reports for the test to read."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        super().__init__(on_error=self.errors.append)


@pytest.fixture
def loop() -> Iterator[_RecordingLoop]:
    lp = _RecordingLoop()
    try:
        yield lp
    finally:
        lp.close()


def _stop_after(loop: EventLoop, seconds: float) -> None:
    loop.call_later(seconds, loop.stop)  # every test's loop ends, whatever happens


def test_timers_run_in_deadline_order_and_cancel(loop: EventLoop) -> None:
    ran: list[str] = []
    now = loop.time()
    loop.call_at(now + 0.03, lambda: ran.append("c"))
    loop.call_at(now + 0.01, lambda: ran.append("a"))
    cancelled = loop.call_at(now + 0.02, lambda: ran.append("x"))
    loop.call_at(now + 0.02, lambda: ran.append("b"))
    cancelled.cancel()
    loop.call_at(now + 0.04, loop.stop)
    t0 = time.monotonic()
    loop.run()
    assert ran == ["a", "b", "c"]
    assert 0.035 <= time.monotonic() - t0 < 2


def test_reader_level_triggered_and_removal(loop: EventLoop) -> None:
    a, b = socket.socketpair()
    with a, b:
        b.setblocking(False)
        got: list[bytes] = []

        def on_readable() -> None:
            got.append(b.recv(1))  # one byte per call: level-triggered calls again
            if len(got) == 3:
                loop.remove_reader(b.fileno())
                loop.call_later(0.02, loop.stop)

        loop.add_reader(b.fileno(), on_readable)
        a.send(b"xyzw")
        _stop_after(loop, 5)
        loop.run()
        assert got == [b"x", b"y", b"z"]
        assert b.recv(8) == b"w"  # removed: the last byte was left alone


def test_writer_and_reader_on_one_fd(loop: EventLoop) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        events: list[str] = []

        def writable() -> None:
            events.append("w")
            a.send(b"ping")
            loop.remove_writer(a.fileno())

        def readable() -> None:
            events.append("r:" + a.recv(16).decode())
            loop.stop()

        loop.add_reader(a.fileno(), readable)
        loop.add_writer(a.fileno(), writable)
        _stop_after(loop, 5)
        threading.Thread(target=lambda: b.send(b.recv(16)), daemon=True).start()
        loop.run()
        assert events == ["w", "r:ping"]


def test_a_raising_callback_is_reported_and_the_loop_goes_on(loop: _RecordingLoop) -> None:
    ran: list[int] = []

    def bad() -> None:
        raise ValueError("boom")

    loop.call_later(0.001, bad)
    loop.call_later(0.01, lambda: ran.append(1))
    loop.call_later(0.02, loop.stop)
    loop.run()
    assert ran == [1]
    errors = loop.errors
    assert len(errors) == 1 and "ValueError: boom" in errors[0]


def test_signal_ends_the_poll_and_runs_outside_callbacks(loop: EventLoop) -> None:
    got: list[int] = []
    def on_usr2() -> None:
        got.append(1)
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR2, on_usr2)
    loop.call_later(0.05, lambda: os.kill(os.getpid(), signal.SIGUSR2))
    _stop_after(loop, 5)
    t0 = time.monotonic()
    loop.run()
    assert got == [1]
    assert time.monotonic() - t0 < 1  # not the 5 s fallback
    loop.close()
    # The previous disposition is back: the default for SIGUSR2 would kill us,
    # so check the handler object rather than sending the signal.
    assert signal.getsignal(signal.SIGUSR2) in (signal.SIG_DFL, None)


# -- UAPI framing ---------------------------------------------------------------


def test_reader_get_set_and_pipelining() -> None:
    r = RequestReader()
    assert r.feed(b"get=1\n") == []  # the blank line is not there yet
    assert r.feed(b"\nset=1\nlisten_port=1\npeer") == [("get", [])]
    assert r.feed(b"_key=ab\n\nget=1\n\n") == [
        ("set", ["listen_port=1", "peer_key=ab"]),
        ("get", []),
    ]
    assert not r.done
    assert r.feed(b"") == [] and r.done


def test_reader_refuses_what_wireguard_go_refuses() -> None:
    r = RequestReader()
    assert r.feed(b"get=1\nx") == [("invalid", [])] and r.done
    r = RequestReader()
    assert r.feed(b"bogus=1\n") == [] and r.done  # unknown operation: closed quietly
    r = RequestReader()
    assert r.feed(b"set=1\n" + b"a" * (MAX_LINE + 1)) == [("invalid", [])] and r.done
    r = RequestReader()
    assert r.feed(b"set=1\nlisten_port=1\n") == []
    assert r.feed(b"") == [] and r.done  # cut short: never applied


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"get=1\n\n", b"set=1\na=1\nb=2\n\n", b"set=1\n\n"]),
                max_size=6), st.data())
def test_reader_framing_does_not_depend_on_chunking(reqs: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(reqs)
    whole = RequestReader().feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    r = RequestReader()
    got = []
    prev = 0
    for c in [*cuts, len(stream)]:
        if c > prev:
            got += r.feed(stream[prev:c])
            prev = c
    assert got == whole
    assert len(whole) == len(reqs)


def test_server_answers_clients_and_large_replies(loop: EventLoop, tmp_path: Path) -> None:
    path = tmp_path / "t.sock"
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(str(path))
    lsock.listen(8)
    lsock.setblocking(False)
    big = "x=" + "y" * (4 << 20) + "\n"  # larger than any socket buffer

    def handler(op: str, lines: list[str]) -> str:
        return (big if op == "get" else f"n={len(lines)}\n") + "errno=0\n\n"

    server = UapiServer(loop, lsock, handler)
    replies: list[bytes] = []

    def client() -> None:
        for req in (b"set=1\na=1\nb=2\n\n", b"get=1\n\n"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.settimeout(10)
                c.connect(str(path))
                c.sendall(req)
                c.shutdown(socket.SHUT_WR)
                chunks = []
                while chunk := c.recv(1 << 16):
                    chunks.append(chunk)
                replies.append(b"".join(chunks))

    t = threading.Thread(target=client, daemon=True)

    def stop_when_done() -> None:
        if t.is_alive():
            loop.call_later(0.02, stop_when_done)
        else:
            loop.stop()

    t.start()
    loop.call_later(0.02, stop_when_done)
    _stop_after(loop, 20)
    loop.run()
    t.join(5)
    server.close()
    lsock.close()
    assert replies[0] == b"n=2\nerrno=0\n\n"
    assert replies[1] == (big + "errno=0\n\n").encode()


@pytest.mark.parametrize("line", [
    "listen_port=" + "9" * 5000,  # int() itself refuses over 4,300 digits
    "fwmark=" + "1" * 30,
])
def test_parse_set_refuses_huge_numbers_with_einval(line: str) -> None:
    # Found when the UAPI server stopped swallowing ValueError: such a set
    # must be answered errno=-22, not end in an exception.
    from wgpy.control.uapi import EINVAL, UapiError, parse_set

    with pytest.raises(UapiError) as e:
        parse_set([line])
    assert e.value.errno == EINVAL
    key = "00" * 32
    with pytest.raises(UapiError):
        parse_set([f"public_key={key}", "endpoint=10.0.0.1:" + "5" * 9000])


class _CountingEpoll:
    """Wraps the loop's epoll to record each poll's timeout."""

    def __init__(self, ep: select.epoll) -> None:
        self.ep = ep
        self.timeouts: list[float] = []

    def poll(self, timeout: float = -1) -> list[tuple[int, int]]:
        self.timeouts.append(timeout)
        return self.ep.poll(timeout)

    def __getattr__(self, name: str) -> object:
        return getattr(self.ep, name)


@pytest.mark.parametrize("busy", [0.0, 0.03])
def test_busy_polling_after_an_event_then_sleeping(
        busy: float, monkeypatch: pytest.MonkeyPatch) -> None:
    loop = EventLoop(busy_poll=busy)
    a, b = socket.socketpair()
    try:
        b.setblocking(False)
        loop.add_reader(b.fileno(), lambda: None if b.recv(16) else None)
        counting = _CountingEpoll(loop._ep)
        # A wrapper, not an epoll (select.epoll cannot be subclassed): patched in.
        monkeypatch.setattr(loop, "_ep", counting)
        loop.call_later(0.01, lambda: None if a.send(b"x") else None)
        loop.call_later(0.15, loop.stop)
        loop.run()
        zero = sum(1 for t in counting.timeouts if t == 0)
        if busy:
            # Spun for ~30 ms after the byte, then slept until the stop timer.
            assert zero >= 10
            assert counting.timeouts[-1] > 0.05
        else:
            assert zero <= 2  # only when a timer was exactly due
        # keep_awake is ignored when busy polling is off.
        loop.keep_awake(loop.time() + 10)
        if busy:
            assert loop._awake_until > loop.time() + 5
        else:
            assert loop._awake_until == 0.0
    finally:
        loop.close()
        a.close()
        b.close()


@pytest.mark.parametrize("busy", [0.0, 0.03])
def test_idle_work_waits_for_events_and_busy_polling(busy: float) -> None:
    loop = EventLoop(busy_poll=busy)
    a, b = socket.socketpair()
    order: list[tuple[str, float]] = []
    try:
        b.setblocking(False)
        a.send(b"xyz")

        def on_readable() -> None:
            order.append(("read", loop.time()))
            b.recv(1)  # one byte a call: the fd stays readable for two more rounds

        def idle() -> None:
            order.append(("idle", loop.time()))

        loop.add_reader(b.fileno(), on_readable)
        loop.call_when_idle(idle)
        loop.call_later(0.2, loop.stop)
        loop.run()
        assert [k for k, _ in order] == ["read", "read", "read", "idle"]
        # With busy polling, idle work waits until the polling after the last event ends.
        assert order[-1][1] - order[-2][1] >= busy * 0.9
    finally:
        loop.close()
        a.close()
        b.close()


def test_idle_work_that_requeues_itself_lets_timers_run(loop: EventLoop) -> None:
    ran: list[str] = []

    def chunk() -> None:
        ran.append("chunk")
        if ran.count("chunk") < 50:
            loop.call_when_idle(chunk)

    loop.call_at(0.0, lambda: ran.append("timer"))
    loop.call_when_idle(chunk)
    _stop_after(loop, 0.1)
    loop.run()
    assert ran.count("chunk") == 50
    assert ran.index("timer") < 49  # not held back until the idle work ran out
