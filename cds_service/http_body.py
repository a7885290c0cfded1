"""Outbound HTTP under one wall-clock deadline, and reading a response body with a size cap
(FHIR servers, JWKS URLs).

Why hand-written: ``requests``/``urllib3`` timeouts are per socket operation, so a server that
sends one byte of its status line or headers every second never trips them (issue #11, finding 4:
a call held 65 s against a 4 s budget). No well-kept library bounds a synchronous urllib3 call
from connect to last byte; the alternatives (an async client, a separate process per call) would
change every caller. So: ``CallDeadline`` is a watchdog thread per outbound call that shuts down
the call's socket(s) when the deadline passes, which makes any blocked ``recv`` return at once.
``DeadlineAdapter`` (and ``DeadlinePoolMixin`` for adapters with their own connection classes)
registers each connection a pool hands out with the deadline active in the calling thread.

    with CallDeadline(time.monotonic() + 4) as guard:
        resp = session.get(url, stream=True, timeout=(1, 3))   # headers bounded too
        body = read_capped(resp, cap)                           # body bounded by the same guard
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class BodyTooLarge(Exception):
    """The response announced or delivered more bytes than the cap."""


class BodyTimedOut(Exception):
    """The response was still arriving when the deadline passed (e.g. a server trickling bytes)."""


_local = threading.local()


def _shutdown(sock: Any) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError, AttributeError):
        pass


class CallDeadline:
    """A deadline (``time.monotonic()`` value) over everything one outbound call does.

    Used as a context manager in the calling thread. Connections taken from a pool of a
    ``DeadlineAdapter`` (or a pool class with ``DeadlinePoolMixin``) while it is active are
    watched; when the deadline passes, ``fired`` is set and their sockets are shut down (again
    every 50 ms until the block ends, for a socket that appeared after the first shot).
    """

    POLL = 0.05

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.fired = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[Any] = []  # urllib3 connections (their .sock may appear later)
        self._socks: list[Any] = []  # plain sockets
        self._thread: threading.Thread | None = None
        self._previous: CallDeadline | None = None

    @staticmethod
    def current() -> "CallDeadline | None":
        return getattr(_local, "deadline", None)

    def watch_connection(self, conn: Any) -> None:
        with self._lock:
            self._conns.append(conn)
        if self.fired.is_set():
            self._abort()

    def watch_socket(self, sock: Any) -> None:
        with self._lock:
            self._socks.append(sock)
        if self.fired.is_set():
            self._abort()

    def _abort(self) -> None:
        with self._lock:
            socks = [getattr(c, "sock", None) for c in self._conns] + list(self._socks)
        for sock in socks:
            _shutdown(sock)

    def _run(self) -> None:
        if self._done.wait(max(0.0, self.deadline - time.monotonic())):
            return
        self.fired.set()
        while True:
            self._abort()
            if self._done.wait(self.POLL):
                return

    def __enter__(self) -> "CallDeadline":
        self._previous = CallDeadline.current()
        _local.deadline = self
        self._thread = threading.Thread(target=self._run, name="outbound-deadline", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        _local.deadline = self._previous

    def expired(self) -> bool:
        return self.fired.is_set() or time.monotonic() >= self.deadline


class DeadlinePoolMixin:
    """urllib3 connection pool that registers each connection it hands out with the
    ``CallDeadline`` active in the calling thread (new and re-used connections alike)."""

    def _get_conn(self, timeout: float | None = None):  # type: ignore[override]
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        guard = CallDeadline.current()
        if guard is not None:
            guard.watch_connection(conn)
        return conn


DeadlineHTTPConnectionPool = type("DeadlineHTTPConnectionPool", (DeadlinePoolMixin, HTTPConnectionPool), {})
DeadlineHTTPSConnectionPool = type("DeadlineHTTPSConnectionPool", (DeadlinePoolMixin, HTTPSConnectionPool), {})


class DeadlineAdapter(HTTPAdapter):
    """requests adapter whose connections obey the active ``CallDeadline``."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": DeadlineHTTPConnectionPool,
            "https": DeadlineHTTPSConnectionPool,
        }


def deadline_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    for prefix in ("https://", "http://"):
        session.mount(prefix, DeadlineAdapter())
    return session


def _socket_of(resp: requests.Response) -> socket.socket | None:
    """The socket a streamed response is read from (None when there is none, e.g. in tests).

    urllib3 keeps it on the connection; when the server closes after the response, http.client
    has already dropped it there and only the response's file object still holds it.
    """
    raw = resp.raw
    connection = getattr(raw, "_connection", None) or getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if not isinstance(sock, socket.socket):
        file_io = getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None)
        sock = getattr(file_io, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def read_capped(resp: requests.Response, cap: int, chunk_size: int = 16 * 1024,
                deadline: float | None = None) -> bytes:
    """The body of a streamed response, refusing more than ``cap`` bytes.

    Inside a ``CallDeadline`` block the body obeys that deadline. Otherwise ``deadline`` (a
    ``time.monotonic()`` value), when given, starts one for the body alone. Raises BodyTooLarge,
    BodyTimedOut, or requests.RequestException when the body cannot be read.
    """
    declared = resp.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > cap:
        raise BodyTooLarge
    guard = CallDeadline.current()
    if guard is None and deadline is not None:
        with CallDeadline(deadline) as own:
            own.watch_socket(_socket_of(resp))
            return _read(resp, cap, chunk_size, own)
    if guard is not None:
        guard.watch_socket(_socket_of(resp))
    return _read(resp, cap, chunk_size, guard)


def _read(resp: requests.Response, cap: int, chunk_size: int, guard: CallDeadline | None) -> bytes:
    body = bytearray()
    try:
        for chunk in resp.iter_content(chunk_size=chunk_size):
            if guard is not None and guard.fired.is_set():
                raise BodyTimedOut
            body += chunk
            if len(body) > cap:
                raise BodyTooLarge
    except requests.RequestException:
        if guard is not None and guard.fired.is_set():
            raise BodyTimedOut from None
        raise
    except (OSError, ValueError) as exc:  # a socket shut down under http.client
        if guard is not None and guard.fired.is_set():
            raise BodyTimedOut from None
        raise requests.ConnectionError(type(exc).__name__) from None
    if guard is not None and guard.fired.is_set():
        raise BodyTimedOut
    return bytes(body)
