"""The clinical engine: patient record -> clinical facts -> guideline rules -> CDS Hooks cards.

``Engine(settings)`` loads the card library (``settings.cards_dir``) and the terminology (with
``settings.site_code_map``) once; ``evaluate(hook, record, today)`` is then pure computation. The
site code map's ``outgoing`` section adds the site's local codes to suggested resources
(``cds_service.codesystems.map_outgoing``).
Cards come out in a fixed order: safety cards first, then by indicator (critical, warning, info),
then in the rules' topic order, then by the order they concern.

Snooze (service rule, issue #8 point 18): ``run(..., snoozed=)`` leaves out, on patient-view only,
the card kinds the caller says are snoozed for this patient — only kinds that offer a snoozable
override reason (``snoozable_topics``), never a safety card. The engine does not know where
snoozes are kept: ``snoozed`` is a function returning topic codes, asked only when a snoozable
card would be shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, Iterable

from cds_service.codesystems import load_outgoing_map, map_outgoing
from cds_service.facts import extract_facts, warm_up
from cds_service.facts.terminology import Terminology
from cds_service.patient_data.record import PatientRecord
from cds_service.rendering import CardLibrary
from cds_service.card_content import NEVER_SNOOZED
from cds_service.rules import SAFETY_TOPICS, TOPICS, Finding, evaluate_rules
from cds_service.rules.finding import PATIENT_VIEW

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
    snoozed: list[str] = field(default_factory=list)  # card kinds left out: snoozed for this patient


class Engine:
    def __init__(self, settings):
        self.settings = settings
        self.cards = CardLibrary.load(settings.cards_dir, topics=TOPICS)
        self.terminology = Terminology.load(settings.site_code_map)
        self.cards.snooze_days = getattr(settings, "snooze_days", None)  # named on snoozable reasons
        # card kinds a feedback "overridden" with a snoozable reason may snooze (never a safety card)
        self.snoozable_topics = frozenset(t for t, card in self.cards.cards.items()
                                          if card.snoozable_reasons and t not in NEVER_SNOOZED)
        self.snoozable_reasons = frozenset(code for t in self.snoozable_topics
                                           for code in self.cards.cards[t].snoozable_reasons)
        self.outgoing_codes = load_outgoing_map(settings.site_code_map)
        warm_up()  # build the fhir.resources validators now, not on the first hook call

    def findings(self, hook: str, record: PatientRecord, today: date) -> list[Finding]:
        return self.run_rules(hook, record, today)[0]

    def run_rules(self, hook: str, record: PatientRecord, today: date) -> tuple[list[Finding], dict[str, int]]:
        facts = extract_facts(record, today=today, hook=hook, terminology=self.terminology)
        return sorted(evaluate_rules(hook, facts), key=card_order), facts.skipped

    def snoozes(self, topic: str, reason_code: str | None) -> bool:
        """Whether dismissing a ``topic`` card with this override reason snoozes it (service rule)."""
        card = self.cards.cards.get(topic)
        return (topic in self.snoozable_topics and card is not None and reason_code is not None
                and reason_code in card.snoozable_reasons)

    def run(self, hook: str, record: PatientRecord, today: date, catalogue_base: str | None = None,
            snoozed: Callable[[], Iterable[str]] | None = None) -> Outcome:
        """``catalogue_base``: the service's absolute base URL (PTSD_CDS_PUBLIC_URL, else the URL
        called); each card then links its kind's page in the card catalogue (``/cards/<code>``).
        ``snoozed``: on patient-view, the card kinds snoozed for this patient (asked at most once,
        only when a snoozable card would be shown)."""
        findings, skipped = self.run_rules(hook, record, today)
        left_out: list[str] = []
        if snoozed is not None and hook == PATIENT_VIEW and any(f.topic in self.snoozable_topics for f in findings):
            quiet = set(snoozed()) & self.snoozable_topics
            left_out = [f.topic for f in findings if f.topic in quiet]
            findings = [f for f in findings if f.topic not in quiet]
        cards = [self.cards.render(f, patient_id=record.patient_id, catalogue_base=catalogue_base)
                 for f in findings]
        map_outgoing(cards, self.outgoing_codes)
        return Outcome(cards, skipped, left_out)

    def evaluate(self, hook: str, record: PatientRecord, today: date,
                 catalogue_base: str | None = None) -> list[dict[str, Any]]:
        return self.run(hook, record, today, catalogue_base).cards
