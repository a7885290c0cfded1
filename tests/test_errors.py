"""Bad input gets a clear 4xx OperationOutcome, never a stack trace (CHECKLIST §8, REQ-02..04)."""

from __future__ import annotations

import json

import pytest

from tests.builders import hook_request, full_prefetch, lorazepam, ptsd_condition
from tests.conftest import assert_outcome

URL = "/cds-services/ptsd-patient-view"


def post(client, url, body, content_type="application/json"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(url, data=data, content_type=content_type)


@pytest.mark.spec("REQ-02")
def test_malformed_json_is_400_with_position(client):
    text = assert_outcome(post(client, URL, b'{"hook": "patient-view",'), 400)
    assert "not valid JSON" in text and "line 1" in text


@pytest.mark.spec("REQ-02")
@pytest.mark.parametrize("body", [[], "just a string", 42])
def test_body_that_is_not_an_object_is_400(client, body):
    assert "JSON object" in assert_outcome(post(client, URL, json.dumps(body)), 400)


@pytest.mark.spec("REQ-02")
@pytest.mark.parametrize("missing", ["hook", "hookInstance", "context"])
def test_missing_envelope_field_is_400_naming_it(client, missing):
    body = hook_request("patient-view", prefetch=full_prefetch())
    del body[missing]
    resp = post(client, URL, body)
    text = assert_outcome(resp, 400)
    assert missing in text
    assert missing in resp.get_json()["issue"][0]["expression"]


@pytest.mark.spec("REQ-02 HOOK-01")
@pytest.mark.parametrize("hook,url,field", [
    ("patient-view", "/cds-services/ptsd-patient-view", "patientId"),
    ("patient-view", "/cds-services/ptsd-patient-view", "userId"),
    ("order-select", "/cds-services/ptsd-order-select", "selections"),
    ("order-select", "/cds-services/ptsd-order-select", "draftOrders"),
    ("order-sign", "/cds-services/ptsd-order-sign", "draftOrders"),
])
def test_missing_required_context_is_400_naming_the_field(client, hook, url, field):
    body = hook_request(hook, prefetch=full_prefetch(), drafts=[lorazepam()])
    del body["context"][field]
    text = assert_outcome(post(client, url, body), 400)
    assert f"context.{field}" in text


@pytest.mark.spec("REQ-02")
@pytest.mark.parametrize("mutate,needle", [
    (lambda b: b.__setitem__("hookInstance", 12345), "hookInstance"),
    (lambda b: b["context"].__setitem__("patientId", "../../etc/passwd"), "context.patientId"),
    (lambda b: b["context"].__setitem__("userId", "COREPRACTITIONER1"), "context.userId"),
    (lambda b: b.__setitem__("prefetch", ["not", "an", "object"]), "prefetch"),
    (lambda b: b.__setitem__("fhirServer", "not a url"), "fhirServer"),
    (lambda b: b.__setitem__("context", "patient-1"), "context"),
])
def test_wrong_shapes_are_400(client, mutate, needle):
    body = hook_request("patient-view", prefetch=full_prefetch())
    mutate(body)
    assert needle in assert_outcome(post(client, URL, body), 400)


def test_draft_orders_that_are_not_a_bundle_are_400(client):
    body = hook_request("order-sign", prefetch=full_prefetch(), drafts=[lorazepam()])
    body["context"]["draftOrders"] = {"resourceType": "MedicationRequest", "id": "x"}
    assert "draftOrders" in assert_outcome(post(client, "/cds-services/ptsd-order-sign", body), 400)


def test_order_hooks_need_a_practitioner_user(client):
    """Hook library: order-select/order-sign userId is a Practitioner or PractitionerRole (CHECKLIST §7.2-7.3)."""
    body = hook_request("order-sign", prefetch=full_prefetch(), drafts=[lorazepam()])
    body["context"]["userId"] = "Patient/pat-1"
    assert "userId" in assert_outcome(post(client, "/cds-services/ptsd-order-sign", body), 400)


@pytest.mark.spec("REQ-04 DISC-05")
def test_hook_not_matching_the_service_is_400(client):
    body = hook_request("order-sign", prefetch=full_prefetch(), drafts=[lorazepam()])
    text = assert_outcome(post(client, URL, body), 400)
    assert "patient-view" in text and "order-sign" in text


@pytest.mark.spec("cds-r-1")
def test_fhir_authorization_without_fhir_server_is_400(client):
    body = hook_request("patient-view", prefetch=full_prefetch(), token="secret-token-value")
    resp = post(client, URL, body)
    text = assert_outcome(resp, 400)
    assert "fhirServer" in text
    assert "secret-token-value" not in resp.get_data(as_text=True)


def test_incomplete_fhir_authorization_is_400(client):
    body = hook_request("patient-view", prefetch=full_prefetch(), fhir_server="http://127.0.0.1:9/fhir",
                        token="t")
    del body["fhirAuthorization"]["scope"]
    assert "fhirAuthorization.scope" in assert_outcome(post(client, URL, body), 400)


@pytest.mark.spec("REQ-03")
def test_unknown_service_is_404_listing_known_ids(client):
    body = hook_request("patient-view", prefetch=full_prefetch())
    text = assert_outcome(post(client, "/cds-services/no-such-service", body), 404)
    assert "ptsd-patient-view" in text
    assert_outcome(client.get("/not-a-route"), 404)


@pytest.mark.spec("ERR-03")
@pytest.mark.parametrize("method,url", [("get", URL), ("put", "/cds-services"), ("delete", URL),
                                        ("get", URL + "/feedback")])
def test_wrong_method_is_405_with_allow_header(client, method, url):
    resp = getattr(client, method)(url)
    assert_outcome(resp, 405)
    assert "POST" in resp.headers["Allow"] or "GET" in resp.headers["Allow"]


@pytest.mark.spec("ERR-03")
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type_is_415(client, content_type):
    body = json.dumps(hook_request("patient-view", prefetch=full_prefetch()))
    assert "application/json" in assert_outcome(post(client, URL, body, content_type), 415)


def test_fhir_json_content_type_is_accepted(client):
    body = hook_request("patient-view", prefetch=full_prefetch(conditions=[ptsd_condition()]))
    resp = post(client, URL, body, content_type="application/fhir+json; charset=utf-8")
    assert resp.status_code == 200 and resp.get_json()["cards"]


@pytest.mark.spec("ERR-03")
def test_oversized_body_is_413(make_app):
    client = make_app(max_body=2048).test_client()
    body = hook_request("patient-view", prefetch=full_prefetch())
    body["extension"] = {"org.example.padding": "x" * 4096}
    assert "PTSD_CDS_MAX_BODY" in assert_outcome(post(client, URL, body), 413)


def test_deeply_nested_json_is_refused(make_app):
    client = make_app(max_json_depth=20).test_client()
    body = hook_request("patient-view", prefetch=full_prefetch())
    nested: dict = {}
    cursor = nested
    for _ in range(40):
        cursor["a"] = {}
        cursor = cursor["a"]
    body["extension"] = {"org.example.deep": nested}
    assert "nesting" in assert_outcome(post(client, URL, body), 400)


def test_errors_never_echo_patient_data(client):
    body = hook_request("patient-view", prefetch=full_prefetch())
    body["context"]["patientId"] = "Jane Doe 1980-01-01"
    resp = post(client, URL, body)
    assert_outcome(resp, 400)
    assert "Jane" not in resp.get_data(as_text=True)


def test_security_headers_and_no_debug_mode(app, client):
    assert app.debug is False
    resp = client.get("/cds-services")
    for header in ("X-Content-Type-Options", "Content-Security-Policy", "Cache-Control", "Referrer-Policy"):
        assert header in resp.headers
    error = client.post("/cds-services/nope", data="{}", content_type="application/json")
    assert error.headers["X-Content-Type-Options"] == "nosniff"


def test_oversized_chunked_body_is_413_not_truncated(make_app):
    """A body without Content-Length (chunked) is measured as it is read, not cut at the cap."""
    import io

    client = make_app(max_body=2048).test_client()
    body = hook_request("patient-view", prefetch=full_prefetch())
    body["extension"] = {"org.example.padding": "x" * 4096}
    raw = json.dumps(body).encode()
    resp = client.post(URL, input_stream=io.BytesIO(raw), content_type="application/json",
                       headers={"Transfer-Encoding": "chunked"})
    assert "PTSD_CDS_MAX_BODY" in assert_outcome(resp, 413)
    small = json.dumps(hook_request("patient-view", prefetch=full_prefetch())).encode()
    ok = make_app().test_client().post(URL, input_stream=io.BytesIO(small), content_type="application/json",
                                       headers={"Transfer-Encoding": "chunked"})
    assert ok.status_code == 200


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_json_numbers_are_refused(client, number):
    body = json.dumps(hook_request("patient-view", prefetch=full_prefetch())).replace(
        '"pat-1"', '"pat-1", "x": ' + number, 1)
    assert "not valid JSON" in assert_outcome(post(client, URL, body), 400)


def test_a_body_declared_in_another_charset_is_415(client):
    body = json.dumps(hook_request("patient-view", prefetch=full_prefetch()))
    text = assert_outcome(post(client, URL, body, "application/json; charset=latin-1"), 415)
    assert "UTF-8" in text
    ok = post(client, URL, body, "application/json; charset=UTF-8")
    assert ok.status_code == 200
