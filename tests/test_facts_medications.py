"""Drug classification, route, current, daily dose, draft orders and SSRI trials."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from cds_service.facts import builders as b
from cds_service.facts import extract_facts
from cds_service.codesystems import PSYCHOTHERAPY
from cds_service.facts.builders import RXNORM

TODAY = date(2026, 11, 28)
UNII = "http://fdasis.nlm.nih.gov"


def ago(days: int) -> str:
    return (TODAY - timedelta(days=days)).isoformat()


def facts_for(*requests, hook="patient-view", conditions=(), **kw):
    return extract_facts(b.record(medication_requests=requests, conditions=conditions, **kw),
                         today=TODAY, hook=hook)


def one_drug(*requests, **kw):
    [drug] = facts_for(*requests, **kw).drugs
    return drug


# --- classification -------------------------------------------------------------------------------
@pytest.mark.parametrize("system, code, display, ingredient, drug_class, matched_by", [
    (RXNORM, "197901", "lorazepam 1 MG Oral Tablet", "lorazepam", "benzodiazepine", "valueset"),
    (RXNORM, "6470", "lorazepam", "lorazepam", "benzodiazepine", "ingredient"),
    (RXNORM, "563026", "Diazepam [Valium]", "diazepam", "benzodiazepine", "ingredient"),
    (RXNORM, "1153378", "Clonazepam [Klonopin]", "clonazepam", "benzodiazepine", "ingredient"),
    (RXNORM, "312941", "sertraline 50 MG Oral Tablet", "sertraline", "ssri", "valueset"),
    (RXNORM, "1738495", "paroxetine hydrochloride 20 MG Oral Tablet", "paroxetine", "ssri", "valueset"),
    (RXNORM, "310385", "fluoxetine 20 MG Oral Capsule", "fluoxetine", "ssri", "valueset"),
    (RXNORM, "313583", "24 HR venlafaxine 37.5 MG Extended Release Oral Capsule", "venlafaxine", "snri", "valueset"),
    (RXNORM, "312593", "prazosin 1 MG Oral Capsule", "prazosin", "prazosin", "valueset"),
    (UNII, "KE1SEN21RM", "MDMA", "midomafetamine", "mdma", "ingredient"),
])
def test_classification_by_code(system, code, display, ingredient, drug_class, matched_by):
    drug = one_drug(b.med_request(code, system, display=display))
    assert (drug.ingredient, drug.drug_class, drug.matched_by) == (ingredient, drug_class, matched_by)
    assert drug.code.code == code


def test_code_match_beats_name_and_reports_the_matching_coding():
    r = b.med_request("999", "http://hospital.example.org/drugs", text="Valium 5 mg")
    r["medicationCodeableConcept"]["coding"].append(b.coding(RXNORM, "197591", "diazepam 5 MG Oral Tablet"))
    drug = one_drug(r)
    assert (drug.matched_by, drug.code.code, drug.label) == ("valueset", "197591", "Valium 5 mg")


@pytest.mark.parametrize("text, ingredient, drug_class", [
    ("Ativan 1 mg tablet", "lorazepam", "benzodiazepine"),
    ("MDMA 80 mg capsule (study drug)", "midomafetamine", "mdma"),
    ("midomafetamine", "midomafetamine", "mdma"),
    ("PAXIL 20MG TAB", "paroxetine", "ssri"),
])
def test_name_fallback_with_local_code(text, ingredient, drug_class):
    drug = one_drug(b.med_request("LOC-1", "http://hospital.example.org/drugs", text=text))
    assert (drug.ingredient, drug.drug_class, drug.matched_by, drug.code) == (ingredient, drug_class, "name", None)
    assert drug.label == text


@pytest.mark.parametrize("text", ["Hydrochlorothiazide 25 MG", "olanzapine 10 MG Oral Tablet"])
def test_other_drugs_are_ignored(text):
    assert facts_for(b.med_request(text=text)).drugs == []


def test_contained_medication():
    med = b.medication("197901", display="lorazepam 1 MG Oral Tablet", id="m1")
    drug = one_drug(b.med_request(reference="#m1", contained=[med]))
    assert (drug.ingredient, drug.matched_by, drug.label) == ("lorazepam", "valueset", "lorazepam 1 MG Oral Tablet")


def test_referenced_medication_from_the_record():
    med = b.medication(text="Klonopin 0.5 mg", system=None, id="m2")
    r = b.med_request(reference="https://ehr.example.org/fhir/Medication/m2/_history/3")
    drug = one_drug(r, medications={"Medication/m2": med})
    assert (drug.ingredient, drug.matched_by) == ("clonazepam", "name")


def test_unresolved_reference_falls_back_to_display():
    drug = one_drug(b.med_request(reference="Medication/missing", reference_display="Xanax 0.25 mg"))
    assert (drug.ingredient, drug.label) == ("alprazolam", "Xanax 0.25 mg")


def test_malformed_referenced_medication_is_counted_and_display_used():
    bad = {"resourceType": "Medication", "id": "m3", "code": "lorazepam"}
    facts = facts_for(b.med_request(reference="Medication/m3", reference_display="Ativan"),
                      medications={"Medication/m3": bad})
    assert facts.drugs[0].ingredient == "lorazepam" and facts.skipped == {"Medication": 1}


def test_referenced_medication_of_no_interest_is_not_validated():
    other = {**b.medication("316049", display="Hydrochlorothiazide 25 MG", id="m4"), "unknownElement": 1}
    facts = facts_for(b.med_request(reference="Medication/m4"), medications={"Medication/m4": other})
    assert facts.drugs == [] and facts.skipped == {}


def test_medication_with_bad_coding_shape_is_counted():
    bad = {"resourceType": "Medication", "id": "m5", "code": {"coding": "197901"}}
    facts = facts_for(b.med_request(reference="Medication/m5", reference_display="lorazepam 1 mg"),
                      medications={"Medication/m5": bad})
    assert facts.drugs[0].matched_by == "name" and facts.skipped == {"Medication": 1}


# --- route ----------------------------------------------------------------------------------------
def test_iv_midazolam_by_route():
    drug = one_drug(b.med_request("6960", display="midazolam", dosage=[b.dosage(2, "mg", route="Intravenous")]))
    assert drug.route == "Intravenous" and drug.systemic_non_procedural is False


def test_rectal_diazepam_by_value_set_display():
    # 801961 is "2 ML diazepam 5 MG/ML Rectal Gel" in the CDC value set; the record only says "Diazepam".
    drug = one_drug(b.med_request("801961", display="Diazepam"))
    assert drug.systemic_non_procedural is False


def test_intranasal_midazolam_by_name():
    drug = one_drug(b.med_request(text="midazolam 50 MG/ML Nasal Spray"))
    assert drug.systemic_non_procedural is False


@pytest.mark.parametrize("name", ["midazolam 1 MG/ML Intravenous Solution", "lorazepam 2 mg intramuscular"])
def test_intravenous_or_intramuscular_in_the_drug_name(name):
    assert one_drug(b.med_request(text=name)).systemic_non_procedural is False


def test_nasal_only_brand():
    assert one_drug(b.med_request(text="Valtoco 10 mg")).systemic_non_procedural is False


def test_injection_form_on_medication_resource():
    med = b.medication(text="Lorazepam 2 mg/mL", system=None, id="m1", form="Injectable solution")
    assert one_drug(b.med_request(reference="#m1", contained=[med])).systemic_non_procedural is False


def test_oral_benzodiazepine_is_systemic():
    drug = one_drug(b.med_request("197901", dosage=[b.dosage(1, "TAB", route="Oral route")]))
    assert drug.systemic_non_procedural is True and drug.route == "Oral route"


# --- current --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, current", [
    ({"validity": (ago(30), ago(-30))}, True),
    ({"validity": (ago(800), ago(-1))}, True),            # old order, validity still covers today
    ({"validity": (ago(90), ago(10)), "authored": ago(90)}, False),  # ended
    ({"validity": (ago(-5), ago(-30))}, False),           # starts in the future
    ({"authored": ago(100)}, True),
    ({"authored": ago(400)}, False),
    ({"validity": (ago(100), None)}, True),               # no end, no authoredOn: validity start
    ({"authored": ago(100), "status": "stopped"}, False),
    ({"authored": ago(100), "status": "completed"}, False),
    ({"authored": ago(100), "status": "on-hold"}, True),
    ({}, False),                                          # no date at all
])
def test_current(kw, current):
    assert one_drug(b.med_request("197901", **kw)).is_current is current


def test_entered_in_error_orders_are_dropped():
    assert facts_for(b.med_request("197901", status="entered-in-error", authored=ago(1))).drugs == []


# --- draft orders ---------------------------------------------------------------------------------
def drafts(hook, selections=()):
    orders = [b.med_request("197901", id="d1", status="draft"), b.med_request("312941", id="d2", status="draft"),
              {"resourceType": "NutritionOrder", "id": "n1", "status": "draft"}]
    return extract_facts(b.record(draft_orders=orders, selections=selections), today=TODAY, hook=hook)


def test_a_do_not_perform_order_is_not_a_prescription():
    refusal = {**b.med_request("197901", id="dnp"), "doNotPerform": True}
    facts = extract_facts(b.record(medication_requests=[refusal], draft_orders=[{**refusal, "status": "draft"}]),
                          today=TODAY, hook="order-sign")
    assert facts.drugs == [] and facts.draft_drugs == []


def test_order_select_marks_only_selected_drafts():
    facts = drafts("order-select", ["MedicationRequest/d2"])
    assert [(d.reference, d.is_selected) for d in facts.draft_drugs] == [
        ("MedicationRequest/d1", False), ("MedicationRequest/d2", True)]
    assert all(d.is_draft_order and not d.is_current for d in facts.draft_drugs)
    assert facts.drugs == [] and facts.ssri_trials == []


def test_order_sign_selects_every_draft():
    assert [d.is_selected for d in drafts("order-sign").draft_drugs] == [True, True]


# --- daily dose -----------------------------------------------------------------------------------
@pytest.mark.parametrize("code, dosage, mg", [
    ("312941", b.dosage(50, "mg"), 50),                                  # mg once daily
    ("312941", b.dosage(25, "mg", frequency=2), 50),                      # twice a day
    ("312941", b.dosage(2, "{tbl}"), 100),                                # tablets x 50 MG strength
    ("312941", b.dosage(1, "TAB", frequency=1, period=12, period_unit="h"), 100),  # every 12 h
    ("313583", b.dosage(2, "capsule"), 75),                               # 2 x 37.5 MG capsules
    ("312941", b.dosage(0.1, "g"), 100),
    ("312941", b.dosage(50000, "mcg"), 50),
    ("312941", b.dosage(350, "mg", period=1, period_unit="wk"), 50),
    ("312941", b.dosage(1), 50),                                          # unitless (Synthea): 1 tablet
    ("312941", b.dosage(50, "mg", legacy=True), 50),                      # STU3 Dosage.doseQuantity
    ("312941", b.dosage(50, "mg", frequency=None, period=None, period_unit=None, timing_code="BID"), 100),
    ("861064", b.dosage(2.5, "mL"), 50),                                  # 20 MG/ML oral solution
    ("312941", {"doseAndRate": [{"doseQuantity": {"value": 25, "unit": "mg"}}],
                "timing": {"repeat": {"when": ["MORN", "HS"]}}}, 50),     # two times of day
    ("312593", {"doseAndRate": [{"doseQuantity": {"value": 2, "unit": "mg"}}],
                "timing": {"repeat": {"frequency": 1, "when": ["HS"]}}}, 2),  # prazosin once at bedtime
    ("312941", b.dosage(50, "mg", frequency=None, period=None, period_unit=None, timing_code="HS"), 50),
    ("312941", b.dosage(50, "mg", frequency=None, period=None, period_unit=None, timing_code="Q12H"), 100),
    ("312941", b.dosage(50, "mg", frequency=None, period=None, period_unit=None, timing_code="Q8H"), 150),
    ("312941", {"doseAndRate": [{"doseRange": {"low": {"value": 1, "unit": "tablet"},
                                               "high": {"value": 4, "unit": "tablet"}}}],
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}}, 200),  # up to 4 tablets
    ("312941", b.dosage(50), 50),                                         # unitless 50 on a 50 MG tablet: mg
])
def test_daily_dose(code, dosage, mg):
    drug = one_drug(b.med_request(code, dosage=[dosage]))
    assert drug.daily_dose_mg == pytest.approx(mg)


@pytest.mark.parametrize("dosage", [
    None,                                                                 # no dosageInstruction
    [b.dosage(frequency=1)],                                              # no dose
    [b.dosage(50, "mg", frequency=None, period=None, period_unit=None)],  # no timing: how often?
    [b.dosage(1, "mg", as_needed=True)],                                  # as needed
    [b.dosage(5, "puff")],                                                # unknown unit
    [b.dosage(50, "mg", period_unit="fortnight")],                        # unknown period unit
    [b.dosage(30)],                                                       # unitless 30 on a 50 MG tablet
])
def test_daily_dose_unknown(dosage):
    drug = one_drug(b.med_request("312941", dosage=dosage))
    assert drug.daily_dose_mg is None and drug.dose_text is None


def test_tablets_need_a_strength_in_the_name():
    assert one_drug(b.med_request("36437", display="sertraline", dosage=[b.dosage(1, "tablet")])).daily_dose_mg is None


def test_strength_from_free_text_name():
    drug = one_drug(b.med_request(text="Ativan 1 mg tablet", dosage=[b.dosage(2, "tablet", frequency=3)]))
    assert drug.daily_dose_mg == 6


def test_the_last_computable_step_is_used():
    drug = one_drug(b.med_request("312941", dosage=[b.dosage(100, "mg"), b.dosage(1, "mg", as_needed=True)]))
    assert drug.daily_dose_mg == 100
    titration = [{**b.dosage(25, "mg"), "sequence": 1}, {**b.dosage(400, "mg"), "sequence": 2}]
    assert one_drug(b.med_request("312941", dosage=titration)).daily_dose_mg == 400  # the target dose
    assert one_drug(b.med_request("312941", dosage=list(reversed(titration)))).daily_dose_mg == 400  # by sequence


def test_a_dose_range_keeps_both_ends():
    """High end: the most that may be given (range check); low end: what is sure to be given (adequacy)."""
    dosage = {"doseAndRate": [{"doseRange": {"low": {"value": 25, "unit": "mg"}, "high": {"value": 100, "unit": "mg"}}}],
              "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}}
    drug = one_drug(b.med_request("312941", dosage=[dosage]))
    assert (drug.daily_dose_low_mg, drug.daily_dose_mg) == (25, 100)
    assert drug.dose_text.startswith("25 to 100 mg/day")
    long_range = b.med_request("312941", authored="2026-01-01", validity=("2026-01-01", "2026-06-01"),
                               status="completed", dosage=[dosage])
    assert not one_trial(long_range).adequate  # 25 mg/day is all that is sure: not adequate


@pytest.mark.parametrize("dosage, mg", [
    ({**b.dosage(1, "mg"), "sequence": True}, 1),                          # unreadable sequence: order kept
    ({"doseAndRate": [{"doseQuantity": {"value": 1, "unit": "mg"}}], "timing": {"repeat": {"frequency": True}}},
     None),                                                               # unreadable frequency: no dose
])
def test_an_unreadable_dosage_field_never_drops_the_drug(dosage, mg):
    drug = one_drug(b.med_request("197901", dosage=[dosage]))
    assert drug.ingredient == "lorazepam" and drug.daily_dose_mg == mg


def test_frequency_with_times_of_day():
    with_meals = {"doseAndRate": [{"doseQuantity": {"value": 150, "unit": "mg"}}],
                  "timing": {"repeat": {"frequency": 2, "when": ["C"]}}}
    assert one_drug(b.med_request("312941", dosage=[with_meals])).daily_dose_mg == 300


def test_dose_text():
    assert one_drug(b.med_request("312941", dosage=[b.dosage(50, "mg")])).dose_text == "50 mg/day (50 mg, 1 × per day)"
    drug = one_drug(b.med_request("313583", dosage=[b.dosage(1, "CAP", frequency=1, period=2, period_unit="d")]))
    assert drug.dose_text == "18.75 mg/day (1 × 37.5 mg, 1 × every 2 d)"


# --- trials ---------------------------------------------------------------------------------------
PTSD = b.condition("47505003")


def sertraline(mg: float, *, weeks: float | None = None, status: str = "completed", authored_days_ago: int = 200,
               **kw):
    start = TODAY - timedelta(days=authored_days_ago)
    validity = (start.isoformat(), (start + timedelta(days=round(weeks * 7))).isoformat()) if weeks else None
    return b.med_request("312941", authored=start.isoformat(), validity=validity, status=status,
                         dosage=[b.dosage(mg, "mg")], **kw)


def one_trial(*requests, conditions=()):
    [trial] = facts_for(*requests, conditions=conditions).ssri_trials
    return trial


def test_adequate_trial_without_ptsd_has_not_failed():
    trial = one_trial(sertraline(50, weeks=10))
    assert trial.adequate and not trial.failed
    assert trial.drug.trial_weeks == 10
    assert "adequate" in trial.reason


def test_adequate_trial_with_active_ptsd_has_failed():
    trial = one_trial(sertraline(100, weeks=12), conditions=[PTSD])
    assert trial.adequate and trial.failed and "PTSD still active" in trial.reason


def test_too_short_trial():
    trial = one_trial(sertraline(100, weeks=7), conditions=[PTSD])
    assert not trial.adequate and not trial.failed


def test_too_low_dose():
    assert not one_trial(sertraline(25, weeks=12)).adequate


def test_stopped_before_adequate_is_an_incomplete_trial_not_a_failure():
    """Issue #8 point 10: stopped after 3 weeks without a not-tolerated reason is no failed trial."""
    trial = one_trial(sertraline(50, weeks=3, status="stopped"))
    assert not trial.adequate and not trial.failed and trial.verdict == "stopped-early"
    assert "incomplete trial" in trial.reason


def test_current_order_runs_until_today():
    trial = one_trial(sertraline(50, status="active", authored_days_ago=60))
    assert trial.drug.trial_end == TODAY and trial.adequate


def test_stopped_without_end_or_supply_lasted_the_default_30_days():
    trial = one_trial(sertraline(50, status="stopped", authored_days_ago=300))
    assert trial.drug.trial_end - trial.drug.trial_start == timedelta(days=30)
    assert not trial.failed and trial.verdict == "stopped-early"


def test_monthly_renewals_are_one_course_of_the_drug():
    """Three back-to-back 30-day sertraline 100 mg orders: one 13-week trial, adequate (issue #3:
    trials are per drug), not three short ones that never become adequate."""
    renewals = [sertraline(100, weeks=30 / 7, authored_days_ago=days, id=f"r{days}",
                           status="active" if days == 30 else "completed") for days in (90, 60, 30)]
    trial = one_trial(*renewals, conditions=[PTSD])
    assert trial.adequate and trial.failed and len(trial.orders) == 3
    assert trial.drug.reference == "MedicationRequest/r30"  # the latest order
    assert "3 orders" in trial.reason


def test_monthly_refills_without_end_dates_are_one_course():
    """Real records often carry only authoredOn: six monthly sertraline 100 mg orders (no validity
    period, all completed) are ~5 months of treatment, not six one-day trials."""
    months = [b.med_request("312938", id=f"m{m}", status="completed", authored=f"2026-{m:02d}-01",
                            dosage=[b.dosage(100, "mg")]) for m in range(4, 10)]
    trial = one_trial(*months, conditions=[PTSD])
    assert trial.adequate and trial.failed and len(trial.orders) == 6
    # the last order, no longer current and without end or supply, lasted 30 days
    assert trial.start == date(2026, 4, 1) and trial.end == date(2026, 10, 1)


def test_orders_written_far_apart_without_end_dates_are_not_bridged():
    """Issue #8 point 10: orders without end dates are one course while no gap exceeds 100 days."""
    spaced = [b.med_request("312938", id=f"s{m}", status="completed", authored=f"2026-{m:02d}-01",
                            dosage=[b.dosage(100, "mg")]) for m in (1, 6, 11)]  # every 5 months
    trial = one_trial(*spaced, conditions=[PTSD])
    assert not trial.adequate and len(trial.orders) == 1  # the latest course: one order
    within = [b.med_request("312938", id=f"s{m}", status="completed", authored=f"2026-{m:02d}-01",
                            dosage=[b.dosage(100, "mg")]) for m in (3, 6, 9)]  # every 3 months (< 100 days)
    assert one_trial(*within, conditions=[PTSD]).adequate


def test_expected_supply_duration_and_repeats_give_the_period():
    order = b.med_request("312938", status="completed", authored="2026-03-01", dosage=[b.dosage(100, "mg")])
    order["dispenseRequest"] = {"expectedSupplyDuration": {"value": 30, "unit": "days", "code": "d"},
                                "numberOfRepeatsAllowed": 2}
    drug = one_drug(order)
    assert drug.trial_end == date(2026, 5, 30)  # 30 days x 3 dispenses
    assert one_trial(order, conditions=[PTSD]).adequate


def test_an_active_order_with_a_stopped_duplicate_is_not_a_failure():
    active = sertraline(50, status="active", authored_days_ago=39, id="active")
    duplicate = sertraline(50, weeks=3, status="stopped", authored_days_ago=39, id="dup")
    trial = one_trial(active, duplicate, conditions=[PTSD])
    assert not trial.adequate and not trial.failed  # still being taken


def test_a_stopped_order_counts_one_fill_not_its_repeats():
    order = b.med_request("312938", status="stopped", authored="2026-01-01", dosage=[b.dosage(100, "mg")])
    order["dispenseRequest"] = {"expectedSupplyDuration": {"value": 30, "code": "d"}, "numberOfRepeatsAllowed": 5}
    assert one_drug(order).trial_end == date(2026, 1, 31)


def test_a_huge_repeat_count_is_capped_at_today():
    order = b.med_request("312938", status="completed", authored="2026-01-01", dosage=[b.dosage(100, "mg")])
    order["dispenseRequest"] = {"expectedSupplyDuration": {"value": 30, "code": "d"},
                                "numberOfRepeatsAllowed": 400000}
    assert one_drug(order).trial_end == TODAY


def test_bridging_stops_at_today_and_post_dated_orders_are_not_taken():
    orders = [b.med_request("312938", id=i, status=st, authored=a, dosage=[b.dosage(100, "mg")])
              for i, st, a in (("a", "completed", "2026-10-15"), ("b", "active", "2026-11-15"))]
    post = b.med_request("312938", id="c", status="active", authored="2026-12-15", dosage=[b.dosage(100, "mg")])
    trial = one_trial(*orders, post, conditions=[PTSD])
    assert len(trial.orders) == 2 and not trial.adequate  # 44 days so far, not 61


def test_a_break_longer_than_the_gap_splits_the_course():
    first = sertraline(100, weeks=5, authored_days_ago=200, id="a")
    second = sertraline(100, weeks=5, authored_days_ago=100, id="b")  # ~9 weeks later
    assert not one_trial(first, second, conditions=[PTSD]).adequate


def test_a_stopped_titration_step_followed_by_the_target_dose_is_not_a_failure():
    """Label titration: sertraline 25 mg for a week (stopped), then 50 mg (active, 3 weeks in)."""
    step = sertraline(25, weeks=1, status="stopped", authored_days_ago=28, id="step")
    target = sertraline(50, status="active", authored_days_ago=21, id="target")
    trial = one_trial(step, target, conditions=[PTSD])
    assert not trial.adequate and not trial.failed  # still under way: step 2 ("optimise")


def test_weeks_at_a_low_dose_do_not_count_towards_adequacy():
    low = sertraline(25, weeks=6, authored_days_ago=120, id="low")
    high = sertraline(50, weeks=4, authored_days_ago=78, id="high")  # continues at 50 mg for 4 weeks
    assert not one_trial(low, high).adequate


@pytest.mark.parametrize("status", ["cancelled", "entered-in-error", "draft"])
def test_orders_that_were_never_taken_are_not_trials(status):
    never = sertraline(100, weeks=12, status=status)
    assert facts_for(never, conditions=[PTSD]).ssri_trials == []


@pytest.mark.parametrize("status, combined", [("completed", True), ("cancelled", False)])
def test_combined_needs_a_drug_that_was_taken(status, combined):
    drug = sertraline(100, weeks=20, status=status, authored_days_ago=200)
    session = b.procedure("prolonged-exposure", PSYCHOTHERAPY, performed=ago(150))
    facts = extract_facts(b.record(medication_requests=[drug], procedures=[session], conditions=[PTSD]),
                          today=TODAY, hook="patient-view")
    assert facts.combined is combined


def test_paroxetine_threshold_and_fluoxetine_is_not_a_first_line_trial():
    parox = b.med_request("1738495", id="p", authored=ago(100), validity=(ago(100), ago(30)),
                          status="completed", dosage=[b.dosage(1, "tablet")])
    fluox = b.med_request("313990", id="f", authored=ago(100), validity=(ago(100), ago(30)),
                          status="completed", dosage=[b.dosage(1, "tablet")])
    trials = facts_for(parox, fluox).ssri_trials
    assert [(t.drug.ingredient, t.adequate) for t in trials] == [("paroxetine", True)]


def test_venlafaxine_is_a_first_line_trial_and_drafts_are_not():
    venlafaxine = b.med_request("313585", authored=ago(100), dosage=[b.dosage(1, "capsule")])
    facts = extract_facts(b.record(medication_requests=[venlafaxine],
                                   draft_orders=[b.med_request("312941", id="d", status="draft")]),
                          today=TODAY, hook="order-sign")
    assert [t.drug.ingredient for t in facts.ssri_trials] == ["venlafaxine"]
    assert len(facts.drugs) == 1 and len(facts.draft_drugs) == 1


# --- robustness -----------------------------------------------------------------------------------
def test_malformed_requests_are_skipped_and_counted():
    good = b.med_request("197901", id="good")
    string_med = {**b.med_request(id="s1"), "medicationCodeableConcept": "lorazepam"}
    unreadable_code = {**b.med_request(id="s5"), "medicationCodeableConcept": {"coding": "197901"}}
    facts = facts_for(good, string_med, unreadable_code, 42)
    assert [d.reference for d in facts.drugs] == ["MedicationRequest/good"]
    assert facts.skipped == {"MedicationRequest": 3}


def test_a_drug_order_with_other_malformed_elements_is_still_recognised():
    """Safety first: a benzodiazepine order whose dose, date or subject is malformed still counts
    (only the elements that validate on their own are read); a bad dose gives no dose."""
    dict_dosage = {**b.med_request("197901", id="s2"), "dosageInstruction": {"text": "1 tab"}}
    bad_date = b.med_request("197901", id="s3", authored="yesterday", dosage=[b.dosage(2, "mg")])
    no_subject = {k: v for k, v in b.med_request("197901", id="s4").items() if k != "subject"}
    object_rate = {**b.med_request("197901", id="s6"),
                   "dosageInstruction": [{"doseAndRate": {"doseQuantity": {"value": 1, "unit": "mg"}}}]}
    facts = facts_for(hook="order-sign", draft_orders=[dict_dosage, bad_date, no_subject, object_rate])
    assert [(d.reference, d.ingredient) for d in facts.draft_drugs] == [
        ("MedicationRequest/s2", "lorazepam"), ("MedicationRequest/s3", "lorazepam"),
        ("MedicationRequest/s4", "lorazepam"), ("MedicationRequest/s6", "lorazepam")]
    by_id = {d.reference: d for d in facts.draft_drugs}
    assert by_id["MedicationRequest/s3"].authored_on is None
    assert by_id["MedicationRequest/s3"].daily_dose_mg == 2.0  # its dosage was valid
    assert by_id["MedicationRequest/s6"].daily_dose_mg is None  # its dosage was not
    # The missing subject is not an element the facts read: that order is read completely; all
    # four benzodiazepine drafts also get the full R4 check, which each of them fails.
    assert facts.skipped == {"MedicationRequest (partly read)": 3, "MedicationRequest (draft, not valid FHIR R4)": 4}
