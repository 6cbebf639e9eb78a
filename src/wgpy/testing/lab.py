"""A network lab of namespaces for integration tests.

Every namespace, process and temporary file a test creates goes through a
``Lab``; ``Lab.close()`` (run by the ``lab`` fixture even when the test fails)
kills the processes and deletes the namespaces, which takes their veths,
TUNs and routes with them.  Names carry a per-run random tag because
``/var/run/wireguard`` and interface names are shared by all namespaces.

Addresses used by tests stay inside 10.0.0.0/8, 192.168.0.0/16 and fd00::/8.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from wgpy.control.uapi_client import serving


def tag() -> str:
    """A short random tag, unique enough per test run, for names."""
    return secrets.token_hex(3)


class LabError(RuntimeError):
    pass


class Lab:
    def __init__(self, workdir: Path) -> None:
        self.tag = tag()
        self.workdir = workdir
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sockets: list[Path] = []
        self.cleanups: list[Callable[[], None]] = []
        self._n = 0

    # -- naming ---------------------------------------------------------
    def name(self, base: str) -> str:
        """A machine-unique name of at most 15 characters (an IFNAMSIZ limit)."""
        self._n += 1
        return f"{base[:6]}{self.tag}{self._n}"[:15]

    def wg_name(self) -> str:
        """A unique WireGuard interface name; its UAPI socket is removed on close."""
        name = self.name("wg")
        self.sockets.append(Path("/var/run/wireguard") / f"{name}.sock")
        return name

    # -- namespaces and links ------------------------------------------
    def netns(self, base: str) -> str:
        ns = self.name(base)
        subprocess.run(["ip", "netns", "add", ns], check=True)
        self.namespaces.append(ns)
        self.run(ns, "ip link set lo up")
        return ns

    def veth(self, ns_a: str, ns_b: str, a: str = "eth0", b: str = "eth0") -> tuple[str, str]:
        """Join two namespaces with a veth pair named ``a`` in ns_a and ``b`` in ns_b."""
        ta, tb = self.name("va"), self.name("vb")
        subprocess.run(["ip", "link", "add", ta, "type", "veth", "peer", "name", tb], check=True)
        subprocess.run(["ip", "link", "set", ta, "netns", ns_a, "name", a], check=True)
        subprocess.run(["ip", "link", "set", tb, "netns", ns_b, "name", b], check=True)
        self.run(ns_a, f"ip link set {a} up")
        self.run(ns_b, f"ip link set {b} up")
        return a, b

    # -- commands -------------------------------------------------------
    def run(
        self,
        ns: str | None,
        cmd: str | Sequence[str],
        check: bool = True,
        timeout: float = 60,
        env: dict[str, str] | None = None,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if ns is not None:
            argv = ["ip", "netns", "exec", ns, *argv]
        full_env = {**os.environ, **(env or {})}
        p = subprocess.run(
            argv,
            capture_output=True,
            timeout=timeout,
            env=full_env,
            input=input.decode() if input is not None else None,
            text=True,
        )
        if check and p.returncode != 0:
            raise LabError(
                f"{' '.join(argv)} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
            )
        return p

    def popen(
        self,
        ns: str | None,
        cmd: str | Sequence[str],
        env: dict[str, str] | None = None,
        log: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a background process, killed (with its group) by close()."""
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if ns is not None:
            argv = ["ip", "netns", "exec", ns, *argv]
        out = open(self.workdir / log, "wb") if log else subprocess.DEVNULL
        p = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self.procs.append(p)
        return p

    def log(self, name: str) -> str:
        path = self.workdir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for(
        self, what: str, predicate: Callable[[], bool], timeout: float = 10, step: float = 0.05
    ) -> None:
        """Poll ``predicate`` until it holds; bounded in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(step)
        raise LabError(f"timed out after {timeout}s waiting for {what}")

    def wait_socket(self, ifname: str, timeout: float = 10) -> None:
        sock = Path("/var/run/wireguard") / f"{ifname}.sock"
        self.wait_for(f"UAPI socket {sock}", lambda: serving(sock), timeout)

    # -- teardown -------------------------------------------------------
    def close(self) -> None:
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception:  # noqa: BLE001 - teardown must go on
                pass
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=5)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for sock in self.sockets:
            try:
                sock.unlink()
            except FileNotFoundError:
                pass


IN_CI = os.environ.get("CI", "").lower() == "true"
IMPLEMENTATIONS = ("wgpyd", "wireguard-go")


def device_under_test() -> str:
    """The WireGuard implementation a lab runs where it does not name one:
    ``WGPY_TEST_DEVICE`` (``wgpyd``, the default, or ``wireguard-go``), so the
    same tests check either against the real tools."""
    impl = os.environ.get("WGPY_TEST_DEVICE", "wgpyd")
    if impl not in IMPLEMENTATIONS:
        raise LabError(f"WGPY_TEST_DEVICE={impl!r}: expected one of {', '.join(IMPLEMENTATIONS)}")
    return impl


def require(*tools: str) -> None:
    """Skip locally when root or a tool is missing; under CI=true, fail instead."""
    import pytest

    ok, why = have_root_netns()
    missing = [t for t in tools if shutil.which(t) is None]
    if ok and not missing:
        return
    reason = why or f"needs {', '.join(missing)}"
    if IN_CI:
        pytest.fail(f"CI=true but the lab cannot run: {reason}")
    pytest.skip(reason)


def have_root_netns() -> tuple[bool, str]:
    """Whether this process can build namespace labs, and if not why."""
    if os.geteuid() != 0:
        return False, "needs root"
    for tool in ("ip",):
        if shutil.which(tool) is None:
            return False, f"needs {tool}"
    return True, ""
