"""A lab for the userspace tunnel: a WireGuard peer (wgpyd or wireguard-go)
with real services behind it, and a client namespace where programs run as
an unprivileged user who cannot open ``/dev/net/tun``.

    peer namespace                         client namespace
    wg interface 10.99.0.1, fd00:99::1     no WireGuard interface at all
    HTTP, sink, echo, DNS, iperf3 ...      uid 65534, no capabilities,
    veth 10.77.0.1  <------------------->  veth 10.77.0.2; a tmpfs hides
                                           /dev/net; wgpy.userspace over UDP

``UserLab.config`` is the client's wg-quick file (Address 10.99.0.2 and
fd00:99::2, DNS 10.99.0.1).  ``unprivileged(argv)`` runs a command there
with ``setpriv`` (uid/gid 65534, no groups, an empty bounding set,
no_new_privs) after hiding ``/dev/net`` in the command's own mount
namespace.  Everything is torn down by the ``Lab``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from wgpy.testing.lab import Lab
from wgpy.testing.nodes import WgNode, genkey, pubkey, start

PEER4, CLIENT4 = "10.99.0.1", "10.99.0.2"
PEER6, CLIENT6 = "fd00:99::1", "fd00:99::2"
PEER_OUTER, CLIENT_OUTER = "10.77.0.1", "10.77.0.2"
WG_PORT = 51820
HTTP_PORT = 8000
SINK_PORT = 9000
ECHO_PORT = 7
UDP_ECHO_PORT = 7
BEHAVE_PORT = 9100
IPERF_PORT = 5201
DNS_NAME = "peer.lab"
NOBODY = 65534
SRC = Path(__file__).resolve().parents[2]  # the src/ directory this package runs from


@dataclass
class UserLab:
    lab: Lab
    peer_ns: str
    client_ns: str
    peer: WgNode
    client_private: str
    home: Path  # a directory the unprivileged user may read and write
    config: Path
    files: Path  # what the peer's HTTP server serves
    behave_log: Path
    services: list[str] = field(default_factory=list)

    def write_config(self, name: str, endpoint: str, extra: str = "", dns: bool = True,
                     address: str | None = None, private: str | None = None) -> Path:
        """Another client config (by default the same key) with another endpoint,
        e.g. a relay.  Two programs must not run with one key at once: the peer
        takes the last one it heard for the key's only endpoint."""
        path = self.home / name
        lines = ["[Interface]", f"PrivateKey = {private or self.client_private}",
                 f"Address = {address or f'{CLIENT4}/32, {CLIENT6}/128'}"]
        if dns:
            lines.append(f"DNS = {PEER4}")
        lines += [extra, "", "[Peer]", f"PublicKey = {self.peer.public}",
                  f"AllowedIPs = {PEER4}/32, {PEER6}/128, 10.99.1.0/24",
                  f"Endpoint = {endpoint}"]
        path.write_text("\n".join(lines) + "\n")
        os.chmod(path, 0o644)
        return path

    def another_client(self, name: str, number: int) -> Path:
        """A second client (its own key, 10.99.0.NUMBER and fd00:99::NUMBER) the
        peer knows, and its config file ``name``."""
        private = genkey()
        self.peer.wg(f"set {self.peer.ifname} peer {pubkey(private)} "
                     f"allowed-ips 10.99.0.{number}/32,fd00:99::{number}/128")
        return self.write_config(name, f"{PEER_OUTER}:{WG_PORT}", private=private,
                                 address=f"10.99.0.{number}/32, fd00:99::{number}/128")

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` as the unprivileged user in the client namespace (run it with
        ``env()``: the environment passes through ``setpriv``)."""
        inner = " ".join(shlex.quote(a) for a in [
            "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", *argv])
        # ip netns exec gives the command its own mount namespace: hide /dev/net
        # there, and make the interpreter reachable (see expose_script).
        prelude = ("mount -t tmpfs -o size=16k,mode=0755 wgpy-no-tun /dev/net && "
                   + expose_script([sys.prefix, sys.base_prefix, str(SRC)], "/dev/net/.expose"))
        return ["ip", "netns", "exec", self.client_ns, "sh", "-c", f"{prelude}exec {inner}"]

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(SRC), "HOME": str(self.home)}

    def unprivileged(self, argv: list[str], timeout: float = 120, check: bool = True,
                     input: str | None = None) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(self.command(argv), capture_output=True, text=True,
                           timeout=timeout, input=input, env=self.env())
        if check and p.returncode != 0:
            raise AssertionError(f"{argv} exited {p.returncode}\nstdout: {p.stdout}\n"
                                 f"stderr: {p.stderr}")
        return p

    def spawn_unprivileged(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        """Start ``argv`` unprivileged in the background (the lab stops it)."""
        out = open(self.lab.workdir / log, "wb")
        p = subprocess.Popen(self.command(argv), stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True, env=self.env())
        self.lab.procs.append(p)
        return p

    def python(self, module: str, *args: str, timeout: float = 120,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.unprivileged([*self.python_argv(), module, *args], timeout, check)

    @staticmethod
    def python_argv() -> list[str]:
        return [sys.executable, "-m"]

    def wgpy(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "wgpy.tools.cli", *args]

    def service(self, *args: str, ns: str | None = None, name: str = "service") -> None:
        """Start ``wgpy.testing.services ARGS`` in the peer namespace; wait for it."""
        log = f"{name}-{len(self.services)}.log"
        self.lab.popen(ns or self.peer_ns, [sys.executable, "-m", "wgpy.testing.services",
                                            *args], env={"PYTHONPATH": str(SRC)}, log=log)
        self.lab.wait_for(f"{name} ready", lambda: "ready" in self.lab.log(log), timeout=20)
        self.services.append(log)


def expose_script(paths: list[str], staging: str) -> str:
    """Shell commands (each ending in ``&& ``) that let any user reach ``paths``
    in the current mount namespace: where an ancestor directory is closed to
    others (a Python installed under a 0700 /root), a tmpfs with mode 0755
    covers that ancestor and the needed child is bind-mounted back into it,
    read-only.  Nothing changes outside the namespace."""
    blocked: dict[Path, set[str]] = {}
    for p in paths:
        path = Path(p).resolve()
        for anc in reversed(path.parents):
            if anc == path:
                break
            if not anc.stat().st_mode & 0o001:
                child = path.relative_to(anc).parts[0]
                blocked.setdefault(anc, set()).add(child)
                break
    cmds: list[str] = []
    n = 0
    for anc, children in blocked.items():
        kept = []
        for child in sorted(children):
            n += 1
            stage = f"{staging}/{n}"
            cmds += [f"mkdir -p {stage}", f"mount --bind {shlex.quote(str(anc / child))} {stage}"]
            kept.append((child, stage))
        cmds.append(f"mount -t tmpfs -o size=16k,mode=0755 wgpy-expose {shlex.quote(str(anc))}")
        for child, stage in kept:
            target = shlex.quote(str(anc / child))
            cmds += [f"mkdir -p {target}", f"mount --bind {stage} {target}",
                     f"mount -o remount,bind,ro {target}"]
    return "".join(c + " && " for c in cmds)


def build(lab: Lab, impl: str, big_file_mib: int = 0) -> UserLab:
    """The two namespaces, the peer (``impl``), its services and the client's config.
    ``big_file_mib``: also serve ``big.bin`` of that many MiB (random bytes)."""
    peer_ns, client_ns = lab.netns("upeer"), lab.netns("uclient")
    lab.veth(peer_ns, client_ns)
    lab.run(peer_ns, f"ip addr add {PEER_OUTER}/24 dev eth0")
    lab.run(client_ns, f"ip addr add {CLIENT_OUTER}/24 dev eth0")
    peer = start(lab, peer_ns, impl, f"{PEER4}/24", f"{PEER6}/64", port=WG_PORT)
    lab.run(peer_ns, f"ip addr add 10.99.1.1/24 dev {peer.ifname}")
    client_private = genkey()
    peer.wg(f"set {peer.ifname} peer {pubkey(client_private)} "
            f"allowed-ips {CLIENT4}/32,{CLIENT6}/128")
    home = Path(tempfile.mkdtemp(prefix="wgpy-userlab-"))
    os.chmod(home, 0o777)
    lab.cleanups.append(lambda: shutil.rmtree(home, ignore_errors=True))
    files = lab.workdir / "www"
    files.mkdir()
    (files / "small.txt").write_text("hello through the tunnel\n")
    if big_file_mib:
        with open(files / "big.bin", "wb") as f:
            for _ in range(big_file_mib):
                f.write(os.urandom(1 << 20))
    behave_log = lab.workdir / "behave.log"
    behave_log.touch()
    ul = UserLab(lab, peer_ns, client_ns, peer, client_private, home,
                 home / "wg-user.conf", files, behave_log)
    ul.write_config("wg-user.conf", f"{PEER_OUTER}:{WG_PORT}")
    lab.popen(peer_ns, [sys.executable, "-m", "http.server", "--bind", "::",
                        str(HTTP_PORT), "--directory", str(files)], log="http.log")
    lab.wait_for("http server", lambda: lab.run(
        peer_ns, f"curl -sf http://{PEER4}:{HTTP_PORT}/small.txt", check=False).returncode == 0,
        timeout=20)
    ul.service("sink", "--host", "::", "--port", str(SINK_PORT), name="sink")
    ul.service("tcp-echo", "--host", "::", "--port", str(ECHO_PORT), name="echo")
    ul.service("udp-echo", "--host", PEER4, "--port", str(UDP_ECHO_PORT), name="udpecho")
    ul.service("behave", "--host", PEER4, "--port", str(BEHAVE_PORT), "--log",
               str(behave_log), name="behave")
    ul.service("dns", "--host", PEER4, "--port", "53", "--record", f"{DNS_NAME}={PEER4}",
               "--record", f"{DNS_NAME}={PEER6}", name="dns")
    return ul
