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

``performed`` is ``performedDateTime`` or ``performedPeriod.start``.
"""

from __future__ import annotations

from datetime import date
from typing import Iterable

from cds_service.facts.fhir_read import (
    Malformed, Resource, SkipCounter, codings, concept_label, concept_texts, parse_date, reference_of,
    read_each, validated_view,
)
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.period import Period

from cds_service.facts.model import Code, MatchedBy, TherapyKind, TherapySession
from cds_service.facts.terminology import Terminology


def _by_code(procedure: Resource, term: Terminology) -> tuple[TherapyKind, MatchedBy, Code] | None:
    best = None
    for c in codings(procedure.get("code")):
        hit = term.therapy_by_code(c.get("system"), c.get("code"))
        if hit and (best is None or (hit[1] == "code-map" and best[1] != "code-map")):
            best = (hit[0], hit[1], Code(c.get("system"), c.get("code"), c.get("display")))
    return best


def _by_text(procedure: Resource, term: Terminology) -> TherapyKind | None:
    for text in concept_texts(procedure.get("code")):
        therapy = term.therapy_by_text(text)
        if therapy:
            return therapy
    return None


def _performed(procedure: Resource) -> date | None:
    period = procedure.get("performedPeriod") or {}
    return parse_date(procedure.get("performedDateTime")) or parse_date(period.get("start"))


_ELEMENT_MODELS = {"code": CodeableConcept, "performedPeriod": Period}


def read_procedure(procedure: Resource, term: Terminology, skipped: SkipCounter | None = None) -> TherapySession | None:
    """A session for one Procedure, or None. Raises Malformed."""
    if not isinstance(procedure, dict):
        raise Malformed("not an object")
    if procedure.get("status") != "completed":
        return None
    coded = _by_code(procedure, term)
    therapy = coded[0] if coded else _by_text(procedure, term)
    if therapy is None:
        return None
    procedure = validated_view(procedure, elements=_ELEMENT_MODELS, required=("code",),
                               dates=("performedDateTime",), skipped=skipped or SkipCounter())
    return TherapySession(
        reference=reference_of(procedure),
        therapy=therapy,
        label=concept_label(procedure.get("code")) or therapy,
        matched_by=coded[1] if coded else "name",
        code=coded[2] if coded else None,
        performed=_performed(procedure),
    )


def extract_sessions(procedures: Iterable[Resource], term: Terminology, skipped: SkipCounter) -> list[TherapySession]:
    """Completed trauma-focused sessions, in record order (bad resources skipped and counted)."""
    read = lambda p: read_procedure(p, term, skipped)  # noqa: E731
    return [s for s in read_each(procedures, read, skipped, "Procedure") if s is not None]
