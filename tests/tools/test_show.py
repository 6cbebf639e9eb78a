"""``wgpy show`` / ``showconf`` against ``wg`` on the same device, byte for byte.

Two sources of devices:
- real wireguard-go devices in two namespaces that have shaken hands and
  exchanged pings (time-dependent "ago" text normalised);
- a replayed UAPI device: a socket in /var/run/wireguard answering ``get``
  with a fixed reply, so both tools format exactly the same numbers (every
  size unit, years of handshake age, a clock wound backward, peer order by
  handshake) without depending on wireguard-go's random peer order.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wgpy.control.keys import genkey, genpsk
from wgpy.testing.lab import Lab, require
from wgpy.testing.wgtools import (
    Dev,
    eventually_equal,
    normalise_time,
    same_unordered,
    start_wireguard_go,
)

FIELDS = ["public-key", "private-key", "listen-port", "fwmark", "peers", "preshared-keys",
          "endpoints", "allowed-ips", "latest-handshakes", "transfer", "persistent-keepalive",
          "dump"]


class ReplayDevice:
    """A UAPI socket that answers every ``get`` with ``reply()``; sets are refused."""

    def __init__(self, path: Path, reply: Callable[[], str]) -> None:
        self.path = path
        self.reply = reply
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(2)
                buf = b""
                try:
                    while b"\n\n" not in buf:
                        data = conn.recv(4096)
                        if not data:  # wg opens and closes an empty connection first
                            break
                        buf += data
                    if buf.startswith(b"get=1\n"):
                        conn.sendall((self.reply() + "errno=0\n\n").encode())
                    elif buf:
                        conn.sendall(b"errno=-1\n\n")
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()
        self.path.unlink(missing_ok=True)


@pytest.fixture
def replay(lab: Lab) -> Iterator[Callable[[Callable[[], str]], Dev]]:
    require("wg")
    made: list[ReplayDevice] = []

    def make(reply: Callable[[], str]) -> Dev:
        name = lab.wg_name()
        made.append(ReplayDevice(Path("/var/run/wireguard") / f"{name}.sock", reply))
        return Dev(lab, None, name)

    yield make
    for r in made:
        r.close()


def _run(dev: Dev, tool: str, *args: str, env: dict[str, str] | None = None) -> str:
    fn = dev.wg if tool == "wg" else dev.wgpy
    rc, out, err = fn(*args, env=env)
    assert "Traceback" not in err
    return f"rc={rc}\n{out}"


def compare(dev: Dev, *args: str, env: dict[str, str] | None = None) -> None:
    eventually_equal(lambda: _run(dev, "wg", *args, env=env),
                     lambda: _run(dev, "wgpy", *args, env=env))


T0 = int(time.time())
PRIV = genkey(os.urandom)
PEERS = [genkey(os.urandom).public_key() for _ in range(6)]
PSK = genpsk(os.urandom)


def busy_reply() -> str:
    peer_lines = [
        # (handshake sec, rx, tx, keepalive, endpoint, psk, allowed)
        (T0 - 3725, 1023, 1536, 25, "192.168.1.2:51820", True, ["10.0.0.2/32", "fd00::2/128"]),
        (T0 - (400 * 86400 + 7200 + 1), 5 * 1024**2 + 17, 3 * 1024**3, 61,
         "[fd00::1:2]:443", False, ["10.1.0.0/16", "::ffff:1.2.3.0/120", "0.0.0.0/0"]),
        (0, 0, 0, 0, None, False, []),
        (T0 + 3600, 2 * 1024**4 + 99, 1, 3600, "10.9.9.9:1", True, ["10.2.0.0/24"]),
        (T0 - 1, 1024, 0, 1, "192.168.200.1:65535", False, ["192.168.0.0/16"]),
        (T0 - 366 * 86400, 0, 1, 0, None, False, ["fd00:1:2:3::/64"]),
    ]
    out = [f"private_key={PRIV.hex()}", "listen_port=51820", "fwmark=3735928559"]
    for key, (hs, rx, tx, ka, ep, psk, allowed) in zip(PEERS, peer_lines, strict=True):
        out += [f"public_key={key.hex()}",
                f"preshared_key={PSK.hex() if psk else '0' * 64}", "protocol_version=1"]
        if ep:
            out.append(f"endpoint={ep}")
        out += [f"last_handshake_time_sec={hs}", f"last_handshake_time_nsec={hs % 1000 * 1000}",
                f"tx_bytes={tx}", f"rx_bytes={rx}", f"persistent_keepalive_interval={ka}"]
        out += [f"allowed_ip={a}" for a in allowed]
    return "".join(line + "\n" for line in out)


def test_replayed_device_every_view(replay: Callable[[Callable[[], str]], Dev]) -> None:
    global T0
    T0 = int(time.time())  # relative to now, not to when the module was imported
    dev = replay(busy_reply)
    compare(dev, "show", dev.name)
    compare(dev, "show", dev.name, env={"WG_COLOR_MODE": "always"})
    compare(dev, "show", dev.name, env={"WG_HIDE_KEYS": "never"})
    compare(dev, "showconf", dev.name)
    for field in FIELDS:
        compare(dev, "show", dev.name, field)
    compare(dev, "show", dev.name, "bogus")
    compare(dev, "show", dev.name, "dump", "extra")
    # Sanity that the comparison covers what it claims to.
    out = _run(dev, "wgpy", "show", dev.name)
    assert re.search(r"1 hour, 2 minutes, \d+ seconds ago", out)
    assert re.search(r"1 year, 35 days, 2 hours, (\d+ seconds?|\d+ minutes?)", out)
    for text in ("System clock wound backward", "1023 B received, 1.50 KiB sent",
                 "5.00 MiB received, 3.00 GiB sent", "2.00 TiB received",
                 "every 1 minute, 1 second",
                 "fwmark: 0xdeadbeef", "[fd00::1:2]:443", "::ffff:1.2.3.0/120", "(hidden)",
                 "every 1 hour"):
        assert text in out, text


def test_replayed_device_minimal(replay: Callable[[Callable[[], str]], Dev]) -> None:
    dev = replay(lambda: "listen_port=0\n")
    compare(dev, "show", dev.name)
    compare(dev, "showconf", dev.name)
    for field in FIELDS:
        compare(dev, "show", dev.name, field)


def test_json(replay: Callable[[Callable[[], str]], Dev]) -> None:
    dev = replay(busy_reply)
    rc, out, err = dev.wgpy("show", "--json", dev.name)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["interface"] == dev.name and doc["fwmark"] == 0xDEADBEEF
    assert doc["public_key"] == PRIV.public_key().to_base64()
    assert "private_key" not in doc and PRIV.to_base64() not in out
    by_key = {p["public_key"]: p for p in doc["peers"]}
    first = by_key[PEERS[0].to_base64()]
    assert first["latest_handshake"] == T0 - 3725 and first["transfer_rx"] == 1023
    assert first["allowed_ips"] == ["10.0.0.2/32", "fd00::2/128"] and first["has_preshared_key"]
    assert by_key[PEERS[2].to_base64()]["endpoint"] is None
    rc, out, _ = dev.wgpy("show", "--json", dev.name, env={"WG_HIDE_KEYS": "never"})
    assert json.loads(out)["private_key"] == PRIV.to_base64()


def test_unknown_interface_and_usage(lab: Lab) -> None:
    require("wg")
    dev = Dev(lab, None, "wgnonexist0")
    compare(dev, "show", "wgnonexist0")
    compare(dev, "showconf", "wgnonexist0")
    compare(dev, "show", "a", "b", "c")
    compare(dev, "showconf")


@pytest.fixture
def pair(lab: Lab) -> tuple[Dev, Dev]:
    """Two wireguard-go devices that have shaken hands and exchanged pings."""
    require("wg", "wireguard-go", "ping")
    na, nb = lab.netns("sa"), lab.netns("sb")
    lab.veth(na, nb)
    lab.run(na, "ip addr add 192.168.42.1/24 dev eth0")
    lab.run(nb, "ip addr add 192.168.42.2/24 dev eth0")
    a, b = Dev(lab, na, start_wireguard_go(lab, na)), Dev(lab, nb, start_wireguard_go(lab, nb))
    ka, kb = genkey(os.urandom), genkey(os.urandom)
    psk = Path(lab.workdir / "psk")
    psk.write_text(genpsk(os.urandom).to_base64())
    for me, key, _other, okey, addr, oaddr, ep in (
        (a, ka, b, kb, "10.42.0.1", "10.42.0.2", "192.168.42.2"),
        (b, kb, a, ka, "10.42.0.2", "10.42.0.1", "192.168.42.1"),
    ):
        kf = lab.workdir / f"{me.name}.key"
        kf.write_text(key.to_base64())
        rc, _, err = me.wgpy("set", me.name, "listen-port", "51820", "private-key", str(kf),
                             "peer", okey.public_key().to_base64(), "preshared-key", str(psk),
                             "endpoint", f"{ep}:51820", "allowed-ips", f"{oaddr}/32,fd00:42::/64")
        assert rc == 0, err
        lab.run(me.ns, f"ip addr add {addr}/24 dev {me.name} && ip link set {me.name} up")
    lab.run(a.ns, "ping -c 2 -i 0.2 -W 5 10.42.0.2", timeout=30)
    return a, b


def test_real_devices_after_handshake(pair: tuple[Dev, Dev]) -> None:
    a, _ = pair
    _, out, _ = a.wgpy("show", a.name)
    assert "latest handshake:" in out and "transfer:" in out

    def norm(tool: str, *args: str, env: dict[str, str] | None = None) -> Callable[[], str]:
        return lambda: normalise_time(_run(a, tool, *args, env=env))

    for args in (("show",), ("show", a.name), ("show", a.name, "dump"), ("showconf", a.name)):
        eventually_equal(norm("wg", *args), norm("wgpy", *args))
    eventually_equal(norm("wg", "show", a.name, env={"WG_COLOR_MODE": "always"}),
                     norm("wgpy", "show", a.name, env={"WG_COLOR_MODE": "always"}))
    for field in FIELDS:
        eventually_equal(norm("wg", "show", a.name, field), norm("wgpy", "show", a.name, field))


def test_all_and_interfaces(pair: tuple[Dev, Dev]) -> None:
    # Other tests' sockets come and go in the same directory: compare with retries.
    a, b = pair
    for args in (("show", "interfaces"), ("show", "all", "public-key"), ("show", "all", "peers")):
        eventually_equal(functools.partial(_run, a, "wg", *args),
                         functools.partial(_run, a, "wgpy", *args))
    _, out, _ = a.wgpy("show", "interfaces")
    assert a.name in out.split() and b.name in out.split()
    rc, out, _ = a.wgpy()  # no arguments: show
    assert rc == 0 and f"interface: {a.name}" in out


def test_multi_peer_real_device(dev: Dev, tmp_path: Path) -> None:
    """wireguard-go returns peers in random order: compare peer blocks unordered."""
    args: list[str] = []
    for i in range(4):
        pub = genkey(os.urandom).public_key().to_base64()
        args += ["peer", pub, "allowed-ips", f"10.77.{i}.0/24",
                 "endpoint", f"192.168.77.{i + 1}:{1000 + i}"]
    assert dev.wgpy("set", dev.name, *args)[0] == 0
    for cmd in (("show", dev.name), ("showconf", dev.name)):
        assert same_unordered(dev.wg(*cmd)[1], dev.wgpy(*cmd)[1])
    for field in ("dump", "peers", "endpoints", "allowed-ips"):
        w, p = dev.wg("show", dev.name, field)[1], dev.wgpy("show", dev.name, field)[1]
        assert sorted(w.splitlines()) == sorted(p.splitlines())


def test_colour_only_on_a_terminal(dev: Dev) -> None:
    """Through a pty (a terminal) both colour; through a pipe neither does."""
    import pty

    def on_tty(argv: list[str]) -> bytes:
        pid, fd = pty.fork()
        if pid == 0:  # child
            env = {k: v for k, v in os.environ.items() if k != "WG_COLOR_MODE"}
            assert dev.ns is not None
            os.execvpe("ip", ["ip", "netns", "exec", dev.ns, *argv], env)
        chunks = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        os.waitpid(pid, 0)
        os.close(fd)
        return b"".join(chunks)

    from wgpy.testing.wgtools import WGPY

    ours = on_tty([*WGPY, "show", dev.name])
    theirs = on_tty(["wg", "show", dev.name])
    assert b"\x1b[" in ours and ours == theirs
    assert "\x1b[" not in dev.wgpy("show", dev.name)[1]
