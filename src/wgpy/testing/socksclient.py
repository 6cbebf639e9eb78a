"""A SOCKS5 and raw-bytes client for the proxy tests (kernel sockets; what
curl cannot do: UDP ASSOCIATE, and deliberately broken requests).

    python3 -m wgpy.testing.socksclient udp PROXY_HOST PROXY_PORT TARGET_HOST TARGET_PORT
    python3 -m wgpy.testing.socksclient raw PROXY_HOST PROXY_PORT HEX [HEX ...]
    python3 -m wgpy.testing.socksclient connect PROXY_HOST PROXY_PORT TARGET_HOST TARGET_PORT

Each prints one JSON object.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import sys
import time
from typing import Any


def _recv_all(s: socket.socket, limit: float = 5.0) -> tuple[bytes, str]:
    """What the server sends until it closes: (bytes, how it ended)."""
    s.settimeout(limit)
    out = b""
    try:
        while chunk := s.recv(4096):
            out += chunk
        return out, "closed"
    except ConnectionResetError:
        return out, "reset"
    except TimeoutError:
        return out, "still open"


def raw(host: str, port: int, parts: list[bytes]) -> dict[str, Any]:
    """Send ``parts`` (a short pause between them) and report the reply."""
    with socket.create_connection((host, port), timeout=5) as s:
        for p in parts:
            s.sendall(p)
            time.sleep(0.05)
        data, end = _recv_all(s)
    return {"reply": data.hex(), "end": end}


def _socks_request(cmd: int, host: str, port: int) -> bytes:
    ip = ipaddress.ip_address(host)
    atyp = 1 if ip.version == 4 else 4
    return bytes((5, cmd, 0, atyp)) + ip.packed + struct.pack("!H", port)


def connect(host: str, port: int, target: str, tport: int) -> dict[str, Any]:
    """A CONNECT; the reply code and the seconds it took."""
    t = time.monotonic()
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(b"\x05\x01\x00")
        assert s.recv(2) == b"\x05\x00"
        s.sendall(_socks_request(1, target, tport))
        s.settimeout(30)
        reply = s.recv(262)
    return {"code": reply[1] if len(reply) > 1 else None, "seconds": time.monotonic() - t}


def udp(host: str, port: int, target: str, tport: int) -> dict[str, Any]:
    """UDP ASSOCIATE, one datagram to ``target`` and its echo back."""
    with socket.create_connection((host, port), timeout=10) as ctl:
        ctl.sendall(b"\x05\x01\x00")
        assert ctl.recv(2) == b"\x05\x00"
        ctl.sendall(_socks_request(3, "0.0.0.0", 0))
        reply = ctl.recv(262)
        assert reply[:2] == b"\x05\x00", reply.hex()
        relay_ip = str(ipaddress.ip_address(reply[4:8]))
        (relay_port,) = struct.unpack("!H", reply[8:10])
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(5)
        header = b"\0\0\0" + _socks_request(0, target, tport)[3:]
        u.sendto(header + b"ping over socks udp", (relay_ip, relay_port))
        data, _ = u.recvfrom(1000)
        u.close()
    rhost = str(ipaddress.ip_address(data[4:8]))
    (rport,) = struct.unpack("!H", data[8:10])
    return {"from": [rhost, rport], "payload": data[10:].decode()}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    kind, host, port = args[0], args[1], int(args[2])
    if kind == "raw":
        result = raw(host, port, [bytes.fromhex(h) for h in args[3:]])
    elif kind == "connect":
        result = connect(host, port, args[3], int(args[4]))
    else:
        result = udp(host, port, args[3], int(args[4]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
