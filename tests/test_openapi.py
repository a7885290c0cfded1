"""The OpenAPI document: valid, every documented response produced, and the app conforms to it
(schemathesis, in-process, bounded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from cds_service.openapi import RESPONSES, openapi_document
from cds_service.services import SERVICES
from tests.builders import full_prefetch, hook_request, lorazepam, ptsd_condition
from tests.conftest import assert_conformant
from tests.local_servers import break_store

ROOT = Path(__file__).resolve().parents[1]
DEV_ISSUERS = ROOT / "cds_service" / "data" / "dev-trusted-issuers.json"
OPS_TOKEN = "ops-token-for-tests-0123456789"


def _post(client, path, body, **kw):
    return client.post(path, data=json.dumps(body), content_type="application/json", **kw)


def _request(hook="patient-view", **kw):
    drafts = [lorazepam()] if hook != "patient-view" else None
    return hook_request(hook, prefetch=full_prefetch(conditions=[ptsd_condition()]), drafts=drafts, **kw)


FEEDBACK = {"feedback": [{"card": "0b0e7a52-5d43-4c4e-9e8e-0e0b5b8a1d11", "outcome": "overridden",
                          "outcomeTimestamp": "2026-11-28T12:00:00Z"}]}


def _explode(monkeypatch, target, name):
    def explode(*args, **kwargs):
        raise RuntimeError("injected failure")
    monkeypatch.setattr(target, name, explode)


# --- the registry: one producer per documented (path, method, status) ------------------------------
# Producers take (make_app, monkeypatch, path): ``path`` is the documented path with a real service
# id for the per-service paths ("/cds-services/{id}" in the keys), or an unknown id.
SERVICE_HOOK = {s.id: s.hook for s in SERVICES}
UNKNOWN = "/cds-services/no-such-service"


def _service_of(path):
    return path.split("/")[2]


def p_discovery_200(make_app, mp, path):
    return make_app().test_client().get(path)


def p_discovery_401(make_app, mp, path):
    return make_app(auth="required", trusted_issuers=str(DEV_ISSUERS)).test_client().get(path)


def p_discovery_405(make_app, mp, path):
    return make_app().test_client().post(path)


def p_discovery_500(make_app, mp, path):
    import cds_service.api.routes as routes

    _explode(mp, routes, "discovery_document")
    return make_app().test_client().get(path)


def p_call_200(make_app, mp, path):
    return _post(make_app().test_client(), path, _request(SERVICE_HOOK[_service_of(path)]))


def p_call_400(make_app, mp, path):
    return _post(make_app().test_client(), path, {"hook": SERVICE_HOOK[_service_of(path)]})


def p_call_401(make_app, mp, path):
    app = make_app(auth="required", trusted_issuers=str(DEV_ISSUERS))
    return _post(app.test_client(), path, _request(), headers={"Authorization": "Bearer not.a.jwt"})


def p_call_404(make_app, mp, path):
    return _post(make_app().test_client(), UNKNOWN, _request())


def p_call_405(make_app, mp, path):
    return make_app().test_client().get(path)


def p_call_412(make_app, mp, path):
    hook = SERVICE_HOOK[_service_of(path)]
    body = hook_request(hook, drafts=[lorazepam()] if hook != "patient-view" else ())  # no prefetch, no fhirServer
    return _post(make_app().test_client(), path, body)


def p_call_413(make_app, mp, path):
    return _post(make_app(max_body=1000).test_client(), path,
                 {**_request(SERVICE_HOOK[_service_of(path)]), "pad": "x" * 2000})


def p_call_415(make_app, mp, path):
    return make_app().test_client().post(path, data="hook=x", content_type="text/plain")


def p_call_500(make_app, mp, path):
    app = make_app()
    _explode(mp, app.extensions["ptsd_cds"].engine, "run")
    return _post(app.test_client(), path, _request(SERVICE_HOOK[_service_of(path)]))


def p_feedback_200(make_app, mp, path):
    return _post(make_app().test_client(), path, FEEDBACK)


def p_feedback_400(make_app, mp, path):
    return _post(make_app().test_client(), path, {"feedback": []})


def p_feedback_401(make_app, mp, path):
    app = make_app(auth="required", trusted_issuers=str(DEV_ISSUERS))
    return _post(app.test_client(), path, FEEDBACK)


def p_feedback_404(make_app, mp, path):
    return _post(make_app().test_client(), UNKNOWN + "/feedback", FEEDBACK)


def p_feedback_429(make_app, mp, path):
    client = make_app(feedback_rate_limit="1/minute").test_client()
    first = _post(client, path, FEEDBACK)
    assert first.status_code == 200
    second = _post(client, path, FEEDBACK)
    assert int(second.headers["Retry-After"]) >= 1
    return second


def p_feedback_405(make_app, mp, path):
    return make_app().test_client().get(path)


def p_feedback_413(make_app, mp, path):
    return _post(make_app(max_body=100).test_client(), path, FEEDBACK)


def p_feedback_415(make_app, mp, path):
    return make_app().test_client().post(path, data="{}", content_type="application/xml")


def p_feedback_500(make_app, mp, path):
    app = make_app()
    _explode(mp, app.extensions["ptsd_cds"].store, "save_feedback")
    return _post(app.test_client(), path, FEEDBACK)


def p_feedback_503(make_app, mp, path):
    app = make_app()
    break_store(app)
    return _post(app.test_client(), path, FEEDBACK)


def p_healthz_200(make_app, mp, path):
    return make_app().test_client().get(path)


def p_readyz_200(make_app, mp, path):
    return make_app().test_client().get(path)


def p_readyz_503(make_app, mp, path):
    app = make_app()
    cards = app.extensions["ptsd_cds"].engine.cards.cards
    cards.pop(next(iter(cards)))  # a card kind the rules produce has no content: not ready
    return app.test_client().get(path)


def p_ops_200(make_app, mp, path):
    return make_app().test_client().get(path)


def p_ops_401(make_app, mp, path):
    return make_app(ops_token=OPS_TOKEN).test_client().get(path, headers={"Authorization": "Bearer wrong"})


def p_metrics_404(make_app, mp, path):
    return make_app(metrics="off").test_client().get(path)


CALL, FEEDBACK_PATH = "/cds-services/{id}", "/cds-services/{id}/feedback"
PRODUCERS = {
    ("/cds-services", "get", 200): p_discovery_200,
    ("/cds-services", "get", 401): p_discovery_401,
    ("/cds-services", "get", 405): p_discovery_405,
    ("/cds-services", "get", 500): p_discovery_500,
    **{(CALL, "post", code): f for code, f in (
        (200, p_call_200), (400, p_call_400), (401, p_call_401), (405, p_call_405), (412, p_call_412),
        (413, p_call_413), (415, p_call_415), (500, p_call_500))},
    **{(FEEDBACK_PATH, "post", code): f for code, f in (
        (200, p_feedback_200), (400, p_feedback_400), (401, p_feedback_401), (405, p_feedback_405),
        (413, p_feedback_413), (415, p_feedback_415), (500, p_feedback_500), (429, p_feedback_429),
        (503, p_feedback_503))},
    ("/cds-services/{service_id}", "post", 401): p_call_401,
    ("/cds-services/{service_id}", "post", 404): p_call_404,
    ("/cds-services/{service_id}/feedback", "post", 401): p_feedback_401,
    ("/cds-services/{service_id}/feedback", "post", 404): p_feedback_404,
    ("/healthz", "get", 200): p_healthz_200,
    ("/readyz", "get", 200): p_readyz_200,
    ("/readyz", "get", 503): p_readyz_503,
    ("/metrics", "get", 200): p_ops_200,
    ("/metrics", "get", 401): p_ops_401,
    ("/metrics", "get", 404): p_metrics_404,
    ("/openapi.json", "get", 200): p_ops_200,
    ("/openapi.json", "get", 401): p_ops_401,
    ("/docs/", "get", 200): p_ops_200,
    ("/docs/", "get", 401): p_ops_401,
}


def _key_path(path: str) -> str:
    """The registry's path for a documented path: a real service id becomes {id}."""
    parts = path.split("/")
    if len(parts) > 2 and parts[2] in SERVICE_HOOK:
        parts[2] = "{id}"
    return "/".join(parts)


def _documented():
    for path, operations in openapi_document()["paths"].items():
        for method, op in operations.items():
            if method in ("get", "post", "put", "delete", "patch"):
                for status, response in op["responses"].items():
                    yield path, method, int(status), response


def test_the_document_is_valid_openapi():
    doc = openapi_document()
    validate(doc)
    assert doc["openapi"] == "3.0.3"
    from cds_service import __version__

    assert doc["info"]["version"] == __version__


def test_the_run_time_schemas_are_in_the_document():
    schemas = openapi_document()["components"]["schemas"]
    hook = schemas["HookRequest"]
    assert set(hook["required"]) == {"hook", "hookInstance", "context"}
    assert hook["properties"]["hookInstance"]["maxLength"] == 128
    item = schemas["FeedbackItem"]
    assert item["properties"]["outcome"]["enum"] == ["accepted", "overridden"]
    card = schemas["Card"]
    assert card["properties"]["summary"]["maxLength"] == 139
    assert card["properties"]["indicator"]["enum"] == ["info", "warning", "critical"]
    assert "selections" in schemas["OrderSelectContext"]["required"]


def test_every_documented_response_has_a_producer_and_no_producer_is_stale():
    documented = {(_key_path(p), m, s) for p, m, s, _ in _documented()}
    assert sorted(documented - set(PRODUCERS)) == []
    assert sorted(set(PRODUCERS) - documented) == []
    table = {(p, m, s) for (p, m), codes in RESPONSES.items() for s in codes}
    assert table <= documented


DOCUMENTED = sorted((p, m, s) for p, m, s, _ in _documented())


@pytest.mark.spec("ERR-01 ERR-02 ERR-03 ERR-06")
@pytest.mark.parametrize("path, method, status", DOCUMENTED, ids=lambda v: str(v))
def test_every_documented_response_is_produced(path, method, status, make_app, monkeypatch):
    documented = next(r for p, m, s, r in _documented() if (p, m, s) == (path, method, status))
    resp = PRODUCERS[(_key_path(path), method, status)](make_app, monkeypatch, path)
    assert resp.status_code == status, resp.get_data(as_text=True)[:300]
    types = set(documented.get("content", {}))
    if types:
        assert resp.mimetype in types, (resp.mimetype, types)
    if resp.mimetype == "application/fhir+json":
        body = resp.get_json(force=True)
        assert body["resourceType"] == "OperationOutcome"
        assert "Traceback" not in resp.get_data(as_text=True)
    if status == 200 and path.startswith("/cds-services/") and not path.endswith("/feedback"):
        assert_conformant(resp)
    if status == 401 and path.startswith("/cds-services"):
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_every_discovered_service_has_its_documented_paths(client):
    paths = openapi_document()["paths"]
    for service in client.get("/cds-services").get_json()["services"]:
        op = paths[f"/cds-services/{service['id']}"]["post"]
        hook_schema = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert hook_schema == "".join(p.title() for p in service["hook"].split("-")) + "Request"
        assert f"/cds-services/{service['id']}/feedback" in paths
    unknown = paths["/cds-services/{service_id}"]["parameters"][0]["schema"]["not"]["enum"]
    assert sorted(unknown) == sorted(s.id for s in SERVICES)


def test_the_docs_page_is_served_locally_without_a_cdn(client):
    page = client.get("/docs/")
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "init.js"):
        assert asset in html
        resp = client.get(f"/docs/{asset}")
        assert resp.status_code == 200 and len(resp.data) > 20
    assert "../openapi.json" in client.get("/docs/init.js").get_data(as_text=True)
    assert client.get("/docs").status_code == 308
    assert client.get("/docs/../../etc/passwd").status_code == 404


# --- schemathesis: generated requests against the app, in-process --------------------------------
@pytest.mark.spec("ERR-03 ERR-06")
def test_schemathesis_finds_no_server_error_and_responses_conform(make_app, tmp_path):
    """Every operation, 25 generated requests each, with authentication on: each call carries a
    fresh JWT signed by a trusted test issuer (so schemathesis' own check that invalid
    credentials are refused also runs). Every response must conform to the document, and none
    may be a 5xx."""
    import time
    import uuid

    import jwt
    import schemathesis
    from cryptography.hazmat.primitives.asymmetric import ec
    from hypothesis import HealthCheck, given, settings
    from schemathesis.specs.openapi.checks import positive_data_acceptance
    from jwt.algorithms import ECAlgorithm

    key = ec.generate_private_key(ec.SECP384R1())
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True) | {"kid": "k1", "use": "sig", "alg": "ES384"}
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps({"issuers": [{"iss": "https://ehr.example.org", "jwks": {"keys": [jwk]}}]}))
    # More generated feedback bodies than the per-client write limit allows in a minute: the limit
    # is raised here, so every generated call is judged on its content.
    app = make_app(auth="required", trusted_issuers=str(issuers), feedback_rate_limit="1000/minute")
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)

    def token(path: str) -> str:
        now = int(time.time())
        claims = {"iss": "https://ehr.example.org", "aud": "http://localhost" + path, "iat": now,
                  "exp": now + 300, "jti": str(uuid.uuid4())}
        return jwt.encode(claims, key, algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})

    failures, statuses = [], {}
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        # Feedback bodies get more examples: Hypothesis mixes string constants of the loaded code
        # into what it generates, so which generated bodies are valid shifts with unrelated code
        # changes; 60 keep a valid one (a 200) among them whatever the code holds.
        @settings(max_examples=60 if operation.label.endswith("/feedback") else 25, deadline=None,
                  database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(operation.as_strategy())
        def check(case):
            path = case.formatted_path
            if path.startswith("/cds-services"):
                case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token(path)}"}
            response = case.call()
            statuses.setdefault(operation.label, set()).add(response.status_code)
            try:
                # Not schemathesis' "schema-valid data is accepted" check: a well-formed call can
                # rightly be refused by policy (fhirServer not allowed: 400) or lack data (412).
                case.validate_response(response, excluded_checks=[positive_data_acceptance])
            except Exception as exc:  # collect every failure, with the operation it came from
                failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:400]}")

        check()
    labels = {op.label for op in operations}  # schemathesis leaves out the schema's own URL
    assert labels == {f"{m.upper()} {p}" for p, m in _documented_operations()} - {"GET /openapi.json"}
    assert failures == []
    assert all(code < 500 for codes in statuses.values() for code in codes), statuses
    # the generated calls reached the services, not only the error paths
    # (valid calls with generated data reach the patient-data stage: 412, no usable record)
    for service in SERVICES:
        assert 200 in statuses[f"POST /cds-services/{service.id}/feedback"], statuses
    assert any(412 in statuses[f"POST /cds-services/{service.id}"] for service in SERVICES), statuses
    assert 404 in statuses["POST /cds-services/{service_id}"]


def _documented_operations():
    return {(p, m) for p, m, _, _ in _documented()}
