"""Candidate selection (PathSelector) and NAT classification, under a fake clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.control.endpoint import parse_endpoint
from wgpy.discovery.nat import Observation, classify
from wgpy.discovery.paths import (
    Candidate,
    Observed,
    Origin,
    PathSelector,
    order_candidates,
)
from wgpy.discovery.records import NatKind, canonical_endpoint
from wgpy.protocol.events import Endpoint


def ep(text: str) -> Endpoint:
    return canonical_endpoint(*parse_endpoint(text))


NAT = Candidate(ep("10.202.0.2:40000"), Origin.NAT)
LAN = Candidate(ep("192.168.1.20:51820"), Origin.LAN)


def test_order_lan_first_only_behind_the_same_public_address() -> None:
    nat, lan = [NAT.endpoint], [LAN.endpoint]
    assert order_candidates(nat, lan, ep("10.202.0.2:1")) == [LAN, NAT]
    assert order_candidates(nat, lan, ep("10.201.0.2:1")) == [NAT, LAN]
    assert order_candidates(nat, lan, None) == [NAT, LAN]
    assert order_candidates([], lan, None) == [LAN]


def test_first_candidate_confirmed_by_received_bytes() -> None:
    sel = PathSelector(try_timeout=6)
    act, _ = sel.step(0.0, Observed(None, 0), [NAT, LAN])
    assert act is not None and act.candidate == NAT and act.nudge
    act, ev = sel.step(1.0, Observed(NAT.text, 0), [NAT, LAN])
    assert act is None and not ev  # waiting
    act, ev = sel.step(2.0, Observed(NAT.text, 148), [NAT, LAN])
    assert act is None and [e.kind for e in ev] == ["confirmed"]
    assert sel.confirmed == NAT and sel.trying is None
    # Traffic keeps flowing: healthy, left alone even if DNS now says otherwise.
    act, _ = sel.step(3.0, Observed(NAT.text, 300), [LAN])
    assert act is None


def test_bytes_via_another_endpoint_do_not_confirm() -> None:
    sel = PathSelector(try_timeout=6)
    sel.step(0.0, Observed(None, 0), [NAT, LAN])
    # The device roamed elsewhere: not our candidate's doing.
    act, ev = sel.step(1.0, Observed("10.9.9.9:1", 500), [NAT, LAN])
    assert act is None and not ev and sel.trying == NAT


def test_timeout_moves_on_then_keeps_the_best_guess_and_backs_off() -> None:
    sel = PathSelector(try_timeout=6, retry_after=20, stale_after=10)
    sel.step(0.0, Observed(None, 0), [NAT, LAN])
    act, ev = sel.step(6.0, Observed(NAT.text, 0), [NAT, LAN])
    assert act is not None and act.candidate == LAN and [e.kind for e in ev] == ["failed"]
    act, ev = sel.step(12.0, Observed(LAN.text, 0), [NAT, LAN])
    assert [e.kind for e in ev] == ["failed", "exhausted"]
    assert act is not None and act.candidate == NAT and not act.nudge
    assert sel.step(20.0, Observed(NAT.text, 0), [NAT, LAN])[0] is None  # backing off
    act, _ = sel.step(32.5, Observed(NAT.text, 0), [NAT, LAN])
    assert act is not None and act.candidate == NAT and act.nudge  # a new round


def test_better_candidate_preempts_a_try() -> None:
    sel = PathSelector()
    sel.step(0.0, Observed(None, 0), [NAT])
    act, _ = sel.step(1.0, Observed(NAT.text, 0), [LAN, NAT])
    assert act is not None and act.candidate == LAN


def test_recent_handshake_means_healthy_at_start() -> None:
    sel = PathSelector(stale_after=10)
    act, _ = sel.step(0.0, Observed("10.9.9.9:1", 10, handshake_age=3.0), [NAT])
    assert act is None


def test_without_keepalive_the_best_guess_is_set_once() -> None:
    sel = PathSelector()
    act, _ = sel.step(0.0, Observed(None, 0, can_nudge=False), [NAT])
    assert act is not None and act.candidate == NAT and not act.nudge
    assert sel.step(1.0, Observed(NAT.text, 0, can_nudge=False), [NAT])[0] is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.sampled_from([None, 0, 1, 2]),
                          st.integers(0, 3), st.integers(0, 3)), max_size=40))
def test_selector_never_sets_a_non_candidate(steps: list[tuple[float, int | None, int, int]]
                                             ) -> None:
    sel = PathSelector(try_timeout=2, retry_after=4)
    pool = [NAT, LAN, Candidate(ep("10.203.0.2:1"), Origin.NAT)]
    now, rx = 0.0, 0
    for dt, which, grow, ncand in steps:
        now += dt
        rx += grow
        cands = pool[:ncand]
        current = pool[which].text if which is not None and which < 3 else None
        act, _ = sel.step(now, Observed(current, rx), cands)
        if act is not None:
            assert act.candidate in cands
        if sel.trying is not None:
            assert sel.trying in cands and now - sel.started <= 2 + 5


def test_nat_classification() -> None:
    m1, m2 = ep("10.201.0.2:40000"), ep("10.201.0.2:40001")
    both = [Observation("r:53", m1), Observation("r:5353", m1)]
    assert classify(ep("192.168.1.10:5"), both).kind is NatKind.CONE
    sym = classify(None, [Observation("r:53", m1), Observation("r:5353", m2)])
    assert sym.kind is NatKind.SYMMETRIC and "r:5353 saw 10.201.0.2:40001" in sym.detail
    assert classify(m1, both).kind is NatKind.OPEN
    assert classify(None, both[:1]).kind is NatKind.UNKNOWN
    assert classify(None, []).kind is NatKind.UNKNOWN
