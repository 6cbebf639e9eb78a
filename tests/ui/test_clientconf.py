"""A client's configuration, and its QR code as the WireGuard apps read it."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from wgpy.control.config import parse_quick_config
from wgpy.control.keys import genkey, genpsk
from wgpy.testing.lab import IN_CI
from wgpy.ui.clientconf import ClientConfig, ClientSettings, format_endpoint_host, qr_svg


def sample() -> ClientConfig:
    return ClientConfig(genkey(secrets.token_bytes), ["10.8.0.2/32", "fd00:8::2/128"],
                        genkey(secrets.token_bytes).public_key(),
                        "vpn.example.com:51820", genpsk(secrets.token_bytes),
                        ClientSettings(dns=("10.8.0.1",), persistent_keepalive=25))


def test_text_is_a_valid_wg_quick_file() -> None:
    cfg = sample()
    text = cfg.text()
    qc = parse_quick_config(text.replace("vpn.example.com", "10.0.0.1"),
                            Path("wg0.conf"), "wg0")
    assert qc.addresses == ["10.8.0.2/32", "fd00:8::2/128"] and qc.dns == ["10.8.0.1"]
    assert qc.device.private_key == cfg.private_key
    [peer] = qc.device.peers
    assert peer.public_key == cfg.server_public_key and peer.preshared_key == cfg.preshared_key
    assert peer.allowed_ips == ["0.0.0.0/0", "::/0"] and peer.persistent_keepalive == 25
    assert "Endpoint = vpn.example.com:51820\n" in text
    assert format_endpoint_host("fd00::1", 51820) == "[fd00::1]:51820"


def test_qr_code_decodes_to_the_exact_text(tmp_path: Path) -> None:
    if shutil.which("zbarimg") is None:
        if IN_CI:
            pytest.fail("CI=true but zbarimg is not installed (scripts/setup.sh)")
        pytest.skip("needs zbarimg")
    import segno

    text = sample().text()
    svg = qr_svg(text)
    assert svg.startswith("<svg") and "<?xml" not in svg and "<script" not in svg
    # The same symbol as a PNG (what a screen shows a phone), read back by zbarimg.
    png = tmp_path / "qr.png"
    segno.make(text, error="m", micro=False).save(str(png), scale=5, border=4)
    out = subprocess.run(["zbarimg", "--raw", "-q", "-Sbinary", str(png)], capture_output=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    # -Sbinary: the symbol's bytes as they are, final newline included.
    assert out.stdout.decode() == text
    assert re.search(r"viewBox|width", svg)
