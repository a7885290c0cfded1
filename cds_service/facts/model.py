"""Clinical facts: what the guideline rules know about a patient.

Contract between the clinical-facts stage (``cds_service.facts.extract_facts``) and the guideline
rules (``cds_service.rules``). The rules read only these objects, never raw FHIR. Every fact keeps
enough provenance (resource reference, code, dates, status) for a card to say why it fired.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

import msgspec
from datetime import date
from typing import Literal

DrugClass = Literal["benzodiazepine", "ssri", "snri", "maoi", "tca", "other-antidepressant", "prazosin", "mdma",
                    "opioid"]
# Ingredient names are lower-case generic names: "sertraline", "paroxetine", "fluoxetine",
# "venlafaxine", "prazosin", "midomafetamine", "lorazepam", "diazepam", "alprazolam", ...
# Every antidepressant class (issue #8 point 3; CODES-2 §5): while one is current no card drafts another.
ANTIDEPRESSANT_CLASSES = frozenset({"ssri", "snri", "maoi", "tca", "other-antidepressant"})
# The first-line agents (VA/DoD 2023 strong for, GUIDELINE-FACTS §1): only their courses are
# first-line trials; fluoxetine and every other antidepressant count as tried, not as failed trials.
FIRST_LINE_AGENTS = ("sertraline", "paroxetine", "venlafaxine")
TherapyKind = Literal["prolonged-exposure", "cognitive-processing-therapy", "emdr", "image-rehearsal-therapy"]
# Image rehearsal therapy treats nightmares: never a trauma-focused PTSD session.
NIGHTMARE_THERAPY = "image-rehearsal-therapy"
MatchedBy = Literal["valueset", "ingredient", "name", "code-map"]

# MedicationRequest statuses (FHIR R4) that mean the drug was never taken: "cancelled" = withdrawn
# before any administration, "entered-in-error", "draft" = not yet ordered. Every other status
# (active, on-hold, completed, stopped, unknown) is a course of the drug that counts for the rules.
NEVER_TAKEN_STATUSES = frozenset({"cancelled", "entered-in-error", "draft"})
# Statuses of an order being placed: draft, or active/on-hold when order-sign fires again for a
# revised order (hook library order-sign 1.1.0). A stopped, cancelled, completed or
# entered-in-error order in draftOrders is a discontinuation or a correction, not a new
# prescription: warning about it (and suggesting to delete it) would undo what the clinician did.
ORDERS_BEING_PLACED = frozenset({"draft", "active", "on-hold"})


class Code(msgspec.Struct, frozen=True):
    """A Coding as found in the record (system URI, code, display)."""

    system: str | None
    code: str | None
    display: str | None = None

    def label(self) -> str:
        """Short human form, e.g. ``SNOMED CT 47505003 "Posttraumatic stress disorder"``; a condition
        recognised by its text alone: ``recorded as text "PTSD, chronic"``."""
        from cds_service.facts.terminology import system_name  # local import: avoid cycle

        if self.system is None and self.code is None:
            return f'recorded as text "{self.display}"' if self.display else "no code"
        text = f"{system_name(self.system)} {self.code}"
        return f'{text} "{self.display}"' if self.display else text


class ConditionFact(msgspec.Struct, frozen=True):
    """A Condition the rules care about (PTSD or nightmares) that counts as active."""

    kind: Literal["ptsd", "nightmares", "acute-stress", "pregnancy", "alcohol-withdrawal", "seizure"]
    reference: str | None  # "Condition/123" (None when the resource has no id)
    code: Code  # the coding that matched
    text: str | None  # Condition.code.text or the coding display
    clinical_status: str | None  # as recorded; None when absent
    verification_status: str | None
    onset: date | None
    recorded: date | None
    # False when a status element was recorded but could not be read: whether the condition is
    # active is unknown (safety cards treat it as possibly active, guideline steps as absent).
    status_known: bool = True
    # The latest day the recorded onset can mean: a partial onset ("2026-03") reads as its last day
    # (fail-safe for the pregnancy window); equal to ``onset`` for a full date.
    onset_latest: date | None = None
    # False when verificationStatus is provisional, differential or unconfirmed (issue #8 point 7).
    confirmed: bool = True
    # True when recognised by its text alone (no coding matched): ``code`` then has no system/code.
    by_text: bool = False


class DrugFact(msgspec.Struct, frozen=True):
    """One MedicationRequest classified into a drug class of interest."""

    reference: str | None  # "MedicationRequest/123"
    drug_class: DrugClass
    ingredient: str  # lower-case generic name
    label: str  # what the record calls it ("Ativan 1 mg tablet", "sertraline 50 MG Oral Tablet")
    matched_by: MatchedBy
    code: Code | None  # the coding that matched (None when matched by name)
    status: str | None  # MedicationRequest.status
    authored_on: date | None
    period_start: date | None  # dispenseRequest.validityPeriod.start
    period_end: date | None  # dispenseRequest.validityPeriod.end
    route: str | None  # route text/display/code as recorded
    systemic_non_procedural: bool  # False for injection / rectal / nasal routes (procedural, seizure rescue)
    daily_dose_mg: float | None  # None when it cannot be worked out
    dose_text: str | None  # human form, e.g. "50 mg/day (50 mg once daily)"
    is_current: bool  # status active/on-hold and period covers today or authored within 365 days
    is_draft_order: bool  # came from context.draftOrders
    is_selected: bool  # order-select: named in context.selections; order-sign: every draft order
    trial_start: date | None  # authoredOn or validity start
    trial_end: date | None  # validity end, or today while current
    # Intent: "order" etc.; kept for display only
    intent: str | None = None
    # The low end when the dose is a range ("1 to 4 tablets"); daily_dose_mg is then the high end.
    daily_dose_low_mg: float | None = None
    # Days one dispense covers: dispenseRequest.expectedSupplyDuration, else dispenseRequest.quantity
    # (tablets/capsules, or mg) divided by the daily use; None when neither reads.
    supply_days: float | None = None
    # MedicationRequest.statusReason as recorded (text, coding displays and codes, joined), or None.
    status_reason: str | None = None
    # Benzodiazepines only (issue #8 points 1 and 2; see facts.medications):
    # why no benzodiazepine card: "rescue-formulation", "injected", "midazolam-single-dose",
    # "midazolam-pre-procedure", "reason-alcohol-withdrawal", "reason-seizure"; None = none.
    exemption: str | None = None
    # Condition kinds named by the order's own reasonCode, and its reasonReference targets
    # ("Condition/<id>"; resolved against the record's conditions by extract_facts).
    reason_kinds: frozenset[str] = frozenset()
    reason_references: tuple[str, ...] = ()
    # Its own dosage instructions step down over sequence or time (a taper written in one order).
    steps_down: bool = False

    @property
    def was_taken(self) -> bool:
        """A record order that counts as a course of the drug (see NEVER_TAKEN_STATUSES)."""
        return not self.is_draft_order and self.status not in NEVER_TAKEN_STATUSES

    @property
    def trial_weeks(self) -> float | None:
        if self.trial_start is None or self.trial_end is None:
            return None
        return max(0.0, (self.trial_end - self.trial_start).days / 7.0)


class TherapySession(msgspec.Struct, frozen=True):
    """One completed trauma-focused psychotherapy Procedure (one session)."""

    reference: str | None  # "Procedure/123"
    therapy: TherapyKind
    label: str  # code display or text as recorded
    matched_by: MatchedBy
    code: Code | None
    performed: date | None  # performedDateTime or performedPeriod.start


class TherapyCourse(msgspec.Struct, frozen=True):
    """The sessions of one trauma-focused therapy, measured against its protocol length.

    Service rule (issue #8 point 11, on GUIDELINE-FACTS §10): complete at ``needed`` distinct
    sessions (PE 8, CPT 12, EMDR 6; data in ``psychotherapy.json``); not complete and a session in
    the last ``under_way_days`` days: under way; otherwise it stopped."""

    therapy: TherapyKind
    sessions: int  # distinct sessions (same day counted once)
    needed: int  # sessions that complete a course of this therapy
    last: date | None  # the latest session's date (None when no session is dated)
    under_way: bool  # not complete and a session within the under-way window

    @property
    def complete(self) -> bool:
        return self.sessions >= self.needed


class DeclinedTherapy(msgspec.Struct, frozen=True):
    """A psychotherapy Procedure not done because the patient declined it (status not-done and a
    refusal statusReason, CODES-2 §8b/§8c)."""

    reference: str | None  # "Procedure/123"
    label: str  # what was declined, as recorded
    reason: str  # the statusReason as recorded (display, text or code)
    reason_code: Code | None  # the refusal coding that matched (None when matched by text)
    recorded: date | None  # performed[x] or the extension-free date we could read


TrialVerdict = Literal["adequate", "failed", "not-tolerated", "under-dosed", "continue-and-reassess",
                       "under-way", "stopped-early", "no-trial"]


class SsriTrial(msgspec.Struct, frozen=True):
    """Assessment of one first-line agent (sertraline, paroxetine, venlafaxine) as a treatment
    trial: its latest course (consecutive orders of the drug; ``trials.py``). The name is kept for
    the card renderer; the trial may be venlafaxine.

    ``drug`` is the course's latest order, ``orders`` all its orders in time order.
    """

    drug: DrugFact
    adequate: bool  # taken at or above the minimum dose for >= 8 weeks (issue #8 point 10)
    failed: bool  # adequate and PTSD still active, or not tolerated (a failed first-line trial)
    # Human explanation, e.g. "sertraline 100 mg/day, 12 weeks at 50 mg/day or more: adequate"
    reason: str = ""
    orders: tuple[DrugFact, ...] = ()
    start: date | None = None  # first day taken
    end: date | None = None  # last day taken (today while current)
    verdict: TrialVerdict = "no-trial"
    current: bool = False  # an order of the course is current
    weeks_at_dose: float = 0.0  # longest stretch at or above the minimum effective dose, in weeks


class UncheckedOrder(msgspec.Struct, frozen=True):
    """A draft order being placed whose drug cannot be read at all (so it could be a benzodiazepine)."""

    reference: str | None  # "MedicationRequest/<id>"
    why: str  # what could not be read, e.g. "its drug has no readable code or name" (no patient data)


@dataclass
class ClinicalFacts:
    """Everything the rules know, for one hook call."""

    today: date
    ptsd: list[ConditionFact] = field(default_factory=list)  # active PTSD conditions only
    # PTSD conditions whose clinical or verification status could not be read (status unknown).
    ptsd_unknown_status: list[ConditionFact] = field(default_factory=list)
    nightmares: list[ConditionFact] = field(default_factory=list)  # active nightmare conditions only
    # Active acute stress disorder / reaction (not PTSD: no step cards; the benzodiazepine card).
    acute_stress: list[ConditionFact] = field(default_factory=list)
    # Active PTSD recorded as provisional, differential or unconfirmed (issue #8 point 7): the
    # safety cards as a warning, no guideline-step cards (like ``ptsd_unknown_status``).
    ptsd_unconfirmed: list[ConditionFact] = field(default_factory=list)
    # Active alcohol withdrawal / seizure disorder (CODES-2 §1, §2): a benzodiazepine order whose own
    # reason they are gets no card; otherwise the benzodiazepine card names them.
    alcohol_withdrawal: list[ConditionFact] = field(default_factory=list)
    seizure_disorder: list[ConditionFact] = field(default_factory=list)
    drugs: list[DrugFact] = field(default_factory=list)  # classified MedicationRequests from the record
    draft_drugs: list[DrugFact] = field(default_factory=list)  # classified draft orders (order hooks)
    # Draft orders the hook checks whose medication cannot be read at all (order hooks).
    unchecked_orders: list[UncheckedOrder] = field(default_factory=list)
    sessions: list[TherapySession] = field(default_factory=list)  # completed trauma-focused sessions
    # Completed image rehearsal therapy sessions (nightmares; not counted in ``sessions``).
    irt_sessions: list[TherapySession] = field(default_factory=list)
    # One course per trauma-focused therapy with sessions, latest session first (issue #8 point 11);
    # worked out from ``sessions`` and ``today`` when not given (facts built by hand in tests).
    courses: list[TherapyCourse] | None = None
    # Psychotherapy the patient declined (Procedure not-done with a refusal reason), in record order.
    declined_therapy: list[DeclinedTherapy] = field(default_factory=list)
    ssri_trials: list[SsriTrial] = field(default_factory=list)  # first-line agent trials (see SsriTrial)
    # Active pregnancy Conditions (CODES-2 §3); whether one is *current* (onset window) is a rule.
    pregnancy: list[ConditionFact] = field(default_factory=list)
    # Resources that could not be read (malformed); counted per resourceType, no patient data.
    skipped: dict[str, int] = field(default_factory=dict)
    # From the Patient resource (None when absent or unreadable: the adult rules apply).
    age_years: int | None = None
    sex: str | None = None  # Patient.gender as recorded ("male", "female", "other", "unknown")
    deceased: bool = False

    def __post_init__(self) -> None:
        if self.courses is None:
            from cds_service.facts.psychotherapy import assess_courses  # local import: avoid cycle

            self.courses = assess_courses(self.sessions, self.today)

    # --- derived facts the rules use -------------------------------------------------------
    def under(self, years: int) -> bool:
        """Known to be younger than ``years`` (no birth date: not)."""
        return self.age_years is not None and self.age_years < years

    @property
    def has_active_ptsd(self) -> bool:
        return bool(self.ptsd)

    @property
    def has_active_nightmares(self) -> bool:
        return bool(self.nightmares)

    @property
    def session_count(self) -> int:
        return len(self.sessions)

    @property
    def adequate_psychotherapy(self) -> bool:
        """A course of one trauma-focused therapy is complete (service rule: 12 CPT, 8 PE or
        6 EMDR sessions; ``TherapyCourse``). Replaces the seed's 9 sessions of any mix."""
        return any(c.complete for c in self.courses or ())

    @property
    def course(self) -> TherapyCourse | None:
        """The course the step-1 card talks about: a complete one, else the latest (the one a
        session was last recorded for), else None (no session)."""
        courses = self.courses or []
        return next((c for c in courses if c.complete), courses[0] if courses else None)

    @property
    def course_under_way(self) -> bool:
        return any(c.under_way for c in self.courses or ())

    @property
    def psychotherapy_declined(self) -> bool:
        """The patient declined psychotherapy and has not started (or resumed) it since: no course
        is complete or under way and no session is dated after the latest refusal (an undated
        refusal counts while no course is under way). GUIDELINE-FACTS §0 row 4, §12.4: the step
        is then medication."""
        if not self.declined_therapy or self.adequate_psychotherapy or self.course_under_way:
            return False
        dated = [d.recorded for d in self.declined_therapy if d.recorded]
        if len(dated) < len(self.declined_therapy):
            return True
        last_session = max((s.performed for s in self.sessions if s.performed), default=None)
        return last_session is None or max(dated) >= last_session

    @property
    def adequate_ssri_trial(self) -> bool:
        """An adequate first-line trial is recorded (name kept from issue #3)."""
        return any(t.adequate for t in self.ssri_trials)

    @property
    def failed_ssri(self) -> bool:
        """A first-line trial failed (name kept from issue #3)."""
        return any(t.failed for t in self.ssri_trials)

    @property
    def failed_first_line(self) -> list[str]:
        """Distinct first-line agents whose trial failed (adequate without remission, or not tolerated)."""
        return list(dict.fromkeys(t.drug.ingredient for t in self.ssri_trials if t.failed))

    def antidepressants_on_record(self) -> list[DrugFact]:
        """Current antidepressants and those still recorded as active or on hold after their
        validity ended (a renewal pending: the prescriber sees them on the medication list). What
        blocks an antidepressant draft (service rule, issue #8 point 3): the safe reading."""
        return [d for d in self.drugs if d.drug_class in ANTIDEPRESSANT_CLASSES
                and (d.is_current or d.status in ("active", "on-hold"))]

    def ever_taken(self, ingredient: str) -> list[DrugFact]:
        """Record MedicationRequests (not draft orders) of one ingredient, any status."""
        return [d for d in self.drugs if d.ingredient == ingredient]

    def current(self, drug_class: str) -> list[DrugFact]:
        return [d for d in self.drugs if d.drug_class == drug_class and d.is_current]

    @property
    def combined(self) -> bool:
        """A trauma-focused session took place while a first-line agent (sertraline, paroxetine,
        venlafaxine) was being taken.

        Sorted and merged, never pairwise: the drug periods are merged into disjoint intervals
        (one sort), then each session date is looked up with a binary search — O((n + m) log n)."""
        periods = sorted((d.trial_start, d.trial_end) for d in self.drugs
                         if d.was_taken and d.ingredient in FIRST_LINE_AGENTS
                         and d.trial_start and d.trial_end and d.trial_start <= d.trial_end)
        starts: list[date] = []
        ends: list[date] = []
        for start, end in periods:
            if ends and start <= ends[-1]:
                ends[-1] = max(ends[-1], end)
            else:
                starts.append(start)
                ends.append(end)
        for s in self.sessions:
            if s.performed is None:
                continue
            i = bisect_right(starts, s.performed) - 1
            if i >= 0 and s.performed <= ends[i]:
                return True
        return False
