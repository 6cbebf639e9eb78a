"""The UAPI codec and framing, in memory: byte bounds, errors that never echo a
secret, and allowed-IP removal (``allowed_ip=-PREFIX``)."""

from __future__ import annotations

import ipaddress
import os

import pytest

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


@pytest.mark.parametrize("body", [
    "{s}", "private_key={s}x", "private_key={short}", "{s}={s}",
    f"public_key={PEER}\npreshared_key={{short}}", f"public_key={PEER}\n{{s}}=1",
])
def test_errors_never_echo_a_secret(body: str) -> None:
    """A key's line, a line without '=' (a pasted key) or an unknown key name
    (a key where a name should be) is never quoted back."""
    secret = os.urandom(32).hex()
    lines = body.format(s=secret, short=secret[:-1]).split("\n")
    with pytest.raises(uapi.UapiError) as ei:
        uapi.parse_set(lines)
    assert ei.value.errno in (uapi.EINVAL, uapi.EPROTO)
    for piece in (secret[:16], secret[16:32], secret[32:48], secret[48:]):
        assert piece not in str(ei.value)


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
