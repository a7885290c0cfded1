"""Trauma-focused psychotherapy: completed sessions, courses, and declined psychotherapy.

Sessions
--------
Each Procedure with status ``completed`` that is one of the therapies is one session. It is
recognised, best first, by a coding in

1. the site code map (``matched_by="code-map"``; format in ``cds_service.facts.terminology``),
2. the project's code system ``cds_service.codesystems.PSYCHOTHERAPY`` (code = therapy id) or a
   verified code in ``psychotherapy.json`` (none are verified in CODES.md §7a yet) (``"valueset"``),

else by ``code.text`` or a coding display naming the therapy (``"name"``): "prolonged exposure",
"cognitive processing therapy", "EMDR" / "eye movement desensitization". The bare abbreviation
"CPT" never counts (it is also the AMA code set: "CPT 90837"), and a text describing a referral,
a declined or cancelled session or education is not a session. Generic psychotherapy codes (CPT
90832/90834/90837, SNOMED 75516001 ...) are not trauma-focused, so "Individual psychotherapy"
does not count - but a generic code whose text names the therapy ("Prolonged exposure therapy",
billed as 90837) does.

``performed`` is ``performedDateTime`` or ``performedPeriod.start``. Only the candidates (status
completed and a therapy code or text) are decoded into ``views.ProcedureView``.

Courses (service rule, issue #8 point 11, on GUIDELINE-FACTS §10's protocol lengths [R])
-------------------------------------------------------------------------------------------
``dedupe_sessions`` counts one session per therapy and day (a duplicate entry, or a session
recorded twice by two systems); undated sessions are kept (they cannot be told apart).
``assess_courses`` gives one ``TherapyCourse`` per therapy: complete at ``courseSessions`` (CPT 12,
PE 8, EMDR 6), under way when not complete and the last session is at most ``course.underWayDays``
(30) days old. Sessions of different therapies never add up; unknown modalities never count.

Declined psychotherapy
----------------------
A Procedure with status ``not-done`` whose code is a psychotherapy (a therapy above by code or
text, a generic psychotherapy code of CODES.md §7, or text naming psychotherapy) and whose
``statusReason`` is a refusal (CODES-2 §8b/§8c SNOMED codes, or text "declined" / "refused" /
"not wanted") is a ``DeclinedTherapy``. An unreadable statusReason is no refusal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any, Iterable

from cds_service.facts.fhir_read import (
    Malformed, Resource, SkipCounter, concept_label, raw_concept, read_each, read_view, reference_of, to_date,
    view_concept, view_or_json,
)
from cds_service.facts.model import (
    NIGHTMARE_THERAPY, Code, DeclinedTherapy, MatchedBy, TherapyCourse, TherapyKind, TherapySession,
)
from cds_service.facts.terminology import SNOMED, Terminology, _read, canonical_system, normalise_code
from cds_service.facts.views import ProcedureView
from cds_service.patient_data.record import as_json


@dataclass(frozen=True)
class CourseRules:
    """The numbers and codes of ``psychotherapy.json`` the course and refusal rules use."""

    needed: dict[str, int]  # therapy -> sessions completing a course
    under_way_days: int
    refusal_codes: frozenset[tuple[str, str]]  # (system, code)
    refusal_text: re.Pattern[str]
    psychotherapy_codes: frozenset[tuple[str, str]]
    psychotherapy_text: re.Pattern[str]


@lru_cache(maxsize=1)
def course_rules() -> CourseRules:
    data = _read("psychotherapy.json")
    declined = data["declined"]
    needed = {t: int(spec["courseSessions"]) for t, spec in data["therapies"].items() if "courseSessions" in spec}
    days = int(data["course"]["underWayDays"])
    if days < 0 or any(n < 1 for n in needed.values()):
        raise ValueError("psychotherapy.json: courseSessions must be >= 1 and underWayDays >= 0")
    generic = {(canonical_system(system), normalise_code(canonical_system(system), c))
               for system, codes in declined["psychotherapyCodes"].items() for c in codes}
    return CourseRules(
        needed=needed,
        under_way_days=days,
        refusal_codes=frozenset((SNOMED, c) for c in declined["refusalCodes"]),
        refusal_text=re.compile("|".join(declined["refusalText"]), re.IGNORECASE),
        psychotherapy_codes=frozenset(generic),  # type: ignore[arg-type]
        psychotherapy_text=re.compile("|".join(declined["psychotherapyText"]), re.IGNORECASE),
    )


def _by_code(codes, term: Terminology) -> tuple[TherapyKind, MatchedBy, Code] | None:
    best = None
    for system, code, display in codes:
        hit = term.therapy_by_code(system, code)
        if hit and (best is None or (hit[1] == "code-map" and best[1] != "code-map")):
            best = (hit[0], hit[1], Code(system, code, display))
    return best


def _by_text(texts: list[str], term: Terminology) -> TherapyKind | None:
    for text in texts:
        therapy = term.therapy_by_text(text)
        if therapy:
            return therapy
    return None


def _performed(view: ProcedureView) -> date | None:
    period_start = view.performedPeriod.start if view.performedPeriod else None
    return to_date(view.performedDateTime) or to_date(period_start)


def read_procedure(procedure: Any, term: Terminology, skipped: SkipCounter) -> TherapySession | DeclinedTherapy | None:
    """A session or a declined psychotherapy for one Procedure, or None. Raises Malformed."""
    view, procedure = view_or_json(procedure, ProcedureView)
    if view is not None:  # kept as text and well formed: one typed decode
        status, (codes, texts), complete = view.status, view_concept(view.code), True
    else:
        status = procedure.get("status")
    if status == "not-done":
        return _read_declined(as_json(procedure), term, skipped)
    if status != "completed":
        return None
    if view is None:
        codes, texts = raw_concept(procedure.get("code"))
    coded = _by_code(codes, term)
    therapy = coded[0] if coded else _by_text(texts, term)
    if therapy is None:
        return None
    if view is None:
        view, complete = read_view(procedure, ProcedureView)
    if not complete:
        skipped.skip("Procedure (partly read)")
    return TherapySession(
        reference=reference_of("Procedure", view.id),
        therapy=therapy,
        label=concept_label(view.code) or therapy,
        matched_by=coded[1] if coded else "name",
        code=coded[2] if coded else None,
        performed=_performed(view),
    )


def _is_psychotherapy(codes, texts, term: Terminology, rules: CourseRules) -> bool:
    """Any psychotherapy (trauma-focused, nightmare-focused IRT excluded, or generic)."""
    for system, code, _ in codes:
        hit = term.therapy_by_code(system, code)
        if hit and hit[0] != NIGHTMARE_THERAPY:
            return True
        system = canonical_system(system)
        if (system, normalise_code(system, code)) in rules.psychotherapy_codes:
            return True
    for text in texts:
        if rules.psychotherapy_text.search(text):
            return True
        # the therapy patterns without the referral/declined exclusion ("Declined PE therapy")
        if any(p.search(text) for t, p in term.base.therapy_patterns if t != NIGHTMARE_THERAPY):
            return True
    return False


def _refusal(codes, texts, rules: CourseRules) -> tuple[Code | None, bool]:
    for system, code, display in codes:
        system_c = canonical_system(system)
        if (system_c, normalise_code(system_c, code)) in rules.refusal_codes:
            return Code(system, code, display), True
    return None, any(rules.refusal_text.search(t) for t in texts)


def _read_declined(procedure: dict, term: Terminology, skipped: SkipCounter) -> DeclinedTherapy | None:
    rules = course_rules()
    try:
        reason_codes, reason_texts = raw_concept(procedure.get("statusReason"))
    except Malformed:  # an unreadable reason is no refusal (and the rest of the record still counts)
        return None
    if not reason_codes and not reason_texts:
        return None
    codes, texts = raw_concept(procedure.get("code"))
    if not _is_psychotherapy(codes, texts, term, rules):
        return None
    reason_code, refused = _refusal(reason_codes, reason_texts, rules)
    if not refused:
        return None
    view, complete = read_view(procedure, ProcedureView)
    if not complete:
        skipped.skip("Procedure (partly read)")
    if view.statusReason is None:  # the reason itself could not be read: no refusal
        return None
    return DeclinedTherapy(
        reference=reference_of("Procedure", view.id),
        label=concept_label(view.code) or "psychotherapy",
        reason=concept_label(view.statusReason) or "declined",
        reason_code=reason_code,
        recorded=_performed(view),
    )


def extract_procedures(procedures: Iterable[Resource], term: Terminology,
                       skipped: SkipCounter) -> tuple[list[TherapySession], list[DeclinedTherapy]]:
    """Completed sessions (trauma-focused and IRT) and declined psychotherapy, in record order
    (bad resources skipped and counted)."""
    read = lambda p: read_procedure(p, term, skipped)  # noqa: E731
    sessions: list[TherapySession] = []
    declined: list[DeclinedTherapy] = []
    for item in read_each(procedures, read, skipped, "Procedure"):
        if isinstance(item, TherapySession):
            sessions.append(item)
        elif item is not None:
            declined.append(item)
    return sessions, declined


def extract_sessions(procedures: Iterable[Resource], term: Terminology, skipped: SkipCounter) -> list[TherapySession]:
    """Completed sessions only (see ``extract_procedures``)."""
    return extract_procedures(procedures, term, skipped)[0]


def dedupe_sessions(sessions: Iterable[TherapySession]) -> list[TherapySession]:
    """One session per therapy and day, first one kept, record order; undated sessions all kept."""
    seen: set[tuple[str, date]] = set()
    out = []
    for s in sessions:
        if s.performed is not None:
            key = (s.therapy, s.performed)
            if key in seen:
                continue
            seen.add(key)
        out.append(s)
    return out


def assess_courses(sessions: Iterable[TherapySession], today: date,
                   rules: CourseRules | None = None) -> list[TherapyCourse]:
    """One course per therapy that has sessions (deduplicated sessions expected), the most
    recently attended first (undated-only courses last, larger first)."""
    rules = rules or course_rules()
    counts: dict[str, int] = {}
    last: dict[str, date | None] = {}
    for s in sessions:
        if s.therapy not in rules.needed:
            continue  # a modality without a protocol length (IRT) is no course
        counts[s.therapy] = counts.get(s.therapy, 0) + 1
        if s.performed and (last.get(s.therapy) is None or s.performed > last[s.therapy]):  # type: ignore[operator]
            last[s.therapy] = s.performed
        last.setdefault(s.therapy, None)
    courses = []
    for therapy, n in counts.items():
        needed = rules.needed[therapy]
        when = last[therapy]
        under_way = n < needed and when is not None and 0 <= (today - when).days <= rules.under_way_days
        courses.append(TherapyCourse(therapy, n, needed, when, under_way))  # type: ignore[arg-type]
    courses.sort(key=lambda c: (c.last is None, -(c.last.toordinal() if c.last else 0), -c.sessions))
    return courses
