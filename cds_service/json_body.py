"""Reading a JSON request body: content type and charset, size, UTF-8, nesting depth, one parse.

Everything here is linear in the body: the nesting limit is checked with a few C-speed byte
passes (``bytes.replace`` / ``translate`` / ``split`` and one ``accumulate``) before the body is
parsed once with msgspec, which is strict JSON (no NaN/Infinity, no number overflow, valid UTF-8
only, no lone surrogate escapes). No regular expression ever sees the body.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

import msgspec

from cds_service.errors import ApiError

_KEEP_STRUCTURE = bytes(b for b in range(256) if b not in b'{}[]"')
_ONE_KIND = bytes.maketrans(b"{[}]", b"<<>>")  # depth does not depend on the kind of bracket
_ANGLE_SIGNS = bytes.maketrans(b"<>", b"\x01\xff")
_DECODER = msgspec.json.Decoder()
# Byte-order marks and the NUL patterns of UTF-16 / UTF-32 text (RFC 8259 §8.1: JSON is UTF-8).
_OTHER_ENCODINGS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


def is_json_content_type(mimetype: str | None) -> bool:
    """application/json, application/fhir+json or any other +json type."""
    if not mimetype:
        return False
    mimetype = mimetype.lower()
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def _structure(raw: bytes) -> bytes:
    """The brackets of a JSON text that lie outside strings, in order.

    Escaped backslashes, then escaped quotes are removed (``\\\\`` pairs first, so ``\\\\"``
    still ends a string), everything but brackets and quotes is dropped, adjacent quote pairs are
    removed (which keeps the inside/outside parity of every bracket), and any text still between
    quotes is cut out by splitting on the quote. Every step is one C-speed pass: no backtracking."""
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = raw.translate(None, _KEEP_STRUCTURE).replace(b'""', b"")
    if b'"' in structure:
        structure = b"".join(structure.split(b'"')[::2])  # even pieces lie outside strings
    return structure


def _max_running_sum(structure: bytes) -> int:
    """Deepest nesting of a bracket structure written with ``<`` and ``>`` (one running sum)."""
    if not structure:
        return 0
    return max(0, max(accumulate(memoryview(structure.translate(_ANGLE_SIGNS)).cast("b"))))


def nesting_exceeds(raw: bytes, limit: int) -> bool:
    """Whether a JSON text nests objects/arrays deeper than ``limit`` (brackets in strings do not count).

    Peels the innermost bracket pairs off the bracket structure, one level per pass (one
    ``bytes.replace``): ordinary JSON, whose many leaves go in the first passes, is done in a
    few cheap passes. A structure that stops shrinking fast (a long chain of brackets) is
    measured instead with one running sum. Linear either way; no backtracking."""
    structure = _structure(raw).translate(_ONE_KIND)
    for peeled_levels in range(limit):
        if not structure:
            return False
        peeled = structure.replace(b"<>", b"")  # one level: only pairs adjacent before the pass
        if len(peeled) > len(structure) - len(structure) // 8:
            return _max_running_sum(structure) > limit - peeled_levels  # shrinking slowly: count
        structure = peeled
    return bool(structure)


def nesting_depth(raw: bytes) -> int:
    """Deepest object/array nesting of a JSON text, exactly (diagnostics and tests; linear)."""
    return _max_running_sum(_structure(raw).translate(_ONE_KIND))


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


def _not_utf8(raw: bytes) -> bool:
    """A UTF-16/32 text or a byte-order mark (json.loads would accept those; JSON is UTF-8)."""
    return raw.startswith(_OTHER_ENCODINGS) or b"\x00" in raw[:4]


def _check_text(raw: bytes, max_depth: int) -> None:
    """400 unless the body is non-empty UTF-8 JSON text no deeper than ``max_depth`` (no parse yet)."""
    if not raw.strip():
        raise ApiError(400, "The request body is empty; a JSON object was expected", code="structure")
    if _not_utf8(raw):
        raise ApiError(400, "The request body is not UTF-8 (JSON must be UTF-8, without a byte-order mark)",
                       code="structure")
    # Cheap bound first: a body shorter than the limit cannot nest deeper than it. (Counting the
    # brackets instead cost as much as the scan itself on a large body, and a large body always has
    # more brackets than the limit.)
    if len(raw) > max_depth and nesting_exceeds(raw, max_depth):
        raise ApiError(400, f"JSON nesting deeper than {max_depth} levels is not accepted",
                       code="too-costly")


def parse_json_body(raw: bytes, *, max_depth: int) -> Any:
    """The body as JSON (content type already checked by ``check_content_type``), or a 400."""
    _check_text(raw, max_depth)
    return _decode(raw, max_depth)


def _decode(raw: bytes, max_depth: int) -> Any:
    try:
        return _DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        text = str(exc)
        if isinstance(exc, RecursionError):
            raise ApiError(400, f"JSON nesting deeper than {max_depth} levels is not accepted",
                           code="too-costly") from None
        if "UTF-8" in text:
            why = "is not valid JSON (not valid UTF-8)"
        elif "out of range" in text:
            why = "is not valid JSON (a number out of range)"
        elif "surrogate" in text or ("truncated" in text and b"\\u" in raw[-12:]):
            why = "is not valid JSON (a lone UTF-16 surrogate escape such as \\ud800)"
        else:
            why = "is not valid JSON"
        raise ApiError(400, f"The request body {why}{_where(text, raw)}", code="structure") from None


class _HookEnvelope(msgspec.Struct):
    """The members of a CDS Hooks request; ``prefetch`` is kept as JSON text (see parse_hook_body)."""

    hook: Any = msgspec.UNSET
    hookInstance: Any = msgspec.UNSET
    fhirServer: Any = msgspec.UNSET
    fhirAuthorization: Any = msgspec.UNSET
    context: Any = msgspec.UNSET
    prefetch: dict[str, msgspec.Raw] | None | msgspec.UnsetType = msgspec.UNSET
    extension: Any = msgspec.UNSET


_ENVELOPE = msgspec.json.Decoder(_HookEnvelope)
_ENVELOPE_FIELDS = msgspec.structs.fields(_HookEnvelope)


def parse_hook_body(raw: bytes, *, max_depth: int) -> Any:
    """A hook call's body, like ``parse_json_body``, except that each prefetch value stays JSON text.

    ``prefetch`` (when it is an object) maps each key to a ``msgspec.Raw``: the patient-data stage
    decodes the Bundles itself, and the resources in them are decoded once, by the facts stage,
    straight into the views of what the rules read (``patient_data.record.RawResource``) instead of
    into a tree of dicts first. The text is still checked whole here: UTF-8 (a C-speed decode),
    nesting, and JSON syntax (msgspec walks every skipped value). Other members are parsed as
    usual; unknown top-level members are dropped (the request schema ignores them anyway). A body
    that is not an object, or not valid JSON, takes ``parse_json_body``'s path and answers.
    """
    _check_text(raw, max_depth)
    if not raw.isascii():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return _decode(raw, max_depth)  # raises the 400 naming the position
    try:
        envelope = _ENVELOPE.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        # Not JSON, not an object, or a prefetch that is not an object: the generic answer (the
        # request schema names what is wrong).
        return _decode(raw, max_depth)
    return {f.name: getattr(envelope, f.name) for f in _ENVELOPE_FIELDS
            if getattr(envelope, f.name) is not msgspec.UNSET}


def _where(message: str, raw: bytes) -> str:
    """Line and column of the error: msgspec names the byte offset ("(byte 12)"), or the input
    ended early ("truncated"). A position in the caller's own text, never its values."""
    if "(byte " in message:
        try:
            offset = int(message.rsplit("(byte ", 1)[1].split(")")[0])
        except ValueError:
            return ""
    elif "truncated" in message:
        offset = len(raw)
    else:
        return ""
    line = raw.count(b"\n", 0, offset) + 1
    column = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
    return f" (line {line}, column {column})"
