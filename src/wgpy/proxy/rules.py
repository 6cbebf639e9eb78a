"""Pure builders for the kernel side of the proxy: nftables, routes, ip rules.

What ``setup`` installs, per address family that has a published prefix:

* an AnyIP route per prefix, ``ip route add local PREFIX dev lo table local``,
  so every address of the prefix is local (the Spectrum trick: one route,
  not one address per IP);
* an nftables table of our own (``inet NftTable``) whose prerouting chain
  sends TCP and UDP for each rule's prefixes and ports to the one
  ``IP_TRANSPARENT`` listener with ``tproxy`` and marks the packet;
* ``ip rule fwmark MARK lookup TABLE`` with ``local default dev lo`` in
  ``TABLE``, the canonical TPROXY routing that delivers marked packets
  locally even where no AnyIP route exists.

Routes and rules carry ``proto ROUTE_PROTO`` so ``teardown`` deletes only what
``setup`` added, and the nft table is replaced or deleted as a unit.  The
builders return :class:`Command` values; :mod:`wgpy.proxy.netsetup` runs them.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from .config import ProxyConfig, Rule

ROUTE_PROTO = 242  # a routing-protocol tag of our own (rtnetlink "proto")


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    stdin: str | None = None
    ok_if: tuple[str, ...] = ()  # stderr fragments that mean "already done"

    def shell(self) -> str:
        line = " ".join(shlex.quote(a) for a in self.argv)
        if self.stdin is None:
            return line
        return f"{line} <<'EOF'\n{self.stdin.rstrip()}\nEOF"


_EXISTS = ("File exists",)
_GONE = ("No such file or directory", "No such process", "Cannot find device")


def _ports_expr(rule: Rule) -> str:
    if rule.all_ports():
        return ""
    items = ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in rule.ports)
    return f" th dport {{ {items} }}"


def nft_ruleset(cfg: ProxyConfig) -> str:
    """The ``nft -f`` script that atomically (re)creates our table."""
    st = cfg.settings
    t = st.nft_table
    lines = [
        f"table inet {t}",
        f"delete table inet {t}",
        f"table inet {t} {{",
        "\tchain prerouting {",
        "\t\ttype filter hook prerouting priority mangle; policy accept;",
    ]
    for r in cfg.rules:
        for version, fam, to in ((4, "ip", st.listen_v4), (6, "ip6", f"[{st.listen_v6}]")):
            nets = [str(p) for p in r.prefixes if p.version == version]
            if not nets:
                continue
            for proto in r.protocols:
                lines.append(
                    f"\t\t{fam} daddr {{ {', '.join(nets)} }} meta l4proto {proto}"
                    f"{_ports_expr(r)} tproxy {fam} to {to}:{st.listen_port}"
                    f' meta mark set {st.mark:#x} counter accept comment "rule {r.name}"'
                )
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


def _families(cfg: ProxyConfig) -> list[int]:
    return [v for v in (4, 6) if cfg.prefixes(v)]


def _route(version: int, verb: str, dst: str, table: str) -> tuple[str, ...]:
    fam = ("-4",) if version == 4 else ("-6",)
    return ("ip", *fam, "route", verb, "local", dst, "dev", "lo", "table", table,
            "proto", str(ROUTE_PROTO))  # fmt: skip


def _iprule(version: int, verb: str, cfg: ProxyConfig) -> tuple[str, ...]:
    st = cfg.settings
    fam = "-4" if version == 4 else "-6"
    return ("ip", fam, "rule", verb, "fwmark", f"{st.mark:#x}", "lookup", str(st.table),
            "priority", str(st.rule_priority), "protocol", str(ROUTE_PROTO))  # fmt: skip


def route_specs(cfg: ProxyConfig) -> list[tuple[int, str, str]]:
    """(family, destination, table) of every route we own."""
    out: list[tuple[int, str, str]] = []
    for v in _families(cfg):
        out += [(v, str(p), "local") for p in cfg.prefixes(v)]
        out.append((v, "0.0.0.0/0" if v == 4 else "::/0", str(cfg.settings.table)))
    return out


def setup_commands(cfg: ProxyConfig) -> list[Command]:
    """Commands that install the nft table, AnyIP routes and fwmark rules."""
    cmds = [Command(("nft", "-f", "-"), stdin=nft_ruleset(cfg))]
    cmds += [Command(_route(v, "add", d, t), ok_if=_EXISTS) for v, d, t in route_specs(cfg)]
    cmds += [Command(_iprule(v, "add", cfg), ok_if=_EXISTS) for v in _families(cfg)]
    return cmds


def teardown_commands(cfg: ProxyConfig) -> list[Command]:
    """Commands that remove exactly what :func:`setup_commands` installs."""
    cmds = [Command(_iprule(v, "del", cfg), ok_if=_GONE) for v in _families(cfg)]
    cmds += [Command(_route(v, "del", d, t), ok_if=_GONE) for v, d, t in route_specs(cfg)]
    cmds.append(Command(("nft", "delete", "table", "inet", cfg.settings.nft_table), ok_if=_GONE))
    return cmds


def sync_commands(old: ProxyConfig, new: ProxyConfig) -> list[Command]:
    """Move a live setup from ``old`` to ``new`` (for SIGHUP reload).

    The nft table is replaced atomically; routes and rules that disappear are
    deleted and new ones added.  The listener settings must not differ (the
    server refuses such a reload before calling this).
    """
    cmds = [Command(("nft", "-f", "-"), stdin=nft_ruleset(new))]
    old_r, new_r = route_specs(old), route_specs(new)
    cmds += [Command(_route(v, "add", d, t), ok_if=_EXISTS) for v, d, t in new_r if
             (v, d, t) not in old_r]  # fmt: skip
    cmds += [Command(_iprule(v, "add", new), ok_if=_EXISTS) for v in _families(new)
             if v not in _families(old)]  # fmt: skip
    cmds += [Command(_iprule(v, "del", old), ok_if=_GONE) for v in _families(old)
             if v not in _families(new)]  # fmt: skip
    cmds += [Command(_route(v, "del", d, t), ok_if=_GONE) for v, d, t in old_r if
             (v, d, t) not in new_r]  # fmt: skip
    return cmds


def script(cmds: list[Command]) -> str:
    """Render commands as a shell script (what ``--print`` shows)."""
    return "\n".join(c.shell() for c in cmds) + "\n"
