"""What a rule hands to the card renderer: which card fires, and the record facts behind it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

from cds_service.facts.model import ConditionFact, DrugFact, SsriTrial, TherapySession, UncheckedOrder

Indicator = Literal["info", "warning", "critical"]

PATIENT_VIEW = "patient-view"
ORDER_SELECT = "order-select"
ORDER_SIGN = "order-sign"
HOOKS = (PATIENT_VIEW, ORDER_SELECT, ORDER_SIGN)
ORDER_HOOKS = (ORDER_SELECT, ORDER_SIGN)


@dataclass(frozen=True)
class Finding:
    """One card to show: the card kind, how urgent, and the evidence from the record.

    ``values`` fills the placeholders of the card text (plain strings, prepared by the rule);
    ``flags`` switch optional paragraphs and suggestions of the card on or off. Both are declared
    in the card file, so the renderer can refuse a value or flag the card does not know.
    """

    topic: str  # the card kind = source.topic.code = cards/<topic>.toml
    hook: str
    indicator: Indicator
    # The evidence: what in the record made the rule fire (listed under "Why this card").
    conditions: tuple[ConditionFact, ...] = ()
    drugs: tuple[DrugFact, ...] = ()
    ssri_trials: tuple[SsriTrial, ...] = ()
    sessions: tuple[TherapySession, ...] = ()
    session_count: int | None = None  # set when the rule looked at psychotherapy sessions
    values: Mapping[str, str] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()
    # order hooks: the draft order the card is about ("MedicationRequest/<id>"); a delete
    # suggestion targets it. None on patient-view, or when the draft order has no id.
    target_order: str | None = None
    # Other card topics this finding refers to (MDMA card: guideline steps still open).
    open_steps: tuple[str, ...] = ()
    # What the rule looked for and did not find ("venlafaxine"): absence is evidence too.
    not_found: tuple[str, ...] = ()
    # Draft orders whose drug could not be read at all (order-not-checked).
    unchecked: tuple[UncheckedOrder, ...] = ()
    # The orders a card is about, each with the values its own suggestion is filled with
    # (reference, {"drug": ..., "daily_dose": ...}): one card per concern, one suggestion per order.
    orders: tuple[tuple[str, Mapping[str, str]], ...] = ()
