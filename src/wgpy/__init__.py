"""wgpy: a complete WireGuard VPN in Python."""

__version__ = "0.1.0"
