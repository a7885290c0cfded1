"""Feedback: POST /cds-services/{id}/feedback (CHECKLIST §5), stored durably in SQLite."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3

import pytest

from cds_service.store import Store
from tests.conftest import assert_outcome

URL = "/cds-services/ptsd-order-select/feedback"
ACCEPTED = {"card": "9368d37b-283f-44a0-93ea-547cebab93ed", "outcome": "accepted",
            "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
            "outcomeTimestamp": "2026-11-28T12:00:00Z"}
OVERRIDDEN = {"card": "9368d37b-283f-44a0-93ea-547cebab93ee", "outcome": "overridden",
              "overrideReason": {"reason": {"code": "procedure-short-term",
                                            "system": "http://ptsd-cds.org/fhir/CodeSystem/override-reason"},
                                 "userComment": "sedation for MRI"},
              "outcomeTimestamp": "2026-11-28T12:01:30.52Z"}


def post(client, body, url=URL):
    return client.post(url, data=json.dumps(body), content_type="application/json")


@pytest.mark.spec("FB-01 FB-02 FB-03 FB-07 FB-08")
def test_feedback_round_trip_is_stored(app):
    client = app.test_client()
    resp = post(client, {"feedback": [ACCEPTED, OVERRIDDEN]})
    assert resp.status_code == 200
    assert "2 new" in resp.get_json()["issue"][0]["diagnostics"]
    stored = app.extensions["ptsd_cds"].store.feedback(service_id="ptsd-order-select")
    # overrideReason.userComment is free text: dropped before storing unless PTSD_CDS_STORE_USER_COMMENTS=on
    without_comment = {**OVERRIDDEN, "overrideReason": {"reason": OVERRIDDEN["overrideReason"]["reason"]}}
    assert [s["item"] for s in stored] == [ACCEPTED, without_comment]


def test_user_comments_are_kept_only_when_switched_on(make_app):
    app = make_app(store_user_comments="on")
    post(app.test_client(), {"feedback": [OVERRIDDEN]})
    assert [s["item"] for s in app.extensions["ptsd_cds"].store.feedback()] == [OVERRIDDEN]


@pytest.mark.spec("FB-05")
def test_repeated_feedback_is_idempotent(app):
    client = app.test_client()
    post(client, {"feedback": [ACCEPTED]})
    resp = post(client, {"feedback": [ACCEPTED]})
    assert "1 already stored" in resp.get_json()["issue"][0]["diagnostics"]
    assert len(app.extensions["ptsd_cds"].store.feedback()) == 1


def test_feedback_survives_an_app_restart(make_app, tmp_path):
    post(make_app().test_client(), {"feedback": [OVERRIDDEN]})
    restarted = make_app()  # same database file, new process state
    assert [s["item"]["card"] for s in restarted.extensions["ptsd_cds"].store.feedback()] == [OVERRIDDEN["card"]]
    # and it is on disk, readable by any other process
    rows = sqlite3.connect(tmp_path / "ptsd-cds.sqlite3").execute("SELECT card_uuid FROM feedback").fetchall()
    assert rows == [(OVERRIDDEN["card"],)]


def _write_feedback(path, worker, count):
    store = Store(path)
    for i in range(count):
        item = dict(OVERRIDDEN, card=f"card-{worker}-{i}")
        store.save_feedback("ptsd-order-sign", [item], None)


def test_several_worker_processes_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.sqlite3")
    # Close before forking: a SQLite connection must never be inherited by a child process (a
    # child that closes it, e.g. by garbage collection, can delete the WAL under the others).
    Store(path).close()
    procs = [multiprocessing.Process(target=_write_feedback, args=(path, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(Store(path).feedback()) == 160


@pytest.mark.spec("cds-fb-1 cds-fb-2 cds-fb-3 FB-03")
@pytest.mark.parametrize("item,needle", [
    ({**ACCEPTED, "outcome": "dismissed"}, "outcome"),
    ({k: v for k, v in ACCEPTED.items() if k != "acceptedSuggestions"}, "acceptedSuggestions"),
    ({**OVERRIDDEN, "overrideReason": {}}, "overrideReason"),
    ({k: v for k, v in ACCEPTED.items() if k != "card"}, "card"),
    ({k: v for k, v in ACCEPTED.items() if k != "outcomeTimestamp"}, "outcomeTimestamp"),
    ({**ACCEPTED, "outcomeTimestamp": "yesterday"}, "outcomeTimestamp"),
    ({**ACCEPTED, "acceptedSuggestions": [{"uuid": "x"}]}, "acceptedSuggestions"),
])
def test_invalid_feedback_is_400_and_nothing_is_stored(app, item, needle):
    resp = post(app.test_client(), {"feedback": [ACCEPTED, item]})
    assert needle in assert_outcome(resp, 400)
    assert app.extensions["ptsd_cds"].store.feedback() == []  # all or nothing


@pytest.mark.parametrize("body", [{"feedback": []}, {"items": [ACCEPTED]}, [ACCEPTED]])
def test_feedback_envelope_is_checked(client, body):
    assert_outcome(post(client, body), 400)


def test_feedback_for_an_unknown_service_is_404(client):
    assert_outcome(post(client, {"feedback": [ACCEPTED]}, "/cds-services/nope/feedback"), 404)
