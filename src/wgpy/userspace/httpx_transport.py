"""httpx through a tunnel: ``httpx.Client(transport=TunnelTransport(tunnel))``.

httpx's own ``HTTPTransport`` (its request/response mapping, its errors,
its TLS context from ``verify``/``cert``) with httpcore's connection pool
given a network backend that connects through the tunnel: names resolve
through the tunnel's DNS, TLS runs over the tunnel socket
(``wgpy.userspace.tls``).
"""

from __future__ import annotations

import ssl
import time
import typing

import httpcore
import httpx

from wgpy.userspace.sockets import TunnelSocket
from wgpy.userspace.tls import TlsStream
from wgpy.userspace.tunnel import Tunnel

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class _Stream(httpcore.NetworkStream):
    def __init__(self, sock: TunnelSocket) -> None:
        self._sock = sock
        self._tls: TlsStream | None = None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            if self._tls is not None:
                self._tls.settimeout(timeout)
                return self._tls.recv(max_bytes)
            self._sock.settimeout(timeout)
            return self._sock.recv(max_bytes)
        except TimeoutError as e:
            raise httpcore.ReadTimeout(str(e)) from e
        except (OSError, ssl.SSLError) as e:
            raise httpcore.ReadError(str(e)) from e

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            if self._tls is not None:
                self._tls.settimeout(timeout)
                self._tls.sendall(buffer)
                return
            self._sock.settimeout(timeout)
            self._sock.sendall(buffer)
        except TimeoutError as e:
            raise httpcore.WriteTimeout(str(e)) from e
        except (OSError, ssl.SSLError) as e:
            raise httpcore.WriteError(str(e)) from e

    def close(self) -> None:
        if self._tls is not None:
            self._tls.close()
        else:
            self._sock.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        self._sock.settimeout(timeout)
        try:
            self._tls = TlsStream(self._sock, ssl_context, server_hostname)
        except TimeoutError as e:
            raise httpcore.ConnectTimeout(str(e)) from e
        except (OSError, ssl.SSLError) as e:
            raise httpcore.ConnectError(str(e)) from e
        return self

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "ssl_object":
            return self._tls.ssl if self._tls is not None else None
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "is_readable":
            return False
        return None


class TunnelBackend(httpcore.NetworkBackend):
    """httpcore's way to open TCP connections, through ``tunnel``."""

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: typing.Iterable[typing.Any] | None = None
                    ) -> httpcore.NetworkStream:
        try:
            return _Stream(self.tunnel.create_connection((host, port), timeout=timeout))
        except TimeoutError as e:
            raise httpcore.ConnectTimeout(str(e)) from e
        except OSError as e:
            raise httpcore.ConnectError(str(e)) from e

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: typing.Iterable[typing.Any] | None = None
                            ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("a tunnel has no unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class TunnelTransport(httpx.HTTPTransport):
    """An httpx transport whose connections go through ``tunnel``; the other
    arguments are ``httpx.HTTPTransport``'s (``verify``, ``cert``, ``http2``,
    ``limits``, ``retries``)."""

    def __init__(self, tunnel: Tunnel, verify: ssl.SSLContext | str | bool = True,
                 cert: typing.Any = None, trust_env: bool = True, http1: bool = True,
                 http2: bool = False, limits: httpx.Limits = DEFAULT_LIMITS,
                 retries: int = 0) -> None:
        super().__init__(verify=verify, cert=cert, trust_env=trust_env, http1=http1,
                         http2=http2, limits=limits, retries=retries)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=http1, http2=http2, retries=retries,
            network_backend=TunnelBackend(tunnel),
        )
