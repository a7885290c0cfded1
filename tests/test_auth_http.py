"""Client authentication through the Flask app (issue #4): 401 + WWW-Authenticate, aud, replay,
and the calling issuer's fhirServer allow-list. Keys are generated here."""

from __future__ import annotations

import json
import logging
import time
import uuid

import jwt
import pytest
import responses
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from cds_service.patient_data.outbound import static_resolver
from tests.builders import hook_request
from tests.conftest import assert_conformant, assert_outcome

ISS = "https://ehr.example.org"
FHIR = "https://fhir.example.org/fhir"
SERVICE = "/cds-services/ptsd-patient-view"

pytestmark = pytest.mark.spec("JWT-02 JWT-06 JWT-10 DISC-07 FB-06")


@pytest.fixture(scope="module")
def key():
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def auth_app(make_app, tmp_path, key):
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": "k1", "use": "sig", "alg": "ES384"})
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps({"issuers": [{"iss": ISS, "jwks": {"keys": [jwk]}, "fhir_servers": [FHIR]}]}))

    def _make(**overrides):
        return make_app(auth="required", trusted_issuers=str(issuers), **overrides)

    return _make


def token_for(key, aud, *, jti=None, iss=ISS, lifetime=300):
    now = int(time.time())
    claims = {"iss": iss, "aud": aud, "iat": now, "exp": now + lifetime, "jti": jti or str(uuid.uuid4())}
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def assert_401(resp):
    text = assert_outcome(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert text == "Authentication failed"  # nothing about why
    return text


def test_discovery_with_a_signed_token(auth_app, key):
    client = auth_app().test_client()
    resp = client.get("/cds-services", headers=auth(token_for(key, "http://localhost/cds-services")))
    assert resp.status_code == 200
    assert resp.get_json()["services"]


def test_discovery_without_a_token_is_401(auth_app):
    assert_401(auth_app().test_client().get("/cds-services"))


@pytest.mark.parametrize("aud", [
    "http://localhost/cds-services/ptsd-patient-view",  # another endpoint's audience
    "https://localhost/cds-services",
    "http://localhost/cds-services/",
])
def test_wrong_audience_is_401(auth_app, key, aud):
    assert_401(auth_app().test_client().get("/cds-services", headers=auth(token_for(key, aud))))


def test_public_url_sets_the_audience(auth_app, key):
    client = auth_app(public_url="https://cds.example.org/").test_client()
    ok = client.get("/cds-services", headers=auth(token_for(key, "https://cds.example.org/cds-services")))
    assert ok.status_code == 200
    assert_401(client.get("/cds-services", headers=auth(token_for(key, "http://localhost/cds-services"))))


def test_replayed_token_is_401_and_the_reason_is_logged_without_the_token(auth_app, key, caplog):
    client = auth_app().test_client()
    token = token_for(key, "http://localhost/cds-services", jti="only-once")
    assert client.get("/cds-services", headers=auth(token)).status_code == 200
    with caplog.at_level(logging.WARNING, logger="ptsd_cds"):
        assert_401(client.get("/cds-services", headers=auth(token)))
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "replayed jti 'only-once'" in logged
    assert token.split(".")[2] not in logged and token.split(".")[1] not in logged


def test_untrusted_issuer_is_401(auth_app):
    other = ec.generate_private_key(ec.SECP384R1())
    resp = auth_app().test_client().get(
        "/cds-services", headers=auth(token_for(other, "http://localhost/cds-services", iss="https://evil.example")))
    assert_401(resp)


def test_feedback_needs_a_token_for_its_own_url_or_its_service(auth_app, key):
    """FB-06: the feedback aud is not specified; the sandbox signs the feedback URL, other clients
    may sign the service URL. Both are accepted; any other URL is not."""
    client = auth_app().test_client()
    url = SERVICE + "/feedback"
    body = {"feedback": [{"card": str(uuid.uuid4()), "outcome": "overridden",
                          "outcomeTimestamp": "2026-11-28T10:00:00Z"}]}
    assert_401(client.post(url, data=json.dumps(body), content_type="application/json"))
    for wrong in ("/cds-services", "/cds-services/ptsd-order-sign", "/cds-services/ptsd-order-sign/feedback"):
        assert_401(client.post(url, data=json.dumps(body), content_type="application/json",
                               headers=auth(token_for(key, "http://localhost" + wrong))))
    for right in (url, SERVICE):
        ok = client.post(url, data=json.dumps(body), content_type="application/json",
                         headers=auth(token_for(key, "http://localhost" + right)))
        assert ok.status_code == 200, ok.get_data(as_text=True)


def test_service_call_uses_the_issuers_fhir_server_allow_list(auth_app, key):
    app = auth_app()
    app.extensions["ptsd_cds"].outbound.resolver = static_resolver({"fhir.example.org": "203.0.113.10"})
    client = app.test_client()
    aud = "http://localhost" + SERVICE

    # A fhirServer the issuer did not register: refused before any connection.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get("https://fhir.elsewhere.example/fhir/Patient/pat-1", json={"resourceType": "Patient"})
        body = hook_request("patient-view", fhir_server="https://fhir.elsewhere.example/fhir", token="at-1")
        resp = client.post(SERVICE, data=json.dumps(body), content_type="application/json",
                           headers=auth(token_for(key, aud)))
        assert_outcome(resp, 400)
        # A local FHIR server is only for unauthenticated development, not for this issuer.
        body = hook_request("patient-view", fhir_server="http://127.0.0.1:8999/fhir", token="at-1")
        resp = client.post(SERVICE, data=json.dumps(body), content_type="application/json",
                           headers=auth(token_for(key, aud)))
        assert_outcome(resp, 400)
        assert len(rsps.calls) == 0

    # The registered server: queried, with the access token.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{FHIR}/Patient/pat-1", json={"resourceType": "Patient", "id": "pat-1"})
        for kind in ("Condition", "MedicationRequest", "Procedure"):
            rsps.get(f"{FHIR}/{kind}", json={"resourceType": "Bundle", "type": "searchset", "entry": []})
        body = hook_request("patient-view", fhir_server=FHIR, token="at-2")
        resp = client.post(SERVICE, data=json.dumps(body), content_type="application/json",
                           headers=auth(token_for(key, aud)))
        assert_conformant(resp)
        assert rsps.calls and all(c.request.headers["Authorization"] == "Bearer at-2" for c in rsps.calls)
