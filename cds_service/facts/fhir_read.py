"""The reading layer: each resource decoded once into a typed view of what the rules read.

Records arrive as JSON: parsed (``dict``) or, for the Conditions, MedicationRequests and Procedures
of prefetch Bundles, still as text (``RawResource``; see ``cds_service.patient_data.record``).

* **text** — ``decode_view`` decodes the resource straight from its text into its view (msgspec,
  one C pass: every read element's type and format checked, everything else skipped, no
  intermediate objects); the candidate check (a Condition with a PTSD code, a drug of interest, a
  trauma-focused Procedure) then reads the view. That is the one decode such a resource gets.
* **parsed JSON** (drafts, FHIR server answers, records built in tests) — the candidates are picked
  with a cheap look at their codes (``raw_concept``); only those are converted, with ``read_view``:
  **fast path** — ``msgspec.convert`` checks every read element's type and format in one C pass
  (a few microseconds) and ignores everything else;
  **element by element** — when a read element is malformed (in text or parsed JSON), the view is built again field by
  field: each element that converts is kept, a malformed one is left out (absent), nested
  elements and list items degrade the same way. So an empty ``display``, a second malformed
  coding or an odd dose shape never hides a benzodiazepine order or a PTSD diagnosis: only the
  bad element is lost. The resource is then counted as ``"<type> (partly read)"``.

Codes are compared with the terminology's tables after normalisation (``terminology``), so a code
in a wrong format simply never matches. ``fhir.resources`` (full R4B validation, ~100x slower) is
used only where its cost is worth it: ``strict_problems`` (``ptsd-cds evaluate --strict``) and the
tests of suggested resources. Nothing here logs, and no message carries patient data.
"""

from __future__ import annotations

import types
import typing
from collections import Counter
from datetime import date
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, TypeVar

import msgspec

from cds_service.facts.views import Concept
from cds_service.patient_data.record import RawResource

Resource = dict[str, Any]
T = TypeVar("T")
V = TypeVar("V", bound=msgspec.Struct)

# Text handed to a regular expression is cut to this many characters (drug names, therapy texts,
# timing words): real names are far shorter, and a bound keeps every match linear and cheap.
MAX_MATCH_TEXT = 512


class Malformed(Exception):
    """A resource cannot be read at all (message never holds patient data)."""


class SkipCounter:
    """Counts skipped and partly read resources per resourceType (no patient data)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def skip(self, resource_type: str) -> None:
        self.counts[resource_type] += 1

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


def read_each(resources: Iterable[Any], read: Callable[[Any], T], skipped: SkipCounter,
              resource_type: str) -> Iterator[T]:
    """``read(resource)`` for each resource, skipping (and counting) any that raises.

    A bad resource must never fail the hook call, whatever goes wrong while reading it.
    """
    for resource in resources:
        try:
            result = read(resource)
        except Exception:  # noqa: BLE001 - see above
            skipped.skip(resource_type)
            continue
        yield result


# --- decoding into views --------------------------------------------------------------------------
def _optional_inner(hint: Any) -> Any:
    """``X`` for ``X | None`` (else the hint itself)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _is_view(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, msgspec.Struct)


@lru_cache(maxsize=None)
def _plan(view: type) -> tuple[tuple[str, str, Any, str, Any], ...]:
    """Per field of a view: (JSON name, attribute, type, kind, inner view) for element-wise reading."""
    hints = typing.get_type_hints(view, include_extras=True)
    plan = []
    for f in msgspec.structs.fields(view):
        hint = hints[f.name]
        inner = _optional_inner(hint)
        if _is_view(inner):
            plan.append((f.encode_name, f.name, hint, "view", inner))
        elif typing.get_origin(inner) is tuple and _is_view(typing.get_args(inner)[0]):
            plan.append((f.encode_name, f.name, hint, "views", typing.get_args(inner)[0]))
        else:
            plan.append((f.encode_name, f.name, hint, "value", None))
    return tuple(plan)


def _element_wise(raw: dict[str, Any], view: type[V]) -> V:
    values: dict[str, Any] = {}
    for key, name, hint, kind, inner in _plan(view):
        if key not in raw:
            continue
        value = raw[key]
        if kind == "view":
            if isinstance(value, dict):
                values[name] = _convert(value, inner)[0]
        elif kind == "views":
            if isinstance(value, list):
                values[name] = tuple(_convert(v, inner)[0] for v in value if isinstance(v, dict))
        else:
            try:
                values[name] = msgspec.convert(value, hint)
            except msgspec.ValidationError:
                pass  # a malformed element reads as absent
    return view(**values)


def _convert(raw: dict[str, Any], view: type[V]) -> tuple[V, bool]:
    try:
        return msgspec.convert(raw, view), True
    except msgspec.ValidationError:
        return _element_wise(raw, view), False


@lru_cache(maxsize=None)
def _decoder(view: type[V]) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(view)


def decode_view(resource: RawResource, view: type[V]) -> V | None:
    """The view of a resource kept as JSON text, decoded straight from the text (one C pass, no
    intermediate objects), or None when a read element is malformed (then read ``resource.json()``
    element by element, with ``read_view``; ``view_or_json`` does both)."""
    try:
        return _decoder(view).decode(resource.raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def view_or_json(resource: Any, view: type[V]) -> tuple[V | None, Any]:
    """``(view, resource)`` for a resource kept as text whose read elements are well formed (its one
    typed decode); otherwise ``(None, the resource as a parsed JSON object)``, to be looked at and,
    if a candidate, read with ``read_view``. Raises Malformed when it is not a JSON object."""
    if isinstance(resource, RawResource):
        decoded = decode_view(resource, view)
        if decoded is not None:
            return decoded, resource
        resource = resource.json()
    if not isinstance(resource, dict):
        raise Malformed("not an object")
    return None, resource


def read_view(raw: Any, view: type[V]) -> tuple[V, bool]:
    """``(view, complete)`` of one JSON object; ``complete`` is False when an element was left out.

    Raises Malformed only when ``raw`` is not a JSON object.
    """
    if not isinstance(raw, dict):
        raise Malformed("not an object")
    return _convert(raw, view)


# --- reading views --------------------------------------------------------------------------------
@lru_cache(maxsize=8192)
def to_date(text: str | None) -> date | None:
    """Date part of a FHIR date/dateTime already checked by its view type (partial dates take the
    first day: "2015-07" -> 1 Jul); None for an impossible calendar date such as 2026-02-30."""
    if not text:
        return None
    try:
        return date(int(text[0:4]), int(text[5:7] or 1), int(text[8:10] or 1))
    except ValueError:
        return None


def concept_texts(concept: Concept | None) -> list[str]:
    """CodeableConcept.text and every coding display (for name / word matching)."""
    if concept is None:
        return []
    texts = [concept.text] if concept.text else []
    return texts + [c.display for c in concept.coding if c.display]


def concept_text(concept: Concept | None) -> str | None:
    """CodeableConcept.text, else the first coding display."""
    texts = concept_texts(concept)
    return texts[0] if texts else None


def concept_label(concept: Concept | None) -> str | None:
    """Human form of a CodeableConcept: text, display, or the first code."""
    if concept is None:
        return None
    return concept_text(concept) or next((c.code for c in concept.coding if c.code), None)


def first_code(concept: Concept | None) -> str | None:
    """The first coding code of a CodeableConcept (status elements like clinicalStatus)."""
    if concept is None:
        return None
    return next((c.code for c in concept.coding if c.code), None)


def raw_concept(concept: Any) -> tuple[list[tuple[str, str, str | None]], list[str]]:
    """The cheap candidate check on a raw CodeableConcept, before any view is built:
    ``([(system, code, display) of each well-typed coding], [text and displays])``.

    Codings with a non-string system or code are passed over (one bad coding never hides a good
    one); texts are cut to MAX_MATCH_TEXT. Raises Malformed when the concept or its ``coding`` has
    the wrong container type (a string where an object or array belongs): the resource is unreadable.
    """
    if concept is None:
        return [], []
    if not isinstance(concept, dict):
        raise Malformed("CodeableConcept is not an object")
    coding = concept.get("coding")
    if coding is not None and not isinstance(coding, list):
        raise Malformed("coding is not an array")
    codes: list[tuple[str, str, str | None]] = []
    texts: list[str] = []
    text = concept.get("text")
    if isinstance(text, str) and text:
        texts.append(text[:MAX_MATCH_TEXT])
    for c in coding or ():
        if not isinstance(c, dict):
            continue
        system, code, display = c.get("system"), c.get("code"), c.get("display")
        display = display if isinstance(display, str) and display else None
        if isinstance(system, str) and isinstance(code, str):
            codes.append((system, code, display))
        if display:
            texts.append(display[:MAX_MATCH_TEXT])
    return codes, texts


def view_concept(concept: Concept | None) -> tuple[list[tuple[str, str, str | None]], list[str]]:
    """``raw_concept`` of a concept already decoded into its view (every string in it non-empty)."""
    if concept is None:
        return [], []
    codes = [(c.system, c.code, c.display) for c in concept.coding if c.system is not None and c.code is not None]
    texts = [t[:MAX_MATCH_TEXT] for t in concept_texts(concept)]
    return codes, texts


def raw_codings(concept: Any) -> list[tuple[str, str, str | None]]:
    """(system, code, display) of the well-typed codings of a raw CodeableConcept (see raw_concept)."""
    return raw_concept(concept)[0]


def reference_of(resource_type: str, rid: str | None) -> str | None:
    """'Type/id' of a resource, or None without an id."""
    return f"{resource_type}/{rid}" if rid else None


# --- full R4 validation, where it is worth its cost ------------------------------------------------
def _models() -> dict[str, Any]:
    from fhir.resources.R4B.condition import Condition
    from fhir.resources.R4B.medication import Medication
    from fhir.resources.R4B.medicationrequest import MedicationRequest
    from fhir.resources.R4B.patient import Patient
    from fhir.resources.R4B.procedure import Procedure
    from fhir.resources.R4B.servicerequest import ServiceRequest

    return {"Condition": Condition, "MedicationRequest": MedicationRequest, "Procedure": Procedure,
            "Medication": Medication, "Patient": Patient, "ServiceRequest": ServiceRequest}


@lru_cache(maxsize=1)
def _cached_models() -> dict[str, Any]:
    return _models()


def strict_problems(resource: Any) -> list[str]:
    """Where a strict FHIR R4B reader (fhir.resources) rejects a resource: element paths and error
    kinds only, never values. Empty when it validates (or is of a type this service never reads)."""
    from pydantic import ValidationError

    if not isinstance(resource, dict):
        return ["not a JSON object"]
    model = _cached_models().get(resource.get("resourceType"))  # type: ignore[arg-type]
    if model is None:
        return []
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [f"{'.'.join(str(p) for p in err.get('loc', ())) or '(resource)'}: {err.get('type')}"
                for err in exc.errors()]
    except (ValueError, TypeError) as exc:
        return [f"(resource): {type(exc).__name__}"]
    return []
