"""Whole requests to a plain-HTTP server over kept-alive ``http.client`` connections.

Every JSON call of the SDK sends a body it has in hand and reads the answer whole. For
those, httpx's machinery (request and URL models, the connection pool's state machine,
h11) costs more than the request itself against a local server: about 0.35 ms a
request here, where the server's whole answer to a health check takes 0.35 ms. So a
``KeepAlive`` sends them on the standard library's connections, one per concurrent
caller, kept open between requests; the answer comes back as an ``httpx.Response``
and failures as httpx's own exceptions, so retries, error messages and everything
above are the same on both paths. Streams, TLS and proxies stay with httpx.
"""

from __future__ import annotations

import http.client
import re
import select
import socket
import threading
from typing import Any
from urllib.request import getproxies_environment

import httpx

_TARGET = re.compile(r"[!-~]*")  # printable ASCII, no spaces: sent as it is


class KeepAlive:
    """Plain-HTTP connections to one server, reused while they stay open."""

    def __init__(self, url: httpx.URL, *, timeout: float, connect_timeout: float) -> None:
        self.address = (url.host, url.port or 80)
        self.host = url.netloc.decode("ascii")  # the Host header, port included
        self.prefix = url.raw_path.rstrip(b"/").decode("ascii")
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    @classmethod
    def usable(cls, url: httpx.URL) -> bool:
        """Whether this path may carry requests to ``url``: plain HTTP, no proxy set
        (httpx honours the proxy variables; a proxied client keeps to httpx)."""
        proxies = getproxies_environment()
        return url.scheme == "http" and not (proxies.get("http") or proxies.get("all"))

    def call(
        self, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> httpx.Response | None:
        """One request, whole; None for a target that httpx must encode first."""
        target = self.prefix + path + ("?" + query.decode("ascii") if query else "")
        if not _TARGET.fullmatch(target):
            return None
        conn = self._take()
        failed: type[httpx.TransportError] = httpx.WriteError
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders(body or None)
            failed = httpx.ReadError
            answer = conn.getresponse()
            content = answer.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _httpx_error(exc, failed) from exc
        except BaseException:
            conn.close()
            raise
        if answer.will_close:
            conn.close()
        else:
            with self._lock:
                self._idle.append(conn)
        return httpx.Response(answer.status, headers=answer.getheaders(), content=content)

    def _take(self) -> http.client.HTTPConnection:
        """An idle connection the server has not closed, or a new one."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if not _readable(conn.sock):  # a closed or spoken-to idle socket is done
                return conn
            conn.close()
        conn = http.client.HTTPConnection(*self.address, timeout=self.connect_timeout)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            if isinstance(exc, TimeoutError):
                raise httpx.ConnectTimeout(str(exc) or "timed out") from exc
            raise httpx.ConnectError(str(exc)) from exc
        conn.sock.settimeout(self.timeout)
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _readable(sock: Any) -> bool:
    if sock is None:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])


def _httpx_error(
    exc: OSError | http.client.HTTPException, failed: type[httpx.TransportError]
) -> httpx.TransportError:
    """httpx's exception for what went wrong once connected: ``failed`` says whether
    it was sending or reading."""
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout(str(exc) or "timed out")
    if isinstance(exc, http.client.RemoteDisconnected):
        return httpx.RemoteProtocolError("Server disconnected without sending a response.")
    if isinstance(exc, http.client.HTTPException):
        return httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}")
    return failed(str(exc) or type(exc).__name__)
