"""``wgpy proxy``: command-line front end (argv parsing and exit codes only)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from wgpy.protocol.errors import ConfigError
from wgpy.service import journal
from wgpy.service.metrics import listen_address

from . import config as cfgmod
from . import control, rules
from .netsetup import SetupError, apply_setup, apply_teardown
from .server import ProxyServer

PROG = "wgpy proxy"

DESCRIPTION = """\
Publish services that sit behind a WireGuard tunnel on every port of whole
IP prefixes, in the style of Cloudflare Spectrum.  An AnyIP route makes each
prefix local, an nftables "tproxy" rule hands each rule's TCP packets (and
its UDP datagrams, where the rule says Protocol = tcp, udp) to one
IP_TRANSPARENT listener per protocol and family, and the proxy forwards each
connection or UDP flow to the origin its rule names, normally a tunnel
address reached through wgpyd."""

EPILOG = """\
commands:
  run --config FILE [--setup] [--metrics ADDR:PORT]
                                serve (also: wgpy proxy --config FILE)
  setup --config FILE [--print] install AnyIP routes, ip rules, nft table
  teardown --config FILE [--print] [--force]
                                remove exactly what setup installed; refused
                                while a proxy still serves it, unless --force
  check --config FILE           validate the file and summarise the rules
  status [--config FILE | --socket PATH] [--json]
                                counters of a running proxy
  reload [--config FILE | --socket PATH]
                                ask the running proxy to re-read its file (as
                                SIGHUP does) and print its verdict; a bad file
                                is refused and the running configuration stays
  status and reload read only ControlSocket from FILE, so they reach the
  proxy even while the file on disk does not parse.

configuration (INI style, '#' comments, keys case-insensitive):
  [Proxy]   ListenPort (15001), ListenAddress (127.0.0.1, ::1), Mark (0x2a0),
            Table (4242), RulePriority (4242), NftTable (wgpy_proxy),
            ControlSocket (/run/wgpy-proxy.sock), MaxConnections (4096),
            MaxPerSource (256), ConnectTimeout (5), IdleTimeout (300),
            UdpIdleTimeout (60), BufferSize (262144), HealthInterval (5),
            HealthTimeout (2), HealthFall (2), HealthRise (1)
  [Rule]    Name, Prefix (repeatable CIDRs), Ports (80, 8000-8999; default
            all), Protocol (tcp, the default; udp; or tcp, udp), Origin
            (HOST:PORT, or HOST for the client's port; repeat for
            round-robin), Map (ADDR -> ORIGIN, ...), ProxyProtocol (off, the
            default; v1|v2 only for origins that read the header), Allow,
            Deny (CIDRs; Deny wins), MaxPerSource, MaxConnections,
            RatePerSource (new conns/s), ConnectTimeout, IdleTimeout,
            HealthCheck (yes|no), HealthPort

example:
  [Rule]
  Name = web
  Prefix = 10.77.0.0/24
  Origin = 10.99.0.2:8080

signals:
  SIGHUP    reload; a bad file is logged and changes nothing (under systemd:
            systemctl reload wgpy-proxy, notified RELOADING=1, then READY=1)
  SIGTERM   stop; with --setup, remove the kernel setup

exit status:
  0 success, 1 runtime failure, 2 usage or configuration error

See the README section "wgpy proxy" for a walkthrough."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Usage(f"{self.prog}: {message}")


class _Usage(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_)

    r = cmd("run", "serve connections for the rules in FILE")
    r.add_argument("--config", "-c", required=True, metavar="FILE")
    r.add_argument("--setup", action="store_true",
                   help="install the kernel setup at start, sync it on reload, remove at exit")
    r.add_argument("--metrics", metavar="ADDR:PORT",
                   help="serve Prometheus metrics on http://ADDR:PORT/metrics (what status "
                        "shows; off by default)")
    r.add_argument("--verbose", "-v", action="store_true", help="log at debug level")
    for name, what in (("setup", "install"), ("teardown", "remove")):
        s = cmd(name, f"{what} the AnyIP routes, fwmark rules and nftables table for FILE")
        s.add_argument("--config", "-c", required=True, metavar="FILE")
        s.add_argument("--print", action="store_true", dest="print_only",
                       help="print the commands instead of running them")
        if name == "teardown":
            s.add_argument("--force", action="store_true",
                           help="remove the setup even while a proxy still serves it")
    c = cmd("check", "validate FILE and summarise its rules")
    c.add_argument("--config", "-c", required=True, metavar="FILE")
    for name, what in (("status", "show counters of a running proxy"),
                       ("reload", "ask a running proxy to re-read its file")):
        s = cmd(name, what)
        g = s.add_mutually_exclusive_group()
        g.add_argument("--config", "-c", metavar="FILE",
                       help="take ControlSocket from FILE (only that line is read)")
        g.add_argument("--socket", "-s", metavar="PATH", help="the control socket")
        if name == "status":
            s.add_argument("--json", action="store_true", help="print raw JSON")
    return p


def _run(a: argparse.Namespace) -> int:
    if a.metrics:
        try:
            listen_address(a.metrics)
        except ValueError as e:
            raise _Usage(f"{PROG}: --metrics: {e}") from None
    cfg = cfgmod.load(a.config)
    journal.configure_logging("wgpy-proxy: %(levelname)s %(message)s",
                              logging.DEBUG if a.verbose else logging.INFO)
    server = ProxyServer(cfg, a.config, manage_setup=a.setup, metrics=a.metrics)
    try:
        asyncio.run(server.run())
    except (OSError, SetupError, control.ControlError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    return 0


def _setup(a: argparse.Namespace) -> int:
    cfg = cfgmod.load(a.config)
    if a.command == "setup":
        cmds, apply = rules.setup_commands(cfg), apply_setup
    else:
        cmds, apply = rules.teardown_commands(cfg), apply_teardown
    if a.print_only:
        sys.stdout.write(rules.script(cmds))
        return 0
    if a.command == "teardown" and not a.force:
        _refuse_under_a_running_proxy(cfg.settings.control_socket)
    apply(cfg)
    return 0


class _Refused(Exception):
    pass


def _refuse_under_a_running_proxy(sock: str) -> None:
    """Teardown would leave a live proxy serving nothing (its clients time
    out), so it refuses while one answers on the file's control socket."""
    try:
        st = control.probe(sock)
    except control.ControlError as e:
        raise _Refused(f"cannot tell whether a proxy still runs ({e}); "
                       "stop it first, or use --force") from None  # fmt: skip
    if st is not None:
        raise _Refused(f"a proxy (pid {st.get('pid')}) still serves this setup on {sock}: "
                       "stop it first (SIGTERM), or use --force")  # fmt: skip


def _check(a: argparse.Namespace) -> int:
    cfg = cfgmod.load(a.config)
    for r in cfg.rules:
        ports = "all ports" if r.all_ports() else ",".join(
            str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in r.ports)  # fmt: skip
        origins = ", ".join(str(o) for o in r.origins) or "-"
        print(f"rule {r.name} (line {r.line}): {'+'.join(r.protocols)} "
              f"{', '.join(map(str, r.prefixes))} {ports} -> {origins}"
              + (f" + {len(r.table)} mapped address(es)" if r.table else "")
              + (f", PROXY v{r.proxy_protocol}" if r.proxy_protocol else ""))  # fmt: skip
    print(f"{a.config}: ok, {len(cfg.rules)} rule(s)")
    return 0


def _socket_path(a: argparse.Namespace) -> str:
    if a.socket:
        return str(a.socket)
    if a.config:
        return cfgmod.control_socket(a.config)
    return cfgmod.Settings().control_socket


def _human(n: object) -> str:
    v = float(n) if isinstance(n, int | float) else 0.0
    for unit in ("B", "KiB", "MiB", "GiB"):
        if v < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return str(n)


def _print_status(st: dict[str, object]) -> None:
    print(f"pid {st.get('pid')}, up {st.get('uptime')} s, config {st.get('config')}")
    print(f"active {st.get('active')}/{st.get('max_connections')}, reloads {st.get('reloads')}"
          f" ({st.get('reload_failures')} refused)")  # fmt: skip
    if st.get("last_reload_error"):
        print(f"last refused reload: {st['last_reload_error']}")
    rules_ = st.get("rules")
    for name, rs in (rules_.items() if isinstance(rules_, dict) else []):
        refused = ", ".join(f"{k}={v}" for k, v in sorted(rs.get("refused", {}).items())) or "0"
        print(f"rule {name}: tcp {rs['connections']} ({rs['active']} active), "
              f"udp flows {rs['udp_flows']} ({rs['udp_active']} active), "
              f"up {_human(rs['bytes_up'])}, down {_human(rs['bytes_down'])}, "
              f"refused {refused}, origin failures {rs['origin_failures']}, "
              f"silent origin closes {rs['origin_silent_closes']}")  # fmt: skip
        if rs.get("last_origin_problem"):
            print(f"  last: {rs['last_origin_problem']}")
    origins = st.get("origins")
    for ep, h in (origins.items() if isinstance(origins, dict) else []):
        print(f"origin {ep}: {'up' if h.get('up') else 'DOWN'} ({h.get('checks')} checks)")


def _status(a: argparse.Namespace) -> int:
    st = control.request(_socket_path(a), "status")
    if a.json:
        print(json.dumps(st, indent=2, sort_keys=True))
    else:
        _print_status(st)
    return 0


def _reload(a: argparse.Namespace) -> int:
    sock = _socket_path(a)
    res = control.request(sock, "reload")
    path = res.get("config")
    if a.config and isinstance(path, str) and Path(path) != Path(a.config).absolute():
        print(f"{PROG}: note: the proxy on {sock} reads {path}, not {a.config}", file=sys.stderr)
    if res.get("ok"):
        names = res.get("rules")
        count = len(names) if isinstance(names, list) else 0
        print(f"reloaded {path}: {count} rule(s)")
        return 0
    print(f"{PROG}: reload refused, the running configuration stays: {res.get('error')}",
          file=sys.stderr)  # fmt: skip
    return 1


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _run, "setup": _setup, "teardown": _setup, "check": _check,
    "status": _status, "reload": _reload,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``wgpy proxy ARGS``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("--config", "-c") or (args and args[0].startswith("--config=")):
        args = ["run", *args]
    parser = _parser()
    try:
        a = parser.parse_args(args)
        if a.command is None:
            parser.print_help()
            return 2
        return _COMMANDS[a.command](a)
    except _Usage as e:
        print(f"{e}\nTry '{PROG} --help'.", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    except (SetupError, control.ControlError, _Refused) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
