"""The store seen through the HTTP API: issued-card record, patient keys, feedback rate limit,
unstorable text, settings, the purge command, and a PostgreSQL outage (a real server, stopped)."""

from __future__ import annotations

import json
import time

import pytest
from flask import g

from cds_service.cli import main as cli_main
from cds_service.config import ConfigError, Settings
from cds_service.patient_key import patient_key
from tests.builders import PATIENT_ID, full_prefetch, hook_request, lorazepam, ptsd_condition, topics
from tests.conftest import assert_conformant, assert_outcome
from tests.test_auth_http import auth, auth_app, key, token_for  # noqa: F401 - fixtures

ORDER_SELECT = "/cds-services/ptsd-order-select"
SECRET = "s" * 40


def call(client, url, body, headers=None):
    return client.post(url, data=json.dumps(body), content_type="application/json", headers=headers or {})


def benzo_request():
    return hook_request("order-select", prefetch=full_prefetch(conditions=[ptsd_condition()]), drafts=[lorazepam()])


def feedback_for(card_uuid, n=0):
    return {"feedback": [{"card": card_uuid, "outcome": "overridden",
                          "overrideReason": {"reason": {"code": "other", "system": "http://example.org"}},
                          "outcomeTimestamp": f"2026-11-28T12:00:{n:02d}Z"}]}


# --- issued-card record -------------------------------------------------------------------------
def test_every_returned_card_is_recorded_with_a_keyed_patient_hash(make_app):
    app = make_app(patient_key_secret=SECRET)
    result = assert_conformant(call(app.test_client(), ORDER_SELECT, benzo_request()))
    assert "benzodiazepine-avoid" in topics(result)
    store = app.extensions["ptsd_cds"].store
    expected_key = patient_key(SECRET.encode(), None, None, PATIENT_ID)
    for card in result["cards"]:
        issued = store.issued_card(card["uuid"])
        assert issued is not None
        assert (issued.topic, issued.service_id, issued.hook) == (card["source"]["topic"]["code"],
                                                                  "ptsd-order-select", "order-select")
        assert issued.patient_key == expected_key and PATIENT_ID not in issued.patient_key
        assert issued.demo is False and abs(issued.issued_at - time.time()) < 60
    # feedback on that card is counted under its topic
    call(app.test_client(), ORDER_SELECT + "/feedback", feedback_for(result["cards"][0]["uuid"]))
    [row] = store.feedback_counts()
    assert row["topic"] == result["cards"][0]["source"]["topic"]["code"] and row["reason"] == "other"


def test_demo_clients_are_tagged_and_left_out_of_counts(make_app):
    app = make_app()

    @app.before_request
    def _demo():  # what the pages branch does for PTSD_CDS_DEMO=on
        g.demo_client = True

    client = app.test_client()
    result = assert_conformant(call(client, ORDER_SELECT, benzo_request()))
    uuid = result["cards"][0]["uuid"]
    assert call(client, ORDER_SELECT + "/feedback", feedback_for(uuid)).status_code == 200
    store = app.extensions["ptsd_cds"].store
    assert store.issued_card(uuid).demo is True and store.feedback()[0]["demo"] is True
    assert store.issued_counts() == [] and store.feedback_counts() == []
    assert store.issued_counts(include_demo=True) and store.feedback_counts(include_demo=True)


def test_patient_keys_depend_on_issuer_server_and_id():
    secret = b"x" * 32
    base = patient_key(secret, "https://a", "https://fhir", "p1")
    assert len(base) == 64 and base == patient_key(secret, "https://a", "https://fhir/", "p1")
    others = {patient_key(secret, "https://b", "https://fhir", "p1"), patient_key(secret, "https://a", None, "p1"),
              patient_key(secret, "https://a", "https://fhir", "p2"), patient_key(b"y" * 32, "https://a",
                                                                                 "https://fhir", "p1"),
              patient_key(secret, "https://a", "https://fhirp", "1")}
    assert base not in others and len(others) == 5


def test_without_a_configured_secret_sqlite_keeps_one_generated_secret(make_app):
    first = make_app().extensions["ptsd_cds"].patient_key_secret
    again = make_app().extensions["ptsd_cds"].patient_key_secret  # same database file: same secret
    assert first == again and len(first) == 32
    assert make_app(patient_key_secret=SECRET).extensions["ptsd_cds"].patient_key_secret == SECRET.encode()


# --- feedback: rate limit, unstorable text -------------------------------------------------------
def test_feedback_writes_are_rate_limited_per_client_and_hook_calls_never(make_app):
    app = make_app(feedback_rate_limit="3/minute")
    client = app.test_client()
    for n in range(3):
        assert call(client, ORDER_SELECT + "/feedback", feedback_for("c", n)).status_code == 200
    resp = call(client, ORDER_SELECT + "/feedback", feedback_for("c", 9))
    assert_outcome(resp, 429)
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert len(app.extensions["ptsd_cds"].store.feedback()) == 3
    # another client (remote address, auth off) has its own budget
    other = client.post(
        ORDER_SELECT + "/feedback", data=json.dumps(feedback_for("c", 10)), content_type="application/json",
        environ_base={"REMOTE_ADDR": "127.0.0.9"})
    assert other.status_code == 200
    # hook calls are never limited: a 429 would hide a warning
    for _ in range(8):
        assert "benzodiazepine-avoid" in topics(assert_conformant(call(client, ORDER_SELECT, benzo_request())))


def test_the_feedback_limit_is_keyed_by_the_token_issuer(auth_app, key):  # noqa: F811
    app = auth_app(feedback_rate_limit="2/minute", public_url="http://cds.test")
    client = app.test_client()
    url = ORDER_SELECT + "/feedback"
    statuses = []
    for n, addr in enumerate(["127.0.0.2", "127.0.0.3", "127.0.0.4"]):  # one issuer, several addresses
        statuses.append(client.post(url, data=json.dumps(feedback_for("c", n)), content_type="application/json",
                                    headers=auth(token_for(key, "http://cds.test" + url)),
                                    environ_base={"REMOTE_ADDR": addr}).status_code)
    assert statuses == [200, 200, 429]


@pytest.mark.parametrize("card", ["\ud800", "abc\udfff", "nul\u0000here"])
def test_text_no_database_can_store_is_400_never_500(client, card):
    resp = client.post(ORDER_SELECT + "/feedback",
                       data=json.dumps(feedback_for(card), ensure_ascii=True), content_type="application/json")
    assert_outcome(resp, 400)


# --- settings and the purge command -------------------------------------------------------------
@pytest.mark.parametrize("overrides,needle", [
    ({"database": "postgresql://db.example/cds"}, "PTSD_CDS_PATIENT_KEY_SECRET"),
    ({"database": "mysql://db.example/cds"}, "PTSD_CDS_DATABASE"),
    ({"patient_key_secret": "short"}, "PTSD_CDS_PATIENT_KEY_SECRET"),
    ({"feedback_retention_days": 10, "snooze_days": 30}, "PTSD_CDS_FEEDBACK_RETENTION_DAYS"),
    ({"store_user_comments": "yes"}, "PTSD_CDS_STORE_USER_COMMENTS"),
    ({"feedback_rate_limit": "lots"}, "PTSD_CDS_FEEDBACK_RATE_LIMIT"),
    ({"database_pool_min": 5, "database_pool_max": 2}, "PTSD_CDS_DATABASE_POOL_MAX"),
])
def test_store_settings_are_validated(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        Settings().with_overrides({"auth": "off", **overrides})


def test_the_banner_shows_no_secret_and_no_database_password():
    settings = Settings().with_overrides({"auth": "off", "database": "postgresql://cds:pw-123@db:5432/cds",
                                          "patient_key_secret": SECRET})
    text = "\n".join(settings.describe())
    assert "pw-123" not in text and SECRET not in text
    assert "PTSD_CDS_DATABASE=postgresql://cds:***@db:5432/cds" in text and "PATIENT_KEY_SECRET=***" in text


def test_purge_command_removes_expired_entries(tmp_path, monkeypatch, capsys):
    from cds_service.store import open_store

    db = str(tmp_path / "p.sqlite3")
    monkeypatch.setenv("PTSD_CDS_AUTH", "off")
    monkeypatch.setenv("PTSD_CDS_DATABASE", db)
    store = open_store(Settings.from_env())
    store.remember_jti("iss", "old", time.time() - 10)
    store.add_snooze("pk", "t", time.time() - 10)
    store.close()
    assert cli_main(["purge"]) == 0
    out = capsys.readouterr().out
    assert "replay=1" in out and "snoozes=1" in out and "feedback=0" in out


# --- a PostgreSQL outage, through the app ------------------------------------------------------
@pytest.fixture
def own_pg():
    """A PostgreSQL server of this test's own (it is stopped and restarted)."""
    from tests.pg_server import PgServer

    server = PgServer().init()
    yield server
    server.destroy()


def test_during_a_database_outage_hooks_are_served_and_feedback_is_503(own_pg, make_app, tmp_path):
    app = make_app(database=own_pg.create_database("outage"), patient_key_secret=SECRET,
                   replay_fallback=str(tmp_path / "fallback.sqlite3"))
    client = app.test_client()
    store = app.extensions["ptsd_cds"].store
    store.probe_interval = 0.2
    before = assert_conformant(call(client, ORDER_SELECT, benzo_request()))
    assert store.issued_card(before["cards"][0]["uuid"]) is not None
    own_pg.stop("immediate")

    started = time.perf_counter()
    during = assert_conformant(call(client, ORDER_SELECT, benzo_request()))
    first = time.perf_counter() - started
    assert "benzodiazepine-avoid" in topics(during)
    timings = []
    for _ in range(5):
        t = time.perf_counter()
        assert "benzodiazepine-avoid" in topics(assert_conformant(call(client, ORDER_SELECT, benzo_request())))
        timings.append(time.perf_counter() - t)
    # a dead database never stalls a hook call: the first waits at most PTSD_CDS_DATABASE_TIMEOUT
    # (0.25 s) for a connection, the next ones skip the database (margins for a loaded CI)
    assert first < 1.5 and sorted(timings)[2] < 0.5, (first, timings)
    resp = call(client, ORDER_SELECT + "/feedback", feedback_for(during["cards"][0]["uuid"]))
    assert "unavailable" in assert_outcome(resp, 503) and resp.headers["Retry-After"]
    health = store.health()
    assert health["available"] is False and health["issued_cards_dropped"] >= 1

    time.sleep(5)  # long enough for a pool's own reconnect back-off to grow past several seconds
    own_pg.start()
    back = time.time()
    while not store.available and time.time() < back + 10:
        time.sleep(0.1)
    assert store.available, "the store did not reconnect by itself"
    assert time.time() - back < 4.0  # the probe runs every 0.2 s here (1 s by default)
    assert call(client, ORDER_SELECT + "/feedback", feedback_for(before["cards"][0]["uuid"])).status_code == 200
    after = assert_conformant(call(client, ORDER_SELECT, benzo_request()))
    assert store.issued_card(after["cards"][0]["uuid"]) is not None
    assert store.stats()["reconnects"] == 1


def test_replay_check_survives_a_locked_host_cache_during_an_outage(own_pg, tmp_path):
    """Database down and the host-local file locked: the check falls back to process memory."""
    import sqlite3

    from cds_service.store import open_store

    fallback = tmp_path / "fallback.sqlite3"
    store = open_store(Settings().with_overrides({
        "auth": "off", "database": own_pg.create_database("locked"), "patient_key_secret": SECRET,
        "replay_fallback": str(fallback)}))
    try:
        own_pg.stop("immediate")
        assert store.remember_jti("iss", "a", time.time() + 60) is True  # host-local file
        assert store.remember_jti("iss", "a", time.time() + 60) is False
        blocker = sqlite3.connect(fallback, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the file
        try:
            started = time.perf_counter()
            assert store.remember_jti("iss", "b", time.time() + 60) is True
            assert store.remember_jti("iss", "b", time.time() + 60) is False  # still refused
            assert time.perf_counter() - started < 5.0  # bounded by the 1 s busy timeout (x2, loaded CI)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        stats = store.stats()
        assert stats["replay_memory"] == 2 and stats["replay_fallback"] >= 4
    finally:
        store.close()


def test_check_config_says_whether_the_postgresql_store_answers(pg_server, monkeypatch, capsys):
    url = pg_server.create_database("checkcfg")
    monkeypatch.setenv("PTSD_CDS_AUTH", "off")
    monkeypatch.setenv("PTSD_CDS_PATIENT_KEY_SECRET", SECRET)
    monkeypatch.setenv("PTSD_CDS_DATABASE", url)
    assert cli_main(["check-config"]) == 0
    assert "reachable; schema version none yet" in capsys.readouterr().out
    from tests.pg_server import free_port

    monkeypatch.setenv("PTSD_CDS_DATABASE", f"postgresql://ptsd:pw@127.0.0.1:{free_port()}/nothing")
    assert cli_main(["check-config"]) == 1
    out = capsys.readouterr().out
    assert "NOT reachable" in out and ":pw@" not in out
