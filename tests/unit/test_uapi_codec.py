"""The UAPI codec and framing, in memory: byte bounds, errors that never quote
a secret (wgpyd logs them; wgpy shows them), and allowed-IP removal
(``allowed_ip=-PREFIX``)."""

from __future__ import annotations

import base64
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgpy.control import uapi
from wgpy.control.apply import apply_set, device_info
from wgpy.io import uapi_server
from wgpy.io.uapi_server import RequestReader
from wgpy.protocol import Device
from wgpy.testing.memnet import seeded_rng

PEER = "ab" * 32


def test_a_request_is_bounded_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uapi_server, "MAX_REQUEST_BYTES", 1000)
    r = RequestReader()
    line = b"allowed_ip=10.0.0.0/8\n"  # 22 bytes
    assert r.feed(b"set=1\n" + line * 45) == []  # 990 bytes: still reading
    assert r.feed(line) == [("invalid", [])] and r.done
    ok = RequestReader()
    assert ok.feed(b"set=1\n" + line * 45 + b"\n") == [("set", ["allowed_ip=10.0.0.0/8"] * 45)]
    # The bound is per request, not per connection.
    assert ok.feed(b"set=1\n" + line * 45 + b"\n")[0][0] == "set"


# Where a key may be pasted by mistake: a bare key, a wg-quick line on the
# socket, a key as a key name, or in a field that is not a key's.
TEMPLATES = [
    "{s}", "{s}=", "={s}", "{s}={s}", "private_key {s}", "private_key = {s}",
    "PrivateKey = {s}", "PresharedKey={s}", "private_key={s}x", "private_key={s}",
    "private_key={short}", "preshared_key:{s}", "preshared_key={s}", "preshared_key={short}",
    "listen_port={s}", "fwmark={s}", "replace_peers={s}", "endpoint={s}", "allowed_ip={s}",
    "allowed_ip=-{s}", "update_only={s}", "remove={s}", "protocol_version={s}",
    "persistent_keepalive_interval={s}", "bogus_{s}=1", "{s}:51820",
]


def _forms(secret: bytes) -> list[str]:
    b64 = base64.b64encode(secret).decode()
    return [secret.hex(), b64, b64[:43]]


def _leaks(message: str, secret: bytes) -> list[str]:
    """The forms of ``secret`` of which a 12-character piece is in ``message``."""
    return [f for f in _forms(secret) if any(f[i:i + 12] in message for i in range(len(f) - 11))]


@given(st.binary(min_size=32, max_size=32), st.sampled_from(TEMPLATES), st.booleans(),
       st.sampled_from(["hex", "b64"]))
def test_errors_never_quote_a_key(secret: bytes, template: str, in_peer: bool,
                                  form: str) -> None:
    """Whatever line a key is pasted into, the error names the line and the
    reason and quotes no 12 characters of the key, in any encoding."""
    s = secret.hex() if form == "hex" else base64.b64encode(secret).decode()
    lines = ([f"public_key={PEER}"] if in_peer else []) + [
        template.format(s=s, short=s[:-1])]
    try:
        uapi.parse_set(lines)
    except uapi.UapiError as e:
        assert e.errno in (uapi.EINVAL, uapi.EPROTO)
        assert not _leaks(str(e), secret), str(e)
        assert str(e).startswith(f"line {len(lines)}: ")


@given(st.binary(min_size=32, max_size=32),
       st.sampled_from(["private_key={s}z", "preshared_key={s}", "listen_port={s}", "{s}",
                        "fwmark={s}"]))
def test_reply_errors_never_quote_a_key(secret: bytes, template: str) -> None:
    text = f"public_key={PEER}\n" if template.startswith("pre") else ""
    text += template.format(s=base64.b64encode(secret).decode()) + "\nerrno=0\n"
    try:
        uapi.parse_get(text)  # a bare base64 key is a key=value line, ignored as unknown
    except uapi.UapiProtocolError as e:
        assert not _leaks(str(e), secret), str(e)


@pytest.mark.parametrize(("lines", "errno", "text"), [
    ([f"public_key={PEER}", "persistent_keepalive_interval=notanumber"], uapi.EINVAL,
     "line 2: invalid persistent_keepalive_interval: 'notanumber'"),
    (["listen_port=70000"], uapi.EINVAL, "line 1: invalid listen_port: '70000' out of range"),
    (["bogus_key=1"], uapi.EINVAL, "line 1: invalid UAPI device key: 'bogus_key'"),
    ([f"public_key={PEER}", "endpoint=nonsense"], uapi.EINVAL,
     "line 2: failed to set endpoint 'nonsense'"),
    (["replace_peers=false"], uapi.EINVAL,
     "line 1: failed to set replace_peers, invalid value: 'false'"),
    (["hello"], uapi.EPROTO, "line 1: no '=' in a line of 5 characters (not shown)"),
    (["private_key=zz"], uapi.EINVAL, "line 1: failed to set private_key: invalid hex key"),
    (["fwmark=" + "1" * 100], uapi.EINVAL, "line 1: invalid fwmark: (100 characters not shown"),
    (["listen_port=" + "9 " * 50], uapi.EINVAL, "line 1: invalid listen_port: '9 9 9 "),
])
def test_errors_still_say_what_is_wrong(lines: list[str], errno: int, text: str) -> None:
    with pytest.raises(uapi.UapiError) as e:
        uapi.parse_set(lines)
    assert e.value.errno == errno
    assert str(e.value).startswith(text), str(e.value)


def test_shown_cuts_long_text_and_hides_key_like_runs() -> None:
    assert uapi.shown("10.0.0.1:x") == "'10.0.0.1:x'"
    assert uapi.shown("fd00:1234:5678:9abc:def0:1234:5678:9abc/128").startswith("'fd00")
    assert uapi.shown("a" * 100) == "(100 characters not shown: they may hold a key)"
    assert uapi.shown("a b" * 40).endswith("... (120 characters)")
    assert "not shown" in uapi.shown("x " + "A1+/" * 8)


def test_allowed_ip_removal_is_applied_in_order() -> None:
    dev = Device(seeded_rng(3))
    set_ = uapi.parse_set([f"public_key={PEER}", "allowed_ip=10.1.0.0/16",
                           "allowed_ip=10.2.0.0/16", "allowed_ip=fd00:1::/64"])
    apply_set(dev, set_, 0.0, 0.0)
    change = uapi.parse_set([f"public_key={PEER}", "allowed_ip=-10.1.0.0/16",
                             "allowed_ip=10.3.0.0/16", "allowed_ip=-10.3.0.0/16",
                             "allowed_ip=-fd00:9::/64"])  # not owned: nothing happens
    apply_set(dev, change, 0.0, 0.0)
    (peer,) = device_info(dev).peers
    assert peer.allowed_ips == ["10.2.0.0/16", "fd00:1::/64"]
    assert dev.allowed_ips.lookup4(int(ipaddress.IPv4Address("10.1.2.3"))) is None
    # Removed, then added again in one set: present.
    again = uapi.parse_set([f"public_key={PEER}", "allowed_ip=-10.2.0.0/16",
                            "allowed_ip=10.2.0.0/16"])
    apply_set(dev, again, 0.0, 0.0)
    assert sorted(device_info(dev).peers[0].allowed_ips) == ["10.2.0.0/16", "fd00:1::/64"]


def test_a_bad_removal_is_refused_whole() -> None:
    with pytest.raises(uapi.UapiError) as ei:
        uapi.parse_set([f"public_key={PEER}", "allowed_ip=-10.0.0.0/33"])
    assert ei.value.errno == uapi.EINVAL
