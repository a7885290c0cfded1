"""Synthetic FHIR R4 records and hook bodies of a chosen size and shape, for ``make bench``.

Nothing here reads files: a record is built from the size, the shape and "today", so the bench and
its smoke test (tests/test_bench_records.py) work in a clean clone. Resource shapes follow the
Synthea sample patients (smart-on-fhir/generated-sample-data, R4/SYNTHEA, Apache-2.0; see
reference/samples/synthea/SOURCES.md): SNOMED-coded Conditions and Procedures with ``text``,
RxNorm-coded MedicationRequests with a dosage, ``encounter`` / ``requester`` references, a
``meta.tag``; about 600-800 bytes of JSON per resource, as in those files.

Shapes (``n`` = Conditions + MedicationRequests + Procedures; the Patient comes on top):

* ``typical``  - a typical chart: most resources unrelated to the rules (hypertension, screening,
  other drugs); one active PTSD Condition, ~2 % sertraline orders, ~2 % prolonged-exposure sessions.
* ``history``  - a treatment history: one active PTSD Condition, half the rest sertraline orders
  (monthly-style renewals over years, contiguous validity periods, the last one current), half
  prolonged-exposure sessions, every session inside a drug period: every resource is read closely.
* ``outside``  - the same history, but every order is valid for one day and every session falls on a
  day between two orders: no session is inside a drug period, which defeats early exits in any
  pairwise session x drug pass.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
PATIENT_ID = "bench-patient-1"
SUBJECT = {"reference": f"Patient/{PATIENT_ID}"}
META = {"tag": [{"system": "https://smarthealthit.org/tags", "code": "synthea-5-2019"}]}
SHAPES = ("typical", "history", "outside")

# Unrelated resources, codes and displays as they appear in the Synthea samples.
OTHER_CONDITIONS = [
    ("59621000", "Hypertension"), ("15777000", "Prediabetes"),
    ("162864005", "Body mass index 30+ - obesity (finding)"), ("444814009", "Viral sinusitis (disorder)"),
    ("195662009", "Acute viral pharyngitis (disorder)"), ("10509002", "Acute bronchitis (disorder)"),
    ("40055000", "Chronic sinusitis (disorder)"), ("55822004", "Hyperlipidemia"),
]
OTHER_MEDICATIONS = [
    ("314076", "lisinopril 10 MG Oral Tablet"), ("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet"),
    ("197361", "Amlodipine 5 MG Oral Tablet"), ("312961", "Simvastatin 20 MG Oral Tablet"),
    ("313782", "Acetaminophen 325 MG Oral Tablet"), ("849574", "Naproxen sodium 220 MG Oral Tablet"),
]
OTHER_PROCEDURES = [
    ("715252007", "Depression screening using Patient Health Questionnaire Nine Item score (procedure)"),
    ("430193006", "Medication reconciliation (procedure)"),
    ("710824005", "Assessment of health and social care needs (procedure)"),
    ("171207006", "Depression screening (procedure)"), ("428191000124101", "Documentation of current medications"),
    ("454711000124102", "Depression screening using Patient Health Questionnaire Two-Item score (procedure)"),
]
SERTRALINE = ("312941", "sertraline 50 MG Oral Tablet")


def _ref() -> dict[str, str]:
    return {"reference": f"urn:uuid:{uuid.uuid4()}"}


def _dt(day: date) -> str:
    return f"{day.isoformat()}T09:30:00+00:00"


def patient() -> dict[str, Any]:
    return {"resourceType": "Patient", "id": PATIENT_ID, "meta": META, "gender": "male",
            "birthDate": "1979-04-12", "name": [{"use": "official", "family": "Bench", "given": ["Test"]}]}


def ptsd_condition(onset: date) -> dict[str, Any]:
    return condition("cond-ptsd", "47505003", "Posttraumatic stress disorder", onset)


def condition(cid: str, code: str, display: str, onset: date) -> dict[str, Any]:
    return {
        "resourceType": "Condition", "id": cid, "meta": META,
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": "confirmed"}]},
        "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
        "subject": SUBJECT, "encounter": _ref(), "onsetDateTime": _dt(onset), "recordedDate": _dt(onset),
    }


def medication_request(mid: str, code: str, display: str, authored: date, *, status: str = "completed",
                       valid: tuple[date, date] | None = None, dose_mg: float = 50) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest", "id": mid, "meta": META, "status": status, "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}],
                                      "text": display},
        "subject": SUBJECT, "encounter": _ref(), "authoredOn": _dt(authored), "requester": _ref(),
        "dosageInstruction": [{
            "sequence": 1, "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
            "asNeededBoolean": False,
            "doseAndRate": [{"doseQuantity": {"value": dose_mg, "unit": "mg", "system": "http://unitsofmeasure.org",
                                              "code": "mg"}}],
        }],
    }
    if valid is not None:
        resource["dispenseRequest"] = {"validityPeriod": {"start": valid[0].isoformat(), "end": valid[1].isoformat()}}
    return resource


def procedure(pid: str, code: str | None, text: str, performed: date) -> dict[str, Any]:
    coding = [{"system": SNOMED, "code": code, "display": text}] if code else []
    resource: dict[str, Any] = {
        "resourceType": "Procedure", "id": pid, "meta": META, "status": "completed",
        "code": {"coding": coding, "text": text} if coding else {"text": text},
        "subject": SUBJECT, "encounter": _ref(),
        "performedPeriod": {"start": _dt(performed), "end": f"{performed.isoformat()}T10:20:00+00:00"},
    }
    return resource


def session(pid: str, number: int, performed: date) -> dict[str, Any]:
    return procedure(pid, None, f"Prolonged exposure therapy session {number}", performed)


def typical_chart(n: int, today: date) -> tuple[list, list, list]:
    """(conditions, medications, procedures) of a typical chart with ``n`` resources in all."""
    n_cond = max(1, round(n * 0.30))
    n_med = max(1, round(n * 0.35))
    n_proc = max(1, n - n_cond - n_med)
    start = today - timedelta(days=365 * 12)
    span = (today - start).days - 1

    def day(i: int, count: int) -> date:
        return start + timedelta(days=(i * span) // max(1, count))

    conditions = [ptsd_condition(start)] + [
        condition(f"c{i}", *OTHER_CONDITIONS[i % len(OTHER_CONDITIONS)], day(i, n_cond)) for i in range(1, n_cond)]
    every = 50  # ~2 % of the orders and of the procedures are the ones the rules look for
    medications = []
    for i in range(n_med):
        authored = day(i, n_med)
        if i % every == every // 2 or (n_med < every and i == n_med - 1):
            medications.append(medication_request(f"m{i}", *SERTRALINE, authored,
                                                  valid=(authored, authored + timedelta(days=29))))
        else:
            code, display = OTHER_MEDICATIONS[i % len(OTHER_MEDICATIONS)]
            medications.append(medication_request(f"m{i}", code, display, authored, dose_mg=10))
    procedures = []
    for i in range(n_proc):
        if i % every == every // 2 or (n_proc < every and i == n_proc - 1):
            procedures.append(session(f"p{i}", i // every + 1, day(i, n_proc)))
        else:
            procedures.append(procedure(f"p{i}", *OTHER_PROCEDURES[i % len(OTHER_PROCEDURES)], day(i, n_proc)))
    return conditions, medications, procedures


def treatment_history(n: int, today: date, *, outside: bool = False) -> tuple[list, list, list]:
    """(conditions, medications, procedures): active PTSD, then half SSRI orders, half sessions."""
    rest = max(2, n - 1)
    k = rest // 2  # orders
    m = rest - k  # sessions
    step = max(2, min(30, 3650 // k))  # days between renewals: over ~10 years, longer for huge records
    first = today - timedelta(days=step * k)
    authored = [first + timedelta(days=step * j) for j in range(k)]
    medications = []
    for j, a in enumerate(authored):
        last = j == k - 1
        if last:
            valid = (a, today + timedelta(days=30))  # the current order
        elif outside:
            valid = (a, a)  # one day: the next day is outside every period
        else:
            valid = (a, a + timedelta(days=step - 1))  # contiguous renewals
        medications.append(medication_request(f"m{j}", *SERTRALINE, a, status="active" if last else "completed",
                                              valid=valid))
    procedures = []
    for i in range(m):
        if outside:
            # the day after order j (j < k - 1): between two one-day periods, never in one; once
            # every gap has a session, days before the first order (one session a day: same-day
            # sessions of one therapy count once since issue #8 point 11)
            gaps = max(1, k - 1)
            performed = authored[i] + timedelta(days=1) if i < gaps else first - timedelta(days=1 + i - gaps)
        else:
            performed = first + timedelta(days=(i * step * k) // m)
        procedures.append(session(f"p{i}", i + 1, min(performed, today)))
    return [ptsd_condition(first - timedelta(days=30))], medications, procedures


def record(shape: str, n: int, today: date | None = None) -> tuple[list, list, list]:
    today = today or date.today()
    if shape == "typical":
        return typical_chart(n, today)
    if shape in ("history", "outside"):
        return treatment_history(n, today, outside=shape == "outside")
    raise ValueError(f"unknown shape {shape!r} (one of {', '.join(SHAPES)})")


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(resources)}
    if resources:
        bundle["entry"] = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r, "search": {"mode": "match"}}
                           for r in resources]
    return bundle


def prefetch(conditions: list, medications: list, procedures: list) -> dict[str, Any]:
    return {"patient": patient(), "conditions": searchset(conditions), "medications": searchset(medications),
            "procedures": searchset(procedures)}


def hook_body(hook: str, *, prefetch_data: dict[str, Any] | None = None, drafts: list | None = None,
              fhir_server: str | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {"userId": "Practitioner/bench-practitioner", "patientId": PATIENT_ID}
    if hook in ("order-select", "order-sign"):
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": r} for r in drafts or []]}
    if hook == "order-select":
        context["selections"] = [f"MedicationRequest/{r['id']}" for r in drafts or []]
    body: dict[str, Any] = {"hookInstance": str(uuid.uuid4()), "hook": hook, "context": context}
    if prefetch_data is not None:
        body["prefetch"] = prefetch_data
    if fhir_server is not None:
        body["fhirServer"] = fhir_server
        body["fhirAuthorization"] = {"access_token": "bench-fhir-token", "token_type": "Bearer",
                                     "expires_in": 3600, "scope": "user/*.read", "subject": "ptsd-cds"}
    return body


def patient_view(shape: str, n: int, today: date | None = None) -> dict[str, Any]:
    return hook_body("patient-view", prefetch_data=prefetch(*record(shape, n, today)))


def benzo_drafts(today: date) -> list[dict[str, Any]]:
    """A lorazepam draft (the critical benzodiazepine card) and a sertraline draft."""
    return [medication_request("draft-lorazepam", "197901", "lorazepam 1 MG Oral Tablet", today, status="draft",
                               dose_mg=1),
            medication_request("draft-sertraline", *SERTRALINE, today, status="draft")]


def order_hook(hook: str, today: date | None = None, n: int = 20) -> dict[str, Any]:
    """order-select / order-sign with benzodiazepine drafts for a PTSD treatment history of ``n``."""
    today = today or date.today()
    return hook_body(hook, prefetch_data=prefetch(*treatment_history(n, today)), drafts=benzo_drafts(today))


UNIQUE = "__UNIQUE__"  # the load generator replaces it with a per-request value (wrk.lua)


def feedback_body(card_uuid: str = UNIQUE) -> dict[str, Any]:
    """One overridden-card feedback item; ``card`` is made unique per request by the load generator,
    so every POST stores a new row (the same item twice is stored once)."""
    return {"feedback": [{
        "card": card_uuid, "outcome": "overridden",
        "overrideReason": {"reason": {"system": "https://ptsd-cds.example.org/override-reason",
                                      "code": "patient-declined-alternatives", "display": "Patient declined"}},
        "outcomeTimestamp": "2026-11-28T12:00:00Z",
    }]}

