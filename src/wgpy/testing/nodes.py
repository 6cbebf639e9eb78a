"""WireGuard devices in lab namespaces: wgpyd or wireguard-go, driven by the real wg."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from wgpy.testing.lab import Lab, device_under_test


def wgpyd_argv() -> list[str]:
    exe = shutil.which("wgpyd")
    return [exe] if exe else [sys.executable, "-m", "wgpy.tools.daemon"]


def genkey() -> str:
    p = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True)
    return p.stdout.strip()


def pubkey(private: str) -> str:
    return subprocess.run(
        ["wg", "pubkey"], input=private, capture_output=True, text=True, check=True
    ).stdout.strip()


@dataclass
class WgNode:
    lab: Lab
    ns: str
    ifname: str
    impl: str
    private: str
    public: str
    log: str

    def wg(self, args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.lab.run(self.ns, f"wg {args}", check=check)

    def show(self, field: str) -> str:
        return self.wg(f"show {self.ifname} {field}").stdout

    def logtext(self) -> str:
        return self.lab.log(self.log)


def launch(lab: Lab, ns: str, ifname: str, impl: str | None = None,
           env: dict[str, str] | None = None, log: str | None = None) -> str:
    """Run the device ``ifname`` in the foreground in ``ns`` (``impl``: wgpyd or
    wireguard-go; by default ``device_under_test()``); return once its UAPI
    socket exists.  The lab stops it on close."""
    impl = impl or device_under_test()
    argv = [*wgpyd_argv(), "-f", ifname] if impl == "wgpyd" else ["wireguard-go", "-f", ifname]
    lab.popen(ns, argv, env=env, log=log or f"{ifname}.log")
    lab.wait_socket(ifname)
    return impl


def start(
    lab: Lab,
    ns: str,
    impl: str,
    address4: str | None = None,
    address6: str | None = None,
    port: int = 51820,
    extra_env: dict[str, str] | None = None,
    args: list[str] | None = None,
) -> WgNode:
    """Start ``impl`` in the foreground in ``ns``, give it a key, a port and addresses."""
    ifname = lab.wg_name()
    log = f"{ifname}.log"
    env = {"LOG_LEVEL": "verbose", **(extra_env or {})}
    if impl == "wgpyd" and args:
        lab.popen(ns, [*wgpyd_argv(), "-f", *args, ifname], env=env, log=log)
        lab.wait_socket(ifname)
    else:
        launch(lab, ns, ifname, impl, env, log)
    private = genkey()
    keyfile = lab.workdir / f"{ifname}.key"
    keyfile.write_text(private + "\n")
    os.chmod(keyfile, 0o600)
    lab.run(ns, f"wg set {ifname} private-key {keyfile} listen-port {port}")
    if address4:
        lab.run(ns, f"ip addr add {address4} dev {ifname}")
    if address6:
        lab.run(ns, f"ip addr add {address6} dev {ifname}")
    lab.run(ns, f"ip link set {ifname} up")
    return WgNode(lab, ns, ifname, impl, private, pubkey(private), log)


def connect(
    a: WgNode,
    b: WgNode,
    a_allowed: str,
    b_allowed: str,
    a_endpoint: str | None,
    b_endpoint: str | None,
    psk: Path | None = None,
    keepalive: int = 0,
) -> None:
    """Make a and b peers.  ``a_allowed`` is what b routes to a; endpoints are optional."""
    for me, other, allowed, ep in ((a, b, b_allowed, b_endpoint), (b, a, a_allowed, a_endpoint)):
        cmd = f"set {me.ifname} peer {other.public} allowed-ips {allowed}"
        if ep:
            cmd += f" endpoint {ep}"
        if psk:
            cmd += f" preshared-key {psk}"
        if keepalive and me is a:
            cmd += f" persistent-keepalive {keepalive}"
        me.wg(cmd)


def two_hosts(lab: Lab) -> tuple[str, str]:
    """Two namespaces on one veth: 10.77.0.1/24 and 10.77.0.2/24, fd00:77::1/2."""
    a, b = lab.netns("hosta"), lab.netns("hostb")
    lab.veth(a, b)
    lab.run(a, "ip addr add 10.77.0.1/24 dev eth0; ip addr add fd00:77::1/64 dev eth0 nodad")
    lab.run(b, "ip addr add 10.77.0.2/24 dev eth0; ip addr add fd00:77::2/64 dev eth0 nodad")
    return a, b


def ping(lab: Lab, ns: str, target: str, count: int = 3, check: bool = True,
         source: str | None = None) -> bool:
    src = f"-I {source} " if source else ""
    p = lab.run(ns, f"ping -c {count} -i 0.2 -W 2 {src}{target}", check=False, timeout=30)
    if check and p.returncode != 0:
        raise AssertionError(f"ping {target} from {ns} failed:\n{p.stdout}{p.stderr}")
    return p.returncode == 0


def uapi_exchange(ifname: str, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes to a device's UAPI socket, half-close, and return what comes
    back until the device closes, resets, or ``timeout`` seconds pass."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(Path("/var/run/wireguard") / f"{ifname}.sock"))
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the device refused mid-request: read what it answered
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)
