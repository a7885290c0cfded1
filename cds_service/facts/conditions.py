"""Active PTSD and nightmare conditions.

A Condition is **PTSD** when one of its codings is a PTSD code of ``conditions.json`` (SNOMED CT
47505003 and the descendants listed in CODES.md; ICD-10-CM F43.1/F43.10/F43.11/F43.12, also
without the dot; ICD-11 6B40/6B41), matched on the canonical system URI. It is **nightmares** when
a coding is 111487009, 428687006 or F51.5. 428687006 ("Nightmares associated with chronic PTSD")
is both, so such a Condition yields one PTSD fact *and* one nightmare fact. Acute stress disorder
and the other listed stress disorders are not in either list, so they never match. A Condition is
matched on codes only (a text of "PTSD" without a coding does not count).

It counts (is **active**) when ``clinicalStatus`` is absent, active, recurrence or relapse, and
``verificationStatus`` is absent or anything but refuted / entered-in-error (so unconfirmed,
provisional and differential diagnoses count). Inactive, remission and resolved do not.
"""

from __future__ import annotations

from typing import Iterable

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.period import Period

from cds_service.facts.fhir_read import (
    Malformed, Resource, SkipCounter, codings, concept_text, first_code, parse_date, reference_of,
    read_each, validated_view,
)
from cds_service.facts.model import Code, ConditionFact
from cds_service.facts.terminology import Terminology

ACTIVE_CLINICAL = frozenset({"active", "recurrence", "relapse"})
EXCLUDED_VERIFICATION = frozenset({"refuted", "entered-in-error"})


def _code(concept) -> str | None:
    code = first_code(concept)
    return code.strip().lower() if isinstance(code, str) else None  # "Active" is active too


def abated(condition: Resource) -> bool:
    """Any abatement[x] is recorded (abatementBoolean false says it has not abated)."""
    return any(key.startswith("abatement") and value not in (None, False)
               for key, value in condition.items())


def is_active(condition: Resource, *, abatement: bool | None = None) -> bool:
    """Clinical status active/recurrence/relapse, or absent without an abatement; and not
    refuted/entered-in-error. (FHIR R4 invariant con-4: an abated Condition's clinical status is
    inactive, resolved or remission, so an abatement with no status means it is not active.)"""
    clinical = _code(condition.get("clinicalStatus"))
    verification = _code(condition.get("verificationStatus"))
    if verification in EXCLUDED_VERIFICATION:
        return False
    if clinical is None:
        return not (abated(condition) if abatement is None else abatement)
    return clinical in ACTIVE_CLINICAL


def _matches(condition: Resource, term: Terminology) -> dict[str, dict]:
    """First matching coding per kind ("ptsd", "nightmares")."""
    found: dict[str, dict] = {}
    for coding in codings(condition.get("code")):
        for kind in term.condition_kinds(coding.get("system"), coding.get("code")):
            found.setdefault(kind, coding)
    return found


def _fact(condition: Resource, kind: str, coding: dict) -> ConditionFact:
    onset_period = condition.get("onsetPeriod") or {}
    return ConditionFact(
        kind=kind,  # type: ignore[arg-type]
        reference=reference_of(condition),
        code=Code(coding.get("system"), coding.get("code"), coding.get("display")),
        text=concept_text(condition.get("code")),
        clinical_status=first_code(condition.get("clinicalStatus")),
        verification_status=first_code(condition.get("verificationStatus")),
        onset=parse_date(condition.get("onsetDateTime")) or parse_date(onset_period.get("start")),
        recorded=parse_date(condition.get("recordedDate")),
    )


_ELEMENT_MODELS = {
    "code": CodeableConcept,
    "clinicalStatus": CodeableConcept,
    "verificationStatus": CodeableConcept,
    "onsetPeriod": Period,
}


def read_condition(condition: Resource, term: Terminology, skipped: SkipCounter | None = None) -> list[ConditionFact]:
    """Facts for one Condition (empty when it does not match or is not active). Raises Malformed."""
    if not isinstance(condition, dict):
        raise Malformed("not an object")
    matches = _matches(condition, term)
    if not matches:
        return []
    # An unreadable status is not guessed at (absent would mean active): the Condition is skipped.
    had_abatement = abated(condition)  # read before the view, which may leave abatement[x] out
    condition = validated_view(condition, elements=_ELEMENT_MODELS, strings=(),
                               required=("code", "clinicalStatus", "verificationStatus"),
                               dates=("onsetDateTime", "recordedDate"), skipped=skipped or SkipCounter())
    if not is_active(condition, abatement=had_abatement):
        return []
    return [_fact(condition, kind, coding) for kind, coding in sorted(matches.items())]


def extract_conditions(
    conditions: Iterable[Resource], term: Terminology, skipped: SkipCounter
) -> tuple[list[ConditionFact], list[ConditionFact]]:
    """(active PTSD facts, active nightmare facts) from the record's Conditions."""
    ptsd: list[ConditionFact] = []
    nightmares: list[ConditionFact] = []
    for facts in read_each(conditions, lambda c: read_condition(c, term, skipped), skipped, "Condition"):
        ptsd += [f for f in facts if f.kind == "ptsd"]
        nightmares += [f for f in facts if f.kind == "nightmares"]
    return ptsd, nightmares
