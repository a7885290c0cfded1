"""The store interface (cds_service/store), run against both engines: SQLite and a real PostgreSQL."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time

import pytest

from cds_service.config import Settings
from cds_service.store import IssuedCard, SQLiteStore, Store, StoreUnavailable, iso_week, open_store

DAY = 86400.0
REASON = {"code": "procedure-short-term", "system": "http://ptsd-cds.org/fhir/CodeSystem/override-reason"}


def overridden(card: str, comment: str | None = "sedation for MRI", ts: str = "2026-11-28T12:00:00Z") -> dict:
    reason = {"reason": REASON} | ({"userComment": comment} if comment else {})
    return {"card": card, "outcome": "overridden", "overrideReason": reason, "outcomeTimestamp": ts}


def accepted(card: str) -> dict:
    return {"card": card, "outcome": "accepted", "acceptedSuggestions": [{"id": "s-1"}],
            "outcomeTimestamp": "2026-11-28T12:00:00Z"}


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request):
    return request.param


@pytest.fixture
def make_store(engine, tmp_path, request):
    """Open stores on one database (two calls = two instances sharing it)."""
    opened: list[Store] = []
    database = str(tmp_path / "store.sqlite3") if engine == "sqlite" else request.getfixturevalue("pg_url")

    def _make(**overrides):
        config = {"auth": "off", "database": database, "replay_fallback": str(tmp_path / "fallback.sqlite3"),
                  "patient_key_secret": "k" * 32, **overrides}
        store = open_store(Settings().with_overrides(config))
        opened.append(store)
        return store

    yield _make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store):
    return make_store()


def test_open_store_picks_the_engine_from_the_setting(store, engine, tmp_path):
    assert store.engine == engine
    assert store.health()["available"] is True
    assert not (tmp_path / "postgresql:").exists() and not os.path.exists("postgresql:")


# --- replay cache -------------------------------------------------------------------------------
def test_a_jti_is_claimed_once_per_issuer(store):
    exp = time.time() + 300
    assert store.remember_jti("https://ehr.example", "t-1", exp) is True
    assert store.remember_jti("https://ehr.example", "t-1", exp) is False
    assert store.remember_jti("https://other.example", "t-1", exp) is True


def test_an_expired_entry_does_not_block_its_id(store):
    assert store.remember_jti("iss", "old", time.time() - 1) is True
    assert store.remember_jti("iss", "old", time.time() + 300) is True
    assert store.remember_jti("iss", "old", time.time() + 300) is False


def test_one_winner_when_two_instances_claim_at_the_same_instant(make_store):
    instances = [make_store(), make_store()]
    start = threading.Barrier(8)
    results: list[bool] = []

    def claim(i):
        start.wait()
        results.append(instances[i % 2].remember_jti("iss", "raced", time.time() + 300))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == [False] * 7 + [True]


def test_expired_replay_entries_are_removed_in_bounded_batches_on_the_request_path(store):
    from cds_service.store.sqlite import PURGE_EVERY

    for i in range(100):
        store.remember_jti("iss", f"gone-{i}", time.time() - 10)
    for i in range(PURGE_EVERY):
        store.remember_jti("iss", f"live-{i}", time.time() + 300)
    assert store.purge(time.time())["replay"] == 0  # already gone, without a purge run


# --- feedback -----------------------------------------------------------------------------------
def test_feedback_is_stored_once_and_counts_what_is_new(store):
    assert store.save_feedback("ptsd-order-sign", [accepted("c-1"), overridden("c-2")], "https://ehr") == 2
    assert store.save_feedback("ptsd-order-sign", [accepted("c-1"), overridden("c-3")], "https://ehr") == 1
    assert store.save_feedback("ptsd-order-sign", [accepted("c-4"), accepted("c-4")], None) == 1
    assert [f["item"]["card"] for f in store.feedback()] == ["c-1", "c-2", "c-3", "c-4"]
    assert store.feedback(card_uuid="c-2")[0]["client"] == "https://ehr"
    # the same item for another service is another item
    assert store.save_feedback("ptsd-patient-view", [accepted("c-1")], None) == 1


def test_user_comments_are_dropped_unless_switched_on(make_store):
    off = make_store()
    off.save_feedback("ptsd-order-sign", [overridden("c-1", "patient John Doe, MRN 123")], None)
    assert off.feedback()[0]["item"]["overrideReason"] == {"reason": REASON}
    # the comment was the only difference: the second item is the same stored item
    assert off.save_feedback("ptsd-order-sign", [overridden("c-1", "another comment")], None) == 0
    # a reason that only had a comment leaves no empty overrideReason behind
    only_comment = {**overridden("c-9"), "overrideReason": {"userComment": "text"}}
    off.save_feedback("ptsd-order-sign", [only_comment], None)
    assert "overrideReason" not in off.feedback(card_uuid="c-9")[0]["item"]
    on = make_store(store_user_comments="on")
    on.save_feedback("ptsd-order-sign", [overridden("c-2", "kept")], None)
    assert on.feedback(card_uuid="c-2")[0]["item"]["overrideReason"]["userComment"] == "kept"


def test_the_uniqueness_key_is_a_bounded_hash_not_the_item(store, engine, make_store):
    big = overridden("c-big", None) | {"extension": [{"url": "x", "valueString": "y" * 100_000}]}
    store.save_feedback("ptsd-order-sign", [big], None)
    if engine == "sqlite":
        conn = sqlite3.connect(store.path)
        hashes = [h for (h,) in conn.execute("SELECT item_hash FROM feedback")]
        indexed = [r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")]
        autoindex = [r[2] for r in conn.execute("PRAGMA index_list(feedback)")]
        cols = {c for idx in conn.execute("PRAGMA index_list(feedback)").fetchall()
                for c in [r[2] for r in conn.execute(f"PRAGMA index_info('{idx[1]}')")]}
        assert autoindex and "item_json" not in cols and "item_json" not in " ".join(indexed)
    else:
        import psycopg

        with psycopg.connect(store.url) as conn:
            hashes = [h for (h,) in conn.execute("SELECT item_hash FROM feedback")]
            defs = " ".join(d for (d,) in conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename='feedback'"))
        assert "item_hash" in defs and "item_json" not in defs
    assert len(hashes) == 1 and len(hashes[0]) == 64 and int(hashes[0], 16) >= 0


def test_feedback_counts_join_the_issued_card_and_group_by_week(store):
    now = time.time()
    store.record_issued_cards([
        IssuedCard("u-benzo", "benzodiazepine-avoid", "ptsd-order-sign", "order-sign", "pk1", now),
        IssuedCard("u-step", "step-2-ssri", "ptsd-patient-view", "patient-view", "pk1", now),
        IssuedCard("u-demo", "benzodiazepine-avoid", "ptsd-order-sign", "order-sign", None, now, demo=True),
    ])
    store.save_feedback("ptsd-order-sign", [overridden("u-benzo"), overridden("u-benzo", ts="2026-11-28T12:05:00Z"),
                                            overridden("u-unknown")], "iss")
    store.save_feedback("ptsd-patient-view", [accepted("u-step")], "iss")
    store.save_feedback("ptsd-order-sign", [accepted("u-demo")], "iss", demo=True)
    week = iso_week(time.time())
    rows = store.feedback_counts()
    assert sorted(rows, key=lambda r: (str(r["topic"]), r["outcome"])) == [
        {"topic": None, "service": "ptsd-order-sign", "week": week, "outcome": "overridden",
         "reason": "procedure-short-term", "count": 1},
        {"topic": "benzodiazepine-avoid", "service": "ptsd-order-sign", "week": week, "outcome": "overridden",
         "reason": "procedure-short-term", "count": 2},
        {"topic": "step-2-ssri", "service": "ptsd-patient-view", "week": week, "outcome": "accepted",
         "reason": None, "count": 1},
    ]
    with_demo = store.feedback_counts(include_demo=True)
    assert sum(r["count"] for r in with_demo) == 5
    assert sorted((r["topic"], r["count"]) for r in store.issued_counts()) == [
        ("benzodiazepine-avoid", 1), ("step-2-ssri", 1)]
    assert sum(r["count"] for r in store.issued_counts(include_demo=True)) == 3
    assert all(r["week"] == week for r in store.issued_counts())


def test_iso_week_is_the_iso_calendar_week_in_utc():
    assert iso_week(1764547200.0) == "2025-W49"  # Monday 2025-12-01 00:00 UTC
    assert iso_week(1767139200.0) == "2026-W01"  # Wednesday 2025-12-31: ISO year 2026


# --- issued cards -------------------------------------------------------------------------------
def test_issued_card_round_trip(store):
    card = IssuedCard("u-1", "mdma-investigational", "ptsd-order-select", "order-select", "ab" * 32, 1764547200.5)
    store.record_issued_cards([card, IssuedCard("u-2", "step-1", "ptsd-patient-view", "patient-view", None, 1.0,
                                                demo=True)])
    store.record_issued_cards([card])  # a repeat is ignored
    assert store.issued_card("u-1") == card
    assert store.issued_card("u-2").demo is True and store.issued_card("u-2").patient_key is None
    assert store.issued_card("nope") is None
    store.record_issued_cards([])


# --- snoozes ------------------------------------------------------------------------------------
def test_snoozes_expire_and_a_later_end_wins(store):
    now = time.time()
    store.add_snooze("pk1", "step-2-ssri", now + 30 * DAY)
    store.add_snooze("pk1", "step-2-ssri", now + 5 * DAY)  # never shortens a snooze
    store.add_snooze("pk1", "benzodiazepine-avoid", now - 1)
    store.add_snooze("pk2", "step-3-nightmares", now + DAY)
    assert store.snoozed_topics("pk1", now) == {"step-2-ssri"}
    assert store.snoozed_topics("pk1", now + 10 * DAY) == {"step-2-ssri"}
    assert store.snoozed_topics("pk1", now + 31 * DAY) == set()
    assert store.snoozed_topics("pk3", now) == set()


# --- retention ----------------------------------------------------------------------------------
def test_purge_removes_what_is_past_retention_only(make_store):
    store = make_store(feedback_retention_days=40, snooze_days=30)
    now = time.time()
    store.remember_jti("iss", "expired", now - 5)
    store.remember_jti("iss", "live", now + 300)
    store.save_feedback("ptsd-order-sign", [accepted("c-1")], None)
    store.record_issued_cards([IssuedCard("c-1", "t", "ptsd-order-sign", "order-sign", None, now)])
    store.add_snooze("pk", "t", now + 10 * DAY)
    store.add_snooze("pk", "old", now - 1)
    assert store.purge(now) | {"replay_fallback": 0} == {"replay": 1, "feedback": 0, "issued_cards": 0,
                                                          "snoozes": 1, "replay_fallback": 0}
    assert store.remember_jti("iss", "live", now + 300) is False
    counts = store.purge(now + 39 * DAY)
    assert counts["feedback"] == 0 and counts["issued_cards"] == 0 and counts["snoozes"] == 1
    counts = store.purge(now + 41 * DAY)
    assert counts["feedback"] == 1 and counts["issued_cards"] == 1 and counts["snoozes"] == 0
    assert store.feedback() == [] and store.issued_card("c-1") is None


# --- schema -------------------------------------------------------------------------------------
def test_instances_starting_together_on_an_empty_database_migrate_once(make_store, engine):
    errors: list[BaseException] = []
    stores: list[Store] = []
    start = threading.Barrier(4)

    def open_one():
        start.wait()
        try:
            stores.append(make_store())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(stores) == 4
    assert all(s.health()["available"] for s in stores)
    versions = _schema_versions(stores[0])
    assert versions == sorted(set(versions)) and len(versions) >= 1
    assert stores[0].health()["schema_version"] == versions[-1]


def _schema_versions(store) -> list[int]:
    if store.engine == "sqlite":
        return [v for (v,) in sqlite3.connect(store.path).execute("SELECT version FROM schema_version ORDER BY 1")]
    import psycopg

    with psycopg.connect(store.url) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY 1")]


def test_health_never_shows_the_database_password(pg_server, tmp_path):
    url = pg_server.create_database("health_pw").replace("ptsd@", "ptsd:s3cret-pw@")
    store = open_store(Settings().with_overrides({"auth": "off", "database": url, "patient_key_secret": "k" * 32,
                                                  "replay_fallback": str(tmp_path / "fb.sqlite3")}))
    try:
        health = store.health()
        assert health["available"] is True and health["engine"] == "postgresql"
        assert "s3cret-pw" not in json.dumps(health) and "***" in health["database"]
    finally:
        store.close()


# --- SQLite specifics ---------------------------------------------------------------------------
def test_sqlite_files_are_private(tmp_path):
    path = tmp_path / "var" / "db.sqlite3"
    store = SQLiteStore(path)
    store.save_feedback("ptsd-order-sign", [accepted("c-1")], None)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for file in path.parent.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    store.close()


def test_an_existing_world_readable_database_file_is_tightened(tmp_path):
    path = tmp_path / "db.sqlite3"
    SQLiteStore(path).close()
    os.chmod(path, 0o644)
    SQLiteStore(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_store_called_with_a_path_is_the_sqlite_engine(tmp_path):
    store = Store(tmp_path / "db.sqlite3")
    assert isinstance(store, SQLiteStore) and store.remember_jti("i", "j", time.time() + 60)


def test_a_database_of_the_single_file_store_is_upgraded_with_its_feedback(tmp_path):
    """Version 1 was the schema of cds_service/store.py; version 2 re-keys feedback by a hash."""
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    from cds_service.store.migrations import SQLITE

    for step in SQLITE[0][2]:
        conn.execute(step)
    item = overridden("c-old", "a comment")
    conn.execute("INSERT INTO feedback (service_id, card_uuid, outcome, outcome_timestamp, item_json, client_iss,"
                 " received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 ("ptsd-order-sign", "c-old", "overridden", item["outcomeTimestamp"], json.dumps(item), "iss",
                  1764547200.0))
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    [row] = store.feedback()
    assert row["item"]["card"] == "c-old" and row["client"] == "iss"
    assert "userComment" not in row["item"]["overrideReason"]  # retroactively dropped
    assert store.save_feedback("ptsd-order-sign", [item], "iss") == 0  # same item, same key
    assert _schema_versions(store) == [1, 2]


def test_sqlite_unwritable_database_is_store_unavailable(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "db.sqlite3").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreUnavailable):
        SQLiteStore(folder / "db.sqlite3")


def test_overlapping_feedback_batches_from_many_writers_neither_deadlock_nor_duplicate(make_store):
    """Two instances write the same 40 items in opposite orders at once: all stored once, no error."""
    items = [accepted(f"c-{i}") for i in range(40)]
    instances = [make_store(), make_store()]
    start = threading.Barrier(6)
    stored, errors = [], []

    def write(n):
        start.wait()
        batch = items if n % 2 else list(reversed(items))
        try:
            stored.append(instances[n % 2].save_feedback("ptsd-order-sign", batch, None))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and sum(stored) == 40
    assert len(instances[0].feedback()) == 40
