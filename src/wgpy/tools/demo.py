"""``wgpy demo``: a working tunnel between two network namespaces, then gone.

Steps: make namespaces ``A`` and ``B`` joined by a veth (192.168.241.0/24),
start a userspace WireGuard device in each, configure both from fresh keys
over the UAPI, address the tunnel (10.241.0.1 and .2), ping through it, move
a megabyte over TCP through it, print ``wgpy show`` for both ends, and tear
everything down, also on Ctrl-C or an error.  Needs root and iproute2.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

from wgpy.control.keys import genkey
from wgpy.control.uapi import SOCKET_DIR
from wgpy.control.uapi_client import serving
from wgpy.tools.devices import DeviceError, get_device, set_device
from wgpy.tools.show import color_mode, pretty

UNDERLAY = ("192.168.241.1", "192.168.241.2")
TUNNEL = ("10.241.0.1", "10.241.0.2")
PORT = 51820
TRANSFER_BYTES = 1 << 20

DESCRIPTION = """\
Build two network namespaces joined by a virtual cable, run a userspace
WireGuard device in each (wgpyd, and wireguard-go on one side when it is
installed), configure them with freshly generated keys, ping and send 1 MiB
through the tunnel, print `wgpy show' for both ends, then remove everything.
Nothing outside the two namespaces is touched, apart from the two UAPI
sockets in /var/run/wireguard, which are removed too.  Needs root."""

_SINK = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(20)
c, _ = s.accept(); c.settimeout(20); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    n += len(b)
print(n)
"""

_SOURCE = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
c.sendall(b"\\0" * int(sys.argv[3])); c.close()
"""


class DemoError(Exception):
    pass


@dataclass
class _Demo:
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    verbose: bool = False

    def sh(self, ns: str | None, *argv: str, timeout: float = 30) -> str:
        full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
        if self.verbose:
            print(f"[#] {' '.join(full)}", file=sys.stderr)
        p = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise DemoError(f"`{' '.join(full)}' failed: {p.stderr.strip() or p.returncode}")
        return p.stdout

    def teardown(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for name in self.sockets:
            try:
                (SOCKET_DIR / f"{name}.sock").unlink()
            except FileNotFoundError:
                pass


def wgpyd_works() -> bool:
    if shutil.which("wgpyd") is None:
        return False
    try:
        p = subprocess.run(["wgpyd", "--version"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0


def choose(impl: str) -> tuple[str, str]:
    """The implementation for side A and side B."""
    if impl != "auto":
        a, _, b = impl.partition(",")
        return a, b or a
    have_go = shutil.which("wireguard-go") is not None
    if wgpyd_works():
        return "wgpyd", "wireguard-go" if have_go else "wgpyd"
    if have_go:
        return "wireguard-go", "wireguard-go"
    raise DemoError("neither a working wgpyd nor wireguard-go was found")


def _start_device(d: _Demo, ns: str, impl: str, ifname: str) -> None:
    if shutil.which(impl) is None:
        raise DemoError(f"`{impl}' is not installed")
    d.sockets.append(ifname)
    env = {**os.environ, "WG_PROCESS_FOREGROUND": "1"}  # wireguard-go: stay our child
    p = subprocess.Popen(
        ["ip", "netns", "exec", ns, impl, "-f", ifname],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    d.procs.append(p)
    sock = SOCKET_DIR / f"{ifname}.sock"
    deadline = time.monotonic() + 15
    while not serving(sock):
        if p.poll() is not None:
            raise DemoError(f"`{impl} -f {ifname}' exited with status {p.returncode}")
        if time.monotonic() > deadline:
            raise DemoError(f"`{impl}' created no UAPI socket {sock} within 15 s")
        time.sleep(0.05)


def run_demo(impl: str = "auto", verbose: bool = False) -> int:
    impls = choose(impl)
    d = _Demo(verbose=verbose)
    with _sigterm_as_interrupt():
        try:
            return _run(d, impls)
        finally:
            d.teardown()
            print("Torn down: namespaces, devices and sockets removed.")


def _run(d: _Demo, impls: tuple[str, str]) -> int:
    ns = (f"wgdemoA{d.tag}", f"wgdemoB{d.tag}")
    ifs = (f"wgdA{d.tag}", f"wgdB{d.tag}")
    print(f"Side A: namespace {ns[0]}, interface {ifs[0]}, {impls[0]}")
    print(f"Side B: namespace {ns[1]}, interface {ifs[1]}, {impls[1]}")
    for n in ns:
        d.sh(None, "ip", "netns", "add", n)
        d.namespaces.append(n)
        d.sh(n, "ip", "link", "set", "lo", "up")
    va, vb = f"vdA{d.tag}", f"vdB{d.tag}"
    d.sh(None, "ip", "link", "add", va, "type", "veth", "peer", "name", vb)
    for n, v, addr in zip(ns, (va, vb), UNDERLAY, strict=True):
        d.sh(None, "ip", "link", "set", v, "netns", n, "name", "eth0")
        d.sh(n, "ip", "address", "add", f"{addr}/24", "dev", "eth0")
        d.sh(n, "ip", "link", "set", "eth0", "up")
    keys = (genkey(secrets.token_bytes), genkey(secrets.token_bytes))
    for i in (0, 1):
        _start_device(d, ns[i], impls[i], ifs[i])
    for i in (0, 1):
        j = 1 - i
        set_device(ifs[i], [
            f"private_key={keys[i].hex()}", f"listen_port={PORT}", "replace_peers=true",
            f"public_key={keys[j].public_key().hex()}",
            f"endpoint={UNDERLAY[j]}:{PORT}", "replace_allowed_ips=true",
            f"allowed_ip={TUNNEL[j]}/32",
        ])
        d.sh(ns[i], "ip", "address", "add", f"{TUNNEL[i]}/24", "dev", ifs[i])
        d.sh(ns[i], "ip", "link", "set", "mtu", "1420", "up", "dev", ifs[i])
    print(f"\n$ ping -c 3 {TUNNEL[1]}   (from A, through the tunnel)")
    print(d.sh(ns[0], "ping", "-c", "3", "-W", "5", TUNNEL[1], timeout=40).rstrip())
    print(f"\nSending {TRANSFER_BYTES} bytes over TCP from A to B through the tunnel...")
    sink = subprocess.Popen(
        ["ip", "netns", "exec", ns[1], sys.executable, "-c", _SINK, TUNNEL[1], "5001"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        t0 = time.monotonic()
        for _ in range(50):  # wait for the listener, bounded
            try:
                d.sh(ns[0], sys.executable, "-c", _SOURCE, TUNNEL[1], "5001",
                     str(TRANSFER_BYTES), timeout=30)
                break
            except DemoError:
                time.sleep(0.1)
        out, _ = sink.communicate(timeout=30)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    got = int(out.strip() or 0)
    secs = time.monotonic() - t0
    print(f"B received {got} bytes in {secs:.2f} s")
    if got != TRANSFER_BYTES:
        raise DemoError(f"transfer incomplete: {got} of {TRANSFER_BYTES} bytes")
    color = color_mode(sys.stdout)
    for i in (0, 1):
        print(f"\n$ wgpy show {ifs[i]}   (side {'AB'[i]})")
        sys.stdout.write(pretty(ifs[i], get_device(ifs[i]), color))
    print("\nThe demo worked.")
    return 0


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wgpy demo", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--impl", default="auto",
        help="userspace implementation: auto (default: wgpyd if `wgpyd --version' works, "
             "with wireguard-go on side B when installed; else wireguard-go on both), "
             "a program name for both sides, or A,B for one each (e.g. wgpyd,wireguard-go)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print each command")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("wgpy demo: must be run as root (it creates network namespaces)", file=sys.stderr)
        return 1
    if shutil.which("ip") is None:
        print("wgpy demo: needs iproute2's `ip'", file=sys.stderr)
        return 1
    try:
        return run_demo(args.impl, args.verbose)
    except KeyboardInterrupt:
        print("\nwgpy demo: interrupted", file=sys.stderr)
        return 130
    except (DemoError, DeviceError, subprocess.TimeoutExpired) as e:
        print(f"wgpy demo: {e}", file=sys.stderr)
        return 1
