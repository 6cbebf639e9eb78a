"""Candidate selection (PathSelector) and NAT classification, under a fake clock."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.control.endpoint import parse_endpoint
from wgpy.discovery.nat import Observation, classify
from wgpy.discovery.paths import (
    Candidate,
    Observed,
    Origin,
    PathSelector,
    SetEndpoint,
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


# -- the relay, and back to direct ---------------------------------------------------

RELAY = Candidate(ep("10.200.0.2:40001"), Origin.RELAY)


class Device:
    """A fake device: the endpoint the selector set, and bytes that arrive only
    over the paths that work (``works``), each quarter second."""

    def __init__(self, works: set[str]) -> None:
        self.endpoint: str | None = None
        self.rx = 0
        self.works = works

    def run(self, sel: PathSelector, start: float, seconds: float,
            hopeless: Callable[[float], bool] = lambda t: False,
            ) -> list[tuple[float, SetEndpoint | None, list[str]]]:
        out = []
        for i in range(int(seconds * 4)):
            now = start + i * 0.25
            if self.endpoint in self.works:
                self.rx += 100
            act, ev = sel.step(now, Observed(self.endpoint, self.rx), [NAT], RELAY,
                               prefer_relay=True, hopeless=hopeless(now))
            if act is not None:
                self.endpoint = act.candidate.text
            out.append((now, act, [e.kind for e in ev]))
        return out


def selector() -> PathSelector:
    return PathSelector(try_timeout=2, probe_timeout=1, direct_retry_min=5,
                        direct_retry_max=20, stale_after=10)


def probes(trace: list[tuple[float, SetEndpoint | None, list[str]]]) -> list[float]:
    return [t for t, act, _ in trace if act is not None and act.candidate == NAT]


def test_a_relayed_peer_probes_direct_with_a_doubling_wait() -> None:
    dev, sel = Device({RELAY.text}), selector()
    trace = dev.run(sel, 0.0, 120)
    assert trace[0][1] is not None and trace[0][1].candidate == RELAY  # relay first
    assert any("relayed" in kinds for _, _, kinds in trace)
    starts = probes(trace)
    # Each probe lasts probe_timeout (1 s), then back to the relay; the waits
    # between probes go 5, 10, 20 (the most), 20, ...
    waits = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert waits[:4] == [6.0, 11.0, 21.0, 21.0], waits
    fails = sum(kinds.count("probe-failed") for _, _, kinds in trace)
    assert fails == len(starts) and dev.endpoint == RELAY.text


def test_a_probe_that_answers_leaves_the_relay() -> None:
    dev, sel = Device({RELAY.text}), selector()
    dev.run(sel, 0.0, 10)
    assert dev.endpoint == RELAY.text
    dev.works.add(NAT.text)  # the network now allows a direct path
    trace = dev.run(sel, 10.0, 60)
    direct = [t for t, _, kinds in trace if "direct" in kinds]
    assert len(direct) == 1 and direct[0] < 10.0 + 20 + 2
    assert dev.endpoint == NAT.text and sel.confirmed == NAT and not sel.wants_relay
    assert all(act is None for t, act, _ in trace if t > direct[0])  # stays direct


def test_a_probe_that_meets_the_peer_elsewhere_stays_direct() -> None:
    # Our record of the peer's mapping is stale (its NAT changed), but the peer's
    # own probe reached us and WireGuard roamed to its new address: that is direct.
    dev, sel = Device({RELAY.text}), selector()
    now, start = 0.0, None
    for _ in range(200):  # on to the first probe from the relay
        dev.run(sel, now, 0.25)
        if sel.trying == NAT and sel.fallback == RELAY:
            start = now
            break
        now += 0.25
    assert start is not None
    moved = "10.202.0.2:41234"
    dev.endpoint = moved  # roamed: the peer's packets now come from there
    dev.rx += 300
    act, ev = sel.step(start + 0.25, Observed(moved, dev.rx), [NAT], RELAY, prefer_relay=True)
    assert act is None and [e.kind for e in ev] == ["direct"]
    assert sel.confirmed is not None and sel.confirmed.text == moved
    dev.works = {moved}
    trace = dev.run(sel, start + 0.5, 60)
    assert all(act is None for _, act, _ in trace) and dev.endpoint == moved


def test_between_symmetric_nats_probes_wait_longest_until_that_changes() -> None:
    dev, sel = Device({RELAY.text}), selector()
    trace = dev.run(sel, 0.0, 60, hopeless=lambda t: t < 45)
    relayed = next(t for t, _, kinds in trace if "relayed" in kinds)
    starts = probes(trace)
    assert starts[:2] == [relayed + 0.25 + 20, relayed + 0.25 + 20 + 1 + 20]  # the longest
    # No longer hopeless: a probe at once, then the waits start again from 5 s.
    assert starts[2:] == [45.0, 45.0 + 1 + 5], starts
