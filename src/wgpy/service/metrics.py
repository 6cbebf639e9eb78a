"""A Prometheus ``/metrics`` endpoint beside a daemon's own event loop.

The endpoint is prometheus-client's HTTP server, on a thread of its own:
each scrape calls the daemon's collector there.  A collector must not read
state that the daemon's loop is changing at that moment, so an asyncio
daemon takes its snapshot *on its loop* with :func:`on_loop`: the scrape
waits for the loop to run one callback, which reads everything at once.
Nothing of the daemon's data path runs on the scrape's thread.

``--metrics ADDR:PORT`` is parsed by :func:`listen_address`; ``serve``
raises ``OSError`` (with the address in its text) if it cannot listen.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterable
from typing import TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from wgpy.control.endpoint import format_endpoint, split_host_port

T = TypeVar("T")
SNAPSHOT_TIMEOUT = 5.0


def listen_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``ADDR:PORT``, ``[V6]:PORT`` or ``:PORT`` (all addresses) -> (host, port).

    :raises ValueError: with a reason that names the text.
    """
    text = text.strip()
    everywhere = text.startswith(":")
    if everywhere:
        host, port_text = "0.0.0.0", text[1:]
    else:
        try:
            host, port_text = split_host_port(text)
        except ValueError as e:
            raise ValueError(f"{text!r} is not ADDR:PORT: {e}") from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: the port must be 1-65535")
    return host or default_host, int(port_text)


class _Single(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


class MetricsServer:
    """``/metrics`` on ``host:port`` for one collect function; ``close()`` stops it."""

    def __init__(self, host: str, port: int, collect: Callable[[], Iterable[Metric]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Single(collect))
        try:
            self._httpd: WSGIServer
            self._httpd, self._thread = start_http_server(port, host, self.registry)
        except OSError as e:
            raise OSError(e.errno, f"cannot listen on {format_endpoint(host, port)} "
                                   f"for metrics: {e.strerror or e}") from None
        self.host = host
        self.port = self._httpd.server_address[1]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve(listen: str, collect: Callable[[], Iterable[Metric]]) -> MetricsServer:
    """Serve ``collect``'s metrics on ``listen`` (``ADDR:PORT``)."""
    host, port = listen_address(listen)
    return MetricsServer(host, port, collect)


def on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], T],
            timeout: float = SNAPSHOT_TIMEOUT) -> T:
    """``fn()``, run on ``loop`` (from another thread), its result or exception.

    :raises TimeoutError: the loop did not run it within ``timeout`` seconds.
    """
    fut: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn())
        except BaseException as e:  # handed to the waiting thread
            fut.set_exception(e)

    loop.call_soon_threadsafe(run)
    try:
        return fut.result(timeout)
    except concurrent.futures.TimeoutError:
        fut.cancel()
        raise TimeoutError(f"the event loop did not answer within {timeout:g} s") from None
