"""The asyncio shell on loopback (no root needed) and the command lines."""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys

import dns.asyncquery
import dns.message
import dns.rcode
import dns.update
import pytest

from wgpy.control.uapi import DeviceInfo, PeerInfo, UapiError
from wgpy.control.uapi_client import UapiClient
from wgpy.discovery.cli import registry_main
from wgpy.discovery.records import Names
from wgpy.discovery.registry import Registry
from wgpy.discovery.server import RegistryServer, SelfConfig, public_key_of

NAMES = Names.for_zone("wg.example")
PRIV = bytes(range(1, 33))
KA = bytes([7]) * 32


class FakeUapi(UapiClient):
    """A device that answers ``get`` from memory (or fails, when told to)."""

    def __init__(self) -> None:
        super().__init__("wgtest-none")
        self.fail = False
        self.calls = 0

    def get(self) -> DeviceInfo:
        self.calls += 1
        if self.fail:
            raise UapiError(-2, "Unable to access interface: No such file or directory")
        return DeviceInfo(private_key=PRIV, listen_port=51820, peers=[
            PeerInfo(KA, endpoint="10.201.0.2:40000", allowed_ips=["10.99.0.1/32"])])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def udp_exchange(data: bytes, port: int, want_reply: bool = True) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(data, ("127.0.0.1", port))
        return s.recv(512) if want_reply else b""


def test_udp_tcp_garbage_and_update_over_loopback() -> None:
    async def main() -> None:
        uapi = FakeUapi()
        port = free_port()
        srv = RegistryServer(Registry(NAMES, ttl=3), "wgtest-none",
                             [("127.0.0.1", port)],
                             uapi, SelfConfig(), refresh=0.0)
        await srv.start()
        try:
            q = dns.message.make_query(NAMES.instance(KA), "SRV")
            r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=2)
            assert r.rcode() == dns.rcode.NOERROR and r.answer[0][0].port == 40000
            r = await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=2)
            assert r.answer[0][0].port == 40000
            # --self without an explicit endpoint: the address the query arrived on.
            me = NAMES.instance(public_key_of(PRIV))
            r = await dns.asyncquery.udp(dns.message.make_query(me, "SRV"), "127.0.0.1",
                                         port=port, timeout=2)
            assert r.answer[0][0].port == 51820
            assert r.additional[0][0].address == "127.0.0.1"
            # Garbage over UDP and TCP: answered FORMERR or dropped, and the server lives on.
            bad = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff"
            reply = await asyncio.to_thread(udp_exchange, bad, port)
            assert reply[:2] == b"\x12\x34" and reply[3] & 0x0F == dns.rcode.FORMERR
            await asyncio.to_thread(udp_exchange, b"\x00", port, False)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(struct.pack("!H", 3) + b"abc")
            await writer.drain()
            writer.close()
            # An UPDATE over loopback did not come through the tunnel: refused.
            u = dns.update.UpdateMessage(NAMES.zone)
            u.add(NAMES.lan_host(KA), 30, "A", "192.168.1.10")
            r = await dns.asyncquery.udp(u, "127.0.0.1", port=port, timeout=2)
            assert r.rcode() == dns.rcode.REFUSED
            # The device goes away: SERVFAIL, not silence; then it comes back.
            uapi.fail = True
            r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=2)
            assert r.rcode() == dns.rcode.SERVFAIL
            uapi.fail = False
            r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=2)
            assert r.rcode() == dns.rcode.NOERROR
            assert srv.registry.stats["formerr"] >= 2
        finally:
            srv.close()

    asyncio.run(main())


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wgpy.discovery.cli", *args],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("cmd", ["registry", "discover"])
def test_help_reads_like_a_man_page(cmd: str) -> None:
    p = cli(cmd, "--help")
    assert p.returncode == 0
    for word in ("usage: wgpy " + cmd, "examples:", "exit status:", "--interface", "--zone"):
        assert word in p.stdout
    # Both stay in the foreground (what a service manager wants) and say so.
    assert "runs in the foreground" in p.stdout or "keeps running in the foreground" in p.stdout


@pytest.mark.parametrize("args,needle", [
    (["registry", "--interface", "x"], "--zone"),
    (["registry", "-i", "x", "-z", "wg.example", "--listen", "1.2.3.4:70000"], "out of range"),
    (["registry", "-i", "x", "-z", "a..b"], "not a domain name"),
    (["registry", "-i", "x", "-z", "z", "--ttl", "-1"], "out of range"),
    (["discover", "-i", "x", "-z", "z", "-r", "[fd00::1"], "bad address"),
    (["discover", "-i", "x", "-z", "z", "-r", "10.0.0.1", "--once", "--interval", "3"],
     "not allowed with"),
    (["discover", "-i", "x", "-z", "z", "-r", "10.0.0.1", "--lan-address", "nope"],
     "not an IP address"),
    (["bogus"], "usage"),
])
def test_bad_usage_exits_2_without_traceback(args: list[str], needle: str) -> None:
    p = cli(*args)
    assert p.returncode == 2
    assert needle in p.stderr and "Traceback" not in p.stderr


def test_missing_device_is_a_clear_error() -> None:
    p = cli("discover", "-i", "wgpy-no-such-if", "-z", "wg.example", "-r", "127.0.0.1:1",
            "--once")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "wgpy-no-such-if" in p.stderr
    assert registry_main(["-i", "wgpy-no-such-if", "-z", "wg.example",
                          "--listen", "127.0.0.1:1"]) == 1
