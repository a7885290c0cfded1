"""Operations: /readyz, /metrics (what is counted and what it costs), the ops-path restriction,
and the call's log line (request id, remote address, levels, FHIR query count and time)."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest

from cds_service import metrics
from tests.builders import full_prefetch, hook_request, lorazepam, ptsd_condition
from tests.local_servers import FhirJsonHandler, break_store, local_fhir_server

ROOT = Path(__file__).resolve().parents[1]
DEV_ISSUERS = ROOT / "cds_service" / "data" / "dev-trusted-issuers.json"
TOKEN = "0123456789abcdef0123456789abcdef"


def _post(client, path, body, **kw):
    return client.post(path, data=json.dumps(body), content_type="application/json", **kw)


def _sample(client, name: str, **labels) -> float:
    """The value of one metric sample in /metrics (0 when absent)."""
    text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True)
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _access(caplog) -> list[dict]:
    return [r.fields | {"_level": r.levelname} for r in caplog.records if r.name == "ptsd_cds.access"]


# --- readiness -----------------------------------------------------------------------------------
def test_readyz_reports_each_check(client):
    resp = client.get("/readyz")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "ready"
    assert body["checks"]["store"]["engine"] == "sqlite" and body["checks"]["store"]["available"] is True
    assert body["checks"]["cards"]["valid"] is True and body["checks"]["cards"]["kinds"] >= 9
    assert body["checks"]["configuration"] == {"valid": True}


def test_readyz_stays_200_and_reports_the_store_when_it_is_unreachable(app):
    """Hook calls are served while the store is down (issue #10): a load balancer must not pull
    every instance that shares the database, so readiness says "degraded", not 503."""
    path = break_store(app)  # a directory where the database file was: SQLite cannot open it
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "degraded" and body["checks"]["store"]["available"] is False
    assert str(path) not in resp.get_data(as_text=True)  # no paths or secrets in the body


def test_readyz_is_503_when_a_card_kind_is_missing(app):
    cards = app.extensions["ptsd_cds"].engine.cards.cards
    removed = cards.pop("benzodiazepine-avoid")
    try:
        resp = app.test_client().get("/readyz")
    finally:
        cards["benzodiazepine-avoid"] = removed
    assert resp.status_code == 503
    assert resp.get_json()["checks"]["cards"]["missing"] == ["benzodiazepine-avoid"]


def test_healthz_and_readyz_stay_open_when_ops_paths_are_restricted(make_app):
    client = make_app(ops_token=TOKEN).test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


# --- restriction of the operations paths ------------------------------------------------------------
@pytest.mark.parametrize("method, path", [
    ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/docs/"), ("GET", "/feedback"),
    ("GET", "/feedback/report.csv"),
])
def test_ops_paths_need_the_token_when_it_is_set(make_app, method, path):
    client = make_app(ops_token=TOKEN).test_client()
    resp = client.open(path, method=method)
    assert resp.status_code == 401 and resp.get_json()["resourceType"] == "OperationOutcome"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = client.open(path, method=method, headers={"Authorization": "Bearer " + "x" * 32})
    assert wrong.status_code == 401
    right = client.open(path, method=method, headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code != 401  # 200, or 404 for a page another branch serves


def test_the_token_does_not_touch_the_cds_endpoints(make_app):
    client = make_app(ops_token=TOKEN).test_client()
    assert client.get("/cds-services").status_code == 200
    feedback = {"feedback": [{"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-28T12:00:00Z"}]}
    assert _post(client, "/cds-services/ptsd-patient-view/feedback", feedback).status_code == 200
    assert client.get("/metricsfoo").status_code == 404  # prefix match is by path segment


def test_ops_paths_are_open_by_default(client):
    for path in ("/metrics", "/openapi.json", "/docs/"):
        assert client.get(path).status_code == 200


def test_ops_networks_restrict_by_client_address(make_app):
    inside = make_app(ops_networks="127.0.0.0/8").test_client()
    assert inside.get("/metrics").status_code == 200
    outside = make_app(ops_networks="10.0.0.0/8,192.168.0.0/16").test_client()
    assert outside.get("/metrics").status_code == 401
    assert outside.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200


@pytest.mark.parametrize("overrides, variable", [
    ({"ops_token": "short"}, "PTSD_CDS_OPS_TOKEN"),
    ({"ops_token": "has a space in it 0123456789"}, "PTSD_CDS_OPS_TOKEN"),
    ({"ops_networks": "10.0.0.0/33"}, "PTSD_CDS_OPS_NETWORKS"),
    ({"metrics": "maybe"}, "PTSD_CDS_METRICS"),
])
def test_bad_ops_settings_name_the_variable(make_app, overrides, variable):
    from cds_service.config import ConfigError

    with pytest.raises(ConfigError, match=variable):
        make_app(**overrides)


def test_the_ops_token_is_never_shown(make_app):
    from cds_service.config import Settings

    lines = Settings(auth="off", ops_token=TOKEN).describe()
    assert "PTSD_CDS_OPS_TOKEN=***" in lines and not any(TOKEN in line for line in lines)


# --- metrics ---------------------------------------------------------------------------------------
def test_cards_are_counted_by_kind_and_calls_by_service_and_status(make_app):
    client = make_app(ops_token=TOKEN).test_client()
    before = _sample(client, "ptsd_cds_cards_total", service="ptsd-order-select", kind="benzodiazepine-avoid")
    calls = _sample(client, "ptsd_cds_request_duration_seconds_count", service="ptsd-order-select",
                    endpoint="call", status="200")
    body = hook_request("order-select", prefetch=full_prefetch(conditions=[ptsd_condition()]), drafts=[lorazepam()])
    for _ in range(3):
        assert _post(client, "/cds-services/ptsd-order-select", body).status_code == 200
    assert _sample(client, "ptsd_cds_cards_total", service="ptsd-order-select",
                   kind="benzodiazepine-avoid") == before + 3
    assert _sample(client, "ptsd_cds_request_duration_seconds_count", service="ptsd-order-select",
                   endpoint="call", status="200") == calls + 3


def test_feedback_is_counted_by_outcome(make_app):
    client = make_app(ops_token=TOKEN).test_client()
    before = _sample(client, "ptsd_cds_feedback_total", service="ptsd-order-sign", outcome="overridden")
    items = [{"card": f"card-{i}", "outcome": "overridden", "outcomeTimestamp": "2026-11-28T12:00:00Z"}
             for i in range(2)]
    assert _post(client, "/cds-services/ptsd-order-sign/feedback", {"feedback": items}).status_code == 200
    assert _sample(client, "ptsd_cds_feedback_total", service="ptsd-order-sign", outcome="overridden") == before + 2


def test_auth_failures_are_counted_by_reason(make_app):
    client = make_app(auth="required", trusted_issuers=str(DEV_ISSUERS), ops_token=TOKEN).test_client()
    missing = _sample(client, "ptsd_cds_auth_failures_total", reason="missing")
    malformed = _sample(client, "ptsd_cds_auth_failures_total", reason="malformed")
    assert client.get("/cds-services").status_code == 401
    assert client.get("/cds-services", headers={"Authorization": "Bearer abc"}).status_code == 401
    assert _sample(client, "ptsd_cds_auth_failures_total", reason="missing") == missing + 1
    assert _sample(client, "ptsd_cds_auth_failures_total", reason="malformed") == malformed + 1


@pytest.mark.parametrize("message, reason", [
    ("no Authorization header", "missing"), ("replayed jti 'x' (issuer 'y')", "replay"),
    ("token expired (issuer 'https://issuer.example')", "expired"), ("untrusted issuer 'x'", "untrusted-issuer"),
    ("bad signature (issuer 'x', kid 'k')", "signature"), ("aud does not match 'x' (issuer 'y')", "audience"),
    ("malformed token (header)", "malformed"), ("something new", "other"),
])
def test_auth_reason_categories(message, reason):
    assert metrics.auth_reason(message) == reason


class _Fhir(FhirJsonHandler):
    """A FHIR server on loopback: empty searches, and a 500 for the Patient read."""

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/fhir/Patient/"):
            self.send_json(500, {"resourceType": "OperationOutcome"})
        else:
            self.send_json(200, {"resourceType": "Bundle", "type": "searchset", "entry": []})


@pytest.fixture
def fhir_server():
    with local_fhir_server(_Fhir) as base:
        yield base


def test_fhir_queries_are_timed_counted_and_logged(make_app, fhir_server, caplog):
    caplog.set_level(logging.INFO, logger="ptsd_cds")
    client = make_app(ops_token=TOKEN).test_client()
    fetched = _sample(client, "ptsd_cds_fhir_fetch_duration_seconds_count")
    errors = _sample(client, "ptsd_cds_fhir_fetch_errors_total", reason="http")
    body = hook_request("patient-view", fhir_server=fhir_server)
    resp = _post(client, "/cds-services/ptsd-patient-view", body)
    assert resp.status_code == 200  # the Patient is optional; its 500 is not fatal
    assert _sample(client, "ptsd_cds_fhir_fetch_duration_seconds_count") == fetched + 4
    assert _sample(client, "ptsd_cds_fhir_fetch_errors_total", reason="http") == errors + 1
    [line] = [a for a in _access(caplog) if a.get("path") == "/cds-services/ptsd-patient-view"]
    assert line["fhir_queries"] == 4 and line["fhir_errors"] == 1 and line["fhir_ms"] > 0


def test_metrics_can_be_switched_off(make_app):
    client = make_app(metrics="off").test_client()
    assert client.get("/cds-services").status_code == 200
    assert client.get("/metrics").status_code == 404


def test_metrics_hold_no_patient_data(make_app):
    client = make_app().test_client()
    body = hook_request("patient-view", prefetch=full_prefetch(conditions=[ptsd_condition()]))
    body["context"]["patientId"] = "zelda-quux-123"
    _post(client, "/cds-services/ptsd-patient-view", body)
    text = client.get("/metrics").get_data(as_text=True)
    assert "zelda" not in text.lower() and body["hookInstance"] not in text


def test_recording_a_call_costs_microseconds():
    """What the metrics add per call (histogram + a card counter + the FHIR stats object)."""
    n = 2000
    metrics.observe_call("ptsd-patient-view", "call", 200, 0.001, ["step-2-ssri"])  # labels created
    start = time.perf_counter()
    for _ in range(n):
        metrics.observe_call("ptsd-patient-view", "call", 200, 0.001, ["step-2-ssri"])
        metrics.FhirStats()
    per_call = (time.perf_counter() - start) / n
    assert per_call < 100e-6, per_call  # measured about 6 µs on the 2-core development machine


# --- the call's log line ---------------------------------------------------------------------------
def test_request_id_is_taken_when_sane_and_echoed(client, caplog):
    caplog.set_level(logging.INFO, logger="ptsd_cds")
    resp = client.get("/cds-services", headers={"X-Request-ID": "ehr-7f3a.42"})
    assert resp.headers["X-Request-ID"] == "ehr-7f3a.42"
    assert _access(caplog)[-1]["request_id"] == "ehr-7f3a.42"


@pytest.mark.parametrize("sent", ["has space", "x" * 200, "<script>", "", "ünïcode"])
def test_an_odd_request_id_is_replaced(client, caplog, sent):
    caplog.set_level(logging.INFO, logger="ptsd_cds")
    resp = client.get("/cds-services", headers={"X-Request-ID": sent})
    rid = resp.headers["X-Request-ID"]
    assert rid != sent and re.fullmatch(r"[0-9a-f]{32}", rid)
    assert _access(caplog)[-1]["request_id"] == rid


def test_log_levels_follow_the_status(make_app, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="ptsd_cds")
    app = make_app()
    client = app.test_client()
    client.get("/cds-services")
    client.post("/cds-services/ptsd-patient-view", data="{", content_type="application/json")

    def explode(*args, **kwargs):
        raise KeyError("Zelda")
    monkeypatch.setattr(app.extensions["ptsd_cds"].engine, "run", explode)
    resp = _post(client, "/cds-services/ptsd-patient-view",
                 hook_request("patient-view", prefetch=full_prefetch()))
    assert resp.status_code == 500 and "Traceback" not in resp.get_data(as_text=True)
    ok, bad, broken = _access(caplog)[-3:]
    assert (ok["_level"], bad["_level"], broken["_level"]) == ("INFO", "WARNING", "ERROR")
    assert broken["exception"].startswith("KeyError at ") and "Zelda" not in json.dumps(broken)
    assert ok["remote"] == "127.0.0.1"


def test_probes_are_not_logged_but_their_failures_are(app, caplog):
    caplog.set_level(logging.INFO, logger="ptsd_cds")
    client = app.test_client()
    client.get("/healthz")
    client.get("/readyz")
    client.get("/metrics")
    assert _access(caplog) == []


def test_timestamps_have_milliseconds():
    from cds_service.logs import JsonFormatter

    record = logging.LogRecord("ptsd_cds.x", logging.INFO, __file__, 1, "hello", None, None)
    entry = json.loads(JsonFormatter().format(record))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])


def test_an_invalid_request_logs_its_hook_instance_only_when_it_is_an_identifier(client, caplog):
    caplog.set_level(logging.INFO, logger="ptsd_cds")
    _post(client, "/cds-services/ptsd-patient-view", {"hook": "patient-view", "hookInstance": "Zelda Quux, flashbacks"})
    _post(client, "/cds-services/ptsd-patient-view", {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad"})
    free_text, identifier = _access(caplog)[-2:]
    assert free_text["status"] == identifier["status"] == 400
    assert "hookInstance" not in free_text and "Zelda" not in json.dumps(free_text)
    assert identifier["hookInstance"] == "d1577c69-dfbe-44ad" and identifier["hook"] == "patient-view"


def test_a_multiprocess_directory_set_later_does_not_hide_this_process_metrics(make_app, monkeypatch, tmp_path):
    """E.g. a test importing the gunicorn configuration sets PROMETHEUS_MULTIPROC_DIR in-process."""
    client = make_app().test_client()
    client.get("/cds-services")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert metrics.multiprocess_dir() is None
    assert 'endpoint="discovery"' in client.get("/metrics").get_data(as_text=True)


def test_behind_a_proxy_the_client_address_comes_from_x_forwarded_for(make_app):
    """Behind nginx every call comes from 127.0.0.1: with PTSD_CDS_FORWARDED_HOPS the address nginx
    appends to X-Forwarded-For is the client's (a spoofed first entry is not), so the ops network
    restriction and the feedback rate limit key see the real client."""
    app = make_app(ops_networks="10.0.0.0/8", forwarded_hops=1)
    client = app.test_client()
    spoofed = {"X-Forwarded-For": "10.1.2.3, 203.0.113.9"}  # the caller claims 10.1.2.3; nginx saw 203.0.113.9
    assert client.get("/metrics", headers=spoofed).status_code == 401
    assert client.get("/metrics", headers={"X-Forwarded-For": "10.9.9.9"}).status_code == 200
    direct = make_app(ops_networks="10.0.0.0/8").test_client()  # no proxy: the header is ignored
    assert direct.get("/metrics", headers={"X-Forwarded-For": "10.9.9.9"}).status_code == 401


def test_the_card_catalogue_stays_open_when_ops_paths_are_restricted(make_app):
    """Every card links its catalogue page for the clinician (issue #8 point 15): it holds no
    patient data and stays open when the operations paths need the token."""
    client = make_app(ops_token=TOKEN).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/cards/benzodiazepine-avoid").status_code == 200 and client.get("/cards").status_code == 200
