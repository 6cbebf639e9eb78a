"""Small units of the core: padding rule, configuration errors, determinism,
secret hygiene of reprs, and the timer heap staying small."""

from __future__ import annotations

import base64

import pytest

from wgpy.protocol import Action, ConfigError, Device, HandshakeKeys
from wgpy.protocol.constants import PADDING_MULTIPLE
from wgpy.protocol.messages import padded_length
from wgpy.protocol.noise import SessionKeys, StaticIdentity
from wgpy.testing.memnet import A_IP4, B_IP4, ipv4_packet, pair


@pytest.mark.parametrize(
    ("size", "mtu", "want"),
    [
        (0, 1420, 0), (1, 1420, 16), (16, 1420, 16), (17, 1420, 32),
        (1419, 1420, 1420), (1420, 1420, 1420),
        # Larger than the MTU (wireguard-go's rule): pad the last MTU-sized unit.
        (1500, 1420, 1500), (1501, 1420, 1516), (2840, 1420, 2840),
        # mtu 0: plain multiple of 16.
        (1, 0, 16), (1500, 0, 1504),
        # An MTU that is not a multiple of 16 caps the padding.
        (1275, 1280, 1280), (1281, 1281, 1281), (1270, 1281, 1280),
    ],
)
def test_padded_length(size: int, mtu: int, want: int) -> None:
    assert padded_length(size, mtu) == want
    assert want >= size


def test_padded_length_property_small() -> None:
    for mtu in (576, 1280, 1420, 1500):
        for size in range(0, mtu + 1):
            n = padded_length(size, mtu)
            assert size <= n <= mtu
            assert n % PADDING_MULTIPLE == 0 or n == mtu


def test_config_errors() -> None:
    dev = Device(lambda n: bytes(n))
    with pytest.raises(ConfigError):
        dev.set_private_key(b"short")
    with pytest.raises(ConfigError):
        dev.add_peer(bytes(31))
    # An all-zero private key means "none".
    dev.set_private_key(bytes(32))
    assert dev.public_key is None
    # add_peer is idempotent.
    p = dev.add_peer(b"\x09" * 32)
    assert dev.add_peer(b"\x09" * 32) is p
    # Removing an unknown peer is a no-op.
    dev.remove_peer(b"\x08" * 32)


def test_same_seed_same_bytes() -> None:
    runs = []
    for _ in range(2):
        net, a, b = pair(seed=1234)
        net.send(a, ipv4_packet(A_IP4, B_IP4, b"determinism"))
        net.deliver()
        net.advance(200)
        net.send(b, ipv4_packet(B_IP4, A_IP4, b"again"))
        net.deliver()
        runs.append([(w.src, w.dst, w.data, w.time) for w in net.sent])
    assert runs[0] == runs[1] and len(runs[0]) > 4


def test_reprs_hide_secrets() -> None:
    secret = bytes(range(1, 33))
    for obj in (
        StaticIdentity.from_private(secret),
        HandshakeKeys(secret, secret, secret, secret),
        SessionKeys(secret, secret, True, 1, 2),
    ):
        text = repr(obj)
        assert secret.hex() not in text and str(secret) not in text
        assert "redacted" in text


def test_log_events_carry_no_key_material() -> None:
    net, a, b = pair()
    net.send(a, ipv4_packet(A_IP4, B_IP4))
    net.deliver()
    net.advance(600)
    secrets = [a.private, b.private]
    for node in (a, b):
        for k in node.keys:
            secrets += [k.local_ephemeral_private, k.preshared_key]
    forms = {s.hex() for s in secrets} | {base64.b64encode(s).decode() for s in secrets}
    for msg in a.logs + b.logs:
        assert not any(f in msg for f in forms)


def test_timer_heap_stays_small_over_a_long_run() -> None:
    net, a, b = pair()
    out: list[Action] = []
    a.device.peers[b.public].set_persistent_keepalive(1, net.now, net.wall, out)
    net.handle(a, out)
    for _ in range(50):
        net.send(a, ipv4_packet(A_IP4, B_IP4))
        net.send(b, ipv4_packet(B_IP4, A_IP4))
        net.advance(37, step=10.0)
    assert len(a.device._heap) < 50 and len(b.device._heap) < 50
