"""The wg(8) / wg-quick(8) configuration parser, writer and command builders (no root)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from wgpy.control import netconf as nc
from wgpy.control.config import (
    format_config,
    parse_config,
    parse_quick_config,
    parse_set_args,
    resolve_config_path,
    sync_with,
    to_uapi,
)
from wgpy.control.keys import Key
from wgpy.control.uapi import DeviceInfo, PeerInfo
from wgpy.protocol.errors import ConfigError
from wgpy.testing.wgtools import WGPY

K1 = base64.b64encode(bytes([1] * 32)).decode()
K2 = base64.b64encode(bytes([2] * 32)).decode()
K3 = base64.b64encode(bytes([3] * 32)).decode()


def test_parse_good_config_with_wg_quirks() -> None:
    text = f"""
# a comment
[interface]
Private Key = {K1}   # spaces anywhere are removed, as wg does
listenport=51820
FwMark = 0x10

[Peer]
PublicKey = {K2}
Allowed IPs = 10.0.0.0/24, fd00::1
AllowedIPs = 192.168.1.7
Endpoint = 192.168.1.1:51820
PersistentKeepalive = off
PresharedKey = {K3}
"""
    dev = parse_config(text, "x.conf")
    assert dev.private_key == Key.from_base64(K1)
    assert (dev.listen_port, dev.fwmark, dev.replace_peers) == (51820, 16, True)
    (p,) = dev.peers
    assert p.allowed_ips == ["10.0.0.0/24", "fd00::1/128", "192.168.1.7/32"]
    assert p.endpoint == "192.168.1.1:51820" and p.persistent_keepalive == 0
    lines = to_uapi(dev)
    assert lines[:4] == [f"private_key={'01' * 32}", "listen_port=51820", "fwmark=16",
                         "replace_peers=true"]
    assert lines[4:] == [
        f"public_key={'02' * 32}", f"preshared_key={'03' * 32}", "endpoint=192.168.1.1:51820",
        "persistent_keepalive_interval=0", "replace_allowed_ips=true",
        "allowed_ip=10.0.0.0/24", "allowed_ip=fd00::1/128", "allowed_ip=192.168.1.7/32",
    ]


def test_setconf_resets_and_addconf_does_not() -> None:
    reset = to_uapi(parse_config("", "e.conf"))
    assert reset == [f"private_key={'0' * 64}", "listen_port=0", "fwmark=0",
                     "replace_peers=true"]
    assert to_uapi(parse_config("[Interface]\nListenPort=1\n", "a.conf", append=True)) == [
        "listen_port=1"]


BAD = [
    ("[Interface]\nPrivateKey = abc\n", 2, "Key is not the correct length or format"),
    ("[Interface]\nListenPort = nosuchservice\n", 2, "`nosuchservice'"),
    ("[Interface]\nFwMark = 0xg\n", 2, "Fwmark is neither"),
    ("[Interface]\nBogus = 1\n", 2, "Line unrecognized: `Bogus=1'"),
    ("ListenPort = 1\n", 1, "Line unrecognized"),
    ("[Interface]\nPrivateKey =\n", 2, "Line unrecognized"),
    (f"[Peer]\nPublicKey = {K1}\nAllowedIPs = 10.0.0.0/33\n", 3, "AllowedIP is not in"),
    (f"[Peer]\nPublicKey = {K1}\nAllowedIPs = 10.0.0.256\n", 3, "Unable to parse IP"),
    (f"[Peer]\nPublicKey = {K1}\nEndpoint = 10.0.0.1\n", 3, "Unable to find port"),
    (f"[Peer]\nPublicKey = {K1}\nEndpoint = [fd00::1:51820\n", 3, "matching brace"),
    (f"[Peer]\nPublicKey = {K1}\nPersistentKeepalive = 65536\n", 3, "Persistent keepalive"),
    ("[Interface]\n\n[Peer]\nAllowedIPs = 10.0.0.1\n", 3, "A peer is missing a public key"),
]


@pytest.mark.parametrize("text,line,reason", BAD)
def test_errors_name_file_line_and_reason(text: str, line: int, reason: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(text, "bad.conf")
    assert ei.value.filename == "bad.conf" and ei.value.lineno == line
    assert str(ei.value).startswith(f"bad.conf:{line}: ")
    assert reason in str(ei.value)


def test_secret_values_not_echoed_in_errors() -> None:
    secret = K1[:-2] + "=="
    with pytest.raises(ConfigError) as ei:
        parse_config(f"[Interface]\nPrivateKey = {secret}\n", "s.conf")
    assert secret not in str(ei.value)


def test_warning_for_host_bits() -> None:
    seen: list[str] = []
    dev = parse_config(f"[Peer]\nPublicKey={K1}\nAllowedIPs=10.0.0.1/24\n", "w.conf",
                       warn=seen.append)
    assert dev.peers[0].allowed_ips == ["10.0.0.1/24"]
    assert seen == ["Warning: AllowedIP has nonzero host part: 10.0.0.1/24"]


def test_set_args() -> None:
    dev = parse_set_args(["listen-port", "1234", "peer", K1, "allowed-ips", "10.0.0.0/8, fd00::/8",
                          "persistent-keepalive", "25", "peer", K2, "remove"])
    assert to_uapi(dev) == [
        "listen_port=1234", f"public_key={'01' * 32}", "persistent_keepalive_interval=25",
        "replace_allowed_ips=true", "allowed_ip=10.0.0.0/8", "allowed_ip=fd00::/8",
        f"public_key={'02' * 32}", "remove=true",
    ]
    for bad in (["remove"], ["peer"], ["endpoint", "1.2.3.4:5"], ["peer", K1, "bogus"]):
        with pytest.raises(ConfigError):
            parse_set_args(bad)


def test_set_allowed_ips_empty_clears() -> None:
    assert to_uapi(parse_set_args(["peer", K1, "allowed-ips", ""])) == [
        f"public_key={'01' * 32}", "replace_allowed_ips=true"]


def test_syncconf_removes_only_missing_peers() -> None:
    dev = parse_config(f"[Peer]\nPublicKey={K1}\n", "s.conf")
    runtime = DeviceInfo(peers=[PeerInfo(public_key=bytes([1] * 32)),
                                PeerInfo(public_key=bytes([2] * 32))])
    lines = to_uapi(sync_with(dev, runtime))
    assert "replace_peers=true" not in lines
    assert lines[3:] == [f"public_key={'02' * 32}", "remove=true", f"public_key={'01' * 32}",
                         "replace_allowed_ips=true"]


def test_format_config_round_trips() -> None:
    info = DeviceInfo(
        private_key=bytes([1] * 32), listen_port=51820, fwmark=0x20,
        peers=[PeerInfo(public_key=bytes([2] * 32), preshared_key=bytes([3] * 32),
                        endpoint="[fd00::2]:51820", allowed_ips=["10.0.0.0/24", "fd00::/64"],
                        persistent_keepalive_interval=25),
               PeerInfo(public_key=bytes([4] * 32))],
    )
    text = format_config(info)
    assert text.startswith(f"[Interface]\nListenPort = 51820\nFwMark = 0x20\nPrivateKey = {K1}\n\n")
    dev = parse_config(text, "rt.conf")
    assert dev.fwmark == 0x20 and dev.peers[0].endpoint == "[fd00::2]:51820"
    assert dev.peers[0].allowed_ips == ["10.0.0.0/24", "fd00::/64"]
    assert "PresharedKey" not in text.split("[Peer]")[2]


QUICK = f"""[Interface]
Address = 10.9.0.1/24, fd00:9::1/64
Address = 10.10.0.1
DNS = 10.9.0.53, fd00::53, example.com
MTU = 1380
Table = off
PostUp = echo up %i # with a comment
SaveConfig = true
PrivateKey = {K1}
  ListenPort = 51820

[Peer]
PublicKey = {K2}
AllowedIPs = 0.0.0.0/0
"""


def test_quick_config() -> None:
    qc = parse_quick_config(QUICK, Path("/x/wg9.conf"), "wg9")
    assert qc.addresses == ["10.9.0.1/24", "fd00:9::1/64", "10.10.0.1"]
    assert qc.dns == ["10.9.0.53", "fd00::53"] and qc.dns_search == ["example.com"]
    assert (qc.mtu, qc.table, qc.save_config) == (1380, "off", True)
    assert qc.post_up == ["echo up %i"]
    assert qc.device.listen_port == 51820
    # wg-quick keys count only in [Interface]: in [Peer], Address is a wg(8) error.
    with pytest.raises(ConfigError) as ei:
        parse_quick_config(QUICK + "Address = 1.2.3.4\n", Path("/x/wg9.conf"), "wg9")
    assert ei.value.lineno == 15


@pytest.mark.parametrize("line,reason", [
    ("SaveConfig = yes", "neither true nor false"),
    ("MTU = big", "MTU"),
    ("Address = 10.0.0.300/24", "Address"),
    ("Table = a b", "Table"),
])
def test_quick_config_errors(line: str, reason: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_quick_config(f"[Interface]\n{line}\n", Path("/x/wg9.conf"), "wg9")
    assert ei.value.lineno == 2 and reason in str(ei.value)
    assert str(ei.value).startswith("/x/wg9.conf:2: ")


def test_resolve_config_path(tmp_path: Path) -> None:
    (tmp_path / "wg5.conf").write_text("")
    assert resolve_config_path("wg5", tmp_path) == ((tmp_path / "wg5.conf").resolve(), "wg5")
    assert resolve_config_path(str(tmp_path / "wg5.conf"))[1] == "wg5"
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config_path("nope", tmp_path)
    (tmp_path / "bad name.conf").write_text("")
    with pytest.raises(ConfigError, match="valid interface name"):
        resolve_config_path(str(tmp_path / "bad name.conf"))


def test_route_order_is_wg_quicks() -> None:
    ips = ["10.0.0.0/24", "10.1.0.0/24", "0.0.0.0/0", "10.0.0.5/32", "fd00::/64", "::/0"]
    assert nc.sort_routes(ips) == ["fd00::/64", "10.0.0.5/32", "10.1.0.0/24", "10.0.0.0/24",
                                   "::/0", "0.0.0.0/0"]
    if shutil.which("sort"):
        p = subprocess.run(["sort", "-nr", "-k", "2", "-t", "/"], input="\n".join(ips) + "\n",
                           capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
        assert p.stdout.split() == nc.sort_routes(ips)


def test_netconf_builders() -> None:
    assert nc.address_add("wg0", "fd00::1/64").argv == (
        "ip", "-6", "address", "add", "fd00::1/64", "dev", "wg0")
    assert nc.route_add("wg0", "10.0.0.0/8", 1234).argv[-2:] == ("table", "1234")
    script = nc.nft_default_script("wg0", "-4", 51820, ["10.0.0.1"])
    assert 'add rule ip wg-quick-wg0 preraw iifname != "wg0" ip daddr 10.0.0.1 ' in script
    assert nc.nft_delete_script("wg0", "table inet filter\ntable ip wg-quick-wg0\n") == (
        "delete table ip wg-quick-wg0\n")
    saved = ("*raw\n-A PREROUTING -d 10.0.0.1 " + nc.iptables_marker("wg0") + "\nCOMMIT\n"
             "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n")
    out = nc.iptables_delete_script("wg0", saved)
    assert out is not None and "-D PREROUTING -d 10.0.0.1" in out and "INPUT" not in out
    assert nc.iptables_delete_script("wg1", saved) is None
    brief = "wg0              UNKNOWN        10.0.0.1/24 fd00::1/64 \n"
    assert nc.parse_brief_addresses("wg0", brief) == ["10.0.0.1/24", "fd00::1/64"]


STRIP_CASES = [
    QUICK,
    f"[Interface]\r\nAddress = 10.0.0.1/24\r\nPrivateKey = {K1}\r\n",
    f"  [Peer]  \n  PublicKey = {K2}  # c\n\tAllowedIPs = 1.1.1.1\n[INTERFACE]\nmtu = 1400\n"
    "ListenPort=1",
    f"[Peer]\nPublicKey = {K2}\nfoo\n",  # a bad line: we refuse, naming it
]


@pytest.mark.parametrize("text", STRIP_CASES)
def test_strip_matches_wg_quick(tmp_path: Path, text: str) -> None:
    if shutil.which("wg-quick") is None or os.geteuid() != 0:
        pytest.skip("needs wg-quick and root (it re-executes itself with sudo otherwise)")
    path = tmp_path / "wgs0.conf"
    path.write_text(text)
    path.chmod(0o600)
    theirs = subprocess.run(["wg-quick", "strip", str(path)], capture_output=True, timeout=30)
    ours = subprocess.run([*WGPY, "strip", str(path)], capture_output=True, timeout=30)
    if "foo" in text:  # we validate the wg(8) part too; wg-quick strip does not
        assert ours.returncode == 1 and b"wgs0.conf:3: Line unrecognized: `foo'" in ours.stderr
        return
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout
