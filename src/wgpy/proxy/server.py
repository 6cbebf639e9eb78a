"""The proxy process: listeners, admission, origin connects, reload, status.

Theory of operation
-------------------
One asyncio loop.  Each TCP listener is read with ``add_reader`` and
drained with non-blocking ``accept()`` in bounded batches.  For each
accepted socket the original destination (``getsockname()``) picks a rule;
the Deny/Allow lists and the :class:`~wgpy.proxy.limits.Limiter` decide
admission; a refusal is a RST (``SO_LINGER`` 0).  Admitted connections
dial the rule's origins in round-robin order (healthy first) with the
rule's connect timeout, and a :class:`~wgpy.proxy.splice.Pipe` carries the
bytes, led by a PROXY header when the rule asks for one.  From accept to
close a connection is plain callbacks on non-blocking sockets, watched by
one :class:`~wgpy.proxy.poller.Poller`: no task, coroutine or asyncio
transport per connection (they were most of its cost).  Every address we
dial comes from :meth:`Router.candidates`, i.e. from the configuration.

``SIGHUP`` (or ``reload`` on the control socket) parses the file again.  A
bad file, or one that changes listener settings, is refused and nothing
changes; otherwise new connections use the new rules while live ones keep
the rule they were admitted under.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from wgpy.control.endpoint import Endpoint, format_endpoint
from wgpy.protocol.errors import ConfigError
from wgpy.service import notify
from wgpy.service.metrics import MetricsServer, on_loop
from wgpy.service.metrics import serve as serve_metrics

from . import config as cfgmod
from . import control, proxyproto
from .config import IPAddress, ProxyConfig, Rule, Settings
from .health import HealthBook, probe
from .limits import Limiter
from .match import REFUSED_NO_RULE, Router, health_targets, parse_ip
from .metrics import proxy_families
from .netsetup import SetupError, apply_setup, apply_teardown, run_commands
from .poller import OUT, Poller
from .rules import sync_commands
from .splice import Pipe
from .stats import RuleStats, Stats
from .tproxy import family_of, rst_close, tcp_listener, udp_listener
from .udp import Admitted, UdpRelay

log = logging.getLogger("wgpy.proxy")
ACCEPT_BATCH = 128
MAX_ORIGIN_TRIES = 3
PROBLEM_LOG_INTERVAL = 10.0  # seconds between two warnings of one rule about its origins
_FD_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_FIXED = ("listen_port", "listen_v4", "listen_v6", "mark", "table", "rule_priority",
          "nft_table", "control_socket")  # fmt: skip


class _Conn:
    """Book-keeping for one admitted TCP connection."""

    __slots__ = ("rule", "src", "stats", "client", "dst", "candidates", "tries", "up", "timer",
                 "origin", "pipe")  # fmt: skip

    def __init__(self, rule: Rule, src: Endpoint, stats: RuleStats, client: socket.socket,
                 dst: Endpoint, candidates: list[Endpoint]) -> None:  # fmt: skip
        self.rule = rule
        self.src = src
        self.stats = stats
        self.client = client
        self.dst = dst  # the address the client dialled
        self.candidates = candidates
        self.tries = 0  # origins attempted
        self.up: socket.socket | None = None  # the origin socket while it connects
        self.timer: asyncio.TimerHandle | None = None  # that connect's timeout
        self.origin: Endpoint | None = None  # the origin tried last, then the one used
        self.pipe: Pipe | None = None


def _ignore(_events: int) -> None:
    pass


def _source_key(text: str, ip: IPAddress | None = None) -> str:
    """A client address as the limiter counts it: the kernel's text of an
    IPv4 address is already canonical, so only IPv6 (scope ids) is parsed."""
    if ":" not in text:
        return text
    return str(ip if ip is not None else parse_ip(text))


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            pass
    return soft


class ProxyServer:
    def __init__(self, cfg: ProxyConfig, path: str, manage_setup: bool = False,
                 metrics: str | None = None) -> None:
        self.cfg = cfg
        self.path = str(Path(path).absolute())  # reloads and status name the file fully
        self.manage_setup = manage_setup
        self.metrics = metrics  # ADDR:PORT of the /metrics endpoint, if any
        self.stats = Stats()
        st = cfg.settings
        self.health = HealthBook(st.health_fall, st.health_rise)
        self.health.set_targets(health_targets(cfg))
        self.router = Router(cfg, self.health)
        self.limiter = Limiter(st.max_connections)
        self.conns: set[_Conn] = set()
        self.tasks: set[asyncio.Task[object]] = set()
        self.tcp_listeners: dict[int, socket.socket] = {}
        self.udp_families: set[int] = set()
        self.started = time.time()
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: UdpRelay | None = None
        self._poller: Poller | None = None  # the TCP connections' sockets
        self._paused: set[int] = set()
        self._warned: dict[str, float] = {}  # rule -> loop time of its last origin warning

    # -- lifecycle ---------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    @property
    def poller(self) -> Poller:
        assert self._poller is not None
        return self._poller

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT (or :meth:`stop`)."""
        self._loop = asyncio.get_running_loop()
        self._udp = UdpRelay(self.loop, self._admit, self._release, self.stats.unmatched)
        self._poller = Poller(self.loop)
        raise_fd_limit()
        ctl: asyncio.AbstractServer | None = None
        exporter: MetricsServer | None = None
        setup_done = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._stop.set)
        self.loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        try:
            self._ensure_listeners(self.cfg)
            ctl = await control.serve(self.cfg.settings.control_socket, self._control)
            if self.manage_setup:
                apply_setup(self.cfg)  # blocks the loop briefly, before serving
                setup_done = True
            if self.metrics:
                loop = self.loop
                exporter = serve_metrics(self.metrics,
                                         lambda: proxy_families(on_loop(loop, self.status)))
            self._spawn(self._sweeper())
            self._spawn(self._health_loop())
            log.info("serving %d rule(s) on port %d", len(self.cfg.rules),
                     self.cfg.settings.listen_port)  # fmt: skip
            notify.ready(f"serving {len(self.cfg.rules)} rule(s)")
            await self._stop.wait()
        finally:
            notify.stopping()
            if exporter is not None:
                exporter.close()
            await self._shutdown(ctl, setup_done)

    def stop(self) -> None:
        self._stop.set()

    async def _shutdown(self, ctl: asyncio.AbstractServer | None, setup_done: bool) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.loop.remove_signal_handler(sig)
        for fd, s in self.tcp_listeners.items():
            self.loop.remove_reader(fd)
            s.close()
        self.tcp_listeners.clear()
        if self._udp is not None:
            self._udp.close()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for c in list(self.conns):
            self._abandon(c)
        for _ in range(50):  # bounded: let closes flush
            if not self.conns:
                break
            await asyncio.sleep(0.02)
        if self._poller is not None:
            self._poller.close()
        if ctl is not None:
            ctl.close()
            try:
                os.unlink(self.cfg.settings.control_socket)
            except OSError:
                pass
        if setup_done:
            try:
                apply_teardown(self.cfg)
            except SetupError as e:
                log.error("teardown: %s", e)

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _ensure_listeners(self, cfg: ProxyConfig) -> None:
        """Open the listeners ``cfg`` needs (never closes any: reloads only add)."""
        st = cfg.settings
        assert self._udp is not None
        for version, host in ((4, st.listen_v4), (6, st.listen_v6)):
            rules = [r for r in cfg.rules if any(p.version == version for p in r.prefixes)]
            if any("tcp" in r.protocols for r in rules) and version not in self.tcp_listeners:
                s = tcp_listener(host, st.listen_port)
                self.tcp_listeners[version] = s
                self.loop.add_reader(s.fileno(), self._accept_ready, s)
            if any("udp" in r.protocols for r in rules) and version not in self.udp_families:
                self._udp.add_listener(udp_listener(host, st.listen_port))
                self.udp_families.add(version)

    # -- admission ---------------------------------------------------------
    def _admit(self, protocol: str, src: Endpoint, dst: Endpoint) -> Admitted | None:
        """Match, ACL and limits; on refusal count it and return None."""
        sip, dip = parse_ip(src[0]), parse_ip(dst[0])
        rule = self.router.match(protocol, dip, dst[1])
        if rule is None:
            self.stats.unmatched.refuse(REFUSED_NO_RULE)
            return None
        rs = self.stats.rule(rule.name)
        reason = self.router.admit(rule, sip) or self.limiter.acquire(
            rule.name, _source_key(src[0], sip), self.loop.time(), rule_max=rule.max_connections,
            source_max=rule.max_per_source, rate=rule.rate_per_source,
        )  # fmt: skip
        if reason is not None:
            rs.refuse(reason)
            return None
        return Admitted(rule, self.router.candidates(rule, dip, dst[1]), rs)

    def _release(self, rule: str, src: str) -> None:
        self.limiter.release(rule, _source_key(src))

    # -- TCP ---------------------------------------------------------------
    def _accept_ready(self, lsock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = lsock.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in _FD_ERRNOS:
                    self._pause_accept(lsock)
                return
            self._on_accept(sock, peer)

    def _pause_accept(self, lsock: socket.socket) -> None:
        fd = lsock.fileno()
        if fd in self._paused:
            return
        log.warning("out of file descriptors: pausing accept for 100 ms")
        self._paused.add(fd)
        self.loop.remove_reader(fd)

        def resume() -> None:
            self._paused.discard(fd)
            if fd in {s.fileno() for s in self.tcp_listeners.values()}:
                self.loop.add_reader(fd, self._accept_ready, lsock)

        self.loop.call_later(0.1, resume)

    def _on_accept(self, sock: socket.socket, peer: Endpoint) -> None:
        sock.setblocking(False)
        try:
            dst = sock.getsockname()
        except OSError:
            sock.close()
            return
        src: Endpoint = (peer[0], peer[1])
        adm = self._admit("tcp", src, (dst[0], dst[1]))
        if adm is None:
            rst_close(sock)
            return
        conn = _Conn(adm.rule, src, adm.stats, sock, (dst[0], dst[1]), adm.candidates)
        self.conns.add(conn)
        adm.stats.active += 1
        if not adm.candidates:
            self._give_up(conn, "no-origin")
            return
        self._dial_next(conn)

    # A connection's life is callbacks, not a task, a coroutine or asyncio
    # transports: a non-blocking connect watched by the Poller with a timer
    # per origin attempt, then a Pipe on the two sockets.
    def _dial_next(self, conn: _Conn) -> None:
        """Start a connect to the next origin, or give up after MAX_ORIGIN_TRIES."""
        while conn.tries < min(MAX_ORIGIN_TRIES, len(conn.candidates)):
            host, port = conn.origin = conn.candidates[conn.tries]
            conn.tries += 1
            try:
                up = socket.socket(family_of(host), socket.SOCK_STREAM)
            except OSError:
                break
            up.setblocking(False)
            err = up.connect_ex((host, port))
            if err == 0:
                conn.up = up
                self._connected(conn)
                return
            if err == errno.EINPROGRESS:
                conn.up = up
                self.poller.watch(up.fileno(), OUT, lambda _ev: self._connect_ready(conn))
                conn.timer = self.loop.call_later(conn.rule.connect_timeout,
                                                  self._connect_failed, conn)  # fmt: skip
                return
            up.close()
            self._origin_failed(conn)
        self._give_up(conn, "origin-unreachable")

    def _connect_ready(self, conn: _Conn) -> None:
        up = conn.up
        assert up is not None
        if up.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self._connect_failed(conn)
            return
        self.poller.watch(up.fileno(), 0, _ignore)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        self._connected(conn)

    def _connect_failed(self, conn: _Conn) -> None:
        """The attempt failed or timed out: count it and try the next origin."""
        self._drop_attempt(conn)
        self._origin_failed(conn)
        self._dial_next(conn)

    def _drop_attempt(self, conn: _Conn) -> None:
        up, conn.up = conn.up, None
        if up is not None:
            self.poller.watch(up.fileno(), 0, _ignore)
            up.close()
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    def _origin_failed(self, conn: _Conn) -> None:
        conn.stats.origin_failures += 1
        assert conn.origin is not None
        self.health.record(conn.origin, False, self.loop.time())

    def _give_up(self, conn: _Conn, reason: str) -> None:
        conn.stats.refuse(reason)
        rst_close(conn.client)
        self._finish(conn)

    def _connected(self, conn: _Conn) -> None:
        up, rule, stats = conn.up, conn.rule, conn.stats
        assert up is not None and conn.origin is not None
        conn.up = None
        self.health.record(conn.origin, True, self.loop.time())
        pipe = Pipe(self.cfg.settings.buffer_size, self.loop.time, stats,
                    lambda _p: self._finish(conn), rule.idle_timeout)  # fmt: skip
        conn.pipe = pipe
        stats.connections += 1
        header = proxyproto.encode(rule.proxy_protocol, conn.src, conn.dst, "tcp")
        pipe.start(self.poller, conn.client, up, header)

    def _abandon(self, conn: _Conn) -> None:
        """End a connection at shutdown, whatever stage it is in."""
        if conn.pipe is not None:
            conn.pipe.close("shutdown")
        else:
            self._drop_attempt(conn)
            rst_close(conn.client)
            self._finish(conn)

    def _finish(self, conn: _Conn) -> None:
        if conn not in self.conns:
            return
        self.conns.discard(conn)
        conn.stats.active -= 1
        self._release(conn.rule.name, conn.src[0])
        if conn.pipe is not None and conn.pipe.origin_silent:
            self._origin_silent(conn)

    def _origin_silent(self, conn: _Conn) -> None:
        """Count and explain an origin that hung up without a byte (the client
        saw only an empty reply); warn at most every PROBLEM_LOG_INTERVAL."""
        rule = conn.rule
        where = format_endpoint(*conn.origin) if conn.origin is not None else "?"
        if rule.proxy_protocol:
            problem = (f"origin {where} closed the connection without a byte after a PROXY "
                       f"v{rule.proxy_protocol} header: does it expect one? (ProxyProtocol = off)")
        else:
            problem = f"origin {where} closed the connection without sending a byte"
        conn.stats.origin_silent_closes += 1
        conn.stats.last_origin_problem = problem
        now = self.loop.time()
        last = self._warned.get(rule.name)
        if last is None or now - last >= PROBLEM_LOG_INTERVAL:
            self._warned[rule.name] = now
            log.warning("rule %s: %s", rule.name, problem)

    # -- periodic work -----------------------------------------------------
    def _sweep_interval(self) -> float:
        idle = [r.idle_timeout for r in self.cfg.rules] + [self.cfg.settings.udp_idle_timeout]
        return max(0.05, min(1.0, min(idle) / 4))

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval())
            now = self.loop.time()
            for c in list(self.conns):
                p = c.pipe
                if p is not None and p.idle_for(now) > p.idle_timeout:
                    p.close("idle")
            if self._udp is not None:
                self._udp.sweep(now, self.cfg.settings.udp_idle_timeout)

    async def _health_loop(self) -> None:
        while True:
            st = self.cfg.settings
            targets = self.health.targets()
            if targets:
                results = await asyncio.gather(*(probe(t, st.health_timeout) for t in targets))
                now = self.loop.time()
                for t, ok in zip(targets, results, strict=True):
                    if self.health.record(t, ok, now):
                        log.warning("origin %s:%d is %s", t[0], t[1], "up" if ok else "DOWN")
            await asyncio.sleep(st.health_interval)

    # -- reload and status -------------------------------------------------
    def _on_sighup(self) -> None:
        self._spawn(self.reload())

    async def reload(self) -> dict[str, object]:
        """Re-read the file; on any problem keep everything as it was."""
        async with self._reload_lock:
            notify.reloading()
            try:
                new = cfgmod.load(self.path)
                self._check_fixed(self.cfg.settings, new.settings)
                self._ensure_listeners(new)
                if self.manage_setup:
                    self._sync(self.cfg, new)
            except (ConfigError, SetupError, OSError) as e:
                self.stats.reload_failures += 1
                self.stats.last_reload_error = str(e)
                log.error("reload refused, keeping the running configuration: %s", e)
                notify.ready("reload refused: the running configuration stays")
                return {"ok": False, "error": str(e), "config": self.path}
            self._swap(new)
            self.stats.reloads += 1
            log.info("reloaded %s: %d rule(s)", self.path, len(new.rules))
            notify.ready(f"serving {len(new.rules)} rule(s)")
            return {"ok": True, "rules": [r.name for r in new.rules], "config": self.path}

    @staticmethod
    def _check_fixed(old: Settings, new: Settings) -> None:
        changed = [k for k in _FIXED if getattr(old, k) != getattr(new, k)]
        if changed:
            raise ConfigError(
                f"{', '.join(changed)} cannot change on reload; restart the proxy", "reload"
            )

    def _sync(self, old: ProxyConfig, new: ProxyConfig) -> None:
        # A handful of short nft/ip commands; run inline (a worker thread made
        # asyncio.run() hang at exit here), so the loop pauses for some ms.
        try:
            run_commands(sync_commands(old, new))
        except SetupError:
            run_commands(sync_commands(new, old))
            raise

    def _swap(self, new: ProxyConfig) -> None:
        st = new.settings
        self.cfg = new
        self.health.fall, self.health.rise = st.health_fall, st.health_rise
        self.health.set_targets(health_targets(new))
        self.router = Router(new, self.health)
        self.limiter.global_max = st.max_connections

    def status(self) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "config": self.path,
            "uptime": round(time.time() - self.started, 1),
            "reloads": self.stats.reloads,
            "reload_failures": self.stats.reload_failures,
            "last_reload_error": self.stats.last_reload_error,
            "active": self.limiter.active(),
            "active_tcp": len(self.conns),
            "active_udp": len(self._udp.flows) if self._udp is not None else 0,
            "max_connections": self.limiter.global_max,
            "rules": {n: s.as_dict() for n, s in self.stats.rules.items()},
            "unmatched": self.stats.unmatched.as_dict(),
            "origins": self.health.snapshot(),
        }

    async def _control(self, request: str) -> dict[str, object]:
        if request == "status":
            return self.status()
        if request == "reload":
            return await self.reload()
        return {"ok": False, "error": f"unknown request {request!r} (status, reload)"}
