"""Smoke test of the ``make bench`` harness (scripts/bench): the records it measures are valid FHIR of
the requested size and shape, its hook bodies are accepted by the service, its parse-only baseline
and its slow FHIR server answer as the bench assumes. Nothing here is timed: the bench prints
figures, the suite only checks that the instrument measures what it says."""

from __future__ import annotations

import json
import threading
import urllib.request
from datetime import date, timedelta
from http.server import ThreadingHTTPServer

import pytest
from fhir.resources.R4B.bundle import Bundle

from cds_service.config import Settings
from cds_service.facts import extract_facts
from cds_service.patient_data.record import PatientRecord
from scripts.bench import records
from scripts.bench.baseline import app as baseline_app
from scripts.bench.fhir_server import make_handler

TODAY = date(2026, 11, 28)


def _resources(shape: str, n: int):
    conditions, medications, procedures = records.record(shape, n, TODAY)
    return conditions, medications, procedures


def _facts(shape: str, n: int):
    conditions, medications, procedures = _resources(shape, n)
    record = PatientRecord(patient_id=records.PATIENT_ID, patient=records.patient(), conditions=conditions,
                           medication_requests=medications, procedures=procedures)
    return extract_facts(record, today=TODAY, hook="patient-view")


@pytest.mark.parametrize("shape", records.SHAPES)
@pytest.mark.parametrize("n", [20, 200])
def test_records_are_valid_fhir_of_the_requested_size(shape, n):
    conditions, medications, procedures = _resources(shape, n)
    assert len(conditions) + len(medications) + len(procedures) == n
    body = records.patient_view(shape, n, TODAY)
    for key in ("conditions", "medications", "procedures"):
        Bundle.model_validate(body["prefetch"][key])  # full R4B validation of every resource
    every = conditions + medications + procedures
    assert len({(r["resourceType"], r["id"]) for r in every}) == n  # ids are unique per type
    latest = max(r.get("authoredOn") or r.get("recordedDate") or r["performedPeriod"]["start"] for r in every)
    assert latest[:10] <= TODAY.isoformat()  # nothing in the future


def test_treatment_history_is_read_closely_and_sessions_fall_in_drug_periods():
    facts = _facts("history", 200)
    assert facts.ptsd  # active PTSD
    assert len(facts.drugs) == 99  # every order (199 // 2) is a drug of interest
    assert all(d.ingredient == "sertraline" for d in facts.drugs)
    assert len(facts.sessions) == 100  # every procedure a trauma-focused session
    assert facts.combined  # a session inside an SSRI period


def test_outside_variant_puts_no_session_inside_a_drug_period():
    facts = _facts("outside", 200)
    assert len(facts.sessions) == 100 and len(facts.drugs) == 99
    assert not facts.combined  # defeats an early exit of any session x drug pass
    periods = [(d.trial_start, d.trial_end) for d in facts.drugs]
    assert not any(start <= s.performed <= end for s in facts.sessions for start, end in periods)


def test_typical_chart_is_mostly_unrelated_to_the_rules():
    facts = _facts("typical", 2000)
    assert facts.ptsd
    read_closely = len(facts.drugs) + len(facts.sessions)
    assert 2 <= read_closely <= 0.05 * 2000


def test_largest_record_fits_the_default_body_limit():
    body = json.dumps(records.patient_view("history", 10000, TODAY)).encode()
    assert len(body) < Settings().max_body  # production settings must accept the 10,000-resource row
    entries = sum(len(b.get("entry", [])) for k, b in json.loads(body)["prefetch"].items() if k != "patient")
    assert entries == 10000


def test_bench_bodies_are_accepted_and_order_drafts_get_the_benzodiazepine_card(client):
    for shape in records.SHAPES:
        resp = client.post("/cds-services/ptsd-patient-view", json=records.patient_view(shape, 20, TODAY))
        assert resp.status_code == 200, resp.get_data(as_text=True)
    for hook in ("order-select", "order-sign"):
        resp = client.post(f"/cds-services/ptsd-{hook}", json=records.order_hook(hook, TODAY))
        assert resp.status_code == 200
        assert "benzodiazepine-avoid" in [c["source"]["topic"]["code"] for c in resp.get_json()["cards"]]
    first = client.post("/cds-services/ptsd-patient-view/feedback", json=records.feedback_body("card-a"))
    again = client.post("/cds-services/ptsd-patient-view/feedback", json=records.feedback_body("card-b"))
    assert "1 new" in first.get_json()["issue"][0]["diagnostics"]
    assert "1 new" in again.get_json()["issue"][0]["diagnostics"]  # a different card is a new row


def test_baseline_parses_and_answers_no_cards():
    client = baseline_app.test_client()
    resp = client.post("/cds-services/ptsd-patient-view", json=records.patient_view("history", 20, TODAY))
    assert resp.get_json() == {"cards": []}
    assert client.post("/cds-services/x", data=b"{not json", content_type="application/json").status_code == 400


def test_slow_fhir_server_serves_the_record_after_its_delay():
    conditions, medications, procedures = _resources("history", 20)
    answers = {"Patient": json.dumps(records.patient()).encode(),
               "MedicationRequest": json.dumps(records.searchset(medications)).encode()}
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(answers, 0.0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/fhir"
        with urllib.request.urlopen(f"{base}/MedicationRequest?patient={records.PATIENT_ID}", timeout=5) as r:
            bundle = json.load(r)
        assert [e["resource"]["id"] for e in bundle["entry"]] == [m["id"] for m in medications]
        with urllib.request.urlopen(f"{base}/Patient/{records.PATIENT_ID}", timeout=5) as r:
            assert json.load(r)["id"] == records.PATIENT_ID
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}/Observation?patient=x", timeout=5)
    finally:
        server.shutdown()
        server.server_close()


def test_history_spans_years_of_renewals():
    _, medications, _ = _resources("history", 2000)
    first = date.fromisoformat(medications[0]["authoredOn"][:10])
    assert TODAY - first > timedelta(days=365 * 5)
    assert [m["status"] for m in medications].count("active") == 1  # one current order, the rest renewals
