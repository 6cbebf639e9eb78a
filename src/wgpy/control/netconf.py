"""Network configuration for wg-quick: pure command builders, one executor.

Theory of operation: every change wg-quick makes to addresses, links,
routes, rules, the firewall and DNS is built here as a ``Cmd`` value
(an argv plus optional standard input) by a pure function, so the exact
commands can be tested without a network.  ``Runner`` executes them,
echoing ``[#] command`` to standard error as wg-quick does, and raises a
typed ``NetconfError`` on failure.  Parsers of ``ip`` output are pure too.

The commands are the ones wg-quick(8) runs (Linux), so a ``wgpy up`` leaves
the same addresses, routes, rules and nftables/iptables state.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TextIO

DEFAULT_FWMARK_TABLE = 51820


class NetconfError(RuntimeError):
    """A network command failed; ``str()`` names the command and its error."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        detail = stderr.strip() or f"exit status {returncode}"
        super().__init__(f"`{shlex.join(self.argv)}' failed: {detail}")


class MissingToolError(NetconfError):
    def __init__(self, tool: str, why: str = "") -> None:
        super().__init__([tool], 127, f"{tool}: command not found{why}")
        self.tool = tool


@dataclass(frozen=True)
class Cmd:
    argv: tuple[str, ...]
    input: str | None = None

    def __str__(self) -> str:
        return " ".join(self.argv)


def _cmd(*argv: str | int, input: str | None = None) -> Cmd:
    return Cmd(tuple(str(a) for a in argv), input)


def proto_of(cidr: str) -> str:
    return "-6" if ":" in cidr else "-4"


# -- builders: links and addresses -------------------------------------------


def address_add(iface: str, address: str) -> Cmd:
    return _cmd("ip", proto_of(address), "address", "add", address, "dev", iface)


def link_set_mtu_up(iface: str, mtu: int) -> Cmd:
    return _cmd("ip", "link", "set", "mtu", mtu, "up", "dev", iface)


def link_delete(iface: str) -> Cmd:
    return _cmd("ip", "link", "delete", "dev", iface)


def link_show(iface: str) -> Cmd:
    return _cmd("ip", "link", "show", "dev", iface)


def brief_addresses(iface: str) -> Cmd:
    return _cmd("ip", "-all", "-brief", "address", "show", "dev", iface)


def addresses_oneline(iface: str, proto: str) -> Cmd:
    return _cmd("ip", "-o", proto, "addr", "show", "dev", iface)


# -- builders: routes and rules -----------------------------------------------


def route_add(iface: str, cidr: str, table: str | int | None = None) -> Cmd:
    extra: tuple[str | int, ...] = ("table", table) if table is not None else ()
    return _cmd("ip", proto_of(cidr), "route", "add", cidr, "dev", iface, *extra)


def route_show_match(iface: str, cidr: str) -> Cmd:
    return _cmd("ip", proto_of(cidr), "route", "show", "dev", iface, "match", cidr)


def route_show_table(proto: str, table: int) -> Cmd:
    return _cmd("ip", proto, "route", "show", "table", table)


def route_get(host: str) -> Cmd:
    return _cmd("ip", "route", "get", host)


def route_show_default() -> Cmd:
    return _cmd("ip", "route", "show", "default")


def rule_show(proto: str) -> Cmd:
    return _cmd("ip", proto, "rule", "show")


def rule_add_not_fwmark(proto: str, table: int) -> Cmd:
    return _cmd("ip", proto, "rule", "add", "not", "fwmark", table, "table", table)


def rule_add_suppress_main(proto: str) -> Cmd:
    return _cmd("ip", proto, "rule", "add", "table", "main", "suppress_prefixlength", 0)


def rule_delete_table(proto: str, table: int) -> Cmd:
    return _cmd("ip", proto, "rule", "delete", "table", table)


def rule_delete_suppress_main(proto: str) -> Cmd:
    return _cmd("ip", proto, "rule", "delete", "table", "main", "suppress_prefixlength", 0)


def sysctl_src_valid_mark() -> Cmd:
    return _cmd("sysctl", "-q", "net.ipv4.conf.all.src_valid_mark=1")


def sort_routes(allowed_ips: Iterable[str]) -> list[str]:
    """wg-quick's ``sort -nr -k 2 -t /``: longest prefix first, ties by reversed bytes."""
    valid = [a for a in allowed_ips if re.fullmatch(r"[0-9a-z:.]+/[0-9]+", a)]
    return sorted(valid, key=lambda a: (int(a.rsplit("/", 1)[1]), a.encode()), reverse=True)


# -- builders: firewall for a default route ------------------------------------


def nft_table_name(iface: str) -> str:
    return f"wg-quick-{iface}"


def nft_default_script(iface: str, proto: str, table: int, addresses: Iterable[str]) -> str:
    """The nft script wg-quick loads for a /0 route (anti-spoofing + connmark)."""
    pf = "ip6" if proto == "-6" else "ip"
    t = nft_table_name(iface)
    s = [
        f"add table {pf} {t}",
        f"add chain {pf} {t} preraw {{ type filter hook prerouting priority -300; }}",
        f"add chain {pf} {t} premangle {{ type filter hook prerouting priority -150; }}",
        f"add chain {pf} {t} postmangle {{ type filter hook postrouting priority -150; }}",
    ]
    s += [
        f'add rule {pf} {t} preraw iifname != "{iface}" {pf} daddr {a} '
        "fib saddr type != local drop"
        for a in addresses
    ]
    s.append(f"add rule {pf} {t} postmangle meta l4proto udp mark {table} ct mark set mark ")
    s.append(f"add rule {pf} {t} premangle meta l4proto udp meta mark set ct mark ")
    return "".join(line + "\n" for line in s)


def iptables_marker(iface: str) -> str:
    return f'-m comment --comment "wg-quick(8) rule for {iface}"'


def iptables_default_script(iface: str, table: int, addresses: Iterable[str]) -> str:
    m = iptables_marker(iface)
    s = ["*raw"]
    s += [
        f"-I PREROUTING ! -i {iface} -d {a} -m addrtype ! --src-type LOCAL -j DROP {m}"
        for a in addresses
    ]
    s += [
        "COMMIT",
        "*mangle",
        f"-I POSTROUTING -m mark --mark {table} -p udp -j CONNMARK --save-mark {m}",
        f"-I PREROUTING -p udp -j CONNMARK --restore-mark {m}",
        "COMMIT",
    ]
    return "".join(line + "\n" for line in s)


def nft_load(script: str) -> Cmd:
    return Cmd(("nft", "-f", "/dev/stdin"), script)


def iptables_restore(proto: str, script: str) -> Cmd:
    return Cmd(("ip6tables-restore" if proto == "-6" else "iptables-restore", "-n"), script)


def nft_delete_script(iface: str, nft_tables_listing: str) -> str:
    """From ``nft list tables`` output, the script deleting this interface's tables."""
    out = []
    for line in nft_tables_listing.splitlines():
        if line.endswith(f" {nft_table_name(iface)}"):
            out.append(f"delete {line}\n")
    return "".join(out)


def iptables_delete_script(iface: str, save_output: str) -> str | None:
    """From ``iptables-save`` output, the restore script undoing our rules, or None."""
    marker = iptables_marker(iface)
    out, found = [], False
    for line in save_output.splitlines():
        ours = line.startswith("-A ") and marker in line
        if line.startswith("*") or line == "COMMIT" or ours:
            if ours:
                found = True
                line = "-D" + line[2:]
            out.append(line + "\n")
    return "".join(out) if found else None


# -- builders: DNS ---------------------------------------------------------------


def resolvconf_add(name: str, dns: Sequence[str], search: Sequence[str]) -> Cmd:
    text = "".join(f"nameserver {d}\n" for d in dns)
    if search:
        text += f"search {' '.join(search)}\n"
    return Cmd(("resolvconf", "-a", name, "-m", "0", "-x"), text)


def resolvconf_delete(name: str) -> Cmd:
    return _cmd("resolvconf", "-d", name, "-f")


# -- parsers of command output (pure) ---------------------------------------------


def parse_mtu(text: str) -> int | None:
    m = re.search(r"mtu ([0-9]+)", text)
    return int(m.group(1)) if m else None


def parse_dev(text: str) -> str | None:
    m = re.search(r"dev ([^ ]+)", text)
    return m.group(1) if m else None


def parse_oneline_addresses(text: str) -> list[str]:
    """``ip -o addr show`` -> the addresses (without prefix length)."""
    out = []
    for line in text.splitlines():
        m = re.match(r".*inet6? ([0-9a-f:.]+)/[0-9]+.*", line)
        if m:
            out.append(m.group(1))
    return out


def parse_brief_addresses(iface: str, text: str) -> list[str]:
    m = re.match(rf"^{re.escape(iface)} + [A-Z]+ +(.+)$", text.split("\n", 1)[0])
    return m.group(1).split() if m else []


# -- the executor ---------------------------------------------------------------------


class Runner:
    """Runs ``Cmd``s.  ``run`` echoes and raises; ``query`` is silent and never raises."""

    def __init__(self, echo: TextIO | None = None, dry_run: bool = False) -> None:
        self.echo = echo if echo is not None else sys.stderr
        self.dry_run = dry_run
        self.log: list[Cmd] = []

    def run(self, cmd: Cmd, quiet: bool = False) -> str:
        if not quiet:
            self.echo.write(f"[#] {cmd}\n")
            self.echo.flush()
        self.log.append(cmd)
        if self.dry_run:
            return ""
        if shutil.which(cmd.argv[0]) is None:
            raise MissingToolError(cmd.argv[0])
        p = subprocess.run(
            list(cmd.argv), input=cmd.input, capture_output=True, text=True, timeout=60
        )
        if p.returncode != 0:
            raise NetconfError(cmd.argv, p.returncode, p.stderr)
        if p.stderr:
            self.echo.write(p.stderr)
        return p.stdout

    def query(self, cmd: Cmd) -> tuple[int, str]:
        """Run a read-only command: (exit status, stdout); 127 if the tool is missing."""
        if shutil.which(cmd.argv[0]) is None:
            return 127, ""
        try:
            p = subprocess.run(
                list(cmd.argv), input=cmd.input, capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired):
            return 1, ""
        return p.returncode, p.stdout

    def run_hook(self, hook: str, iface: str) -> None:
        """A Pre/Post Up/Down snippet, run by bash with ``%i`` replaced."""
        text = hook.replace("%i", iface)
        self.echo.write(f"[#] {text}\n")
        self.echo.flush()
        if self.dry_run:
            return
        p = subprocess.run(["bash", "-c", "set -e -o pipefail\n" + text], timeout=300)
        if p.returncode != 0:
            raise NetconfError(["bash", "-c", text], p.returncode, "hook failed")
