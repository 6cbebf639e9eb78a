"""``wgpy doctor``: what is wrong on this host, and the command that fixes it.

Each check looks at the host as it is (the kernel's settings, the firewall's
rules, the device over its UAPI socket, routes, the proxy's kernel setup and
control socket, the registry's answers) and yields ``Finding``s: a problem
in one sentence and the command that fixes it.  Nothing is changed.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from wgpy.control.config import resolve_config_path
from wgpy.control.endpoint import format_endpoint, split_host_port
from wgpy.control.keys import Key
from wgpy.control.uapi import DeviceInfo, UapiError, UapiProtocolError
from wgpy.control.uapi_client import UapiClient
from wgpy.protocol.errors import ConfigError
from wgpy.tools.nftcheck import accept_rule, families_of, udp_port_verdict

PROG = "wgpy doctor"
STALE_HANDSHAKE = 180.0  # seconds: a live session rekeys every 2 minutes
TUN = Path("/dev/net/tun")

DESCRIPTION = f"""\
Explain what is wrong on this host for a WireGuard interface, a wgpy
registry or a wgpy proxy, each problem with the command that fixes it.
Nothing is changed.

For an interface (a name, or a wg-quick file whose name is the interface's):
  - the TUN device (/dev/net/tun) exists and opens;
  - the device answers on its UAPI socket, is up, and has a private key;
  - the firewall (nftables, iptables-nft) lets new UDP datagrams reach the
    listen port;
  - forwarding (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding) is on when
    the interface routes for more than one host;
  - every peer had a handshake within --handshake-age seconds (default
    {STALE_HANDSHAKE:.0f});
  - every allowed IP is routed through the interface.
For a proxy (--proxy FILE): the file parses, its nftables table, AnyIP routes
and fwmark rule are in place, and a proxy answers on its control socket.
For a registry (--registry ADDR[:PORT] --zone ZONE): it answers the zone's
SOA, and the firewall lets DNS through to its port."""

EPILOG = """\
examples:
  wgpy doctor wg0
  wgpy doctor /etc/wireguard/wg0.conf --proxy /etc/wgpy/proxy.conf
  wgpy doctor wg0 --registry 10.99.0.254 --zone wg.example.net

exit status:
  0 nothing wrong, 1 problems found (each printed with its fix), 2 bad usage."""


@dataclass(frozen=True)
class Finding:
    subject: str  # "wg0", "proxy /etc/wgpy/proxy.conf", ...
    problem: str
    fix: str


# -- helpers --------------------------------------------------------------------------


def _run(argv: Sequence[str], timeout: float = 10) -> tuple[int, str]:
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, str(e)
    return p.returncode, p.stdout if p.returncode == 0 else p.stderr


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} seconds ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} minutes ago"
    return f"{seconds / 3600:.1f} hours ago"


def _nft_ruleset() -> object | None:
    if shutil.which("nft") is None:
        return None
    rc, out = _run(["nft", "-j", "list", "ruleset"])
    if rc != 0:
        return None
    try:
        ruleset: object = json.loads(out)
    except ValueError:
        return None
    return ruleset


def _firewall(subject: str, port: int, versions: set[int], what: str) -> Iterator[Finding]:
    ruleset = _nft_ruleset()
    if ruleset is None:
        return
    for v in sorted(versions):
        verdict = udp_port_verdict(ruleset, port, v)
        if verdict.dropped:
            how = "its policy drops" if verdict.by_policy else "a rule drops"
            yield Finding(subject, f"the firewall drops {what} (UDP port {port}, IPv{v}): "
                          f"{how} them in chain {verdict.chain}",
                          accept_rule(verdict.chain, port))


# -- the checks -------------------------------------------------------------------------


def check_tun() -> Iterator[Finding]:
    fix = ("modprobe tun; mkdir -p /dev/net && { [ -c /dev/net/tun ] || "
           "mknod /dev/net/tun c 10 200; } && chmod 0666 /dev/net/tun")
    try:
        st = TUN.stat()
    except FileNotFoundError:
        yield Finding("host", f"no TUN device: {TUN} does not exist, so wgpyd cannot create "
                      "an interface", fix)
        return
    except OSError as e:
        yield Finding("host", f"{TUN}: {e.strerror}", fix)
        return
    if not stat.S_ISCHR(st.st_mode):
        yield Finding("host", f"{TUN} is not a character device", f"rm {TUN} && {fix}")
        return
    try:
        os.close(os.open(TUN, os.O_RDWR))
    except OSError as e:
        yield Finding("host", f"{TUN} does not open: {e.strerror}", fix)


def check_interface(name: str, handshake_age: float, config: Path | None) -> Iterator[Finding]:
    up = f"wgpy up {config or name}   # or: systemctl start wgpy@{name}"
    if not Path("/sys/class/net", name).exists():
        yield Finding(name, f"no interface {name}", up)
        return
    try:
        info = UapiClient(name, timeout=5).get()
    except (UapiError, UapiProtocolError, OSError) as e:
        yield Finding(name, f"{name} does not answer on its UAPI socket ({e}): it is not a "
                      "userspace WireGuard device, or its daemon is stuck", up)
        return
    rc, out = _run(["ip", "-j", "link", "show", "dev", name])
    if rc == 0 and '"UP"' not in out:
        yield Finding(name, f"{name} is down", f"ip link set {name} up")
    if not info.private_key:
        yield Finding(name, f"{name} has no private key", f"wgpy set {name} private-key "
                      f"/etc/wireguard/{name}.key")
    if info.listen_port:
        allowed = [c for p in info.peers for c in p.allowed_ips]
        yield from _firewall(name, info.listen_port, families_of(allowed) or {4},
                             "WireGuard's datagrams")
    yield from _forwarding(name, info)
    yield from _handshakes(name, info, handshake_age)
    yield from _routes(name, info)


def _forwarding(name: str, info: DeviceInfo) -> Iterator[Finding]:
    allowed = [ipaddress.ip_network(c, strict=False) for p in info.peers for c in p.allowed_ips]
    for version, key in ((4, "net.ipv4.ip_forward"), (6, "net.ipv6.conf.all.forwarding")):
        nets = [n for n in allowed if n.version == version]
        routes_for_others = len(info.peers) > 1 or any(n.num_addresses > 1 for n in nets)
        if nets and routes_for_others and _sysctl(key) == "0":
            yield Finding(name, f"{key} is 0: this host does not forward packets between "
                          f"{name}'s peers or to the networks behind them "
                          f"({', '.join(str(n) for n in nets[:3])}"
                          f"{', ...' if len(nets) > 3 else ''})",
                          f"sysctl -w {key}=1   # to keep it: echo {key}=1 > "
                          "/etc/sysctl.d/99-wgpy.conf")


def _handshakes(name: str, info: DeviceInfo, max_age: float) -> Iterator[Finding]:
    now = time.time()
    for p in info.peers:
        key = Key(p.public_key).to_base64()
        where = f"endpoint {p.endpoint}" if p.endpoint else "no endpoint"
        if p.last_handshake_time_sec:
            age = now - p.last_handshake_time_sec
            if age <= max_age:
                continue
            when = f"the last handshake was {_ago(age)}"
        elif p.endpoint or p.persistent_keepalive_interval:
            when = "no handshake yet"
        else:
            continue  # no endpoint, no keepalive: it is up to the peer to call
        fix = (f"wgpy set {name} peer {key} endpoint HOST:PORT   # if it moved; otherwise check "
               "that the peer is up, has this host's public key, and its firewall passes UDP")
        if not p.endpoint:
            fix = f"wgpy set {name} peer {key} endpoint HOST:PORT   # where the peer listens"
        yield Finding(name, f"peer {key} ({where}): {when}", fix)


def _routes(name: str, info: DeviceInfo) -> Iterator[Finding]:
    for p in info.peers:
        for cidr in p.allowed_ips:
            net = ipaddress.ip_network(cidr, strict=False)
            if net.prefixlen == 0:
                continue  # wg-quick's fwmark policy routing: not one route
            addr = net.network_address if net.num_addresses <= 2 else net.network_address + 1
            rc, out = _run(["ip", "-j", "route", "get", str(addr)])
            try:
                dev = json.loads(out)[0].get("dev") if rc == 0 else None
            except (ValueError, IndexError, AttributeError):
                dev = None
            if dev != name:
                via = f"routed via {dev}" if dev else "not routed"
                yield Finding(name, f"allowed IP {cidr} of peer {Key(p.public_key).short_name()} "
                              f"is {via}, not through {name}",
                              f"ip route add {cidr} dev {name}")


def check_proxy(path: Path) -> Iterator[Finding]:
    from wgpy.proxy import config as proxy_config
    from wgpy.proxy import control
    from wgpy.proxy.rules import route_specs

    subject = f"proxy {path}"
    try:
        cfg = proxy_config.load(path)
    except ConfigError as e:
        yield Finding(subject, f"the configuration does not load: {e}",
                      f"wgpy proxy check --config {path}   # then correct that line")
        return
    st = cfg.settings
    setup = f"wgpy proxy setup --config {path}"
    rc, _ = _run(["nft", "list", "table", "inet", st.nft_table])
    if rc != 0:
        yield Finding(subject, f"the nftables table inet {st.nft_table} is absent: nothing is "
                      "diverted to the proxy", setup)
    for version, prefix, table in route_specs(cfg):
        rc, out = _run(["ip", f"-{version}", "route", "show", "table", table, "type", "local",
                        prefix])
        if rc != 0 or not out.strip():
            yield Finding(subject, f"the AnyIP route local {prefix} (table {table}) is absent",
                          setup)
    rc, out = _run(["ip", "rule", "show"])
    if rc == 0 and f"fwmark {hex(st.mark)}" not in out and f"fwmark {st.mark}" not in out:
        yield Finding(subject, f"no ip rule for fwmark {hex(st.mark)}: diverted packets are not "
                      "delivered locally", setup)
    try:
        running = control.probe(st.control_socket)
    except control.ControlError as e:
        running, err = None, str(e)
    else:
        err = ""
    if running is None:
        why = f" ({err})" if err else ""
        yield Finding(subject, f"no proxy answers on {st.control_socket}{why}",
                      f"systemctl start wgpy-proxy   # or: wgpy proxy run --config {path}")


def check_registry(address: str, zone: str) -> Iterator[Finding]:
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode

    subject = f"registry {address}"
    try:
        host, port_text = split_host_port(address, port_optional=True)
        port = int(port_text) if port_text else 53
    except ValueError as e:
        yield Finding(subject, f"not an address: {e}", f"{PROG} --registry ADDR[:PORT]")
        return
    try:
        r = dns.query.udp(dns.message.make_query(zone, "SOA"), host, timeout=2, port=port)
    except (dns.exception.DNSException, OSError) as e:
        yield Finding(subject, f"{format_endpoint(host, port)} does not answer for {zone} "
                      f"({e or type(e).__name__})",
                      "systemctl start wgpy-registry@IF   # IF: the registry's interface")
        yield from _firewall(subject, port, {6 if ":" in host else 4}, "DNS queries")
        return
    if r.rcode() != dns.rcode.NOERROR or not r.answer:
        yield Finding(subject, f"{format_endpoint(host, port)} answers {zone} SOA with "
                      f"{dns.rcode.to_text(r.rcode())}: it serves another zone",
                      f"check --zone in /etc/wgpy/registry-IF.args (it must be {zone})")
    yield from _firewall(subject, port, {6 if ":" in host else 4}, "DNS queries")


# -- the command -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                usage=f"{PROG} [IFACE | CONFIG]... [--proxy FILE] "
                                      "[--registry ADDR[:PORT] --zone ZONE]",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="*", metavar="IFACE|CONFIG",
                   help="an interface, or a wg-quick file (/etc/wireguard/IFACE.conf)")
    p.add_argument("--proxy", type=Path, metavar="FILE", help="a wgpy proxy configuration")
    p.add_argument("--registry", metavar="ADDR[:PORT]", help="a wgpy registry's listener")
    p.add_argument("--zone", help="the registry's zone (with --registry)")
    p.add_argument("--handshake-age", type=float, default=STALE_HANDSHAKE, metavar="SECONDS",
                   help=f"a peer whose last handshake is older is a problem (default "
                        f"{STALE_HANDSHAKE:.0f})")
    return p


def findings(args: argparse.Namespace) -> Iterator[Finding]:
    if args.targets:
        yield from check_tun()
    for target in args.targets:
        config: Path | None = None
        name = target
        if "/" in target or target.endswith(".conf"):
            path, name = resolve_config_path(target, Path("/etc/wireguard"))
            config = path
        yield from check_interface(name, args.handshake_age, config)
    if args.proxy:
        yield from check_proxy(args.proxy)
    if args.registry:
        yield from check_registry(args.registry, args.zone)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not (args.targets or args.proxy or args.registry):
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: name an interface, --proxy FILE or --registry ADDR",
              file=sys.stderr)
        return 2
    if args.registry and not args.zone:
        print(f"{PROG}: error: --registry needs --zone", file=sys.stderr)
        return 2
    try:
        found = list(findings(args))
    except ConfigError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    for f in found:
        print(f"{f.subject}: {f.problem}\n  fix: {f.fix}")
    checked = ", ".join([*args.targets, *([f"proxy {args.proxy}"] if args.proxy else []),
                         *([f"registry {args.registry}"] if args.registry else [])])
    print(f"{len(found)} problem(s) found ({checked})" if found else
          f"no problem found ({checked})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
