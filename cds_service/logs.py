"""Structured logs: one JSON line per call, never a token, never patient data.

The access log line carries service, hook, hookInstance, status, duration and card count
(CHECKLIST REQ-06: hookInstance correlates logs and feedback). Other log records are plain
messages written by this project's code, which never puts patient data or tokens into them.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

ACCESS = logging.getLogger("ptsd_cds.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        return json.dumps(entry, separators=(",", ":"), default=str)


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


def access(**fields: Any) -> None:
    """One line per call. Callers pass only identifiers, statuses, counts and timings."""
    ACCESS.info("call", extra={"fields": {"event": "call", **fields}})
