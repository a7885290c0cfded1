"""Data for the EHR-like ``/demo`` page, read from the synthetic fixtures (``fixtures/``).

* ``list_patients()`` — the fixture patients (``fixtures/patients/*.json``, one Bundle each).
* ``patient_summary(bundle)`` — what an EHR chart shows: conditions, drugs with doses and dates,
  psychotherapy sessions. Display only: plain reading of the FHIR JSON, never clinical logic
  (the service decides what the record means).
* ``prefetch(bundle)`` — the prefetch an EHR would send for the service's templates
  (``patient``, ``conditions``, ``medications``, ``procedures``), in the shape of the fixture
  requests (searchset Bundles).
* ``order_menu()`` — the medications a clinician can order in the demo: the draft orders of the
  fixture order-select / order-sign requests, each once.

No patient here is real (the fixtures carry no names).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cds_service.config import REPO_ROOT

FIXTURES = REPO_ROOT / "fixtures"
FHIR_BASE = "http://fhir.example.org/fhir"  # the fixture requests' fullUrl base (no server is called)
PREFETCH_TYPES = {"conditions": "Condition", "medications": "MedicationRequest", "procedures": "Procedure"}
_ID = re.compile(r"^[A-Za-z0-9.-]{1,64}$")


@dataclass(frozen=True)
class DemoPatient:
    id: str
    label: str  # e.g. "ptsd-benzo-therapy (male, born 1979)"
    bundle: dict[str, Any]


def _resources(bundle: dict[str, Any], kind: str | None = None) -> list[dict[str, Any]]:
    out = []
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and (kind is None or resource.get("resourceType") == kind):
            out.append(resource)
    return out


@lru_cache(maxsize=4)
def _load_patients(directory: str) -> tuple[DemoPatient, ...]:
    patients = []
    for path in sorted(Path(directory).glob("*.json")):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        found = _resources(bundle, "Patient")
        pid = found[0].get("id") if found else None
        if not isinstance(pid, str) or not _ID.match(pid):
            continue
        person = found[0]
        born = str(person.get("birthDate", ""))[:4]
        details = ", ".join(x for x in (person.get("gender"), f"born {born}" if born else "") if x)
        patients.append(DemoPatient(pid, f"{pid} ({details})" if details else pid, bundle))
    return tuple(patients)


def list_patients(fixtures: Path = FIXTURES) -> tuple[DemoPatient, ...]:
    return _load_patients(str(fixtures / "patients"))


def find_patient(patient_id: str, fixtures: Path = FIXTURES) -> DemoPatient | None:
    return next((p for p in list_patients(fixtures) if p.id == patient_id), None)


# --- the chart summary ------------------------------------------------------------------------
def _codings(concept: Any) -> list[Any]:
    """The codings of a CodeableConcept, whatever shape the record gives it (display only)."""
    coding = concept.get("coding") if isinstance(concept, dict) else None
    return coding if isinstance(coding, list) else []


def _concept_text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for coding in _codings(concept):
        if isinstance(coding, dict) and (coding.get("display") or coding.get("code")):
            return str(coding.get("display") or coding.get("code"))
    return ""


def _codes(concept: Any) -> str:
    short = {"http://snomed.info/sct": "SNOMED", "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
             "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm", "http://www.ama-assn.org/go/cpt": "CPT",
             "http://fdasis.nlm.nih.gov": "UNII"}
    out = []
    for coding in _codings(concept):
        if isinstance(coding, dict) and coding.get("code"):
            system = str(coding.get("system", ""))
            out.append(f"{short.get(system, system.rsplit('/', 1)[-1] or 'code')} {coding['code']}")
    return ", ".join(out)


def _status(concept: Any) -> str:
    for coding in _codings(concept):
        if isinstance(coding, dict) and coding.get("code"):
            return str(coding["code"])
    return "unreadable" if concept is not None else ""


def _dose(request: dict[str, Any]) -> str:
    parts = []
    for dosage in request.get("dosageInstruction") or []:
        if not isinstance(dosage, dict):
            continue
        text = dosage.get("text")
        route = _concept_text(dosage.get("route"))
        parts.append(", ".join(x for x in (text, route) if x))
    return "; ".join(p for p in parts if p)


def _period(resource: dict[str, Any], start_keys: tuple[str, ...], end_keys: tuple[str, ...]) -> tuple[str, str]:
    def first(keys):
        for key in keys:
            value: Any = resource
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if isinstance(value, str):
                return value[:10]
        return ""

    return first(start_keys), first(end_keys)


def patient_summary(bundle: dict[str, Any]) -> dict[str, Any]:
    """The record as a chart shows it (lists of plain strings; display only)."""
    conditions = []
    for c in _resources(bundle, "Condition"):
        onset, ended = _period(c, ("onsetDateTime", "onsetPeriod.start", "recordedDate"),
                               ("abatementDateTime", "abatementPeriod.end"))
        conditions.append({"name": _concept_text(c.get("code")), "codes": _codes(c.get("code")),
                           "status": _status(c.get("clinicalStatus")), "onset": onset, "ended": ended})
    medications = []
    for m in _resources(bundle, "MedicationRequest"):
        start, end = _period(m, ("dispenseRequest.validityPeriod.start", "authoredOn"),
                             ("dispenseRequest.validityPeriod.end",))
        medications.append({"name": _concept_text(m.get("medicationCodeableConcept")),
                            "codes": _codes(m.get("medicationCodeableConcept")), "dose": _dose(m),
                            "status": str(m.get("status", "")), "start": start, "end": end})
    sessions: dict[str, dict[str, Any]] = {}
    for p in _resources(bundle, "Procedure"):
        name = _concept_text(p.get("code")) or "procedure"
        when, _ = _period(p, ("performedDateTime", "performedPeriod.start"), ())
        row = sessions.setdefault(name, {"name": name, "codes": _codes(p.get("code")), "count": 0,
                                         "first": "", "last": ""})
        row["count"] += 1
        if when:
            row["first"] = min(row["first"] or when, when)
            row["last"] = max(row["last"], when)
    return {"conditions": conditions, "medications": medications, "sessions": list(sessions.values())}


# --- what an EHR sends --------------------------------------------------------------------------
def prefetch(bundle: dict[str, Any]) -> dict[str, Any]:
    """Prefetch for the service's templates, built from the patient's Bundle."""
    patients = _resources(bundle, "Patient")
    out: dict[str, Any] = {"patient": copy.deepcopy(patients[0]) if patients else None}
    for key, kind in PREFETCH_TYPES.items():
        found = _resources(bundle, kind)
        out[key] = {
            "resourceType": "Bundle", "type": "searchset", "total": len(found),
            "entry": [{"fullUrl": f"{FHIR_BASE}/{kind}/{r.get('id')}", "resource": copy.deepcopy(r),
                       "search": {"mode": "match"}}
                      for r in found],
        }
    return out


@lru_cache(maxsize=4)
def _order_menu(directory: str) -> tuple[dict[str, Any], ...]:
    seen: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(directory).glob("*.json")):
        request = json.loads(path.read_text(encoding="utf-8"))
        if request.get("hook") not in ("order-select", "order-sign"):
            continue
        for resource in _resources(request.get("context", {}).get("draftOrders") or {}, "MedicationRequest"):
            name = _concept_text(resource.get("medicationCodeableConcept"))
            dose = _dose(resource)
            label = f"{name} — {dose}" if dose else name
            if name and label not in seen:
                template = copy.deepcopy(resource)
                for key in ("id", "subject", "authoredOn"):
                    template.pop(key, None)
                seen[label] = {"label": label, "resource": template}
    return tuple(sorted(seen.values(), key=lambda o: o["label"].lower()))


def order_menu(fixtures: Path = FIXTURES) -> list[dict[str, Any]]:
    """Medications to order: ``[{"label", "resource"}]`` (a draft MedicationRequest without id/subject)."""
    return [copy.deepcopy(o) for o in _order_menu(str(fixtures / "requests"))]
