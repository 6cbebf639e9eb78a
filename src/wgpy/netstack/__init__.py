"""A userspace TCP/IP stack, sans-IO: IP packets and time in, IP packets and
events out (see ``stack``).  It is what ``wgpy.userspace`` runs between a
WireGuard device and the application, so that a program can use a tunnel
without a TUN interface or any privilege.
"""

from wgpy.netstack.events import Ready
from wgpy.netstack.stack import EchoEndpoint, Stack, TcpListener
from wgpy.netstack.tcp import State, TcpConfig, TcpConnection
from wgpy.netstack.udp import UdpEndpoint

__all__ = ["EchoEndpoint", "Ready", "Stack", "State", "TcpConfig", "TcpConnection",
           "TcpListener", "UdpEndpoint"]
