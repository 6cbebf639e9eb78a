"""Config parsing: every form, and errors that name the line."""

from __future__ import annotations

import ipaddress

import pytest

from wgpy.protocol.errors import ConfigError
from wgpy.proxy.config import Origin, load, parse, parse_ports

GOOD = """\
# a comment
[Proxy]
ListenPort = 15002
ListenAddress = 127.0.0.2, ::1
Mark = 0x10
ConnectTimeout = 250ms
IdleTimeout = 2m

[Rule]
Name = web
Prefix = 10.77.0.0/24, fd00:77::/64
Prefix = 10.78.0.0/24
Ports = 8000-8999, 80, 81, 443
Protocol = tcp, udp
Origin = 10.99.0.2:8080, [fd00:99::2]:8080   # two origins
Origin = 10.99.0.3
Map = 10.77.0.9 -> 10.99.0.4:80, 10.99.0.5
ProxyProtocol = v2
Allow = 192.168.0.0/16
Deny = 192.168.50.3/32
MaxPerSource = 7
RatePerSource = 20
IdleTimeout = 30

[Rule]
Prefix = 10.80.0.0/16
Origin = 10.99.0.9:22
"""


def test_good_config_parses_every_form() -> None:
    cfg = parse(GOOD, "good.conf")
    st = cfg.settings
    assert (st.listen_port, st.listen_v4, st.listen_v6, st.mark) == (15002, "127.0.0.2", "::1", 16)
    assert st.connect_timeout == 0.25 and st.idle_timeout == 120
    web, second = cfg.rules
    assert web.name == "web" and web.line == 9 and second.name == "rule2"
    assert [str(p) for p in web.prefixes] == ["10.77.0.0/24", "fd00:77::/64", "10.78.0.0/24"]
    assert web.ports == ((80, 81), (443, 443), (8000, 8999))
    assert web.protocols == ("tcp", "udp")
    ip = ipaddress.ip_address
    assert web.origins == (Origin(ip("10.99.0.2"), 8080), Origin(ip("fd00:99::2"), 8080),
                           Origin(ip("10.99.0.3"), None))  # fmt: skip
    assert web.table == ((ip("10.77.0.9"), (Origin(ip("10.99.0.4"), 80),
                                            Origin(ip("10.99.0.5"), None))),)  # fmt: skip
    assert web.proxy_protocol == 2 and web.max_per_source == 7 and web.rate_per_source == 20
    assert web.idle_timeout == 30 and web.connect_timeout == 0.25  # rule overrides, else default
    assert second.all_ports() and second.protocols == ("tcp",) and second.proxy_protocol == 0
    assert second.max_per_source == st.max_per_source
    assert [str(p) for p in cfg.prefixes(6)] == ["fd00:77::/64"]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("[Rule]\nPrefix = 10.1.0.0/33\nOrigin = 10.9.0.1:1\n", 2, "not a CIDR"),
        ("[Rule]\nPrefix = 10.1.0.1/24\nOrigin = 10.9.0.1:1\n", 2, "host bits"),
        ("[Rule]\nPrefix = 10.1.0.0/24\nOrigin = 10.9.0.1:80800\n", 3, "out of range"),
        ("[Rule]\nPrefix = 10.1.0.0/24\nOrigin = example.com:80\n", 3, "names are not resolved"),
        ("[Rule]\nPrefix = 10.1.0.0/24\nOrigin = 10.1.0.7:80\n", 1, "loop back"),
        ("[Rule]\nPrefix = 10.1.0.0/24\nOrigin = 127.0.0.1:80\n", 1, "loopback"),
        ("[Rule]\nPrefix = 10.1.0.0/24\n", 1, "neither Origin nor Map"),
        ("[Rule]\nOrigin = 10.9.0.1:1\n", 1, "no Prefix"),
        ("[Rule]\nPrefix = 10.1.0.0/24\nPorts = 90-80\nOrigin = 10.9.0.1\n", 3, "backwards"),
        ("[Rule]\nPrefix = 10.1.0.0/24\nProtocol = sctp\nOrigin = 10.9.0.1\n", 3, "tcp or udp"),
        ("[Rule]\nPrefix = 10.1.0.0/24\nProtocol = udp\nOrigin = 10.9.0.1\n"
         "ProxyProtocol = v1\n", 5, "v1 cannot carry UDP"),
        ("[Rule]\nPrefix = 10.1.0.0/24\nOrigin = 10.9.0.1\nProxyProtocol = v3\n", 4, "v1 or v2"),
        ("[Rule]\nPrefix = 10.1.0.0/24\nMap = 10.2.0.1 -> 10.9.0.1\n", 3, "not inside"),
        ("[Rule]\nPrefix = 10.1.0.0/24\nMap = 10.1.0.1 10.9.0.1\n", 3, "ADDRESS -> ORIGIN"),
        ("[Rule]\nPrefix = 10.1.0.0/24\nOrigin = 10.9.0.1\nIdleTimeout = soon\n", 4, "duration"),
        ("[Rule]\nPrefix = 10.1.0.0/24\nOrigin = 10.9.0.1\nColour = red\n", 4, "unknown [Rule]"),
        ("[Rule]\nPrefix = 10.1.0.0/24\nOrigin = 10.9.0.1\nName = a\nName = b\n", 5, "twice"),
        ("[Proxy]\nListenPort = 0\n[Rule]\nPrefix = 10.1.0.0/24\nOrigin = 10.9.0.1\n", 2,
         "out of range"),
        ("[Proxy]\nTable = 255\n[Rule]\nPrefix = 10.1.0.0/24\nOrigin = 10.9.0.1\n", 1, "kernel"),
        ("[Proxy]\nControlSocket = x.sock\n", 2, "absolute"),
        ("[Proxy]\n[Proxy]\n", 2, "second [Proxy]"),
        ("[Rules]\n", 1, "unknown section"),
        ("Prefix = 10.1.0.0/24\n", 1, "before any"),
        ("[Rule]\nPrefix\n", 2, "Key = Value"),
        ("[Rule]\nPrefix =\n", 2, "empty value"),
        ("[Proxy]\n", 0, "no [Rule]"),
        ("[Rule]\nName = a\nPrefix = 10.1.0.0/24\nOrigin = 10.9.0.1\n"
         "[Rule]\nName = a\nPrefix = 10.2.0.0/24\nOrigin = 10.9.0.1\n", 5, "already used"),
    ],
)
def test_errors_name_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse(text, "x.conf")
    assert (ei.value.lineno or 0) == line, str(ei.value)
    assert fragment in str(ei.value)
    assert str(ei.value).startswith(f"x.conf:{line}: " if line else "x.conf: ")


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("10.0.0.2:80", "10.0.0.2", 80),
        ("[fd00::2]:80", "fd00::2", 80),
        ("10.0.0.2", "10.0.0.2", None),
        ("fd00::2", "fd00::2", None),
        ("[fd00::2]", "fd00::2", None),
        ("10.0.0.2:same", "10.0.0.2", None),
        ("[fd00::2]:same", "fd00::2", None),
    ],
)
def test_origin_syntax(text: str, host: str, port: int | None) -> None:
    rule = parse(f"[Rule]\nPrefix = 10.1.0.0/24\nOrigin = {text}\n").rules[0]
    assert rule.origins == (Origin(ipaddress.ip_address(host), port),)
    assert rule.origins[0].resolve(443) == (host, port or 443)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[fd00::2:80", "'[fd00::2:80': missing ']'"),
        ("[fd00::2]80", "'[fd00::2]80': expected ':PORT' after the address"),
        ("10.0.0.2:", "'10.0.0.2:': expected ':PORT' after the address"),
        ("10.0.0.2:http", "origin: 'http' is not an integer"),
        ("0.0.0.0:80", "must be a unicast address"),
    ],
)
def test_bad_origins_name_the_line(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse(f"[Rule]\nPrefix = 10.1.0.0/24\nOrigin = {text}\n", "x.conf")
    assert str(ei.value).startswith("x.conf:3: origin: ") and fragment in str(ei.value)


def test_ports_merge_and_wildcard() -> None:
    assert parse_ports("*") == ((1, 65535),)
    assert parse_ports("5, 1-3, 4, 10") == ((1, 5), (10, 10))


def test_unreadable_file_is_a_config_error(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load("/nonexistent/wgpy-proxy.conf")
