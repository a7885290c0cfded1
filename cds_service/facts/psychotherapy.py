"""Completed trauma-focused psychotherapy sessions (prolonged exposure, CPT, EMDR).

Each Procedure with status ``completed`` that is one of the three therapies is one session. It is
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
"""

from __future__ import annotations

from typing import Any, Iterable

from cds_service.facts.fhir_read import (
    Malformed, Resource, SkipCounter, concept_label, raw_concept, read_each, read_view, reference_of,
    to_date,
)
from cds_service.facts.model import Code, MatchedBy, TherapyKind, TherapySession
from cds_service.facts.terminology import Terminology
from cds_service.facts.views import ProcedureView


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


def read_procedure(procedure: Any, term: Terminology, skipped: SkipCounter) -> TherapySession | None:
    """A session for one Procedure, or None. Raises Malformed."""
    if not isinstance(procedure, dict):
        raise Malformed("not an object")
    if procedure.get("status") != "completed":
        return None
    codes, texts = raw_concept(procedure.get("code"))
    coded = _by_code(codes, term)
    therapy = coded[0] if coded else _by_text(texts, term)
    if therapy is None:
        return None
    view, complete = read_view(procedure, ProcedureView)
    if not complete:
        skipped.skip("Procedure (partly read)")
    period_start = view.performedPeriod.start if view.performedPeriod else None
    return TherapySession(
        reference=reference_of("Procedure", view.id),
        therapy=therapy,
        label=concept_label(view.code) or therapy,
        matched_by=coded[1] if coded else "name",
        code=coded[2] if coded else None,
        performed=to_date(view.performedDateTime) or to_date(period_start),
    )


def extract_sessions(procedures: Iterable[Resource], term: Terminology, skipped: SkipCounter) -> list[TherapySession]:
    """Completed trauma-focused sessions, in record order (bad resources skipped and counted)."""
    read = lambda p: read_procedure(p, term, skipped)  # noqa: E731
    return [s for s in read_each(procedures, read, skipped, "Procedure") if s is not None]
