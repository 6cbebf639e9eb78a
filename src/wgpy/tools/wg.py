"""The wg(8) subcommands other than show: set, setconf, addconf, syncconf, keys.

Each ``*_main(argv)`` takes wg's argv convention (``argv[0]`` is the
subcommand name) and returns an exit status.  Configurations are parsed and
validated completely before the device is contacted, so a bad line changes
nothing; errors name the file, the line and the reason.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
from typing import TextIO

from wgpy.control.config import (
    parse_config,
    parse_set_args,
    sync_with,
    to_uapi,
)
from wgpy.control.keys import InvalidKey, Key, genkey, genpsk
from wgpy.protocol.errors import ConfigError
from wgpy.tools.devices import DeviceError, get_device, set_device

SET_USAGE = (
    "Usage: wgpy {cmd} <interface> [listen-port <port>] [fwmark <mark>] "
    "[private-key <file path>] [peer <base64 public key> [remove] [preshared-key <file path>] "
    "[endpoint <ip>:<port>] [persistent-keepalive <interval seconds>] "
    "[allowed-ips <ip1>/<cidr1>[,<ip2>/<cidr2>]...] ]...\n"
)

HELP = {
    "set": """\
NAME
    wgpy set - change the configuration of a WireGuard interface

SYNOPSIS
    wgpy set INTERFACE [listen-port PORT] [fwmark MARK] [private-key FILE]
             [peer PUBLIC-KEY [remove] [update-only] [preshared-key FILE]
              [endpoint HOST:PORT] [persistent-keepalive SECONDS|off]
              [allowed-ips IP/CIDR[,IP/CIDR]...] ]...

DESCRIPTION
    Changes only what is named.  `private-key' and `preshared-key' read a
    base64 key from a FILE (use /dev/stdin to pipe one; an empty file clears
    the key).  `peer' adds the peer or selects an existing one; `remove'
    deletes it.  `allowed-ips' REPLACES the peer's allowed IPs (an empty
    string clears them).  `fwmark 0' and `persistent-keepalive off' turn the
    setting off.  HOST may be a name, resolved once here (retries follow
    WG_ENDPOINT_RESOLUTION_RETRIES, default 15, or `infinity').

    All arguments are checked before the device is contacted.

EXAMPLE
    wgpy set wg0 listen-port 51820 private-key /etc/wireguard/private \\
        peer ABC...= allowed-ips 10.0.0.2/32 endpoint 192.168.1.2:51820
""",
    "setconf": """\
NAME
    wgpy setconf - replace an interface's configuration with a file's

SYNOPSIS
    wgpy setconf INTERFACE CONFIGURATION-FILE

DESCRIPTION
    Applies a wg(8) configuration file: [Interface] with PrivateKey,
    ListenPort and FwMark; any number of [Peer] with PublicKey (required),
    PresharedKey, AllowedIPs, Endpoint and PersistentKeepalive.  Everything
    not in the file is reset: peers not listed are removed, and an absent
    PrivateKey, ListenPort or FwMark is cleared.

    The whole file is checked before anything is sent.  An error names the
    file, the line and the reason, and leaves the device untouched.
    wg-quick keys (Address, DNS, ...) are errors here: use `wgpy strip'.
""",
    "addconf": """\
NAME
    wgpy addconf - append a configuration file to an interface

SYNOPSIS
    wgpy addconf INTERFACE CONFIGURATION-FILE

DESCRIPTION
    Like setconf, but nothing is reset: fields the file sets are changed,
    its peers are added (or updated, their AllowedIPs replaced), other peers
    stay.
""",
    "syncconf": """\
NAME
    wgpy syncconf - make an interface match a configuration file, gently

SYNOPSIS
    wgpy syncconf INTERFACE CONFIGURATION-FILE

DESCRIPTION
    Like setconf, but peers that the file keeps are updated in place rather
    than replaced, so their live sessions survive; only peers missing from
    the file are removed.  Useful as
    `wgpy syncconf wg0 <(wgpy strip wg0)' after editing a wg-quick file.
""",
    "genkey": """\
NAME
    wgpy genkey - generate a new private key

SYNOPSIS
    wgpy genkey > private

DESCRIPTION
    Prints a random, clamped Curve25519 private key in base64.  Warns when
    standard output is a file that others can read; set `umask 077' first.
""",
    "genpsk": """\
NAME
    wgpy genpsk - generate a new preshared key

SYNOPSIS
    wgpy genpsk > psk

DESCRIPTION
    Prints 32 random bytes in base64, for PresharedKey.  Warns like genkey.
""",
    "pubkey": """\
NAME
    wgpy pubkey - compute the public key of a private key

SYNOPSIS
    wgpy pubkey < private > public

DESCRIPTION
    Reads a base64 private key on standard input (surrounding whitespace is
    allowed) and prints its public key in base64.
""",
}


def _wants_help(argv: list[str]) -> bool:
    return len(argv) == 2 and argv[1] in ("-h", "--help", "help")


def _print_help(cmd: str, out: TextIO) -> int:
    out.write(HELP[cmd])
    return 0


def set_main(argv: list[str]) -> int:
    if _wants_help(argv):
        return _print_help("set", sys.stdout)
    if len(argv) < 3:
        sys.stderr.write(SET_USAGE.format(cmd=argv[0]))
        return 1
    try:
        dev = parse_set_args(argv[2:], warn=_warn)
    except ConfigError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    try:
        set_device(argv[1], to_uapi(dev))
    except DeviceError as e:
        sys.stderr.write(f"Unable to modify interface: {e}\n")
        return 1
    return 0


def _warn(msg: str) -> None:
    sys.stderr.write(msg + "\n")


def setconf_main(argv: list[str]) -> int:
    cmd = argv[0]
    if _wants_help(argv):
        return _print_help(cmd, sys.stdout)
    if len(argv) != 3:
        sys.stderr.write(f"Usage: wgpy {cmd} <interface> <configuration filename>\n")
        return 1
    path = argv[2]
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        sys.stderr.write(f"{path}: {e.strerror}\n")
        return 1
    try:
        dev = parse_config(text, path, append=cmd == "addconf", warn=_warn)
    except ConfigError as e:
        sys.stderr.write(f"{e}\nConfiguration parsing error\n")
        return 1
    name = argv[1]
    if cmd == "syncconf" and dev.peers:
        try:
            dev = sync_with(dev, get_device(name))
        except DeviceError as e:
            sys.stderr.write(f"Unable to retrieve current interface configuration: {e}\n")
            return 1
    try:
        set_device(name, to_uapi(dev))
    except DeviceError as e:
        sys.stderr.write(f"Unable to modify interface: {e}\n")
        return 1
    return 0


def _warn_world_accessible(out: TextIO) -> None:
    try:
        st = os.fstat(out.fileno())
    except (OSError, AttributeError, ValueError):
        return
    if stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_IRWXO:
        sys.stderr.write(
            "Warning: writing to world accessible file.\n"
            "Consider setting the umask to 077 and trying again.\n"
        )


def genkey_main(argv: list[str]) -> int:
    cmd = argv[0]
    if _wants_help(argv):
        return _print_help(cmd, sys.stdout)
    if len(argv) != 1:
        sys.stderr.write(f"Usage: wgpy {cmd}\n")
        return 1
    _warn_world_accessible(sys.stdout)
    key = genkey(secrets.token_bytes) if cmd == "genkey" else genpsk(secrets.token_bytes)
    sys.stdout.write(key.to_base64() + "\n")
    return 0


def pubkey_main(argv: list[str]) -> int:
    if _wants_help(argv):
        return _print_help("pubkey", sys.stdout)
    if len(argv) != 1:
        sys.stderr.write(f"Usage: wgpy {argv[0]}\n")
        return 1
    data = sys.stdin.buffer.read(1 << 16)
    text = data[:44].decode("latin-1")
    rest = data[44:]
    if len(data) < 44:
        sys.stderr.write("wgpy: Key is not the correct length or format\n")
        return 1
    if any(c not in b" \t\n\v\f\r\0" for c in rest):
        sys.stderr.write("wgpy: Trailing characters found after key\n")
        return 1
    try:
        key = Key.from_base64(text)
    except InvalidKey:
        sys.stderr.write("wgpy: Key is not the correct length or format\n")
        return 1
    sys.stdout.write(key.public_key().to_base64() + "\n")
    return 0
