"""SSRI treatment trials: adequate (dose and duration) and failed.

An SSRI trial is **adequate** when the order's daily dose reached the minimum for its ingredient
(sertraline 50, paroxetine 20, fluoxetine 20 mg/day) over a trial period of at least 8 weeks
(``thresholds.json``; issue #3, GUIDELINE-FACTS.md §6/§11). An unknown daily dose is never adequate.

It has **failed** when it was adequate and PTSD is still active, or when the order was
``stopped`` before becoming adequate (this includes a stopped order whose dose is unknown: it was
never shown to be adequate). One SsriTrial per SSRI MedicationRequest of the record (not drafts).
"""

from __future__ import annotations

from cds_service.facts.dosing import fmt
from cds_service.facts.model import DrugFact, SsriTrial
from cds_service.facts.terminology import Thresholds


def _trial_days(drug: DrugFact) -> int | None:
    if drug.trial_start is None or drug.trial_end is None:
        return None
    return max(0, (drug.trial_end - drug.trial_start).days)


def _reason(drug: DrugFact, min_dose: float | None, min_weeks: float, adequate: bool, failed: bool) -> str:
    dose = drug.dose_text or "daily dose unknown"
    weeks = drug.trial_weeks
    length = f"{fmt(weeks)} weeks" if weeks is not None else "duration unknown"
    target = f"{fmt(min_dose)} mg/day" if min_dose is not None else "no threshold"
    verdict = "adequate" if adequate else "not adequate"
    tail = ""
    if failed:
        tail = "; failed: PTSD still active" if adequate else "; failed: stopped before an adequate trial"
    return f"{dose}, {length} (needs >= {target} for >= {fmt(min_weeks)} weeks): {verdict}{tail}"


def assess_trial(drug: DrugFact, thresholds: Thresholds, ptsd_active: bool) -> SsriTrial:
    min_dose = thresholds.ssri_min_daily_dose_mg.get(drug.ingredient)
    days = _trial_days(drug)
    dose_ok = drug.daily_dose_mg is not None and min_dose is not None and drug.daily_dose_mg >= min_dose
    adequate = dose_ok and days is not None and days >= thresholds.ssri_min_weeks * 7
    failed = (adequate and ptsd_active) or (drug.status == "stopped" and not adequate)
    return SsriTrial(drug=drug, adequate=adequate, failed=failed,
                     reason=_reason(drug, min_dose, thresholds.ssri_min_weeks, adequate, failed))


def assess_ssri_trials(drugs: list[DrugFact], thresholds: Thresholds, ptsd_active: bool) -> list[SsriTrial]:
    """One SsriTrial per SSRI record order (drafts excluded)."""
    return [assess_trial(d, thresholds, ptsd_active) for d in drugs if d.drug_class == "ssri" and not d.is_draft_order]
