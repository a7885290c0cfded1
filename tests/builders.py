"""Small builders for FHIR R4 resources and CDS Hooks requests used by the service tests.

Codes come from ../shared/clinical/CODES.md (verified rows): SNOMED 47505003 PTSD, RxNorm 197901
lorazepam 1 MG Oral Tablet, RxNorm 312941 sertraline 50 MG Oral Tablet.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
PATIENT_ID = "pat-1"


def patient(pid: str = PATIENT_ID) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1980-01-01"}


def ptsd_condition(cid: str = "cond-ptsd", status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status}]},
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
        "code": {"coding": [{"system": SNOMED, "code": "47505003",
                             "display": "Posttraumatic stress disorder"}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "recordedDate": "2024-01-10",
    }


def med_request(mid: str, code: str, display: str, *, status: str = "draft",
                authored: str = "2026-11-28", dose_mg: float | None = None,
                per_day: int = 1) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}],
                                      "text": display},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "authoredOn": authored,
    }
    if dose_mg is not None:
        resource["dosageInstruction"] = [{
            "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
            "route": {"coding": [{"system": SNOMED, "code": "26643006", "display": "Oral route"}]},
            "doseAndRate": [{"doseQuantity": {"value": dose_mg, "unit": "mg",
                                              "system": "http://unitsofmeasure.org", "code": "mg"}}],
        }]
    return resource


def lorazepam(mid: str = "mr-lorazepam", **kw: Any) -> dict[str, Any]:
    return med_request(mid, "197901", "lorazepam 1 MG Oral Tablet", dose_mg=1, **kw)


def sertraline(mid: str = "mr-sertraline", **kw: Any) -> dict[str, Any]:
    return med_request(mid, "312941", "sertraline 50 MG Oral Tablet", dose_mg=50, **kw)


def searchset(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
                              "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r,
                                         "search": {"mode": "match"}} for r in resources]}
    if not resources:
        del bundle["entry"]
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def full_prefetch(conditions=(), medications=(), procedures=()) -> dict[str, Any]:
    return {
        "patient": patient(),
        "conditions": searchset(*conditions),
        "medications": searchset(*medications),
        "procedures": searchset(*procedures),
    }


def hook_request(hook: str, *, prefetch: dict[str, Any] | None = None, drafts=(), selections=None,
                 fhir_server: str | None = None, token: str | None = None) -> dict[str, Any]:
    """A request shaped like the CDS Hooks sandbox's (SANDBOX.md): draftOrders Bundle without
    ``type``, entries without ``fullUrl``; order-sign has no selections."""
    context: dict[str, Any] = {"userId": "Practitioner/COREPRACTITIONER1", "patientId": PATIENT_ID}
    if hook in ("order-select", "order-sign"):
        context["draftOrders"] = {"resourceType": "Bundle",
                                  "entry": [{"resource": copy.deepcopy(r)} for r in drafts]}
    if hook == "order-select":
        context["selections"] = (selections if selections is not None
                                 else [f"{r['resourceType']}/{r['id']}" for r in drafts])
    body: dict[str, Any] = {"hookInstance": str(uuid.uuid4()), "hook": hook, "context": context}
    if prefetch is not None:
        body["prefetch"] = prefetch
    if fhir_server:
        body["fhirServer"] = fhir_server
    if token:
        body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "user/Patient.read user/Condition.read", "subject": "ptsd-cds"}
    return body


def topics(response_json: dict[str, Any]) -> list[str]:
    return [c["source"]["topic"]["code"] for c in response_json["cards"]]
