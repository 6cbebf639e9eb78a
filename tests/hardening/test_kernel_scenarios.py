"""The kernel's netns.sh scenarios that apply to a userspace device, ported (not copied).

Already covered by tests/integration/test_interop.py and not repeated here:
ping v4/v6 both ways, iperf3 TCP over IPv4, roaming, the spoofed inner
source, PSKs, keepalive through a NAT with a 2 s conntrack timeout.

Not applicable to a userspace device: routing-loop and dst_cache reference
tests, sk_bound_dev_if, /dev/kmsg object accounting (replaced by fd and
table counts), and padding to a *route* MTU below the interface MTU (a TUN
reader cannot see route MTUs; wireguard-go's own netns.sh drops that test
too).  Padding is checked against the interface MTU instead.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Sequence

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.nodes import WgNode, connect, genkey, ping, pubkey, start, two_hosts

pytestmark = pytest.mark.netns

A_IN, B_IN = "10.99.0.1", "10.99.0.2"
LOW_ORDER = [
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    "4Ot6fDtBuK4WVuP68Z/EatoJjeucMrH9hmIFFl9JuAA=",
    "X5yVvKNQjCSx0LFVnIPvWwREXMRYHI6G2CJO3dCfEVc=",
    "7P///////////////////////////////////////38=",
    "7f///////////////////////////////////////38=",
    "7v///////////////////////////////////////38=",
]


def pair_up(lab: Lab, impl_b: str, v6_outer: bool = False,
            b_allowed: str = f"{B_IN}/32,fd00:99::2/128") -> tuple[WgNode, WgNode]:
    a_ns, b_ns = two_hosts(lab)
    a = start(lab, a_ns, "wgpyd", f"{A_IN}/24", "fd00:99::1/64")
    b = start(lab, b_ns, impl_b, f"{B_IN}/24", "fd00:99::2/64")
    if v6_outer:
        eps = ("[fd00:77::1]:51820", "[fd00:77::2]:51820")
    else:
        eps = ("10.77.0.1:51820", "10.77.0.2:51820")
    connect(a, b, f"{A_IN}/32,fd00:99::1/128", b_allowed, *eps)
    return a, b


def transfer(node: WgNode) -> tuple[int, int]:
    rx, tx = node.show("transfer").split()[1:3]
    return int(rx), int(tx)


def stats(lab: Lab, node: WgNode, pid: int) -> dict[str, int]:
    n = lab.log(node.log).count(" stats ")
    os.kill(pid, signal.SIGUSR1)
    lab.wait_for("stats line", lambda: lab.log(node.log).count(" stats ") > n, timeout=10)
    line = [x for x in lab.log(node.log).splitlines() if " stats " in x][-1]
    return {k: int(v) for k, v in re.findall(r"([\w.]+)=(\d+)", line)}


@pytest.mark.parametrize("impl_b", ["wgpyd", "wireguard-go"])
def test_exact_byte_accounting(lab: Lab, impl_b: str) -> None:
    """netns.sh: 10 flood pings from the initiator; every byte on the wire is counted.
    Initiator tx = 148 (initiation) + 10 x 128 (84-byte echo padded to 96, + 32),
    optionally + 32 (a keepalive); rx = 92 (response) + 10 x 128."""
    require("wg", "wireguard-go", "ping")
    a, b = pair_up(lab, impl_b)
    lab.run(a.ns, f"ping -c 10 -f -W 1 {B_IN}", timeout=30)
    a_rx, a_tx = transfer(a)
    assert a_rx == 1372 and a_tx in (1428, 1460), (a_rx, a_tx)
    b_rx, b_tx = transfer(b)
    assert b_tx == 1372 and b_rx in (1428, 1460), (b_rx, b_tx)


def test_ipv6_outer_transport_iperf3_both_ways(lab: Lab) -> None:
    """netns.sh's "IPv6 as outer transport" round: TCP over inner IPv6 into wgpyd, UDP
    over inner IPv4 out of it, all over an IPv6 underlay."""
    require("wg", "wireguard-go", "iperf3", "ping")
    a, b = pair_up(lab, "wireguard-go", v6_outer=True)
    ping(lab, a.ns, "fd00:99::2", count=2)
    assert "[fd00:77::1]:51820" in b.show("endpoints")
    lab.popen(a.ns, "iperf3 -s -1 -B fd00:99::1", log="iperf-s6.log")
    lab.wait_for("iperf3 server", lambda: "LISTEN" in lab.run(
        a.ns, "ss -ltn 'sport = :5201'", check=False).stdout)
    tcp = json.loads(lab.run(b.ns, "iperf3 -Z -t 2 -J -c fd00:99::1", timeout=60).stdout)
    assert tcp["end"]["sum_received"]["bytes"] > 1_000_000
    lab.popen(b.ns, f"iperf3 -s -1 -B {B_IN}", log="iperf-s4.log")
    lab.wait_for("iperf3 server", lambda: "LISTEN" in lab.run(
        b.ns, "ss -ltn 'sport = :5201'", check=False).stdout)
    udp = json.loads(lab.run(a.ns, f"iperf3 -Z -t 2 -u -b 40M -J -c {B_IN}",
                             timeout=60).stdout)
    summ = udp["end"]["sum"]
    assert summ["bytes"] > 1_000_000 and summ["lost_percent"] < 50, summ


def test_big_mtu(lab: Lab) -> None:
    """netns.sh raises both MTUs to 34816 - 1500 + 1420; 30 KB pings must pass."""
    require("wg", "wireguard-go", "ping")
    a, b = pair_up(lab, "wireguard-go")
    big = 34816 - 1500 + 1420
    for node in (a, b):
        lab.run(node.ns, f"ip link set {node.ifname} mtu {big}")
    lab.run(a.ns, f"ping -c 2 -W 2 -M do -s 30000 {B_IN}", timeout=20)
    lab.run(b.ns, f"ping -c 2 -W 2 -s 30000 {A_IN}", timeout=20)


def test_padding_never_passes_the_mtu(lab: Lab) -> None:
    """MTU 1300 on both sides; anything longer than 1300 + 32 + 28 on the wire is
    dropped by iptables.  Inner packets of exactly the MTU pass with DF, one byte
    more fails, and a 1297-byte packet (which would pad to 1312) is padded only
    to 1300.  IPv6 the same."""
    require("wg", "wireguard-go", "iptables", "ping")
    a, b = pair_up(lab, "wireguard-go")
    for node in (a, b):
        lab.run(node.ns, f"ip link set {node.ifname} mtu 1300")
        lab.run(node.ns, "iptables -A INPUT -p udp -m length --length 1361:65535 -j DROP;"
                         "ip6tables -A INPUT -p udp -m length --length 1361:65535 -j DROP")
    time.sleep(1.5)  # wgpyd polls its TUN's MTU once a second (io/driver.py)
    lab.run(a.ns, f"ping -c 1 -W 2 -M do -s 1272 {B_IN}", timeout=10)  # 1300 bytes
    lab.run(a.ns, f"ping -c 1 -W 2 -M do -s 1269 {B_IN}", timeout=10)  # 1297 -> pad 1300
    lab.run(b.ns, f"ping -c 1 -W 2 -M do -s 1269 {A_IN}", timeout=10)  # wgpyd pads replies
    p = lab.run(a.ns, f"ping -c 1 -W 2 -M do -s 1273 {B_IN}", check=False, timeout=10)
    assert p.returncode != 0
    lab.run(a.ns, "ping -c 1 -W 2 -M do -s 1252 fd00:99::2", timeout=10)  # 1300 bytes
    p = lab.run(a.ns, "ping -c 1 -W 2 -M do -s 1253 fd00:99::2", check=False, timeout=10)
    assert p.returncode != 0
    # A route MTU below the link MTU is honoured by the kernel before wgpyd sees it.
    lab.run(a.ns, f"ip route add {B_IN}/32 dev {a.ifname} mtu 1299")
    lab.run(a.ns, f"ping -c 1 -W 2 -M do -s 1271 {B_IN}", timeout=10)
    p = lab.run(a.ns, f"ping -c 1 -W 2 -M do -s 1272 {B_IN}", check=False, timeout=10)
    assert p.returncode != 0
    for node in (a, b):
        out = lab.run(node.ns, "iptables -nvxL INPUT").stdout
        assert int(out.splitlines()[2].split()[0]) == 0, out  # nothing was over the limit


def test_allowed_ip_moved_to_a_more_specific_peer(lab: Lab) -> None:
    """netns.sh's crypto-RP filter: b may send from 10.99.0.2 while b owns
    10.99.0.0/24 on a; once another peer owns 10.99.0.2/32, b's packets from it
    are dropped; when that peer goes, they flow again."""
    require("wg", "wireguard-go", "ping")
    a, b = pair_up(lab, "wireguard-go", b_allowed="10.99.0.0/24")
    ping(lab, b.ns, A_IN, count=1)
    other = pubkey(genkey())
    a.wg(f"set {a.ifname} peer {other} allowed-ips {B_IN}/32")
    assert not ping(lab, b.ns, A_IN, count=2, check=False)
    assert "inner source not in the peer's allowed IPs" in a.logtext()
    a.wg(f"set {a.ifname} peer {other} remove")
    a.wg(f"set {a.ifname} peer {b.public} allowed-ips 10.99.0.0/24")
    ping(lab, b.ns, A_IN, count=1)
    assert "10.77.0.2:51820" in a.show("endpoints")


@pytest.mark.parametrize("impl_b", ["wgpyd", "wireguard-go"])
def test_change_private_key_mid_session(lab: Lab, impl_b: str) -> None:
    """netns.sh: a takes a new private key; b swaps a's old public key for the new
    one; a's next packet handshakes at once and gets through."""
    require("wg", "wireguard-go", "ping")
    a, b = pair_up(lab, impl_b)
    ping(lab, a.ns, B_IN, count=1)
    key3 = genkey()
    keyfile = lab.workdir / "key3"
    keyfile.write_text(key3 + "\n")
    os.chmod(keyfile, 0o600)
    a.wg(f"set {a.ifname} private-key {keyfile}")
    assert a.show("public-key").strip() == pubkey(key3)
    b.wg(f"set {b.ifname} peer {pubkey(key3)} allowed-ips {A_IN}/32 peer {a.public} remove")
    lab.run(a.ns, f"ping -c 1 -W 3 {B_IN}", timeout=10)
    assert b.show("peers").split() == [pubkey(key3)]


def test_low_order_public_keys_send_nothing(lab: Lab) -> None:
    """netns.sh: peers whose public keys are low-order points, with keepalive 1 and an
    endpoint, must never send a packet there."""
    require("wg")
    a_ns, b_ns = two_hosts(lab)
    a = start(lab, a_ns, "wgpyd", f"{A_IN}/24")
    listener = lab.popen(b_ns, [sys.executable, "-c", (
        "import socket,time,sys\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('10.77.0.2',1111))\n"
        "s.settimeout(0.2); n=0; end=time.monotonic()+3.5\n"
        "print('ready',flush=True)\n"
        "while time.monotonic()<end:\n"
        "    try: s.recv(2048); n+=1\n"
        "    except TimeoutError: pass\n"
        "print('received',n,flush=True)\n")], log="lowo.log")
    lab.wait_for("listener", lambda: "ready" in lab.log("lowo.log"))
    for i, point in enumerate(LOW_ORDER):
        a.wg(f"set {a.ifname} peer {point} persistent-keepalive 1 endpoint 10.77.0.2:1111"
             f" allowed-ips 10.98.{i}.0/24")
    assert len(a.show("peers").split()) == len(LOW_ORDER)
    lab.run(a_ns, f"ip route add 10.98.0.0/16 dev {a.ifname}")
    # Data for each of them, too.
    lab.run(a_ns, " ".join(f"ping -c 1 -W 1 10.98.{i}.1 &" for i in range(len(LOW_ORDER)))
            + " wait", check=False)
    listener.wait(timeout=10)
    assert "received 0" in lab.log("lowo.log"), lab.log("lowo.log")
    assert "Traceback" not in a.logtext()


def test_fwmark_marks_the_udp_sockets_and_routes_like_wg_quick(lab: Lab) -> None:
    """fwmark: SO_MARK is set on both UDP sockets (ss shows it), survives a listen-port
    change, and makes wg-quick's policy routing work: every outer packet leaves by
    the main table while everything else (0.0.0.0/0) goes into the tunnel."""
    require("wg", "wireguard-go", "ping", "ss")
    a_ns, b_ns = two_hosts(lab)
    a = start(lab, a_ns, "wgpyd", f"{A_IN}/24")
    b = start(lab, b_ns, "wireguard-go", f"{B_IN}/24")
    lab.run(b_ns, "ip addr add 10.76.0.2/32 dev eth0")  # b's endpoint: off-link for a
    lab.run(a_ns, "ip route add default via 10.77.0.2; sysctl -qw net.ipv4.conf.all.rp_filter=0")
    connect(a, b, f"{A_IN}/32", "0.0.0.0/0", None, "10.76.0.2:51820")
    a.wg(f"set {a.ifname} fwmark 51820")
    marks = lab.run(a_ns, "ss -u -a -n -e").stdout
    assert marks.count("fwmark:0xca6c") == 2, marks  # IPv4 and IPv6 sockets
    a.wg(f"set {a.ifname} listen-port 51821")
    marks = lab.run(a_ns, "ss -u -a -n -e").stdout
    assert marks.count("fwmark:0xca6c") == 2 and ":51821" in marks, marks
    lab.run(a_ns, f"ip -4 route add default dev {a.ifname} table 51820;"
                  "ip -4 rule add not fwmark 51820 table 51820;"
                  "ip -4 rule add table main suppress_prefixlength 0")
    ping(lab, a_ns, B_IN, count=2)
    # Without the mark the outer packets would be routed into the tunnel itself.
    a.wg(f"set {a.ifname} fwmark 0")
    assert "fwmark" not in lab.run(a_ns, "ss -u -a -n -e").stdout
    assert not ping(lab, a_ns, B_IN, count=2, check=False)
    a.wg(f"set {a.ifname} fwmark 51820")
    ping(lab, a_ns, B_IN, count=2)


def _conf(private: str, peers: Sequence[tuple[str, list[str], str | None]]) -> str:
    lines = ["[Interface]", f"PrivateKey = {private}"]
    for pub, ips, ep in peers:
        lines += ["[Peer]", f"PublicKey = {pub}"]
        if ep:
            lines.append(f"Endpoint = {ep}")
        lines += [f"AllowedIPs = {ip}" for ip in ips]
    return "\n".join(lines) + "\n"


def test_many_peers_and_allowed_ips(lab: Lab) -> None:
    """netns.sh: 40 peers with 52 allowed IPs each, and 130,560 allowed IPs on one peer
    (255 x 256 IPv4 /16s and as many IPv6 /128s), loaded with wg setconf, read back
    and used for routing."""
    require("wg")
    a_ns, b_ns = two_hosts(lab)
    a = start(lab, a_ns, "wgpyd", f"{A_IN}/24")
    keys = [pubkey(genkey()) for _ in range(40)]
    conf = lab.workdir / "forty.conf"
    conf.write_text(_conf(a.private, [(k, [f"{i + 1}.{j}.0.0/16" for j in range(1, 53)], None)
                                      for i, k in enumerate(keys)]))
    a.wg(f"setconf {a.ifname} {conf}")
    lines = a.show("allowed-ips").splitlines()
    assert len(lines) == 40 and all(len(x.split()) == 53 for x in lines)

    big_peer, small_peer = keys[0], keys[1]
    ips = [f"{x}.{y}.0.0/16" for x in range(1, 256) for y in range(256)]
    ips += [f"{x:x}::{y:x}/128" for x in range(1, 256) for y in range(256)]
    conf.write_text(_conf(a.private, [(big_peer, ips, "10.77.0.2:1111"),
                                      (small_peer, ["10.99.0.0/24"], "10.77.0.2:2222")]))
    t0 = time.monotonic()
    lab.run(a_ns, f"wg setconf {a.ifname} {conf}", timeout=120)
    loaded = time.monotonic() - t0
    out = a.show("allowed-ips").splitlines()
    by_peer = {x.split()[0]: x.split()[1:] for x in out}
    assert len(by_peer[big_peer]) == 255 * 256 * 2, loaded
    assert by_peer[small_peer] == ["10.99.0.0/24"]
    # Lookups: a packet to 17.5.1.1 goes to the big peer (an initiation to port
    # 1111), one to 10.99.0.77 to the other (port 2222).
    listener = lab.popen(b_ns, [sys.executable, "-c", (
        "import socket,select,time\n"
        "s1=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s1.bind(('10.77.0.2',1111))\n"
        "s2=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s2.bind(('10.77.0.2',2222))\n"
        "print('ready',flush=True); got={1111:0,2222:0}; end=time.monotonic()+6\n"
        "while time.monotonic()<end:\n"
        "    r,_,_=select.select([s1,s2],[],[],0.2)\n"
        "    for s in r:\n"
        "        d=s.recv(2048); got[s.getsockname()[1]]+= (len(d)==148)\n"
        "    if all(got.values()): break\n"
        "print('got',got[1111],got[2222],flush=True)\n")], log="lookup.log")
    lab.wait_for("listener", lambda: "ready" in lab.log("lookup.log"))
    lab.run(a_ns, f"ip route add 17.0.0.0/8 dev {a.ifname}")
    lab.run(a_ns, "ping -c 1 -W 1 17.5.1.1; ping -c 1 -W 1 10.99.0.77", check=False)
    listener.wait(timeout=15)
    m = re.search(r"got (\d+) (\d+)", lab.log("lookup.log"))
    assert m and int(m.group(1)) >= 1 and int(m.group(2)) >= 1, lab.log("lookup.log")
    print(f"130560 allowed IPs loaded by wg setconf in {loaded:.1f}s")


def test_no_leaked_fds_or_state_after_peer_churn(lab: Lab) -> None:
    """Add and remove 40 peers ten times (each handshaking towards a dead endpoint),
    change the listen port, open UAPI connections: the daemon's fds, peers and
    session indices return to where they started."""
    require("wg")
    ns = lab.netns("churn")
    # Dead endpoints on lo: every initiation draws an ICMP port unreachable.
    lab.run(ns, "ip addr add 10.75.0.1/24 dev lo")
    a = start(lab, ns, "wgpyd", f"{A_IN}/24", extra_env={"LOG_LEVEL": "error"})
    pid = lab.procs[-1].pid
    base = stats(lab, a, pid)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    conf = lab.workdir / "churn.conf"
    empty = lab.workdir / "empty.conf"
    empty.write_text(_conf(a.private, []) + "ListenPort = 51820\n")
    keys = [pubkey(genkey()) for _ in range(40)]
    for round_ in range(10):
        peers = [(k, [f"10.{100 + i}.{round_}.0/24"], f"10.75.0.{i + 2}:9")
                 for i, k in enumerate(keys)]
        conf.write_text(_conf(a.private, peers).replace(
            "[Peer]", "[Peer]\nPersistentKeepalive = 1"))
        a.wg(f"setconf {a.ifname} {conf}")
        lab.run(ns, f"ping -c 1 -W 0.2 10.{100 + round_}.{round_}.1", check=False)
        mid = stats(lab, a, pid)
        assert mid["peers"] == 40 and mid["indices"] >= 1
        a.wg(f"setconf {a.ifname} {empty}")
        if round_ % 3 == 0:
            a.wg(f"set {a.ifname} listen-port {40000 + round_}")
    for _ in range(30):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(f"/var/run/wireguard/{a.ifname}.sock")
    after = stats(lab, a, pid)
    assert after["peers"] == 0 and after["indices"] == 0, after
    assert after["indices"] == base["indices"]
    lab.wait_for("fds back to the baseline",
                 lambda: len(os.listdir(f"/proc/{pid}/fd")) == fds, timeout=5)
    assert "Traceback" not in a.logtext()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_low_order_list_is_the_kernels() -> None:
    """The seven points above decode to 32 bytes each (a typo would test nothing)."""
    assert all(len(base64.b64decode(p)) == 32 for p in LOW_ORDER)
    assert len(set(LOW_ORDER)) == 7
    assert _b64(bytes(32)) == LOW_ORDER[0]
