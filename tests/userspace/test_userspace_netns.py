"""The userspace tunnel against real peers (wgpyd and wireguard-go) with real
services behind them, run as an unprivileged user (uid 65534, no
capabilities) in a namespace where /dev/net/tun cannot be opened
(``wgpy.testing.userlab``)."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from wgpy.testing.lab import IMPLEMENTATIONS, Lab, require
from wgpy.testing.userlab import (
    BEHAVE_PORT,
    ECHO_PORT,
    HTTP_PORT,
    IPERF_PORT,
    PEER4,
    PEER6,
    SINK_PORT,
    UserLab,
    build,
)

pytestmark = pytest.mark.netns

CLIENT = "wgpy.testing.userclient"
BIG_MIB = 100


def run(ul: UserLab, *args: str, timeout: float = 180) -> dict[str, Any]:
    p = ul.python(CLIENT, *args, timeout=timeout)
    result: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def ulab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[UserLab]:
    require("ip", "wg", "wireguard-go", "setpriv", "curl", "iperf3")
    lab = Lab(tmp_path_factory.mktemp(f"userlab-{request.param}"))
    try:
        yield build(lab, request.param, big_file_mib=BIG_MIB)
    finally:
        lab.close()


def test_runs_unprivileged_without_a_tun(ulab: UserLab) -> None:
    r = run(ulab, "check-no-tun")
    assert r["uid"] == 65534 and r["euid"] == 65534
    assert r["caps"]["CapEff"] == 0 and r["caps"]["CapPrm"] == 0 and r["caps"]["CapBnd"] == 0
    assert r["tun"].startswith("open: "), r  # /dev/net/tun cannot even be opened


def test_download_100_mib(ulab: UserLab) -> None:
    want = subprocess.run(["sha256sum", str(ulab.files / "big.bin")], capture_output=True,
                          text=True, check=True).stdout.split()[0]
    r = run(ulab, "download", str(ulab.config), "--port", str(HTTP_PORT), "--path", "/big.bin")
    assert r["status"].startswith("HTTP/1.0 200") and r["bytes"] == BIG_MIB << 20
    assert r["sha256"] == want
    print(f"download {BIG_MIB} MiB: {BIG_MIB / r['seconds']:.1f} MiB/s")


def test_upload_100_mib(ulab: UserLab) -> None:
    r = run(ulab, "upload", str(ulab.config), "--port", str(SINK_PORT),
            "--bytes", str(BIG_MIB << 20))
    assert r["sink_bytes"] == BIG_MIB << 20
    assert r["sink_sha256"] == r["sent_sha256"]
    print(f"upload {BIG_MIB} MiB: {BIG_MIB / r['seconds']:.1f} MiB/s")


def test_200_concurrent_connections(ulab: UserLab) -> None:
    r = run(ulab, "concurrent", str(ulab.config), "--port", str(ECHO_PORT), "-n", "200")
    assert r == {"open_at_once": 200, "ok": 200, "errors": []}


def test_fin_and_rst_both_ways(ulab: UserLab) -> None:
    r = run(ulab, "closes", str(ulab.config), "--port", str(BEHAVE_PORT))
    assert r["peer_fin_read"] == "bye\n"
    assert r["peer_rst"] == "ConnectionResetError errno=104", r
    assert r["our_fin_greeting"] == "ok\n" and r["our_fin_then_read"] == "b''"
    ulab.lab.wait_for("the peer's view of our FIN and RST", lambda: "our-rst" in
                      ulab.behave_log.read_text(), timeout=10)
    log = ulab.behave_log.read_text().splitlines()
    assert "peer-fin eof-after-fin" in log  # our half-closed side still sent, then FIN
    assert "our-fin eof 5000" in log  # our FIN came after all 5000 bytes
    assert "our-rst reset 100" in log or "our-rst reset 0" in log, log


def test_ping_dns_udp_and_listening(ulab: UserLab) -> None:
    p = ulab.spawn_unprivileged(
        [*ulab.python_argv(), CLIENT, "probe", str(ulab.config), "--listen-port", "8080"],
        "probe.log")
    ulab.lab.wait_for("the tunnel listens", lambda: '"listening": true' in
                      ulab.lab.log("probe.log"), timeout=30)
    # The peer connects to the unprivileged program's listening socket.
    out = ulab.lab.run(ulab.peer_ns, "echo hello | nc -q 2 -w 5 10.99.0.2 8080", timeout=30)
    assert out.stdout == "echo: hello\n"
    p.wait(timeout=30)
    r = json.loads(ulab.lab.log("probe.log").strip().splitlines()[-1])
    assert r["ping4_ms"] > 0 and r["ping6_ms"] > 0
    assert r["resolve"] == sorted([PEER4, PEER6])
    assert r["resolve_many"] == 60  # truncated over UDP, complete over TCP
    assert r["nxdomain"] == f"gaierror {socket.EAI_NONAME}"
    assert r["udp_echo"] == ["udp through the tunnel", [PEER4, 7]]
    assert r["http_by_name"].startswith("HTTP/1.0 200")
    assert r["accepted_from"] == PEER4


def test_asyncio_open_connection(ulab: UserLab) -> None:
    r = run(ulab, "asyncio-echo", str(ulab.config), "--port", str(ECHO_PORT))
    assert r == {"echo_ok": True, "bytes": 300_000}


def test_httpx_through_the_tunnel(ulab: UserLab) -> None:
    r = run(ulab, "httpx-get", str(ulab.config), "--url", f"http://peer.lab:{HTTP_PORT}/small.txt")
    assert r == {"status": 200, "text": "hello through the tunnel\n"}


def test_iperf3_through_wgpy_forward(ulab: UserLab) -> None:
    ulab.lab.popen(ulab.peer_ns, ["iperf3", "-s", "-p", str(IPERF_PORT)], log="iperf-s.log")
    ulab.spawn_unprivileged(ulab.wgpy("forward", str(ulab.config), "-L",
                                      f"{IPERF_PORT}:{PEER4}:{IPERF_PORT}"), "fwd.log")
    ulab.lab.wait_for("forward listening", lambda: "through the tunnel" in
                      ulab.lab.log("fwd.log"), timeout=20)
    out = ulab.lab.run(ulab.client_ns, ["setpriv", "--reuid=65534", "--regid=65534",
                                        "--clear-groups", "iperf3", "-c", "127.0.0.1", "-p",
                                        str(IPERF_PORT), "-t", "3", "-J"], timeout=60)
    result = json.loads(out.stdout)
    assert result["end"]["sum_received"]["bytes"] > 1 << 20, out.stdout[-500:]
