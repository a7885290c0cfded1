"""One structured log line per call; never the access token, never patient data (issue #2 point 10)."""

from __future__ import annotations

import json
import logging

import pytest
import responses

from tests.builders import PATIENT_ID, full_prefetch, hook_request, patient, ptsd_condition, searchset

FHIR = "http://127.0.0.1:8999/fhir"
SECRET = "eyJ-very-secret-access-token"


def access_lines(caplog):
    return [r.fields for r in caplog.records if r.name == "ptsd_cds.access"]


@pytest.mark.spec("REQ-06")
def test_one_line_per_call_with_the_call_facts(client, caplog):
    caplog.set_level(logging.INFO, logger="ptsd_cds")
    body = hook_request("patient-view", prefetch=full_prefetch(conditions=[ptsd_condition()]))
    resp = client.post("/cds-services/ptsd-patient-view", data=json.dumps(body), content_type="application/json")
    lines = access_lines(caplog)
    assert len(lines) == 1
    line = lines[0]
    assert line["service"] == "ptsd-patient-view" and line["hook"] == "patient-view"
    assert line["hookInstance"] == body["hookInstance"]
    assert line["status"] == 200 and line["cards"] == len(resp.get_json()["cards"]) >= 1
    assert isinstance(line["duration_ms"], float)


def test_error_calls_are_logged_with_the_reason(client, caplog):
    caplog.set_level(logging.INFO, logger="ptsd_cds")
    client.post("/cds-services/ptsd-patient-view", data="{", content_type="application/json")
    (line,) = access_lines(caplog)
    assert line["status"] == 400 and "not valid JSON" in line["error"]


@pytest.mark.spec("FA-03")
def test_logs_never_hold_the_token_or_patient_data(client, caplog):
    caplog.set_level(logging.DEBUG)
    condition = ptsd_condition()
    condition["note"] = [{"text": "Patient Zelda Quux reports flashbacks"}]
    with responses.RequestsMock() as rsps:
        rsps.get(f"{FHIR}/Patient/{PATIENT_ID}", json=patient())
        rsps.get(f"{FHIR}/Condition", json=searchset(condition))
        rsps.get(f"{FHIR}/MedicationRequest", status=500, json={"resourceType": "OperationOutcome"})
        rsps.get(f"{FHIR}/Procedure", json=searchset())
        body = hook_request("patient-view", fhir_server=FHIR, token=SECRET)
        client.post("/cds-services/ptsd-patient-view", data=json.dumps(body), content_type="application/json")
    text = caplog.text + " ".join(json.dumps(getattr(r, "fields", {})) for r in caplog.records)
    assert access_lines(caplog)[0]["status"] == 412
    assert SECRET not in text and "Zelda" not in text and "flashbacks" not in text


@pytest.mark.spec("ERR-03 ERR-06")
def test_an_internal_error_is_500_without_details(app, caplog, monkeypatch):
    caplog.set_level(logging.INFO)

    def explode(*args, **kwargs):
        raise ValueError("patient Zelda Quux has no card")

    monkeypatch.setattr(app.extensions["ptsd_cds"].engine, "run", explode)
    body = hook_request("patient-view", prefetch=full_prefetch())
    resp = app.test_client().post("/cds-services/ptsd-patient-view", data=json.dumps(body),
                                  content_type="application/json")
    assert resp.status_code == 500
    assert resp.get_json()["resourceType"] == "OperationOutcome"
    assert "Zelda" not in resp.get_data(as_text=True) and "Traceback" not in resp.get_data(as_text=True)
    assert "Zelda" not in caplog.text
    assert any("ValueError" in r.getMessage() for r in caplog.records if r.name == "ptsd_cds.app")


def test_unreadable_resources_are_counted_in_the_log_line(client, caplog):
    caplog.set_level(logging.INFO, logger="ptsd_cds")
    broken = {**ptsd_condition("c-bad"), "code": "F43.10"}
    body = hook_request("patient-view", prefetch=full_prefetch(conditions=[ptsd_condition(), broken]))
    client.post("/cds-services/ptsd-patient-view", data=json.dumps(body), content_type="application/json")
    (line,) = access_lines(caplog)
    assert line["unreadable"] == {"Condition": 1}


def test_calls_that_match_no_route_or_method_are_logged_too(client, caplog):
    caplog.set_level(logging.INFO, logger="ptsd_cds")
    client.get("/cds-services/ptsd-patient-view")  # 405
    client.get("/no-such-page/" + "x" * 5000)  # 404, long path
    lines = access_lines(caplog)
    assert [line["status"] for line in lines] == [405, 404]
    assert len(lines[1]["path"]) <= 200
