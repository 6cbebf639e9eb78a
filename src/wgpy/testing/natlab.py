"""A NAT lab for the discovery tests, built on ``wgpy.testing.lab``.

Topology (all addresses private, inside the lab's namespaces)::

    reg 10.200.0.2 ── inet ── 10.201.0.2 natA ── 192.168.1.0/24 ── peers
                        └──── 10.202.0.2 natB ── 192.168.1.0/24 ── peers

It is the network of docs/nat-lab.md, with any number of NATs and peers.
``inet`` routes between the "public" links.  Each NAT router runs that
page's home-router block as written (MASQUERADE, a firewall that drops
unsolicited inbound traffic, conntrack timeouts), so the page and the
tests cannot drift apart.  Both LANs use 192.168.1.0/24 on purpose, as
home networks do.  The overlay is 10.99.0.0/24 with the registry at .254.

With ``v6=True`` the lab is dual-stack as the page's IPv6 section builds
it: the registry at fd00:200::2, NAT ``index`` public at fd00:20<index>::2
with the LAN prefix fd00:<index>1::/64 routed to it (no NAT), and the page's
IPv6 firewall block on each router.  ``build_secondary`` adds a BIND 9
secondary of the registry's zone on the public side (10.203.0.2), run by
``named`` in its own namespace with a configuration of its own.

The device is ``wgpyd`` unless ``WGPY_TEST_DEVICE=wireguard-go``.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from wgpy.testing.lab import Lab, device_under_test
from wgpy.testing.nodes import launch
from wgpy.testing.walkthrough import README, extract

DEVICE = device_under_test()
NAT_LAB_PAGE = README.parent / "docs" / "nat-lab.md"
HOME_ROUTER = "Make the NAT routers behave like home routers"  # the page's heading
HOME_ROUTER6 = "IPv6: no NAT, a stateful firewall"
ZONE = "wg.test"
REG_PUBLIC = "10.200.0.2"
REG_PUBLIC6 = "fd00:200::2"
REG_TUNNEL = "10.99.0.254"
SECONDARY = "10.203.0.2"
WG_PORT = 51820
CLI = [sys.executable, "-m", "wgpy.discovery.cli"]


def _router_block(heading: str) -> str:
    page = NAT_LAB_PAGE
    found = [b for b in extract(page.read_text(), heading)
             if b.lang == "sh" and b.hosts == ("nat-a", "nat-b")]
    if len(found) != 1:
        raise ValueError(f"{page}: expected one '# on nat-a and nat-b' block under "
                         f"{heading!r}, found {len(found)}")
    return found[0].text


def home_router6() -> str:
    """docs/nat-lab.md's IPv6 firewall commands, for a NAT router's namespace."""
    return "set -e\n" + _router_block(HOME_ROUTER6)


def home_router(random_fully: bool = False) -> str:
    """docs/nat-lab.md's home-router commands, to run in a NAT router's namespace
    (public side ``eth0``).  ``random_fully`` is the page's symmetric-NAT
    variant: ``--random-fully`` added to the MASQUERADE rule.

    :raises ValueError: when the page no longer has exactly one such block.
    """
    page = NAT_LAB_PAGE
    text = _router_block(HOME_ROUTER)
    if random_fully:
        if text.count("-j MASQUERADE\n") != 1:
            raise ValueError(f"{page}: the home-router block needs one MASQUERADE rule")
        text = text.replace("-j MASQUERADE\n", "-j MASQUERADE --random-fully\n")
    return "set -e\n" + text


@dataclass
class Host:
    ns: str
    ifname: str
    private: str
    public: str
    tunnel: str
    lan: str = ""
    lan6: str = ""


@dataclass
class NatLab:
    lab: Lab
    inet: str = ""
    reg: Host | None = None
    nats: dict[str, str] = field(default_factory=dict)  # name -> namespace
    nat_public: dict[str, str] = field(default_factory=dict)
    lans: dict[str, str] = field(default_factory=dict)  # nat name -> bridge namespace
    peers: dict[str, Host] = field(default_factory=dict)
    v6: bool = False
    nat_public6: dict[str, str] = field(default_factory=dict)
    nat_index: dict[str, int] = field(default_factory=dict)
    registry_proc: subprocess.Popen[bytes] | None = None
    _lan_n: dict[str, int] = field(default_factory=dict)

    def run(self, ns: str, cmd: str, check: bool = True) -> str:
        return self.lab.run(ns, cmd, check=check).stdout

    # -- building -------------------------------------------------------------

    def build_internet(self, v6: bool = False) -> None:
        self.inet = self.lab.netns("inet")
        self.v6 = v6
        self.run(self.inet, "sysctl -qw net.ipv4.ip_forward=1")
        if v6:
            self.run(self.inet, "sysctl -qw net.ipv6.conf.all.forwarding=1")

    def start_device(self, ns: str, tunnel: str, prefix: int = 24) -> Host:
        ifname = self.lab.wg_name()
        launch(self.lab, ns, ifname)
        private = self.run(ns, "wg genkey").strip()
        public = self.run(ns, f"echo {private} | wg pubkey").strip()
        keyfile = self.lab.workdir / f"{ifname}.key"
        keyfile.write_text(private + "\n")
        self.run(ns, f"wg set {ifname} private-key {keyfile} listen-port {WG_PORT}")
        self.run(ns, f"ip addr add {tunnel}/{prefix} dev {ifname} && ip link set {ifname} up")
        return Host(ns, ifname, private, public, tunnel)

    def build_registry(self) -> Host:
        ns = self.lab.netns("reg")
        self.lab.veth(self.inet, ns, "reg0", "eth0")
        self.run(self.inet, "ip addr add 10.200.0.1/24 dev reg0")
        self.run(ns, f"ip addr add {REG_PUBLIC}/24 dev eth0 && ip route add default via 10.200.0.1")
        if self.v6:
            self.run(self.inet, "ip addr add fd00:200::1/64 dev reg0 nodad")
            self.run(ns, f"ip addr add {REG_PUBLIC6}/64 dev eth0 nodad && "
                         "ip -6 route add default via fd00:200::1")
        self.reg = self.start_device(ns, REG_TUNNEL)
        return self.reg

    def build_nat(self, name: str, index: int, random_fully: bool = False) -> str:
        """A NAT router ``name`` with public 10.20<index>.0.2 and LAN bridge 192.168.1.1/24."""
        ns = self.lab.netns(f"nat{name}")
        pub = f"10.20{index}.0.2"
        self.lab.veth(self.inet, ns, f"nat{name}0", "eth0")
        self.run(self.inet, f"ip addr add 10.20{index}.0.1/24 dev nat{name}0")
        self.run(ns, " && ".join([
            f"ip addr add {pub}/24 dev eth0",
            f"ip route add default via 10.20{index}.0.1",
            "ip link add br0 type bridge && ip link set br0 up",
            "ip addr add 192.168.1.1/24 dev br0",
        ]))
        self.run(ns, home_router(random_fully))
        if self.v6:
            pub6 = f"fd00:20{index}::2"
            self.run(self.inet, f"ip addr add fd00:20{index}::1/64 dev nat{name}0 nodad && "
                                f"ip -6 route add fd00:{index}1::/64 via {pub6}")
            self.run(ns, " && ".join([
                f"ip addr add {pub6}/64 dev eth0 nodad",
                f"ip -6 route add default via fd00:20{index}::1",
                f"ip addr add fd00:{index}1::1/64 dev br0 nodad",
            ]))
            self.run(ns, home_router6())
            self.nat_public6[name] = pub6
        self.nats[name] = ns
        self.nat_public[name] = pub
        self.nat_index[name] = index
        self._lan_n[name] = 10
        return ns

    def set_nat(self, name: str, random_fully: bool) -> None:
        """Change NAT ``name``'s MASQUERADE to (or from) ``--random-fully`` and forget
        its mappings, as a router that is reconfigured (or replaced) does."""
        rule = "MASQUERADE --random-fully" if random_fully else "MASQUERADE"
        self.run(self.nats[name], f"iptables -t nat -R POSTROUTING 1 -o eth0 -j {rule} && "
                                  "conntrack -F 2>/dev/null; true")

    def build_peer(self, name: str, nat: str, tunnel: str) -> Host:
        ns = self.lab.netns(f"peer{name}")
        nat_ns = self.nats[nat]
        port = f"p{name}"
        self.lab.veth(nat_ns, ns, port, "eth0")
        self.run(nat_ns, f"ip link set {port} master br0")
        lan = f"192.168.1.{self._lan_n[nat]}"
        self._lan_n[nat] += 10
        self.run(ns, f"ip addr add {lan}/24 dev eth0 && ip route add default via 192.168.1.1")
        lan6 = ""
        if nat in self.nat_public6:
            index = self.nat_index[nat]
            lan6 = f"fd00:{index}1::{self._lan_n[nat] - 10}"
            self.run(ns, f"ip addr add {lan6}/64 dev eth0 nodad && "
                         f"ip -6 route add default via fd00:{index}1::1")
        host = self.start_device(ns, tunnel)
        host.lan = lan
        host.lan6 = lan6
        self.peers[name] = host
        return host

    def two_peers(self, random_a: bool = False, random_b: bool = False,
                  same_nat: bool = False) -> tuple[Host, Host]:
        """The usual cast: peer A (10.99.0.1) behind NAT A and peer B (10.99.0.2)
        behind NAT B (or NAT A too, ``same_nat``), each with a tunnel to the
        registry and the other configured without an endpoint."""
        self.build_nat("A", 1, random_fully=random_a)
        if not same_nat:
            self.build_nat("B", 2, random_fully=random_b)
        a = self.build_peer("A", "A", "10.99.0.1")
        b = self.build_peer("B", "A" if same_nat else "B", "10.99.0.2")
        for p in (a, b):
            self.connect_to_registry(p)
        self.add_peer(a, b)
        self.add_peer(b, a)
        return a, b

    # -- WireGuard configuration ----------------------------------------------------

    def connect_to_registry(self, peer: Host, keepalive: int = 1, v6: bool = False) -> None:
        """Both sides' configuration; ``v6``: the peer reaches the registry over IPv6."""
        assert self.reg is not None
        self.run(self.reg.ns, f"wg set {self.reg.ifname} peer {peer.public} "
                              f"allowed-ips {peer.tunnel}/32")
        where = f"[{REG_PUBLIC6}]" if v6 else REG_PUBLIC
        self.run(peer.ns, f"wg set {peer.ifname} peer {self.reg.public} allowed-ips "
                          f"{REG_TUNNEL}/32 endpoint {where}:{WG_PORT} "
                          f"persistent-keepalive {keepalive}")

    def add_peer(self, a: Host, b: Host, keepalive: int = 1) -> None:
        """Configure b on a: key and allowed IPs, no endpoint (discover finds it)."""
        self.run(a.ns, f"wg set {a.ifname} peer {b.public} allowed-ips {b.tunnel}/32 "
                       f"persistent-keepalive {keepalive}")

    def wait_registry_sees(self, *peers: Host, timeout: float = 15) -> None:
        assert self.reg is not None
        reg = self.reg

        def ok() -> bool:
            eps = self.endpoints(reg)
            return all(eps.get(p.public) for p in peers)

        self.lab.wait_for("the registry to see every peer's endpoint", ok, timeout, 0.2)

    def endpoints(self, host: Host) -> dict[str, str]:
        out = {}
        for line in self.run(host.ns, f"wg show {host.ifname} endpoints").splitlines():
            key, _, ep = line.partition("\t")
            out[key] = "" if ep == "(none)" else ep
        return out

    def transfer(self, host: Host) -> dict[str, tuple[int, int]]:
        out = {}
        for line in self.run(host.ns, f"wg show {host.ifname} transfer").splitlines():
            key, rx, tx = line.split("\t")
            out[key] = (int(rx), int(tx))
        return out

    # -- the programs under test ---------------------------------------------------

    def start_registry(self, *extra: str) -> subprocess.Popen[bytes]:
        assert self.reg is not None
        listen = [f"{REG_PUBLIC}:53", f"{REG_PUBLIC}:5353", f"{REG_TUNNEL}:53"]
        if self.v6:
            listen += [f"[{REG_PUBLIC6}]:53", f"[{REG_PUBLIC6}]:5353"]
        argv = [*CLI, "registry", "--interface", self.reg.ifname, "--zone", ZONE,
                *(a for x in listen for a in ("--listen", x)), "--ttl", "1", *extra]
        self.registry_proc = self.lab.popen(self.reg.ns, argv, log="registry.log")
        self.lab.wait_for("the registry to listen", lambda: self.dig(
            self.reg.ns if self.reg else "", REG_PUBLIC, f"{ZONE} SOA", check=False) != "",
            10, 0.1)
        return self.registry_proc

    def registry_stats(self) -> dict[str, int]:
        """The registry's counters: SIGUSR1, then the ``stats`` line it logs."""
        proc = self.registry_proc
        assert proc is not None and proc.poll() is None
        before = self.lab.log("registry.log").count(" stats ")
        os.kill(proc.pid, signal.SIGUSR1)
        self.lab.wait_for("the registry's stats line",
                          lambda: self.lab.log("registry.log").count(" stats ") > before, 5)
        line = [x for x in self.lab.log("registry.log").splitlines() if " stats " in x][-1]
        return {k: int(v) for k, v in re.findall(r"(\S+)=(-?\d+)", line)}

    # -- a BIND 9 secondary -------------------------------------------------------

    def build_secondary(self, keyfile: str | None = None) -> str:
        """A namespace ``sec`` on the public side at 10.203.0.2 running ``named`` as a
        secondary of the registry's zone (transfers signed with ``keyfile``'s key)."""
        ns = self.lab.netns("sec")
        self.lab.veth(self.inet, ns, "sec0", "eth0")
        self.run(self.inet, "ip addr add 10.203.0.1/24 dev sec0")
        self.run(ns, f"ip addr add {SECONDARY}/24 dev eth0 && "
                     "ip route add default via 10.203.0.1")
        d = self.lab.workdir / "named"
        d.mkdir(mode=0o700, exist_ok=True)
        key_text, key_ref = "", ""
        if keyfile is not None:
            key_text = f'include "{keyfile}";\n'
            name = re.search(r'key\s+"([^"]+)"', open(keyfile).read())
            assert name is not None
            key_ref = f' key "{name.group(1)}"'
        (d / "named.conf").write_text(f"""\
options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    listen-on port 53 {{ {SECONDARY}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    notify no;
    dnssec-validation no;
    allow-query {{ any; }};
}};
controls {{ }};
{key_text}zone "{ZONE}" {{
    type secondary;
    primaries {{ {REG_PUBLIC}{key_ref}; }};
    file "{d}/{ZONE}.db";
    check-names ignore;
}};
""")
        self.lab.popen(ns, ["named", "-g", "-u", "root", "-c", str(d / "named.conf")],
                       log="named.log")
        return ns

    def discover_argv(self, peer: Host, *extra: str, probes: bool = True,
                      registry: tuple[str, ...] = (REG_TUNNEL,)) -> list[str]:
        """``probes=False``: no --nat-probe (discover finds the zone's own)."""
        probe_args = ["--nat-probe", f"{REG_PUBLIC}:53", "--nat-probe",
                      f"{REG_PUBLIC}:5353"] if probes else []
        return [*CLI, "discover", "--interface", peer.ifname,
                *(a for r in registry for a in ("--registry", r)),
                "--zone", ZONE, *probe_args, "--timeout", "1", *extra]

    def start_discover(self, peer: Host, *extra: str, probes: bool = True,
                       registry: tuple[str, ...] = (REG_TUNNEL,)) -> subprocess.Popen[bytes]:
        argv = self.discover_argv(peer, "--interval", "2", *extra, probes=probes,
                                  registry=registry)
        return self.lab.popen(peer.ns, argv, log=f"discover-{peer.ifname}.log")

    def dig(self, ns: str, server: str, query: str, port: int = 53, check: bool = True) -> str:
        p = self.lab.run(ns, f"dig +short +time=1 +tries=1 -p {port} @{server} {query}",
                         check=check, timeout=10)
        return p.stdout.strip() if p.returncode == 0 else ""

    def dig_full(self, ns: str, query: str) -> str:
        return self.run(ns, f"dig +time=1 +tries=2 @{REG_PUBLIC} {query}")

    def send_update(self, ns: str, server: str, public_b64: str, lan_ip: str,
                    tcp: bool = False, tsig: tuple[str, str] | None = None) -> str:
        """Send a LAN-candidate UPDATE for ``public_b64`` from ``ns`` (over UDP, or
        TCP), signed with ``tsig`` = (key name, base64 hmac-sha256 secret) if given;
        return the rcode text (for a TSIG error, the rcode and the TSIG error)."""
        sign = (f"msg.use_tsig(dns.tsig.Key({tsig[0]!r}, {tsig[1]!r}, "
                "dns.tsig.HMAC_SHA256))\n") if tsig else ""
        script = (
            "import base64, sys, dns.message, dns.query, dns.rcode, dns.tsig, ipaddress\n"
            "from wgpy.discovery.records import Names\n"
            "from wgpy.discovery.update import build_update\n"
            f"key = base64.b64decode({public_b64!r})\n"
            f"msg = build_update(Names.for_zone({ZONE!r}), key, 51820, "
            f"[ipaddress.ip_address({lan_ip!r})], None, 30)\n"
            f"{sign}"
            "try:\n"
            f"    r = dns.query.{'tcp' if tcp else 'udp'}(msg, {server!r}, timeout=2)\n"
            "    print(dns.rcode.to_text(r.rcode()))\n"
            "except dns.tsig.PeerError as e:\n"
            "    print('NOTAUTH', type(e).__name__)\n"
        )
        return self.lab.run(ns, [sys.executable, "-c", script]).stdout.strip()

    def send_relay_request(self, ns: str, server: str, me_b64: str, peer_b64: str,
                           port: int = 0) -> str:
        """Ask for a relay between two keys from ``ns``; return the rcode text."""
        script = (
            "import base64, dns.query, dns.rcode, dns.update\n"
            "from wgpy.discovery import records\n"
            "from wgpy.discovery.records import Names\n"
            f"n = Names.for_zone({ZONE!r})\n"
            f"me, peer = base64.b64decode({me_b64!r}), base64.b64decode({peer_b64!r})\n"
            "msg = dns.update.UpdateMessage(n.zone)\n"
            f"msg.add(n.relay_instance(me, peer), 30, records.srv({port}, n.relay_host))\n"
            f"r = dns.query.udp(msg, {server!r}, timeout=2)\n"
            "print(dns.rcode.to_text(r.rcode()))\n"
        )
        return self.lab.run(ns, [sys.executable, "-c", script]).stdout.strip()

    def ping(self, peer: Host, target: str, count: int = 1, timeout: int = 1) -> bool:
        p = self.lab.run(peer.ns, f"ping -n -q -c {count} -W {timeout} {shlex.quote(target)}",
                         check=False, timeout=count * timeout + 5)
        return p.returncode == 0


def wait_ping(nl: NatLab, peer: Host, target: str, timeout: float) -> float:
    """Ping until it answers; return the seconds it took (LabError on timeout)."""
    start = time.monotonic()
    nl.lab.wait_for(f"{peer.ns} to ping {target}", lambda: nl.ping(peer, target), timeout, 0.1)
    return time.monotonic() - start
