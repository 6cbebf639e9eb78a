"""The sans-IO WireGuard protocol core.

Nothing in this package opens a socket, reads a clock or draws randomness:
time arrives as ``now`` (monotonic seconds) and ``wall`` (Unix seconds), and
randomness through an ``rng(n) -> bytes`` callable given to the ``Device``.
Inputs are bytes; outputs are lists of actions (``events``) for the I/O layer.
"""

from wgpy.protocol.device import Device
from wgpy.protocol.errors import ConfigError, DropReason
from wgpy.protocol.events import (
    Action,
    Endpoint,
    HandshakeKeys,
    LogEvent,
    SendBatch,
    SendDatagram,
    WriteTun,
)
from wgpy.protocol.peer import Peer
from wgpy.protocol.stats import DeviceStats, stats_fields, stats_line

__all__ = [
    "Action",
    "ConfigError",
    "Device",
    "DeviceStats",
    "DropReason",
    "Endpoint",
    "HandshakeKeys",
    "LogEvent",
    "Peer",
    "SendBatch",
    "SendDatagram",
    "WriteTun",
    "stats_fields",
    "stats_line",
]
