"""Cheap, defensive readers for plain FHIR R4 JSON, and validation of candidate resources.

Records arrive as plain dicts (see ``cds_service.patient_data.record``). Every reader here checks
the shape it reads and raises :class:`Malformed` when it is not what FHIR allows (a string where a
CodeableConcept is expected, a non-list ``coding`` ...). Callers catch it per resource, skip the
resource and count it; nothing here logs, and error messages never contain patient data.

Only resources that matched a pre-filter (a code or name of interest) are validated with
``fhir.resources`` (package ``fhir.resources`` 8, R4B models: the default R5 models reject R4).
Validation covers the elements the facts stage reads (plus the required ones), so a stray
unrelated element (a vendor extension typo, an R5-only field in ``note``) does not hide, say, a
benzodiazepine order - but any element we *do* read must be valid FHIR.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import date
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.procedure import Procedure
from pydantic import ValidationError

Resource = dict[str, Any]


T = TypeVar("T")


class Malformed(Exception):
    """A resource does not have the shape FHIR R4 requires (message never holds patient data)."""


class SkipCounter:
    """Counts skipped resources per resourceType (no patient data)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def skip(self, resource_type: str) -> None:
        self.counts[resource_type] += 1

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


# --- primitive readers ----------------------------------------------------------------------------
def as_list(value: Any) -> list[Any]:
    """A FHIR array (absent -> []); anything else is malformed."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise Malformed("expected an array")
    return value


def as_dict(value: Any) -> dict[str, Any] | None:
    """A FHIR complex element (absent -> None); anything else is malformed."""
    if value is None or isinstance(value, dict):
        return value
    raise Malformed("expected an object")


def as_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise Malformed("expected a string")


def as_number(value: Any) -> float | None:
    """A FHIR decimal/integer (absent -> None). Booleans and non-numeric strings are malformed."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise Malformed("expected a number")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise Malformed("expected a number") from None
    raise Malformed("expected a number")


_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def parse_date(value: Any) -> date | None:
    """Date part of a FHIR date/dateTime/instant. Partial dates take the first day ("2015-07" -> 1 Jul)."""
    text = as_str(value)
    if not text:
        return None
    m = _DATE.match(text)
    if m is None:
        raise Malformed("bad date")
    try:
        return date(int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1))
    except ValueError:
        raise Malformed("bad date") from None


# --- codeable concepts ----------------------------------------------------------------------------
def codings(concept: Any) -> list[dict[str, Any]]:
    """The codings of a CodeableConcept (absent -> [])."""
    concept = as_dict(concept)
    if concept is None:
        return []
    result = as_list(concept.get("coding"))
    for c in result:
        if not isinstance(c, dict):
            raise Malformed("coding is not an object")
        as_str(c.get("system"))
        as_str(c.get("code"))
        as_str(c.get("display"))
    return result


def concept_text(concept: Any) -> str | None:
    """CodeableConcept.text, else the first coding display."""
    concept = as_dict(concept)
    if concept is None:
        return None
    text = as_str(concept.get("text"))
    if text:
        return text
    return next((c["display"] for c in codings(concept) if c.get("display")), None)


def concept_texts(concept: Any) -> list[str]:
    """CodeableConcept.text and every coding display (for name / word matching)."""
    concept = as_dict(concept)
    if concept is None:
        return []
    texts = [as_str(concept.get("text"))] + [c.get("display") for c in codings(concept)]
    return [t for t in texts if t]


def concept_label(concept: Any) -> str | None:
    """Human form of a CodeableConcept: text, display, or the first code."""
    return concept_text(concept) or next((c["code"] for c in codings(concept) if c.get("code")), None)


def first_code(concept: Any) -> str | None:
    """The first coding code of a CodeableConcept (status elements like clinicalStatus)."""
    return next((c["code"] for c in codings(concept) if c.get("code")), None)


def reference_of(resource: Resource) -> str | None:
    """'Type/id' of a resource, or None without an id."""
    rid = as_str(resource.get("id"))
    return f"{resource.get('resourceType')}/{rid}" if rid else None


# --- validation -----------------------------------------------------------------------------------
_MODELS = {
    "Condition": Condition,
    "MedicationRequest": MedicationRequest,
    "Procedure": Procedure,
    "Medication": Medication,
}
# Elements the facts stage reads, plus each resource's required elements (R4B cardinality 1..1).
_READ_ELEMENTS = {
    "Condition": ("id", "clinicalStatus", "verificationStatus", "code", "subject", "onsetDateTime",
                  "onsetPeriod", "recordedDate"),
    "MedicationRequest": ("id", "status", "intent", "subject", "medicationCodeableConcept",
                          "medicationReference", "authoredOn", "dosageInstruction", "dispenseRequest"),
    "Procedure": ("id", "status", "code", "subject", "performedDateTime", "performedPeriod"),
    "Medication": ("id", "code", "form", "ingredient"),
}


def validate(resource: Resource, contained: Iterable[Resource] = ()) -> None:
    """Validate the read elements of a candidate resource with fhir.resources R4B.

    ``contained``: the contained resources the facts stage uses (validated with the resource).
    Raises Malformed (without the validation message, which may quote patient data).
    """
    rtype = resource.get("resourceType")
    model = _MODELS.get(rtype)  # type: ignore[arg-type]
    if model is None:
        raise Malformed("unexpected resourceType")
    trimmed: dict[str, Any] = {"resourceType": rtype}
    trimmed.update((k, resource[k]) for k in _READ_ELEMENTS[rtype] if k in resource)
    used = list(contained)
    if used:
        trimmed["contained"] = used
    try:
        model.model_validate(trimmed)
    except (ValidationError, ValueError, TypeError):
        raise Malformed(f"{rtype} failed FHIR R4B validation") from None


def element_is_valid(model: Any, value: Any) -> bool:
    """Whether one element (a datatype or backbone element) validates with its R4B model."""
    if not isinstance(value, dict):
        return False
    try:
        model.model_validate(value)
    except (ValidationError, ValueError, TypeError):
        return False
    return True


def validated_view(resource: Resource, *, elements: Mapping[str, Any], required: Iterable[str],
                   strings: Iterable[str] = ("status",), dates: Iterable[str] = (),
                   skipped: SkipCounter, contained: Iterable[Resource] = ()) -> Resource:
    """The parts of a candidate resource that may be read.

    The whole resource when it validates with fhir.resources R4B. Otherwise (safety first: a PTSD
    diagnosis or a benzodiazepine order must not go unnoticed because an element the rules do
    not need is malformed) a view of only the elements that are sound on their own: each element
    of ``elements`` that validates with its R4B datatype model, each of ``strings`` that is a
    string, each of ``dates`` that parses. Raises Malformed when a ``required`` element (the
    code that made the resource a candidate) is unreadable. Counted as "<type> (partly read)".
    """
    contained = list(contained)
    try:
        validate(resource, contained)
        return resource
    except Malformed:
        pass
    for item in contained:
        validate(item)
    rtype = resource.get("resourceType")
    view: Resource = {k: resource[k] for k in ("resourceType", "id") if k in resource}
    if contained:
        view["contained"] = contained
    view.update((k, resource[k]) for k in strings if isinstance(resource.get(k), str))
    for key in dates:
        try:
            if parse_date(resource.get(key)) is not None:
                view[key] = resource[key]
        except Malformed:
            pass
    required = set(required)
    for key, model in elements.items():
        if key not in resource:
            continue
        if element_is_valid(model, resource[key]):
            view[key] = resource[key]
        elif key in required:
            raise Malformed(f"{rtype}.{key} failed FHIR R4B validation")
    skipped.skip(f"{rtype} (partly read)")
    return view


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
