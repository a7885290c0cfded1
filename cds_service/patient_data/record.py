"""The patient record handed from the patient-data stage to the clinical-facts stage.

This is the contract between "patient data" (prefetch, else the client's FHIR server) and
"clinical facts" (terminology). Everything here is plain FHIR R4 JSON (``dict``) exactly as the
client sent it: nothing has been validated with ``fhir.resources`` yet. The facts stage validates
only the resources its rules read, and skips (never fails on) a resource it cannot read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Resource = dict[str, Any]


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
