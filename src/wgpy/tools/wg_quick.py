"""``wgpy up | down | save | strip``: wg-quick(8) for userspace devices.

Theory of operation, following the Linux wg-quick script step by step:

up:   refuse if the link exists; PreUp; start the userspace implementation
      (``$WG_QUICK_USERSPACE_IMPLEMENTATION``, default ``wgpyd``) and wait for
      its UAPI socket; apply the wg(8) part of the file; add each Address;
      set the MTU (given, or the largest MTU of the routes to the peers'
      endpoints, else of the default route, minus 80) and bring the link up;
      DNS through resolvconf; one route per allowed IP, longest prefix first
      (a /0 gets fwmark policy routing: its own table, ``not fwmark`` and
      ``suppress_prefixlength 0`` rules, and nftables or iptables rules
      against spoofing); PostUp.  Any failure undoes what was done.
down: PreDown; save if SaveConfig; remove the rules, delete the link (the
      userspace daemon exits with it); DNS and firewall cleanup; PostDown.

The whole file is parsed and checked before anything changes.  Only the
kernel module path of wg-quick is left out: wgpy speaks the UAPI.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from wgpy.control import netconf as nc
from wgpy.control.config import (
    QuickConfig,
    format_config,
    parse_quick_config,
    resolve_config_path,
    to_uapi,
    world_accessible,
)
from wgpy.control.uapi import SOCKET_DIR
from wgpy.control.uapi_client import serving
from wgpy.protocol.errors import ConfigError
from wgpy.service import notify
from wgpy.tools.devices import DeviceError, get_device, list_devices, set_device

PROGRAM = "wgpy"

USAGE = """\
Usage: wgpy [ up | down | save | strip ] [ CONFIG_FILE | INTERFACE ]
       wgpy up --foreground [ CONFIG_FILE | INTERFACE ]

  CONFIG_FILE is a configuration file, whose filename is the interface name
  followed by `.conf'. Otherwise, INTERFACE is an interface name, with
  configuration found at /etc/wireguard/INTERFACE.conf. It is to be readable
  by wg(8)'s `setconf' sub-command, with the exception of the following additions
  to the [Interface] section, which are handled by wgpy:

  - Address: may be specified one or more times and contains one or more
    IP addresses (with an optional CIDR mask) to be set for the interface.
  - DNS: an optional DNS server to use while the device is up.
  - MTU: an optional MTU for the interface; if unspecified, auto-calculated.
  - Table: an optional routing table to which routes will be added; if
    unspecified or `auto', the default table is used. If `off', no routes
    are added.
  - PreUp, PostUp, PreDown, PostDown: script snippets which will be executed
    by bash(1) at the corresponding phases of the link, most commonly used
    to configure DNS. The string `%i' is expanded to INTERFACE.
  - SaveConfig: if set to `true', the configuration is saved from the current
    state of the interface upon shutdown.

  up     creates the interface: starts the userspace implementation named by
         WG_QUICK_USERSPACE_IMPLEMENTATION (default `wgpyd') with the interface
         name as its argument, waits for its socket in /var/run/wireguard,
         then configures keys, peers, addresses, MTU, DNS and routes.
  up --foreground
         also runs the daemon in the foreground as a child and stays, as a
         service manager expects (the wgpy@.service unit): it tells systemd
         READY=1 once the interface is configured, takes the interface down
         on SIGTERM or SIGINT (exit 0), and exits 1 after cleaning up if the
         daemon dies.
  down   removes it, with its routes, rules, firewall entries and DNS.
  save   writes the running configuration back to CONFIG_FILE.
  strip  prints CONFIG_FILE without the keys above, for `wgpy setconf'.

ENVIRONMENT
  WG_QUICK_USERSPACE_IMPLEMENTATION  the daemon to start (default wgpyd)
  WGPY_SOCKET_TIMEOUT                seconds to wait for its socket (default 10)

EXAMPLES
  wgpy up wg0               # /etc/wireguard/wg0.conf
  wgpy down ./office.conf
  wgpy syncconf wg0 <(wgpy strip wg0)
"""


class QuickError(Exception):
    """A failure to report as ``wgpy: MESSAGE`` and exit 1."""


@dataclass
class _State:
    qc: QuickConfig
    runner: nc.Runner
    have_set_dns: bool = False
    have_set_firewall: bool = False
    foreground: bool = False  # up --foreground: the daemon is our child
    daemon: subprocess.Popen[bytes] | None = None

    @property
    def iface(self) -> str:
        return self.qc.interface


def _die(msg: str) -> int:
    sys.stderr.write(f"{PROGRAM}: {msg}\n")
    return 1


def load(arg: str, confdir: Path = Path("/etc/wireguard")) -> QuickConfig:
    """Resolve, read and fully validate a wg-quick file.  :raises ConfigError:"""
    path, iface = resolve_config_path(arg, confdir)
    if world_accessible(path):
        sys.stderr.write(f"Warning: `{path}' is world accessible\n")
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError as e:
        raise ConfigError(e.strerror or "cannot read", str(path)) from None
    return parse_quick_config(text, path, iface, warn=_warn)


def _warn(msg: str) -> None:
    sys.stderr.write(msg + "\n")


def _command(argv: list[str], name: str, root: bool = True) -> tuple[QuickConfig | None, int]:
    if len(argv) == 1 and argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return None, 0
    if len(argv) != 1:
        sys.stderr.write(USAGE)
        return None, 1
    if root and os.geteuid() != 0:
        return None, _die(f"`{name}' must be run as root")
    try:
        return load(argv[0]), 0
    except ConfigError as e:
        return None, _die(str(e))


# -- up --------------------------------------------------------------------------


def up_main(argv: list[str]) -> int:
    foreground = "--foreground" in argv
    qc, rc = _command([a for a in argv if a != "--foreground"], "up")
    if qc is None:
        return rc
    st = _State(qc, nc.Runner(), foreground=foreground)
    rc, _ = st.runner.query(nc.link_show(qc.interface))
    if rc == 0:
        return _die(f"`{qc.interface}' already exists")
    try:
        cmd_up(st)
    except (QuickError, nc.NetconfError, DeviceError, ConfigError) as e:
        _safe_del_if(st)
        _end_daemon(st)
        return _die(_reason(e))
    except KeyboardInterrupt:
        _safe_del_if(st)
        _end_daemon(st)
        return 130
    return supervise(st) if foreground else 0


def supervise(st: _State) -> int:
    """``up --foreground`` (the systemd unit): tell systemd the interface is up,
    then wait.  SIGTERM or SIGINT takes the interface down as ``down`` does
    (exit 0); the daemon dying takes down what ``up`` set (exit 1, so that
    ``Restart=on-failure`` brings it back)."""
    proc = st.daemon
    assert proc is not None
    stop = threading.Event()

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    notify.ready(f"{st.iface} is up")
    while not stop.wait(0.5):
        code = proc.poll()
        if code is not None:
            notify.stopping(f"{implementation()} exited")
            _safe_del_if(st)
            return _die(f"`{implementation()} {st.iface}' exited with status {code}; "
                        f"{st.iface} is down")
    notify.stopping(f"taking {st.iface} down")
    rc = take_down(st)
    _end_daemon(st)
    return rc


def _end_daemon(st: _State) -> None:
    """Wait for a foreground daemon to exit (deleting its link ends it), bounded."""
    proc = st.daemon
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _reason(e: Exception) -> str:
    if isinstance(e, DeviceError):
        return f"Unable to configure interface: {e}"
    return str(e)


def cmd_up(st: _State) -> None:
    qc = st.qc
    for hook in qc.pre_up:
        st.runner.run_hook(hook, st.iface)
    add_if(st)
    st.runner.echo.write(f"[#] wgpy setconf {st.iface} <(wgpy strip {qc.path})\n")
    set_device(st.iface, to_uapi(qc.device))
    for a in qc.addresses:
        st.runner.run(nc.address_add(st.iface, a))
    set_mtu_up(st)
    set_dns(st)
    allowed = [a for p in get_device(st.iface).peers for a in p.allowed_ips]
    for cidr in nc.sort_routes(allowed):
        add_route(st, cidr)
    for hook in qc.post_up:
        st.runner.run_hook(hook, st.iface)


def implementation() -> str:
    return os.environ.get("WG_QUICK_USERSPACE_IMPLEMENTATION") or "wgpyd"


def add_if(st: _State) -> None:
    impl = implementation()
    if shutil.which(impl) is None:
        raise QuickError(
            f"the userspace implementation `{impl}' is not installed; "
            "set WG_QUICK_USERSPACE_IMPLEMENTATION (e.g. to wireguard-go)"
        )
    sock = SOCKET_DIR / f"{st.iface}.sock"
    if sock.exists():
        if st.iface in list_devices():  # also deletes the socket if nobody listens
            raise QuickError(f"`{st.iface}' already exists (its UAPI socket {sock} is live)")
        sock.unlink(missing_ok=True)
    if st.foreground:
        # Our child, in the foreground, without NOTIFY_SOCKET: the readiness
        # systemd waits for is ours (configured), not the daemon's (socket up).
        st.runner.echo.write(f"[#] {impl} -f {st.iface}\n")
        st.runner.echo.flush()
        proc = subprocess.Popen([impl, "-f", st.iface], env=notify.child_environment())
        st.daemon = proc
        await_socket(proc, sock, f"{impl} -f {st.iface}")
    else:
        st.runner.echo.write(f"[#] {impl} {st.iface}\n")
        st.runner.echo.flush()
        proc = subprocess.Popen([impl, st.iface], start_new_session=True)
        await_socket(proc, sock, f"{impl} {st.iface}")


def await_socket(proc: subprocess.Popen[bytes], sock: Path, command: str) -> None:
    """Wait until the daemon ``proc`` serves ``sock`` (WGPY_SOCKET_TIMEOUT,
    default 10 s).  :raises QuickError: it exited with an error, or took too long."""
    timeout = float(os.environ.get("WGPY_SOCKET_TIMEOUT", "10"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serving(sock):
            return
        rc = proc.poll()
        if rc is not None and rc != 0:
            raise QuickError(f"`{command}' exited with status {rc}")
        time.sleep(0.05)
    if proc.poll() is None:
        proc.terminate()
    raise QuickError(f"`{command}' did not create {sock} within {timeout:g} s")


def _endpoint_host(endpoint: str) -> str | None:
    m = re.fullmatch(r"\[?([a-z0-9:.]+)\]?:[0-9]+", endpoint)
    return m.group(1) if m else None


def _route_mtu(st: _State, text: str) -> int:
    mtu = nc.parse_mtu(text)
    if mtu is not None:
        return mtu
    dev = nc.parse_dev(text)
    if dev is None:
        return 0
    _, link = st.runner.query(nc.link_show(dev))
    return nc.parse_mtu(link) or 0


def set_mtu_up(st: _State) -> None:
    if st.qc.mtu is not None:
        st.runner.run(nc.link_set_mtu_up(st.iface, st.qc.mtu))
        return
    mtu = 0
    for p in get_device(st.iface).peers:
        host = _endpoint_host(p.endpoint) if p.endpoint else None
        if host is None:
            continue
        _, out = st.runner.query(nc.route_get(host))
        mtu = max(mtu, _route_mtu(st, out))
    if mtu == 0:
        _, out = st.runner.query(nc.route_show_default())
        mtu = max(mtu, _route_mtu(st, out.split("\n", 1)[0]))
    st.runner.run(nc.link_set_mtu_up(st.iface, (mtu or 1500) - 80))


def _resolvconf_prefix() -> str:
    try:
        lines = Path("/etc/resolvconf/interface-order").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        m = re.fullmatch(r"([A-Za-z0-9-]+)\*", line.strip())
        if m:
            return m.group(1) + "."
    return ""


def set_dns(st: _State) -> None:
    if not st.qc.dns:
        return
    if shutil.which("resolvconf") is None:
        raise QuickError(
            f"DNS = {', '.join(st.qc.dns)} is set in {st.qc.path}, but resolvconf(8) is not "
            "installed: install resolvconf or openresolv, or remove the DNS line and "
            "configure name resolution yourself (e.g. in PostUp)"
        )
    st.runner.run(nc.resolvconf_add(_resolvconf_prefix() + st.iface, st.qc.dns,
                                    st.qc.dns_search))
    st.have_set_dns = True


def unset_dns(st: _State) -> None:
    if st.qc.dns and shutil.which("resolvconf") is not None:
        st.runner.run(nc.resolvconf_delete(_resolvconf_prefix() + st.iface))


def _table_auto(st: _State) -> bool:
    return st.qc.table in (None, "auto")


def add_route(st: _State, cidr: str) -> None:
    table = st.qc.table
    if table == "off":
        return
    if not _table_auto(st):
        st.runner.run(nc.route_add(st.iface, cidr, table))
    elif cidr.endswith("/0"):
        add_default(st, cidr)
    else:
        _, out = st.runner.query(nc.route_show_match(st.iface, cidr))
        if not out.strip():
            st.runner.run(nc.route_add(st.iface, cidr))


def get_fwmark(st: _State) -> int | None:
    try:
        fwmark = get_device(st.iface).fwmark
    except DeviceError:
        return None
    return fwmark or None


def add_default(st: _State, cidr: str) -> None:
    table = get_fwmark(st)
    if table is None:
        table = nc.DEFAULT_FWMARK_TABLE
        while (st.runner.query(nc.route_show_table("-4", table))[1].strip()
               or st.runner.query(nc.route_show_table("-6", table))[1].strip()):
            table += 1
        st.runner.echo.write(f"[#] wg set {st.iface} fwmark {table}\n")
        set_device(st.iface, [f"fwmark={table}"])
    proto = nc.proto_of(cidr)
    st.runner.run(nc.route_add(st.iface, cidr, table))
    st.runner.run(nc.rule_add_not_fwmark(proto, table))
    st.runner.run(nc.rule_add_suppress_main(proto))
    _, out = st.runner.query(nc.addresses_oneline(st.iface, proto))
    addrs = nc.parse_oneline_addresses(out)
    if proto == "-4":
        st.runner.run(nc.sysctl_src_valid_mark())
    if shutil.which("nft"):
        st.runner.run(nc.nft_load(nc.nft_default_script(st.iface, proto, table, addrs)))
    else:
        st.runner.run(nc.iptables_restore(proto, nc.iptables_default_script(st.iface, table,
                                                                            addrs)))
    st.have_set_firewall = True


def remove_firewall(st: _State) -> None:
    if shutil.which("nft"):
        _, tables = st.runner.query(nc.Cmd(("nft", "list", "tables")))
        script = nc.nft_delete_script(st.iface, tables)
        if script:
            st.runner.run(nc.nft_load(script))
    if shutil.which("iptables"):
        for proto, save in (("-4", "iptables-save"), ("-6", "ip6tables-save")):
            _, out = st.runner.query(nc.Cmd((save,)))
            restore = nc.iptables_delete_script(st.iface, out)
            if restore is not None:
                st.runner.run(nc.iptables_restore(proto, restore))


def _has_default_route(st: _State) -> bool:
    try:
        peers = get_device(st.iface).peers
    except DeviceError:
        return False
    return any(a.endswith("/0") for p in peers for a in p.allowed_ips)


def del_if(st: _State) -> None:
    if st.have_set_dns:
        unset_dns(st)
    if st.have_set_firewall:
        remove_firewall(st)
    table = get_fwmark(st) if _table_auto(st) else None
    if table is not None and _has_default_route(st):
        for proto in ("-4", "-6"):
            for _ in range(64):  # bounded: each pass deletes one rule
                if f"lookup {table}" not in st.runner.query(nc.rule_show(proto))[1]:
                    break
                st.runner.run(nc.rule_delete_table(proto, table))
            for _ in range(64):
                rules = st.runner.query(nc.rule_show(proto))[1]
                if "from all lookup main suppress_prefixlength 0" not in rules:
                    break
                st.runner.run(nc.rule_delete_suppress_main(proto))
    st.runner.run(nc.link_delete(st.iface))


def _safe_del_if(st: _State) -> None:
    try:
        del_if(st)
    except (nc.NetconfError, DeviceError) as e:
        sys.stderr.write(f"{PROGRAM}: cleanup: {e}\n")


# -- down, save, strip --------------------------------------------------------------


def _is_wireguard(iface: str) -> bool:
    try:
        return iface in list_devices()
    except DeviceError:
        return False


def down_main(argv: list[str]) -> int:
    qc, rc = _command(argv, "down")
    if qc is None:
        return rc
    st = _State(qc, nc.Runner())
    if not _is_wireguard(qc.interface):
        return _die(f"`{qc.interface}' is not a WireGuard interface")
    return take_down(st)


def take_down(st: _State) -> int:
    """``down``'s steps: PreDown, SaveConfig, the link and its routes, DNS,
    firewall, PostDown."""
    qc = st.qc
    try:
        for hook in qc.pre_down:
            st.runner.run_hook(hook, st.iface)
        if qc.save_config:
            save_config(st)
        del_if(st)
        for step in (unset_dns, remove_firewall):
            try:
                step(st)
            except nc.NetconfError as e:
                sys.stderr.write(f"{PROGRAM}: {e}\n")
        for hook in qc.post_down:
            st.runner.run_hook(hook, st.iface)
    except (QuickError, nc.NetconfError, DeviceError, OSError) as e:
        return _die(str(e))
    return 0


def save_main(argv: list[str]) -> int:
    qc, rc = _command(argv, "save")
    if qc is None:
        return rc
    if not _is_wireguard(qc.interface):
        return _die(f"`{qc.interface}' is not a WireGuard interface")
    try:
        save_config(_State(qc, nc.Runner()))
    except (nc.NetconfError, DeviceError, OSError) as e:
        return _die(f"Could not write configuration file: {e}")
    return 0


def saved_config(st: _State) -> str:
    """The text ``save`` writes: wg-quick keys from the live interface + showconf."""
    qc = st.qc
    _, brief = st.runner.query(nc.brief_addresses(st.iface))
    new = ["[Interface]\n"]
    new += [f"Address = {a}\n" for a in nc.parse_brief_addresses(st.iface, brief)]
    name = _resolvconf_prefix() + st.iface
    rc, listing = st.runner.query(nc.Cmd(("resolvconf", "-l", name)))
    if rc != 0:
        listing = ""
    if rc != 0:
        try:
            listing = (Path("/etc/resolvconf/run/interface") / name).read_text()
        except OSError:
            pass
    for line in listing.splitlines():
        m = re.fullmatch(r"nameserver ([a-zA-Z0-9_=+:%.-]+)", line)
        if m:
            new.append(f"DNS = {m.group(1)}\n")
    if qc.mtu is not None:
        _, link = st.runner.query(nc.link_show(st.iface))
        mtu = nc.parse_mtu(link)
        if mtu is not None:
            new.append(f"MTU = {mtu}\n")
    if qc.table is not None:
        new.append(f"Table = {qc.table}\n")
    if qc.save_config:
        new.append("SaveConfig = true\n")
    for key, hooks in (("PreUp", qc.pre_up), ("PostUp", qc.post_up),
                       ("PreDown", qc.pre_down), ("PostDown", qc.post_down)):
        new += [f"{key} = {h}\n" for h in hooks]
    st.runner.echo.write(f"[#] wg showconf {st.iface}\n")
    current = format_config(get_device(st.iface)).rstrip("\n")
    return current.replace("[Interface]\n", "".join(new), 1) + "\n"


def save_config(st: _State) -> None:
    text = saved_config(st)
    path = st.qc.path
    tmp = path.with_name(path.name + ".tmp")
    old = os.umask(0o077)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        os.umask(old)
        if tmp.exists():
            tmp.unlink()


def strip_main(argv: list[str]) -> int:
    qc, rc = _command(argv, "strip", root=False)
    if qc is None:
        return rc
    sys.stdout.write(qc.stripped())
    return 0
