"""Active PTSD and nightmare conditions.

A Condition is **PTSD** when one of its codings is a PTSD code of ``conditions.json`` (SNOMED CT
47505003 and the descendants listed in CODES.md; ICD-10-CM F43.1/F43.10/F43.11/F43.12, also
without the dot; ICD-11 6B40/6B41), matched on the canonical system URI. It is **nightmares** when
a coding is 111487009, 428687006 or F51.5. 428687006 ("Nightmares associated with chronic PTSD")
is both, so such a Condition yields one PTSD fact *and* one nightmare fact. A current-pregnancy
code (CODES-2 §3, VSAC "Pregnancy" and "Pregnant State") is **pregnancy** (kept with its onset; the
rules decide whether it is current). Acute stress disorder
(67195008) and acute stress reaction (F43.0) are **acute stress**, never PTSD (no step cards; the
benzodiazepine card as a warning); the other listed stress disorders match nothing. **Alcohol
withdrawal** (CODES-2 §1) and **seizure disorder** (CODES-2 §2, VSAC "Seizure Disorder" and
"Epilepsy" without dissociative convulsions) are read too: a benzodiazepine order whose own reason
is such a Condition gets no card; elsewhere in the record the card names them.

**Text** (service rule): a Condition none of whose codings matches any kind is PTSD when its
``code.text`` or a coding display names post-traumatic stress disorder ("PTSD, chronic,
combat-related") and no negation cancels it ("rule out PTSD", "r/o", "PTSD screen negative", "no
PTSD", "history of PTSD, ruled out", "denies"; ``condition-text.json``). Texts are cut to 512
characters and matched once per distinct text (memoised); the fact's code then has no system and
no code, only the text.

It counts (is **active**) when ``clinicalStatus`` is absent, active, recurrence or relapse, and
``verificationStatus`` is absent or anything but refuted / entered-in-error (so unconfirmed,
provisional and differential diagnoses count). Inactive, remission and resolved do not. A
provisional, differential or unconfirmed diagnosis is **not confirmed** (``confirmed`` False): the
safety cards treat such PTSD as a warning, the guideline steps as absent (service rule, issue #8
point 7 — like a PTSD of unknown status).

A status element that is present but cannot be read (a string where a CodeableConcept belongs, no
readable code) is **unknown**, never guessed: such a PTSD Condition is reported separately
(``unknown_status``) so that safety cards can treat it in the safe direction while guideline-step
cards treat it as absent. Only the elements listed in ``views.ConditionView`` are read: a
malformed unrelated element (a bad onset date, an empty ``code.text``) is left out, not fatal.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Iterable

from cds_service.facts.fhir_read import (
    Malformed, Resource, SkipCounter, concept_text, concept_texts, first_code, raw_concept, read_each,
    read_view, reference_of, to_date, view_concept, view_or_json,
)
from cds_service.patient_data.record import as_json
from cds_service.facts.model import Code, ConditionFact
from cds_service.facts.terminology import Terminology
from cds_service.facts.views import Concept, ConditionView

ACTIVE_CLINICAL = frozenset({"active", "recurrence", "relapse"})
EXCLUDED_VERIFICATION = frozenset({"refuted", "entered-in-error"})
NOT_CONFIRMED = frozenset({"provisional", "differential", "unconfirmed"})
KINDS = ("ptsd", "nightmares", "acute-stress", "pregnancy", "alcohol-withdrawal", "seizure")
UNKNOWN = "unknown"


def _status_code(concept: Concept | None) -> str | None:
    code = first_code(concept)
    return code.strip().lower() if code else None  # "Active" is active too


def abated(condition: Resource) -> bool:
    """Any abatement[x] is recorded (abatementBoolean false says it has not abated)."""
    return any(key.startswith("abatement") and value not in (None, False)
               for key, value in condition.items())


def activity(view: ConditionView, raw: Any) -> str | None:
    """"active", None (not active) or "unknown" (a status element present but unreadable).

    (FHIR R4 invariant con-4: an abated Condition's clinical status is inactive, resolved or
    remission, so an abatement with no status means it is not active.)"""
    clinical = _status_code(view.clinicalStatus)
    verification = _status_code(view.verificationStatus)
    if verification in EXCLUDED_VERIFICATION:
        return None
    raw = as_json(raw) if clinical is None or verification is None else raw  # parsed only if needed
    if clinical is None and raw.get("clinicalStatus") is not None:
        return UNKNOWN  # recorded, but not in a readable form
    if clinical is not None and clinical not in ACTIVE_CLINICAL:
        return None
    if clinical is None and abated(raw):
        return None
    if verification is None and raw.get("verificationStatus") is not None:
        return UNKNOWN
    return "active"


def latest_date(text: str | None) -> date | None:
    """The last day a partial FHIR date can mean ("2026-03" -> 31 Mar, "2026" -> 31 Dec); a full
    date is itself (fail-safe reading of a pregnancy onset: the most recent it can be)."""
    start = to_date(text)
    if start is None or text is None:
        return None
    if len(text) >= 10:
        return start
    if len(text) >= 7:
        nxt = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
        return nxt - timedelta(days=1)
    return date(start.year, 12, 31)


def _kinds(pairs: Iterable[tuple[str | None, str | None, str | None]], term: Terminology) -> dict[str, Code]:
    """First matching coding per kind ("ptsd", "nightmares")."""
    found: dict[str, Code] = {}
    for system, code, display in pairs:
        for kind in term.condition_kinds(system, code):
            found.setdefault(kind, Code(system, code, display))
    return found


def _text_kind(texts: Iterable[str], term: Terminology) -> tuple[str, str] | None:
    """(kind, the text) of the first text that names a condition kind (PTSD), else None."""
    for text in texts:
        kind = term.condition_kind_by_text(text)
        if kind:
            return kind, text
    return None


def read_condition(condition: Any, term: Terminology, skipped: SkipCounter) -> list[ConditionFact]:
    """Facts for one Condition (empty when it does not match or is not active). Raises Malformed."""
    view, condition = view_or_json(condition, ConditionView)
    if view is not None:  # kept as text and well formed: one typed decode
        (codes, texts), complete = view_concept(view.code), True
    else:
        codes, texts = raw_concept(condition.get("code"))
    by_text = None
    if not _kinds(codes, term):
        by_text = _text_kind(texts, term)
        if by_text is None:
            return []  # not a candidate: nothing else is read
    if view is None:
        view, complete = read_view(condition, ConditionView)
    if not complete:
        skipped.skip("Condition (partly read)")
    if by_text is None:
        codings = view.code.coding if view.code else ()
        matches = _kinds(((c.system, c.code, c.display) for c in codings), term)
        if not matches:
            raise Malformed("matching coding unreadable")
    else:
        found = _text_kind(concept_texts(view.code), term)
        if found is None:
            raise Malformed("matching text unreadable")
        matches = {found[0]: Code(None, None, found[1])}
    state = activity(view, condition)
    if state is None:
        return []
    onset_text = view.onsetDateTime or (view.onsetPeriod.start if view.onsetPeriod else None)
    onset = to_date(onset_text)
    return [
        ConditionFact(
            kind=kind,  # type: ignore[arg-type]
            reference=reference_of("Condition", view.id),
            code=code,
            text=concept_text(view.code),
            clinical_status=first_code(view.clinicalStatus),
            verification_status=first_code(view.verificationStatus),
            onset=onset,
            recorded=to_date(view.recordedDate),
            status_known=state != UNKNOWN,
            onset_latest=latest_date(onset_text) if onset else None,
            confirmed=_status_code(view.verificationStatus) not in NOT_CONFIRMED,
            by_text=by_text is not None,
        )
        for kind, code in sorted(matches.items())
    ]


def extract_conditions(
    conditions: Iterable[Resource], term: Terminology, skipped: SkipCounter
) -> dict[str, list[ConditionFact]]:
    """Facts per kind (``KINDS``) from the record's Conditions: active ones, and those whose status
    is unknown (``status_known`` False)."""
    found: dict[str, list[ConditionFact]] = {kind: [] for kind in KINDS}
    for facts in read_each(conditions, lambda c: read_condition(c, term, skipped), skipped, "Condition"):
        for f in facts:
            found[f.kind].append(f)
    return found
