"""First-line medication trials (sertraline, paroxetine, venlafaxine): courses, adequacy, outcome.

Issue #8 points 9 and 10 (service rules on GUIDELINE-FACTS §6; numbers in ``thresholds.json``).

**Courses.** The record's orders of one first-line agent that were actually taken
(``DrugFact.was_taken``; not post-dated) are sorted by start. Consecutive orders are one course
while the next one starts no more than ``refillBridgeDays`` (100) after the previous one ended.
Each order's period is already worked out by ``medications``: a current order lasts until today;
an order with no end lasted until the next order of the drug within 100 days, else its supply
(``expectedSupplyDuration``, or ``quantity`` ÷ daily dose), else ``defaultSupplyDays`` (30).

**Verdict of a course** (``SsriTrial.verdict``):

* ``adequate`` / ``failed`` — at least ``minWeeks`` (8) at or above the minimum effective daily
  dose (sertraline 50, paroxetine 20 mg; venlafaxine *above* 37.5 mg), the periods at that dose
  joined across gaps of at most ``maxGapDays``. With PTSD still active it has failed.
* ``not-tolerated`` — stopped (no order current) and a ``statusReason`` of the course says so
  (``notToleratedWords``): a failed first-line trial, whatever its length.
* ``no-trial`` — stopped within ``notToleratedWithinDays`` (14) with no such reason: not a trial.
* ``continue-and-reassess`` — current, at the maximum dose (``maxDailyDoseMg``), not yet 8 weeks.
* ``under-dosed`` — below the minimum effective dose for 8 weeks or more (current or stopped):
  titrate, not a failure.
* ``under-way`` — current and not yet adequate (otherwise).
* ``stopped-early`` — stopped after more than 14 days without becoming adequate and without a
  not-tolerated reason: an incomplete trial, not a failure.

An order given as a dose range counts with its low end; an unknown dose never counts towards
adequacy (and never makes a course "under-dosed"). **One trial per agent:** its latest course,
unless that one is no trial or stopped early and an earlier course failed, was not tolerated or
was adequate (then that one). Fluoxetine and every other antidepressant are not first-line trials
(they are tried antidepressants, seen by the rules in ``ClinicalFacts.drugs``).
"""

from __future__ import annotations

from datetime import date

from cds_service.facts.dosing import fmt
from cds_service.facts.model import FIRST_LINE_AGENTS, DrugFact, SsriTrial
from cds_service.facts.terminology import Thresholds

DECISIVE = ("failed", "not-tolerated", "adequate")


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


def courses(orders: list[DrugFact], gap_days: int) -> list[list[DrugFact]]:
    """Orders of one drug split into courses (sorted; a new course after a gap over ``gap_days``)."""
    out: list[list[DrugFact]] = []
    end: date | None = None
    for d in sorted(orders, key=lambda d: (d.trial_start or date.min, d.trial_end or date.min)):
        start = d.trial_start or date.min
        finish = d.trial_end or start
        if out and end is not None and (start - end).days <= gap_days:
            out[-1].append(d)
            end = max(end, finish)
        else:
            out.append([d])
            end = finish
    return out


def assess_course(orders: list[DrugFact], t: Thresholds, ptsd_active: bool) -> SsriTrial:
    """One course of one first-line agent (orders sorted, at least one)."""
    latest = orders[-1]
    ingredient = latest.ingredient
    # one pass over the orders: the periods at or above / known below the minimum effective dose
    at_dose: list[tuple[date, date]] = []
    below: list[tuple[date, date]] = []
    periods: list[tuple[date, date]] = []
    current = False
    for d in orders:
        current = current or d.is_current
        p = _period(d)
        if p is None:
            continue
        periods.append(p)
        x = _adequacy_dose(d)
        if x is not None:
            (at_dose if t.at_min_dose(ingredient, x) else below).append(p)
    days_at_dose = longest_run_days(at_dose, t.ssri_trial_gap_days)
    start = min((p[0] for p in periods), default=None)
    end = max((p[1] for p in periods), default=None)
    length = (end - start).days if start and end else 0
    min_days = t.ssri_min_weeks * 7
    dose = _adequacy_dose(latest)
    top = t.trial_max_daily_dose_mg.get(ingredient)
    under_days = longest_run_days(below, t.ssri_trial_gap_days) if below else 0
    if days_at_dose >= min_days:
        verdict = "failed" if ptsd_active else "adequate"
    elif not current and any(d.status_reason and t.not_tolerated(d.status_reason) for d in orders):
        verdict = "not-tolerated"
    elif not current and length <= t.not_tolerated_within_days:
        verdict = "no-trial"
    elif current and top is not None and latest.daily_dose_mg is not None and latest.daily_dose_mg >= top:
        verdict = "continue-and-reassess"
    elif under_days >= min_days and (not current or (dose is not None and not t.at_min_dose(ingredient, dose))):
        verdict = "under-dosed"
    elif current:
        verdict = "under-way"
    else:
        verdict = "stopped-early"
    return SsriTrial(
        drug=latest, adequate=days_at_dose >= min_days, failed=verdict in ("failed", "not-tolerated"),
        reason=_reason(latest, len(orders), days_at_dose, length, t, verdict), orders=tuple(orders),
        start=start, end=end, verdict=verdict, current=current,  # type: ignore[arg-type]
        weeks_at_dose=float(days_at_dose // 7))


VERDICT_WORDS = {
    "failed": "adequate trial; PTSD still active: failed",
    "adequate": "adequate trial",
    "not-tolerated": "stopped, not tolerated (status reason): a failed trial",
    "no-trial": "stopped within {days} days without a recorded reason: not counted as a trial",
    "continue-and-reassess": "at the maximum dose for less than {weeks} weeks: continue and reassess",
    "under-dosed": "below the minimum effective dose for {weeks} weeks or more: under-dosed, titrate",
    "under-way": "under way, not yet {weeks} weeks at the minimum effective dose",
    "stopped-early": "stopped before {weeks} weeks at the minimum effective dose: an incomplete trial",
}


def _reason(latest: DrugFact, n_orders: int, days_at_dose: int, length: int, t: Thresholds, verdict: str) -> str:
    low = t.ssri_min_daily_dose_mg.get(latest.ingredient)
    above = latest.ingredient in t.trial_above_min_only
    target = (f"{'above' if above else 'at'} {fmt(low)} mg/day{'' if above else ' or more'}"
              if low is not None else "an effective dose")
    dose = latest.dose_text or "daily dose not recorded"
    orders = f"{n_orders} orders, latest {dose}" if n_orders > 1 else dose
    words = VERDICT_WORDS[verdict].format(days=t.not_tolerated_within_days, weeks=fmt(t.ssri_min_weeks))
    return (f"{orders}; {_weeks(length)} in all, {_weeks(days_at_dose)} {target} "
            f"(adequate: {fmt(t.ssri_min_weeks)} weeks): {words}")


def _weeks(days: int) -> str:
    """Whole weeks as a clinician reads them ("12 weeks", "under 1 week"), never "12.57 weeks"."""
    weeks = days // 7
    return "under 1 week" if weeks < 1 else f"{weeks} week{'s' if weeks != 1 else ''}"


def assess_ssri_trials(drugs: list[DrugFact], thresholds: Thresholds, ptsd_active: bool,
                       today: date | None = None) -> list[SsriTrial]:
    """One trial per first-line agent taken, in record order (drafts and never-taken orders excluded)."""
    by_drug: dict[str, list[DrugFact]] = {}
    for d in drugs:
        post_dated = today is not None and d.trial_start is not None and d.trial_start > today
        if d.ingredient in FIRST_LINE_AGENTS and d.was_taken and not post_dated:
            by_drug.setdefault(d.ingredient, []).append(d)
    trials = []
    for orders in by_drug.values():
        assessed = [assess_course(c, thresholds, ptsd_active) for c in courses(orders, thresholds.refill_bridge_days)]
        chosen = assessed[-1]
        if chosen.verdict in ("no-trial", "stopped-early"):
            chosen = next((a for a in reversed(assessed) if a.verdict in DECISIVE), chosen)
        trials.append(chosen)
    return trials
