"""patient-view, active PTSD: the one "next guideline step" card, and the nightmare card.

The steps are tried in the order of ``guideline.toml`` ``next_step.order``; the first whose
condition holds is the card shown:

1. ``step-1-trauma-focused-psychotherapy`` — no complete course of one trauma-focused therapy
   (service rule on GUIDELINE-FACTS §10: 12 CPT, 8 PE or 6 EMDR sessions;
   ``ClinicalFacts.adequate_psychotherapy``) and psychotherapy not declined
   (``ClinicalFacts.psychotherapy_declined``: then the medication step, §0 row 4, §12.4). The card
   says "continue the course, N so far" while a course is under way (flag ``course-under-way``,
   no referral), "N of M done; resume or restart" when it stopped (``course-stopped``).
2. ``step-2-ssri`` (the medication step; topic kept) — no first-line trial (sertraline,
   paroxetine, venlafaxine: VA/DoD 2023 strong for all three) has failed and none was adequate.
   The card offers all three (drafts unless blocked) or, when a trial is under way, says which
   case applies: under way, under-dosed (titrate), at the maximum (continue and reassess),
   incomplete (``facts/trials.py``).
4. ``step-4-venlafaxine`` (topic kept; "switch to another first-line medication") — exactly one
   first-line agent has failed (adequate without remission, or not tolerated). Which one next is
   a service rule: venlafaxine after an SSRI, sertraline or paroxetine after venlafaxine.
5. ``step-5-combine`` — two different first-line agents failed (or one was adequate and did not
   fail) and psychotherapy never overlapped with a first-line agent.
6. ``step-6-specialized-referral`` — none of the above applies.

``step-3-nightmares`` is independent of the ladder: active nightmares and no image rehearsal
therapy recorded (whatever the prazosin dose). It offers an IRT referral and a prazosin start
draft unless ``common.drug_draft_blocks`` forbids drug drafts (flag ``no-drug-draft`` plus the
reason, e.g. ``under-18``) or prazosin is already current (``on-prazosin``).

Fluoxetine and every other antidepressant are tried antidepressants, never failed first-line
trials (issue #8 point 9). While any antidepressant is current no card drafts one (service rule,
flag ``on-antidepressant``: the card names what is on record; a switch is the prescriber's
decision); ``common.drug_draft_blocks`` adds ``under-18`` and ``pregnant`` (no drug draft at all).

"Taken" / "never taken" ignores cancelled, entered-in-error and draft requests (``common.tried``).
"""

from __future__ import annotations

from typing import Callable

from cds_service.facts.model import ANTIDEPRESSANT_CLASSES, FIRST_LINE_AGENTS, ClinicalFacts, SsriTrial
from cds_service.rules.common import current_pregnancy, drug_draft_blocks, drug_phrase, names, ptsd_values, tried
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
    """The medication step: no first-line trial failed and none was adequate."""
    return not facts.adequate_ssri_trial and not facts.failed_ssri


def needs_nightmare_treatment(facts: ClinicalFacts) -> bool:
    """Active nightmares and no completed image rehearsal therapy (the recommended treatment,
    AASM 2018), whatever the prazosin dose (issue #8 point 12)."""
    return facts.has_active_nightmares and not facts.irt_sessions


def needs_venlafaxine(facts: ClinicalFacts) -> bool:
    """Step 4, switch to another first-line agent: exactly one first-line agent has failed."""
    return len(facts.failed_first_line) == 1


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
    """Current antidepressants (any class), the ``current_drugs`` value naming them and the flags
    that block drug drafts (``on-antidepressant``, ``pregnant``)."""
    current = facts.antidepressants_on_record()
    flags = set(drug_draft_blocks(facts))
    values: dict[str, str] = {}
    if current:
        flags.add("on-antidepressant")
        values["current_drugs"] = "; ".join(drug_phrase(d) for d in current)
    return current, values, frozenset(flags)


def _others_tried(facts: ClinicalFacts) -> dict[str, str]:
    """Antidepressants taken before that are not first-line trials (fluoxetine, citalopram, ...);
    current ones are named as current instead."""
    current = {d.ingredient for d in facts.antidepressants_on_record()}
    others = [d for d in facts.drugs if d.was_taken and d.drug_class in ANTIDEPRESSANT_CLASSES
              and d.ingredient not in FIRST_LINE_AGENTS and d.ingredient not in current]
    return {"other_antidepressants": names(others)} if others else {}


TRIAL_FLAGS = {"under-way": "trial-under-way", "under-dosed": "under-dosed",
               "continue-and-reassess": "continue-and-reassess", "stopped-early": "incomplete-trial",
               "no-trial": "incomplete-trial"}


def _trial_in_focus(facts: ClinicalFacts) -> SsriTrial | None:
    """The first-line trial the medication step card is about: a current one, else the latest."""
    trials = sorted(facts.ssri_trials, key=lambda t: (t.current, t.end or t.start or facts.today))
    return trials[-1] if trials else None


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
    trial = _trial_in_focus(facts)
    extra: dict[str, str] = {**_others_tried(facts)}
    more = set()
    if trial is not None and trial.verdict in TRIAL_FLAGS:
        more.add(TRIAL_FLAGS[trial.verdict])
        extra["trial_drug"] = drug_phrase(trial.drug)
        extra["trial_weeks"] = f"{trial.weeks_at_dose:g}"
    if "other_antidepressants" in extra:
        more.add("other-antidepressant-tried")
    if psychotherapy_declined(facts):
        more.add("psychotherapy-declined")
    return Finding(
        STEP_2, hook, "info",
        conditions=tuple(facts.ptsd) + tuple(current_pregnancy(facts)),
        drugs=tuple(current),
        ssri_trials=tuple(facts.ssri_trials),
        sessions=tuple(facts.sessions),
        session_count=facts.session_count,
        values={**values, **extra, **ptsd_values(facts)},
        flags=flags | more,
        not_found=() if facts.ssri_trials else ("first-line medication (sertraline, paroxetine or venlafaxine)",),
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
        conditions=tuple(facts.ptsd) + tuple(facts.nightmares)
        + (tuple(current_pregnancy(facts)) if "pregnant" in blocks else ()),
        drugs=tuple(prazosin),
        values={**({"nightmare_condition": refs[0]} if refs else {}), **ptsd_values(facts)},
        flags=frozenset(flags),
        not_found=("image rehearsal therapy session",),
    )


# Reasons of ``drug_draft_blocks`` the nightmare card names (each a flag of the card).
NIGHTMARE_DRAFT_BLOCK_FLAGS = frozenset({"under-18", "pregnant"})


def _venlafaxine(facts: ClinicalFacts, hook: str) -> Finding:
    """Step 4: switch to another first-line agent (service rule: venlafaxine after an SSRI;
    sertraline or paroxetine after venlafaxine)."""
    failed = [t for t in facts.ssri_trials if t.failed]
    current, values, flags = _current_antidepressants(facts)
    after = "after-venlafaxine" if facts.failed_first_line == ["venlafaxine"] else "after-ssri"
    next_agent = "sertraline or paroxetine" if after == "after-venlafaxine" else "venlafaxine"
    # the switch may already be under way: the other agent's trial, current and not yet judged
    switch = [t for t in facts.ssri_trials if not t.failed and t.current
              and t.verdict in ("under-way", "under-dosed", "continue-and-reassess")]
    trial_values: dict[str, str] = {}
    if switch:
        flags = flags | {TRIAL_FLAGS[switch[-1].verdict]}
        trial_values = {"trial_drug": drug_phrase(switch[-1].drug), "trial_weeks": f"{switch[-1].weeks_at_dose:g}"}
    return Finding(
        STEP_4, hook, "info",
        conditions=tuple(facts.ptsd) + tuple(current_pregnancy(facts)),
        drugs=tuple(current),
        ssri_trials=tuple(facts.ssri_trials),
        sessions=tuple(facts.sessions),
        session_count=facts.session_count,
        values={"failed_ssri": names([t.drug for t in failed]), "next_agent": next_agent,
                **values, **trial_values, **_others_tried(facts), **ptsd_values(facts)},
        flags=flags | {after} | ({"other-antidepressant-tried"} if _others_tried(facts) else set()),
        not_found=() if tried(facts, "venlafaxine") or after == "after-venlafaxine" else ("venlafaxine prescription",),
    )


def _pharmacotherapy(facts: ClinicalFacts):
    return tuple(d for d in facts.drugs if d.ingredient in FIRST_LINE_AGENTS)


def _treatment_history(topic: str, not_found: tuple[str, ...] = ()) -> Callable[[ClinicalFacts, str], Finding]:
    """Steps 5 and 6 show the whole treatment history: sessions, first-line trials."""

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
        STEP_5, ("trauma-focused session dated within a sertraline, paroxetine or venlafaxine prescription period",)),
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
