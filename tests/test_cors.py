"""Browser clients (the CDS Hooks sandbox): CORS on discovery, services and feedback (CHECKLIST §6.3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.builders import full_prefetch, hook_request

ORIGIN = "https://sandbox.cds-hooks.org"
DEV_ISSUERS = Path(__file__).resolve().parents[1] / "cds_service" / "data" / "dev-trusted-issuers.json"
PATHS = ["/cds-services", "/cds-services/ptsd-patient-view", "/cds-services/ptsd-order-select/feedback"]


def preflight(client, path, method="POST"):
    return client.options(path, headers={
        "Origin": ORIGIN,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,content-type",
    })


@pytest.mark.spec("CORS-02")
@pytest.mark.parametrize("path", PATHS)
def test_preflight_is_answered_without_authentication(make_app, path):
    client = make_app(auth="required", trusted_issuers=str(DEV_ISSUERS)).test_client()
    resp = preflight(client, path, "GET" if path == "/cds-services" else "POST")
    assert resp.status_code in (200, 204)
    assert resp.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
    allowed = resp.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    # the same URL without a token is refused: only the preflight is open
    assert client.get("/cds-services").status_code == 401


@pytest.mark.spec("CORS-02")
def test_post_responses_carry_cors_headers(client):
    """POST answers carry CORS headers too (hapi-fhir-jpaserver-starter#717 lacked them)."""
    body = hook_request("patient-view", prefetch=full_prefetch())
    resp = client.post("/cds-services/ptsd-patient-view", data=json.dumps(body),
                       content_type="application/json", headers={"Origin": ORIGIN})
    assert resp.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
    error = client.post("/cds-services/ptsd-patient-view", data="{", content_type="application/json",
                        headers={"Origin": ORIGIN})
    assert error.status_code == 400 and error.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)


def test_allowed_origins_are_configurable(make_app):
    client = make_app(cors_origins="https://ehr.example.org").test_client()
    ok = preflight(client, "/cds-services/ptsd-patient-view")
    assert ok.headers.get("Access-Control-Allow-Origin") is None  # sandbox origin not allowed now
    resp = client.options("/cds-services", headers={"Origin": "https://ehr.example.org",
                                                     "Access-Control-Request-Method": "GET"})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"
