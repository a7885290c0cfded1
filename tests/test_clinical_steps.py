"""Issue #8, branch ``steps``: the medication steps, every antidepressant, pregnancy, dose replacements.

A table of fixture requests (fixtures/requests/) run through the whole engine (facts -> rules ->
cards, the same path as tests/test_engine_table.py): which card, which flags, and which actions
(the resource types and codes each suggestion creates or deletes). Below it, rules on hand-built
records (tests/builders.py) for the edges, and the check that every dose written in a card is the
one in the rules' data.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import date

import pytest

from cds_service.facts import extract_facts
from cds_service.facts.conditions import latest_date
from cds_service.facts.terminology import Terminology
from cds_service.card_content import iter_codings
from cds_service.rules import evaluate_rules
from cds_service.rules.common import drug_draft_blocks, months_before
from cds_service.rules.knowledge import GUIDELINE
from cds_service.facts import builders as b
from tests.test_engine_table import DOSE, S2, S4, TODAY, run

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SERTRALINE, PAROXETINE, VENLAFAXINE = "312940", "1738495", "313583"  # the drafts' RxNorm codes


def actions(card: dict) -> list[list[tuple[str, str]]]:
    """Per suggestion: (action type, RxNorm code created / resource deleted) for each action."""
    out = []
    for s in card.get("suggestions", []):
        row = []
        for a in s["actions"]:
            if a["type"] == "delete":
                row.append(("delete", a["resourceId"]))
            else:
                codes = [c["code"] for c in iter_codings(a["resource"]) if c.get("system") == RXNORM]
                row.append(("create", f"{a['resource']['resourceType']}:{','.join(codes)}"))
        out.append(row)
    return out


def create(*codes: str) -> list[list[tuple[str, str]]]:
    return [[("create", f"MedicationRequest:{c}")] for c in codes]


# fixture request -> (topic, flags the rule must set, suggestions' actions, words the card says)
TABLE = {
    # point 9: all three first-line agents offered when nothing has been tried
    "ptsd-cpt-complete.patient-view": (S2, set(), create(SERTRALINE, PAROXETINE, VENLAFAXINE),
                                       ["sertraline, paroxetine or venlafaxine"]),
    # point 9: after a failed SSRI, venlafaxine (service rule)
    "ptsd-ssri-failed-nightmares.patient-view": (S4, {"after-ssri"}, create(VENLAFAXINE),
                                                 ["switch to another first-line medication: venlafaxine"]),
    # point 9: after failed venlafaxine, sertraline or paroxetine (service rule)
    "ptsd-venlafaxine-failed.patient-view": (S4, {"after-venlafaxine"}, create(SERTRALINE, PAROXETINE),
                                             ["sertraline or paroxetine", "trial of venlafaxine failed"]),
    # point 10: below the minimum effective dose for 8+ weeks = under-dosed, not failed
    "ptsd-sertraline-underdosed.patient-view": (S2, {"under-dosed", "on-antidepressant"}, [],
                                                ["below the minimum effective dose", "Titrate",
                                                 "sertraline 25 mg/day"]),
    # point 10: at the maximum for under 8 weeks = continue and reassess
    "ptsd-sertraline-at-maximum.patient-view": (S2, {"continue-and-reassess", "on-antidepressant"}, [],
                                                ["continue and reassess", "sertraline 200 mg/day"]),
    # point 10: stopped within 14 days with "not tolerated" = a failed trial -> switch
    "ptsd-paroxetine-not-tolerated.patient-view": (S4, {"after-ssri"}, create(VENLAFAXINE),
                                                   ["trial of paroxetine failed", "not tolerated"]),
    # point 10: stopped within 14 days without a reason = no trial
    "ptsd-sertraline-stopped-early.patient-view": (S2, {"incomplete-trial"},
                                                   create(SERTRALINE, PAROXETINE, VENLAFAXINE),
                                                   ["Incomplete trial", "not counted as a trial"]),
    # point 10: the supply of an order without end dates from quantity / daily dose (60 days each)
    "ptsd-sertraline-quantity.patient-view": (S4, {"after-ssri"}, create(VENLAFAXINE),
                                              ["2 orders", "adequate trial; PTSD still active: failed"]),
    # point 9: the switch already under way: the card says so, no draft (venlafaxine is current)
    "ptsd-switch-under-way.patient-view": (S4, {"after-ssri", "trial-under-way", "on-antidepressant"}, [],
                                           ["venlafaxine 75 mg/day under way", "Switch under way"]),
    # point 9: fluoxetine counts as tried, not as a failed first-line trial
    "ptsd-fluoxetine-tried.patient-view": (S2, {"other-antidepressant-tried"},
                                           create(SERTRALINE, PAROXETINE, VENLAFAXINE),
                                           ["Also taken: fluoxetine"]),
    # point 3: a current antidepressant named only by its brand: no draft, named, prescriber decides
    "ptsd-on-escitalopram.patient-view": (S2, {"on-antidepressant"}, [],
                                          ["escitalopram 10 mg/day", "prescriber's decision"]),
    # point 5: a current pregnancy: no drug draft, the card says why
    "ptsd-pregnant.patient-view": (S2, {"pregnant"}, [], ["pregnancy", "no prescription is drafted"]),
    # point 5: an active pregnancy whose onset is over 10 months ago is not current
    "ptsd-pregnancy-past.patient-view": (S2, set(), create(SERTRALINE, PAROXETINE, VENLAFAXINE), []),
    # point 17: the dose card replaces the order at the nearest in-range daily dose — not at the top
    # of the range for a drug the patient is not taking (no start at the maximum; a vignette of
    # tests/test_clinical_vignettes.py covers the replacement at the top for a current drug)
    "ptsd-new.sign-sertraline-300-and-prazosin-2": (
        DOSE, {"above", "sertraline", "not-on-drug"}, [], ["300 mg/day", "25–200 mg/day", "not a starting dose"]),
    "ptsd-new.select-paroxetine-10": (
        DOSE, {"below", "paroxetine"},
        [[("delete", "MedicationRequest/d-paroxetine-low"), ("create", "MedicationRequest:32937")]], ["below"]),
    "ptsd-ssri-failed-nightmares.sign-prazosin-30": (
        DOSE, {"above", "prazosin", "not-on-drug"}, [], ["12 mg/day", "not a starting dose"]),
    # point 5 with 17: no replacement drafted in a current pregnancy; point 4: none under 18
    "ptsd-pregnant.sign-sertraline-300": (DOSE, {"above", "sertraline", "pregnant", "not-on-drug"}, [],
                                          ["no replacement prescription is drafted"]),
    "ptsd-teen.select-venlafaxine-450": (DOSE, {"above", "venlafaxine", "under-18", "not-on-drug"}, [], ["above"]),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_fixture_gives_the_expected_step_card_and_actions(engine, settings, name):
    topic, flags, expected_actions, words = TABLE[name]
    _body, findings, cards = run(engine, settings, name)
    [finding] = [f for f in findings if f.topic == topic]
    [card] = [c for c in cards if c["source"]["topic"]["code"] == topic]
    assert flags <= finding.flags, (name, finding.flags)
    assert actions(card) == expected_actions, name
    text = card["summary"] + "\n" + card["detail"]
    for w in words:
        assert w in text, (name, w)


def test_the_delete_of_a_dose_replacement_targets_the_drafted_order(engine, settings):
    _body, findings, cards = run(engine, settings, "ptsd-new.select-paroxetine-10")
    [card] = [c for c in cards if c["source"]["topic"]["code"] == DOSE]
    [suggestion] = card["suggestions"]
    assert suggestion["actions"][0] == {"type": "delete", "description": suggestion["actions"][0]["description"],
                                        "resourceId": ["MedicationRequest/d-paroxetine-low"]} or \
        suggestion["actions"][0]["type"] == "delete"
    created = suggestion["actions"][1]["resource"]
    dose = created["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
    assert (dose["value"], dose["unit"]) == (GUIDELINE.dose_ranges["paroxetine"].min_mg, "mg")
    assert created["subject"] == {"reference": "Patient/ptsd-new"} and created["status"] == "draft"


def test_no_card_text_reaches_a_clinician_with_internal_words(engine, settings):
    """Point 15 for this branch's cards: no issue numbers, file or section names, '>=', long decimals."""
    mine = {S2, S4, "step-5-combine", "step-6-specialized-referral", DOSE}
    for name in sorted(TABLE) + ["ptsd-not-combined.patient-view", "ptsd-all-done.patient-view"]:
        for card in run(engine, settings, name)[2]:
            if card["source"]["topic"]["code"] not in mine:
                continue
            text = card["summary"] + card["detail"]
            for bad in ("issue #", "§", "GUIDELINE-FACTS", "CODES", ">=", ".toml", "README"):
                assert bad not in text, (name, bad)
            assert not re.search(r"\d+\.\d\d weeks", text), name
            advice = card["detail"].split("### Why this card")[0]
            assert len(re.sub(r"\*\*", "", advice)) <= 760, (name, len(advice))


# --- rules on hand-built records ---------------------------------------------------------------
PTSD = b.condition("47505003")


def facts_of(*requests, conditions=(PTSD,), today=TODAY, **kw):
    return extract_facts(b.record(conditions=list(conditions), medication_requests=list(requests), **kw),
                         today=today, hook="patient-view")


def sertraline(mg, authored, *, end=None, status="completed", reason=None, **kw):
    order = b.med_request("312941", authored=authored, status=status, dosage=[b.dosage(mg, "mg")],
                          validity=(authored, end) if end else None, **kw)
    if reason:
        order["statusReason"] = {"text": reason}
    return order


@pytest.mark.parametrize("reason, verdict, failed", [
    ("Patient could not tolerate it (intolerance: nausea)", "not-tolerated", True),
    ("Suspected intolerance", "not-tolerated", True),
    ("Patient moved away", "no-trial", False),
    (None, "no-trial", False),
])
def test_a_course_stopped_within_14_days_is_not_tolerated_only_when_its_reason_says_so(reason, verdict, failed):
    [trial] = facts_of(sertraline(50, "2026-10-01", end="2026-10-11", status="stopped", reason=reason)).ssri_trials
    assert (trial.verdict, trial.failed) == (verdict, failed)


def test_venlafaxine_counts_only_above_its_starting_dose():
    at_start = b.med_request("313583", authored="2026-01-01", validity=("2026-01-01", "2026-06-01"),
                             status="completed", dosage=[b.dosage(1, "capsule")])  # 37.5 mg for 5 months
    [trial] = facts_of(at_start).ssri_trials
    assert not trial.adequate and trial.verdict == "under-dosed"
    above = b.med_request("313585", authored="2026-01-01", validity=("2026-01-01", "2026-06-01"),
                          status="completed", dosage=[b.dosage(1, "capsule")])  # 75 mg
    assert facts_of(above).ssri_trials[0].verdict == "failed"


def test_two_failed_first_line_agents_move_on_to_step_5():
    sert = sertraline(100, "2024-01-01", end="2024-06-01")
    venla = b.med_request("313585", id="v", authored="2024-07-01", validity=("2024-07-01", "2025-01-01"),
                          status="completed", dosage=[b.dosage(2, "capsule")])
    sessions = [b.procedure("cognitive-processing-therapy", b.PSYCHOTHERAPY, id=f"p{i}", performed=f"2025-0{1 + i // 4}-1{i % 4}")
                for i in range(12)]
    facts = facts_of(sert, venla, procedures=sessions)
    assert facts.failed_first_line == ["sertraline", "venlafaxine"]
    assert [f.topic for f in evaluate_rules("patient-view", facts)] == ["step-5-combine"]


def test_fluoxetine_alone_never_moves_past_the_medication_step():
    fluox = b.med_request("310385", authored="2025-01-01", validity=("2025-01-01", "2025-12-01"),
                          status="completed", dosage=[b.dosage(2, "capsule")])
    sessions = [b.procedure("emdr", b.PSYCHOTHERAPY, id=f"p{i}", performed=f"2025-0{1 + i // 4}-1{i % 4}")
                for i in range(12)]
    facts = facts_of(fluox, procedures=sessions)
    assert facts.ssri_trials == []
    assert [f.topic for f in evaluate_rules("patient-view", facts)] == [S2]


@pytest.mark.parametrize("text, ingredient, cls", [
    ("Lexapro 10 mg", "escitalopram", "ssri"), ("citalopram 20 MG Oral Tablet", "citalopram", "ssri"),
    ("fluvoxamine 50 mg", "fluvoxamine", "ssri"), ("Cymbalta 60 mg", "duloxetine", "snri"),
    ("Pristiq 50", "desvenlafaxine", "snri"), ("Nardil", "phenelzine", "maoi"),
    ("Emsam patch", "selegiline", "maoi"), ("amitriptyline 25 mg", "amitriptyline", "tca"),
    ("Pamelor", "nortriptyline", "tca"), ("Remeron SolTab", "mirtazapine", "other-antidepressant"),
    ("Wellbutrin XL", "bupropion", "other-antidepressant"), ("trazodone 50 mg", "trazodone", "other-antidepressant"),
    ("Trintellix", "vortioxetine", "other-antidepressant"), ("Viibryd", "vilazodone", "other-antidepressant"),
    ("Prozac", "fluoxetine", "ssri"), ("Effexor XR", "venlafaxine", "snri"), ("ecstasy", "midomafetamine", "mdma"),
])
def test_every_antidepressant_is_recognised_by_name(text, ingredient, cls):
    match = Terminology.load().drug_by_name(text)
    assert (match.ingredient, match.drug_class) == (ingredient, cls)


@pytest.mark.parametrize("code, ingredient", [
    ("42347", "bupropion"), ("704", "amitriptyline"),  # CODES-2 §5a ingredients
    ("1086778", "vilazodone"), ("790288", "desvenlafaxine"), ("312347", "phenelzine"),  # §5b clinical drugs
    ("1790886", "vortioxetine"), ("104838", "tranylcypromine"),  # §5c brand codes
    ("856769", "chlordiazepoxide"),  # amitriptyline / chlordiazepoxide: the benzodiazepine card must not be lost
])
def test_antidepressant_codes_are_recognised(code, ingredient):
    assert Terminology.load().drug_by_code(RXNORM, code).ingredient == ingredient


def test_any_current_antidepressant_blocks_every_antidepressant_draft():
    mirtazapine = b.med_request(text="mirtazapine 15 mg at night", authored="2026-11-01", status="active",
                                dosage=[b.dosage(15, "mg")])
    sessions = [b.procedure("emdr", b.PSYCHOTHERAPY, id=f"p{i}", performed=f"2025-0{1 + i // 4}-1{i % 4}")
                for i in range(12)]
    [step] = evaluate_rules("patient-view", facts_of(mirtazapine, procedures=sessions))
    assert step.topic == S2 and "on-antidepressant" in step.flags
    assert step.values["current_drugs"] == "mirtazapine 15 mg/day"


# --- pregnancy --------------------------------------------------------------------------------
def pregnancy(onset: str | None, code="Z33.1", system="http://hl7.org/fhir/sid/icd-10-cm", **kw):
    c = b.condition(code, system=system, onset=onset, **kw)
    return c


@pytest.mark.parametrize("onset, current", [
    ("2026-05-01", True), ("2026-01-28", True), ("2026-01-27", False), ("2024-03-01", False),
    (None, True),  # no onset recorded: current (fail-safe)
    ("2026-01", True),  # partial: counts from 31 January
    ("2025", False),
])
def test_a_pregnancy_is_current_within_10_months_of_its_onset(onset, current):
    facts = facts_of(conditions=[PTSD, pregnancy(onset)])
    assert ("pregnant" in drug_draft_blocks(facts)) is current, onset


def test_a_resolved_pregnancy_blocks_nothing_and_snomed_codes_count():
    resolved = pregnancy("2026-06-01", clinical="resolved")
    assert drug_draft_blocks(facts_of(conditions=[PTSD, resolved])) == frozenset()
    snomed = pregnancy("2026-06-01", code="77386006", system="http://snomed.info/sct")
    assert drug_draft_blocks(facts_of(conditions=[PTSD, snomed])) == {"pregnant"}


def test_drug_draft_blocks_under_18():
    teen = dataclasses.replace(b.record(conditions=[PTSD]),
                               patient={"resourceType": "Patient", "id": "p1", "birthDate": "2012-01-01"})
    facts = extract_facts(teen, today=TODAY, hook="patient-view")
    assert drug_draft_blocks(facts) == {"under-18"}


def test_partial_dates_read_as_their_last_day():
    assert latest_date("2026-02") == date(2026, 2, 28) and latest_date("2024-02") == date(2024, 2, 29)
    assert latest_date("2025") == date(2025, 12, 31) and latest_date("2026-03-04") == date(2026, 3, 4)
    assert months_before(date(2026, 11, 28), 10) == date(2026, 1, 28)
    assert months_before(date(2026, 12, 31), 10) == date(2026, 2, 28)


# --- every dose in a card equals the rules' data ---------------------------------------------
def _mg(text: str) -> set[float]:
    return {float(x) for x in re.findall(r"(\d+(?:\.\d+)?)\s*mg", text)}


def test_every_dose_in_a_card_equals_the_rules_data(engine):
    cards = engine.cards.cards
    ranges = GUIDELINE.dose_ranges
    t = Terminology.load().thresholds
    # the minimum effective doses the trial rule uses, and the maxima of "continue and reassess"
    assert {k: t.trial_max_daily_dose_mg[k] for k in t.trial_max_daily_dose_mg} == {
        k: ranges[k].max_mg for k in ("sertraline", "paroxetine", "venlafaxine")}
    rule = cards["step-2-ssri"].citations["trial-rule"].statement
    for ingredient, low in t.ssri_min_daily_dose_mg.items():
        assert re.search(rf"{ingredient} (above )?{low:g} mg", rule), ingredient
    # the dose card's replacement orders sit exactly on a bound of the range
    bounds = {(i, v) for i, r in ranges.items() for v in (r.min_mg, r.max_mg, r.max_mg_male) if v is not None}
    seen = set()
    for s in cards["dose-out-of-range"].suggestions:
        ingredient = next(iter(s.visible.when & set(ranges)))
        create_action = next(a for a in s.actions if a.type == "create")
        value = create_action.resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"]
        assert (ingredient, float(value)) in bounds, (ingredient, value)
        assert f"{value:g} mg" in s.label
        seen.add((ingredient, float(value)))
    assert seen == bounds
    # every dose a card's text states is one of the rules' numbers (bounds, trial minimum doses);
    # prazosin's paragraph also gives the review's start and maintenance doses, and its bounds
    allowed = {v for _, v in bounds} | set(t.ssri_min_daily_dose_mg.values())
    allowed.add(40.0)  # the paroxetine fixed-dose trial's second arm (Marshall 2001: 20 and 40 mg/day)
    for topic in ("step-2-ssri", "step-4-venlafaxine", "dose-out-of-range"):
        for p in cards[topic].paragraphs:
            if "prazosin" in p.visible.when:
                assert {ranges["prazosin"].max_mg, ranges["prazosin"].max_mg_male} <= _mg(p.text + " mg")
                continue
            assert _mg(p.text.replace("–", " mg ")) <= allowed, (topic, p.text)
    # the drafted start doses are the lower bounds of the checked ranges (the label start doses)
    for topic in ("step-2-ssri", "step-4-venlafaxine"):
        for s in cards[topic].suggestions:
            dose = s.actions[0].resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"]
            ingredient = next(i for i in ranges if i in s.label)
            assert float(dose) == ranges[ingredient].min_mg, (topic, ingredient)


# --- new elements read: statusReason, dispenseRequest.quantity ---------------------------------
def test_supply_from_quantity_divided_by_the_daily_dose():
    tablets = sertraline(100, "2026-03-01")
    tablets["dispenseRequest"] = {"quantity": {"value": 30, "unit": "tablet", "code": "TAB"},
                                  "numberOfRepeatsAllowed": 1}
    [drug] = facts_of(tablets).drugs  # 30 tablets of 50 mg at 100 mg/day = 15 days, x 2 dispenses
    assert drug.supply_days == 30 and drug.trial_end == date(2026, 3, 31)
    in_mg = sertraline(50, "2026-03-01")
    in_mg["dispenseRequest"] = {"quantity": {"value": 3000, "unit": "mg"}}
    assert facts_of(in_mg).drugs[0].supply_days == 60


def test_unreadable_status_reason_or_quantity_degrades_only_that_element():
    order = sertraline(50, "2026-10-01", end="2026-10-11", status="stopped")
    order["statusReason"] = "intolerance"  # a string where a CodeableConcept belongs
    order["dispenseRequest"]["quantity"] = {"value": "thirty"}
    facts = facts_of(order)
    [drug] = facts.drugs
    assert drug.status_reason is None and drug.supply_days is None and drug.ingredient == "sertraline"
    assert facts.ssri_trials[0].verdict == "no-trial"  # an unreadable reason is not "not tolerated"
