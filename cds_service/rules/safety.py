"""Safety cards: benzodiazepines in PTSD, MDMA (midomafetamine), doses outside the usual range.

* ``benzodiazepine-avoid`` — only with active PTSD, only systemic non-procedural benzodiazepines
  (``DrugFact.systemic_non_procedural``: an injection, rectal or nasal benzodiazepine is procedural
  sedation or seizure rescue). Order hooks: one ``critical`` card naming every offending draft
  order, with one delete suggestion per order (selection "any"). patient-view: one ``warning`` card naming every current benzodiazepine. A PTSD
  Condition whose status could not be read counts in the safe direction: the same cards, as
  ``warning`` (flag ``ptsd-status-unknown``; issue #11). Acute stress disorder or reaction (not
  PTSD): the same card as a ``warning`` (flag ``acute-stress``): no drug should be offered to
  prevent PTSD (issue #8 point 6).
* ``order-not-checked`` — order hooks, active PTSD (or PTSD of unknown status): one ``warning``
  card naming every checked draft order whose drug cannot be read at all (it could be a
  benzodiazepine); never silence.
* ``mdma-investigational`` — any patient. Order hooks: one ``critical`` card per MDMA draft order;
  patient-view: one ``warning`` card when MDMA is current in the record. For a patient with active
  PTSD the card lists the guideline steps still open.
* ``dose-out-of-range`` — only with active PTSD, order hooks only: a draft of sertraline,
  paroxetine, venlafaxine or prazosin whose daily dose (mg) is known and outside the range in
  ``guideline.toml``. A dose that cannot be worked out is not guessed at: no card. The card
  suggests replacing the order (delete it, draft the same drug at the nearest bound of the range)
  unless a drug draft is blocked (``common.drug_draft_blocks``) or another antidepressant is current.

Order hooks look only at the selected drafts (order-select) or at every draft (order-sign); see
``common.orders_to_check``.
"""

from __future__ import annotations

from cds_service.facts.model import ANTIDEPRESSANT_CLASSES, ClinicalFacts, DrugFact
from cds_service.rules.common import daily_dose, drug_draft_blocks, mg, names, orders_to_check
from cds_service.rules.finding import ORDER_HOOKS, PATIENT_VIEW, Finding
from cds_service.rules.knowledge import GUIDELINE
from cds_service.rules.next_step import open_steps

BENZODIAZEPINE = "benzodiazepine-avoid"
MDMA = "mdma-investigational"
DOSE = "dose-out-of-range"
NOT_CHECKED = "order-not-checked"


def _order_values(drug: DrugFact) -> dict[str, str]:
    return {"drug": drug.ingredient, "daily_dose": daily_dose(drug)}


def _ptsd_for_safety(facts: ClinicalFacts) -> tuple[tuple, str, frozenset[str]] | None:
    """(PTSD conditions, order-hook indicator, flags) for the safety cards, or None without PTSD.

    Active PTSD: critical. PTSD whose status is unknown: warning (treated as possibly active)."""
    if facts.ptsd:
        return tuple(facts.ptsd), "critical", frozenset()
    if facts.ptsd_unknown_status:
        return tuple(facts.ptsd_unknown_status), "warning", frozenset({"ptsd-status-unknown"})
    return None


def _benzodiazepine_context(facts: ClinicalFacts) -> tuple[tuple, str, frozenset[str]] | None:
    """PTSD as above; else acute stress disorder/reaction: a warning that no drug should be
    offered to prevent PTSD (issue #8 point 6)."""
    ptsd = _ptsd_for_safety(facts)
    if ptsd is not None:
        return ptsd
    if facts.acute_stress:
        return tuple(facts.acute_stress), "warning", frozenset({"acute-stress"})
    return None


def benzodiazepine_avoid(hook: str, facts: ClinicalFacts) -> list[Finding]:
    ptsd = _benzodiazepine_context(facts)
    if ptsd is None:
        return []
    conditions, order_indicator, flags = ptsd
    # The boxed warning's first item: concomitant use with opioids (issue #8 point 8).
    opioids = facts.current("opioid") + [d for d in orders_to_check(hook, facts) if d.drug_class == "opioid"]
    opioid_values = {"opioids": names(opioids)} if opioids else {}
    if opioids:
        flags = flags | {"opioid"}
    if hook == PATIENT_VIEW:
        current = [d for d in facts.current("benzodiazepine") if d.systemic_non_procedural]
        if not current:
            return []
        return [Finding(BENZODIAZEPINE, hook, "warning", conditions=conditions, drugs=tuple(current + opioids),
                        values={"drugs": names(current), **opioid_values}, flags=flags)]
    offending = [order for order in orders_to_check(hook, facts)
                 if order.drug_class == "benzodiazepine" and order.systemic_non_procedural]
    if not offending:
        return []
    # One card for the concern, however many benzodiazepine orders: each named, each removable on
    # its own (issue #8 point 16).
    values = {"drug": names(offending),
              "orders": "; ".join(f"{o.ingredient}, {daily_dose(o)}" for o in offending), **opioid_values}
    return [Finding(BENZODIAZEPINE, hook, order_indicator, conditions=conditions, drugs=tuple(offending + opioids),
                    values=values, target_order=offending[0].reference, flags=flags,
                    orders=tuple((o.reference, _order_values(o)) for o in offending if o.reference))]


def order_not_checked(hook: str, facts: ClinicalFacts) -> list[Finding]:
    """Fail safe: a draft whose drug cannot be read gets a card saying so, never silence."""
    ptsd = _ptsd_for_safety(facts)
    if hook not in ORDER_HOOKS or ptsd is None or not facts.unchecked_orders:
        return []
    return [Finding(NOT_CHECKED, hook, "warning", conditions=ptsd[0], unchecked=tuple(facts.unchecked_orders),
                    values={"count": str(len(facts.unchecked_orders))})]


def mdma_investigational(hook: str, facts: ClinicalFacts) -> list[Finding]:
    extra: dict = {"conditions": tuple(facts.ptsd)}
    flags: set[str] = set()
    if facts.has_active_ptsd:
        steps = open_steps(facts)
        extra["open_steps"] = steps
        flags |= {"ptsd", "steps-open" if steps else "steps-done"}
    if hook == PATIENT_VIEW:
        current = facts.current("mdma")
        if not current:
            return []
        return [Finding(MDMA, hook, "warning", drugs=tuple(current), values={"drugs": names(current)},
                        flags=frozenset(flags), **extra)]
    return [
        Finding(MDMA, hook, "critical", drugs=(order,), values=_order_values(order),
                flags=frozenset(flags), target_order=order.reference, **extra)
        for order in orders_to_check(hook, facts)
        if order.drug_class == "mdma"
    ]


def dose_out_of_range(hook: str, facts: ClinicalFacts) -> list[Finding]:
    if hook not in ORDER_HOOKS or not facts.has_active_ptsd:
        return []
    findings = []
    for order in orders_to_check(hook, facts):
        limits = GUIDELINE.dose_ranges.get(order.ingredient)
        if limits is None or order.daily_dose_mg is None or not limits.applies_to(order.label):
            continue
        low = order.daily_dose_low_mg if order.daily_dose_low_mg is not None else order.daily_dose_mg
        if order.daily_dose_mg > limits.max_for(facts.sex):
            direction = "above"  # the most that may be given (a range's high end) is too much
        elif limits.min_mg is not None and low < limits.min_mg:
            direction = "below"  # the least that may be given (a range's low end) is too little
        else:
            continue
        values = {
            **_order_values(order),
            "direction": direction,
            "dose_range": limits.describe(facts.sex),
        }
        # flags pick the card paragraphs (the drug's own dosing statement, the direction) and the
        # replacement order at the nearest bound (issue #8 point 17): the upper bound for men when
        # the drug has one (``male``); none when a drug draft is blocked (under 18, pregnancy) or
        # another antidepressant is current (service rule: no antidepressant drafted on top).
        flags = {direction, order.ingredient} | drug_draft_blocks(facts)
        if facts.sex == "male" and limits.max_mg_male is not None:
            flags.add("male")
        if order.drug_class in ANTIDEPRESSANT_CLASSES and any(
                d.ingredient != order.ingredient for d in facts.current_antidepressants()):
            flags.add("on-other-antidepressant")
        findings.append(Finding(DOSE, hook, "warning", conditions=tuple(facts.ptsd), drugs=(order,),
                                values=values, flags=frozenset(flags), target_order=order.reference))
    return findings


SAFETY_RULES = (benzodiazepine_avoid, order_not_checked, mdma_investigational, dose_out_of_range)
