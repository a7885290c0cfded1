"""The clinical engine: patient record -> clinical facts -> guideline rules -> CDS Hooks cards.

``Engine(settings)`` loads the card library (``settings.cards_dir``) and the terminology (with
``settings.site_code_map``) once; ``evaluate(hook, record, today)`` is then pure computation.
Cards come out in a fixed order: safety cards first, then by indicator (critical, warning, info),
then in the rules' topic order, then by the order they concern.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from cds_service.facts import extract_facts
from cds_service.facts.terminology import Terminology
from cds_service.patient_data.record import PatientRecord
from cds_service.rendering import CardLibrary
from cds_service.rules import SAFETY_TOPICS, TOPICS, Finding, evaluate_rules

_SEVERITY = {"critical": 0, "warning": 1, "info": 2}


def card_order(finding: Finding) -> tuple:
    return (
        0 if finding.topic in SAFETY_TOPICS else 1,
        _SEVERITY[finding.indicator],
        TOPICS.index(finding.topic),
        finding.target_order or "",
    )


class Engine:
    def __init__(self, settings):
        self.settings = settings
        self.cards = CardLibrary.load(settings.cards_dir, topics=TOPICS)
        self.terminology = Terminology.load(settings.site_code_map)

    def findings(self, hook: str, record: PatientRecord, today: date) -> list[Finding]:
        facts = extract_facts(record, today=today, hook=hook, terminology=self.terminology)
        return sorted(evaluate_rules(hook, facts), key=card_order)

    def evaluate(self, hook: str, record: PatientRecord, today: date) -> list[dict[str, Any]]:
        return [self.cards.render(f, patient_id=record.patient_id) for f in self.findings(hook, record, today)]
