"""The guideline rules on hand-built ClinicalFacts (no FHIR): issue #3, each rule and its edges."""

from __future__ import annotations


import itertools
import msgspec
from msgspec.structs import replace
from datetime import date, timedelta

import pytest

from cds_service.facts.model import ClinicalFacts, Code, ConditionFact, DrugFact, SsriTrial, TherapySession
from cds_service.rules import SAFETY_TOPICS, TOPICS, evaluate_rules
from cds_service.rules.knowledge import GUIDELINE_FILE, GuidelineDataError, load_guideline
from cds_service.rules.next_step import open_steps

TODAY = date(2026, 11, 28)
SNOMED = "http://snomed.info/sct"
LADDER = ("step-1-trauma-focused-psychotherapy", "step-2-ssri", "step-4-venlafaxine", "step-5-combine",
          "step-6-specialized-referral")
CLASS_OF = {"sertraline": "ssri", "paroxetine": "ssri", "fluoxetine": "ssri", "venlafaxine": "snri",
            "prazosin": "prazosin", "midomafetamine": "mdma", "lorazepam": "benzodiazepine",
            "midazolam": "benzodiazepine", "clonazepam": "benzodiazepine"}


# --- builders of facts -----------------------------------------------------------------------
def ptsd(ref: str | None = "Condition/ptsd-1") -> ConditionFact:
    return ConditionFact("ptsd", ref, Code(SNOMED, "47505003", "Posttraumatic stress disorder (disorder)"),
                         "PTSD", "active", "confirmed", date(2024, 1, 1), date(2024, 1, 2))


def nightmares() -> ConditionFact:
    return ConditionFact("nightmares", "Condition/nm-1", Code("http://hl7.org/fhir/sid/icd-10-cm", "F51.5",
                                                             "Nightmare disorder"),
                         "Nightmare disorder", "active", None, date(2024, 3, 1), None)


def drug(ingredient: str, ref: str | None = None, *, mg: float | None = 50, status: str = "active",
         current: bool = True, start: date = date(2026, 6, 1), end: date | None = None,
         draft: bool = False, selected: bool = False, systemic: bool = True) -> DrugFact:
    end = end or (TODAY if current else start + timedelta(weeks=4))
    return DrugFact(
        reference=ref or f"MedicationRequest/{ingredient}-{status}", drug_class=CLASS_OF[ingredient],
        ingredient=ingredient, label=f"{ingredient} tablet", matched_by="ingredient", code=None,
        status="draft" if draft else status, authored_on=start, period_start=start, period_end=end,
        route=None, systemic_non_procedural=systemic, daily_dose_mg=mg,
        dose_text=f"{mg:g} mg/day" if mg is not None else None, is_current=current and not draft,
        is_draft_order=draft, is_selected=selected, trial_start=start, trial_end=end)


def order(ingredient: str, oid: str, *, mg: float | None = 50, selected: bool = True, **kw) -> DrugFact:
    return drug(ingredient, f"MedicationRequest/{oid}", mg=mg, draft=True, selected=selected, current=False, **kw)


def sessions(n: int, start: date = date(2025, 1, 6)) -> list[TherapySession]:
    return [TherapySession(f"Procedure/s{i}", "prolonged-exposure", "Prolonged exposure therapy", "name", None,
                           start + timedelta(weeks=i)) for i in range(n)]


def trial(d: DrugFact, *, adequate: bool, failed: bool, verdict: str | None = None) -> SsriTrial:
    verdict = verdict or ("failed" if failed else "adequate" if adequate
                          else "under-way" if d.is_current else "stopped-early")
    return SsriTrial(d, adequate, failed, verdict=verdict, current=d.is_current)


def facts(*, ptsd_active: bool = True, n_sessions: int = 0, drugs=(), trials=(), drafts=(),
          nightmare: bool = False, session_start: date = date(2025, 1, 6)) -> ClinicalFacts:
    return ClinicalFacts(
        today=TODAY, ptsd=[ptsd()] if ptsd_active else [], nightmares=[nightmares()] if nightmare else [],
        drugs=list(drugs), draft_drugs=list(drafts), sessions=sessions(n_sessions, session_start),
        ssri_trials=list(trials))


def topics(findings) -> list[str]:
    return [f.topic for f in findings]


def one(findings, topic: str):
    found = [f for f in findings if f.topic == topic]
    assert len(found) == 1, topics(findings)
    return found[0]


# Typical treatment histories --------------------------------------------------------------------
SERTRALINE_FAILED = drug("sertraline", "MedicationRequest/sert", mg=100, status="completed", current=False,
                         start=date(2025, 1, 1), end=date(2025, 9, 1))
VENLAFAXINE_DONE = drug("venlafaxine", "MedicationRequest/venla", mg=150, status="completed", current=False,
                        start=date(2025, 9, 2), end=date(2026, 3, 1))


def failed_ssri_facts(**kw) -> ClinicalFacts:
    drugs = kw.pop("drugs", [])
    trials = [trial(SERTRALINE_FAILED, adequate=True, failed=True)]
    if VENLAFAXINE_DONE in drugs:  # the second first-line agent, adequate and failed too
        trials.append(trial(VENLAFAXINE_DONE, adequate=True, failed=True))
    return facts(n_sessions=10, drugs=[SERTRALINE_FAILED, *drugs], trials=trials, **kw)


# --- the ladder -------------------------------------------------------------------------------
def test_no_trauma_focused_sessions_gives_step_1_with_the_count():
    f = one(evaluate_rules("patient-view", facts(n_sessions=0)), "step-1-trauma-focused-psychotherapy")
    assert f.indicator == "info"
    assert f.values["session_count"] == "0" and f.session_count == 0
    assert f.values["ptsd_condition"] == "Condition/ptsd-1"
    assert f.conditions == (ptsd(),)


@pytest.mark.parametrize("n, expected", [(7, "step-1-trauma-focused-psychotherapy"), (8, "step-2-ssri")])
def test_a_course_of_eight_pe_sessions_completes_step_1(n, expected):
    # issue #8 point 11 (service rule): PE is complete at 8 sessions (the seed's 9 of any mix is gone)
    out = evaluate_rules("patient-view", facts(n_sessions=n))
    assert topics(out) == [expected]
    if n == 7:
        assert out[0].values["session_count"] == "7"
        assert out[0].values["course_sessions"] == "7" and out[0].values["course_needed"] == "8"
        assert out[0].flags == {"course-stopped"}


def test_step_2_without_any_ssri_offers_a_new_prescription():
    f = one(evaluate_rules("patient-view", facts(n_sessions=9)), "step-2-ssri")
    assert f.flags == frozenset()
    assert "current_drugs" not in f.values
    assert f.session_count == 9
    assert f.not_found  # "no SSRI prescription" is part of the evidence


def test_step_2_names_the_current_ssri_trial_under_way():
    current = drug("sertraline", mg=25, start=date(2026, 11, 1))
    f = one(evaluate_rules("patient-view", facts(n_sessions=9, drugs=[current],
                                                 trials=[trial(current, adequate=False, failed=False)])),
            "step-2-ssri")
    assert f.flags == {"on-antidepressant", "trial-under-way"}
    assert f.values["current_drugs"] == "sertraline 25 mg/day"
    assert f.values["trial_drug"] == "sertraline 25 mg/day"
    assert f.drugs == (current,)
    assert not f.not_found


def test_step_2_with_venlafaxine_current_is_a_first_line_trial_under_way():
    """Issue #8 point 9: venlafaxine is a first-line agent (no "SSRI first" rule any more)."""
    venla = drug("venlafaxine", mg=150)
    f = one(evaluate_rules("patient-view", facts(n_sessions=9, drugs=[venla],
                                                 trials=[trial(venla, adequate=False, failed=False)])),
            "step-2-ssri")
    assert f.flags == {"on-antidepressant", "trial-under-way"}


def test_failed_ssri_and_no_venlafaxine_gives_step_4():
    f = one(evaluate_rules("patient-view", failed_ssri_facts()), "step-4-venlafaxine")
    assert f.values["failed_ssri"] == "sertraline"
    assert [t.drug for t in f.ssri_trials] == [SERTRALINE_FAILED]
    assert f.flags == {"after-ssri"}  # no current antidepressant: the venlafaxine draft is offered
    assert f.values["next_agent"] == "venlafaxine"


def test_failed_venlafaxine_leads_to_sertraline_or_paroxetine():
    venla = drug("venlafaxine", mg=150, status="completed", current=False, start=date(2025, 1, 1),
                 end=date(2025, 9, 1))
    f = one(evaluate_rules("patient-view", facts(n_sessions=10, drugs=[venla],
                                                 trials=[trial(venla, adequate=True, failed=True)])),
            "step-4-venlafaxine")
    assert f.flags == {"after-venlafaxine"} and f.values["next_agent"] == "sertraline or paroxetine"


def test_ssri_not_tolerated_counts_as_failed_and_leads_to_venlafaxine():
    stopped = drug("paroxetine", mg=20, status="stopped", current=False)
    out = evaluate_rules("patient-view", facts(n_sessions=9, drugs=[stopped],
                                               trials=[trial(stopped, adequate=False, failed=True,
                                                             verdict="not-tolerated")]))
    assert topics(out) == ["step-4-venlafaxine"]
    assert out[0].values["failed_ssri"] == "paroxetine"


@pytest.mark.parametrize("status", ["cancelled", "entered-in-error", "draft"])
def test_venlafaxine_that_was_never_taken_does_not_count(status):
    never = drug("venlafaxine", status=status, current=False)
    assert topics(evaluate_rules("patient-view", failed_ssri_facts(drugs=[never]))) == ["step-4-venlafaxine"]


def test_venlafaxine_taken_but_never_with_psychotherapy_gives_step_5():
    out = evaluate_rules("patient-view", failed_ssri_facts(drugs=[VENLAFAXINE_DONE], session_start=date(2024, 1, 1)))
    f = one(out, "step-5-combine")
    assert f.session_count == 10 and f.values["session_count"] == "10"
    assert set(f.drugs) == {SERTRALINE_FAILED, VENLAFAXINE_DONE}


def test_everything_done_and_combined_gives_step_6():
    # sessions start during the sertraline prescription: combined
    out = evaluate_rules("patient-view", failed_ssri_facts(drugs=[VENLAFAXINE_DONE], session_start=date(2025, 2, 1)))
    assert topics(out) == ["step-6-specialized-referral"]


def test_adequate_trial_that_has_not_failed_moves_on_to_combining():
    """Documented in next_step.py: cannot come from the facts stage today (adequate + PTSD = failed)."""
    responding = drug("sertraline", mg=100, start=date(2025, 1, 1))
    out = evaluate_rules("patient-view", facts(n_sessions=9, drugs=[responding], session_start=date(2024, 1, 1),
                                               trials=[trial(responding, adequate=True, failed=False)]))
    assert topics(out) == ["step-5-combine"]


def test_exactly_one_next_step_card_for_every_history():
    histories = itertools.product(
        [0, 8, 9, 12],  # sessions
        ["none", "under-way", "failed", "stopped"],  # SSRI trial
        [False, True],  # venlafaxine taken
        [date(2024, 1, 1), date(2025, 2, 1)],  # sessions before / during the SSRI
        [False, True],  # PTSD active
    )
    for n, ssri, venla, session_start, active in histories:
        drugs, trials = [], []
        if ssri != "none":
            d = drug("sertraline", mg=100, status="stopped" if ssri == "stopped" else "active",
                     current=ssri == "under-way", start=date(2025, 1, 1),
                     end=TODAY if ssri == "under-way" else date(2025, 9, 1))
            drugs.append(d)
            trials.append(trial(d, adequate=ssri == "failed", failed=ssri in ("failed", "stopped")))
        if venla:
            drugs.append(VENLAFAXINE_DONE)
        f = facts(ptsd_active=active, n_sessions=n, drugs=drugs, trials=trials, session_start=session_start)
        ladder = [t for t in topics(evaluate_rules("patient-view", f)) if t in LADDER]
        assert len(ladder) == (1 if active else 0), (n, ssri, venla, session_start, active, ladder)


def test_no_next_step_cards_without_active_ptsd_or_on_order_hooks():
    assert evaluate_rules("patient-view", facts(ptsd_active=False, nightmare=True)) == []
    for hook in ("order-select", "order-sign"):
        assert evaluate_rules(hook, facts(n_sessions=0, nightmare=True)) == []


# --- nightmares (independent step 3) ----------------------------------------------------------
def test_nightmares_without_prazosin_add_step_3_after_the_ladder_card():
    out = evaluate_rules("patient-view", facts(n_sessions=0, nightmare=True))
    assert topics(out) == ["step-1-trauma-focused-psychotherapy", "step-3-nightmares"]
    f = out[1]
    assert {c.kind for c in f.conditions} == {"ptsd", "nightmares"}
    assert f.not_found


@pytest.mark.parametrize("status", ["completed", "active", "stopped", "cancelled"])
def test_the_nightmare_card_stays_whatever_prazosin_was_taken(status):
    """Image rehearsal therapy is the recommended treatment (AASM 2018); prazosin "may be used":
    the card fires while nightmares are active and IRT is not done, whatever the prazosin
    (issue #8 point 12)."""
    prazosin = drug("prazosin", mg=2, status=status, current=status == "active")
    out = evaluate_rules("patient-view", facts(nightmare=True, drugs=[prazosin]))
    assert "step-3-nightmares" in topics(out)


def test_the_nightmare_card_is_silent_once_image_rehearsal_therapy_is_done():
    f = facts(nightmare=True)
    f.irt_sessions = [TherapySession("Procedure/irt1", "image-rehearsal-therapy", "Imagery rehearsal therapy",
                                     "name", None, date(2026, 6, 1))]
    assert "step-3-nightmares" not in topics(evaluate_rules("patient-view", f))


def test_image_rehearsal_therapy_is_read_by_text_and_never_counts_as_a_ptsd_session():
    from cds_service.facts import builders as b, extract_facts

    irt = b.procedure(text="Imagery rehearsal therapy for nightmares", id="irt", performed="2026-05-01")
    referral = b.procedure(text="Referral for image rehearsal therapy", id="ref", performed="2026-05-02")
    got = extract_facts(b.record(procedures=[irt, referral]), today=TODAY, hook="patient-view")
    assert [s.reference for s in got.irt_sessions] == ["Procedure/irt"] and got.sessions == []


# --- benzodiazepines --------------------------------------------------------------------------
def test_current_benzodiazepine_in_ptsd_is_a_taper_warning_on_patient_view():
    lorazepam, clonazepam = drug("lorazepam", mg=2), drug("clonazepam", mg=1)
    f = one(evaluate_rules("patient-view", facts(drugs=[lorazepam, clonazepam])), "benzodiazepine-avoid")
    assert f.indicator == "warning"
    assert f.values["drugs"] == "lorazepam, clonazepam"
    assert f.drugs == (lorazepam, clonazepam) and f.conditions == (ptsd(),)
    assert f.target_order is None


@pytest.mark.parametrize("case", ["no-ptsd", "not-current", "procedural-route"])
def test_benzodiazepine_patient_view_silent_cases(case):
    benzo = drug("lorazepam", current=case != "not-current", systemic=case != "procedural-route")
    out = evaluate_rules("patient-view", facts(ptsd_active=case != "no-ptsd", drugs=[benzo]))
    assert "benzodiazepine-avoid" not in topics(out)


def test_selected_benzodiazepine_order_is_critical_with_its_target():
    out = evaluate_rules("order-select", facts(drafts=[order("lorazepam", "d1"), order("lorazepam", "d2", selected=False)]))
    assert topics(out) == ["benzodiazepine-avoid"]
    assert out[0].indicator == "critical"
    assert out[0].target_order == "MedicationRequest/d1"
    assert out[0].values == {"drug": "lorazepam", "orders": "lorazepam, 50 mg/day"}
    assert out[0].orders == (("MedicationRequest/d1", {"drug": "lorazepam", "daily_dose": "50 mg/day"}),)


@pytest.mark.parametrize("status, fires", [("draft", True), ("active", True), ("on-hold", True), (None, True),
                                           ("stopped", False), ("cancelled", False), ("completed", False),
                                           ("entered-in-error", False)])
def test_only_orders_being_placed_are_checked(status, fires):
    """A stopped or cancelled order in draftOrders is a discontinuation: no 'delete this order' card.
    An active one is a revised order being re-signed (hook library order-sign 1.1.0)."""
    lorazepam = msgspec.structs.replace(order("lorazepam", "o1", mg=1), status=status)
    out = evaluate_rules("order-sign", facts(drafts=[lorazepam]))
    assert (topics(out) == ["benzodiazepine-avoid"]) is fires


def test_order_sign_checks_every_draft_in_one_card():
    drafts = [order("lorazepam", "d1", selected=False), order("clonazepam", "d2", selected=False)]
    [out] = evaluate_rules("order-sign", facts(drafts=drafts))
    assert [ref for ref, _ in out.orders] == ["MedicationRequest/d1", "MedicationRequest/d2"]
    assert out.indicator == "critical" and out.values["drug"] == "lorazepam, clonazepam"


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_benzodiazepine_order_silent_without_ptsd_or_when_procedural(hook):
    assert evaluate_rules(hook, facts(ptsd_active=False, drafts=[order("lorazepam", "d1")])) == []
    assert evaluate_rules(hook, facts(drafts=[order("midazolam", "d1", systemic=False)])) == []
    # a current benzodiazepine of the record is not an order: nothing on the order hooks
    assert evaluate_rules(hook, facts(drugs=[drug("lorazepam")])) == []


# --- MDMA -------------------------------------------------------------------------------------
def test_mdma_current_for_any_patient_is_a_warning_without_guideline_steps():
    f = one(evaluate_rules("patient-view", facts(ptsd_active=False, drugs=[drug("midomafetamine", mg=None)])),
            "mdma-investigational")
    assert f.indicator == "warning" and f.flags == frozenset() and f.open_steps == ()


def test_mdma_for_a_ptsd_patient_lists_the_open_steps():
    f = one(evaluate_rules("patient-view", facts(n_sessions=2, nightmare=True, drugs=[drug("midomafetamine")])),
            "mdma-investigational")
    assert f.flags == {"ptsd", "steps-open"}
    assert f.open_steps == ("step-1-trauma-focused-psychotherapy", "step-2-ssri", "step-3-nightmares",
                            "step-5-combine")


def test_mdma_when_every_step_is_done_says_so():
    done = failed_ssri_facts(drugs=[VENLAFAXINE_DONE, drug("midomafetamine")], session_start=date(2025, 2, 1))
    assert open_steps(done) == ()
    f = one(evaluate_rules("patient-view", done), "mdma-investigational")
    assert f.flags == {"ptsd", "steps-done"}


def test_mdma_orders_are_critical_per_selected_order_for_any_patient():
    drafts = [order("midomafetamine", "m1", mg=None), order("midomafetamine", "m2", mg=None, selected=False)]
    out = evaluate_rules("order-select", facts(ptsd_active=False, drafts=drafts))
    assert [(f.topic, f.indicator, f.target_order) for f in out] == [
        ("mdma-investigational", "critical", "MedicationRequest/m1")]
    assert out[0].values["daily_dose"] == "daily dose not recorded"
    signed = evaluate_rules("order-sign", facts(ptsd_active=False, drafts=drafts))
    assert [f.target_order for f in signed] == ["MedicationRequest/m1", "MedicationRequest/m2"]


# --- dose ranges ------------------------------------------------------------------------------
@pytest.mark.parametrize("ingredient, mg, direction", [
    ("sertraline", 12.5, "below"), ("sertraline", 250, "above"),
    ("paroxetine", 10, "below"), ("paroxetine", 60, "above"),
    ("venlafaxine", 25, "below"), ("venlafaxine", 450, "above"),
    ("prazosin", 30, "above"),  # prazosin: no lower bound (issue #8 point 12)
])
def test_dose_outside_the_range_warns(ingredient, mg, direction):
    out = evaluate_rules("order-select", facts(drafts=[order(ingredient, "x", mg=mg)]))
    f = one(out, "dose-out-of-range")
    assert f.indicator == "warning"
    # above the range for a drug that is not current: no replacement at the top (not a start dose)
    assert f.flags == {direction, ingredient} | ({"not-on-drug"} if direction == "above" else set())
    assert f.values["direction"] == direction and f.values["daily_dose"] == f"{mg:g} mg/day"
    assert f.target_order == "MedicationRequest/x"


@pytest.mark.parametrize("ingredient, mg", [("sertraline", 25), ("sertraline", 200), ("paroxetine", 20),
                                            ("paroxetine", 50), ("venlafaxine", 37.5), ("venlafaxine", 300),
                                            ("prazosin", 0.5), ("prazosin", 12), ("sertraline", None),
                                            ("fluoxetine", 100)])
def test_dose_in_range_unknown_or_unchecked_is_silent(ingredient, mg):
    assert evaluate_rules("order-sign", facts(drafts=[order(ingredient, "x", mg=mg)])) == []


def test_dose_check_needs_ptsd_an_order_hook_and_a_selected_draft():
    high = order("sertraline", "x", mg=400)
    assert evaluate_rules("order-select", facts(ptsd_active=False, drafts=[high])) == []
    assert evaluate_rules("order-select", facts(drafts=[replace(high, is_selected=False)])) == []
    assert "dose-out-of-range" not in topics(evaluate_rules("patient-view", facts(drugs=[drug("sertraline", mg=400)])))


# --- the module as a whole --------------------------------------------------------------------
def test_safety_findings_come_first_and_topics_are_the_issue_list():
    out = evaluate_rules("patient-view", facts(drugs=[drug("lorazepam"), drug("midomafetamine")]))
    assert topics(out)[:2] == ["benzodiazepine-avoid", "mdma-investigational"]
    assert set(TOPICS) == {
        "step-1-trauma-focused-psychotherapy", "step-2-ssri", "step-3-nightmares", "step-4-venlafaxine",
        "step-5-combine", "step-6-specialized-referral", "benzodiazepine-avoid", "mdma-investigational",
        "dose-out-of-range", "order-not-checked"}
    assert TOPICS[:len(SAFETY_TOPICS)] == SAFETY_TOPICS


def test_unknown_hook_is_refused():
    with pytest.raises(ValueError):
        evaluate_rules("encounter-start", facts())


def test_guideline_dose_ranges_are_the_issue_ranges():
    ranges = load_guideline().dose_ranges
    assert {k: (r.min_mg, r.max_mg, r.max_mg_male) for k, r in ranges.items()} == {
        "sertraline": (25, 200, None), "paroxetine": (20, 50, None), "venlafaxine": (37.5, 300, None),
        "prazosin": (None, 12, 20)}  # issue #8 point 12: VA trial maxima by sex, no "usual range"
    assert all(r.source and (r.url is None or r.url.startswith("https://")) for r in ranges.values())


@pytest.mark.parametrize("sex, mg, fires", [
    ("male", 20, False), ("male", 21, True), ("female", 13, True), ("female", 12, False),
    (None, 13, True), ("unknown", 13, True), ("male", 0.5, False),  # no lower bound
])
def test_prazosin_upper_bound_by_sex(sex, mg, fires):
    f = facts(drafts=[order("prazosin", "p1", mg=mg)])
    f.sex = sex
    out = [x for x in evaluate_rules("order-sign", f) if x.topic == "dose-out-of-range"]
    assert bool(out) == fires
    if out:
        assert out[0].values["dose_range"] == ("up to 20 mg/day" if sex == "male" else "up to 12 mg/day")


def test_bad_guideline_data_is_refused_with_the_field_named(tmp_path):
    good = GUIDELINE_FILE.read_text()
    bad = tmp_path / "guideline.toml"
    bad.write_text(good.replace("max_mg = 200", "max_mg = 20"))  # sertraline 25-20: min >= max
    with pytest.raises(GuidelineDataError, match="dose_ranges.sertraline"):
        load_guideline(bad)
    bad.write_text(good.replace("order = [", "orders = ["))
    with pytest.raises(GuidelineDataError, match="next_step.order is missing"):
        load_guideline(bad)


@pytest.mark.parametrize("label, fires", [("paroxetine 10 MG Oral Tablet", True),
                                          ("24 HR paroxetine 12.5 MG Extended Release Oral Tablet", False),
                                          ("Paxil CR 62.5 mg", False)])
def test_paroxetine_range_is_for_immediate_release_only(label, fires):
    mg = 10 if "10 MG" in label else (12.5 if "12.5" in label else 62.5)
    draft = msgspec.structs.replace(order("paroxetine", "p1", mg=mg), label=label)
    assert (topics(evaluate_rules("order-sign", facts(drafts=[draft]))) == ["dose-out-of-range"]) is fires


# --- patient: age and death (issue #8 points 4 and 5) ----------------------------------------------
@pytest.mark.parametrize("birth, today, age", [
    ("2010-05-01", date(2026, 11, 28), 16), ("2008-11-28", date(2026, 11, 28), 18),
    ("2008-11-29", date(2026, 11, 28), 17), ("2008", date(2026, 11, 28), 17),  # partial: latest day
    ("2008-11", date(2026, 11, 28), 17), ("not a date", date(2026, 11, 28), None),
])
def test_age_from_birth_date_never_overstated(birth, today, age):
    from cds_service.facts.fhir_read import SkipCounter
    from cds_service.facts.patient import read_patient

    assert read_patient({"resourceType": "Patient", "birthDate": birth}, today, SkipCounter()).age_years == age


def test_under_18_the_step_is_psychotherapy_whatever_was_tried_and_no_drug_is_drafted():
    from cds_service.rules.next_step import open_steps

    failed = trial(drug("sertraline", mg=100, current=False), adequate=True, failed=True)
    f = facts(n_sessions=20, trials=[failed], drugs=[failed.drug])
    f.age_years = 16
    [step] = [x for x in evaluate_rules("patient-view", f) if x.topic.startswith("step-")]
    assert step.topic == "step-1-trauma-focused-psychotherapy" and "under-18" in step.flags
    assert step.values["age"] == "16"
    assert "step-2-ssri" not in open_steps(f) and "step-4-venlafaxine" not in open_steps(f)


def test_a_deceased_patient_gets_no_cards():
    f = facts(drafts=[order("lorazepam", "o1", mg=1)])
    assert evaluate_rules("order-sign", f)
    f.deceased = True
    assert evaluate_rules("order-sign", f) == [] and evaluate_rules("patient-view", f) == []
