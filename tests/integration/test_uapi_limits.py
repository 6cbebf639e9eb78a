"""A real wgpyd's UAPI socket: a request over the byte bound, and bad lines that
carry keys (the reply is an errno, the log names the line, no secret anywhere)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from wgpy.io.uapi_server import MAX_REQUEST_BYTES
from wgpy.testing.lab import Lab, require
from wgpy.testing.nodes import start, uapi_exchange

pytestmark = pytest.mark.netns

RUN = Path("/var/run/wireguard")


def test_a_set_over_the_byte_bound_is_refused_whole(lab: Lab) -> None:
    require("wg")
    ns = lab.netns("big")
    node = start(lab, ns, "wgpyd", extra_env={"LOG_LEVEL": "error"})
    peer = "c" * 64
    line = b"allowed_ip=10.1.2.3/32\n"
    body = b"public_key=" + peer.encode() + b"\n" + line * (MAX_REQUEST_BYTES // len(line))
    assert uapi_exchange(node.ifname, b"set=1\n" + body + b"\n", timeout=20) == b"errno=-22\n\n"
    assert peer not in uapi_exchange(node.ifname, b"get=1\n\n").decode()  # nothing applied
    # Under the bound, the same kind of request is applied.
    small = b"public_key=" + peer.encode() + b"\n" + line
    assert uapi_exchange(node.ifname, b"set=1\n" + small + b"\n") == b"errno=0\n\n"
    assert node.wg(f"show {node.ifname} allowed-ips").stdout.split()[1] == "10.1.2.3/32"
    assert "Traceback" not in node.logtext()


def test_wg_setconf_over_the_bound_reads_the_refusal(lab: Lab) -> None:
    """The real wg writes its whole request before it reads the answer: the
    daemon drains the rest, so wg says why instead of dying of a broken pipe."""
    require("wg")
    ns = lab.netns("big")
    node = start(lab, ns, "wgpyd", extra_env={"LOG_LEVEL": "error"})
    n = MAX_REQUEST_BYTES // len("allowed_ip=10.255.255.255/32\n") + 200_000
    ips = (f"AllowedIPs = 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32\n" for i in range(n))
    conf = lab.workdir / "big.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {node.private}\n[Peer]\n"
                    f"PublicKey = {node.public[:-2]}A=\n" + "".join(ips))
    p = node.wg(f"setconf {node.ifname} {conf}", check=False)
    assert p.returncode == 1 and "Invalid argument" in p.stderr, (p.returncode, p.stderr)
    assert node.wg(f"show {node.ifname} peers").stdout == ""  # nothing applied


def test_bad_lines_with_keys_are_refused_and_never_logged(lab: Lab) -> None:
    require("wg")
    ns = lab.netns("sec")
    node = start(lab, ns, "wgpyd")  # LOG_LEVEL=verbose
    secret = os.urandom(32)
    b64, hexed = base64.b64encode(secret).decode(), secret.hex()
    peer = "d" * 64
    cases = [
        (hexed, -71),  # a bare key: no '='
        (f"{hexed}={hexed}", -22),  # a key where a key name should be
        (f"private_key={hexed[:-1]}", -22),  # one digit short
        (f"private_key = {b64}", -22),  # a wg-quick line on the socket
        (f"PrivateKey={b64}", -22),
        (f"private_key={b64}", -22),  # base64 where hex belongs
        (f"listen_port={hexed}", -22),
        (f"public_key={peer}\npreshared_key {b64}", -22),  # split at its padding "="
        (f"public_key={peer}\npreshared_key {hexed}", -71),
        (f"public_key={peer}\npreshared_key={hexed}x", -22),
        (f"public_key={peer}\nendpoint={b64}", -22),
        (f"public_key={peer}\n{b64}:51820", -22),
    ]
    for lines, code in cases:
        reply = uapi_exchange(node.ifname, f"set=1\n{lines}\n\n".encode())
        assert reply == f"errno={code}\n\n".encode(), (lines, reply)
    log = node.logtext()
    assert log.count("UAPI set: line") == len(cases), log
    for form in (b64, b64[:43], hexed):
        pieces = [form[i:i + 12] for i in range(len(form) - 11)]
        assert not [p for p in pieces if p in log], f"a piece of the key is in the log:\n{log}"
    assert "Traceback" not in log
