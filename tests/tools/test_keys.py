"""genkey / genpsk / pubkey, and the key type, against RFC 7748 and the real wg."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from wgpy.control.keys import InvalidKey, Key, genkey, genpsk
from wgpy.protocol.crypto import clamp
from wgpy.testing.wgtools import WGPY

# RFC 7748 section 6.1: Alice's private key and public key.
ALICE_PRIV = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUB = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")


def run(argv: list[str], stdin: bytes = b"", stdout: int | None = subprocess.PIPE,
        ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=stdin, stdout=stdout, stderr=subprocess.PIPE, timeout=30)


def test_pubkey_rfc7748_vector() -> None:
    assert Key(ALICE_PRIV).public_key().raw == ALICE_PUB
    p = run([*WGPY, "pubkey"], base64.b64encode(ALICE_PRIV) + b"\n")
    assert p.returncode == 0
    assert p.stdout == base64.b64encode(ALICE_PUB) + b"\n"


def test_genkey_is_clamped_and_genpsk_is_not_forced() -> None:
    for _ in range(20):
        raw = genkey(os.urandom).raw
        assert raw[0] & 7 == 0 and raw[31] & 128 == 0 and raw[31] & 64 == 64
    assert clamp(b"\xff" * 32) == b"\xf8" + b"\xff" * 30 + b"\x7f"
    # 20 psks all looking clamped would be a 1 in 2^80 event: genpsk must not clamp.
    psks = [genpsk(os.urandom).raw for _ in range(20)]
    assert not all(k[0] & 7 == 0 and k[31] >> 6 == 1 for k in psks)


def test_genkey_cli_output_is_a_key() -> None:
    for cmd in ("genkey", "genpsk"):
        p = run([*WGPY, cmd])
        assert p.returncode == 0, p.stderr
        text = p.stdout.decode()
        assert text.endswith("\n") and len(text) == 45
        Key.from_base64(text.strip())


def test_strict_base64() -> None:
    good = base64.b64encode(bytes(range(32))).decode()
    assert Key.from_base64(good).raw == bytes(range(32))
    # The last digit's two low bits are unused; wg rejects a non-zero spelling.
    bad_tail = good[:42] + chr(ord(good[42]) + 1) + "="
    for bad in ("", good[:-1], good + "=", good[:-1] + "A", bad_tail, "!" + good[1:],
                good[:43] + " "):
        with pytest.raises(InvalidKey):
            Key.from_base64(bad)


def test_repr_never_shows_key() -> None:
    k = genkey(os.urandom)
    assert k.to_base64() not in repr(k) and k.hex() not in repr(k)
    assert "redacted" in repr(k) and "redacted" in str(k)


def test_short_name_is_wireguard_gos_peer_name() -> None:
    # The name wgpyd's log and wgpy discover/registry give a peer: first and
    # last four base64 characters, as wireguard-go's ``peer(ABCD…WXYZ)``.
    text = base64.b64encode(ALICE_PUB).decode()  # hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=
    assert Key(ALICE_PUB).short_name() == f"peer({text[:4]}…{text[39:43]})" == "peer(hSDw…bTmo)"


PUBKEY_INPUTS = [
    base64.b64encode(ALICE_PRIV) + b"\n",
    base64.b64encode(ALICE_PRIV),
    base64.b64encode(ALICE_PRIV) + b"  \n\t\n",
    base64.b64encode(ALICE_PRIV)[:-2] + b"\n",  # short
    base64.b64encode(ALICE_PRIV) + b" x\n",  # trailing garbage
    b" " + base64.b64encode(ALICE_PRIV),  # leading space: wg reads exactly 44 chars
    b"",
    b"not a key at all, not a key at all, not a key\n",
]


@pytest.mark.parametrize("data", PUBKEY_INPUTS)
def test_pubkey_matches_wg(data: bytes) -> None:
    if shutil.which("wg") is None:
        pytest.skip("needs wg")
    theirs = run(["wg", "pubkey"], data)
    ours = run([*WGPY, "pubkey"], data)
    assert (ours.returncode == 0) == (theirs.returncode == 0), (ours.stderr, theirs.stderr)
    assert ours.stdout == theirs.stdout
    if ours.returncode:
        assert ours.stderr.strip() and b"Traceback" not in ours.stderr


def test_wg_accepts_our_keys() -> None:
    if shutil.which("wg") is None:
        pytest.skip("needs wg")
    priv = run([*WGPY, "genkey"]).stdout
    ours = run([*WGPY, "pubkey"], priv)
    theirs = run(["wg", "pubkey"], priv)
    assert ours.stdout == theirs.stdout and ours.returncode == 0


@pytest.mark.parametrize("mode,warns", [(0o644, True), (0o600, False), (0o640, False)])
def test_world_readable_warning(tmp_path: Path, mode: int, warns: bool) -> None:
    for tool in ([*WGPY], ["wg"]):
        if tool == ["wg"] and shutil.which("wg") is None:
            continue
        for cmd in ("genkey", "genpsk"):
            path = tmp_path / f"{cmd}.key"
            path.touch()
            os.chmod(path, mode)
            with open(path, "wb") as f:
                p = subprocess.run([*tool, cmd], stdout=f, stderr=subprocess.PIPE, timeout=30)
            assert p.returncode == 0
            assert (b"Warning: writing to world accessible file." in p.stderr) == warns, tool
            Key.from_base64(path.read_text().strip())
            path.unlink()


def test_usage_errors() -> None:
    for cmd in ("genkey", "genpsk", "pubkey"):
        p = run([*WGPY, cmd, "extra"])
        assert p.returncode == 1 and b"Usage:" in p.stderr
