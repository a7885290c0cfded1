"""Reading an outbound HTTP response body with a size cap and a wall-clock deadline
(FHIR servers, JWKS URLs)."""

from __future__ import annotations

import socket
import threading
import time

import requests


class BodyTooLarge(Exception):
    """The response announced or delivered more bytes than the cap."""


class BodyTimedOut(Exception):
    """The body was still arriving when the deadline passed (e.g. a server trickling bytes)."""


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

    ``deadline`` (a ``time.monotonic()`` value): a per-read socket timeout does not bound a server
    that sends one byte at a time, so a watchdog shuts the connection down when the deadline
    passes. Raises BodyTooLarge, BodyTimedOut, or requests.RequestException when the body cannot
    be read.
    """
    declared = resp.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > cap:
        raise BodyTooLarge
    fired = threading.Event()
    watchdog = None
    if deadline is not None:
        sock = _socket_of(resp)

        def abort() -> None:
            fired.set()
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), abort)
        watchdog.daemon = True
        watchdog.start()
    body = bytearray()
    try:
        for chunk in resp.iter_content(chunk_size=chunk_size):
            if fired.is_set():
                raise BodyTimedOut
            body += chunk
            if len(body) > cap:
                raise BodyTooLarge
    except requests.RequestException:
        if fired.is_set():
            raise BodyTimedOut from None
        raise
    finally:
        if watchdog is not None:
            watchdog.cancel()
    if fired.is_set():
        raise BodyTimedOut
    return bytes(body)
