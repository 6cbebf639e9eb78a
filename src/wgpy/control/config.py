"""wg(8) and wg-quick(8) configuration: parser, validator and writer.

Theory of operation: a configuration is parsed completely, into plain
dataclasses, before anything touches a device, so a file with one bad line
changes nothing.  Parsing follows wg(8)'s own rules, which are looser than
INI: everything after ``#`` is a comment, *all* whitespace inside a line is
removed, section names and keys are case-insensitive, and a key matches by
prefix (``PublicKey=`` ...).  Every error is a ``ConfigError`` carrying the
file name, the line number and the reason.

The same dataclasses are built from ``wg set`` arguments
(``parse_set_args``), turned into UAPI ``set`` lines (``to_uapi``), and
written back as text (``format_config``, the ``wg showconf`` format).

wg-quick adds ``Address``, ``DNS``, ``MTU``, ``Table``, ``PreUp``,
``PostUp``, ``PreDown``, ``PostDown`` and ``SaveConfig`` to
``[Interface]``; ``parse_quick_config`` splits those out with wg-quick's
(bash) rules and validates the rest as a wg(8) configuration.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from wgpy.control.endpoint import split_host_port
from wgpy.control.keys import InvalidKey, Key
from wgpy.control.uapi import DeviceInfo
from wgpy.protocol.errors import ConfigError

_SPACE = " \t\n\v\f\r"
_WS_RE = re.compile(r"[ \t\n\v\f\r]")


@dataclass
class PeerConfig:
    """One ``[Peer]`` (or ``peer`` on a ``wg set`` command line).  None = leave as is."""

    public_key: Key | None = None
    remove: bool = False
    update_only: bool = False
    preshared_key: Key | None = None
    endpoint: str | None = None  # resolved, numeric: "ip:port" / "[ip6]:port"
    persistent_keepalive: int | None = None
    replace_allowed_ips: bool = False
    allowed_ips: list[str] = field(default_factory=list)  # "ip/cidr", ip as inet_ntop prints it
    lineno: int | None = None


@dataclass
class DeviceConfig:
    """The interface part plus peers.  None fields are not sent to the device."""

    private_key: Key | None = None
    listen_port: int | None = None
    fwmark: int | None = None
    replace_peers: bool = False
    peers: list[PeerConfig] = field(default_factory=list)


# -- value parsers (each raises ValueError with wg's wording) ----------------


def parse_port(value: str) -> int:
    if not value:
        raise ValueError("Unable to parse empty port")
    try:
        res = socket.getaddrinfo(
            None, value, socket.AF_UNSPEC, socket.SOCK_DGRAM, socket.IPPROTO_UDP,
            socket.AI_PASSIVE,
        )
    except (socket.gaierror, UnicodeError) as e:
        raise ValueError(f"{_gai_reason(e)}: `{value}'") from None
    for family, _t, _p, _c, sockaddr in res:
        if family in (socket.AF_INET, socket.AF_INET6):
            return int(sockaddr[1])
    raise ValueError(f"Neither IPv4 nor IPv6 address found: `{value}'")


def parse_fwmark(value: str) -> int:
    if value.lower() == "off":
        return 0
    if len(value) > 2 and value.startswith("0x") and re.fullmatch(r"[0-9a-fA-F]+", value[2:]):
        n = int(value[2:], 16)
    elif re.fullmatch(r"[0-9]+", value):
        n = int(value, 10)
    else:
        n = -1
    if not 0 <= n <= 0xFFFFFFFF:
        raise ValueError(f"Fwmark is neither 0/off nor 0-0xffffffff: `{value}'")
    return n


def parse_keepalive(value: str) -> int:
    if value.lower() == "off":
        return 0
    if not re.fullmatch(r"[0-9]+", value) or int(value) > 65535:
        raise ValueError(
            f"Persistent keepalive interval is neither 0/off nor 1-65535: `{value}'"
        )
    return int(value)


def parse_key(value: str, secret: bool = False) -> Key:
    try:
        return Key.from_base64(value)
    except InvalidKey:
        shown = "(value not shown)" if secret else f"`{value}'"
        raise ValueError(f"Key is not the correct length or format: {shown}") from None


def parse_ip(value: str) -> tuple[int, bytes]:
    family = socket.AF_INET6 if ":" in value else socket.AF_INET
    try:
        return family, socket.inet_pton(family, value)
    except (OSError, ValueError):
        raise ValueError(f"Unable to parse IP address: `{value}'") from None


def _host_bits_set(packed: bytes, cidr: int) -> bool:
    n = int.from_bytes(packed, "big")
    bits = len(packed) * 8
    return (n & ((1 << (bits - cidr)) - 1)) != 0


def parse_allowed_ips(value: str, warn: Callable[[str], None] | None = None) -> list[str]:
    """``ip[/cidr][,...]`` -> normalised ``ip/cidr`` strings; "" -> [] (clear)."""
    out: list[str] = []
    if not value:
        return out
    for entry in value.split(","):
        ip, slash, mask = entry.partition("/")
        family, packed = parse_ip(ip)
        maxlen = 32 if family == socket.AF_INET else 128
        if slash:
            if not re.fullmatch(r"[0-9]+", mask) or int(mask) > maxlen:
                raise ValueError(f"AllowedIP is not in the correct format: `{entry}'")
            cidr = int(mask)
        else:
            cidr = maxlen
        if _host_bits_set(packed, cidr) and warn is not None:
            warn(f"Warning: AllowedIP has nonzero host part: {ip}/{mask if slash else '(null)'}")
        out.append(f"{socket.inet_ntop(family, packed)}/{cidr}")
    return out


def _gai_reason(e: BaseException) -> str:
    if isinstance(e, socket.gaierror) and len(e.args) >= 2:
        return str(e.args[1])
    return str(e)


def _resolution_retries() -> int:
    text = os.environ.get("WG_ENDPOINT_RESOLUTION_RETRIES")
    if text is None:
        return 15
    if text == "infinity":
        return -1
    if not re.fullmatch(r"[0-9]+", text):
        raise ValueError(f"Unable to parse WG_ENDPOINT_RESOLUTION_RETRIES: `{text}'")
    return int(text)


_PERMANENT_GAI = {
    getattr(socket, name)
    for name in ("EAI_NONAME", "EAI_FAIL", "EAI_NODATA")
    if hasattr(socket, name)
}


def format_sockaddr(
    family: int, sockaddr: tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]
) -> str:
    """A resolved address as wg prints it (getnameinfo, numeric)."""
    if not isinstance(sockaddr[0], str):
        raise ValueError("Neither IPv4 nor IPv6 address found")
    host, port = socket.getnameinfo(
        sockaddr,
        socket.NI_NUMERICHOST | socket.NI_NUMERICSERV | socket.NI_DGRAM
    )
    if family == socket.AF_INET6 and ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def resolve_endpoint(value: str, sleep: Callable[[float], None] = time.sleep) -> str:
    """Resolve ``host:port`` (retrying transient DNS failures as wg does)."""
    host, port = split_host_port(value)
    retries = _resolution_retries()
    delay = 1.0
    while True:
        try:
            res = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_DGRAM,
                                     socket.IPPROTO_UDP)
            break
        except UnicodeError:
            raise ValueError(f"Name or service not known: `{value}'") from None
        except socket.gaierror as e:
            if e.errno in _PERMANENT_GAI or retries == 0:
                raise ValueError(f"{_gai_reason(e)}: `{value}'") from None
            if retries > 0:
                retries -= 1
            print(f"{_gai_reason(e)}: `{value}'. Trying again in {delay:.2f} seconds...",
                  file=sys.stderr)
            sleep(delay)
            delay = min(20.0, delay * 6 / 5)
    family, _t, _p, _c, sockaddr = res[0]
    if family not in (socket.AF_INET, socket.AF_INET6):
        raise ValueError(f"Neither IPv4 nor IPv6 address found: `{value}'")
    return format_sockaddr(family, sockaddr)


def read_keyfile(path: str) -> Key:
    """A key file for ``wg set``: base64 and optional whitespace; empty = zero key."""
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror}") from None
    if not data:
        return Key.zero()
    if len(data) < 44:
        raise ValueError(f"{path}: Invalid length key in key file")
    for c in data[44:]:
        if chr(c) not in _SPACE:
            raise ValueError(f"{path}: Found trailing character in key file: `{chr(c)}'")
    return parse_key(data[:44].decode("latin-1"), secret=True)


# -- wg(8) configuration files ----------------------------------------------


def _clean(line: str) -> str:
    line = line.split("\0", 1)[0].split("#", 1)[0]
    return _WS_RE.sub("", line)


def _match(line: str, key: str) -> str | None:
    key = key + "="
    if len(key) >= len(line) or line[: len(key)].lower() != key.lower():
        return None
    return line[len(key):]


def parse_config(
    text: str,
    filename: str = "<config>",
    append: bool = False,
    warn: Callable[[str], None] | None = None,
    first_line: int = 1,
    lines: Iterable[tuple[int, str]] | None = None,
) -> DeviceConfig:
    """Parse a wg(8) configuration.

    :param append: ``addconf`` semantics (don't reset unspecified fields or peers).
    :param lines: (line number, text) pairs to use instead of splitting ``text``.
    :raises ConfigError: naming the file, the line and the reason.
    """
    dev = DeviceConfig()
    if not append:
        dev.replace_peers = True
        dev.private_key = Key.zero()
        dev.listen_port = 0
        dev.fwmark = 0
    section: str | None = None
    peer: PeerConfig | None = None
    numbered = lines if lines is not None else enumerate(text.split("\n"), first_line)
    for lineno, raw in numbered:
        line = _clean(raw)
        if not line:
            continue
        try:
            if line.lower() == "[interface]":
                section, peer = "interface", None
                continue
            if line.lower() == "[peer]":
                section = "peer"
                peer = PeerConfig(replace_allowed_ips=True, lineno=lineno)
                dev.peers.append(peer)
                continue
            if section == "interface":
                _interface_line(dev, line)
            elif section == "peer" and peer is not None:
                _peer_line(peer, line, warn)
            else:
                raise ValueError(f"Line unrecognized: `{line}'")
        except ValueError as e:
            raise ConfigError(str(e), filename, lineno) from None
    for p in dev.peers:
        if p.public_key is None:
            raise ConfigError("A peer is missing a public key", filename, p.lineno)
    return dev


def _interface_line(dev: DeviceConfig, line: str) -> None:
    if (v := _match(line, "ListenPort")) is not None:
        dev.listen_port = parse_port(v)
    elif (v := _match(line, "FwMark")) is not None:
        dev.fwmark = parse_fwmark(v)
    elif (v := _match(line, "PrivateKey")) is not None:
        dev.private_key = parse_key(v, secret=True)
    else:
        raise ValueError(f"Line unrecognized: `{line}'")


def _peer_line(peer: PeerConfig, line: str, warn: Callable[[str], None] | None) -> None:
    if (v := _match(line, "Endpoint")) is not None:
        peer.endpoint = resolve_endpoint(v)
    elif (v := _match(line, "PublicKey")) is not None:
        peer.public_key = parse_key(v)
    elif (v := _match(line, "AllowedIPs")) is not None:
        peer.allowed_ips.extend(parse_allowed_ips(v, warn))
    elif (v := _match(line, "PersistentKeepalive")) is not None:
        peer.persistent_keepalive = parse_keepalive(v)
    elif (v := _match(line, "PresharedKey")) is not None:
        peer.preshared_key = parse_key(v, secret=True)
    else:
        raise ValueError(f"Line unrecognized: `{line}'")


def parse_set_args(args: list[str], warn: Callable[[str], None] | None = None) -> DeviceConfig:
    """The arguments of ``wg set IFACE ...`` after the interface name.

    :raises ConfigError: with ``filename`` None; the reason names the argument.
    """
    dev = DeviceConfig()
    peer: PeerConfig | None = None
    i = 0
    try:
        while i < len(args):
            a = args[i]
            has_value = i + 1 < len(args)
            v = args[i + 1] if has_value else ""
            if a == "listen-port" and has_value and peer is None:
                dev.listen_port = parse_port(v)
            elif a == "fwmark" and has_value and peer is None:
                dev.fwmark = parse_fwmark(v)
            elif a == "private-key" and has_value and peer is None:
                dev.private_key = read_keyfile(v)
            elif a == "peer" and has_value:
                peer = PeerConfig(public_key=parse_key(v))
                dev.peers.append(peer)
            elif a == "remove" and peer is not None:
                peer.remove = True
                i += 1
                continue
            elif a == "update-only" and peer is not None:
                peer.update_only = True
                i += 1
                continue
            elif a == "endpoint" and has_value and peer is not None:
                peer.endpoint = resolve_endpoint(v)
            elif a == "allowed-ips" and has_value and peer is not None:
                peer.replace_allowed_ips = True
                peer.allowed_ips.extend(parse_allowed_ips(_WS_RE.sub("", v), warn))
            elif a == "persistent-keepalive" and has_value and peer is not None:
                peer.persistent_keepalive = parse_keepalive(v)
            elif a == "preshared-key" and has_value and peer is not None:
                peer.preshared_key = read_keyfile(v)
            else:
                raise ValueError(f"Invalid argument: {a}")
            i += 2
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return dev


def to_uapi(dev: DeviceConfig) -> list[str]:
    """The lines of a UAPI ``set`` request (without ``set=1`` and the blank line)."""
    out: list[str] = []
    if dev.private_key is not None:
        out.append(f"private_key={dev.private_key.hex()}")
    if dev.listen_port is not None:
        out.append(f"listen_port={dev.listen_port}")
    if dev.fwmark is not None:
        out.append(f"fwmark={dev.fwmark}")
    if dev.replace_peers:
        out.append("replace_peers=true")
    for p in dev.peers:
        assert p.public_key is not None  # parse_* guarantee it
        out.append(f"public_key={p.public_key.hex()}")
        if p.remove:
            out.append("remove=true")
            continue
        if p.update_only:
            out.append("update_only=true")
        if p.preshared_key is not None:
            out.append(f"preshared_key={p.preshared_key.hex()}")
        if p.endpoint is not None:
            out.append(f"endpoint={p.endpoint}")
        if p.persistent_keepalive is not None:
            out.append(f"persistent_keepalive_interval={p.persistent_keepalive}")
        if p.replace_allowed_ips:
            out.append("replace_allowed_ips=true")
        out.extend(f"allowed_ip={a}" for a in p.allowed_ips)
    return out


def sync_with(dev: DeviceConfig, runtime: DeviceInfo) -> DeviceConfig:
    """``syncconf``: remove only the running peers the file lacks; keep the rest live."""
    if not dev.peers or not runtime.peers:
        return dev
    wanted = {p.public_key.raw for p in dev.peers if p.public_key is not None}
    gone = sorted({p.public_key for p in runtime.peers} - wanted)
    removals = [PeerConfig(public_key=Key(k), remove=True) for k in gone]
    return DeviceConfig(
        private_key=dev.private_key,
        listen_port=dev.listen_port,
        fwmark=dev.fwmark,
        replace_peers=False,
        peers=removals + dev.peers,
    )


# -- writer --------------------------------------------------------------------


def normalise_ip(cidr: str) -> str:
    """``ip/len`` as inet_ntop prints the address (wg's own normalisation)."""
    ip, _, length = cidr.partition("/")
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        return f"{socket.inet_ntop(family, socket.inet_pton(family, ip))}/{length}"
    except OSError:
        return cidr


def normalise_endpoint(text: str) -> str:
    """A UAPI endpoint re-printed the way wg prints it (getaddrinfo + getnameinfo)."""
    try:
        host, port = split_host_port(text)
        res = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_DGRAM,
                                 socket.IPPROTO_UDP, socket.AI_NUMERICHOST)
        family, _t, _p, _c, sockaddr = res[0]
        return format_sockaddr(family, sockaddr)
    except (ValueError, OSError):
        return text


def format_config(info: DeviceInfo) -> str:
    """The ``wg showconf`` text of a device, byte for byte."""
    out = ["[Interface]\n"]
    if info.listen_port:
        out.append(f"ListenPort = {info.listen_port}\n")
    if info.fwmark:
        out.append(f"FwMark = 0x{info.fwmark:x}\n")
    if info.private_key is not None:
        out.append(f"PrivateKey = {Key(info.private_key).to_base64()}\n")
    out.append("\n")
    for i, p in enumerate(info.peers):
        out.append(f"[Peer]\nPublicKey = {Key(p.public_key).to_base64()}\n")
        if any(p.preshared_key):
            out.append(f"PresharedKey = {Key(p.preshared_key).to_base64()}\n")
        if p.allowed_ips:
            out.append("AllowedIPs = " + ", ".join(normalise_ip(a) for a in p.allowed_ips) + "\n")
        if p.endpoint:
            out.append(f"Endpoint = {normalise_endpoint(p.endpoint)}\n")
        if p.persistent_keepalive_interval:
            out.append(f"PersistentKeepalive = {p.persistent_keepalive_interval}\n")
        if i + 1 < len(info.peers):
            out.append("\n")
    return "".join(out)


# -- wg-quick(8) ---------------------------------------------------------------

INTERFACE_NAME_RE = re.compile(r"^[a-zA-Z0-9_=+.-]{1,15}$")
_CONF_NAME_RE = re.compile(r"(^|/)([a-zA-Z0-9_=+.-]{1,15})\.conf$")
_QUICK_KEYS = ("address", "mtu", "dns", "table", "preup", "predown", "postup", "postdown",
               "saveconfig")


@dataclass
class QuickConfig:
    """A wg-quick configuration: its own keys, plus the wg(8) part."""

    path: Path
    interface: str
    addresses: list[str] = field(default_factory=list)
    mtu: int | None = None
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    table: str | None = None
    pre_up: list[str] = field(default_factory=list)
    post_up: list[str] = field(default_factory=list)
    pre_down: list[str] = field(default_factory=list)
    post_down: list[str] = field(default_factory=list)
    save_config: bool = False
    wg_lines: list[tuple[int, str]] = field(default_factory=list)
    device: DeviceConfig = field(default_factory=DeviceConfig)

    def stripped(self) -> str:
        """What ``wg-quick strip`` prints: the wg(8) lines (plus echo's newline)."""
        return "".join(line + "\n" for _, line in self.wg_lines) + "\n"


def resolve_config_path(arg: str, confdir: Path = Path("/etc/wireguard")) -> tuple[Path, str]:
    """wg-quick's rules: a bare interface name means ``/etc/wireguard/NAME.conf``.

    :returns: (absolute real path, interface name)
    :raises ConfigError: the file is missing or not named ``IFNAME.conf``.
    """
    path = confdir / f"{arg}.conf" if INTERFACE_NAME_RE.match(arg) else Path(arg)
    if not path.exists():
        raise ConfigError(f"`{path}' does not exist")
    m = _CONF_NAME_RE.search(str(path))
    if not m:
        raise ConfigError("The config file must be a valid interface name, followed by .conf")
    return path.resolve(), m.group(2)


def world_accessible(path: Path) -> bool:
    """wg-quick warns when the file AND its directory both grant any 'other' bit."""
    try:
        return bool(path.stat().st_mode & path.parent.stat().st_mode & 0o007)
    except OSError:
        return False


def _bash_trim(s: str) -> str:
    return s.strip(" \t\n\v\f\r")


def _read_bool(value: str) -> bool:
    if value == "true":
        return True
    if value == "false":
        return False
    raise ValueError(f"`{value}' is neither true nor false")


def parse_quick_config(
    text: str, path: Path, interface: str, warn: Callable[[str], None] | None = None
) -> QuickConfig:
    """Parse a wg-quick file completely (both its keys and the wg(8) part).

    :raises ConfigError: naming the file, the line and the reason.
    """
    qc = QuickConfig(path=path, interface=interface)
    in_interface = False
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip(" \t\n")  # bash `read -r` trims IFS whitespace
        stripped = line.split("#", 1)[0]
        key = _bash_trim(stripped.split("=", 1)[0])
        value = _bash_trim(stripped.split("=", 1)[1] if "=" in stripped else stripped)
        lkey = key.lower()
        if key.startswith("["):
            in_interface = lkey == "[interface]"
        if in_interface and lkey in _QUICK_KEYS:
            try:
                _quick_line(qc, lkey, value)
            except ValueError as e:
                raise ConfigError(str(e), str(path), lineno) from None
            continue
        qc.wg_lines.append((lineno, line))
    qc.device = parse_config("", str(path), lines=qc.wg_lines, warn=warn)
    return qc


def _quick_line(qc: QuickConfig, key: str, value: str) -> None:
    if key == "address":
        for a in value.replace(",", " ").split():
            _check_address(a)
            qc.addresses.append(a)
    elif key == "mtu":
        if not re.fullmatch(r"[0-9]+", value) or not 68 <= int(value) <= 65535:
            raise ValueError(f"MTU is not a number between 68 and 65535: `{value}'")
        qc.mtu = int(value)
    elif key == "dns":
        for v in value.replace(",", " ").split():
            if re.fullmatch(r"[0-9.]+", v) or ":" in v:
                qc.dns.append(v)
            else:
                qc.dns_search.append(v)
    elif key == "table":
        if value not in ("auto", "off") and not re.fullmatch(r"[A-Za-z0-9_-]+", value):
            raise ValueError(f"Table is neither auto, off nor a routing table: `{value}'")
        qc.table = value
    elif key == "preup":
        qc.pre_up.append(value)
    elif key == "postup":
        qc.post_up.append(value)
    elif key == "predown":
        qc.pre_down.append(value)
    elif key == "postdown":
        qc.post_down.append(value)
    elif key == "saveconfig":
        qc.save_config = _read_bool(value)


def _check_address(addr: str) -> None:
    ip, slash, length = addr.partition("/")
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        socket.inet_pton(family, ip)
    except OSError:
        raise ValueError(
            f"Address is not an IP address with an optional /prefix: `{addr}'"
        ) from None
    maxlen = 32 if family == socket.AF_INET else 128
    if slash and (not re.fullmatch(r"[0-9]+", length) or int(length) > maxlen):
        raise ValueError(f"Address has a bad prefix length: `{addr}'")
