"""The batch path's combined timer hooks equal the per-packet hooks they replace."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wgpy.protocol.constants import KEEPALIVE_TIMEOUT
from wgpy.protocol.timers import PeerTimers, TimerKind

deadlines = st.lists(st.one_of(st.none(), st.floats(0, 1000)), min_size=5, max_size=5)


def _timers(
    initial: list[float | None], keepalive: int, flag: bool
) -> tuple[PeerTimers, list[float]]:
    scheduled: list[float] = []
    t = PeerTimers(scheduled.append, lambda: 0.25)
    t._deadlines = list(initial)
    t.persistent_keepalive_interval = keepalive
    t.need_another_keepalive = flag
    return t, scheduled


def _state(t: PeerTimers) -> tuple[object, ...]:
    return (tuple(t._deadlines), t.need_another_keepalive)


def _on_data_received(t: PeerTimers, now: float) -> None:
    """timers.c's per-packet hook (wg_timers_data_received), the reference the
    batch hook must equal: arm the passive keepalive, or note another is due."""
    if not t.pending(TimerKind.SEND_KEEPALIVE):
        t._mod(TimerKind.SEND_KEEPALIVE, now + KEEPALIVE_TIMEOUT)
    else:
        t.need_another_keepalive = True


@given(deadlines, st.sampled_from([0, 25]), st.booleans(), st.floats(0, 1000))
def test_batch_sent_hook(initial: list[float | None], ka: int, flag: bool, now: float) -> None:
    a, sa = _timers(initial, ka, flag)
    b, sb = _timers(initial, ka, flag)
    a.on_data_batch_sent(now)
    b.on_any_authenticated_packet_traversal(now)
    b.on_any_authenticated_packet_sent(now)
    b.on_data_sent(now)
    assert _state(a) == _state(b)
    assert sorted(sa) == sorted(sb)


@given(deadlines, st.sampled_from([0, 25]), st.booleans(), st.floats(0, 1000),
       st.integers(0, 5))
def test_batch_received_hook(
    initial: list[float | None], ka: int, flag: bool, now: float, data: int
) -> None:
    a, sa = _timers(initial, ka, flag)
    b, sb = _timers(initial, ka, flag)
    a.on_data_batch_received(now, data)
    b.on_any_authenticated_packet_traversal(now)
    b.on_any_authenticated_packet_received(now)
    for _ in range(data):
        _on_data_received(b, now)
    assert _state(a) == _state(b)
    assert sorted(sa) == sorted(sb)
    assert a.deadline(TimerKind.NEW_HANDSHAKE) is None
