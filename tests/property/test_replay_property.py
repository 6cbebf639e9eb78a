"""Hypothesis: the replay window against a reference model (a set and a max).

The model is the kernel's rule (counter.c) stated plainly: a counter is
accepted iff it is below REJECT_AFTER_MESSAGES, not seen before, and not more
than WINDOW_SIZE (8128) behind the greatest counter accepted so far.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.protocol.constants import REJECT_AFTER_MESSAGES
from wgpy.protocol.replay import WINDOW_SIZE, ReplayWindow


class Model:
    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.top: int | None = None

    def check(self, c: int) -> bool:
        if c < 0 or c >= REJECT_AFTER_MESSAGES or c in self.seen:
            return False
        return self.top is None or c + WINDOW_SIZE >= self.top

    def update(self, c: int) -> bool:
        if not self.check(c):
            return False
        self.seen.add(c)
        self.top = c if self.top is None else max(self.top, c)
        return True


# Steps relative to the last counter tried: mostly near the window's edges
# and word boundaries, sometimes big jumps, sometimes absolute values near the
# reject limit.
_near = st.integers(-WINDOW_SIZE - 130, WINDOW_SIZE + 130)
_edges = st.sampled_from(
    [-WINDOW_SIZE - 1, -WINDOW_SIZE, -WINDOW_SIZE + 1, -64, -63, -1, 0, 1, 63, 64, 65,
     WINDOW_SIZE - 1, WINDOW_SIZE, WINDOW_SIZE + 1, 8192, 8193, 2 * 8192]
)
_jump = st.integers(-(1 << 20), 1 << 20)
_step = st.one_of(_near, _edges, _jump).map(lambda d: ("rel", d))
_abs = st.one_of(
    st.integers(0, 300),
    st.integers(REJECT_AFTER_MESSAGES - 20_000, REJECT_AFTER_MESSAGES + 5),
).map(lambda c: ("abs", c))
_ops = st.lists(st.one_of(_step, _step, _step, _abs), min_size=1, max_size=400)


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_window_matches_model(ops: list[tuple[str, int]]) -> None:
    w, m = ReplayWindow(), Model()
    last = 0
    for how, v in ops:
        c = last + v if how == "rel" else v
        c = max(c, 0)
        last = c
        assert w.check(c) == m.check(c), c
        assert w.update(c) == m.update(c), c
        # A second delivery of the same counter is always a replay.
        assert not w.update(c)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 1 << 40), st.lists(st.integers(0, WINDOW_SIZE + 200), max_size=300))
def test_window_recent_past_exact(base: int, offsets: list[int]) -> None:
    """After accepting base+WINDOW, every unseen counter in [base, base+WINDOW] is new."""
    w, m = ReplayWindow(), Model()
    top = base + WINDOW_SIZE
    assert w.update(top) and m.update(top)
    for off in offsets:
        c = base + off - 100
        if c < 0:
            continue
        assert w.update(c) == m.update(c), (base, off)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 1 << 30),
    st.lists(st.integers(0, 300), min_size=1, max_size=40),
    st.one_of(st.integers(1, 3 * 8192), st.sampled_from([8128, 8191, 8192, 8193, 16384, 16448])),
)
def test_no_stale_bits_after_a_jump(base: int, earlier: list[int], jump: int) -> None:
    """After any forward jump, no counter in the window is reported seen unless it was."""
    w, m = ReplayWindow(), Model()
    for off in earlier:
        w.update(base + off)
        m.update(base + off)
    top = max(base + off for off in earlier) + jump
    assert w.update(top) and m.update(top)
    for c in range(max(top - WINDOW_SIZE - 2, 0), top + 2):
        assert w.check(c) == m.check(c), (base, jump, c)
