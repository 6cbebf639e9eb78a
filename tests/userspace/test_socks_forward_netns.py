"""``wgpy socks`` and ``wgpy forward`` run unprivileged in the client
namespace (``wgpy.testing.userlab``), used with curl and kernel sockets."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from wgpy.testing.lab import IMPLEMENTATIONS, Lab, require
from wgpy.testing.userlab import CLIENT4, HTTP_PORT, PEER4, SRC, UDP_ECHO_PORT, UserLab, build

pytestmark = pytest.mark.netns

PROXY = "127.0.0.1:1080"
AUTH_PROXY = "127.0.0.1:1081"
SMALL = "hello through the tunnel\n"


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def ulab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[UserLab]:
    require("ip", "wg", "wireguard-go", "setpriv", "curl", "nc")
    lab = Lab(tmp_path_factory.mktemp(f"socks-{request.param}"))
    try:
        ul = build(lab, request.param)
        (ul.home / "auth").write_text("alice:s3cret pass\n")
        ul.spawn_unprivileged(ul.wgpy("socks", str(ul.config), "-v"), "socks.log")
        second = ul.another_client("second.conf", 3)
        ul.spawn_unprivileged(ul.wgpy("socks", str(second), "--listen", AUTH_PROXY,
                                      "--auth-file", str(ul.home / "auth")), "socks-auth.log")
        lab.wait_for("proxies listening", lambda: "listening" in lab.log("socks.log")
                     and "listening" in lab.log("socks-auth.log"), timeout=20)
        yield ul
    finally:
        lab.close()


def curl(ul: UserLab, *args: str, check: bool = True) -> str:
    p = ul.lab.run(ul.client_ns, ["curl", "-sS", "--max-time", "20", *args], check=check,
                   timeout=30)
    return p.stdout if check else p.stdout + p.stderr


def client(ul: UserLab, *args: str) -> dict[str, Any]:
    p = ul.lab.run(ul.client_ns, [sys.executable, "-m", "wgpy.testing.socksclient", *args],
                   env={"PYTHONPATH": str(SRC)}, timeout=60)
    result: dict[str, Any] = json.loads(p.stdout)
    return result


def test_socks5h_resolves_through_the_tunnel(ulab: UserLab) -> None:
    assert curl(ulab, "-x", f"socks5h://{PROXY}", f"http://peer.lab:{HTTP_PORT}/small.txt"
                ) == SMALL
    assert curl(ulab, "-x", f"socks5://{PROXY}", f"http://{PEER4}:{HTTP_PORT}/small.txt"
                ) == SMALL


def test_http_connect_and_plain_http(ulab: UserLab) -> None:
    # -p: a CONNECT tunnel even for http://; without it, an absolute-URI request.
    assert curl(ulab, "-p", "-x", f"http://{PROXY}", f"http://peer.lab:{HTTP_PORT}/small.txt"
                ) == SMALL
    assert curl(ulab, "-x", f"http://{PROXY}", f"http://peer.lab:{HTTP_PORT}/small.txt"
                ) == SMALL


def test_udp_associate(ulab: UserLab) -> None:
    host, port = PROXY.split(":")
    r = client(ulab, "udp", host, port, PEER4, str(UDP_ECHO_PORT))
    assert r == {"from": [PEER4, UDP_ECHO_PORT], "payload": "ping over socks udp"}


def test_username_password(ulab: UserLab) -> None:
    host, port = AUTH_PROXY.split(":")
    assert curl(ulab, "-x", f"socks5h://alice:s3cret%20pass@{AUTH_PROXY}",
                f"http://peer.lab:{HTTP_PORT}/small.txt") == SMALL
    # Wrong password: RFC 1929's failure reply, then the connection closes.
    wrong = bytes((1, 5)) + b"alice" + bytes((5,)) + b"wrong"
    r = client(ulab, "raw", host, port, "050102", wrong.hex())
    assert r == {"reply": "0502" + "0101", "end": "closed"}
    # No acceptable method offered (no auth): 05 FF, closed.
    assert client(ulab, "raw", host, port, "050100") == {"reply": "05ff", "end": "closed"}
    # HTTP without credentials: 407.
    out = curl(ulab, "-p", "-x", f"http://{AUTH_PROXY}", f"http://{PEER4}:{HTTP_PORT}/",
               "-o", "/dev/null", "-w", "%{http_code}", check=False)
    assert "407" in out


def test_garbage_gets_the_protocols_error_and_a_close(ulab: UserLab) -> None:
    host, port = PROXY.split(":")
    assert client(ulab, "raw", host, port, "ff" * 40)["end"] == "closed"
    assert client(ulab, "raw", host, port, "0500") == {"reply": "05ff", "end": "closed"}
    # BIND: command not supported (7); an unknown address type: 8.
    r = client(ulab, "raw", host, port, "050100", "05020001" + "0a630001" + "0050")
    assert r["reply"].startswith("0500" + "0507") and r["end"] == "closed"
    r = client(ulab, "raw", host, port, "050100", "05010009" + "00" * 6)
    assert r["reply"].startswith("0500" + "0508") and r["end"] == "closed"
    r = client(ulab, "raw", host, port, b"GARBAGE / NOT-HTTP\r\n\r\n".hex())
    assert bytes.fromhex(r["reply"]).startswith(b"HTTP/1.1 400 ") and r["end"] == "closed"
    r = client(ulab, "raw", host, port, b"CONNECT nonsense HTTP/1.1\r\n\r\n".hex())
    assert bytes.fromhex(r["reply"]).startswith(b"HTTP/1.1 400 ")
    # A request that never finishes is dropped after the handshake timeout, and
    # none of this disturbed anyone else.
    assert curl(ulab, "-x", f"socks5h://{PROXY}", f"http://peer.lab:{HTTP_PORT}/small.txt"
                ) == SMALL


def test_unreachable_destinations_fail_fast(ulab: UserLab) -> None:
    host, port = PROXY.split(":")
    # A closed port: the peer's RST -> code 5, at once.
    r = client(ulab, "connect", host, port, PEER4, "1")
    assert r["code"] == 5 and r["seconds"] < 3, r
    # No peer's AllowedIPs cover it: the device's ICMP unreachable -> code 4, at once.
    r = client(ulab, "connect", host, port, "10.55.0.1", "80")
    assert r["code"] == 4 and r["seconds"] < 3, r
    out = curl(ulab, "-p", "-x", f"http://{PROXY}", f"http://{PEER4}:1/", "-o", "/dev/null",
               "-w", "%{http_code}", check=False)
    assert "502" in out


def test_forward_local_udp_and_reverse_tcp_udp(ulab: UserLab) -> None:
    lab = ulab.lab
    # Local services on the client machine, for the reverse forwards.
    lab.popen(ulab.client_ns, [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                               "9999", "--directory", str(ulab.files)], log="local-http.log")
    ulab.service("udp-echo", "--host", "127.0.0.1", "--port", "9998", ns=ulab.client_ns,
                 name="local-udp")
    ulab.spawn_unprivileged(ulab.wgpy(
        "forward", str(ulab.config), "-L", f"5353:{PEER4}:{UDP_ECHO_PORT}/udp",
        "-R", "8081:127.0.0.1:9999", "-R", "5354:127.0.0.1:9998/udp"), "forward.log")
    lab.wait_for("forwards up", lambda: lab.log("forward.log").count("wgpy forward:") >= 3,
                 timeout=20)
    lab.wait_for("local http", lambda: lab.run(ulab.client_ns, "curl -sf http://127.0.0.1:9999/"
                                               "small.txt", check=False).returncode == 0)
    # -L udp: a datagram to 127.0.0.1:5353 reaches the peer's echo and comes back.
    code = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5);"
            "s.sendto(b'via -L udp', ('127.0.0.1', 5353)); print(s.recvfrom(100)[0].decode())")
    assert lab.run(ulab.client_ns, [sys.executable, "-c", code]).stdout == "via -L udp\n"
    # -R tcp: the peer reaches the client's loopback web server on the tunnel address.
    out = lab.run(ulab.peer_ns, f"curl -sS --max-time 10 http://{CLIENT4}:8081/small.txt")
    assert out.stdout == SMALL
    # -R udp: the peer's datagram reaches the client's local UDP echo and comes back.
    code = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5);"
            f"s.sendto(b'via -R udp', ('{CLIENT4}', 5354)); print(s.recvfrom(100)[0].decode())")
    assert lab.run(ulab.peer_ns, [sys.executable, "-c", code]).stdout == "via -R udp\n"


def test_silent_peer_fails_within_the_timeout(ulab: UserLab) -> None:
    cfg = ulab.write_config("silent.conf", "10.77.0.1:51999")  # nobody answers there
    p = ulab.python("wgpy.testing.userclient", "silent", str(cfg), "--port", "80",
                    "--timeout", "3")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["error"] == "TimeoutError", r
    assert "no WireGuard handshake" in r["message"] and "after 3 s" in r["message"], r
    assert 2.9 <= r["seconds"] < 5, r


def test_socket_is_not_a_kernel_socket_but_behaves() -> None:
    # The socket-like object's type and family constants are the kernel's.
    from wgpy.userspace import TunnelSocket

    assert TunnelSocket.type == socket.SOCK_STREAM
