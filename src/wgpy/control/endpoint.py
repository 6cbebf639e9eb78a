"""``HOST:PORT`` text: the one place that splits, parses and prints it (pure).

An endpoint in memory is ``wgpy.protocol.events.Endpoint``, a plain
``(host, port)`` tuple as the socket module takes it.  Text comes in three
strictnesses, all built on ``split_host_port``:

- the UAPI's numeric ``1.2.3.4:51820`` / ``[fd00::1]:51820``
  (``parse_endpoint``: what wireguard-go's ``netip.ParseAddrPort`` takes);
- wg(8)'s ``host:port``, where the host may be a name to resolve
  (``control.config.resolve_endpoint`` splits here, then asks getaddrinfo);
- the proxy's origins, where the port may be left out
  (``split_host_port(text, port_optional=True)``).
"""

from __future__ import annotations

import ipaddress

from wgpy.protocol.events import Endpoint

__all__ = ["Endpoint", "format_endpoint", "parse_endpoint", "split_host_port"]


def split_host_port(text: str, port_optional: bool = False) -> tuple[str, str]:
    """Split ``host:port`` or ``[host]:port`` into the host (brackets removed) and
    the port text.  ValueError, in wg(8)'s words, when the text has no port.

    wg(8) splits an unbracketed text at its last colon.  With
    ``port_optional``, a text without one (``10.0.0.2``, a bare IPv6 address,
    or ``[fd00::2]``) is all host, with an empty port.
    """
    if not text:
        raise ValueError("Unable to parse empty endpoint")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"Unable to find matching brace of endpoint: `{text}'")
        if port_optional and not rest:
            return host, ""
        if not rest.startswith(":") or len(rest) < 2:
            raise ValueError(f"Unable to find port of endpoint: `{text}'")
        return host, rest[1:]
    if port_optional and text.count(":") != 1:
        return text, ""
    host, sep, port = text.rpartition(":")
    if not sep or not port:
        raise ValueError(f"Unable to find port of endpoint: `{text}'")
    return host, port


def parse_endpoint(text: str) -> Endpoint:
    """A numeric endpoint as the UAPI carries it: ``1.2.3.4:51820`` or
    ``[fd00::1]:51820`` (an IPv6 address must be bracketed).  ValueError if
    malformed; the message quotes at most 64 characters of the input."""
    shown = text[:64]
    try:
        host, port = split_host_port(text)
    except ValueError:
        raise ValueError(f"bad endpoint {shown!r}") from None
    bracketed = text.startswith("[")
    if ":" in host and not bracketed:
        raise ValueError(f"bad endpoint {shown!r}: an IPv6 address needs brackets")
    try:
        if bracketed:
            ipaddress.IPv6Address(host)
        else:
            ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"bad address in endpoint {shown!r}") from None
    if not (port.isascii() and port.isdigit()) or len(port) > 5 or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in endpoint {shown!r}")
    return host, int(port)


def format_endpoint(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host bracketed (the UAPI's and wg(8)'s form)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
