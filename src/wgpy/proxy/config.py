"""Parse and validate ``wgpy proxy`` configuration files.

Theory of operation
-------------------
The file is INI-like, in the style of wg(8) configs: a ``[Proxy]`` section
with process-wide settings, then one ``[Rule]`` section per published
service.  Keys may repeat where a list makes sense (``Origin``, ``Map``,
``Allow``, ``Deny``, ``Prefix``); values may also be comma-separated.
``#`` starts a comment.  Every error names ``FILE:LINE`` so an operator can
fix it; a configuration either parses completely or not at all, which is
what lets ``SIGHUP`` keep the running configuration on a bad edit.

Nothing here touches the network: parsing is pure, and ``load()`` only reads
the file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from wgpy.control.endpoint import Endpoint, split_host_port
from wgpy.protocol.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PROTOCOLS = ("tcp", "udp")
T = TypeVar("T")
ALL_PORTS: tuple[tuple[int, int], ...] = ((1, 65535),)


@dataclass(frozen=True)
class Origin:
    """Where a rule sends connections: a configured address, and a port or
    ``None`` for "the port the client dialled" (``Origin = 10.99.0.3``).

    Not an endpoint (:data:`wgpy.protocol.events.Endpoint`): it becomes one
    only per connection, by :meth:`resolve`.
    """

    host: IPAddress
    port: int | None

    def resolve(self, dst_port: int) -> Endpoint:
        """The endpoint to dial for a connection the client made to ``dst_port``."""
        return (str(self.host), self.port if self.port is not None else dst_port)

    def __str__(self) -> str:
        h = f"[{self.host}]" if self.host.version == 6 else str(self.host)
        return f"{h}:{self.port}" if self.port is not None else f"{h}:same"


@dataclass(frozen=True)
class Rule:
    name: str
    line: int
    prefixes: tuple[IPNetwork, ...]
    ports: tuple[tuple[int, int], ...]
    protocols: tuple[str, ...]
    origins: tuple[Origin, ...]
    table: tuple[tuple[IPAddress, tuple[Origin, ...]], ...]
    proxy_protocol: int  # 0 (off), 1 or 2
    allow: tuple[IPNetwork, ...]
    deny: tuple[IPNetwork, ...]
    max_per_source: int
    max_connections: int  # 0 = only the global limit applies
    rate_per_source: float  # new connections per second, 0 = unlimited
    connect_timeout: float
    idle_timeout: float
    health_port: int | None  # probe port for origins without a fixed port
    health_check: bool

    def all_ports(self) -> bool:
        return self.ports == ALL_PORTS


@dataclass(frozen=True)
class Settings:
    listen_port: int = 15001
    listen_v4: str = "127.0.0.1"
    listen_v6: str = "::1"
    mark: int = 0x2A0
    table: int = 4242
    rule_priority: int = 4242
    nft_table: str = "wgpy_proxy"
    control_socket: str = "/run/wgpy-proxy.sock"
    max_connections: int = 4096
    max_per_source: int = 256
    connect_timeout: float = 5.0
    idle_timeout: float = 300.0
    udp_idle_timeout: float = 60.0
    buffer_size: int = 256 * 1024
    health_interval: float = 5.0
    health_timeout: float = 2.0
    health_fall: int = 2
    health_rise: int = 1


@dataclass(frozen=True)
class ProxyConfig:
    source: str
    settings: Settings
    rules: tuple[Rule, ...]

    def prefixes(self, version: int) -> list[IPNetwork]:
        seen: list[IPNetwork] = []
        for r in self.rules:
            for p in r.prefixes:
                if p.version == version and p not in seen:
                    seen.append(p)
        return seen


# -- value parsers -----------------------------------------------------------


class _ValueError(Exception):
    pass


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_int(text: str, lo: int, hi: int) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise _ValueError(f"{text!r} is not an integer") from None
    if not lo <= v <= hi:
        raise _ValueError(f"{v} is out of range {lo}..{hi}")
    return v


def parse_seconds(text: str) -> float:
    t = text.strip().lower()
    scale = 1.0
    for suffix, mult in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if t.endswith(suffix):
            t, scale = t[: -len(suffix)], mult
            break
    try:
        v = float(t) * scale
    except ValueError:
        raise _ValueError(f"{text!r} is not a duration (e.g. 5, 250ms, 2m)") from None
    if not 0 < v <= 7 * 86400:
        raise _ValueError(f"duration {text!r} must be > 0 and at most a week")
    return v


def parse_network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise _ValueError(f"{text!r} is not a CIDR prefix ({e})") from None


def parse_address(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise _ValueError(f"{text!r} is not an IP address (names are not resolved)") from None


def parse_origin(text: str) -> Origin:
    """``10.0.0.2:80``, ``[fd00::2]:80``, or a bare address (or ``ADDR:same``)
    for "the client's port"; split by the package's one ``HOST:PORT`` parser."""
    t = text.strip()
    try:
        host, port_text = split_host_port(t, port_optional=True)
    except ValueError:
        if t.startswith("[") and "]" not in t:
            raise _ValueError(f"{text!r}: missing ']'") from None
        raise _ValueError(f"{text!r}: expected ':PORT' after the address") from None
    addr = parse_address(host)
    if addr.is_unspecified or addr.is_multicast:
        raise _ValueError(f"{text!r}: an origin must be a unicast address")
    port = None if port_text in ("", "same") else parse_int(port_text, 1, 65535)
    return Origin(addr, port)


def parse_ports(text: str) -> tuple[tuple[int, int], ...]:
    """``80, 443, 8000-8999`` or ``*``; returns sorted, merged ranges."""
    ranges: list[tuple[int, int]] = []
    for part in _split(text):
        if part in ("*", "all"):
            ranges.append((1, 65535))
            continue
        lo_s, sep, hi_s = part.partition("-")
        lo = parse_int(lo_s.strip(), 1, 65535)
        hi = parse_int(hi_s.strip(), 1, 65535) if sep else lo
        if hi < lo:
            raise _ValueError(f"port range {part!r} is backwards")
        ranges.append((lo, hi))
    if not ranges:
        raise _ValueError("empty port list")
    ranges.sort()
    merged = [ranges[0]]
    for lo, hi in ranges[1:]:
        plo, phi = merged[-1]
        if lo <= phi + 1:
            merged[-1] = (plo, max(phi, hi))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def _parse_proxy_protocol(text: str) -> int:
    t = text.strip().lower()
    table = {"off": 0, "none": 0, "no": 0, "v1": 1, "1": 1, "v2": 2, "2": 2}
    if t not in table:
        raise _ValueError(f"{text!r}: expected off, v1 or v2")
    return table[t]


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("yes", "on", "true", "1"):
        return True
    if t in ("no", "off", "false", "0"):
        return False
    raise _ValueError(f"{text!r}: expected yes or no")


# -- the file ----------------------------------------------------------------

_SETTINGS_KEYS: dict[str, str] = {
    "listenport": "listen_port",
    "listenaddress": "listen",
    "mark": "mark",
    "table": "table",
    "rulepriority": "rule_priority",
    "nfttable": "nft_table",
    "controlsocket": "control_socket",
    "maxconnections": "max_connections",
    "maxpersource": "max_per_source",
    "connecttimeout": "connect_timeout",
    "idletimeout": "idle_timeout",
    "udpidletimeout": "udp_idle_timeout",
    "buffersize": "buffer_size",
    "healthinterval": "health_interval",
    "healthtimeout": "health_timeout",
    "healthfall": "health_fall",
    "healthrise": "health_rise",
}

_RULE_KEYS = {
    "name", "prefix", "ports", "protocol", "origin", "map", "proxyprotocol",
    "allow", "deny", "maxpersource", "maxconnections", "ratepersource",
    "connecttimeout", "idletimeout", "healthcheck", "healthport",
}  # fmt: skip


@dataclass
class _Section:
    kind: str
    line: int
    items: list[tuple[int, str, str]] = field(default_factory=list)

    def get(self, key: str) -> list[tuple[int, str]]:
        return [(n, v) for n, k, v in self.items if k == key]


def _sections(text: str, source: str) -> list[_Section]:
    sections: list[_Section] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfigError(f"malformed section header {raw.strip()!r}", source, n)
            kind = line[1:-1].strip().lower()
            if kind not in ("proxy", "rule"):
                raise ConfigError(
                    f"unknown section [{line[1:-1]}] (use [Proxy] or [Rule])", source, n
                )
            if kind == "proxy" and any(s.kind == "proxy" for s in sections):
                raise ConfigError("a second [Proxy] section", source, n)
            sections.append(_Section(kind, n))
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"expected 'Key = Value', got {raw.strip()!r}", source, n)
        if not sections:
            raise ConfigError("a setting before any [Proxy] or [Rule] section", source, n)
        key = key.strip().lower()
        value = value.strip()
        if not value:
            raise ConfigError(f"{key}: empty value", source, n)
        sections[-1].items.append((n, key, value))
    return sections


def _one(sec: _Section, key: str, source: str) -> tuple[int, str] | None:
    vals = sec.get(key)
    if len(vals) > 1:
        raise ConfigError(f"{key} given twice in this section", source, vals[1][0])
    return vals[0] if vals else None


def _settings(sec: _Section | None, source: str) -> Settings:
    s = Settings()
    if sec is None:
        return s
    kw: dict[str, Any] = {}
    for n, key, value in sec.items:
        attr = _SETTINGS_KEYS.get(key)
        if attr is None:
            raise ConfigError(f"unknown [Proxy] key {key!r}", source, n)
        if attr in kw or (attr == "listen" and "listen_v4" in kw):
            raise ConfigError(f"{key} given twice", source, n)
        try:
            if attr == "listen":
                for a in _split(value):
                    addr = parse_address(a)
                    kw["listen_v4" if addr.version == 4 else "listen_v6"] = str(addr)
            elif attr in ("listen_port",):
                kw[attr] = parse_int(value, 1, 65535)
            elif attr in ("mark", "table", "rule_priority"):
                kw[attr] = parse_int(value, 1, 2**31 - 1)
            elif attr == "nft_table":
                if not value.replace("_", "").isalnum() or len(value) > 64:
                    raise _ValueError(f"{value!r}: letters, digits and '_' only")
                kw[attr] = value
            elif attr == "control_socket":
                if not value.startswith("/"):
                    raise _ValueError("ControlSocket must be an absolute path")
                kw[attr] = value
            elif attr in ("max_connections", "max_per_source"):
                kw[attr] = parse_int(value, 1, 1_000_000)
            elif attr == "buffer_size":
                kw[attr] = parse_int(value, 4096, 64 * 1024 * 1024)
            elif attr in ("health_fall", "health_rise"):
                kw[attr] = parse_int(value, 1, 100)
            else:
                kw[attr] = parse_seconds(value)
        except _ValueError as e:
            raise ConfigError(f"{key}: {e}", source, n) from None
    if kw.get("table") in (253, 254, 255):
        raise ConfigError("Table must not be a kernel table (253-255)", source, sec.line)
    return dataclasses.replace(s, **kw)


def _at(source: str, n: int, key: str, fn: Callable[..., T], *args: object) -> T:
    try:
        return fn(*args)
    except _ValueError as e:
        raise ConfigError(f"{key}: {e}", source, n) from None


def _many(sec: _Section, key: str) -> list[tuple[int, str]]:
    return [(n, part) for n, v in sec.get(key) for part in _split(v)]


def _rule(sec: _Section, index: int, st: Settings, source: str) -> Rule:
    for n, key, _ in sec.items:
        if key not in _RULE_KEYS:
            raise ConfigError(f"unknown [Rule] key {key!r}", source, n)

    def single(key: str, fn: Callable[..., T], default: T, *args: object) -> T:
        item = _one(sec, key, source)
        return _at(source, item[0], key, fn, item[1], *args) if item else default

    name = single("name", str, f"rule{index}")
    if not name.replace("-", "").replace("_", "").isalnum():
        n = (_one(sec, "name", source) or (sec.line, ""))[0]
        raise ConfigError(f"name {name!r}: letters, digits, '-', '_' only", source, n)

    prefixes = [_at(source, n, "prefix", parse_network, v) for n, v in _many(sec, "prefix")]
    if not prefixes:
        raise ConfigError(f"rule {name!r} has no Prefix", source, sec.line)
    ports = single("ports", parse_ports, ALL_PORTS)

    protocols: list[str] = []
    for n, v in _many(sec, "protocol"):
        if v.lower() not in PROTOCOLS:
            raise ConfigError(f"protocol {v!r}: expected tcp or udp", source, n)
        protocols.append(v.lower())
    protocols = list(dict.fromkeys(protocols or ["tcp"]))

    origins = [_at(source, n, "origin", parse_origin, v) for n, v in _many(sec, "origin")]
    table: list[tuple[IPAddress, tuple[Origin, ...]]] = []
    for n, v in sec.get("map"):
        left, arrow, right = v.partition("->")
        if not arrow:
            raise ConfigError("map: expected 'ADDRESS -> ORIGIN[, ORIGIN...]'", source, n)
        addr = _at(source, n, "map", parse_address, left.strip())
        if not any(addr in p for p in prefixes):
            raise ConfigError(f"map: {addr} is not inside this rule's Prefix", source, n)
        if any(a == addr for a, _ in table):
            raise ConfigError(f"map: {addr} mapped twice", source, n)
        targets = tuple(_at(source, n, "map", parse_origin, x) for x in _split(right))
        if not targets:
            raise ConfigError("map: no origin after '->'", source, n)
        table.append((addr, targets))
    if not origins and not table:
        raise ConfigError(f"rule {name!r} has neither Origin nor Map", source, sec.line)

    pp = single("proxyprotocol", _parse_proxy_protocol, 0)
    if pp == 1 and "udp" in protocols:
        n = (_one(sec, "proxyprotocol", source) or (sec.line, ""))[0]
        raise ConfigError("proxyprotocol: v1 cannot carry UDP; use v2", source, n)
    return Rule(
        name=name,
        line=sec.line,
        prefixes=tuple(prefixes),
        ports=ports,
        protocols=tuple(protocols),
        origins=tuple(origins),
        table=tuple(table),
        proxy_protocol=pp,
        allow=tuple(_at(source, n, "allow", parse_network, v) for n, v in _many(sec, "allow")),
        deny=tuple(_at(source, n, "deny", parse_network, v) for n, v in _many(sec, "deny")),
        max_per_source=single("maxpersource", parse_int, st.max_per_source, 1, 1_000_000),
        max_connections=single("maxconnections", parse_int, 0, 1, 1_000_000),
        rate_per_source=float(single("ratepersource", parse_int, 0, 1, 1_000_000)),
        connect_timeout=single("connecttimeout", parse_seconds, st.connect_timeout),
        idle_timeout=single("idletimeout", parse_seconds, st.idle_timeout),
        health_port=single("healthport", _opt_port, None),
        health_check=single("healthcheck", _parse_bool, True),
    )


def _opt_port(text: str) -> int | None:
    return parse_int(text, 1, 65535)


def _check_rules(rules: Iterable[Rule], source: str) -> None:
    rules = list(rules)
    names: dict[str, int] = {}
    for r in rules:
        if r.name in names:
            raise ConfigError(
                f"rule name {r.name!r} already used at line {names[r.name]}", source, r.line
            )
        names[r.name] = r.line
    published = [p for r in rules for p in r.prefixes]
    for r in rules:
        for o in (*r.origins, *(o for _, os_ in r.table for o in os_)):
            for p in published:
                if o.host in p:
                    raise ConfigError(
                        f"rule {r.name!r}: origin {o.host} is inside published prefix {p} "
                        "(it would loop back into the proxy)", source, r.line,
                    )  # fmt: skip
            if o.host.is_loopback:
                raise ConfigError(f"rule {r.name!r}: origin {o.host} is loopback", source, r.line)


def parse(text: str, source: str = "<config>") -> ProxyConfig:
    """Parse a whole configuration; raise :class:`ConfigError` naming the line.

    :param text: the file's contents.
    :param source: the name used in error messages (normally the path).
    """
    sections = _sections(text, source)
    proxy = next((s for s in sections if s.kind == "proxy"), None)
    settings = _settings(proxy, source)
    rule_secs = [s for s in sections if s.kind == "rule"]
    if not rule_secs:
        raise ConfigError("no [Rule] section: nothing to publish", source)
    rules = tuple(_rule(s, i, settings, source) for i, s in enumerate(rule_secs, start=1))
    _check_rules(rules, source)
    return ProxyConfig(source=source, settings=settings, rules=rules)


def load(path: str | Path) -> ProxyConfig:
    """Read and parse ``path``; an unreadable file is a :class:`ConfigError` too."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", str(p)) from None
    return parse(text, str(p))


def control_socket(path: str | Path) -> str:
    """The ``[Proxy] ControlSocket`` of the file at ``path``, read leniently.

    ``status`` and ``reload`` must reach a running proxy even while its file
    on disk is being edited and does not parse: this reads only that one
    setting (the first one, in the ``[Proxy]`` section) and ignores every
    other line, valid or not.  Without the setting, the default applies.
    Raises :class:`ConfigError` only when the file cannot be read or the
    setting itself is not an absolute path.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", str(p)) from None
    section = ""
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line.startswith("["):
            section = line.strip("[]").strip().lower()
            continue
        key, sep, value = line.partition("=")
        if section == "proxy" and sep and key.strip().lower() == "controlsocket":
            value = value.strip()
            if not value.startswith("/"):
                why = "controlsocket: ControlSocket must be an absolute path"
                raise ConfigError(why, str(p), n)
            return value
    return Settings().control_socket
