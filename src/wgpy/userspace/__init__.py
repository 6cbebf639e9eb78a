"""WireGuard inside a Python program: no TUN interface, no root.

``Tunnel(config)`` opens a tunnel from an ordinary wg-quick file and gives
the program sockets through it: ``create_connection``, ``listen``,
``udp_socket``, ``ping``, ``resolve`` (through the file's DNS servers), and
for asyncio ``open_connection`` and ``start_server``.  docs/userspace.md
is the reference; ``wgpy socks`` and ``wgpy forward`` are built on it.
"""

from wgpy.userspace.sockets import TunnelListener, TunnelSocket, TunnelUdpSocket
from wgpy.userspace.tunnel import Tunnel, load_config

__all__ = ["Tunnel", "TunnelListener", "TunnelSocket", "TunnelUdpSocket", "load_config"]
