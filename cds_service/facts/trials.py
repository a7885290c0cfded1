"""SSRI treatment trials, per drug: adequate (dose and duration) and failed.

All the record's orders of one SSRI that were actually taken (``DrugFact.was_taken``: not
cancelled, entered-in-error or draft) make one course of that drug: renewals and dose steps are
not separate trials (issue #3: "per drug, the period it was taken").

The course is **adequate** when the drug was taken at or above the minimum daily dose for its
ingredient (sertraline 50, paroxetine 20, fluoxetine 20 mg/day) for at least 8 weeks without a
break: the periods of the orders at or above that dose are joined when each starts no more than
``trialGapDays`` after the previous one ends (``thresholds.json``; issue #3, GUIDELINE-FACTS.md
§6/§11). An order whose daily dose is unknown never counts towards adequacy.

It has **failed** when it was adequate and PTSD is still active, or when the drug was stopped
before becoming adequate: none of its orders is current and the one that ended last has status
``stopped``. A titration step that was stopped and followed by a higher dose of the same drug is
not a failure. An order given as a dose range counts with its low end; an order that starts after
today has not been taken yet.
"""

from __future__ import annotations

from datetime import date

from cds_service.facts.dosing import fmt
from cds_service.facts.model import DrugFact, SsriTrial
from cds_service.facts.terminology import Thresholds


def _period(drug: DrugFact) -> tuple[date, date] | None:
    if drug.trial_start is None or drug.trial_end is None:
        return None
    return drug.trial_start, max(drug.trial_start, drug.trial_end)


def longest_run_days(periods: list[tuple[date, date]], gap_days: int) -> int:
    """Longest stretch covered by the periods, joining those that overlap or follow within a gap."""
    best = 0
    run_start: date | None = None
    run_end: date | None = None
    for start, end in sorted(periods):
        if run_end is not None and (start - run_end).days <= gap_days:
            run_end = max(run_end, end)
        else:
            run_start, run_end = start, end
        best = max(best, (run_end - run_start).days)
    return best


def _adequacy_dose(drug: DrugFact) -> float | None:
    """The dose that counts towards adequacy: the low end when the order gives a range."""
    return drug.daily_dose_low_mg if drug.daily_dose_low_mg is not None else drug.daily_dose_mg


def _stopped_early(orders: list[DrugFact]) -> bool:
    """The drug was stopped: none of its orders is current, and the one that ended last is ``stopped``."""
    if any(d.is_current for d in orders):
        return False
    last = max(orders, key=lambda d: (d.trial_end or d.trial_start or date.min))
    return last.status == "stopped"


def assess_drug(orders: list[DrugFact], thresholds: Thresholds, ptsd_active: bool) -> SsriTrial:
    """One course of one SSRI from its taken orders (at least one)."""
    orders = sorted(orders, key=lambda d: (d.trial_start or date.min, d.trial_end or date.min))
    latest = orders[-1]
    min_dose = thresholds.ssri_min_daily_dose_mg.get(latest.ingredient)
    at_dose = [p for d in orders
               if (dose := _adequacy_dose(d)) is not None and min_dose is not None and dose >= min_dose
               and (p := _period(d)) is not None]
    days = longest_run_days(at_dose, thresholds.ssri_trial_gap_days)
    adequate = bool(at_dose) and days >= thresholds.ssri_min_weeks * 7
    failed = (adequate and ptsd_active) or (_stopped_early(orders) and not adequate)
    periods = [p for d in orders if (p := _period(d)) is not None]
    start = min((p[0] for p in periods), default=None)
    end = max((p[1] for p in periods), default=None)
    reason = _reason(latest, len(orders), days, min_dose, thresholds.ssri_min_weeks, adequate, failed)
    return SsriTrial(drug=latest, adequate=adequate, failed=failed, reason=reason, orders=tuple(orders),
                     start=start, end=end)


def _reason(latest: DrugFact, n_orders: int, days_at_dose: int, min_dose: float | None, min_weeks: float,
            adequate: bool, failed: bool) -> str:
    target = f"{fmt(min_dose)} mg/day" if min_dose is not None else "no threshold"
    dose = latest.dose_text or "daily dose unknown"
    orders = f"{n_orders} orders, latest {dose}" if n_orders > 1 else dose
    verdict = "adequate" if adequate else "not adequate"
    tail = ""
    if failed:
        tail = "; failed: PTSD still active" if adequate else "; failed: stopped before an adequate trial"
    return (f"{orders}; {fmt(days_at_dose / 7)} weeks at >= {target} (needs >= {fmt(min_weeks)} weeks): "
            f"{verdict}{tail}")


def assess_ssri_trials(drugs: list[DrugFact], thresholds: Thresholds, ptsd_active: bool,
                       today: date | None = None) -> list[SsriTrial]:
    """One SsriTrial per SSRI taken, in record order (drafts and never-taken orders excluded)."""
    by_drug: dict[str, list[DrugFact]] = {}
    for d in drugs:
        post_dated = today is not None and d.trial_start is not None and d.trial_start > today
        if d.drug_class == "ssri" and d.was_taken and not post_dated:
            by_drug.setdefault(d.ingredient, []).append(d)
    return [assess_drug(orders, thresholds, ptsd_active) for orders in by_drug.values()]
