"""Trauma-focused psychotherapy sessions and the "combined" fact."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from cds_service.facts import builders as b
from cds_service.facts import extract_facts
from cds_service.facts.builders import CPT, PSYCHOTHERAPY, SNOMED

TODAY = date(2026, 11, 28)
LOCAL = "http://hospital.example.org/codes"
EXAMPLE_MAP = Path(__file__).resolve().parent.parent / "fixtures" / "site-code-map.example.json"


def ago(days: int) -> str:
    return (TODAY - timedelta(days=days)).isoformat()


def sessions_for(*procedures, **kw):
    return extract_facts(b.record(procedures=procedures), today=TODAY, hook="patient-view", **kw).sessions


# --- recognised by code ---------------------------------------------------------------------------
@pytest.mark.parametrize("therapy", ["prolonged-exposure", "cognitive-processing-therapy", "emdr"])
def test_project_code(therapy):
    [s] = sessions_for(b.procedure(therapy, PSYCHOTHERAPY, performed=ago(3), id="x"))
    assert (s.therapy, s.matched_by, s.code.code, s.reference, s.performed) == (
        therapy, "valueset", therapy, "Procedure/x", TODAY - timedelta(days=3))


def test_site_map_file():
    [s] = sessions_for(b.procedure("PSY-EMDR", LOCAL, display="EMDR sess."), site_code_map=str(EXAMPLE_MAP))
    assert (s.therapy, s.matched_by) == ("emdr", "code-map")


def test_site_map_dict_beats_text():
    site = {"procedures": [{"system": LOCAL, "code": "T-1", "therapy": "cognitive-processing-therapy"}]}
    [s] = sessions_for(b.procedure("T-1", LOCAL, text="Prolonged exposure"), site_code_map=site)
    assert (s.therapy, s.matched_by) == ("cognitive-processing-therapy", "code-map")


def test_local_code_without_site_map_is_not_counted():
    assert sessions_for(b.procedure("PSY-PE", LOCAL, display="Therapy session")) == []


# --- recognised by text ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, therapy", [
    ("Prolonged Exposure therapy", "prolonged-exposure"),
    ("Cognitive processing therapy (CPT), session 4", "cognitive-processing-therapy"),
    ("EMDR", "emdr"),
    ("Eye movement desensitization and reprocessing", "emdr"),
])
def test_therapy_named_in_text(text, therapy):
    [s] = sessions_for(b.procedure(text=text))
    assert (s.therapy, s.matched_by, s.code, s.label) == (therapy, "name", None, text)


def test_generic_cpt_code_with_therapy_in_text_counts():
    [s] = sessions_for(b.procedure("90837", CPT, display="Psychotherapy, 60 minutes",
                                   text="Prolonged exposure therapy session"))
    assert s.therapy == "prolonged-exposure"


@pytest.mark.parametrize("procedure", [
    b.procedure("90837", CPT, display="Individual psychotherapy"),
    b.procedure("90834", CPT, display="Psychotherapy, 45 minutes with patient"),
    b.procedure("75516001", SNOMED, display="Psychotherapy"),
    b.procedure("90837", CPT, text="CPT 90837"),
    b.procedure(text="CPT session"),
    b.procedure(text="Referral to prolonged exposure therapy"),
    b.procedure(text="Trauma-focused CBT"),
    b.procedure(text="Psychoeducation about prolonged exposure"),
    b.procedure(text="Educational session: what is EMDR?"),
    b.procedure(text="Prolonged exposure - patient did not attend"),
    b.procedure(text="EMDR session missed"),
])
def test_not_trauma_focused(procedure):
    assert sessions_for(procedure) == []


@pytest.mark.parametrize("status", ["in-progress", "not-done", "stopped", "preparation", "entered-in-error"])
def test_only_completed_procedures_count(status):
    assert sessions_for(b.procedure("emdr", PSYCHOTHERAPY, status=status)) == []


def test_performed_period_start():
    [s] = sessions_for(b.procedure("emdr", PSYCHOTHERAPY, performed="2026-03-02T10:00:00Z", performed_period=True))
    assert s.performed == date(2026, 3, 2)


def test_each_procedure_is_one_session():
    procs = [b.procedure("prolonged-exposure", PSYCHOTHERAPY, id=f"p{i}", performed=ago(7 * i)) for i in range(9)]
    facts = extract_facts(b.record(procedures=procs), today=TODAY, hook="patient-view")
    assert facts.session_count == 9 and facts.adequate_psychotherapy


def test_malformed_procedure_is_skipped_and_counted():
    string_code = {**b.procedure(id="s1"), "code": "EMDR"}
    bad_date = b.procedure("emdr", PSYCHOTHERAPY, id="s2", performed="last week")
    good = b.procedure("emdr", PSYCHOTHERAPY, id="good")
    facts = extract_facts(b.record(procedures=[string_code, bad_date, good, []]), today=TODAY, hook="patient-view")
    assert [s.reference for s in facts.sessions] == ["Procedure/s2", "Procedure/good"]
    assert facts.sessions[0].performed is None  # the bad date is not read; the session still counts
    assert facts.skipped == {"Procedure": 2, "Procedure (partly read)": 1}


# --- combined -------------------------------------------------------------------------------------
def combined(code: str, session_days_ago: int) -> bool:
    drug = b.med_request(code, authored=ago(100), validity=(ago(100), ago(20)), status="completed")
    session = b.procedure("prolonged-exposure", PSYCHOTHERAPY, performed=ago(session_days_ago))
    record = b.record(medication_requests=[drug], procedures=[session])
    return extract_facts(record, today=TODAY, hook="patient-view").combined


@pytest.mark.parametrize("code, days, expected", [
    ("312941", 50, True),    # sertraline, session during the trial
    ("312941", 100, True),   # first day
    ("312941", 10, False),   # after the order ended
    ("312941", 150, False),  # before it started
    ("313585", 50, True),    # venlafaxine counts
    ("312593", 50, False),   # prazosin does not
])
def test_combined(code, days, expected):
    assert combined(code, days) is expected


def test_a_completed_session_dated_in_the_future_does_not_count():
    future = b.procedure("emdr", PSYCHOTHERAPY, id="f", performed=(TODAY + timedelta(days=30)).isoformat())
    past = b.procedure("emdr", PSYCHOTHERAPY, id="p", performed=(TODAY - timedelta(days=30)).isoformat())
    facts = extract_facts(b.record(procedures=[future, past]), today=TODAY, hook="patient-view")
    assert [s.reference for s in facts.sessions] == ["Procedure/p"]


@pytest.mark.parametrize("text", ["Prolonged exposure therapy session 1: psychoeducation and breathing retraining",
                                  "EMDR session 5, rescheduled from missed appointment"])
def test_sessions_that_mention_education_or_a_missed_visit_still_count(text):
    assert len(sessions_for(b.procedure(text=text))) == 1
