"""A client's own wg-quick configuration, as text and as a QR code (pure).

The official WireGuard apps (Android, iOS) import a tunnel by scanning a
QR code of the wg-quick text itself, so the QR code holds exactly the bytes
of the downloaded file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import segno

from wgpy.control.keys import Key


@dataclass(frozen=True)
class ClientSettings:
    """What every client of the console gets, from ``wgpy ui``'s options."""

    endpoint_host: str | None = None  # None: the host the admin browsed to
    endpoint_port: int | None = None  # None: the interface's ListenPort
    allowed_ips: tuple[str, ...] = ("0.0.0.0/0", "::/0")
    dns: tuple[str, ...] = ()
    persistent_keepalive: int = 25
    mtu: int | None = None


@dataclass(frozen=True)
class ClientConfig:
    private_key: Key
    addresses: list[str]
    server_public_key: Key
    endpoint: str
    preshared_key: Key | None = None
    settings: ClientSettings = field(default_factory=ClientSettings)

    def text(self) -> str:
        s = self.settings
        lines = ["[Interface]", f"PrivateKey = {self.private_key.to_base64()}",
                 f"Address = {', '.join(self.addresses)}"]
        if s.dns:
            lines.append(f"DNS = {', '.join(s.dns)}")
        if s.mtu:
            lines.append(f"MTU = {s.mtu}")
        lines += ["", "[Peer]", f"PublicKey = {self.server_public_key.to_base64()}"]
        if self.preshared_key is not None:
            lines.append(f"PresharedKey = {self.preshared_key.to_base64()}")
        lines += [f"AllowedIPs = {', '.join(s.allowed_ips)}", f"Endpoint = {self.endpoint}"]
        if s.persistent_keepalive:
            lines.append(f"PersistentKeepalive = {s.persistent_keepalive}")
        return "\n".join(lines) + "\n"


def format_endpoint_host(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def qr_svg(text: str) -> str:
    """The QR code of ``text`` as an inline SVG element (no XML declaration).

    Error correction M, as the WireGuard apps' own exports use; a config of
    about 300 bytes needs a version 13 symbol (69 modules), drawn 5 pixels a
    module, which a phone reads from a screen easily.
    """
    qr = segno.make(text, error="m", micro=False)
    out = io.BytesIO()
    qr.save(out, kind="svg", scale=5, border=4, xmldecl=False, svgns=True, omitsize=True,
            title="WireGuard configuration", dark="#000", light="#fff")
    # A viewBox (omitsize) lets a narrow screen shrink the code without
    # cropping it; the natural size keeps whole pixels per module elsewhere.
    width, height = qr.symbol_size(scale=5, border=4)
    return out.getvalue().decode().replace(
        "<svg ", f'<svg width="{width}" height="{height}" shape-rendering="crispEdges" ', 1)
