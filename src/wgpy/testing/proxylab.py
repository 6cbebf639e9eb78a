"""The three-namespace topology for the proxy's integration tests.

    cli  --veth 192.168.50.0/24, fd00:50::/64--  prx  --veth 192.168.60.0/24--  org
                                                 wg 10.99.0.1 ===tunnel=== wg 10.99.0.2, .3

The client routes the published prefixes (10.77.0.0/16, fd00:77::/32) to
the proxy; the proxy reaches the origins through a WireGuard tunnel.  The
tunnel daemon is ``wgpyd`` unless WGPY_TEST_DEVICE=wireguard-go.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from wgpy.proxy import control
from wgpy.testing.lab import Lab, device_under_test
from wgpy.testing.nodes import launch


def tunnel_tools() -> tuple[str, ...]:
    return ("wg", device_under_test())


def _keypair(lab: Lab, name: str) -> tuple[Path, str]:
    key = lab.workdir / f"{name}.key"
    priv = lab.run(None, "wg genkey").stdout.strip()
    key.write_text(priv + "\n")
    key.chmod(0o600)
    pub = lab.run(None, ["wg", "pubkey"], input=(priv + "\n").encode()).stdout.strip()
    return key, pub


@dataclass
class Topology:
    lab: Lab
    cli: str
    prx: str
    org: str

    def curl(self, url: str, *extra: str, timeout: float = 10) -> tuple[int, str]:
        p = self.lab.run(self.cli, ["curl", "-sS", "--max-time", str(timeout), *extra, url],
                         check=False, timeout=timeout + 5)  # fmt: skip
        return p.returncode, p.stdout + p.stderr


def hosts(lab: Lab) -> Topology:
    """The three hosts and their links, as the README's walkthrough starts
    from: addresses only, no routes to the published prefixes, no tunnel."""
    cli, prx, org = lab.netns("cli"), lab.netns("prx"), lab.netns("org")
    lab.veth(cli, prx, "eth0", "eth0")
    lab.veth(prx, org, "eth1", "eth0")
    lab.run(cli, "ip addr add 192.168.50.2/24 dev eth0 && ip addr add 192.168.50.3/24 dev eth0"
                 " && ip -6 addr add fd00:50::2/64 dev eth0 nodad")  # fmt: skip
    lab.run(prx, "ip addr add 192.168.50.1/24 dev eth0 && ip -6 addr add fd00:50::1/64 dev eth0"
                 " nodad && ip addr add 192.168.60.1/24 dev eth1")  # fmt: skip
    lab.run(org, "ip addr add 192.168.60.2/24 dev eth0")
    return Topology(lab, cli, prx, org)


def build(lab: Lab) -> Topology:
    """:func:`hosts`, the client's routes to the published prefixes, and the tunnel."""
    topo = hosts(lab)
    cli, prx, org = topo.cli, topo.prx, topo.org
    lab.run(cli, "ip route add 10.77.0.0/16 via 192.168.50.1"
                 " && ip -6 route add fd00:77::/32 via fd00:50::1")  # fmt: skip
    wp, wo = lab.wg_name(), lab.wg_name()
    kp, pp = _keypair(lab, "prx")
    ko, po = _keypair(lab, "org")
    launch(lab, prx, wp)
    launch(lab, org, wo)
    lab.run(prx, f"wg set {wp} private-key {kp} listen-port 51820 peer {po}"
                 f" allowed-ips 10.99.0.0/24 endpoint 192.168.60.2:51820"
                 f" && ip addr add 10.99.0.1/24 dev {wp} && ip link set {wp} up")  # fmt: skip
    lab.run(org, f"wg set {wo} private-key {ko} listen-port 51820 peer {pp}"
                 f" allowed-ips 10.99.0.1/32 endpoint 192.168.60.1:51820"
                 f" && ip addr add 10.99.0.2/24 dev {wo} && ip addr add 10.99.0.3/24 dev {wo}"
                 f" && ip link set {wo} up")  # fmt: skip
    lab.run(prx, "ping -c1 -W5 10.99.0.2", timeout=15)
    return topo


def start_origin(topo: Topology, *specs: str) -> None:
    lab = topo.lab
    log = f"origin{len(lab.procs)}.log"
    lab.popen(topo.org, [sys.executable, "-m", "wgpy.testing.origin_server", *specs], log=log)
    lab.wait_for("origin ready", lambda: "origin ready" in lab.log(log), timeout=15)


def start_proxy(
    topo: Topology, conf: Path, ctl: Path, *extra: str
) -> subprocess.Popen[bytes]:
    lab = topo.lab
    p = lab.popen(topo.prx, [sys.executable, "-m", "wgpy.proxy", "run", "--config", str(conf),
                             *extra], log="proxy.log")  # fmt: skip

    def up() -> bool:
        if p.poll() is not None:
            raise AssertionError(f"proxy exited {p.returncode}: {lab.log('proxy.log')}")
        try:
            control.request(str(ctl), "status", timeout=2)
            return True
        except control.ControlError:
            return False

    lab.wait_for("proxy control socket", up, timeout=15)
    return p


def status(ctl: Path) -> dict[str, object]:
    return control.request(str(ctl), "status", timeout=5)


def rule_stats(ctl: Path, name: str) -> dict[str, object]:
    rules = status(ctl)["rules"]
    assert isinstance(rules, dict)
    st = rules.get(name, {})
    assert isinstance(st, dict)
    return st


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def snapshot(lab: Lab, ns: str) -> str:
    """Everything setup may touch, as text (minus link-local routes, which the
    kernel adds by itself whenever IPv6 autoconfiguration finishes)."""
    out = lab.run(ns, "nft list ruleset; echo ---; ip route show table local;"
                      " ip -6 route show table local; echo ---; ip rule; ip -6 rule;"
                      " echo ---; ip route show table all; ip -6 route show table all").stdout
    return "\n".join(line for line in out.splitlines() if "fe80:" not in line)
