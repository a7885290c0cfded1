"""Small helpers the rules share: which drugs count, and how facts become template values."""

from __future__ import annotations

from cds_service.facts.model import ORDERS_BEING_PLACED, ClinicalFacts, DrugFact
from cds_service.rules.finding import ORDER_SELECT, ORDER_SIGN
from cds_service.rules.knowledge import GUIDELINE


def tried(facts: ClinicalFacts, ingredient: str) -> list[DrugFact]:
    """Record MedicationRequests of ``ingredient`` that mean the drug was actually taken.

    ``ClinicalFacts.ever_taken`` returns every status; cancelled, entered-in-error and draft
    requests are not a course of the drug (``DrugFact.was_taken``).
    """
    return [d for d in facts.ever_taken(ingredient) if d.was_taken]


def drug_draft_blocks(facts: ClinicalFacts) -> frozenset[str]:
    """Why no card may draft a drug for this patient: {"under-18"} under the adult age
    (guideline.toml ``patient.adult_age_years``; NICE, issue #8 point 4), else empty.

    Interim version of the ``therapy`` branch: the ``steps`` branch owns the real one (which adds
    "pregnant", issue #8 point 5) and it replaces this at merge. Cards switch their drug drafts
    off with ``unless = ["no-drug-draft"]`` and name each reason with a flag of the same name."""
    return frozenset({"under-18"}) if facts.under(GUIDELINE.adult_age_years) else frozenset()



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
