"""The SOCKS5/HTTP-proxy codec (wgpy.userspace.socks5) and the forward
specifications (wgpy.userspace.spec): what each input gives, and the
protocol's error reply for what is wrong."""

from __future__ import annotations

import base64

import pytest

from wgpy.userspace import socks5
from wgpy.userspace.socks5 import ProxyProtocolError
from wgpy.userspace.spec import Forward, parse_forward, parse_host_port


def test_greeting_and_method_choice() -> None:
    assert socks5.parse_greeting(b"\x05") is None
    assert socks5.parse_greeting(b"\x05\x02\x00") is None
    assert socks5.parse_greeting(b"\x05\x02\x00\x02rest") == ([0, 2], 4)
    assert socks5.choose_method([0, 2], need_auth=True) == b"\x05\x02"
    assert socks5.choose_method([0], need_auth=False) == b"\x05\x00"
    with pytest.raises(ProxyProtocolError) as e:
        socks5.choose_method([0], need_auth=True)
    assert e.value.reply == b"\x05\xff"
    with pytest.raises(ProxyProtocolError):
        socks5.parse_greeting(b"\x04\x01")
    with pytest.raises(ProxyProtocolError) as e:
        socks5.parse_greeting(b"\x05\x00")
    assert e.value.reply == b"\x05\xff"


def test_username_password() -> None:
    msg = b"\x01\x05alice\x06secret"
    assert socks5.parse_auth(msg[:-1]) is None
    assert socks5.parse_auth(msg) == (b"alice", b"secret", len(msg))
    assert socks5.check_credentials(b"alice", b"secret", b"alice", b"secret")
    assert not socks5.check_credentials(b"alice", b"Secret", b"alice", b"secret")
    assert not socks5.check_credentials(b"bob", b"secret", b"alice", b"secret")
    assert socks5.auth_reply(False) == b"\x01\x01"
    with pytest.raises(ProxyProtocolError):
        socks5.parse_auth(b"\x02\x00\x00")


@pytest.mark.parametrize("raw,want", [
    (b"\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x50", socks5.Request(1, "10.0.0.1", 80)),
    (b"\x05\x01\x00\x03\x08peer.lab\x01\xbb", socks5.Request(1, "peer.lab", 443)),
    (b"\x05\x03\x00\x04" + bytes(15) + b"\x01\x00\x35", socks5.Request(3, "::1", 53)),
])
def test_requests(raw: bytes, want: socks5.Request) -> None:
    assert socks5.parse_request(raw[:-1]) is None
    assert socks5.parse_request(raw) == (want, len(raw))


@pytest.mark.parametrize("raw,code", [
    (b"\x05\x02\x00\x01\x0a\x00\x00\x01\x00\x50", socks5.COMMAND_NOT_SUPPORTED),  # BIND
    (b"\x05\x09\x00\x01\x0a\x00\x00\x01\x00\x50", socks5.COMMAND_NOT_SUPPORTED),
    (b"\x05\x01\x00\x07\x0a\x00\x00\x01\x00\x50", socks5.ADDRESS_TYPE_NOT_SUPPORTED),
    (b"\x05\x01\x00\x03\x03a b\x00\x50", socks5.GENERAL_FAILURE),
    (b"\x04\x01\x00\x01\x0a\x00\x00\x01\x00\x50", socks5.GENERAL_FAILURE),
])
def test_bad_requests_get_their_reply_code(raw: bytes, code: int) -> None:
    with pytest.raises(ProxyProtocolError) as e:
        socks5.parse_request(raw)
    assert e.value.reply[:2] == bytes((5, code))


def test_replies_and_udp_header() -> None:
    assert socks5.reply(0, "10.0.0.2", 1080) == b"\x05\x00\x00\x01\x0a\x00\x00\x02\x04\x38"
    assert socks5.reply(4) == b"\x05\x04\x00\x01" + bytes(6)
    dgram = socks5.build_udp("10.0.0.1", 53, b"payload")
    assert socks5.parse_udp(dgram) == ("10.0.0.1", 53, b"payload")
    assert socks5.parse_udp(b"\x00\x00\x01" + dgram[3:]) is None  # a fragment: dropped
    assert socks5.parse_udp(b"\x00\x00\x00\x07junk") is None
    assert socks5.parse_udp(b"\x00") is None


def test_http_head() -> None:
    head = b"CONNECT peer.lab:443 HTTP/1.1\r\nHost: peer.lab:443\r\nProxy-Authorization: " \
           + b"Basic " + base64.b64encode(b"alice:pw") + b"\r\n\r\nTLS..."
    assert socks5.parse_http_head(head[:20]) is None
    req = socks5.parse_http_head(head)
    assert req is not None and req.method == "CONNECT" and req.target == "peer.lab:443"
    assert head[req.head_len:] == b"TLS..."
    assert socks5.http_basic_ok(req, b"alice", b"pw")
    assert not socks5.http_basic_ok(req, b"alice", b"other")
    for bad in (b"GARBAGE\r\n\r\n", b"GET / HTTP/2\r\n\r\n", b"GET / HTTP/1.1\r\nNo colon\r\n\r\n",
                b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"):
        with pytest.raises(ProxyProtocolError) as e:
            socks5.parse_http_head(bad)
        assert e.value.reply.startswith(b"HTTP/1.1 400 ")
    with pytest.raises(ProxyProtocolError) as e:
        socks5.parse_http_head(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 5000)
    assert e.value.reply.startswith(b"HTTP/1.1 431 ")


def test_forward_specs() -> None:
    assert parse_forward("8080:10.0.0.1:80", "127.0.0.1") == Forward(
        "127.0.0.1", 8080, "10.0.0.1", 80, False)
    assert parse_forward("0.0.0.0:53:dns.lan:53/udp", "127.0.0.1") == Forward(
        "0.0.0.0", 53, "dns.lan", 53, True)
    assert parse_forward("[::1]:8080:[fd00::1]:80/TCP", "") == Forward(
        "::1", 8080, "fd00::1", 80, False)
    for bad in ("8080", "8080:host", "x:10.0.0.1:80", "8080:10.0.0.1:99999", "1:2:3/sctp",
                "::1:8080:10.0.0.1:80", "8080::80"):
        with pytest.raises(ValueError):
            parse_forward(bad, "127.0.0.1")
    assert parse_host_port("1080", default_host="127.0.0.1") == ("127.0.0.1", 1080)
    assert parse_host_port("[::1]:1080") == ("::1", 1080)
    with pytest.raises(ValueError):
        parse_host_port("host:0")
