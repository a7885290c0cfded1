"""The clinical engine: patient record -> clinical facts -> guideline rules -> CDS Hooks cards.

``Engine(settings)`` loads the card library (``settings.cards_dir``) and the terminology (with
``settings.site_code_map``) once; ``evaluate(hook, record, today)`` is then pure computation. The
site code map's ``outgoing`` section adds the site's local codes to suggested resources
(``cds_service.codesystems.map_outgoing``).
Cards come out in a fixed order: safety cards first, then by indicator (critical, warning, info),
then in the rules' topic order, then by the order they concern.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cds_service.codesystems import load_outgoing_map, map_outgoing
from cds_service.facts import extract_facts, warm_up
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


@dataclass
class Outcome:
    """The cards of one evaluation, and how many resources could not be read (no patient data)."""

    cards: list[dict[str, Any]]
    skipped: dict[str, int] = field(default_factory=dict)


class Engine:
    def __init__(self, settings):
        self.settings = settings
        self.cards = CardLibrary.load(settings.cards_dir, topics=TOPICS)
        self.terminology = Terminology.load(settings.site_code_map)
        self.outgoing_codes = load_outgoing_map(settings.site_code_map)
        warm_up()  # build the fhir.resources validators now, not on the first hook call

    def findings(self, hook: str, record: PatientRecord, today: date) -> list[Finding]:
        return self.run_rules(hook, record, today)[0]

    def run_rules(self, hook: str, record: PatientRecord, today: date) -> tuple[list[Finding], dict[str, int]]:
        facts = extract_facts(record, today=today, hook=hook, terminology=self.terminology)
        return sorted(evaluate_rules(hook, facts), key=card_order), facts.skipped

    def run(self, hook: str, record: PatientRecord, today: date, catalogue_base: str | None = None) -> Outcome:
        """``catalogue_base``: the service's absolute base URL (PTSD_CDS_PUBLIC_URL, else the URL
        called); each card then links its kind's page in the card catalogue (``/cards/<code>``)."""
        findings, skipped = self.run_rules(hook, record, today)
        cards = [self.cards.render(f, patient_id=record.patient_id, catalogue_base=catalogue_base)
                 for f in findings]
        map_outgoing(cards, self.outgoing_codes)
        return Outcome(cards, skipped)

    def evaluate(self, hook: str, record: PatientRecord, today: date,
                 catalogue_base: str | None = None) -> list[dict[str, Any]]:
        return self.run(hook, record, today, catalogue_base).cards
