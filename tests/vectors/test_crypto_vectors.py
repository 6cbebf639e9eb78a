"""Known-answer vectors for WireGuard's primitives, each cited.

Every hex string here comes from the document named next to it (checked
against independent copies of those documents), never from running wgpy.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from wgpy.protocol import crypto, tai64n

H = bytes.fromhex

# -- ChaCha20-Poly1305 -------------------------------------------------------

# RFC 8439 section 2.8.2 (AEAD example).
RFC8439_KEY = bytes(range(0x80, 0xA0))
RFC8439_NONCE = H("070000004041424344454647")
RFC8439_AAD = H("50515253c0c1c2c3c4c5c6c7")
SUNSCREEN = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip "
    b"for the future, sunscreen would be it."
)
RFC8439_CT = H(
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
    "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
    "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
    "3ff4def08e4b7a9de576d26586cec64b6116"
)
RFC8439_TAG = H("1ae10b594f09e26a7e902ecbd0600691")

# RFC 8439 appendix A.5 (AEAD decryption).  Its nonce is 00000000 ‖ 0102030405060708,
# i.e. exactly WireGuard's layout (4 zero bytes ‖ 64-bit little-endian counter).
A5_KEY = H("1c9240a5eb55d38af333888604f6b5f0473917c1402b80099dca5cbc207075c0")
A5_COUNTER = 0x0807060504030201
A5_AAD = H("f33388860000000000004e91")
A5_CT_AND_TAG = H(
    "64a0861575861af460f062c79be643bd5e805cfd345cf389f108670ac76c8cb2"
    "4c6cfc18755d43eea09ee94e382d26b0bdb7b73c321b0100d4f03b7f355894cf"
    "332f830e710b97ce98c8a84abd0b948114ad176e008d33bd60f982b1ff37c855"
    "9797a06ef4f0ef61c186324e2b3506383606907b6a7c02b0f9f6157b53c867e4"
    "b9166c767b804d46a59b5216cde7a4e99040c5a40433225ee282a1b0a06c523e"
    "af4534d7f83fa1155b0047718cbc546a0d072b04b3564eea1b422273f548271a"
    "0bb2316053fa76991955ebd63159434ecebb4e466dae5a1073a6727627097a10"
    "49e617d91d361094fa68f0ff77987130305beaba2eda04df997b714d6c6f2c29"
    "a6ad5cb4022b02709beead9d67890cbb22392336fea1851f38"
)
A5_PLAIN = H(
    "496e7465726e65742d4472616674732061726520647261667420646f63756d65"
    "6e74732076616c696420666f722061206d6178696d756d206f6620736978206d"
    "6f6e74687320616e64206d617920626520757064617465642c207265706c6163"
    "65642c206f72206f62736f6c65746564206279206f7468657220646f63756d65"
    "6e747320617420616e792074696d652e20497420697320696e617070726f7072"
    "6961746520746f2075736520496e7465726e65742d4472616674732061732072"
    "65666572656e6365206d6174657269616c206f7220746f206369746520746865"
    "6d206f74686572207468616e206173202fe2809c776f726b20696e2070726f67"
    "726573732e2fe2809d"
)


def test_chacha20poly1305_rfc8439_2_8_2() -> None:
    # The AEAD our transport path uses (keypair.Keypair caches this class).
    sealed = ChaCha20Poly1305(RFC8439_KEY).encrypt(RFC8439_NONCE, SUNSCREEN, RFC8439_AAD)
    assert sealed == RFC8439_CT + RFC8439_TAG


def test_aead_wrapper_rfc8439_a5_decrypt_and_encrypt() -> None:
    assert crypto.nonce(A5_COUNTER) == H("000000000102030405060708")
    assert crypto.aead_decrypt(A5_KEY, A5_COUNTER, A5_CT_AND_TAG, A5_AAD) == A5_PLAIN
    assert crypto.aead_encrypt(A5_KEY, A5_COUNTER, A5_PLAIN, A5_AAD) == A5_CT_AND_TAG


def test_aead_rejects_tampering() -> None:
    for i in (0, len(A5_CT_AND_TAG) - 1):
        bad = bytearray(A5_CT_AND_TAG)
        bad[i] ^= 1
        assert crypto.aead_decrypt(A5_KEY, A5_COUNTER, bytes(bad), A5_AAD) is None
    assert crypto.aead_decrypt(A5_KEY, A5_COUNTER + 1, A5_CT_AND_TAG, A5_AAD) is None
    assert crypto.aead_decrypt(A5_KEY, A5_COUNTER, A5_CT_AND_TAG, A5_AAD + b"x") is None


def test_nonce_layout() -> None:
    # protocol.md: nonce = 4 zero bytes ‖ counter as 8-byte little-endian.
    assert crypto.nonce(0) == bytes(12)
    assert crypto.nonce(1) == bytes(4) + b"\x01" + bytes(7)
    assert crypto.nonce(2**64 - 1) == bytes(4) + b"\xff" * 8


# -- XChaCha20-Poly1305 (cookie replies) --------------------------------------

# draft-irtf-cfrg-xchacha-03 appendix A.3.1.
XC_KEY = bytes(range(0x80, 0xA0))
XC_NONCE = H("404142434445464748494a4b4c4d4e4f5051525354555657")
XC_AAD = H("50515253c0c1c2c3c4c5c6c7")
XC_CT = H(
    "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
    "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
    "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
    "21f9664c97637da9768812f615c68b13b52e"
)
XC_TAG = H("c0875924c1c7987947deafd8780acf49")


def test_xchacha20poly1305_draft_a_3_1() -> None:
    assert crypto.xaead_encrypt(XC_KEY, XC_NONCE, SUNSCREEN, XC_AAD) == XC_CT + XC_TAG
    assert crypto.xaead_decrypt(XC_KEY, XC_NONCE, XC_CT + XC_TAG, XC_AAD) == SUNSCREEN
    bad = bytearray(XC_CT + XC_TAG)
    bad[-1] ^= 0x80
    assert crypto.xaead_decrypt(XC_KEY, XC_NONCE, bytes(bad), XC_AAD) is None
    assert crypto.xaead_decrypt(XC_KEY, XC_NONCE, XC_CT + XC_TAG, b"") is None


# -- BLAKE2s -----------------------------------------------------------------


def test_blake2s_rfc7693_appendix_b_abc() -> None:
    want = H("508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982")
    assert crypto.hash_(b"abc") == want
    assert crypto.hash_(b"a", b"", b"bc") == want  # HASH(a ‖ b ‖ …) concatenates


# blake2s-kat.txt of the BLAKE2 reference (https://blake2.net), keyed with 00..1f:
# (input length, digest).  The input of length n is bytes 00, 01, ..., n-1.
BLAKE2S_KEYED_KAT = [
    (0, "48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49"),
    (1, "40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1"),
    (2, "6bb71300644cd3991b26ccd4d274acd1adeab8b1d7914546c1198bbe9fc9d803"),
    (78, "172ffc67153d12e0ca76a8b6cd5d4731885b39ce0cac93a8972a18006c8b8baf"),
    (164, "4f8ce1e51d2fe7f24043a904d898ebfc91975418753413aa099b795ecb35cedb"),
    (255, "3fb735061abc519dfe979e54c1ee5bfad0a9d858b3315bad34bde999efd724dd"),
]


@pytest.mark.parametrize(("n", "digest"), BLAKE2S_KEYED_KAT)
def test_blake2s_keyed_reference_kat(n: int, digest: str) -> None:
    # The keyed BLAKE2s that MAC() is built on (MAC truncates the digest length
    # parameter to 16, which is a different function, covered by the RFC 7693
    # appendix E self-test below).
    key = bytes(range(32))
    assert hashlib.blake2s(bytes(range(n)), key=key).hexdigest() == digest


def _selftest_seq(n: int, seed: int) -> bytes:
    # RFC 7693 appendix E selftest_seq(): a Fibonacci-like generator mod 2^32.
    a = (0xDEAD4BAD * seed) & 0xFFFFFFFF
    b = 1
    out = bytearray()
    for _ in range(n):
        t = (a + b) & 0xFFFFFFFF
        a, b = b, t
        out.append(t >> 24)
    return bytes(out)


def test_blake2s_rfc7693_appendix_e_selftest_with_mac() -> None:
    # The grand hash over unkeyed and keyed BLAKE2s of every digest length in
    # {16, 20, 28, 32} and input length in {0, 3, 64, 65, 255, 1024}.  The keyed
    # 16-byte case (a 16-byte key, like a cookie) is computed with crypto.mac.
    grand = hashlib.blake2s()
    for outlen in (16, 20, 28, 32):
        for inlen in (0, 3, 64, 65, 255, 1024):
            data = _selftest_seq(inlen, inlen)
            grand.update(hashlib.blake2s(data, digest_size=outlen).digest())
            key = _selftest_seq(outlen, outlen)
            if outlen == 16:
                keyed = crypto.mac(key, data)
            else:
                keyed = hashlib.blake2s(data, digest_size=outlen, key=key).digest()
            grand.update(keyed)
    want = "6a411f08ce25adcdfb02aba641451cec53c598b24f4fc787fbdc88797f4c1dfe"
    assert grand.hexdigest() == want


def test_mac_is_blake2s_with_16_byte_digest_parameter() -> None:
    key = bytes(range(32))
    assert crypto.mac(key, b"x") == hashlib.blake2s(b"x", key=key, digest_size=16).digest()
    # Not a truncation of the 32-byte digest: the digest length is a parameter.
    assert crypto.mac(key, b"x") != hashlib.blake2s(b"x", key=key).digest()[:16]


# -- HMAC-BLAKE2s and the KDF -------------------------------------------------


def _hmac_by_hand(key: bytes, data: bytes) -> bytes:
    # RFC 2104 written out, with BLAKE2s-256 and a 64-byte block.
    if len(key) > 64:
        key = hashlib.blake2s(key).digest()
    key = key.ljust(64, b"\0")
    ipad = bytes(k ^ 0x36 for k in key)
    opad = bytes(k ^ 0x5C for k in key)
    inner = hashlib.blake2s(ipad + data).digest()
    return hashlib.blake2s(opad + inner).digest()


def _hmac_openssl(key: bytes, data: bytes) -> bytes:
    h = crypto_hmac.HMAC(key, hashes.BLAKE2s(32))
    h.update(data)
    return h.finalize()


@pytest.mark.parametrize("key_len", [0, 16, 32, 64, 65])
def test_hmac_blake2s_three_ways(key_len: int) -> None:
    key = bytes((7 * i + 3) & 0xFF for i in range(key_len))
    for data in (b"", b"\x01", bytes(range(200))):
        ours = crypto.hmac_(key, data)
        assert ours == _hmac_by_hand(key, data) == _hmac_openssl(key, data)


def test_kdf_matches_the_whitepaper_definition() -> None:
    # KDFn(key, input): t0 = HMAC(key, input); t1 = HMAC(t0, 0x1);
    # t_i = HMAC(t0, t_{i-1} ‖ i)  (WireGuard whitepaper, section 5.4).
    key = hashlib.blake2s(b"chaining key").digest()
    for data in (b"", bytes(32), b"input material"):
        t0 = _hmac_by_hand(key, data)
        t1 = _hmac_by_hand(t0, b"\x01")
        t2 = _hmac_by_hand(t0, t1 + b"\x02")
        t3 = _hmac_by_hand(t0, t2 + b"\x03")
        assert crypto.kdf1(key, data) == t1
        assert crypto.kdf2(key, data) == (t1, t2)
        assert crypto.kdf3(key, data) == (t1, t2, t3)


# -- X25519 ------------------------------------------------------------------

# RFC 7748 section 5.2: (scalar, u-coordinate, output u-coordinate).
RFC7748_5_2 = [
    (
        "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
        "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
    ),
    (
        "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
        "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
        "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
    ),
]


@pytest.mark.parametrize(("scalar", "u", "out"), RFC7748_5_2)
def test_x25519_rfc7748_5_2(scalar: str, u: str, out: str) -> None:
    assert crypto.dh(H(scalar), H(u)) == H(out)


def test_x25519_rfc7748_5_2_iterated() -> None:
    # k = u = 9; repeat: k, u = X25519(k, u), k.
    k = u = (9).to_bytes(32, "little")
    after = {}
    for i in range(1, 1001):
        r = crypto.dh(k, u)
        assert r is not None
        k, u = r, k
        after[i] = k
    assert after[1] == H("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
    assert after[1000] == H("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")


def test_x25519_rfc7748_6_1_diffie_hellman() -> None:
    alice = H("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    alice_pub = H("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    bob = H("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    bob_pub = H("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = H("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert crypto.public_key(alice) == alice_pub
    assert crypto.public_key(bob) == bob_pub
    assert crypto.dh(alice, bob_pub) == shared
    assert crypto.dh(bob, alice_pub) == shared


def test_clamp() -> None:
    assert crypto.clamp(b"\xff" * 32) == b"\xf8" + b"\xff" * 30 + b"\x7f"
    assert crypto.clamp(bytes(32)) == bytes(31) + b"\x40"
    # The RFC 7748 scalars decode through the same clamping: same DH result.
    s = H(RFC7748_5_2[0][0])
    assert crypto.dh(crypto.clamp(s), H(RFC7748_5_2[0][1])) == H(RFC7748_5_2[0][2])


# The small-order u-coordinates of Curve25519 and its twist (the list
# published with Curve25519, https://cr.yp.to/ecdh.html, and used by
# libsodium): 0, 1, the two points of order 8, p-1, p, p+1.  X25519 ignores
# bit 255, so each also appears with that bit set.
LOW_ORDER = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
]
LOW_ORDER_ALL = [H(x) for x in LOW_ORDER] + [
    H(x)[:31] + bytes([H(x)[31] | 0x80]) for x in LOW_ORDER
]


@pytest.mark.parametrize("point", LOW_ORDER_ALL, ids=lambda p: p.hex()[:8] + p.hex()[-2:])
def test_dh_rejects_low_order_points(point: bytes) -> None:
    for seed in range(4):
        private = crypto.clamp(hashlib.blake2s(bytes([seed])).digest())
        assert crypto.dh(private, point) is None


def test_is_zero() -> None:
    assert crypto.is_zero(bytes(32))
    assert not crypto.is_zero(bytes(31) + b"\x01")


# -- TAI64N ------------------------------------------------------------------


def test_tai64n_layout() -> None:
    # 12 bytes: big-endian u64 seconds ‖ big-endian u32 nanoseconds.  The label
    # base is 2^62 + 10, as wireguard-go (tai64n.go: base = 0x400000000000000a)
    # and Linux (noise.c tai64n_now: 0x400000000000000aULL + tv_sec) write it.
    ts = tai64n.tai64n(1_700_000_000.0)
    assert len(ts) == 12
    assert ts == struct.pack(">QI", 0x400000000000000A + 1_700_000_000, 0)
    assert ts.hex() == "400000006553f10a00000000"


def test_tai64n_whitens_nanoseconds() -> None:
    # wireguard-go rounds the nanoseconds down to a multiple of 2^24 ns.
    secs, nanos = struct.unpack(">QI", tai64n.tai64n(1_700_000_000.75))
    assert secs == 0x400000000000000A + 1_700_000_000
    assert nanos == 750_000_000 - 750_000_000 % (1 << 24)
    assert nanos % (1 << 24) == 0
    # Two instants inside one 2^24 ns slot give the same label...
    assert tai64n.tai64n(1_700_000_000.0) == tai64n.tai64n(1_700_000_000.016)
    # ... and labels order like time across slots and seconds.
    walls = [1_700_000_000.0, 1_700_000_000.02, 1_700_000_000.5, 1_700_000_000.99, 1_700_000_001.0]
    labels = [tai64n.tai64n(w) for w in walls]
    assert labels == sorted(labels) and len(set(labels)) == len(labels)
    for x, y in zip(labels, labels[1:], strict=False):
        assert tai64n.after(y, x) and not tai64n.after(x, y)
    assert not tai64n.after(labels[0], labels[0])

