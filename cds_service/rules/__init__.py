"""Guideline rules: ``evaluate_rules(hook, facts) -> list[Finding]``.

Pure functions of ``ClinicalFacts`` (no FHIR, no I/O, no card wording). One small function per
recommendation: ``safety.py`` (benzodiazepines, MDMA, dose ranges) and ``next_step.py`` (the
treatment ladder and nightmares, with the ordering of the SSRI steps explained there). The step
order and the dose ranges are data in ``guideline.toml``.

* patient-view: safety warnings, then — only for active PTSD — exactly one next-step card plus,
  independently, the nightmare card.
* order-select / order-sign: safety cards only, one per offending draft order.
"""

from __future__ import annotations

from cds_service.facts.model import ClinicalFacts
from cds_service.rules import next_step, safety
from cds_service.rules.finding import HOOKS, PATIENT_VIEW, Finding
from cds_service.rules.knowledge import GUIDELINE

__all__ = ["evaluate_rules", "Finding", "TOPICS", "SAFETY_TOPICS", "HOOKS"]

SAFETY_TOPICS: tuple[str, ...] = (safety.BENZODIAZEPINE, safety.NOT_CHECKED, safety.MDMA, safety.DOSE)
# Every card kind a rule can produce, in display order: safety cards, the next-step ladder, then
# the independent steps (so the one next-step card comes before the nightmare card).
TOPICS: tuple[str, ...] = SAFETY_TOPICS + GUIDELINE.next_step_order + GUIDELINE.independent_steps


def evaluate_rules(hook: str, facts: ClinicalFacts) -> list[Finding]:
    """Every card that applies for this hook call, safety findings first."""
    if hook not in HOOKS:
        raise ValueError(f"unknown hook {hook!r}")
    if facts.deceased and GUIDELINE.no_cards_when_deceased:
        return []  # service rule: a deceased patient gets no cards
    findings = [f for rule in safety.SAFETY_RULES for f in rule(hook, facts)]
    if hook == PATIENT_VIEW:
        step = next_step.next_step(facts, hook)
        if step is not None:
            findings.append(step)
        findings.extend(next_step.independent_steps(facts, hook))
    return findings
