"""wgpyd's process contract, UAPI behaviour, wg-quick and the key log."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.nodes import connect, ping, start, two_hosts, uapi_exchange, wgpyd_argv

pytestmark = pytest.mark.netns

RUN = Path("/var/run/wireguard")


def test_socket_permissions_and_refusing_a_second_instance(lab: Lab) -> None:
    require("wg")
    ns = lab.netns("d")
    node = start(lab, ns, "wgpyd")
    sock = RUN / f"{node.ifname}.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(RUN.stat().st_mode) == 0o700
    assert "mtu 1420" in lab.run(ns, f"ip link show {node.ifname}").stdout
    p = lab.run(ns, [*wgpyd_argv(), "-f", node.ifname], check=False, timeout=20)
    assert p.returncode == 1
    assert "already" in p.stderr and node.ifname in p.stderr
    assert "Traceback" not in p.stderr
    # The first instance is unharmed.
    assert node.wg(f"show {node.ifname} public-key").stdout.strip() == node.public


@pytest.mark.parametrize("how", ["sigterm", "sigint", "socket-deleted", "link-deleted"])
def test_clean_exit_removes_interface_and_socket(lab: Lab, how: str) -> None:
    require("wg")
    ns = lab.netns("d")
    node = start(lab, ns, "wgpyd")
    proc = lab.procs[-1]
    sock = RUN / f"{node.ifname}.sock"
    if how == "sigterm":
        # ip netns exec runs wgpyd as a child of bash; signal the daemon itself.
        lab.run(ns, f"pkill -TERM -f 'wgpyd.* {node.ifname}$'")
    elif how == "sigint":
        lab.run(ns, f"pkill -INT -f 'wgpyd.* {node.ifname}$'")
    elif how == "socket-deleted":
        sock.unlink()
    else:
        lab.run(ns, f"ip link del {node.ifname}")
    proc.wait(timeout=10)
    assert not sock.exists()
    assert lab.run(ns, f"ip link show {node.ifname}", check=False).returncode != 0
    assert "Traceback" not in node.logtext()


def test_daemonizes_without_foreground(lab: Lab) -> None:
    require("wg")
    ns = lab.netns("d")
    ifname = lab.wg_name()
    t0 = time.monotonic()
    p = lab.run(ns, [*wgpyd_argv(), ifname], timeout=20)
    assert p.returncode == 0
    # The socket exists as soon as wgpyd returns (wg-quick relies on it).
    assert (RUN / f"{ifname}.sock").exists()
    assert time.monotonic() - t0 < 15
    pid = lab.run(None, f"pgrep -f 'wgpyd {ifname}$'").stdout.split()[0]
    lab.cleanups.append(lambda: None if subprocess.run(["kill", pid], check=False) else None)
    assert lab.run(ns, f"wg show {ifname}").returncode == 0
    (RUN / f"{ifname}.sock").unlink()
    lab.wait_for("daemon exit", lambda: not Path(f"/proc/{pid}").exists(), timeout=10)
    assert lab.run(ns, f"ip link show {ifname}", check=False).returncode != 0


def test_uapi_contract(lab: Lab) -> None:
    require("wg")
    ns = lab.netns("d")
    node = start(lab, ns, "wgpyd")
    ifn = node.ifname
    # Empty connections and garbage are survived.
    assert uapi_exchange(ifn, b"") == b""
    assert uapi_exchange(ifn, b"hello\n") == b""
    assert uapi_exchange(ifn, b"\x00\xff" * 100) == b""
    before = uapi_exchange(ifn, b"get=1\n\n")
    assert before.startswith(b"private_key=") and before.endswith(b"errno=0\n\n")
    # Several requests on one connection.
    two = uapi_exchange(ifn, b"get=1\n\nget=1\n\n")
    assert two == before + before
    # A bad line gets errno=-22 and changes nothing, even after good lines.
    peer = "a" * 64
    bad = (f"set=1\nlisten_port=40000\npublic_key={peer}\nallowed_ip=10.1.0.0/16\n"
           "persistent_keepalive_interval=notanumber\n\n").encode()
    assert uapi_exchange(ifn, bad) == b"errno=-22\n\n"
    assert uapi_exchange(ifn, b"get=1\n\n") == before
    for line in ("listen_port=70000", "private_key=zz", "bogus_key=1", "fwmark=-1",
                 f"public_key={peer}\nendpoint=nonsense",
                 f"public_key={peer}\nallowed_ip=1.2.3.4/33",
                 f"public_key={peer}\nprotocol_version=2", "replace_peers=false"):
        assert uapi_exchange(ifn, f"set=1\n{line}\n\n".encode()) == b"errno=-22\n\n", line
    assert uapi_exchange(ifn, b"get=1\n\n") == before
    # The same request without the bad line applies, in one piece.
    good = (f"set=1\nlisten_port=40000\npublic_key={peer}\nallowed_ip=10.1.0.0/16\n"
            "persistent_keepalive_interval=25\n\n").encode()
    assert uapi_exchange(ifn, good) == b"errno=0\n\n"
    after = uapi_exchange(ifn, b"get=1\n\n").decode()
    assert "listen_port=40000" in after and f"public_key={peer}" in after
    assert "allowed_ip=10.1.0.0/16" in after and "persistent_keepalive_interval=25" in after
    # The order of keys is wireguard-go's.
    keys = [line.split("=")[0] for line in after.splitlines() if line]
    assert keys == ["private_key", "listen_port", "public_key", "preshared_key",
                    "protocol_version", "last_handshake_time_sec", "last_handshake_time_nsec",
                    "tx_bytes", "rx_bytes", "persistent_keepalive_interval", "allowed_ip",
                    "errno"]
    # The real wg reads the errno of a failed set and says why.
    p = node.wg(f"set {ifn} peer {peer[:10]} allowed-ips 10.0.0.0/8", check=False)
    assert p.returncode != 0


def test_port_in_use_is_reported_and_changes_nothing(lab: Lab) -> None:
    require("wg")
    ns = lab.netns("d")
    node = start(lab, ns, "wgpyd", port=41000)
    holder = lab.popen(ns, "python3 -c 'import socket,time; s=socket.socket(socket.AF_INET,"
                       "socket.SOCK_DGRAM); s.bind((\"0.0.0.0\",41001)); time.sleep(60)'")
    lab.wait_for("port holder", lambda: "41001" in lab.run(ns, "ss -lun").stdout)
    assert uapi_exchange(node.ifname, b"set=1\nlisten_port=41001\nfwmark=5\n\n") == b"errno=-98\n\n"
    assert "listen_port=41000" in uapi_exchange(node.ifname, b"get=1\n\n").decode()
    assert "fwmark" not in uapi_exchange(node.ifname, b"get=1\n\n").decode()
    holder.kill()


def test_wg_quick_up_down_with_wgpyd(lab: Lab) -> None:
    require("wg", "wg-quick", "wireguard-go")
    a_ns, b_ns = two_hosts(lab)
    b = start(lab, b_ns, "wireguard-go", "10.99.0.2/24")
    ifname = lab.wg_name()
    key = lab.run(None, "wg genkey").stdout.strip()
    pub = lab.run(None, "wg pubkey", input=key.encode()).stdout.strip()
    conf = lab.workdir / f"{ifname}.conf"
    conf.write_text(
        f"[Interface]\nPrivateKey = {key}\nAddress = 10.99.0.1/24\nListenPort = 51820\n\n"
        f"[Peer]\nPublicKey = {b.public}\nAllowedIPs = 10.99.0.2/32\n"
        "Endpoint = 10.77.0.2:51820\n"
    )
    os.chmod(conf, 0o600)
    b.wg(f"set {b.ifname} peer {pub} allowed-ips 10.99.0.1/32")
    env = {"WG_QUICK_USERSPACE_IMPLEMENTATION": " ".join(wgpyd_argv()), "WG_SUDO": "1"}
    lab.cleanups.append(
        lambda: None if lab.run(a_ns, f"wg-quick down {conf}", check=False, env=env) else None)
    up = lab.run(a_ns, f"wg-quick up {conf}", env=env, timeout=30)
    assert "wgpyd" in up.stderr
    ping(lab, a_ns, "10.99.0.2")
    assert lab.run(a_ns, f"wg show {ifname} latest-handshakes").stdout.split()[1] != "0"
    lab.run(a_ns, f"wg-quick down {conf}", env=env, timeout=30)
    lab.wait_for("socket removal", lambda: not (RUN / f"{ifname}.sock").exists())
    assert lab.run(a_ns, f"ip link show {ifname}", check=False).returncode != 0


def test_verbose_log_has_events_and_no_secrets(lab: Lab) -> None:
    require("wg", "wireguard-go")
    a_ns, b_ns = two_hosts(lab)
    a = start(lab, a_ns, "wgpyd", "10.99.0.1/24")
    b = start(lab, b_ns, "wireguard-go", "10.99.0.2/24")
    connect(a, b, "10.99.0.1/32", "10.99.0.2/32", "10.77.0.1:51820", "10.77.0.2:51820")
    ping(lab, a.ns, "10.99.0.2", count=2)
    log = a.logtext()
    for event in ("Sending handshake initiation", "Received handshake response",
                  "Keypair", "created"):
        assert event in log, (event, log)
    import base64
    raw = base64.b64decode(a.private)
    for form in (a.private, raw.hex(), base64.b64encode(raw).decode()):
        assert form not in log


def test_keylog_lets_tshark_decrypt(lab: Lab) -> None:
    require("wg", "wireguard-go", "tshark")
    a_ns, b_ns = two_hosts(lab)
    keylog = lab.workdir / "keys.log"
    a = start(lab, a_ns, "wgpyd", "10.99.0.1/24", args=["--keylog", str(keylog)])
    b = start(lab, b_ns, "wireguard-go", "10.99.0.2/24")
    connect(a, b, "10.99.0.1/32", "10.99.0.2/32", "10.77.0.1:51820", "10.77.0.2:51820")
    pcap = lab.workdir / "cap.pcap"
    lab.popen(a_ns, f"tshark -i eth0 -f 'udp port 51820' -w {pcap}", log="tshark.log")
    lab.wait_for("capture start", lambda: pcap.exists() and pcap.stat().st_size > 0, timeout=20)
    ping(lab, a_ns, "10.99.0.2", count=3)
    time.sleep(1)
    lab.run(a_ns, "pkill -INT tshark", check=False)
    lab.wait_for("capture end", lambda: lab.procs[-1].poll() is not None, timeout=10)
    assert stat.S_IMODE(keylog.stat().st_mode) == 0o600
    text = keylog.read_text()
    for name in ("LOCAL_STATIC_PRIVATE_KEY", "REMOTE_STATIC_PUBLIC_KEY",
                 "LOCAL_EPHEMERAL_PRIVATE_KEY", "PRESHARED_KEY"):
        assert f"{name} = " in text
    out = lab.run(None, f"tshark -r {pcap} -o wg.keylog_file:{keylog} -Y icmp", timeout=60).stdout
    assert out.count("Echo (ping) request") >= 3 and out.count("Echo (ping) reply") >= 3, out
    # Without the key log the same capture shows no ICMP.
    plain = lab.run(None, f"tshark -r {pcap} -Y icmp", timeout=60).stdout
    assert "Echo" not in plain
