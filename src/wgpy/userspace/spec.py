"""Addresses on the command lines of ``wgpy socks`` and ``wgpy forward``.

``HOST:PORT`` goes through ``wgpy.control.endpoint.split_host_port`` (an
IPv6 address in brackets); a forward is ``[BIND:]PORT:HOST:PORT``, split
from the right so that each host may be a bracketed IPv6 address, with an
optional ``/tcp`` or ``/udp`` suffix (TCP by default), as ssh -L and
onetun write them.
"""

from __future__ import annotations

from dataclasses import dataclass

from wgpy.control.endpoint import split_host_port


def parse_port(text: str, what: str = "port") -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise ValueError(f"bad {what} {text!r}: expected 1-65535")
    return int(text)


def parse_host_port(text: str, default_host: str | None = None) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``; a bare ``PORT`` with ``default_host``."""
    if default_host is not None and text.isascii() and text.isdigit():
        return default_host, parse_port(text)
    host, port = split_host_port(text)
    if not host:
        raise ValueError(f"no host in {text!r}")
    return host, parse_port(port)


@dataclass(frozen=True)
class Forward:
    """A forward from ``bind``:``port`` to ``host``:``host_port``."""

    bind: str
    port: int
    host: str
    host_port: int
    udp: bool

    def __str__(self) -> str:
        def fmt(h: str, p: int) -> str:
            return f"[{h}]:{p}" if ":" in h else f"{h}:{p}"

        proto = "udp" if self.udp else "tcp"
        return f"{fmt(self.bind, self.port)} -> {fmt(self.host, self.host_port)}/{proto}"


def _split_last(text: str) -> tuple[str, str]:
    """(``text`` before its last ``:`` field, that field), honouring brackets."""
    if text.endswith("]"):
        start = text.rfind("[")
        if start < 0:
            raise ValueError(f"unmatched ']' in {text!r}")
        head = text[:start]
        if head and not head.endswith(":"):
            raise ValueError(f"expected ':' before '[' in {text!r}")
        return head[:-1], text[start + 1 : -1]
    head, sep, last = text.rpartition(":")
    return (head if sep else ""), last


def parse_forward(spec: str, default_bind: str) -> Forward:
    """``[BIND:]PORT:HOST:PORT[/tcp|/udp]``.  :raises ValueError: with the reason."""
    body, slash, proto = spec.partition("/")
    if slash and proto.lower() not in ("tcp", "udp"):
        raise ValueError(f"{spec!r}: unknown protocol {proto!r} (tcp or udp)")
    rest, host_port = _split_last(body)
    rest, host = _split_last(rest)
    bind, port = _split_last(rest)
    if not rest or not host:
        raise ValueError(f"{spec!r}: expected [BIND:]PORT:HOST:PORT")
    if bind.startswith("[") and bind.endswith("]"):
        bind = bind[1:-1]
    elif ":" in bind:
        raise ValueError(f"{spec!r}: an IPv6 address needs brackets")
    return Forward(bind or default_bind, parse_port(port, "listening port"), host,
                   parse_port(host_port, "destination port"), proto.lower() == "udp")
