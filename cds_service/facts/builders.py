"""Small factories for FHIR R4 resources and PatientRecords (tests, demos, rules tests).

Each returns a plain dict shaped like real EHR data and valid for fhir.resources R4B. Only
keyword arguments that are given (not None) are written, so a test can leave an element out.

    condition(code="F4310", system=ICD10CM, clinical=None)
    med_request(code="312941", dosage=[dosage(50, "mg")], authored="2026-01-02")
    procedure(system=PSYCHOTHERAPY, code="emdr", performed="2026-03-01")
"""

from __future__ import annotations

from datetime import date
from typing import Any, Iterable

from cds_service.codesystems import PSYCHOTHERAPY  # noqa: F401 - re-exported for tests
from cds_service.facts.terminology import ICD10CM, ICD11, RXNORM, SNOMED  # noqa: F401 - re-exported
from cds_service.patient_data.record import PatientRecord

Resource = dict[str, Any]
CPT = "http://www.ama-assn.org/go/cpt"
PATIENT = {"reference": "Patient/p1"}


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _date(value: date | str | None) -> str | None:
    return value.isoformat() if isinstance(value, date) else value


def coding(system: str | None, code: str | None, display: str | None = None) -> dict[str, Any]:
    return _clean({"system": system, "code": code, "display": display})


def concept(*codings: dict[str, Any], text: str | None = None) -> dict[str, Any]:
    return _clean({"coding": list(codings) or None, "text": text})


def _status(system: str, code: str | None) -> dict[str, Any] | None:
    return concept(coding(system, code)) if code else None


def condition(code: str | None = "47505003", system: str | None = SNOMED, *, id: str = "c1",
              display: str | None = None, text: str | None = None, clinical: str | None = "active",
              verification: str | None = "confirmed", onset: date | str | None = None,
              recorded: date | str | None = None) -> Resource:
    return _clean({
        "resourceType": "Condition", "id": id,
        "clinicalStatus": _status("http://terminology.hl7.org/CodeSystem/condition-clinical", clinical),
        "verificationStatus": _status("http://terminology.hl7.org/CodeSystem/condition-ver-status", verification),
        "code": concept(coding(system, code, display), text=text) if code else concept(text=text),
        "subject": PATIENT, "onsetDateTime": _date(onset), "recordedDate": _date(recorded),
    })


def dosage(value: float | None = None, unit: str | None = None, *, frequency: float | None = 1,
           period: float | None = 1, period_unit: str | None = "d", route: str | None = None,
           as_needed: bool | None = None, timing_code: str | None = None, legacy: bool = False,
           text: str | None = None) -> dict[str, Any]:
    """A Dosage. ``legacy=True`` writes STU3-style ``doseQuantity`` directly on the Dosage."""
    quantity = _clean({"value": value, "unit": unit}) if value is not None else None
    repeat = _clean({"frequency": frequency, "period": period, "periodUnit": period_unit}) or None
    timing = _clean({"repeat": repeat, "code": concept(text=timing_code) if timing_code else None}) or None
    d = {"text": text, "timing": timing, "asNeededBoolean": as_needed,
         "route": concept(text=route) if route else None}
    if quantity and legacy:
        d["doseQuantity"] = quantity
    elif quantity:
        d["doseAndRate"] = [{"doseQuantity": quantity}]
    return _clean(d)


def med_request(code: str | None = None, system: str | None = RXNORM, *, id: str = "mr1",
                display: str | None = None, text: str | None = None, status: str = "active",
                intent: str = "order", authored: date | str | None = None,
                validity: tuple[date | str | None, date | str | None] | None = None,
                dosage: list[dict[str, Any]] | None = None, reference: str | None = None,
                reference_display: str | None = None, contained: list[Resource] | None = None) -> Resource:
    """A MedicationRequest with a medicationCodeableConcept, or a medicationReference when ``reference``."""
    medication: dict[str, Any]
    if reference or reference_display:
        medication = {"medicationReference": _clean({"reference": reference, "display": reference_display})}
    else:
        medication = {"medicationCodeableConcept": concept(coding(system, code, display), text=text)
                      if code else concept(text=text)}
    dispense = None
    if validity:
        dispense = {"validityPeriod": _clean({"start": _date(validity[0]), "end": _date(validity[1])})}
    return _clean({
        "resourceType": "MedicationRequest", "id": id, "contained": contained, "status": status,
        "intent": intent, **medication, "subject": PATIENT, "authoredOn": _date(authored),
        "dosageInstruction": dosage, "dispenseRequest": dispense,
    })


def medication(code: str | None = None, system: str | None = RXNORM, *, id: str = "med1",
               display: str | None = None, text: str | None = None, form: str | None = None) -> Resource:
    return _clean({
        "resourceType": "Medication", "id": id,
        "code": concept(coding(system, code, display), text=text) if code else concept(text=text),
        "form": concept(text=form) if form else None,
    })


def procedure(code: str | None = None, system: str | None = SNOMED, *, id: str = "p1",
              display: str | None = None, text: str | None = None, status: str = "completed",
              performed: date | str | None = None, performed_period: bool = False) -> Resource:
    when = _date(performed)
    return _clean({
        "resourceType": "Procedure", "id": id, "status": status,
        "code": concept(coding(system, code, display), text=text) if code else concept(text=text),
        "subject": PATIENT,
        "performedDateTime": None if performed_period else when,
        "performedPeriod": {"start": when} if performed_period and when else None,
    })


def record(conditions: Iterable[Resource] = (), medication_requests: Iterable[Resource] = (),
           procedures: Iterable[Resource] = (), medications: dict[str, Resource] | None = None,
           draft_orders: Iterable[Resource] = (), selections: Iterable[str] = ()) -> PatientRecord:
    return PatientRecord(
        patient_id="p1", conditions=list(conditions), medication_requests=list(medication_requests),
        procedures=list(procedures), medications=dict(medications or {}),
        draft_orders=list(draft_orders), selections=list(selections),
    )


def record_from_bundle(bundle: dict[str, Any]) -> PatientRecord:
    """A PatientRecord of the Conditions, MedicationRequests, Procedures and Medications of a Bundle."""
    resources = [e.get("resource") for e in bundle.get("entry", []) if isinstance(e, dict)]
    by_type: dict[str, list[Resource]] = {}
    for r in resources:
        if isinstance(r, dict):
            by_type.setdefault(r.get("resourceType", ""), []).append(r)
    patients = by_type.get("Patient", [{}])
    return PatientRecord(
        patient_id=str(patients[0].get("id", "unknown")), patient=patients[0] or None,
        conditions=by_type.get("Condition", []),
        medication_requests=by_type.get("MedicationRequest", []),
        procedures=by_type.get("Procedure", []),
        medications={f"Medication/{m.get('id')}": m for m in by_type.get("Medication", [])},
    )
