"""Small helpers the rules share: which drugs count, and how facts become template values."""

from __future__ import annotations

from datetime import date

from cds_service.facts.model import ORDERS_BEING_PLACED, ClinicalFacts, ConditionFact, DrugFact
from cds_service.rules.finding import ORDER_SELECT, ORDER_SIGN
from cds_service.rules.knowledge import GUIDELINE

UNDER_18 = "under-18"
PREGNANT = "pregnant"


def months_before(today: date, months: int) -> date:
    """The same day ``months`` calendar months earlier (the last day of a shorter month)."""
    total = today.year * 12 + today.month - 1 - months
    year, month = divmod(total, 12)
    for day in (today.day, 30, 29, 28):
        try:
            return date(year, month + 1, day)
        except ValueError:
            continue
    raise ValueError("unreachable")


def current_pregnancy(facts: ClinicalFacts) -> list[ConditionFact]:
    """Active pregnancy Conditions (CODES-2 §3) with onset within ``patient.pregnancy_months``
    (10) months — service rule, issue #8 point 5. Fail-safe: an active pregnancy with no onset is
    current, a partial onset counts from the last day it can mean ("2026-03" = 31 March), and one
    whose status cannot be read counts as active."""
    since = months_before(facts.today, GUIDELINE.pregnancy_months)
    return [c for c in facts.pregnancy
            if (c.onset_latest or c.onset) is None or (c.onset_latest or c.onset) >= since]


def drug_draft_blocks(facts: ClinicalFacts) -> frozenset[str]:
    """The flags that forbid any drug draft on any card: ``"under-18"`` (NICE, issue #8 point 4)
    and ``"pregnant"`` (a current pregnancy, service rule, point 5). Empty when drafts are allowed."""
    flags = set()
    if facts.under(GUIDELINE.adult_age_years):
        flags.add(UNDER_18)
    if current_pregnancy(facts):
        flags.add(PREGNANT)
    return frozenset(flags)


def tried(facts: ClinicalFacts, ingredient: str) -> list[DrugFact]:
    """Record MedicationRequests of ``ingredient`` that mean the drug was actually taken.

    ``ClinicalFacts.ever_taken`` returns every status; cancelled, entered-in-error and draft
    requests are not a course of the drug (``DrugFact.was_taken``).
    """
    return [d for d in facts.ever_taken(ingredient) if d.was_taken]


def orders_to_check(hook: str, facts: ClinicalFacts) -> list[DrugFact]:
    """Draft orders the order hooks look at: order-select the selected ones, order-sign all.

    Non-selected drafts in order-select are context only (hook library: "decision support
    should focus on the selected orders"), so no card fires for them. Only orders being placed
    count (``ORDERS_BEING_PLACED``; an order without a status is treated as a draft).
    """
    placed = [d for d in facts.draft_drugs if d.status is None or d.status in ORDERS_BEING_PLACED]
    if hook == ORDER_SIGN:
        return placed
    if hook == ORDER_SELECT:
        return [d for d in placed if d.is_selected]
    return []


def mg(value: float) -> str:
    """37.5 -> "37.5", 50.0 -> "50"."""
    return f"{value:g}"


def daily_dose(drug: DrugFact) -> str:
    return f"{mg(drug.daily_dose_mg)} mg/day" if drug.daily_dose_mg is not None else "daily dose not recorded"


def drug_phrase(drug: DrugFact) -> str:
    """"sertraline 50 mg/day" (what the card text says about one drug)."""
    return f"{drug.ingredient} {daily_dose(drug)}"


def names(drugs: list[DrugFact]) -> str:
    """Distinct ingredients in first-seen order: "lorazepam, clonazepam"."""
    return ", ".join(dict.fromkeys(d.ingredient for d in drugs))


def ptsd_values(facts: ClinicalFacts) -> dict[str, str]:
    """Values every PTSD card may use: the reference of the PTSD Condition (for reasonReference)."""
    refs = [c.reference for c in facts.ptsd if c.reference]
    return {"ptsd_condition": refs[0]} if refs else {}
