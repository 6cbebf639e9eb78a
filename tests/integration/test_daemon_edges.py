"""wgpyd's rough edges, closed: a key log that refuses links and FIFOs, and
descriptors a launcher passes.  (The UAPI's: test_uapi_burst, test_uapi_limits.)"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.nodes import genkey, ping, start, two_hosts, wgpyd_argv

pytestmark = pytest.mark.netns

RUN = Path("/var/run/wireguard")


def test_keylog_refuses_a_planted_symlink(lab: Lab, tmp_path: Path) -> None:
    require("ip")
    ns = lab.netns("d")
    target = tmp_path / "victim"
    target.write_text("precious\n")
    os.chmod(target, 0o644)
    link = tmp_path / "keys.log"
    link.symlink_to(target)
    ifname = lab.wg_name()
    p = lab.run(ns, [*wgpyd_argv(), "-f", "--keylog", str(link), ifname], check=False)
    assert p.returncode == 1
    assert f"refusing to open key log {link}: it is a symbolic link" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert target.read_text() == "precious\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # its mode is untouched
    assert lab.run(ns, f"ip link show {ifname}", check=False).returncode != 0


def test_keylog_refuses_a_fifo_and_a_file_of_another_user(lab: Lab, tmp_path: Path) -> None:
    require("ip")
    ns = lab.netns("d")
    fifo = tmp_path / "keys.fifo"
    os.mkfifo(fifo, 0o600)
    t0 = time.monotonic()
    p = lab.run(ns, [*wgpyd_argv(), "-f", "--keylog", str(fifo), lab.wg_name()],
                check=False, timeout=20)
    assert p.returncode == 1 and "it is a FIFO" in p.stderr, p.stderr
    assert time.monotonic() - t0 < 10  # did not block on a FIFO without a reader
    theirs = tmp_path / "theirs.log"
    theirs.write_text("")
    os.chown(theirs, 65534, 65534)
    p = lab.run(ns, [*wgpyd_argv(), "-f", "--keylog", str(theirs), lab.wg_name()],
                check=False)
    assert p.returncode == 1 and "belongs to another user (uid 65534)" in p.stderr, p.stderr
    assert theirs.read_text() == ""


@pytest.mark.parametrize("vnet", [False, True], ids=["plain", "vnet-hdr"])
def test_wg_tun_fd_and_wg_uapi_fd_from_a_launcher(lab: Lab, vnet: bool) -> None:
    """A launcher opens the TUN and the UAPI listener and execs wgpyd with them,
    as wireguard-go's WG_TUN_FD/WG_UAPI_FD allow; the tunnel works with them."""
    require("wg", "wireguard-go", "ping")
    a_ns, b_ns = two_hosts(lab)
    ifname = lab.wg_name()
    launcher = ["python3", "-m", "wgpy.testing.launcher", ifname, *(["--vnet"] if vnet else []),
                "--", *wgpyd_argv(), "-f", ifname]
    lab.popen(a_ns, launcher, env={"LOG_LEVEL": "verbose"}, log="launcher.log")
    lab.wait_for("launcher's line", lambda: "inode" in lab.log("launcher.log"))
    info = json.loads(lab.log("launcher.log").splitlines()[0])
    sock = RUN / f"{ifname}.sock"
    lab.wait_for("wgpyd serving", lambda: lab.run(
        a_ns, f"wg show {ifname} listen-port", check=False).returncode == 0)
    # The launcher's device and socket, not new ones.
    assert sock.stat().st_ino == info["inode"]
    assert lab.run(a_ns, f"cat /sys/class/net/{ifname}/ifindex").stdout.strip() == str(
        info["ifindex"])
    keyfile = lab.workdir / "a.key"
    keyfile.write_text(genkey() + "\n")
    os.chmod(keyfile, 0o600)
    lab.run(a_ns, f"wg set {ifname} private-key {keyfile} listen-port 51820")
    lab.run(a_ns, f"ip addr add 10.62.0.1/24 dev {ifname}; ip link set {ifname} up")
    b = start(lab, b_ns, "wireguard-go", "10.62.0.2/24")
    a_public = lab.run(a_ns, f"wg show {ifname} public-key").stdout.strip()
    lab.run(a_ns, f"wg set {ifname} peer {b.public} allowed-ips 10.62.0.2/32 "
                  "endpoint 10.77.0.2:51820")
    b.wg(f"set {b.ifname} peer {a_public} allowed-ips 10.62.0.1/32")
    ping(lab, a_ns, "10.62.0.2")
    log = lab.log("launcher.log")
    assert "Traceback" not in log and "already exists" not in log
    # On exit wgpyd leaves the launcher's socket file alone.
    lab.run(a_ns, f"pkill -TERM -f -- '-f {ifname}$'")
    lab.wait_for("wgpyd exit", lambda: lab.run(
        a_ns, f"pgrep -f -- '-f {ifname}$'", check=False).returncode != 0)
    assert sock.exists()


def test_bad_inherited_descriptors_are_refused_clearly(lab: Lab) -> None:
    ns = lab.netns("d")
    for env, text in ((
        {"WG_TUN_FD": "nonsense"}, "is not a file descriptor number"),
        ({"WG_TUN_FD": "999"}, "WG_TUN_FD=999: Bad file descriptor"),
        ({"WG_TUN_FD": "0"}, "is not a TUN device"),
    ):
        p = lab.run(ns, [*wgpyd_argv(), "-f", lab.wg_name()], env=env, check=False, input=b"")
        assert p.returncode == 1 and text in p.stderr, (env, p.stderr)
        assert not re.search(r"Traceback", p.stderr)


