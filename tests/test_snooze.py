"""Snooze after a reasoned override (issue #8 point 18, service rule), through the HTTP app.

A guideline-step card dismissed (feedback "overridden") with a reason marked ``snoozable`` in
cards/shared.toml is not shown again on patient-view for that patient for PTSD_CDS_SNOOZE_DAYS;
the benzodiazepine, MDMA, dose and order-not-checked cards never are. Run against both store
engines (SQLite and a real PostgreSQL server), with the app's clock moved on instead of waiting.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cds_service.card_content import NEVER_SNOOZED, CardContentError, load_cards
from cds_service.codesystems import OVERRIDE_REASON
from cds_service.config import REPO_ROOT
from cds_service.patient_key import patient_key
from cds_service.rules import SAFETY_TOPICS, TOPICS
from tests.conftest import assert_conformant, assert_outcome

DAY = 86400.0
SECRET = "snooze-test-secret-" + "x" * 24
CARDS_DIR = REPO_ROOT / "cards"
REQUESTS = REPO_ROOT / "fixtures" / "requests"
PATIENT_VIEW = "/cds-services/ptsd-patient-view"
ORDER_SELECT = "/cds-services/ptsd-order-select"
BENZO = "benzodiazepine-avoid"
S1, S3, S4 = "step-1-trauma-focused-psychotherapy", "step-3-nightmares", "step-4-venlafaxine"


def fixture(name: str) -> dict:
    return json.loads((REQUESTS / f"{name}.json").read_text(encoding="utf-8"))


def call(client, url: str, body: dict):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def cards_by_topic(client, name: str, url: str = PATIENT_VIEW) -> dict[str, dict]:
    return {c["source"]["topic"]["code"]: c for c in assert_conformant(call(client, url, fixture(name)))["cards"]}


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def override(client, card: dict, code: str, at: float, *, url: str = PATIENT_VIEW,
             system: str = OVERRIDE_REASON):
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": rfc3339(at),
            "overrideReason": {"reason": {"code": code, "system": system}}}
    return call(client, url + "/feedback", {"feedback": [item]})


class Clock:
    """The app's clock (``Components.clock``), moved on by the test instead of waiting 30 days."""

    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def snooze_app(request, make_app, tmp_path):
    """An app on the given store engine, with a clock the test moves; returns (app, clock)."""
    overrides = {"patient_key_secret": SECRET}
    if request.param == "postgresql":
        overrides |= {"database": request.getfixturevalue("pg_url"),
                      "replay_fallback": str(tmp_path / "fallback.sqlite3")}
    app = make_app(**overrides)
    clock = Clock()
    app.extensions["ptsd_cds"].clock = clock
    yield app, clock
    app.extensions["ptsd_cds"].store.close()


# --- the whole path, through HTTP --------------------------------------------------------------------
def test_a_snoozable_override_silences_that_card_kind_for_that_patient_for_the_period(snooze_app):
    app, clock = snooze_app
    client = app.test_client()
    store = app.extensions["ptsd_cds"].store
    days = app.extensions["ptsd_cds"].settings.snooze_days
    assert days == 30  # the default

    first = cards_by_topic(client, "ptsd-ssri-failed-nightmares.patient-view")
    assert list(first) == [S4, S3]
    declined = next(r for r in first[S4]["overrideReasons"] if r["code"] == "patient-declined")
    assert "30 days" in declined["display"]  # the clinician is told before choosing it
    # the hook path recorded the card: uuid -> topic, service, keyed patient hash, time
    issued = store.issued_card(first[S4]["uuid"])
    expected_key = patient_key(SECRET.encode(), None, None, "ptsd-ssri-failed-nightmares")
    assert (issued.topic, issued.service_id, issued.patient_key) == (S4, "ptsd-patient-view", expected_key)
    assert abs(issued.issued_at - clock.now) < 1

    assert override(client, first[S4], "patient-declined", clock.now).status_code == 200
    assert store.snoozed_topics(expected_key, clock.now) == {S4}
    # the same patient: the snoozed kind is gone, the other kinds still show
    assert list(cards_by_topic(client, "ptsd-ssri-failed-nightmares.patient-view")) == [S3]
    # another patient with the same card kind is unaffected
    assert list(cards_by_topic(client, "ptsd-ssri-renewals.patient-view")) == [S4]

    clock.now += (days - 1) * DAY
    assert list(cards_by_topic(client, "ptsd-ssri-failed-nightmares.patient-view")) == [S3]
    clock.now += 1 * DAY + 60  # past the period: the card returns
    assert list(cards_by_topic(client, "ptsd-ssri-failed-nightmares.patient-view")) == [S4, S3]


def test_a_reason_that_is_not_snoozable_does_not_snooze(snooze_app):
    app, clock = snooze_app
    client = app.test_client()
    first = cards_by_topic(client, "ptsd-ssri-failed-nightmares.patient-view")
    assert override(client, first[S3], "not-appropriate-now", clock.now).status_code == 200
    # a snoozable code of another code system is not this service's reason
    assert override(client, first[S4], "patient-declined", clock.now, system="http://example.org/reasons").status_code == 200
    # accepted is not a dismissal
    accepted = {"card": first[S3]["uuid"], "outcome": "accepted", "outcomeTimestamp": rfc3339(clock.now),
                "acceptedSuggestions": [{"id": "x"}]}
    assert call(client, PATIENT_VIEW + "/feedback", {"feedback": [accepted]}).status_code == 200
    assert list(cards_by_topic(client, "ptsd-ssri-failed-nightmares.patient-view")) == [S4, S3]
    # and the same card dismissed with a snoozable reason does snooze (the test can fail)
    assert override(client, first[S3], "already-discussed", clock.now).status_code == 200
    assert list(cards_by_topic(client, "ptsd-ssri-failed-nightmares.patient-view")) == [S4]


def test_benzodiazepine_cards_are_never_snoozed_on_any_hook(snooze_app):
    app, clock = snooze_app
    client = app.test_client()
    store = app.extensions["ptsd_cds"].store
    pv = cards_by_topic(client, "ptsd-benzo-therapy.patient-view")
    assert list(pv) == [BENZO, S1]
    # dismissed with every snoozable code and with its own reasons: no snooze
    for code in ("patient-declined", "already-discussed", "already-done-elsewhere", "taper-in-progress"):
        assert override(client, pv[BENZO], code, clock.now).status_code == 200
    sel = cards_by_topic(client, "ptsd-benzo-therapy.select-lorazepam", ORDER_SELECT)
    assert list(sel) == [BENZO]
    assert override(client, sel[BENZO], "patient-declined", clock.now, url=ORDER_SELECT).status_code == 200
    key = store.issued_card(pv[BENZO]["uuid"]).patient_key
    assert store.snoozed_topics(key, clock.now) == set()
    assert list(cards_by_topic(client, "ptsd-benzo-therapy.patient-view")) == [BENZO, S1]
    assert list(cards_by_topic(client, "ptsd-benzo-therapy.select-lorazepam", ORDER_SELECT)) == [BENZO]
    # a snooze row for the benzodiazepine card (written by hand) is not honoured either
    store.add_snooze(key, BENZO, clock.now + 10 * DAY)
    assert list(cards_by_topic(client, "ptsd-benzo-therapy.patient-view")) == [BENZO, S1]
    # while the step card of the same patient is snoozable
    assert override(client, pv[S1], "patient-declined", clock.now).status_code == 200
    assert list(cards_by_topic(client, "ptsd-benzo-therapy.patient-view")) == [BENZO]


def test_the_snooze_counts_from_the_dismissal_and_a_retry_does_not_extend_it(snooze_app):
    app, clock = snooze_app
    client = app.test_client()
    store = app.extensions["ptsd_cds"].store
    first = cards_by_topic(client, "ptsd-new.patient-view")
    dismissed_at = clock.now
    assert override(client, first[S1], "patient-declined", dismissed_at).status_code == 200
    key = store.issued_card(first[S1]["uuid"]).patient_key
    clock.now += 10 * DAY  # the EHR retries the same feedback ten days later
    assert override(client, first[S1], "patient-declined", dismissed_at).status_code == 200
    assert store.snoozed_topics(key, dismissed_at + 30 * DAY - 60) == {S1}
    assert store.snoozed_topics(key, dismissed_at + 30 * DAY + 60) == set()
    # a timestamp in the future is counted from now, not from then
    clock.now += 1 * DAY
    later = cards_by_topic(client, "ptsd-ssri-renewals.patient-view")
    assert override(client, later[S4], "patient-declined", clock.now + 365 * DAY).status_code == 200
    key2 = store.issued_card(later[S4]["uuid"]).patient_key
    assert store.snoozed_topics(key2, clock.now + 31 * DAY) == set()


def test_feedback_on_an_unknown_card_or_from_another_service_sets_no_snooze(snooze_app):
    app, clock = snooze_app
    client = app.test_client()
    first = cards_by_topic(client, "ptsd-new.patient-view")
    unknown = dict(first[S1], uuid="no-such-card")
    assert override(client, unknown, "patient-declined", clock.now).status_code == 200
    # the patient-view card's feedback sent to the order-select service: not that service's card
    assert override(client, first[S1], "patient-declined", clock.now, url=ORDER_SELECT).status_code == 200
    assert list(cards_by_topic(client, "ptsd-new.patient-view")) == [S1]


def test_the_snooze_period_is_the_setting(make_app):
    app = make_app(patient_key_secret=SECRET, snooze_days=3)
    clock = Clock()
    app.extensions["ptsd_cds"].clock = clock
    client = app.test_client()
    first = cards_by_topic(client, "ptsd-new.patient-view")
    assert "3 days" in next(r["display"] for r in first[S1]["overrideReasons"] if r["code"] == "patient-declined")
    assert override(client, first[S1], "patient-declined", clock.now).status_code == 200
    clock.now += 2 * DAY
    assert cards_by_topic(client, "ptsd-new.patient-view") == {}
    clock.now += 1 * DAY + 60
    assert list(cards_by_topic(client, "ptsd-new.patient-view")) == [S1]


def test_demo_calls_never_snooze(make_app):
    from flask import g

    app = make_app(patient_key_secret=SECRET)

    @app.before_request
    def _demo():
        g.demo_client = True

    client = app.test_client()
    first = cards_by_topic(client, "ptsd-new.patient-view")
    assert override(client, first[S1], "patient-declined", time.time()).status_code == 200
    assert list(cards_by_topic(client, "ptsd-new.patient-view")) == [S1]


# --- best-effort: a store outage shows the card, feedback keeps its 503 rule ------------------------
@pytest.fixture
def own_pg():
    from tests.pg_server import PgServer

    server = PgServer().init()
    yield server
    server.destroy()


def test_during_a_store_outage_snoozed_cards_show_and_feedback_is_503(own_pg, make_app, tmp_path):
    app = make_app(database=own_pg.create_database("snooze_outage"), patient_key_secret=SECRET,
                   replay_fallback=str(tmp_path / "fallback.sqlite3"))
    client = app.test_client()
    store = app.extensions["ptsd_cds"].store
    store.probe_interval = 0.2
    first = cards_by_topic(client, "ptsd-ssri-failed-nightmares.patient-view")
    assert override(client, first[S4], "patient-declined", time.time()).status_code == 200
    assert list(cards_by_topic(client, "ptsd-ssri-failed-nightmares.patient-view")) == [S3]
    own_pg.stop("immediate")
    try:
        # the snooze cannot be read: the card shows (the safe direction) and the call succeeds
        during = cards_by_topic(client, "ptsd-ssri-failed-nightmares.patient-view")
        assert list(during) == [S4, S3]
        resp = override(client, during[S3], "patient-declined", time.time())
        assert "unavailable" in assert_outcome(resp, 503)
    finally:
        own_pg.start()
    deadline = time.time() + 10
    while not store.available and time.time() < deadline:
        time.sleep(0.1)
    assert store.available
    assert list(cards_by_topic(client, "ptsd-ssri-failed-nightmares.patient-view")) == [S3]  # it held
    store.close()


# --- the data: which reasons snooze, and never on a safety card -------------------------------------
def test_snoozable_reasons_are_data_and_only_on_guideline_step_cards():
    cards = load_cards(CARDS_DIR, topics=TOPICS)
    assert NEVER_SNOOZED == {"benzodiazepine-avoid", "mdma-investigational", "dose-out-of-range",
                             "order-not-checked"} == set(SAFETY_TOPICS)
    for topic, card in cards.items():
        if topic in NEVER_SNOOZED:
            assert card.snoozable_reasons == frozenset(), topic
        else:
            assert card.snoozable_reasons == {"patient-declined", "already-discussed", "already-done-elsewhere"}, topic
            assert "not-appropriate-now" in dict(card.override_reasons)  # offered, not snoozable


@pytest.fixture
def cards_copy(tmp_path) -> Path:
    target = tmp_path / "cards"
    shutil.copytree(CARDS_DIR, target)
    return target


@pytest.mark.parametrize("topic", sorted(NEVER_SNOOZED))
def test_a_snoozable_reason_on_a_never_snoozed_card_is_a_load_error(cards_copy, topic):
    path = cards_copy / f"{topic}.toml"
    text = path.read_text()
    assert 'override_reasons = ["' in text
    path.write_text(text.replace('override_reasons = ["', 'override_reasons = ["patient-declined", "', 1))
    with pytest.raises(CardContentError, match=rf"{topic}.toml: override_reasons: \['patient-declined'\] are "
                                               r"snoozable in shared.toml, but a .* card is never snoozed"):
        load_cards(cards_copy, topics=TOPICS)


def test_marking_a_safety_cards_reason_snoozable_or_a_misspelt_entry_is_refused(cards_copy):
    shared = cards_copy / "shared.toml"
    text = shared.read_text()
    shared.write_text(text.replace('dose-intended = "Dose intended', 'dose-intended = { display = "Dose intended', 1)
                      .replace('(titration step or specialist advice)"', '(titration step or specialist advice)", '
                                                                          'snoozable = true }', 1))
    with pytest.raises(CardContentError, match=r"dose-out-of-range.toml: override_reasons"):
        load_cards(cards_copy, topics=TOPICS)
    declined = 'patient-declined = { display = "Patient declined", snoozable = true }'
    assert declined in text
    shared.write_text(text.replace(declined, declined.replace("snoozable", "snoozeable")))
    with pytest.raises(CardContentError, match=r"override_reasons\..*unknown field\(s\) \['snoozeable'\]"):
        load_cards(cards_copy, topics=TOPICS)
    shared.write_text(text.replace(declined, declined.replace("true", '"yes"')))
    with pytest.raises(CardContentError, match=r"snoozable: must be a bool"):
        load_cards(cards_copy, topics=TOPICS)


# --- the engine: snoozes asked for only when they can matter ----------------------------------------
@pytest.mark.parametrize("name, asked, shown", [
    ("ptsd-ssri-failed-nightmares.patient-view", 1, [S3]),   # S4 snoozed, S3 shown
    ("ptsd-benzo-therapy.patient-view", 1, [BENZO, S1]),     # a benzodiazepine card is never left out
    ("mdma-no-ptsd.patient-view", 0, ["mdma-investigational"]),  # only a safety card: no store read
    ("benzo-no-ptsd.patient-view", 0, []),                    # no card at all
    ("ptsd-benzo-therapy.select-lorazepam", 0, [BENZO]),      # order hooks: never
])
def test_the_engine_asks_for_snoozes_only_when_a_snoozable_card_would_be_shown(name, asked, shown):
    from tests.test_engine_table import TODAY, load, record_of
    from cds_service.config import Settings
    from cds_service.engine import Engine

    settings = Settings(auth="off", env="development")
    engine = Engine(settings)
    assert engine.snoozable_topics == set(TOPICS) - NEVER_SNOOZED
    calls = []

    def snoozed():
        calls.append(1)
        return {S4, BENZO, "mdma-investigational"}  # a benzodiazepine or MDMA snooze is never honoured

    body = load(name)
    outcome = engine.run(body["hook"], record_of(body, settings), TODAY, snoozed=snoozed)
    assert len(calls) == asked
    assert [c["source"]["topic"]["code"] for c in outcome.cards] == shown
    assert outcome.snoozed == ([S4] if S4 not in shown and asked and "nightmares" in name else [])
