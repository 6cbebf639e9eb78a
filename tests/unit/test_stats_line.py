"""The ``kill -USR1`` line, built from a device's public state, in memory."""

from __future__ import annotations

import base64
import errno
import re
from collections import Counter

import pytest

from wgpy.control.uapi import UapiError, UapiProtocolError, format_stats, parse_stats
from wgpy.protocol import stats_fields, stats_line
from wgpy.protocol.constants import UNDER_LOAD_AFTER_TIME, UNDER_LOAD_THRESHOLD
from wgpy.testing.memnet import A_IP4, B_IP4, ipv4_packet, pair


def fields(line: str) -> dict[str, int]:
    assert line.startswith("stats ")
    return {k: int(v) for k, v in re.findall(r"([\w.]+)=(\d+)", line)}


def test_a_handshake_and_a_drop_as_the_operator_sees_them() -> None:
    net, a, b = pair()
    net.send(a, ipv4_packet(A_IP4, B_IP4))
    net.deliver()
    b.device.decapsulate(b"\x09garbage", ("10.0.0.9", 9), net.now, net.wall)
    fa = fields(stats_line(a.device, net.now))
    fb = fields(stats_line(b.device, net.now))
    assert fa == {
        "under_load": 0, "under_load_ms": 0, "peers": 1, "indices": 1, "keypairs": 1,
        "staged_packets": 0, "ratelimiter": 0,
        "initiations_sent": 1, "initiations_received": 0, "responses_sent": 0,
        "responses_received": 1, "handshakes_completed": 1, "cookie_replies_sent": 0,
        "cookie_replies_received": 0, "unreachable_sent": 0,
    }
    assert fb["initiations_received"] == 1 and fb["responses_sent"] == 1
    assert fb["handshakes_completed"] == 1  # b saw a's first data: keys confirmed
    assert fb["drop.MALFORMED"] == 1
    assert not any(k.startswith("drop.") for k in fa)  # zero counts are left out


def test_send_errors_are_shown_by_errno_name() -> None:
    net, a, _ = pair()
    errors: Counter[int] = Counter({errno.ENETUNREACH: 3, errno.EAGAIN: 0})
    line = stats_line(a.device, net.now, errors)
    assert "send_error.ENETUNREACH=3" in line and "EAGAIN" not in line


def test_the_line_holds_no_key() -> None:
    net, a, b = pair()
    net.send(a, ipv4_packet(A_IP4, B_IP4))
    net.deliver()
    line = stats_line(a.device, net.now)
    for key in (a.private, a.public, b.public):
        assert key.hex() not in line and base64.b64encode(key).decode()[:8] not in line


def test_staged_packets_and_keypairs_are_counted() -> None:
    net, a, b = pair()
    # No handshake yet: a's packets wait for one (the initiation is on the wire).
    net.send(a, ipv4_packet(A_IP4, B_IP4))
    net.send(a, ipv4_packet(A_IP4, B_IP4))
    assert dict(stats_fields(a.device, net.now))["staged_packets"] == 2
    assert dict(stats_fields(a.device, net.now))["keypairs"] == 0
    net.deliver()
    fa = dict(stats_fields(a.device, net.now))
    assert fa["staged_packets"] == 0 and fa["keypairs"] == 1


def test_time_under_load_adds_up_the_periods() -> None:
    net, a, b = pair()
    dev = b.device
    garbage = b"\x01\0\0\0" + bytes(144)

    def flood() -> None:
        for i in range(UNDER_LOAD_THRESHOLD):
            dev.receive_handshake_message(garbage, (f"10.50.0.{i % 250}", 1000 + i),
                                          net.now, net.wall, [])

    t0 = net.now
    flood()
    assert dev.under_load(net.now)
    net.now += 0.5
    assert dev.time_under_load(net.now) == pytest.approx(0.5)
    net.now = t0 + UNDER_LOAD_AFTER_TIME + 10  # the period ended a while ago
    assert dev.time_under_load(net.now) == pytest.approx(UNDER_LOAD_AFTER_TIME)
    flood()  # a second period
    net.now += 0.25
    assert dev.time_under_load(net.now) == pytest.approx(UNDER_LOAD_AFTER_TIME + 0.25)
    assert dict(stats_fields(dev, net.now))["under_load_ms"] == round(
        (UNDER_LOAD_AFTER_TIME + 0.25) * 1000)


def test_the_uapi_stats_reply_round_trips() -> None:
    net, a, b = pair()
    net.send(a, ipv4_packet(A_IP4, B_IP4))
    net.deliver()
    fields = stats_fields(a.device, net.now, Counter({errno.EAGAIN: 2}))
    text = format_stats(fields) + "errno=0\n\n"
    assert parse_stats(text) == dict(fields)
    assert parse_stats(text)["send_error.EAGAIN"] == 2
    with pytest.raises(UapiError):
        parse_stats("errno=-22\n\n")
    for bad in ("peers\n", "peers=one\n", "=3\n"):
        with pytest.raises(UapiProtocolError):
            parse_stats(bad)
