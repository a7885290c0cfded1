"""Safety cards: benzodiazepines in PTSD, MDMA (midomafetamine), doses outside the usual range.

* ``benzodiazepine-avoid`` — only with active PTSD, only benzodiazepines the card is about
  (``counts_for_card``: not injected, not a rescue formulation of diazepam / midazolam, not
  single-dose or pre-procedure midazolam, not an order whose own reason is alcohol withdrawal or a
  seizure disorder — ``DrugFact.exemption``, issue #8 point 2). Order hooks: one card naming every
  offending draft order: ``critical`` with one delete suggestion per *new* order (selection
  "any"); a **taper or renewal** (``is_taper``: same ingredient current at the same or a higher
  daily dose, or its own instructions step down) gets no removal and is named as a taper to keep;
  when every order is a taper the card is a ``warning`` supporting the taper (flags ``taper``,
  ``taper-only``; issue #8 points 1 and 16). patient-view: one ``warning`` card naming every current
  benzodiazepine. PTSD recorded as provisional / differential / unconfirmed (flag
  ``ptsd-unconfirmed``) or whose status could not be read (``ptsd-status-unknown``) counts in the
  safe direction, as ``warning``. Acute stress disorder or reaction (not PTSD): the same card as
  a ``warning`` (flag ``acute-stress``): no drug should be offered to prevent PTSD (issue #8 point
  6). Active alcohol withdrawal or seizure disorder elsewhere in the record does not exempt an
  order: the card names it (flag ``indication-elsewhere``).
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

    Active PTSD: critical. PTSD recorded as provisional, differential or unconfirmed: warning
    (service rule, issue #8 point 7). PTSD whose status is unknown: warning (treated as possibly
    active)."""
    if facts.ptsd:
        return tuple(facts.ptsd), "critical", frozenset()
    if facts.ptsd_unconfirmed:
        return tuple(facts.ptsd_unconfirmed), "warning", frozenset({"ptsd-unconfirmed"})
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


def counts_for_card(drug: DrugFact) -> bool:
    """A benzodiazepine the card is about: systemic, not procedural and not exempt by its own
    reason (issue #8 point 2; ``DrugFact.exemption``)."""
    return drug.drug_class == "benzodiazepine" and drug.systemic_non_procedural and drug.exemption is None


def continued_by(order: DrugFact, facts: ClinicalFacts) -> list[DrugFact]:
    """The current record orders of the same benzodiazepine at the same or a higher daily dose
    that a draft continues or steps down (both doses known), else []."""
    if order.daily_dose_mg is None:
        return []
    return [d for d in facts.current("benzodiazepine") if counts_for_card(d) and d.ingredient == order.ingredient
            and d.reference != order.reference  # the order itself, when the record returns it too
            and d.daily_dose_mg is not None and d.daily_dose_mg >= order.daily_dose_mg]


def is_taper(order: DrugFact, facts: ClinicalFacts) -> bool:
    """A taper or renewal (issue #8 point 1): it continues or steps down a benzodiazepine the
    patient already takes, or its own dosage instructions step down. Removing it with one click
    would mean abrupt withdrawal."""
    return order.steps_down or bool(continued_by(order, facts))


def _indications(facts: ClinicalFacts) -> tuple:
    """Active alcohol withdrawal / seizure disorder elsewhere in the record: named, no exemption."""
    return tuple(facts.alcohol_withdrawal + facts.seizure_disorder)


def _condition_names(conditions) -> str:
    return "; ".join(dict.fromkeys(c.text or c.code.display or c.code.code or c.kind for c in conditions))


def benzodiazepine_avoid(hook: str, facts: ClinicalFacts) -> list[Finding]:
    ptsd = _benzodiazepine_context(facts)
    if ptsd is None:
        return []
    conditions, order_indicator, flags = ptsd
    # The boxed warning's first item: concomitant use with opioids (issue #8 point 8).
    opioids = facts.current("opioid") + [d for d in orders_to_check(hook, facts) if d.drug_class == "opioid"]
    extra_values = {"opioids": names(opioids)} if opioids else {}
    if opioids:
        flags = flags | {"opioid"}
    indications = _indications(facts)
    if indications:
        flags = flags | {"indication-elsewhere"}
        extra_values["indications"] = _condition_names(indications)
    if "ptsd-unconfirmed" in flags:
        extra_values["ptsd_verification"] = ", ".join(dict.fromkeys(c.verification_status or "not confirmed"
                                                                     for c in conditions))
    if hook == PATIENT_VIEW:
        current = [d for d in facts.current("benzodiazepine") if counts_for_card(d)]
        if not current:
            return []
        return [Finding(BENZODIAZEPINE, hook, "warning", conditions=conditions + indications,
                        drugs=tuple(current + opioids), values={"drugs": names(current), **extra_values},
                        flags=flags)]
    offending = [order for order in orders_to_check(hook, facts) if counts_for_card(order)]
    if not offending:
        return []
    tapers = [o for o in offending if is_taper(o, facts)]
    new = [o for o in offending if o not in tapers]
    continued = list(dict.fromkeys(d for o in tapers for d in continued_by(o, facts)))
    # The summary names what to remove: the new orders only, never a taper beside them.
    values = {"drug": names(new or offending), **extra_values}
    if new:
        values["orders"] = "; ".join(f"{o.ingredient}, {daily_dose(o)}" for o in new)
    if tapers:
        flags = flags | {"taper"} | (frozenset() if new else {"taper-only"})
        if not continued:  # tapers by their own step-down only: nothing current on record
            flags = flags | {"nothing-current"}
        values["taper_orders"] = "; ".join(f"{o.ingredient}, {daily_dose(o)}" for o in tapers)
        values["taper_drugs"] = names(tapers)
    # A taper alone: a warning that supports it, no removal. Taper and new orders: one card (the
    # new ones' indicator), removals only for the new ones (issue #8 points 1 and 16).
    indicator = "warning" if not new else order_indicator
    return [Finding(BENZODIAZEPINE, hook, indicator, conditions=conditions + indications,
                    drugs=tuple(offending + continued + opioids), values=values,
                    target_order=(new or offending)[0].reference, flags=flags,
                    orders=tuple((o.reference, _order_values(o)) for o in new if o.reference))]


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
                d.ingredient != order.ingredient for d in facts.antidepressants_on_record()):
            flags.add("on-other-antidepressant")
        if direction == "above" and not any(d.ingredient == order.ingredient and d.is_current for d in facts.drugs):
            flags.add("not-on-drug")  # a replacement at the top of the range would start a new drug there
        findings.append(Finding(DOSE, hook, "warning", conditions=tuple(facts.ptsd), drugs=(order,),
                                values=values, flags=frozenset(flags), target_order=order.reference))
    return findings


SAFETY_RULES = (benzodiazepine_avoid, order_not_checked, mdma_investigational, dose_out_of_range)
