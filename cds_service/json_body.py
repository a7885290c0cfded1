"""Reading a JSON request body: content type, size, nesting depth."""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

from cds_service.errors import ApiError

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # a JSON string, escapes included
_BARE_STRING = re.compile(rb'"[^"]*"')  # a JSON string once escapes are known to be absent
_DELETE_ALL_BUT_STRUCTURE = bytes(b for b in range(256) if b not in b'{}[]"')
_SIGNS = bytes.maketrans(b"{[}]", b"\x01\x01\xff\xff")


def is_json_content_type(mimetype: str | None) -> bool:
    """application/json, application/fhir+json or any other +json type."""
    if not mimetype:
        return False
    mimetype = mimetype.lower()
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def nesting_depth(raw: bytes) -> int:
    """Deepest object/array nesting of a JSON text (strings are ignored)."""
    if raw.count(b"{") + raw.count(b"[") == 0:
        return 0
    if b'\\"' in raw:  # escaped quotes: strip whole strings with the full pattern (slower)
        structure = _STRING.sub(b"", raw).translate(None, _DELETE_ALL_BUT_STRUCTURE)
    else:  # every quote delimits a string: keep only quotes and brackets, then drop strings
        structure = _BARE_STRING.sub(b"", raw.translate(None, _DELETE_ALL_BUT_STRUCTURE))
    brackets = structure.translate(_SIGNS)
    if not brackets:
        return 0
    return max(accumulate(memoryview(brackets).cast("b")))


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity, -Infinity: Python accepts, JSON does not


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")  # 1e999 would become infinity
    return value


def check_content_type(mimetype: str | None, mimetype_params: dict[str, str]) -> None:
    """415 unless the body is declared JSON, in UTF-8 (checked before the body is read).

    JSON is UTF-8 (RFC 8259); a body declared in another charset is refused rather than misread."""
    if not is_json_content_type(mimetype):
        raise ApiError(415, "Content-Type must be application/json (CDS Hooks requests are JSON)",
                       code="not-supported")
    charset = (mimetype_params.get("charset") or "utf-8").strip().lower()
    if charset not in ("utf-8", "utf8", "us-ascii", "ascii"):  # ASCII is a subset of UTF-8
        raise ApiError(415, f"JSON must be UTF-8, not charset={charset[:32]}", code="not-supported")


def read_body(request, max_body: int) -> bytes:
    """The request body, or 413 when it is larger than ``max_body`` bytes.

    With a Content-Length, Werkzeug refuses an oversized body before reading it. A chunked body
    (no Content-Length) is read up to one byte past the cap, so it is refused too rather than
    silently cut short.
    """
    if request.content_length is not None:
        return request.get_data(cache=False)  # MAX_CONTENT_LENGTH -> 413
    stream = request.environ.get("wsgi.input")
    raw = stream.read(max_body + 1) if stream is not None else b""
    if len(raw) > max_body:
        raise ApiError(413, "The request body is larger than this service accepts (PTSD_CDS_MAX_BODY)",
                       code="too-costly")
    return raw


def parse_json_body(raw: bytes, *, max_depth: int) -> Any:
    """The body as JSON (content type already checked by ``check_content_type``), or a 400."""
    if not raw.strip():
        raise ApiError(400, "The request body is empty; a JSON object was expected", code="structure")
    # Cheap bound first: a body with fewer brackets than the limit cannot be too deep.
    if raw.count(b"{") + raw.count(b"[") > max_depth and nesting_depth(raw) > max_depth:
        raise ApiError(400, f"JSON nesting deeper than {max_depth} levels is not accepted",
                       code="too-costly")
    try:
        return json.loads(raw, parse_constant=_not_json, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise ApiError(400, f"The request body is not valid JSON{where}", code="structure") from None
