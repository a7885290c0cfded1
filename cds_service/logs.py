"""Structured logs: one JSON line per call, never a token, never patient data.

Every line has a millisecond UTC timestamp (``ts``), ``level`` and ``logger``. The access line of
a call (``event: call``) carries the request id (``request_id``: the caller's ``X-Request-ID``
when it is sane, else generated; echoed in the response header), the remote address, method,
path, status, duration, service, hook, hookInstance (CHECKLIST REQ-06: it correlates logs and
feedback), card kinds, FHIR query count and time, and for errors the message that was answered.
Values sent by the caller (hook, hookInstance, request id) are logged only after validation.
A call answered 4xx is logged at ``warning``, 5xx at ``error`` (with the exception type and
message), others at ``info``. ``event: start`` / ``event: stop`` mark the server's life.
Other log records are plain messages written by this project's code, which never puts patient
data or tokens into them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any

import msgspec

ACCESS = logging.getLogger("ptsd_cds.access")


_ENCODER = msgspec.json.Encoder(enc_hook=str)  # compact JSON; anything unexpected as its str()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        return _ENCODER.encode(entry).decode()


def configure(level: str) -> None:
    """Send the service's logs to stderr as JSON lines (idempotent)."""
    root = logging.getLogger("ptsd_cds")
    root.setLevel(level.upper())
    if not any(getattr(h, "_ptsd_cds", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._ptsd_cds = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    # propagate stays on: a host (pytest, a log shipper) may attach its own handler to the root.


def access(level: int = logging.INFO, **fields: Any) -> None:
    """One line per call. Callers pass only identifiers, statuses, counts and timings."""
    ACCESS.log(level, "call", extra={"fields": {"event": "call", **fields}})


def level_for(status: int) -> int:
    """4xx at warning, 5xx at error, the rest at info."""
    return logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO


EVENTS = logging.getLogger("ptsd_cds.server")


def event(name: str, **fields: Any) -> None:
    """A server life-cycle line (``start``, ``stop``)."""
    EVENTS.info(name, extra={"fields": {"event": name, **fields}})


# A caller's X-Request-ID is used when it is a plain token (what proxies and EHRs send: UUIDs,
# hex, base64-ish ids); anything else is replaced, so log lines never carry arbitrary caller text.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")


def request_id(sent: str | None) -> str:
    if sent and _SANE_REQUEST_ID.match(sent):
        return sent
    return os.urandom(16).hex()  # 128 random bits, as uuid4 but ~5x cheaper to make
