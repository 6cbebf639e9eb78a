"""Local safety: no secret reaches the log, and shutdown under load is clean.

(Key-log and UAPI socket permissions, and refusing a second instance, are in
tests/integration/test_daemon.py.)
"""

from __future__ import annotations

import base64
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.nodes import WgNode, connect, genkey, ping, pubkey, start, two_hosts

pytestmark = pytest.mark.netns

HERE = Path(__file__).parent
RUN = Path("/var/run/wireguard")


def secret_forms(b64: str) -> list[str]:
    raw = base64.b64decode(b64)
    return [b64, b64.rstrip("="), raw.hex(), raw.hex().upper(), repr(raw)[2:-1]]


def leaks(log: str, secrets: dict[str, str]) -> list[str]:
    """Names of secrets found in ``log``, whole or as a 12-character piece."""
    found = []
    low = log.lower()
    for name, b64 in secrets.items():
        for form in secret_forms(b64):
            pieces = {form} | {form[i:i + 12] for i in range(0, len(form) - 12, 6)}
            if any(p and (p in log or p.lower() in low) for p in pieces
                   if len(p) >= 12 and not re.fullmatch(r"[A-Za-z]+", p)):
                found.append(f"{name} ({form[:6]}...)")
                break
    return found


def uapi_raw(ifname: str, payload: bytes) -> bytes:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(RUN / f"{ifname}.sock"))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        return s.recv(65536)


@pytest.mark.parametrize("level", ["verbose", "error"])
def test_no_secret_in_the_log_during_a_full_session(lab: Lab, level: str) -> None:
    require("wg", "wireguard-go", "ping")
    a_ns, b_ns = two_hosts(lab)
    a = start(lab, a_ns, "wgpyd", "10.99.0.1/24", "fd00:99::1/64",
              extra_env={"LOG_LEVEL": level})
    b = start(lab, b_ns, "wireguard-go", "10.99.0.2/24", "fd00:99::2/64")
    psk_text = lab.run(None, "wg genpsk").stdout.strip()
    psk = lab.workdir / "psk"
    psk.write_text(psk_text + "\n")
    os.chmod(psk, 0o600)
    connect(a, b, "10.99.0.1/32,fd00:99::1/128", "10.99.0.2/32,fd00:99::2/128",
            "10.77.0.1:51820", "10.77.0.2:51820", psk=psk)
    pid = lab.procs[0].pid
    # Handshake and data both ways, v4 and v6; a passive keepalive.
    ping(lab, a_ns, "10.99.0.2", count=2)
    ping(lab, b_ns, "fd00:99::1", count=2)
    # Errors: a set that fails after secret-bearing lines; garbage on the socket;
    # a set naming a secret as a public key.
    priv_hex = base64.b64decode(a.private).hex()
    psk_hex = base64.b64decode(psk_text).hex()
    bad = (f"set=1\nprivate_key={priv_hex}\npublic_key={base64.b64decode(b.public).hex()}\n"
           f"preshared_key={psk_hex}\npersistent_keepalive_interval=x\n\n").encode()
    assert uapi_raw(a.ifname, bad) == b"errno=-22\n\n"
    uapi_raw(a.ifname, f"set=1\nprivate_key={priv_hex[:-1]}\n\n".encode())
    uapi_raw(a.ifname, f"set=1\npreshared_key={psk_hex}\n\n".encode())
    uapi_raw(a.ifname, b"\x00garbage\n")
    # Junk from outside (drops are logged at verbose).
    lab.run(b_ns, [sys.executable, "-c",
                   "import socket,os\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                   "for i in range(30): s.sendto(b'\\x01\\0\\0\\0'+os.urandom(144),"
                   "('10.77.0.1',51820))"])
    # A new private key (sessions restart) and the peer re-keyed to match.
    new_key = genkey()
    keyfile = lab.workdir / "newkey"
    keyfile.write_text(new_key + "\n")
    os.chmod(keyfile, 0o600)
    a.wg(f"set {a.ifname} private-key {keyfile}")
    b.wg(f"set {b.ifname} peer {pubkey(new_key)} allowed-ips 10.99.0.1/32,fd00:99::1/128 "
         f"preshared-key {psk} peer {a.public} remove")
    ping(lab, a_ns, "10.99.0.2", count=1)
    os.kill(pid, signal.SIGUSR1)
    # wg show (which prints secrets to its caller) must not echo them into the log.
    a.wg(f"showconf {a.ifname}")
    lab.run(a_ns, f"pkill -TERM -f 'wgpyd.* {a.ifname}$'")
    lab.procs[0].wait(timeout=10)
    log = a.logtext()
    if level == "verbose":
        for event in ("Received handshake", "Keypair", "Dropped packet", "stats"):
            assert event in log, event
    assert "UAPI set" in log  # the errors were logged
    found = leaks(log, {"private key": a.private, "new private key": new_key,
                        "preshared key": psk_text, "peer's private key": b.private})
    assert not found, found


def test_clean_shutdown_under_load(lab: Lab) -> None:
    """SIGTERM while a UDP stream and a handshake flood hit wgpyd: exit 0 within
    seconds, no traceback, the interface and the socket gone."""
    require("wg", "wireguard-go", "iperf3", "ping")
    a_ns, b_ns = two_hosts(lab)
    lab.run(b_ns, "ip route add local 10.88.0.0/16 dev lo")
    lab.run(a_ns, "ip route add 10.88.0.0/16 via 10.77.0.2")
    a = start(lab, a_ns, "wgpyd", "10.99.0.1/24", extra_env={"LOG_LEVEL": "error"})
    proc = lab.procs[-1]
    b = start(lab, b_ns, "wireguard-go", "10.99.0.2/24")
    connect(a, b, "10.99.0.1/32", "10.99.0.2/32", "10.77.0.1:51820", "10.77.0.2:51820")
    ping(lab, b_ns, "10.99.0.1", count=1)
    lab.popen(a_ns, "iperf3 -s -1 -B 10.99.0.1", log="iperf-s.log")
    lab.wait_for("iperf3 server", lambda: "LISTEN" in lab.run(
        a_ns, "ss -ltn 'sport = :5201'", check=False).stdout)
    stream = lab.popen(b_ns, "iperf3 -c 10.99.0.1 -u -b 200M -t 5", log="iperf-c.log")
    pub_hex = base64.b64decode(a.public).hex()
    flood = lab.popen(b_ns, [sys.executable, "-m", "wgpy.testing.flood", "--target",
                             "10.77.0.1:51820", "--pub", pub_hex, "--rate", "3000",
                             "--duration", "5", "--spoof", "10.88.0.0/22"], log="flood.log")
    time.sleep(2.5)
    assert proc.poll() is None
    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)
    took = time.monotonic() - t0
    assert proc.returncode == 0, (proc.returncode, _tail(a))
    assert took < 5, took
    assert "Traceback" not in a.logtext(), _tail(a)
    assert not (RUN / f"{a.ifname}.sock").exists()
    assert lab.run(a_ns, f"ip link show {a.ifname}", check=False).returncode != 0
    for p in (stream, flood):  # bounded by their own -t/--duration; the lab reaps them
        assert p.poll() is None or p.returncode is not None


def _tail(node: WgNode) -> str:
    return node.logtext()[-2000:]


def test_the_leak_detector_finds_whole_and_partial_secrets() -> None:
    key = "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE="
    raw_hex = base64.b64decode(key).hex()
    assert leaks(f"x {key} y", {"k": key}) == ["k (YWFhYW...)"]
    assert leaks(f"value {raw_hex[10:30]}", {"k": key})
    assert not leaks("DEBUG: (wg0) Keypair 1234 created (initiator)", {"k": key})
