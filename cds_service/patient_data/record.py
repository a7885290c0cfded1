"""The patient record handed from the patient-data stage to the clinical-facts stage.

This is the contract between "patient data" (prefetch, else the client's FHIR server) and
"clinical facts" (terminology). Everything here is FHIR R4 JSON exactly as the client sent it:
nothing has been validated with ``fhir.resources`` yet. The facts stage reads only the elements its
rules read, and skips (never fails on) a resource it cannot read.

A resource is either a parsed JSON object (``dict``) or, for the Conditions, MedicationRequests and
Procedures of prefetch Bundles (the bulk of a long record), a ``RawResource``: its JSON text, not parsed yet,
with its ``resourceType`` and ``id``. The facts stage decodes it straight into the typed view of
the elements it reads (one pass, no intermediate objects); ``json()`` parses it whole for the rare
readers that need more (a contained Medication, a malformed element read element by element).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import msgspec

Resource = dict[str, Any]

_JSON = msgspec.json.Decoder()


# Python's own limit on the digits of an int read from text (sys.get_int_max_str_digits default).
_INT_DIGITS = 4300


class _OutOfRange:
    """Stands for a number msgspec will not hold: present, but of no type any view accepts."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<number out of range>"


OUT_OF_RANGE = _OutOfRange()


def _float(text: str) -> float | _OutOfRange:
    value = float(text)
    return value if math.isfinite(value) else OUT_OF_RANGE


def _int(text: str) -> int | _OutOfRange:
    return int(text) if len(text.lstrip("-")) <= _INT_DIGITS else OUT_OF_RANGE


def parse_tolerant(raw: msgspec.Raw | bytes) -> Any:
    """JSON text already checked by ``json_body.parse_hook_body``, parsed. A number msgspec will not
    hold (beyond float range such as 1e999, or an int of more than 4,300 digits) becomes
    ``OUT_OF_RANGE``: a malformed element — present (a status that holds one is unreadable, not
    absent) but read by no view (left out, element by element) — never a failed call, never a lost
    resource."""
    try:
        return _JSON.decode(raw)
    except msgspec.ValidationError:
        return json.loads(memoryview(raw).tobytes(), parse_float=_float, parse_int=_int,
                          parse_constant=lambda _: OUT_OF_RANGE)


class RawResource:
    """One resource as JSON text (a ``msgspec.Raw`` slice of the request body), parsed on demand.

    ``resource_type`` is a string, ``id`` a string or None (a malformed id is None, as for dicts).
    ``json()`` parses the whole resource once (then cached). ``references_medication``: the
    resource has a ``medicationReference`` member (read with its type and id).
    """

    __slots__ = ("resource_type", "id", "raw", "references_medication", "_json")

    def __init__(self, resource_type: str, rid: str | None, raw: msgspec.Raw | bytes,
                 references_medication: bool = False, parsed: Resource | None = None):
        self.resource_type = resource_type
        self.id = rid
        self.raw = raw
        self.references_medication = references_medication
        self._json = parsed  # when the text was already parsed (it is not parsed twice)

    def json(self) -> Resource:
        if self._json is None:
            self._json = parse_tolerant(self.raw)
        return self._json

    def __repr__(self) -> str:  # never the content (patient data)
        return f"<RawResource {self.resource_type} {len(memoryview(self.raw))} bytes>"


def as_json(resource: Any) -> Any:
    """A record resource as parsed JSON (a ``RawResource`` is parsed; anything else unchanged)."""
    return resource.json() if isinstance(resource, RawResource) else resource


def relative_reference(reference: str) -> str:
    """``Type/id`` of a relative, absolute or versioned reference; anything else unchanged.

    'http://x/fhir/Medication/1/_history/2' -> 'Medication/1'. Both the patient-data and the
    clinical-facts stage match references with it, so they always agree on what is referenced.
    """
    parts = [p for p in reference.strip().split("/_history/")[0].split("?")[0].split("/") if p]
    return "/".join(parts[-2:]) if len(parts) >= 2 else reference


@dataclass
class PatientRecord:
    """What is known about one patient for one hook call."""

    patient_id: str
    patient: Resource | None = None
    conditions: list[Resource] = field(default_factory=list)
    medication_requests: list[Resource] = field(default_factory=list)
    procedures: list[Resource] = field(default_factory=list)
    # Medication resources by relative reference ("Medication/abc"), from prefetch bundles
    # (``_include``d or otherwise present) or fetched from the FHIR server for a
    # ``medicationReference``. Contained Medications stay inside their MedicationRequest.
    medications: dict[str, Resource] = field(default_factory=dict)
    # order-select / order-sign: every resource of ``context.draftOrders`` (any resourceType,
    # in Bundle order), and the ``context.selections`` references ("MedicationRequest/123").
    draft_orders: list[Resource] = field(default_factory=list)
    selections: list[str] = field(default_factory=list)
    # Names of the data sets that could not be obtained but were not required
    # (e.g. "patient"). Never contains patient data.
    missing: list[str] = field(default_factory=list)

    def selected_draft_orders(self) -> list[Resource]:
        """Draft orders named in ``selections`` (matched on ``resourceType/id``; entries may lack fullUrl)."""
        wanted = {relative_reference(s) for s in self.selections}
        return [r for r in self.draft_orders if f"{r.get('resourceType')}/{r.get('id')}" in wanted]
