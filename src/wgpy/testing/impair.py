"""A UDP relay that impairs what it carries: loss, delay with jitter (which
reorders), as ``tc netem`` would on the path.

Why not netem itself: the kernels the suite runs on may lack it (this
project's CI kernel is built without ``CONFIG_NET_SCH_NETEM``), and
WireGuard is plain UDP, so a relay on the path is the same network to both
ends.  The client's ``Endpoint`` points at the relay; the relay sends from
its own socket to the real peer (which then takes the relay for the
client's endpoint, as it would a NAT) and sends the answers back to
whoever last wrote to it.

    python3 -m wgpy.testing.impair --listen 127.0.0.1:51999 --to 10.77.0.1:51820 \\
        --loss 0.01 --delay 0.02 --jitter 0.005 --seed 1

Both directions get the same impairment, drawn from one seeded generator.
It prints "ready" and runs until killed; it stops by itself after
``--lifetime`` seconds.
"""

from __future__ import annotations

import argparse
import heapq
import random
import select
import socket
import sys
import time

from wgpy.userspace.spec import parse_host_port


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="wgpy.testing.impair")
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--to", required=True, metavar="HOST:PORT")
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--delay", type=float, default=0.0, help="one-way, seconds")
    p.add_argument("--jitter", type=float, default=0.0, help="added uniformly, seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--lifetime", type=float, default=900.0)
    args = p.parse_args(argv)
    listen = parse_host_port(args.listen)
    to = parse_host_port(args.to)
    rnd = random.Random(args.seed)
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(listen)
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back.connect(to)
    for s in (front, back):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.setblocking(False)
    client: tuple[str, int] | None = None
    queue: list[tuple[float, int, int, bytes]] = []  # (due, seq, to back?, data)
    seq = 0
    end = time.monotonic() + args.lifetime
    ep = select.epoll()
    ep.register(front.fileno(), select.EPOLLIN)
    ep.register(back.fileno(), select.EPOLLIN)
    print("ready", flush=True)
    while time.monotonic() < end:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else 1.0
        for fd, _ in ep.poll(timeout):
            sock = front if fd == front.fileno() else back
            for _ in range(256):
                try:
                    data, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                if sock is front:
                    client = (addr[0], addr[1])
                if rnd.random() < args.loss:
                    continue
                due = time.monotonic() + args.delay + rnd.random() * args.jitter
                seq += 1
                heapq.heappush(queue, (due, seq, 1 if sock is front else 0, data))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, to_back, data = heapq.heappop(queue)
            try:
                if to_back:
                    back.send(data)
                elif client is not None:
                    front.sendto(data, client)
            except OSError:
                pass  # a full buffer drops, as a link would
    return 0


if __name__ == "__main__":
    sys.exit(main())
