"""Two userspace tunnels in one process, peers of each other over loopback UDP.

No namespace and no root: the quickest real test of ``wgpy.userspace``
(real sockets, real WireGuard, both TCP stacks ours).  ``pair(tmp)``
writes the two wg-quick files and opens both tunnels; ``a`` is 10.93.0.1
(and fd00:93::1), ``b`` 10.93.0.2.  Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

from wgpy.control.keys import genkey
from wgpy.userspace import Tunnel

A4, B4 = "10.93.0.1", "10.93.0.2"
A6, B6 = "fd00:93::1", "fd00:93::2"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_pair(tmp: Path, b_port: int | None = None, extra_a: str = "") -> tuple[Path, Path]:
    """The two files; ``b_port``: where a expects b (a port nobody uses makes a
    silent peer)."""
    ka, kb = genkey(secrets.token_bytes), genkey(secrets.token_bytes)
    pa, pb = free_udp_port(), free_udp_port()
    a = tmp / "a.conf"
    b = tmp / "b.conf"
    a.write_text(f"[Interface]\nPrivateKey = {ka.to_base64()}\nAddress = {A4}/32, {A6}/128\n"
                 f"ListenPort = {pa}\n{extra_a}\n[Peer]\nPublicKey = "
                 f"{kb.public_key().to_base64()}\nAllowedIPs = {B4}/32, {B6}/128\n"
                 f"Endpoint = 127.0.0.1:{b_port or pb}\n")
    b.write_text(f"[Interface]\nPrivateKey = {kb.to_base64()}\nAddress = {B4}/32, {B6}/128\n"
                 f"ListenPort = {pb}\n\n[Peer]\nPublicKey = {ka.public_key().to_base64()}\n"
                 f"AllowedIPs = {A4}/32, {A6}/128\nEndpoint = 127.0.0.1:{pa}\n")
    return a, b


def pair(tmp: Path, timeout: float = 10.0) -> tuple[Tunnel, Tunnel]:
    a, b = write_pair(tmp)
    ta = Tunnel(a, timeout=timeout)
    try:
        tb = Tunnel(b, timeout=timeout)
    except BaseException:
        ta.close()
        raise
    return ta, tb
