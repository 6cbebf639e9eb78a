"""``wgpy show`` and ``wgpy showconf``: wg(8)'s output, byte for byte.

The pretty form is built with ANSI colour codes when colour is on (a
terminal, or ``WG_COLOR_MODE=always``) and without them otherwise, which is
what wg's own filter produces.  Peers are ordered by latest handshake,
newest first, peers that never shook hands last (a stable sort, as glibc's
``qsort`` is for small arrays).  ``--json`` adds a machine-readable form.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, TextIO

from wgpy.control.config import format_config, normalise_endpoint, normalise_ip
from wgpy.control.keys import Key
from wgpy.control.uapi import DeviceInfo, PeerInfo
from wgpy.tools.devices import DeviceError, get_device, list_devices

RESET = "\x1b[0m"
BOLD = "\x1b[1m"
RED = "\x1b[31m"
GREEN = "\x1b[32m"
YELLOW = "\x1b[33m"
CYAN = "\x1b[36m"

FIELDS = (
    "public-key", "private-key", "listen-port", "fwmark", "peers", "preshared-keys",
    "endpoints", "allowed-ips", "latest-handshakes", "transfer", "persistent-keepalive",
    "dump",
)

SHOW_HELP = """\
NAME
    wgpy show - show the configuration and runtime state of WireGuard interfaces

SYNOPSIS
    wgpy show [--json] [ INTERFACE | all | interfaces ] [ FIELD ]

DESCRIPTION
    With no argument, or with `all', shows every interface that has a UAPI
    socket in /var/run/wireguard; with INTERFACE, only that one; with
    `interfaces', prints their names on one line.  The output is wg(8)'s,
    byte for byte.

    FIELD prints one property per line, tab-separated, for scripts:
    public-key, private-key, listen-port, fwmark, peers, preshared-keys,
    endpoints, allowed-ips, latest-handshakes, transfer (rx then tx bytes),
    persistent-keepalive, or dump (every property; the interface line first,
    then one line per peer).  With `all', each line starts with the
    interface name.

    --json prints a JSON object per interface (a list for `all'), with the
    same information as dump; private and preshared keys are left out unless
    WG_HIDE_KEYS=never.

ENVIRONMENT
    WG_COLOR_MODE   `always' or `never'; by default colour only on a terminal.
    WG_HIDE_KEYS    `never' shows private and preshared keys in the pretty
                    form (they are "(hidden)" by default).

EXIT STATUS
    0 on success, 1 if an interface cannot be accessed or an argument is bad.
"""

SHOWCONF_HELP = """\
NAME
    wgpy showconf - print an interface's configuration in wg(8)'s file format

SYNOPSIS
    wgpy showconf INTERFACE

DESCRIPTION
    Prints the current configuration of INTERFACE (private key, listen port,
    fwmark, peers) in the format read by `wgpy setconf', exactly as
    `wg showconf' does.  The private key is printed: mind where it goes.
"""


def usage(cmd: str) -> str:
    return (
        f"Usage: wgpy {cmd} {{ <interface> | all | interfaces }} [public-key | private-key | "
        "listen-port | fwmark | peers | preshared-keys | endpoints | allowed-ips | "
        "latest-handshakes | transfer | persistent-keepalive | dump]\n"
    )


def color_mode(stream: TextIO) -> bool:
    mode = os.environ.get("WG_COLOR_MODE")
    if mode == "always":
        return True
    if mode == "never":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Paint:
    def __init__(self, on: bool) -> None:
        self.on = on

    def __call__(self, *codes: str) -> str:
        return "".join(codes) if self.on else ""


def _key(raw: bytes) -> str:
    return Key(raw).to_base64()


def _has_psk(p: PeerInfo) -> bool:
    return any(p.preshared_key)


def _masked(raw: bytes) -> str:
    return _key(raw) if os.environ.get("WG_HIDE_KEYS") == "never" else "(hidden)"


def pretty_time(seconds: int, c: _Paint) -> str:
    parts = []
    units = (("year", 365 * 24 * 3600), ("day", 24 * 3600), ("hour", 3600), ("minute", 60),
             ("second", 1))
    for name, size in units:
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n} {c(CYAN)}{name}{'' if n == 1 else 's'}{c(RESET)}")
    return ", ".join(parts)


def ago(sec: int, now: int, c: _Paint) -> str:
    if now == sec:
        return "Now"
    if now < sec:
        return f"({c(RED)}System clock wound backward; connection problems may ensue.{c(RESET)})"
    return pretty_time(now - sec, c) + " ago"


def human_bytes(b: int, c: _Paint) -> str:
    if b < 1024:
        return f"{b} {c(CYAN)}B{c(RESET)}"
    for i, unit in enumerate(("KiB", "MiB", "GiB"), 1):
        if b < 1024 ** (i + 1):
            return f"{b / 1024 ** i:.2f} {c(CYAN)}{unit}{c(RESET)}"
    return f"{b / 1024 ** 3 / 1024:.2f} {c(CYAN)}TiB{c(RESET)}"


def sort_peers(peers: list[PeerInfo]) -> list[PeerInfo]:
    def k(p: PeerInfo) -> tuple[int, int, int]:
        never = p.last_handshake_time_sec == 0 and p.last_handshake_time_nsec == 0
        return (1 if never else 0, -p.last_handshake_time_sec, -p.last_handshake_time_nsec)

    return sorted(peers, key=k)


def pretty(name: str, info: DeviceInfo, color: bool, now: int | None = None) -> str:
    """The ``wg show INTERFACE`` text."""
    c = _Paint(color)
    now = int(time.time()) if now is None else now
    o = [c(RESET)]
    o.append(f"{c(GREEN, BOLD)}interface{c(RESET)}: {c(GREEN)}{name}{c(RESET)}\n")
    if info.private_key is not None:
        pub = Key(info.private_key).public_key().to_base64()
        o.append(f"  {c(BOLD)}public key{c(RESET)}: {pub}\n")
        o.append(f"  {c(BOLD)}private key{c(RESET)}: {_masked(info.private_key)}\n")
    if info.listen_port:
        o.append(f"  {c(BOLD)}listening port{c(RESET)}: {info.listen_port}\n")
    if info.fwmark:
        o.append(f"  {c(BOLD)}fwmark{c(RESET)}: 0x{info.fwmark:x}\n")
    peers = sort_peers(info.peers)
    if peers:
        o.append("\n")
    for i, p in enumerate(peers):
        o.append(f"{c(YELLOW, BOLD)}peer{c(RESET)}: {c(YELLOW)}{_key(p.public_key)}{c(RESET)}\n")
        if _has_psk(p):
            o.append(f"  {c(BOLD)}preshared key{c(RESET)}: {_masked(p.preshared_key)}\n")
        if p.endpoint:
            o.append(f"  {c(BOLD)}endpoint{c(RESET)}: {normalise_endpoint(p.endpoint)}\n")
        o.append(f"  {c(BOLD)}allowed ips{c(RESET)}: ")
        if p.allowed_ips:
            ips = []
            for a in p.allowed_ips:
                ip, _, cidr = normalise_ip(a).partition("/")
                ips.append(f"{ip}{c(CYAN)}/{c(RESET)}{cidr}")
            o.append(", ".join(ips) + "\n")
        else:
            o.append("(none)\n")
        if p.last_handshake_time_sec:
            o.append(f"  {c(BOLD)}latest handshake{c(RESET)}: "
                     f"{ago(p.last_handshake_time_sec, now, c)}\n")
        if p.rx_bytes or p.tx_bytes:
            o.append(f"  {c(BOLD)}transfer{c(RESET)}: {human_bytes(p.rx_bytes, c)} received, "
                     f"{human_bytes(p.tx_bytes, c)} sent\n")
        if p.persistent_keepalive_interval:
            o.append(f"  {c(BOLD)}persistent keepalive{c(RESET)}: every "
                     f"{pretty_time(p.persistent_keepalive_interval, c)}\n")
        if i + 1 < len(peers):
            o.append("\n")
    return "".join(o)


def _maybe(raw: bytes | None) -> str:
    return _key(raw) if raw is not None else "(none)"


def _psk(p: PeerInfo) -> str:
    return _key(p.preshared_key) if _has_psk(p) else "(none)"


def _endpoint(p: PeerInfo) -> str:
    return normalise_endpoint(p.endpoint) if p.endpoint else "(none)"


def _allowed(p: PeerInfo, sep: str) -> str:
    return sep.join(normalise_ip(a) for a in p.allowed_ips) if p.allowed_ips else "(none)"


def _fwmark(info: DeviceInfo) -> str:
    return f"0x{info.fwmark:x}" if info.fwmark else "off"


def _pub(info: DeviceInfo) -> bytes | None:
    return Key(info.private_key).public_key().raw if info.private_key is not None else None


def dump(name: str, info: DeviceInfo, with_interface: bool) -> str:
    pre = f"{name}\t" if with_interface else ""
    o = [f"{pre}{_maybe(info.private_key)}\t{_maybe(_pub(info))}\t{info.listen_port}\t"
         f"{_fwmark(info)}\n"]
    for p in info.peers:
        ka = p.persistent_keepalive_interval or "off"
        o.append(f"{pre}{_key(p.public_key)}\t{_psk(p)}\t{_endpoint(p)}\t{_allowed(p, ',')}\t"
                 f"{p.last_handshake_time_sec}\t{p.rx_bytes}\t{p.tx_bytes}\t{ka}\n")
    return "".join(o)


def field_text(name: str, info: DeviceInfo, field: str, with_interface: bool) -> str | None:
    """One ``wg show IF FIELD`` output; None for an unknown field."""
    pre = f"{name}\t" if with_interface else ""
    peers = info.peers
    if field == "public-key":
        return f"{pre}{_maybe(_pub(info))}\n"
    if field == "private-key":
        return f"{pre}{_maybe(info.private_key)}\n"
    if field == "listen-port":
        return f"{pre}{info.listen_port}\n"
    if field == "fwmark":
        return f"{pre}{_fwmark(info)}\n"
    if field == "endpoints":  # wg prints the name once here, not per peer
        return pre + "".join(f"{_key(p.public_key)}\t{_endpoint(p)}\n" for p in peers)
    if field == "allowed-ips":
        return "".join(f"{pre}{_key(p.public_key)}\t{_allowed(p, ' ')}\n" for p in peers)
    if field == "latest-handshakes":
        return "".join(f"{pre}{_key(p.public_key)}\t{p.last_handshake_time_sec}\n" for p in peers)
    if field == "transfer":
        return "".join(f"{pre}{_key(p.public_key)}\t{p.rx_bytes}\t{p.tx_bytes}\n" for p in peers)
    if field == "persistent-keepalive":
        return "".join(
            f"{pre}{_key(p.public_key)}\t{p.persistent_keepalive_interval or 'off'}\n"
            for p in peers
        )
    if field == "preshared-keys":
        return "".join(f"{pre}{_key(p.public_key)}\t{_psk(p)}\n" for p in peers)
    if field == "peers":
        return "".join(f"{pre}{_key(p.public_key)}\n" for p in peers)
    if field == "dump":
        return dump(name, info, with_interface)
    return None


def to_json(name: str, info: DeviceInfo) -> dict[str, Any]:
    """A JSON-ready dict with dump's information (secrets only if WG_HIDE_KEYS=never)."""
    reveal = os.environ.get("WG_HIDE_KEYS") == "never"
    pub = _pub(info)
    d: dict[str, Any] = {
        "interface": name,
        "public_key": _key(pub) if pub is not None else None,
        "listen_port": info.listen_port,
        "fwmark": info.fwmark or None,
        "peers": [],
    }
    if reveal:
        d["private_key"] = _maybe(info.private_key) if info.private_key else None
    for p in info.peers:
        pd: dict[str, Any] = {
            "public_key": _key(p.public_key),
            "has_preshared_key": _has_psk(p),
            "endpoint": normalise_endpoint(p.endpoint) if p.endpoint else None,
            "allowed_ips": [normalise_ip(a) for a in p.allowed_ips],
            "latest_handshake": p.last_handshake_time_sec or None,
            "latest_handshake_nsec": p.last_handshake_time_nsec,
            "transfer_rx": p.rx_bytes,
            "transfer_tx": p.tx_bytes,
            "persistent_keepalive": p.persistent_keepalive_interval or None,
        }
        if reveal:
            pd["preshared_key"] = _psk(p) if _has_psk(p) else None
        d["peers"].append(pd)
    return d


def show_main(argv: list[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``wgpy show`` (argv[0] is the command name, as in wg)."""
    out = out or sys.stdout
    err = err or sys.stderr
    cmd, args = argv[0], argv[1:]
    if args and args[0] in ("-h", "--help", "help") and len(args) == 1:
        out.write(SHOW_HELP)
        return 0
    as_json = "--json" in args
    args = [a for a in args if a != "--json"]
    if len(args) > 2:
        err.write(usage(cmd))
        return 1
    if not args or args[0] == "all":
        return _show_all(cmd, args[1] if len(args) == 2 else None, as_json, out, err)
    if args[0] == "interfaces":
        if len(args) > 1:
            err.write(usage(cmd))
            return 1
        try:
            names = list_devices()
        except DeviceError as e:
            err.write(f"Unable to list interfaces: {e}\n")
            return 1
        if as_json:
            out.write(json.dumps(names) + "\n")
        elif names:
            out.write(" ".join(names) + "\n")
        return 0
    name = args[0]
    try:
        info = get_device(name)
    except DeviceError as e:
        err.write(f"Unable to access interface: {e}\n")
        return 1
    if as_json:
        out.write(json.dumps(to_json(name, info), indent=2) + "\n")
        return 0
    if len(args) == 2:
        text = field_text(name, info, args[1], False)
        if text is None:
            err.write(f"Invalid parameter: `{args[1]}'\n{usage(cmd)}")
            return 1
        out.write(text)
        return 0
    out.write(pretty(name, info, color_mode(out)))
    return 0


def _show_all(cmd: str, field: str | None, as_json: bool, out: TextIO, err: TextIO) -> int:
    try:
        names = list_devices()
    except DeviceError as e:
        err.write(f"Unable to list interfaces: {e}\n")
        return 1
    ret = 1 if names else 0
    docs: list[dict[str, Any]] = []
    color = color_mode(out)
    for i, name in enumerate(names):
        try:
            info = get_device(name)
        except DeviceError as e:
            err.write(f"Unable to access interface {name}: {e}\n")
            continue
        if as_json:
            docs.append(to_json(name, info))
        elif field is not None:
            text = field_text(name, info, field, True)
            if text is None:
                err.write(f"Invalid parameter: `{field}'\n{usage(cmd)}")
                return 1
            out.write(text)
        else:
            out.write(pretty(name, info, color))
            if i + 1 < len(names):
                out.write("\n")
        ret = 0
    if as_json:
        out.write(json.dumps(docs, indent=2) + "\n")
    return ret


def showconf_main(argv: list[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if len(argv) == 2 and argv[1] in ("-h", "--help", "help"):
        out.write(SHOWCONF_HELP)
        return 0
    if len(argv) != 2:
        err.write(f"Usage: wgpy {argv[0]} <interface>\n")
        return 1
    try:
        info = get_device(argv[1])
    except DeviceError as e:
        err.write(f"Unable to access interface: {e}\n")
        return 1
    out.write(format_config(info))
    return 0
