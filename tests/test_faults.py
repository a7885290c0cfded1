"""Fault tests against real local servers (issue #11): a hostile or broken FHIR server or JWKS
endpoint ends a hook call within its budget with a 412 (required data incomplete) — never a 500,
never a hung worker — and trickling JWKS never delays calls whose keys are cached.

The servers are threaded stdlib servers on 127.0.0.1 (tests/fault_servers.py), not `responses`:
the sockets, timeouts and the deadline watchdog are the real ones.
"""

from __future__ import annotations

import json
import threading
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from cds_service.auth.jwks import JwksError, JwksFetcher, UrlKeySource
from tests.builders import hook_request, lorazepam
from tests.conftest import assert_outcome
from tests.fault_servers import FaultServer, self_signed_cert

BUDGET = 1.5  # PTSD_CDS_FHIR_TOTAL_BUDGET in these tests
SLACK = 1.0  # scheduling slack on a shared 2-core machine


@pytest.fixture(scope="module")
def fault_server():
    server = FaultServer().start()
    yield server
    server.close()


@pytest.fixture
def fault_app(make_app):
    return make_app(fhir_total_budget=BUDGET, fhir_connect_timeout=0.5, fhir_read_timeout=1.0)


def call(app, base: str, hook: str = "patient-view"):
    body = hook_request(hook, fhir_server=base, token="tok-123",
                        drafts=[lorazepam()] if hook != "patient-view" else ())
    client = app.test_client()
    t0 = time.monotonic()
    resp = client.post(f"/cds-services/ptsd-{hook}", data=json.dumps(body), content_type="application/json")
    return resp, time.monotonic() - t0


def test_a_well_behaved_server_is_the_control(fault_app, fault_server):
    resp, elapsed = call(fault_app, fault_server.base("ok"))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["cards"] == [] and elapsed < BUDGET


FAULTS = {
    "slow-first-byte": "timed out|time budget",
    "header-trickle": "headers when the time budget ran out|time budget",
    "body-trickle": "still arriving when the time budget ran out|time budget",
    "401": "HTTP 401",
    "403": "HTTP 403",
    "404": "HTTP 404",
    "429": "HTTP 429",
    "500": "HTTP 500",
    "503": "HTTP 503",
    "invalid-json": "not JSON",
    "not-a-bundle": "did not answer with a Bundle",
    "next-loop": "next links loop",
    "next-offhost": "outside the fhirServer",
}


@pytest.mark.spec("PF-16")
@pytest.mark.parametrize("mode", sorted(FAULTS))
def test_fhir_fault_ends_within_the_budget_with_412(fault_app, fault_server, mode):
    resp, elapsed = call(fault_app, fault_server.base(mode))
    text = assert_outcome(resp, 412)
    assert __import__("re").search(FAULTS[mode], text), text
    assert "tok-123" not in text  # the access token never appears in an answer
    assert elapsed < BUDGET + SLACK, f"{mode}: {elapsed:.2f} s"


@pytest.mark.spec("PF-16")
def test_order_hook_with_a_trickling_fhir_server_ends_with_412_in_time(fault_app, fault_server):
    resp, elapsed = call(fault_app, fault_server.base("header-trickle"), hook="order-select")
    assert_outcome(resp, 412)
    assert elapsed < BUDGET + SLACK


def test_connection_refused_is_412_at_once(fault_app):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    resp, elapsed = call(fault_app, f"http://127.0.0.1:{port}/fhir")
    assert "unreachable" in assert_outcome(resp, 412)
    assert elapsed < BUDGET


def test_total_byte_cap_per_call(make_app, fault_server):
    app = make_app(fhir_total_budget=5.0, fhir_max_pages=100, fhir_max_total_bytes=300_000)
    resp, elapsed = call(app, fault_server.base("big-pages"))
    assert "PTSD_CDS_FHIR_MAX_TOTAL_BYTES" in assert_outcome(resp, 412)
    # Three searches, each stopped once the call's total is used up: a few pages, not 100.
    assert len([h for h in fault_server.hits if h.startswith("/big-pages/")]) < 20
    assert elapsed < 5.0


def test_total_resource_cap_per_call(make_app, fault_server):
    app = make_app(fhir_total_budget=5.0, fhir_max_pages=100, fhir_max_resources=250)
    resp, _ = call(app, fault_server.base("big-pages"))
    assert "PTSD_CDS_FHIR_MAX_RESOURCES" in assert_outcome(resp, 412)


def test_the_default_caps_are_far_above_a_10000_resource_record():
    from cds_service.config import Settings

    s = Settings()
    assert s.fhir_max_resources >= 4 * 10_000
    assert s.fhir_max_total_bytes >= 4 * 10_000 * 3_000  # ~3 KB per Synthea resource


def test_many_trickling_calls_at_once_all_end_in_time(fault_app, fault_server):
    """Eight concurrent calls to a trickling server: every one ends within its own budget."""
    results: list[tuple[int, float]] = []

    def one():
        resp, elapsed = call(fault_app, fault_server.base("header-trickle"))
        results.append((resp.status_code, elapsed))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [s for s, _ in results] == [412] * 8
    assert max(e for _, e in results) < BUDGET + 2 * SLACK


# --- JWKS --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    cert, key = self_signed_cert(tmp_path_factory.mktemp("tls"))
    server = FaultServer(tls=(cert, key)).start()
    server.cert = cert
    yield server
    server.close()


def _jwks_source(server, *, refresh_interval=0.0, ttl=3600.0, timeout=(0.5, 1.0)) -> UrlKeySource:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE of the machine would override verify
    session.verify = str(server.cert)
    fetcher = JwksFetcher(session, timeout=timeout)
    return UrlKeySource(f"https://127.0.0.1:{server.port}/jwks/keys.json", fetcher, ttl=ttl,
                        refresh_interval=refresh_interval)


def _public_jwk(kid: str) -> dict:
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": "ES384"}


def test_trickling_jwks_headers_are_cut_at_the_fetch_budget(tls_server):
    tls_server.jwks_trickle.set()
    try:
        fetcher = _jwks_source(tls_server).fetcher
        t0 = time.monotonic()
        with pytest.raises(JwksError, match="still sending"):
            fetcher.fetch(f"https://127.0.0.1:{tls_server.port}/jwks/keys.json")
        assert time.monotonic() - t0 < fetcher.budget + SLACK
    finally:
        tls_server.jwks_trickle.clear()


def test_trickling_jwks_does_not_delay_tokens_with_cached_keys(tls_server):
    tls_server.jwks_doc = {"keys": [_public_jwk("good")]}
    source = _jwks_source(tls_server)
    assert source.lookup("good", "ES384") is not None  # first fetch: keys cached
    tls_server.jwks_trickle.set()
    try:
        # A token with a made-up kid starts a re-fetch that trickles for the whole budget...
        attacker = threading.Thread(target=source.lookup, args=("made-up", "ES384"))
        t0 = time.monotonic()
        attacker.start()
        time.sleep(0.2)
        assert source._inflight is not None  # the trickling fetch is running
        # ...while valid tokens are verified from the cache at once, fetch or no fetch.
        for _ in range(20):
            t1 = time.monotonic()
            assert source.lookup("good", "ES384") is not None
            assert time.monotonic() - t1 < 0.1
        # A second made-up kid waits for the running fetch instead of starting another.
        count = source.fetch_count
        assert source.lookup("other-made-up", "ES384") is None
        assert source.fetch_count == count
        attacker.join(10)
        assert time.monotonic() - t0 < source.fetcher.budget + 2 * SLACK
    finally:
        tls_server.jwks_trickle.clear()
    assert source.wait_idle(5)


def test_hook_calls_with_cached_keys_are_not_delayed_by_a_trickling_jwks(tls_server, tmp_path, monkeypatch):
    """End to end: the app with authentication required, an issuer whose keys come from a
    (local, TLS) jwks_url. A token with a made-up kid makes the JWKS trickle; valid tokens keep
    being answered at once, and the made-up one ends with a 401 within the fetch budget."""
    import uuid

    from cds_service import create_app

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_server.cert))  # how an operator trusts a private CA
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = {**jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "use": "sig"}
    tls_server.jwks_doc = {"keys": [jwk]}
    iss = "https://ehr.example.org"
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps({"issuers": [
        {"iss": iss, "jwks_url": f"https://127.0.0.1:{tls_server.port}/jwks/keys.json"}]}))
    app = create_app({"auth": "required", "trusted_issuers": str(issuers), "public_url": "https://cds.example.org",
                      "database": str(tmp_path / "db.sqlite3"), "today": "2026-11-28", "jwks_refresh_interval": 0})
    client = app.test_client()
    body = json.dumps(hook_request("order-select", prefetch={"patient": None, "conditions": None,
                                                            "medications": None, "procedures": None},
                                   drafts=[lorazepam()]))

    def token(kid: str) -> str:
        now = int(time.time())
        return jwt.encode({"iss": iss, "aud": "https://cds.example.org/cds-services/ptsd-order-select",
                           "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}, key, algorithm="ES384",
                          headers={"kid": kid, "typ": "JWT"})

    def hook(kid: str):
        return client.post("/cds-services/ptsd-order-select", data=body, content_type="application/json",
                           headers={"Authorization": f"Bearer {token(kid)}"})

    assert hook("k1").status_code == 200  # keys fetched and cached
    tls_server.jwks_trickle.set()
    try:
        results = []
        attacker = threading.Thread(target=lambda: results.append((hook("made-up").status_code, time.monotonic())))
        t0 = time.monotonic()
        attacker.start()
        time.sleep(0.3)
        for _ in range(10):
            t1 = time.monotonic()
            assert hook("k1").status_code == 200
            assert time.monotonic() - t1 < 0.5  # not waiting on the trickling fetch
        attacker.join(20)
        status, ended = results[0]
        assert status == 401
        assert ended - t0 < 8.0 + 2 * SLACK  # JWKS fetch budget: connect 3 s + read 5 s
    finally:
        tls_server.jwks_trickle.clear()
