"""setconf / addconf / syncconf / set: the same files and arguments given to wg and to
wgpy on a real wireguard-go device must be accepted or refused alike and leave the same
configuration; a refused file changes nothing."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pytest

from wgpy.control.keys import genkey, genpsk
from wgpy.testing.wgtools import Dev, same_unordered

PRIV = genkey(os.urandom).to_base64()
PUB = [genkey(os.urandom).public_key().to_base64() for _ in range(3)]
PSK = genpsk(os.urandom).to_base64()

GOOD = {
    "full": f"""[Interface]
PrivateKey = {PRIV}
ListenPort = 40002
FwMark = 0x1234

[Peer]
PublicKey = {PUB[0]}
PresharedKey = {PSK}
AllowedIPs = 10.1.0.0/16, fd00:1::/64
AllowedIPs = 10.2.0.7/32
Endpoint = [fd00::2]:51820
PersistentKeepalive = 25

[Peer]
PublicKey = {PUB[1]}
Endpoint = 192.168.5.1:1
""",
    "quirky": f"""  # comments, case and spaces everywhere, as wg allows
[INTERFACE]
private key = {PRIV}   # trailing comment
Fw Mark = 77
[peer]
public key = {PUB[2]}
allowed ips = 10.3.0.1/24
endpoint = localhost:51820
persistentkeepalive = off
""",
    "empty": "",
}

BAD = {
    "bad key": f"[Interface]\nPrivateKey = {PRIV[:-2]}=\n",
    "bad line": f"[Interface]\nPrivateKey = {PRIV}\nAddress = 10.0.0.1/24\n",
    "bad cidr": f"[Peer]\nPublicKey = {PUB[0]}\nAllowedIPs = 10.0.0.0/40\n",
    "no pubkey": "[Peer]\nAllowedIPs = 10.0.0.0/8\n",
    "bad endpoint": f"[Peer]\nPublicKey = {PUB[0]}\nEndpoint = 10.0.0.1\n",
    "bad keepalive": f"[Peer]\nPublicKey = {PUB[0]}\nPersistentKeepalive = -1\n",
    "bad fwmark": "[Interface]\nFwMark = 0x1ffffffff\n",
    "no section": "ListenPort = 5\n",
    "last line bad": f"[Peer]\nPublicKey = {PUB[0]}\nAllowedIPs = 10.9.0.0/16\nEndpoint = x\n",
}

BASE = f"""[Interface]
PrivateKey = {PRIV}
ListenPort = 40001

[Peer]
PublicKey = {PUB[0]}
AllowedIPs = 10.50.0.0/24
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / f"{name.replace(' ', '_')}.conf"
    path.write_text(text)
    return str(path)


def showconf(dev: Dev) -> str:
    rc, out, err = dev.wg("showconf", dev.name)
    assert rc == 0, err
    return out


@pytest.mark.parametrize("cmd", ["setconf", "addconf", "syncconf"])
def test_good_configs_same_result(dev: Dev, tmp_path: Path, cmd: str) -> None:
    base = write(tmp_path, "base", BASE)
    for name, text in GOOD.items():
        path = write(tmp_path, name, text)
        results = []
        for tool in (dev.wg, dev.wgpy):
            rc, _, err = tool("setconf", dev.name, base)
            assert rc == 0, err
            rc, _, err = tool(cmd, dev.name, path)
            assert rc == 0, (name, err)
            results.append(showconf(dev))
        if cmd != "addconf" and "ListenPort" not in text:  # reset to 0: a random port
            results = [re.sub(r"ListenPort = \d+\n", "", r) for r in results]
        assert same_unordered(results[0], results[1]), (cmd, name, results)


@pytest.mark.parametrize("cmd", ["setconf", "addconf", "syncconf"])
def test_bad_configs_refused_and_nothing_changes(dev: Dev, tmp_path: Path, cmd: str) -> None:
    rc, _, err = dev.wg("setconf", dev.name, write(tmp_path, "base", BASE))
    assert rc == 0, err
    before = showconf(dev)
    for name, text in BAD.items():
        path = write(tmp_path, name, text)
        wrc, _, _ = dev.wg(cmd, dev.name, path)
        rc, out, err = dev.wgpy(cmd, dev.name, path)
        assert wrc != 0 and rc != 0, name
        assert "Traceback" not in err
        line = text.rstrip("\n").count("\n") + 1 if name != "no pubkey" else 1
        assert f"{path}:{line}: " in err, (name, err)
        assert showconf(dev) == before, name


def test_missing_file_and_usage(dev: Dev, tmp_path: Path) -> None:
    rc, _, err = dev.wgpy("setconf", dev.name, str(tmp_path / "nope.conf"))
    assert rc == 1 and "nope.conf: No such file or directory" in err
    rc, _, err = dev.wgpy("setconf", dev.name)
    assert rc == 1 and "Usage:" in err
    rc, _, err = dev.wgpy("setconf", "wgnonexist0", write(tmp_path, "e", ""))
    assert rc == 1 and err == "Unable to modify interface: No such file or directory\n"


SET_CASES = [
    ["listen-port", "40003", "fwmark", "0x42", "private-key", "{priv}"],
    ["peer", PUB[0], "allowed-ips", "10.60.0.0/16,fd00:60::/48", "endpoint", "192.168.9.9:99",
     "persistent-keepalive", "15", "preshared-key", "{psk}"],
    ["peer", PUB[0], "allowed-ips", "10.61.0.0/16"],  # replaces, not appends
    ["peer", PUB[0], "allowed-ips", ""],
    ["peer", PUB[0], "remove", "peer", PUB[1], "endpoint", "[fd00::9]:9"],
    ["fwmark", "off", "peer", PUB[1], "persistent-keepalive", "off", "preshared-key", "/dev/null"],
]

SET_BAD = [
    ["peer", "nope"],
    ["peer", PUB[0], "allowed-ips", "10.0.0.0/8,x"],
    ["listen-port"],
    ["peer", PUB[0], "endpoint", "1.2.3.4"],
    ["remove"],
    ["private-key", "/nonexistent/key"],
    ["bogus", "1"],
]


def test_set_same_result(dev: Dev, tmp_path: Path) -> None:
    keyfile = write(tmp_path, "priv", PRIV + "\n")
    pskfile = write(tmp_path, "psk", PSK)
    base = write(tmp_path, "base", BASE)
    for case in SET_CASES:
        args = [a.format(priv=keyfile, psk=pskfile) for a in case]
        results = []
        for tool in (dev.wg, dev.wgpy):
            assert tool("setconf", dev.name, base)[0] == 0
            rc, _, err = tool("set", dev.name, *args)
            assert rc == 0, (args, err)
            results.append(showconf(dev))
        assert same_unordered(results[0], results[1]), (args, results)


def test_set_bad_arguments_change_nothing(dev: Dev, tmp_path: Path) -> None:
    assert dev.wg("setconf", dev.name, write(tmp_path, "base", BASE))[0] == 0
    before = showconf(dev)
    for case in SET_BAD:
        assert dev.wg("set", dev.name, *case)[0] != 0, case
        rc, _, err = dev.wgpy("set", dev.name, *case)
        assert rc == 1 and err.strip() and "Traceback" not in err, case
        assert showconf(dev) == before, case


def test_keyfile_trailing_garbage(dev: Dev, tmp_path: Path) -> None:
    bad = write(tmp_path, "bad", PRIV + " x\n")
    assert dev.wg("set", dev.name, "private-key", bad)[0] != 0
    rc, _, err = dev.wgpy("set", dev.name, "private-key", bad)
    assert rc == 1 and "trailing character" in err
    # And the key is never echoed.
    assert PRIV not in err
    assert base64.b64decode(PRIV)  # sanity: the fixture key itself is valid
