"""Prefetch, else the client's FHIR server (CHECKLIST PF-13..17, FA-02, ERR-02).

The FHIR server is faked with ``responses``; it sits on loopback, which development settings
allow (auth off), so no allow-list entry is needed.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
import responses

from tests.builders import (PATIENT_ID, full_prefetch, hook_request, lorazepam, patient,
                            ptsd_condition, searchset, topics)
from tests.conftest import assert_conformant, assert_outcome

FHIR = "http://127.0.0.1:8999/fhir"
URL = "/cds-services/ptsd-patient-view"


def call(client, body, service="ptsd-patient-view"):
    return client.post(f"/cds-services/{service}", data=json.dumps(body), content_type="application/json")


def fake_server(rsps, conditions=(), medications=(), procedures=(), status=200):
    rsps.get(f"{FHIR}/Patient/{PATIENT_ID}", json=patient(), status=status)
    rsps.get(f"{FHIR}/Condition", json=searchset(*conditions), status=status)
    rsps.get(f"{FHIR}/MedicationRequest", json=searchset(*medications), status=status)
    rsps.get(f"{FHIR}/Procedure", json=searchset(*procedures), status=status)


def paths(rsps):
    return sorted(c.request.path_url for c in rsps.calls)


@pytest.mark.spec("PF-15 PF-17 FA-02")
def test_without_prefetch_every_key_is_queried_with_the_bearer_token(client):
    with responses.RequestsMock() as rsps:
        fake_server(rsps, conditions=[ptsd_condition()])
        resp = call(client, hook_request("patient-view", fhir_server=FHIR, token="tok-123"))
        result = assert_conformant(resp)
        assert paths(rsps) == [f"/fhir/Condition?patient={PATIENT_ID}",
                               f"/fhir/MedicationRequest?patient={PATIENT_ID}",
                               f"/fhir/Patient/{PATIENT_ID}",
                               f"/fhir/Procedure?patient={PATIENT_ID}"]
        assert all(c.request.headers["Authorization"] == "Bearer tok-123" for c in rsps.calls)
    assert "step-1-trauma-focused-psychotherapy" in topics(result)


@pytest.mark.spec("FA-06")
def test_open_fhir_server_gets_no_authorization_header(client):
    with responses.RequestsMock() as rsps:
        fake_server(rsps)
        assert_conformant(call(client, hook_request("patient-view", fhir_server=FHIR)))
        assert all("Authorization" not in c.request.headers for c in rsps.calls)


def test_missing_keys_are_fetched_concurrently(client):
    threads = set()

    def slow(request):
        threads.add(threading.current_thread().name)
        time.sleep(0.05)
        return 200, {}, json.dumps(searchset())

    with responses.RequestsMock() as rsps:
        for path in ("Condition", "MedicationRequest", "Procedure"):
            rsps.add_callback(responses.GET, f"{FHIR}/{path}", callback=slow)
        rsps.get(f"{FHIR}/Patient/{PATIENT_ID}", json=patient())
        assert_conformant(call(client, hook_request("patient-view", fhir_server=FHIR)))
    assert len(threads) > 1


@pytest.mark.spec("PF-13 PF-15")
def test_only_the_keys_not_prefetched_are_queried(client):
    prefetch = full_prefetch(conditions=[ptsd_condition()])
    del prefetch["procedures"]
    prefetch["medications"] = None  # null: no data, not a reason to query
    with responses.RequestsMock() as rsps:
        rsps.get(f"{FHIR}/Procedure", json=searchset())
        assert_conformant(call(client, hook_request("patient-view", prefetch=prefetch, fhir_server=FHIR)))
        assert paths(rsps) == [f"/fhir/Procedure?patient={PATIENT_ID}"]


@pytest.mark.spec("PF-14")
def test_search_results_are_paged_through_next_links(client):
    page2 = f"{FHIR}/Condition?patient={PATIENT_ID}&_page=2"
    with responses.RequestsMock() as rsps:
        rsps.get(f"{FHIR}/Condition", json=searchset(next_url=page2),
                 match=[responses.matchers.query_param_matcher({"patient": PATIENT_ID})])
        rsps.get(f"{FHIR}/Condition", json=searchset(ptsd_condition()),
                 match=[responses.matchers.query_param_matcher({"patient": PATIENT_ID, "_page": "2"})])
        rsps.get(f"{FHIR}/MedicationRequest", json=searchset())
        rsps.get(f"{FHIR}/Procedure", json=searchset())
        rsps.get(f"{FHIR}/Patient/{PATIENT_ID}", json=patient())
        result = assert_conformant(call(client, hook_request("patient-view", fhir_server=FHIR, token="t")))
        page_calls = [c for c in rsps.calls if "_page=2" in c.request.url]
        assert page_calls and page_calls[0].request.headers["Authorization"] == "Bearer t"
    assert "step-1-trauma-focused-psychotherapy" in topics(result)


@pytest.mark.spec("PF-14")
def test_a_paged_prefetch_bundle_is_completed_on_the_fhir_server(client):
    prefetch = full_prefetch()
    prefetch["conditions"] = searchset(next_url=f"{FHIR}/Condition?patient={PATIENT_ID}&_page=2")
    with responses.RequestsMock() as rsps:
        rsps.get(f"{FHIR}/Condition", json=searchset(ptsd_condition()))
        result = assert_conformant(call(client, hook_request("patient-view", prefetch=prefetch, fhir_server=FHIR)))
    assert "step-1-trauma-focused-psychotherapy" in topics(result)


@pytest.mark.spec("PF-14 PF-16")
def test_a_paged_prefetch_bundle_without_fhir_server_is_412(client):
    prefetch = full_prefetch()
    prefetch["conditions"] = searchset(next_url=f"{FHIR}/Condition?_page=2")
    text = assert_outcome(call(client, hook_request("patient-view", prefetch=prefetch)), 412)
    assert "conditions" in text and "next link" in text


def test_endless_paging_stops_at_the_page_cap(make_app):
    client = make_app(fhir_max_pages=3).test_client()
    with responses.RequestsMock() as rsps:
        rsps.get(f"{FHIR}/Condition", json=searchset(next_url=f"{FHIR}/Condition?patient={PATIENT_ID}&_page=n"))
        rsps.get(f"{FHIR}/MedicationRequest", json=searchset())
        rsps.get(f"{FHIR}/Procedure", json=searchset())
        rsps.get(f"{FHIR}/Patient/{PATIENT_ID}", json=patient())
        text = assert_outcome(call(client, hook_request("patient-view", fhir_server=FHIR)), 412)
        assert len([c for c in rsps.calls if "/Condition" in c.request.url]) <= 3
    assert "pages" in text or "loop" in text


@pytest.mark.spec("PF-16 ERR-02")
def test_no_prefetch_and_no_fhir_server_is_412(client):
    resp = call(client, hook_request("patient-view"))
    text = assert_outcome(resp, 412)
    for key in ("conditions", "medications", "procedures"):
        assert key in text
    assert "no fhirServer" in text


@pytest.mark.spec("PF-16 ERR-02")
def test_fhir_server_error_is_412(client):
    with responses.RequestsMock() as rsps:
        fake_server(rsps, status=500)
        text = assert_outcome(call(client, hook_request("patient-view", fhir_server=FHIR, token="tok-123")), 412)
    assert "HTTP 500" in text and "tok-123" not in text


@pytest.mark.spec("PF-16")
def test_fhir_server_timeout_is_412(client):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake_server(rsps)
        rsps.replace(responses.GET, f"{FHIR}/Condition", body=requests.exceptions.ReadTimeout("slow"))
        text = assert_outcome(call(client, hook_request("patient-view", fhir_server=FHIR)), 412)
    assert "conditions" in text and "timed out" in text


def test_the_total_time_budget_ends_slow_paging(make_app):
    client = make_app(fhir_total_budget=0.3).test_client()

    def slow_page(request):
        time.sleep(0.35)
        return 200, {}, json.dumps(searchset(next_url=f"{FHIR}/Condition?patient={PATIENT_ID}&_page=2"))

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.GET, f"{FHIR}/Condition", callback=slow_page)
        rsps.get(f"{FHIR}/MedicationRequest", json=searchset())
        rsps.get(f"{FHIR}/Procedure", json=searchset())
        rsps.get(f"{FHIR}/Patient/{PATIENT_ID}", json=patient())
        text = assert_outcome(call(client, hook_request("patient-view", fhir_server=FHIR)), 412)
    assert "budget" in text


def test_missing_patient_resource_is_not_fatal(client):
    with responses.RequestsMock() as rsps:
        fake_server(rsps, conditions=[ptsd_condition()])
        rsps.replace(responses.GET, f"{FHIR}/Patient/{PATIENT_ID}", status=404, json={"resourceType": "OperationOutcome"})
        result = assert_conformant(call(client, hook_request("patient-view", fhir_server=FHIR)))
    assert "step-1-trauma-focused-psychotherapy" in topics(result)


@pytest.mark.spec("PF-13")
def test_operation_outcome_prefetch_is_an_error_that_is_not_requeried(client):
    prefetch = full_prefetch()
    prefetch["conditions"] = {"resourceType": "OperationOutcome",
                              "issue": [{"severity": "error", "code": "processing"}]}
    with responses.RequestsMock() as rsps:  # any request would fail the test (no registered URL)
        text = assert_outcome(call(client, hook_request("patient-view", prefetch=prefetch, fhir_server=FHIR)), 412)
        assert len(rsps.calls) == 0
    assert "conditions" in text and "reported an error" in text


def test_a_prefetch_value_that_is_not_json_object_is_requeried(client):
    prefetch = full_prefetch()
    prefetch["conditions"] = "<html>Tomcat error</html>"
    with responses.RequestsMock() as rsps:
        rsps.get(f"{FHIR}/Condition", json=searchset(ptsd_condition()))
        result = assert_conformant(call(client, hook_request("patient-view", prefetch=prefetch, fhir_server=FHIR)))
    assert "step-1-trauma-focused-psychotherapy" in topics(result)


@pytest.mark.spec("HOOK-01")
def test_medication_reference_is_resolved_on_the_fhir_server(client):
    order = lorazepam()
    del order["medicationCodeableConcept"]
    order["medicationReference"] = {"reference": "Medication/med-1"}
    medication = {"resourceType": "Medication", "id": "med-1",
                  "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                       "code": "197901", "display": "lorazepam 1 MG Oral Tablet"}]}}
    body = hook_request("order-sign", prefetch=full_prefetch(conditions=[ptsd_condition()]), drafts=[order],
                        fhir_server=FHIR, token="tok")
    with responses.RequestsMock() as rsps:
        rsps.get(f"{FHIR}/Medication/med-1", json=medication)
        result = assert_conformant(call(client, body, "ptsd-order-sign"))
        assert rsps.calls[0].request.headers["Authorization"] == "Bearer tok"
    assert topics(result) == ["benzodiazepine-avoid"]


def test_an_unresolvable_medication_reference_does_not_fail_a_fully_prefetched_call(client):
    """Optional look-ups never turn a complete prefetch into an error: a fhirServer that may not be
    called (here: not on the allow-list) just leaves the reference to its display text."""
    order = lorazepam()
    del order["medicationCodeableConcept"]
    order["medicationReference"] = {"reference": "Medication/med-9", "display": "Ativan 1 mg tablet"}
    body = hook_request("order-sign", prefetch=full_prefetch(conditions=[ptsd_condition()]), drafts=[order],
                        fhir_server="https://fhir.not-allowed.example/r4")
    with responses.RequestsMock() as rsps:
        result = assert_conformant(call(client, body, "ptsd-order-sign"))
        assert len(rsps.calls) == 0
    assert topics(result) == ["benzodiazepine-avoid"]  # recognised from the display text


def _order_by_reference(reference, display=None):
    order = lorazepam()
    del order["medicationCodeableConcept"]
    order["medicationReference"] = {"reference": reference, **({"display": display} if display else {})}
    return order


@pytest.mark.spec("HOOK-01")
@pytest.mark.parametrize("fhir_server", [None, FHIR])
def test_a_draft_whose_drug_cannot_be_identified_gets_a_card_not_silence(client, fhir_server):
    """An unidentifiable drug could be a benzodiazepine: no cards would be a wrong answer, and a
    412 would show the clinician nothing either (issue #11): the order-not-checked card says so."""
    body = hook_request("order-sign", prefetch=full_prefetch(conditions=[ptsd_condition()]),
                        drafts=[_order_by_reference("Medication/lz")], fhir_server=fhir_server)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{FHIR}/Medication/lz", status=500, json={"resourceType": "OperationOutcome"})
        result = assert_conformant(call(client, body, "ptsd-order-sign"))
    [card] = result["cards"]
    assert (card["source"]["topic"]["code"], card["indicator"]) == ("order-not-checked", "warning")
    assert "**Draft order not checked:**" in card["detail"] and "its drug record cannot be found" in card["detail"]


def test_an_absolute_medication_reference_under_fhir_server_is_fetched(client):
    medication = {"resourceType": "Medication", "id": "lz",
                  "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                       "code": "197901", "display": "lorazepam 1 MG Oral Tablet"}]}}
    body = hook_request("order-sign", prefetch=full_prefetch(conditions=[ptsd_condition()]),
                        drafts=[_order_by_reference(f"{FHIR}/Medication/lz/_history/3")], fhir_server=FHIR)
    with responses.RequestsMock() as rsps:
        rsps.get(f"{FHIR}/Medication/lz", json=medication)
        result = assert_conformant(call(client, body, "ptsd-order-sign"))
    assert topics(result) == ["benzodiazepine-avoid"]


def test_an_absolute_medication_reference_to_another_server_is_never_fetched(client):
    body = hook_request("order-sign", prefetch=full_prefetch(conditions=[ptsd_condition()]),
                        drafts=[_order_by_reference("https://other.example/fhir/Medication/lz")], fhir_server=FHIR)
    with responses.RequestsMock() as rsps:
        result = assert_conformant(call(client, body, "ptsd-order-sign"))
        assert len(rsps.calls) == 0
    assert [c["source"]["topic"]["code"] for c in result["cards"]] == ["order-not-checked"]


def test_an_unselected_draft_need_not_be_identified(client):
    body = hook_request("order-select", prefetch=full_prefetch(conditions=[ptsd_condition()]),
                        drafts=[_order_by_reference("Medication/lz"), lorazepam("mr-2")],
                        selections=["MedicationRequest/mr-2"])
    assert topics(assert_conformant(call(client, body, "ptsd-order-select"))) == ["benzodiazepine-avoid"]


@pytest.mark.parametrize("protocol", ["HTTP/1.0", "HTTP/1.1"])  # closing and keep-alive connections
def test_a_fhir_server_trickling_its_body_cannot_outlast_the_time_budget(make_app, protocol):
    """Per-read socket timeouts do not bound a server sending a byte every 0.2 s; the budget does.

    A real loopback server (not `responses`), stopped by the test."""
    import http.server
    import socketserver

    class Trickle(http.server.BaseHTTPRequestHandler):
        protocol_version = protocol

        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        fhir = f"http://127.0.0.1:{server.server_address[1]}/fhir"
        client = make_app(fhir_total_budget=1.0, fhir_read_timeout=0.8).test_client()
        started = time.monotonic()
        text = assert_outcome(call(client, hook_request("patient-view", fhir_server=fhir)), 412)
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert elapsed < 3.0, elapsed
    assert "time budget" in text


@pytest.mark.parametrize("reference, extra", [
    ("Medication/lz", {"status": "entered-in-error"}),     # never taken: the rules do not read it
    ("Medication/lz", {"status": "cancelled"}),
    ("Medication/lz", {"doNotPerform": True}),
    ("urn:uuid:0b7e5c5e-0000-4000-8000-000000000000", {}),  # can never be fetched
    ("Substance/1", {}),
])
def test_orders_the_rules_do_not_read_or_cannot_fetch_never_cause_412(client, reference, extra):
    history = {**_order_by_reference(reference), "id": "old", "status": "completed", **extra}
    body = hook_request("patient-view", prefetch=full_prefetch(conditions=[ptsd_condition()], medications=[history]))
    assert "step-1-trauma-focused-psychotherapy" in topics(assert_conformant(call(client, body)))


def test_an_identifier_only_reference_is_not_412(client):
    history = lorazepam("old")
    del history["medicationCodeableConcept"]
    history["medicationReference"] = {"identifier": {"system": "urn:local", "value": "LZ1"}}
    body = hook_request("patient-view", prefetch=full_prefetch(conditions=[ptsd_condition()], medications=[history]))
    assert_conformant(call(client, body))

