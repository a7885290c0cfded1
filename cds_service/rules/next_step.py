"""patient-view, active PTSD: the one "next guideline step" card, and the nightmare card.

The steps (issue #3) are tried in the order of ``guideline.toml`` ``next_step.order``; the first
whose condition holds is the card shown:

1. ``step-1-trauma-focused-psychotherapy`` — no complete course of one trauma-focused therapy
   (service rule on GUIDELINE-FACTS §10: 12 CPT, 8 PE or 6 EMDR sessions;
   ``ClinicalFacts.adequate_psychotherapy``) and psychotherapy not declined
   (``ClinicalFacts.psychotherapy_declined``: then the medication step, §0 row 4, §12.4). The card
   says "continue the course, N so far" while a course is under way (flag ``course-under-way``,
   no referral), "N of M done; resume or restart" when it stopped (``course-stopped``).
2. ``step-2-ssri`` — no adequate SSRI trial and no failed one.
4. ``step-4-venlafaxine`` — an SSRI trial failed and venlafaxine was never taken.
5. ``step-5-combine`` — psychotherapy and an SSRI/venlafaxine never overlapped in time.
6. ``step-6-specialized-referral`` — none of the above applies.

``step-3-nightmares`` is independent of the ladder: active nightmares and no image rehearsal
therapy recorded (whatever the prazosin dose). It offers an IRT referral and a prazosin start
draft unless ``common.drug_draft_blocks`` forbids drug drafts (flag ``no-drug-draft`` plus the
reason, e.g. ``under-18``) or prazosin is already current (``on-prazosin``).

How the SSRI steps read the trial facts (the ordering subtlety)
----------------------------------------------------------------
``SsriTrial.failed`` is "adequate and PTSD still active, or stopped before becoming adequate".
The ladder only runs for active PTSD, so here every adequate trial is also a failed one:

* step 2's "no adequate trial and none failed" is in practice "no failed trial";
* a trial that is neither adequate nor failed is one still under way (current, not yet at the
  minimum dose for 8 weeks): step 2 fires and its card names the drug and dose ("optimise");
* a trial stopped early (e.g. not tolerated) is failed: step 4 (venlafaxine) is next, as the
  seed's "if SSRI not tolerated, switch to venlafaxine";
* should the facts stage ever report an adequate trial that has *not* failed (a responder), step 2
  does not fire (an adequate trial exists) and step 4 does not fire (nothing failed), so the ladder
  goes on to step 5 (combine psychotherapy with the optimised drug) — deliberately, not by accident.

Venlafaxine alone does not satisfy step 2: issue #3 puts an SSRI trial first even though VA/DoD
2023 recommends sertraline, paroxetine *or* venlafaxine (strong for); the step-2 card says so
when the patient is on venlafaxine (flag ``on-venlafaxine``).

"Taken" / "never taken" ignores cancelled, entered-in-error and draft requests (``common.tried``).
"""

from __future__ import annotations

from typing import Callable

from cds_service.facts.model import ClinicalFacts
from cds_service.rules.common import drug_draft_blocks, drug_phrase, names, ptsd_values, tried
from cds_service.rules.finding import Finding
from cds_service.rules.knowledge import GUIDELINE

STEP_1 = "step-1-trauma-focused-psychotherapy"
STEP_2 = "step-2-ssri"
STEP_3 = "step-3-nightmares"
STEP_4 = "step-4-venlafaxine"
STEP_5 = "step-5-combine"
STEP_6 = "step-6-specialized-referral"


# --- when does each step apply ---------------------------------------------------------------
def needs_psychotherapy(facts: ClinicalFacts) -> bool:
    """No complete course and psychotherapy not declined (a course under way always keeps step 1)."""
    return not facts.adequate_psychotherapy and not facts.psychotherapy_declined


def psychotherapy_declined(facts: ClinicalFacts) -> bool:
    """Rule input for the medication step's card (flag ``psychotherapy-declined``; the ``steps``
    branch owns that card): step 1 was passed over because the patient declined psychotherapy."""
    return facts.psychotherapy_declined


def needs_ssri(facts: ClinicalFacts) -> bool:
    return not facts.adequate_ssri_trial and not facts.failed_ssri


def needs_nightmare_treatment(facts: ClinicalFacts) -> bool:
    """Active nightmares and no completed image rehearsal therapy (the recommended treatment,
    AASM 2018), whatever the prazosin dose (issue #8 point 12)."""
    return facts.has_active_nightmares and not facts.irt_sessions


def needs_venlafaxine(facts: ClinicalFacts) -> bool:
    return facts.failed_ssri and not tried(facts, "venlafaxine")


def needs_combination(facts: ClinicalFacts) -> bool:
    return not facts.combined


def needs_referral(facts: ClinicalFacts) -> bool:
    return True  # last rung: reached only when every earlier step is done


APPLIES: dict[str, Callable[[ClinicalFacts], bool]] = {
    STEP_1: needs_psychotherapy,
    STEP_2: needs_ssri,
    STEP_3: needs_nightmare_treatment,
    STEP_4: needs_venlafaxine,
    STEP_5: needs_combination,
    STEP_6: needs_referral,
}


# --- what each card shows ------------------------------------------------------------------
def _current_antidepressants(facts: ClinicalFacts):
    """Current SSRIs/SNRIs, the ``current_drugs`` value naming them and their flags."""
    current = facts.current("ssri") + facts.current("snri")
    if not current:
        return current, {}, frozenset()
    flags = {"on-antidepressant"}
    if any(d.ingredient == "venlafaxine" for d in current):
        flags.add("on-venlafaxine")
    return current, {"current_drugs": "; ".join(drug_phrase(d) for d in current)}, frozenset(flags)


# Therapy names as the step-1 card's text uses them (card wording of a record fact).
_COURSE_NAMES = {"prolonged-exposure": "prolonged exposure (PE)",
                 "cognitive-processing-therapy": "cognitive processing therapy (CPT)", "emdr": "EMDR"}


def _course_values(facts: ClinicalFacts) -> tuple[dict[str, str], set[str]]:
    """Values and flags describing the course the step-1 card talks about."""
    course = facts.course
    if course is None:
        return {}, set()
    values = {"course_therapy": _COURSE_NAMES.get(course.therapy, course.therapy),
              "course_sessions": str(course.sessions), "course_needed": str(course.needed)}
    values["course_last"] = course.last.isoformat() if course.last else "date not recorded"
    if course.complete:
        return values, {"course-complete"}
    return values, {"course-under-way" if course.under_way else "course-stopped"}


def _psychotherapy(facts: ClinicalFacts, hook: str, under_age: bool = False) -> Finding:
    values, flags = _course_values(facts)
    if under_age:
        flags.add("under-18")
        values["age"] = str(facts.age_years)
    return Finding(
        STEP_1, hook, "info",
        conditions=tuple(facts.ptsd),
        sessions=tuple(facts.sessions),
        session_count=facts.session_count,
        values={"session_count": str(facts.session_count), **values, **ptsd_values(facts)},
        flags=frozenset(flags),
    )


def _ssri(facts: ClinicalFacts, hook: str) -> Finding:
    current, values, flags = _current_antidepressants(facts)
    return Finding(
        STEP_2, hook, "info",
        conditions=tuple(facts.ptsd),
        drugs=tuple(current),
        ssri_trials=tuple(facts.ssri_trials),
        sessions=tuple(facts.sessions),
        session_count=facts.session_count,
        values={**values, **ptsd_values(facts)},
        flags=flags,
        not_found=() if facts.ssri_trials else ("SSRI prescription (sertraline, paroxetine or fluoxetine)",),
    )


def _nightmares(facts: ClinicalFacts, hook: str) -> Finding:
    flags = set()
    blocks = drug_draft_blocks(facts)
    if blocks:
        flags |= {"no-drug-draft"} | (blocks & NIGHTMARE_DRAFT_BLOCK_FLAGS)
    prazosin = [d for d in facts.drugs if d.ingredient == "prazosin" and d.was_taken]
    if any(d.is_current for d in prazosin):
        flags.add("on-prazosin")
    refs = [c.reference for c in facts.nightmares if c.reference]
    return Finding(
        STEP_3, hook, "info",
        conditions=tuple(facts.ptsd) + tuple(facts.nightmares),
        drugs=tuple(prazosin),
        values={**({"nightmare_condition": refs[0]} if refs else {}), **ptsd_values(facts)},
        flags=frozenset(flags),
        not_found=("image rehearsal therapy session",),
    )


# Reasons of ``drug_draft_blocks`` the nightmare card names (each a flag of the card).
NIGHTMARE_DRAFT_BLOCK_FLAGS = frozenset({"under-18", "pregnant"})


def _venlafaxine(facts: ClinicalFacts, hook: str) -> Finding:
    failed = [t for t in facts.ssri_trials if t.failed]
    current, values, flags = _current_antidepressants(facts)
    return Finding(
        STEP_4, hook, "info",
        conditions=tuple(facts.ptsd),
        drugs=tuple(current),
        ssri_trials=tuple(failed),
        sessions=tuple(facts.sessions),
        session_count=facts.session_count,
        values={"failed_ssri": names([t.drug for t in failed]), **values, **ptsd_values(facts)},
        flags=flags,
        not_found=("venlafaxine prescription",),
    )


def _pharmacotherapy(facts: ClinicalFacts):
    return tuple(d for d in facts.drugs if d.drug_class == "ssri" or d.ingredient == "venlafaxine")


def _treatment_history(topic: str, not_found: tuple[str, ...] = ()) -> Callable[[ClinicalFacts, str], Finding]:
    """Steps 5 and 6 show the whole treatment history: sessions, SSRI trials, venlafaxine."""

    def build(facts: ClinicalFacts, hook: str) -> Finding:
        return Finding(
            topic, hook, "info",
            conditions=tuple(facts.ptsd),
            drugs=_pharmacotherapy(facts),
            ssri_trials=tuple(facts.ssri_trials),
            sessions=tuple(facts.sessions),
            session_count=facts.session_count,
            values={"session_count": str(facts.session_count), **ptsd_values(facts)},
            not_found=not_found,
        )

    return build


BUILD: dict[str, Callable[[ClinicalFacts, str], Finding]] = {
    STEP_1: _psychotherapy,
    STEP_2: _ssri,
    STEP_3: _nightmares,
    STEP_4: _venlafaxine,
    STEP_5: _treatment_history(
        STEP_5, ("trauma-focused session dated within an SSRI or venlafaxine prescription period",)),
    STEP_6: _treatment_history(STEP_6),
}

_unknown = [t for t in GUIDELINE.next_step_order + GUIDELINE.independent_steps if t not in APPLIES]
if _unknown:  # guideline.toml names a step this module has no rule for
    raise ImportError(f"guideline.toml next_step names steps without a rule: {_unknown}")


def next_step(facts: ClinicalFacts, hook: str) -> Finding | None:
    """The first step of the ladder that applies (None without active PTSD). Under the adult age
    (guideline.toml ``patient.adult_age_years``) it is always step 1: no drug treatment."""
    if not facts.has_active_ptsd:
        return None
    if facts.under(GUIDELINE.adult_age_years):
        return _psychotherapy(facts, hook, under_age=True)
    for topic in GUIDELINE.next_step_order:
        if APPLIES[topic](facts):
            return BUILD[topic](facts, hook)
    return None


def independent_steps(facts: ClinicalFacts, hook: str) -> list[Finding]:
    if not facts.has_active_ptsd:
        return []
    return [BUILD[t](facts, hook) for t in GUIDELINE.independent_steps if APPLIES[t](facts)]


def open_steps(facts: ClinicalFacts) -> tuple[str, ...]:
    """Every step (ladder and independent) still to do, in step order; the referral step is
    not "open" — it is what follows once nothing else is."""
    ladder = [STEP_1] if facts.under(GUIDELINE.adult_age_years) else \
        [t for t in GUIDELINE.next_step_order if t != STEP_6]
    topics = ladder + list(GUIDELINE.independent_steps)
    todo = [t for t in topics if APPLIES[t](facts)]
    return tuple(sorted(todo, key=step_number))


def step_number(topic: str) -> int:
    return int(topic.split("-")[1])
