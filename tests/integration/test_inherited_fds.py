"""wgpyd on a TUN and a UAPI socket a launcher opened (WG_TUN_FD, WG_UAPI_FD,
WG_PROCESS_FOREGROUND), as wireguard-go takes them.

The launcher (wgpy.testing.launcher) shares no code with wgpyd: it creates
the TUN and binds the socket itself, moves them to fds 7 and 9, prints their
interface index and socket inode, and execs wgpyd, which keeps its pid.  The
tests configure the device with the real ``wg``, ping a wireguard-go peer
through it, and show from /proc that the TUN and socket wgpyd serves are the
launcher's, not ones it made.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.nodes import WgNode, connect, genkey, ping, pubkey, start, two_hosts, wgpyd_argv

pytestmark = pytest.mark.netns

RUN = Path("/var/run/wireguard")
LAUNCHER = [sys.executable, "-m", "wgpy.testing.launcher"]


def open_fds(pid: int) -> dict[int, str]:
    fd_dir = Path(f"/proc/{pid}/fd")
    out = {}
    for n in os.listdir(fd_dir):
        try:
            out[int(n)] = os.readlink(fd_dir / n)
        except FileNotFoundError:
            continue
    return out


def listening_unix_sockets(lab: Lab, ns: str) -> dict[int, str]:
    """inode -> path of the namespace's listening UNIX sockets (/proc/net/unix)."""
    out = {}
    for line in lab.run(ns, "cat /proc/net/unix").stdout.splitlines()[1:]:
        f = line.split()
        # Num RefCount Protocol Flags Type St Inode Path; flag 0x10000: listening
        if len(f) >= 8 and int(f[3], 16) & 0x10000:
            out[int(f[6])] = f[7]
    return out


def assert_served_from_inherited(lab: Lab, ns: str, pid: int, ifname: str, tun_fd: int,
                                 uapi_fd: int) -> None:
    fds = open_fds(pid)
    assert fds[tun_fd] == "/dev/net/tun", fds
    assert [n for n, target in fds.items() if target == "/dev/net/tun"] == [tun_fd], fds
    m = re.fullmatch(r"socket:\[(\d+)\]", fds[uapi_fd])
    assert m, fds
    listeners = listening_unix_sockets(lab, ns)
    assert listeners[int(m.group(1))] == str(RUN / f"{ifname}.sock")
    # No other listening socket of wgpyd's own.
    held = {int(x) for x in re.findall(r"socket:\[(\d+)\]", " ".join(fds.values()))}
    assert [i for i in held if i in listeners] == [int(m.group(1))]


@pytest.mark.parametrize("vnet_hdr", [True, False], ids=["vnet-hdr", "plain"])
def test_wgpyd_serves_the_tun_and_socket_it_inherited(lab: Lab, vnet_hdr: bool) -> None:
    require("wg", "wireguard-go")
    a_ns, b_ns = two_hosts(lab)
    b = start(lab, b_ns, "wireguard-go", "10.99.0.2/24")
    ifname = lab.wg_name()
    unused = lab.wg_name()  # the INTERFACE argument: the TUN's own name wins
    argv = [*LAUNCHER, ifname, "--tun-fd", "7", "--uapi-fd", "9", "--foreground-env",
            *(["--vnet"] if vnet_hdr else []), "--", *wgpyd_argv(), unused]  # no -f
    proc = lab.popen(a_ns, argv, env={"LOG_LEVEL": "verbose"}, log="launched.log")
    lab.wait_for("wgpyd to answer",
                 lambda: lab.run(a_ns, f"wg show {ifname}", check=False).returncode == 0)
    launched = json.loads(lab.log("launched.log").splitlines()[0])
    assert (launched["tun_fd"], launched["uapi_fd"]) == (7, 9)
    key = genkey()
    keyfile = lab.workdir / "a.key"
    keyfile.write_text(key + "\n")
    os.chmod(keyfile, 0o600)
    lab.run(a_ns, f"wg set {ifname} private-key {keyfile} listen-port 51820")
    lab.run(a_ns, f"ip addr add 10.99.0.1/24 dev {ifname}; ip link set {ifname} up")
    a = WgNode(lab, a_ns, ifname, "wgpyd", key, pubkey(key), "launched.log")
    connect(a, b, "10.99.0.1/32", "10.99.0.2/32", "10.77.0.1:51820", "10.77.0.2:51820")
    # Through the tunnel: the data path reads and writes the vnet header iff it is on.
    ping(lab, a_ns, "10.99.0.2")
    lab.run(a_ns, "ping -c 2 -i 0.2 -W 2 -s 3000 10.99.0.2")  # fragments, both ways
    assert a.show("latest-handshakes").split()[1] != "0"

    assert proc.poll() is None  # in the foreground, as the launcher's process
    assert_served_from_inherited(lab, a_ns, proc.pid, ifname, 7, 9)
    # The launcher's interface and socket file, not new ones of the same names.
    assert (RUN / f"{ifname}.sock").stat().st_ino == launched["inode"]
    assert lab.run(a_ns, f"cat /sys/class/net/{ifname}/ifindex").stdout.strip() == str(
        launched["ifindex"])
    link = lab.run(a_ns, f"ip -details link show {ifname}").stdout
    assert "mtu 1420" in link
    assert f"vnet_hdr {'on' if vnet_hdr else 'off'}" in link
    assert not (RUN / f"{unused}.sock").exists()
    assert lab.run(a_ns, f"ip link show {unused}", check=False).returncode != 0
    assert f"Using the TUN interface {ifname} of WG_TUN_FD=7" in a.logtext()

    # On SIGTERM it removes the socket file, as wireguard-go does (its listener
    # unlinks on close, inherited or not), and the interface goes with its fd.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert not (RUN / f"{ifname}.sock").exists()
    assert lab.run(a_ns, f"ip link show {ifname}", check=False).returncode != 0
    assert "Traceback" not in a.logtext()


def test_wgpyd_goes_to_the_background_with_what_it_inherited(lab: Lab) -> None:
    require("wg")
    ns = lab.netns("bg")
    ifname = lab.wg_name()
    p = lab.run(ns, [*LAUNCHER, ifname, "--", *wgpyd_argv(), ifname], timeout=20)
    assert p.returncode == 0
    launched = json.loads(p.stdout.splitlines()[0])
    pid = int(lab.run(None, f"pgrep -f 'wgpyd {ifname}$'").stdout.split()[0])

    def kill() -> None:
        subprocess.run(["kill", str(pid)], check=False)

    lab.cleanups.append(kill)
    assert lab.run(ns, f"wg show {ifname} listen-port").stdout.strip() != ""
    assert_served_from_inherited(lab, ns, pid, ifname, launched["tun_fd"], launched["uapi_fd"])
    # It ends as usual when its socket is deleted, taking the interface along.
    (RUN / f"{ifname}.sock").unlink()
    lab.wait_for("daemon exit", lambda: not Path(f"/proc/{pid}").exists(), timeout=10)
    assert lab.run(ns, f"ip link show {ifname}", check=False).returncode != 0


@pytest.mark.parametrize(("env", "text"), [
    ({"WG_TUN_FD": "abc"}, "WG_TUN_FD='abc' is not a file descriptor number"),
    ({"WG_TUN_FD": "-1"}, "WG_TUN_FD='-1' is not a file descriptor number"),
    ({"WG_TUN_FD": "0"}, "WG_TUN_FD: file descriptor 0 is not a TUN interface"),
    ({"WG_TUN_FD": "77"}, "WG_TUN_FD: file descriptor 77: Bad file descriptor"),
    ({"WG_UAPI_FD": "0"}, "WG_UAPI_FD: file descriptor 0 is not a socket"),
    ({"WG_UAPI_FD": "77"}, "WG_UAPI_FD: file descriptor 77: Bad file descriptor"),
])
def test_unusable_inherited_fds_are_refused_clearly(lab: Lab, env: dict[str, str],
                                                    text: str) -> None:
    ns = lab.netns("badfd")
    ifname = lab.wg_name()
    p = lab.run(ns, [*wgpyd_argv(), "-f", ifname], check=False, env=env, input=b"",
                timeout=20)
    assert p.returncode == 1
    assert p.stderr.startswith(f"wgpyd: {text}") and p.stderr.count("\n") == 1, p.stderr
    assert not (RUN / f"{ifname}.sock").exists()
    assert lab.run(ns, f"ip link show {ifname}", check=False).returncode != 0
