"""``wgpy``: one entry point for wg(8), wg-quick(8) and wgpy's own commands.

A table maps each subcommand to ``"module:function"`` and a description, as
wireguard-tools' ``wg.c`` does; the module is imported only when its command
runs, so a command whose module is missing (or broken) fails with a clear
message instead of breaking every other command.  ``wgpy`` alone runs
``show``.

Two calling conventions exist: wg-style commands get ``argv`` starting with
the subcommand name (``["show", "wg0"]``); the others (``registry``,
``discover``, ``proxy``, ``exporter``, ``ui``, ``socks``, ``forward``, ``demo``,
wg-quick's) get only what follows it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import NamedTuple, cast

import wgpy


class Command(NamedTuple):
    target: str  # "package.module:function"
    description: str
    wg_style: bool  # argv includes the subcommand name (wg's convention)


COMMANDS: dict[str, Command] = {
    "show": Command("wgpy.tools.show:show_main",
                    "Shows the current configuration and device information", True),
    "showconf": Command("wgpy.tools.show:showconf_main",
                        "Shows the current configuration of a given WireGuard interface, "
                        "for use with `setconf'", True),
    "set": Command("wgpy.tools.wg:set_main",
                   "Change the current configuration, add peers, remove peers, "
                   "or change peers", True),
    "setconf": Command("wgpy.tools.wg:setconf_main",
                       "Applies a configuration file to a WireGuard interface", True),
    "addconf": Command("wgpy.tools.wg:setconf_main",
                       "Appends a configuration file to a WireGuard interface", True),
    "syncconf": Command("wgpy.tools.wg:setconf_main",
                        "Synchronizes a configuration file to a WireGuard interface", True),
    "genkey": Command("wgpy.tools.wg:genkey_main",
                      "Generates a new private key and writes it to stdout", True),
    "genpsk": Command("wgpy.tools.wg:genkey_main",
                      "Generates a new preshared key and writes it to stdout", True),
    "pubkey": Command("wgpy.tools.wg:pubkey_main",
                      "Reads a private key from stdin and writes a public key to stdout", True),
    "up": Command("wgpy.tools.wg_quick:up_main",
                  "Brings up an interface from a wg-quick configuration (as wg-quick up)", False),
    "down": Command("wgpy.tools.wg_quick:down_main",
                    "Takes down an interface brought up by `up' (as wg-quick down)", False),
    "save": Command("wgpy.tools.wg_quick:save_main",
                    "Saves a running interface's configuration to its file (as wg-quick save)",
                    False),
    "strip": Command("wgpy.tools.wg_quick:strip_main",
                     "Prints a wg-quick file without its wg-quick keys (as wg-quick strip)",
                     False),
    "demo": Command("wgpy.tools.demo:main",
                    "Builds two namespaces joined by a tunnel, pings through it, tears down",
                    False),
    "registry": Command("wgpy.discovery.cli:registry_main",
                        "Runs a DNS-SD registry that peers publish their endpoints to", False),
    "discover": Command("wgpy.discovery.cli:discover_main",
                        "Publishes this interface and finds its peers' endpoints", False),
    "proxy": Command("wgpy.proxy.cli:main",
                     "Runs the any-port transparent proxy", False),
    "ui": Command("wgpy.ui.cli:main",
                  "Serves a web console for WireGuard servers (peers, QR codes, traffic)",
                  False),
    "socks": Command("wgpy.userspace.socks:socks_main",
                     "Runs a SOCKS5/HTTP proxy into a tunnel, in userspace (no TUN, no root)",
                     False),
    "forward": Command("wgpy.userspace.forward:forward_main",
                       "Forwards ports through a tunnel both ways, in userspace "
                       "(no TUN, no root)", False),
    "exporter": Command("wgpy.tools.exporter:main",
                        "Serves Prometheus metrics for this host's WireGuard devices", False),
    "systemd": Command("wgpy.tools.systemd:main",
                       "Installs or prints the systemd units shipped with wgpy", False),
    "doctor": Command("wgpy.tools.doctor:main",
                      "Explains what is wrong with an interface, registry or proxy on this host",
                      False),
}


def usage() -> str:
    lines = ["Usage: wgpy <cmd> [<args>]", "", "Available subcommands:"]
    lines += [f"  {name}: {c.description}" for name, c in COMMANDS.items()]
    lines.append("You may pass `--help' to any of these subcommands to view usage.")
    return "\n".join(lines) + "\n"


def load(target: str) -> Callable[[list[str]], int]:
    """Import ``module:function``; raise ImportError with a readable message."""
    module_name, _, func_name = target.partition(":")
    module = importlib.import_module(module_name)
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ImportError(f"{module_name} has no function {func_name}")
    return cast(Callable[[list[str]], int], func)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 1 and args[0] in ("-v", "--version", "version"):
        sys.stdout.write(f"wgpy v{wgpy.__version__} (wg and wg-quick in Python)\n")
        return 0
    if len(args) == 1 and args[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        return 0
    if not args:
        args = ["show"]
    name = args[0]
    cmd = COMMANDS.get(name)
    if cmd is None:
        sys.stderr.write(f"Invalid subcommand: `{name}'\n{usage()}")
        return 1
    try:
        func = load(cmd.target)
    except ImportError as e:
        sys.stderr.write(f"wgpy: the `{name}' command is not available: {e}\n")
        return 1
    try:
        rc = func(args if cmd.wg_style else args[1:])
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
