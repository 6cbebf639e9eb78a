"""wgpyd's rough edges, closed: descriptors a launcher passes.  (The UAPI's:
test_uapi_burst, test_uapi_limits; the key log's: test_keylog_refusals.)"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.nodes import genkey, ping, start, two_hosts, wgpyd_argv

pytestmark = pytest.mark.netns

RUN = Path("/var/run/wireguard")


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


