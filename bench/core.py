"""The sans-IO core's hot paths in one process, for instruction counts.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python3 bench/core.py data

Wall-clock benchmarks on a shared machine move with its load; instructions
executed do not.  Each phase runs the core through ``wgpy.testing.memnet``
(no sockets, no TUN) and prints what it did:

- ``setup``: two linked devices with an established session (the common
  part, to subtract from the others);
- ``handshake``: setup, then HANDSHAKES further handshakes (rekeys forced by
  expiring the current keypairs);
- ``data``: setup, then BATCHES batches of BATCH 1400-byte packets each way,
  through ``encapsulate_batch`` and ``decapsulate_batch``.

``bench/compare_core.sh OLD_SRC NEW_SRC`` (or by hand: run each phase under
callgrind with ``PYTHONPATH`` pointing at a tree) gives the per-handshake
and per-packet instruction counts of two trees side by side.
"""

from __future__ import annotations

import sys

from wgpy.protocol import Device
from wgpy.protocol.constants import REJECT_AFTER_MESSAGES
from wgpy.testing.memnet import A_IP4, B_IP4, MemNet, Node, established, ipv4_packet

HANDSHAKES = 20
BATCHES = 40
BATCH = 64


def _expire(dev: Device) -> None:
    for peer in dev.peers.values():
        peer.expire_current_keypairs()


def handshakes(net: MemNet, a: Node, b: Node) -> None:
    done = a.device.stats.handshakes_completed
    for i in range(HANDSHAKES):
        net.advance(6.0)  # past REKEY_TIMEOUT: a new initiation may go out
        _expire(a.device)
        net.send(a, ipv4_packet(A_IP4, B_IP4, b"%d" % i))
        net.deliver()
    assert a.device.stats.handshakes_completed == done + HANDSHAKES


def data(net: MemNet, a: Node, b: Node) -> None:
    payload = bytes(1400 - 28)
    ab = [ipv4_packet(A_IP4, B_IP4, payload) for _ in range(BATCH)]
    ba = [ipv4_packet(B_IP4, A_IP4, payload) for _ in range(BATCH)]
    for _ in range(BATCHES):
        for src, dst, pkts in ((a, b, ab), (b, a, ba)):
            out = src.device.encapsulate_batch(pkts, net.now, net.wall)
            net.handle(src, out)
            wires = net.in_flight[:]
            net.in_flight.clear()
            datagrams = [w.data for w in wires]
            net.handle(dst, dst.device.decapsulate_batch(datagrams, src.endpoint, net.now,
                                                          net.wall))
    kp = b.device.peers[a.public].keypairs.current
    assert kp is not None and kp.send_counter < REJECT_AFTER_MESSAGES
    assert len(a.delivered) >= BATCHES * BATCH  # every packet got through


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    phase = args[0] if args else "data"
    if phase not in ("setup", "handshake", "data"):
        print("usage: core.py setup|handshake|data", file=sys.stderr)
        return 2
    net, a, b = established()
    if phase == "handshake":
        handshakes(net, a, b)
        print(f"{HANDSHAKES} handshakes")
    elif phase == "data":
        data(net, a, b)
        print(f"{BATCHES * BATCH * 2} packets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
