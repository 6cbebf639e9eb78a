"""Two wgpy.netstack stacks over a lossy, reordering, duplicating, corrupting
in-memory link (wgpy.testing.stacklink), with or without a bottleneck that
drops what its queue cannot hold, with SACK loss recovery or NewReno's:
whatever the link does, each side reads exactly what the other sent, in
order, and both connections close."""

from __future__ import annotations

import hashlib

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from wgpy.netstack import State, TcpConfig
from wgpy.netstack.ip import pack
from wgpy.testing.stacklink import B_ADDR4, B_ADDR6, LinkParams, StackLink


def _data(seed: int, n: int) -> bytes:
    out = bytearray()
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(seed=7, a_to_b=120_000, b_to_a=60_000, loss=0.15, delay=0.05, jitter=0.02,
         duplicate=0.05, corrupt=0.02, batch=64, v6=False, small_window=True, rate=0.0,
         sack=True)
@example(seed=8, a_to_b=120_000, b_to_a=60_000, loss=0.05, delay=0.001, jitter=0.02,
         duplicate=0.0, corrupt=0.0, batch=1, v6=True, small_window=False, rate=0.0,
         sack=False)
@example(seed=9, a_to_b=120_000, b_to_a=120_000, loss=0.01, delay=0.01, jitter=0.002,
         duplicate=0.0, corrupt=0.0, batch=8, v6=False, small_window=False, rate=200_000.0,
         sack=True)
@given(
    seed=st.integers(0, 2**32),
    a_to_b=st.integers(0, 120_000),
    b_to_a=st.integers(0, 60_000),
    loss=st.sampled_from([0.0, 0.01, 0.05, 0.15]),
    delay=st.sampled_from([0.001, 0.01, 0.05]),
    jitter=st.sampled_from([0.0, 0.002, 0.02]),
    duplicate=st.sampled_from([0.0, 0.05]),
    corrupt=st.sampled_from([0.0, 0.02]),
    batch=st.sampled_from([1, 8, 64]),
    v6=st.booleans(),
    small_window=st.booleans(),
    rate=st.sampled_from([0.0, 200_000.0, 2e6]),
    sack=st.booleans(),
)
def test_both_directions_arrive_intact(seed: int, a_to_b: int, b_to_a: int, loss: float,
                                       delay: float, jitter: float, duplicate: float,
                                       corrupt: float, batch: int, v6: bool,
                                       small_window: bool, rate: float, sack: bool) -> None:
    cfg = TcpConfig(recv_buffer=16 * 1024 if small_window else 1 << 20, msl=1.0, sack=sack)
    link = StackLink(seed, LinkParams(loss=loss, delay=delay, jitter=jitter,
                                      duplicate=duplicate, corrupt=corrupt, batch=batch,
                                      rate=rate),
                     config=cfg)
    lst = link.b.listen(443)
    c = link.a.connect(pack(B_ADDR6 if v6 else B_ADDR4), 443, link.now)
    link.run_until(lambda: bool(lst.queue), 600)
    s = lst.accept()
    assert s is not None
    out_a, out_b = _data(seed, a_to_b), _data(seed + 1, b_to_a)
    sent = {"a": 0, "b": 0}
    got_a, got_b = bytearray(), bytearray()

    def step() -> bool:
        assert s is not None
        for name, conn, data in (("a", c, out_a), ("b", s, out_b)):
            if sent[name] < len(data):
                sent[name] += conn.send(memoryview(data)[sent[name]:], link.now)
                if sent[name] == len(data):
                    conn.shutdown(link.now)
            elif not conn.fin_queued:
                conn.shutdown(link.now)
        while chunk := s.recv(1 << 16, link.now):
            got_b.extend(chunk)
        while chunk := c.recv(1 << 16, link.now):
            got_a.extend(chunk)
        return c.at_eof and s.at_eof

    link.run_until(step, 3600)
    assert bytes(got_b) == out_a and bytes(got_a) == out_b
    assert c.error is None and s.error is None
    link.run_until(lambda: c.state is State.CLOSED and s.state is State.CLOSED, 3600)
    assert c.error is None and s.error is None
