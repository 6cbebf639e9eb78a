"""The wg-quick file as the console edits it: whole peer blocks, nothing else touched."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from wgpy.control.config import parse_quick_config
from wgpy.control.keys import genkey, genpsk
from wgpy.protocol.errors import ConfigError
from wgpy.ui import document

PATH = Path("/etc/wireguard/wg0.conf")
PRIV = genkey(secrets.token_bytes).to_base64()
K1 = genkey(secrets.token_bytes).public_key().to_base64()
K2 = genkey(secrets.token_bytes).public_key().to_base64()

TEXT = f"""# written by hand
[Interface]
PrivateKey = {PRIV}
Address = 10.8.0.1/24
ListenPort = 51820
PostUp = echo up   # a hook stays as written

[Peer]
# Name = laptop
PublicKey = {K1}
AllowedIPs = 10.8.0.2/32, 192.168.50.0/24
Endpoint = 192.168.1.10:51820

# a comment between peers
[Peer]
PublicKey={K2}
AllowedIPs=10.8.0.3/32
"""


def parse(text: str) -> document.Document:
    return document.parse(text, PATH, "wg0")


def test_parse_peers() -> None:
    doc = parse(TEXT)
    assert [(p.public_key, p.name, p.enabled, p.allowed_ips) for p in doc.peers] == [
        (K1, "laptop", True, ["10.8.0.2/32", "192.168.50.0/24"]),
        (K2, "", True, ["10.8.0.3/32"]),
    ]


def test_add_peer_appends_a_block_and_keeps_every_line() -> None:
    doc = parse(TEXT)
    pub, psk = genkey(secrets.token_bytes).public_key(), genpsk(secrets.token_bytes)
    new = document.add_peer(doc, "alice phone", pub, psk, ["10.8.0.4/32"])
    assert new.startswith(TEXT)
    assert new[len(TEXT):] == (f"\n[Peer]\n# Name = alice phone\nPublicKey = {pub.to_base64()}\n"
                               f"PresharedKey = {psk.to_base64()}\nAllowedIPs = 10.8.0.4/32\n")
    qc = parse_quick_config(new, PATH, "wg0")
    assert [p.public_key.to_base64() for p in qc.device.peers if p.public_key] == [
        K1, K2, pub.to_base64()]


def test_disable_comments_the_block_out_and_enable_restores_it_exactly() -> None:
    doc = parse(TEXT)
    off = document.set_enabled(doc, K1, False)
    assert f"#~ [Peer]\n#~ # Name = laptop\n#~ PublicKey = {K1}\n" in off
    # wg-quick no longer sees the peer, the console still does.
    qc = parse_quick_config(off, PATH, "wg0")
    assert [p.public_key.to_base64() for p in qc.device.peers if p.public_key] == [K2]
    peers = parse(off).peers
    assert [(p.public_key, p.enabled, p.name) for p in peers] == [
        (K1, False, "laptop"), (K2, True, "")]
    assert document.set_enabled(parse(off), K1, True) == TEXT


def test_remove_and_rename() -> None:
    doc = parse(TEXT)
    gone = document.remove_peer(doc, K1)
    assert K1 not in gone and "# a comment between peers" in gone and "PostUp = echo up" in gone
    assert [p.public_key for p in parse(gone).peers] == [K2]
    renamed = document.rename_peer(doc, K1, "work laptop")
    assert "# Name = work laptop\n" in renamed and "laptop\n" not in renamed.replace(
        "work laptop", "")
    named = document.rename_peer(doc, K2, "nas")
    assert f"[Peer]\n# Name = nas\nPublicKey={K2}" in named
    # A disabled peer is renamed inside its commented block.
    off = parse(document.set_enabled(doc, K1, False))
    assert "#~ # Name = desk\n" in document.rename_peer(off, K1, "desk")


def test_names_with_markup_stay_a_comment_and_bad_names_are_refused() -> None:
    doc = parse(TEXT)
    text = document.add_peer(doc, "<script>alert(1)</script>",
                             genkey(secrets.token_bytes).public_key(), None, ["10.8.0.9/32"])
    assert parse(text).peers[-1].name == "<script>alert(1)</script>"
    for bad, why in (("", "required"), ("a\nPublicKey = x", "line break"), ("x" * 65, "64")):
        with pytest.raises(ValueError, match=why):
            document.check_name(bad)


def test_a_broken_disabled_block_names_its_line() -> None:
    text = TEXT + "\n#~ [Peer]\n#~ PublicKey = not-a-key\n"
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert str(e.value).startswith(f"{PATH}:20: Key is not the correct length or format")


def test_a_peer_twice_is_refused_with_both_lines() -> None:
    with pytest.raises(ConfigError, match=r"also at line 8"):
        parse(TEXT + f"\n[Peer]\nPublicKey = {K1}\n")


def test_a_broken_file_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"wg0.conf:5: Line unrecognized: `ListenPort="):
        parse(TEXT.replace("ListenPort = 51820", "ListenPort = "))
