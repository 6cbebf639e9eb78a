"""Hypothesis: parsing and receiving arbitrary bytes never raises."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wgpy.protocol import messages
from wgpy.testing.memnet import A_EP, B_EP, established

SIZES = [0, 1, 3, 4, 31, 32, 63, 64, 65, 91, 92, 93, 147, 148, 149]


def _typed() -> st.SearchStrategy[bytes]:
    # A plausible header (types 0..5, reserved bytes usually zero) and a length
    # near each message size, so the parser's branches are all reached.
    head = st.builds(
        lambda t, r: bytes([t]) + r,
        st.integers(0, 5),
        st.one_of(st.just(b"\0\0\0"), st.binary(min_size=3, max_size=3)),
    )
    return st.builds(
        lambda h, n, fill: (h + fill)[:n].ljust(n, b"\0"),
        head,
        st.one_of(st.sampled_from(SIZES), st.integers(0, 300)),
        st.binary(max_size=300),
    )


ANY = st.one_of(st.binary(max_size=400), _typed())


@settings(max_examples=800, deadline=None)
@given(ANY)
def test_parse_never_raises_and_is_exact(data: bytes) -> None:
    msg = messages.parse(data)
    t = messages.message_type(data)
    if msg is None:
        return
    # Whatever parses has the right type and size, and packs back to itself.
    n = len(data)
    if isinstance(msg, messages.Initiation):
        assert t == 1 and n == 148 and msg.pack() == data
    elif isinstance(msg, messages.Response):
        assert t == 2 and n == 92 and msg.pack() == data
    elif isinstance(msg, messages.CookieReply):
        assert t == 3 and n == 64 and msg.pack() == data
    else:
        assert t == 4 and n >= 32
        assert messages.TransportHeader.pack(msg.receiver, msg.counter) == data[:16]


def test_reserved_bytes_must_be_zero() -> None:
    assert messages.parse(b"\x01\x00\x00\x01" + bytes(144)) is None
    assert messages.parse(b"\x04\x01\x00\x00" + bytes(28)) is None
    assert messages.parse(b"\x04\x00\x00\x00" + bytes(28)) is not None


_NET = established(77)
_REAL = [w.data for w in _NET[0].sent]


def _mutated() -> st.SearchStrategy[bytes]:
    # Real datagrams of this session (live indices), bit-flipped or cut.
    def flip(d: bytes, i: int, bit: int) -> bytes:
        i %= len(d)
        return d[:i] + bytes([d[i] ^ (1 << bit)]) + d[i + 1 :]

    real = st.sampled_from(_REAL)
    return st.one_of(
        st.builds(flip, real, st.integers(0, 1000), st.integers(0, 7)),
        st.builds(lambda d, n: d[:n], real, st.integers(0, 200)),
        st.builds(lambda d, x: d + x, real, st.binary(min_size=1, max_size=20)),
    )


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(ANY, _mutated()))
def test_decapsulate_never_raises(data: bytes) -> None:
    net, a, b = _NET
    # With and without an established session, so transport indices can hit.
    for node, src in ((a, B_EP), (b, A_EP), (b, ("fd00::7", 9)), (b, ("fe80::1%eth0", 1))):
        out = node.device.decapsulate(data, src, net.now, net.wall)
        assert isinstance(out, list)
