"""Clinical facts: turn one patient's FHIR record into the facts the guideline rules read.

Public API::

    from cds_service.facts import extract_facts, Terminology
    facts = extract_facts(record, today=date.today(), hook="patient-view")

``extract_facts`` is pure (no Flask, no I/O after the terminology is loaded), never raises for a
bad record (unreadable resources are skipped and counted in ``facts.skipped``) and never logs
patient data. ``site_code_map`` (a file path or a parsed dict; format in
``cds_service.facts.terminology``) adds local Procedure codes for trauma-focused therapies; an
invalid map raises ValueError. The rules each part implements are documented in its module:
``conditions``, ``medications`` (with ``dosing``), ``trials``, ``psychotherapy``.
"""

from __future__ import annotations

import os
from datetime import date
from typing import Any, Mapping

from cds_service.facts.conditions import extract_conditions
from cds_service.facts.patient import read_patient
from cds_service.facts.fhir_read import SkipCounter, strict_problems
from cds_service.facts.medications import (
    OrderContext, bridge_refills, extract_draft_drugs, extract_drugs, resolve_reasons,
)
from cds_service.facts.model import NIGHTMARE_THERAPY, ClinicalFacts
from cds_service.facts.psychotherapy import assess_courses, dedupe_sessions, extract_procedures
from cds_service.facts.terminology import Terminology, system_name
from cds_service.facts.trials import assess_ssri_trials
from cds_service.patient_data.record import PatientRecord

__all__ = ["extract_facts", "warm_up", "strict_problems", "Terminology", "system_name", "ClinicalFacts"]


def _items(value: Any) -> list[Any]:
    """A record list; anything else (None, a stray dict) reads as empty."""
    return value if isinstance(value, list) else []


def _terminology(terminology: Terminology | None,
                 site_code_map: str | os.PathLike[str] | Mapping[str, Any] | None) -> Terminology:
    if terminology is None:
        return Terminology.load(site_code_map)
    return terminology if site_code_map is None else terminology.with_site_code_map(site_code_map)


def extract_facts(
    record: PatientRecord,
    *,
    today: date,
    hook: str,
    terminology: Terminology | None = None,
    site_code_map: str | os.PathLike[str] | Mapping[str, Any] | None = None,
) -> ClinicalFacts:
    """All clinical facts for one hook call.

    ``hook``: "patient-view", "order-select" or "order-sign". Draft orders are selected when named
    in ``record.selections`` (order-select) and always on order-sign.
    """
    term = _terminology(terminology, site_code_map)
    skipped = SkipCounter()
    medications = record.medications if isinstance(record.medications, dict) else {}
    found = extract_conditions(_items(record.conditions), term, skipped)
    ptsd_all = found["ptsd"]
    ptsd = [c for c in ptsd_all if c.status_known and c.confirmed]
    nightmares = [c for c in found["nightmares"] if c.status_known]  # unknown: absent for the steps
    drugs = bridge_refills(extract_drugs(_items(record.medication_requests), medications, term,
                                         OrderContext(today, term.thresholds), skipped),
                           term.thresholds.refill_bridge_days, today, term.thresholds.default_supply_days)
    draft_drugs, unchecked = extract_draft_drugs(_items(record.draft_orders), _items(record.selections), hook,
                                      medications, term, today, skipped)
    indications = [c for kind in ("alcohol-withdrawal", "seizure") for c in found[kind] if c.status_known]
    drugs, draft_drugs = resolve_reasons(drugs, indications), resolve_reasons(draft_drugs, indications)
    patient = read_patient(record.patient, today, skipped)
    # A "completed" session dated after today is a data error, not treatment received.
    sessions, declined = extract_procedures(_items(record.procedures), term, skipped)
    performed = dedupe_sessions(x for x in sessions if x.performed is None or x.performed <= today)
    ptsd_sessions = [x for x in performed if x.therapy != NIGHTMARE_THERAPY]
    return ClinicalFacts(
        today=today,
        age_years=patient.age_years,
        sex=patient.sex,
        deceased=patient.deceased,
        ptsd=ptsd,
        ptsd_unknown_status=[c for c in ptsd_all if not c.status_known],
        nightmares=nightmares,
        acute_stress=[c for c in found["acute-stress"] if c.status_known],
        # An unreadable status counts as active here: the safe direction for "no drug draft".
        pregnancy=found["pregnancy"],
        ptsd_unconfirmed=[c for c in ptsd_all if c.status_known and not c.confirmed],
        alcohol_withdrawal=[c for c in found["alcohol-withdrawal"] if c.status_known],
        seizure_disorder=[c for c in found["seizure"] if c.status_known],
        drugs=drugs,
        draft_drugs=draft_drugs,
        unchecked_orders=unchecked,
        # A "completed" session dated after today is a data error, not treatment received.
        sessions=ptsd_sessions,
        irt_sessions=[x for x in performed if x.therapy == NIGHTMARE_THERAPY],
        courses=assess_courses(ptsd_sessions, today),
        declined_therapy=declined,
        ssri_trials=assess_ssri_trials(drugs, term.thresholds, ptsd_active=bool(ptsd), today=today),
        skipped=skipped.as_dict(),
    )


def warm_up() -> None:
    """Load the terminology and build the view decoders (call once at start-up), so the first
    hook call does not pay for them. Uses a synthetic record only."""
    from cds_service.facts import builders as b

    record = b.record(
        conditions=[b.condition()],
        medication_requests=[b.med_request("312941", authored="2026-01-01", dosage=[b.dosage(50, "mg")])],
        procedures=[b.procedure("emdr", b.PSYCHOTHERAPY, performed="2026-01-02")],
        medications={"Medication/m": b.medication("197901", id="m")},
        draft_orders=[b.med_request(reference="Medication/m", status="draft")],
    )
    extract_facts(record, today=date(2026, 1, 3), hook="order-sign")
