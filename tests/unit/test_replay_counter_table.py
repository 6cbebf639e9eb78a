"""Table-driven replay-window cases ported from the kernel's selftest/counter.c.

The cases (numbered as there) call counter_validate(), which checks and
records in one step: ReplayWindow.update().  T_LIM is COUNTER_WINDOW_SIZE + 1.
"""

from __future__ import annotations

import pytest

from wgpy.protocol.constants import REJECT_AFTER_MESSAGES
from wgpy.protocol.replay import WINDOW_SIZE, ReplayWindow

T_LIM = WINDOW_SIZE + 1
R = REJECT_AFTER_MESSAGES

# selftest/counter.c, tests 1..34, all on one window.
SEQUENCE = [
    (0, True), (1, True), (1, False), (9, True), (8, True), (7, True), (7, False),
    (T_LIM, True), (T_LIM - 1, True), (T_LIM - 1, False), (T_LIM - 2, True),
    (2, True), (2, False), (T_LIM + 16, True), (3, False), (T_LIM + 16, False),
    (T_LIM * 4, True), (T_LIM * 4 - (T_LIM - 1), True), (10, False),
    (T_LIM * 4 - T_LIM, False), (T_LIM * 4 - (T_LIM + 1), False),
    (T_LIM * 4 - (T_LIM - 2), True), (T_LIM * 4 + 1 - T_LIM, False), (0, False),
    (R, False), (R - 1, True), (R, False), (R - 1, False), (R - 2, True),
    (R + 1, False), (R + 2, False), (R - 2, False), (R - 3, True), (0, False),
]


def test_window_size_is_8128() -> None:
    assert WINDOW_SIZE == 8128


def test_counter_c_sequence() -> None:
    w = ReplayWindow()
    for number, (counter, ok) in enumerate(SEQUENCE, 1):
        assert w.check(counter) == ok, f"counter.c test {number}: check({counter})"
        assert w.update(counter) == ok, f"counter.c test {number}: update({counter})"


def _run(counters: list[int]) -> list[bool]:
    w = ReplayWindow()
    return [w.update(c) for c in counters]


def test_counter_c_fill_window_then_zero() -> None:
    # for i in 1..=WINDOW: T(i, true); T(0, true); T(0, false)
    got = _run(list(range(1, WINDOW_SIZE + 1)) + [0, 0])
    assert got == [True] * WINDOW_SIZE + [True, False]


def test_counter_c_window_plus_one_then_one_then_zero() -> None:
    # for i in 2..=WINDOW+1: T(i, true); T(1, true); T(0, false)
    got = _run(list(range(2, WINDOW_SIZE + 2)) + [1, 0])
    assert got == [True] * WINDOW_SIZE + [True, False]


def test_counter_c_descending_full_window() -> None:
    # for i = WINDOW+1 down to 0: T(i, true)
    assert all(_run(list(range(WINDOW_SIZE, -1, -1))))


def test_counter_c_descending_from_window_plus_one() -> None:
    # for i = WINDOW+1 down to 1: T(i, true); T(0, false)
    got = _run(list(range(WINDOW_SIZE + 1, 0, -1)) + [0])
    assert got == [True] * (WINDOW_SIZE + 1) + [False]


def test_counter_c_descending_then_top_then_zero() -> None:
    # for i = WINDOW down to 1: T(i, true); T(WINDOW+1, true); T(0, false)
    got = _run(list(range(WINDOW_SIZE, 0, -1)) + [WINDOW_SIZE + 1, 0])
    assert got == [True] * WINDOW_SIZE + [True, False]


def test_counter_c_descending_then_zero_then_top() -> None:
    # for i = WINDOW down to 1: T(i, true); T(0, true); T(WINDOW+1, true)
    got = _run(list(range(WINDOW_SIZE, 0, -1)) + [0, WINDOW_SIZE + 1])
    assert all(got)


@pytest.mark.parametrize("bad", [-1, R, R + 1, 2**64 - 1, 2**64, 2**70])
def test_out_of_range_counters_rejected_and_change_nothing(bad: int) -> None:
    w = ReplayWindow()
    w.update(5)
    assert not w.check(bad)
    assert not w.update(bad)
    assert w.update(6) and w.update(4)


def test_check_does_not_record() -> None:
    w = ReplayWindow()
    assert w.check(100) and w.check(100)
    assert w.update(100)
    assert not w.check(100)


def test_reset() -> None:
    w = ReplayWindow()
    for c in range(10):
        w.update(c)
    w.reset()
    assert all(w.update(c) for c in range(10))
