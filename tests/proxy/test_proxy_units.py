"""Sans-IO pieces: PROXY headers, rule matching, limits, health, nft builders."""

from __future__ import annotations

import ipaddress
import random
import socket
import struct

import pytest

from wgpy.proxy import proxyproto, rules
from wgpy.proxy.config import parse
from wgpy.proxy.health import HealthBook
from wgpy.proxy.limits import (
    REFUSED_GLOBAL,
    REFUSED_RATE,
    REFUSED_RULE,
    REFUSED_SOURCE,
    Limiter,
)
from wgpy.proxy.match import REFUSED_DENY, REFUSED_NOT_ALLOWED, Router, health_targets
from wgpy.proxy.netsetup import SetupError, apply_setup
from wgpy.proxy.tproxy import IP_ORIGDSTADDR, IPV6_ORIGDSTADDR, SOL_IP, SOL_IPV6, parse_origdst

ip = ipaddress.ip_address

# -- PROXY protocol ----------------------------------------------------------


def test_v1_line_matches_the_spec_example_form() -> None:
    h = proxyproto.encode_v1(("192.168.50.2", 56324), ("10.77.0.5", 443))
    assert h == b"PROXY TCP4 192.168.50.2 10.77.0.5 56324 443\r\n"
    h6 = proxyproto.encode_v1(("fd00:50::2", 1), ("fd00:77::5", 2))
    assert h6 == b"PROXY TCP6 fd00:50::2 fd00:77::5 1 2\r\n"
    assert len(proxyproto.encode_v1(("ffff:" * 7 + "ffff", 65535),
                                    ("ffff:" * 7 + "ffff", 65535))) <= proxyproto.V1_MAX


def test_v2_bytes_by_hand() -> None:
    h = proxyproto.encode_v2(("192.168.50.2", 0x1234), ("10.77.0.5", 80), "tcp")
    assert h.hex() == (
        "0d0a0d0a000d0a515549540a"  # signature
        "21" "11" "000c"  # v2 PROXY, TCP over IPv4, 12 address bytes
        "c0a83202" "0a4d0005" "1234" "0050"
    )  # fmt: skip
    u6 = proxyproto.encode_v2(("fd00:50::2", 5353), ("fd00:77::1", 53), "udp")
    assert u6[12:16] == bytes([0x21, 0x22, 0, 36]) and len(u6) == 16 + 36


@pytest.mark.parametrize("version", [1, 2])
def test_roundtrip_and_incremental_decode(version: int) -> None:
    rng = random.Random(5)
    for _ in range(200):
        v6 = rng.random() < 0.5
        def mk(v6: bool = v6) -> str:
            if v6:
                return str(ipaddress.IPv6Address(rng.getrandbits(128)))
            return str(ipaddress.IPv4Address(rng.getrandbits(32)))

        src, dst = (mk(), rng.randrange(65536)), (mk(), rng.randrange(65536))
        h = proxyproto.encode(version, src, dst, "tcp") + b"payload"
        for cut in range(len(h) - 7):
            assert proxyproto.decode(h[:cut]) is None, cut  # needs more bytes
        res = proxyproto.decode(h)
        assert res is not None and res[0] is not None
        info, used = res
        assert info is not None
        assert (info.src, info.dst, h[used:]) == (src, dst, b"payload")


@pytest.mark.parametrize(
    "garbage",
    [b"GET / HTTP/1.1\r\n", b"PROXY TCP4 1.2.3.4\r\n", b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n",
     b"PROXY TCP4 1.2.3.4 1.2.3.4 1 99999\r\n", b"PROXY " + b"x" * 200,
     proxyproto.V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12,
     proxyproto.V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4],
)  # fmt: skip
def test_decode_rejects_garbage_with_a_typed_error(garbage: bytes) -> None:
    with pytest.raises(proxyproto.ProxyHeaderError):
        proxyproto.decode(garbage)


def test_encode_refuses_v1_udp_and_off_is_empty() -> None:
    assert proxyproto.encode(0, ("1.2.3.4", 1), ("5.6.7.8", 2), "tcp") == b""
    with pytest.raises(ValueError):
        proxyproto.encode(1, ("1.2.3.4", 1), ("5.6.7.8", 2), "udp")


# -- matching ------------------------------------------------------------------

CONF = """\
[Rule]
Name = web
Prefix = 10.77.0.0/24, fd00:77::/64
Ports = 80, 443
Protocol = tcp
Origin = 10.99.0.2:8080, 10.99.0.3:8080, 10.99.0.4:8080
Deny = 192.168.50.3/32
Allow = 192.168.0.0/16, fd00:50::/64
[Rule]
Name = rest
Prefix = 10.77.0.0/16
Protocol = tcp, udp
Origin = 10.99.0.5
Map = 10.77.1.1 -> 10.99.0.6:22
HealthPort = 9
"""


def test_first_matching_rule_by_protocol_prefix_and_port() -> None:
    r = Router(parse(CONF), HealthBook())

    def rule(protocol: str, dst: str, port: int) -> str | None:
        found = r.match(protocol, ip(dst), port)
        return found.name if found else None

    assert rule("tcp", "10.77.0.9", 80) == "web"
    assert rule("tcp", "fd00:77::9", 443) == "web"
    assert rule("tcp", "10.77.0.9", 81) == "rest"
    assert rule("udp", "10.77.0.9", 80) == "rest"
    assert r.match("tcp", ip("10.78.0.1"), 80) is None
    assert r.match("udp", ip("fd00:77::9"), 80) is None


def test_deny_wins_then_allow_list() -> None:
    web = parse(CONF).rules[0]
    assert Router.admit(web, ip("192.168.50.2")) is None
    assert Router.admit(web, ip("fd00:50::2")) is None
    assert Router.admit(web, ip("192.168.50.3")) == REFUSED_DENY
    assert Router.admit(web, ip("10.1.2.3")) == REFUSED_NOT_ALLOWED
    assert Router.admit(parse(CONF).rules[1], ip("10.1.2.3")) is None  # no lists: open


def test_round_robin_skips_down_origins_but_keeps_them_last() -> None:
    book = HealthBook(fall=1)
    cfg = parse(CONF)
    book.set_targets(health_targets(cfg))
    r = Router(cfg, book)
    web = cfg.rules[0]
    firsts = [r.candidates(web, ip("10.77.0.1"), 80)[0][0] for _ in range(6)]
    assert firsts == ["10.99.0.2", "10.99.0.3", "10.99.0.4"] * 2
    book.record(("10.99.0.3", 8080), False, now=1.0)
    for _ in range(4):
        c = r.candidates(web, ip("10.77.0.1"), 80)
        assert c[-1] == ("10.99.0.3", 8080) and len(c) == 3


def test_same_port_map_and_health_port() -> None:
    cfg = parse(CONF)
    r = Router(cfg, HealthBook())
    rest = cfg.rules[1]
    assert r.candidates(rest, ip("10.77.9.9"), 4242) == [("10.99.0.5", 4242)]
    assert r.candidates(rest, ip("10.77.1.1"), 4242) == [("10.99.0.6", 22)]
    assert ("10.99.0.5", 9) in health_targets(cfg) and ("10.99.0.6", 22) in health_targets(cfg)


def test_never_an_address_outside_the_configured_origins() -> None:
    cfg = parse(CONF)
    configured = [o for r in cfg.rules for o in (*r.origins, *(o for _, t in r.table for o in t))]
    allowed = {str(o.host) for o in configured}
    r = Router(cfg, HealthBook())
    rng = random.Random(7)
    for _ in range(2000):
        dst = ip(f"10.77.{rng.randrange(256)}.{rng.randrange(256)}")
        port = rng.randrange(1, 65536)
        rule = r.match(rng.choice(["tcp", "udp"]), dst, port)
        assert rule is not None
        for host, p in r.candidates(rule, dst, port):
            assert host in allowed and 1 <= p <= 65535


# -- limits and health -----------------------------------------------------------


def test_limits_global_rule_source_and_release() -> None:
    lim = Limiter(global_max=3)
    assert lim.acquire("a", "s1", 0.0, source_max=2) is None
    assert lim.acquire("a", "s1", 0.0, source_max=2) is None
    assert lim.acquire("a", "s1", 0.0, source_max=2) == REFUSED_SOURCE
    assert lim.acquire("a", "s2", 0.0, rule_max=2) == REFUSED_RULE
    assert lim.acquire("b", "s2", 0.0) is None
    assert lim.acquire("c", "s3", 0.0) == REFUSED_GLOBAL
    lim.release("a", "s1")
    assert lim.active() == 2 and lim.active("a") == 1 and lim.active("a", "s1") == 1
    assert lim.acquire("c", "s3", 0.0) is None
    for rule, src in (("a", "s1"), ("b", "s2"), ("c", "s3")):
        lim.release(rule, src)
    assert lim.active() == 0
    with pytest.raises(RuntimeError):
        lim.release("a", "s1")


def test_rate_bucket_uses_the_clock_passed_in() -> None:
    lim = Limiter(global_max=1000)

    def take(now: float) -> str | None:
        return lim.acquire("r", "s", now, rate=2)

    assert [take(10.0) for _ in range(3)] == [None, None, REFUSED_RATE]
    assert take(10.2) == REFUSED_RATE  # 0.4 tokens
    assert take(10.5) is None  # 1.0 token
    assert [take(100.0) for _ in range(3)] == [None, None, REFUSED_RATE]  # burst capped at 2


def test_health_fall_rise_and_unknown_is_up() -> None:
    book = HealthBook(fall=2, rise=2)
    t = ("10.99.0.2", 80)
    assert book.is_up(t)
    book.set_targets([t])
    assert not book.record(t, False, 1.0) and book.is_up(t)
    assert book.record(t, False, 2.0) and not book.is_up(t)
    assert not book.record(t, True, 3.0) and not book.is_up(t)
    assert book.record(t, True, 4.0) and book.is_up(t)
    book.set_targets([])
    assert book.snapshot() == {}


# -- kernel setup builders ----------------------------------------------------------


def test_teardown_is_the_exact_inverse_of_setup() -> None:
    cfg = parse(CONF)
    up = rules.setup_commands(cfg)
    down = rules.teardown_commands(cfg)
    added = {c.argv for c in up if "add" in c.argv}
    removed = {tuple("add" if a == "del" else a for a in c.argv) for c in down if "del" in c.argv}
    assert added == removed and len(added) == 7  # 3 AnyIP + 2 default-local + 2 ip rules
    assert all("proto" in c.argv or "protocol" in c.argv for c in up if c.argv[0] == "ip")
    assert down[-1].argv == ("nft", "delete", "table", "inet", "wgpy_proxy")


def test_nft_script_diverts_exactly_the_rules() -> None:
    s = rules.nft_ruleset(parse(CONF))
    assert s.startswith("table inet wgpy_proxy\ndelete table inet wgpy_proxy\n")
    lines = [x.strip() for x in s.splitlines() if "tproxy" in x]
    assert lines[0] == (
        "ip daddr { 10.77.0.0/24 } meta l4proto tcp th dport { 80, 443 } tproxy "
        'ip to 127.0.0.1:15001 meta mark set 0x2a0 counter accept comment "rule web"'
    )
    assert lines[1].startswith("ip6 daddr { fd00:77::/64 } meta l4proto tcp th dport { 80, 443 }")
    assert "tproxy ip6 to [::1]:15001" in lines[1]
    assert len(lines) == 4 and "th dport" not in lines[2] + lines[3]  # rest: all ports


def test_sync_only_touches_the_difference() -> None:
    old = parse(CONF)
    new = parse(CONF.replace("10.77.0.0/24, fd00:77::/64", "10.77.0.0/24"))
    cmds = [c.argv for c in rules.sync_commands(old, new)]
    assert cmds[0] == ("nft", "-f", "-")
    assert all("del" in c for c in cmds[1:]) and len(cmds) == 4  # v6 rule, v6 routes x2
    assert rules.sync_commands(old, old)[1:] == []


def test_failed_setup_is_undone() -> None:
    ran: list[tuple[str, ...]] = []

    def runner(c: rules.Command) -> tuple[int, str]:
        ran.append(c.argv)
        if c.argv[:2] == ("ip", "-6") and "add" in c.argv:
            return 2, "RTNETLINK answers: Permission denied"
        return 0, ""

    with pytest.raises(SetupError, match="Permission denied"):
        apply_setup(parse(CONF), runner)
    assert ran[-1] == ("nft", "delete", "table", "inet", "wgpy_proxy")
    assert sum("del" in a for a in ran) == 7


# -- IP_ORIGDSTADDR parsing -------------------------------------------------------------


def test_parse_origdst_v4_and_v6() -> None:
    sin = struct.pack("=H", socket.AF_INET) + (8080).to_bytes(2, "big")
    sin += socket.inet_aton("10.77.0.5") + bytes(8)
    assert parse_origdst([(SOL_IP, IP_ORIGDSTADDR, sin)]) == ("10.77.0.5", 8080)
    sin6 = struct.pack("=H", socket.AF_INET6) + (53).to_bytes(2, "big") + bytes(4)
    sin6 += socket.inet_pton(socket.AF_INET6, "fd00:77::1") + bytes(4)
    assert parse_origdst([(1, 2, b"junk"), (SOL_IPV6, IPV6_ORIGDSTADDR, sin6)]) == (
        "fd00:77::1", 53)  # fmt: skip
    assert parse_origdst([]) is None
    assert parse_origdst([(SOL_IP, IP_ORIGDSTADDR, b"\x02\x00")]) is None
