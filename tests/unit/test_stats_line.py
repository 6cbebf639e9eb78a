"""The ``kill -USR1`` line, built from a device's public state, in memory."""

from __future__ import annotations

import base64
import errno
import re
from collections import Counter

from wgpy.protocol import stats_line
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
        "under_load": 0, "peers": 1, "indices": 1, "ratelimiter": 0,
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
