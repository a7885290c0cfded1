"""Fixed cost per call (issue #7 item 4): what the cheaper paths must keep.

The relaxed hook-path writes (replay claims, issued cards, snoozes) go through a second SQLite
connection per thread kept at ``synchronous=NORMAL``; feedback keeps ``FULL`` on its own.
"""

from __future__ import annotations

import threading

from cds_service.store.base import IssuedCard
from cds_service.store.sqlite import SQLiteStore

NORMAL, FULL = 1, 2  # PRAGMA synchronous values


def _sync(conn) -> int:
    return conn.execute("PRAGMA synchronous").fetchone()[0]


def test_relaxed_writes_use_their_own_normal_connection_and_feedback_stays_full(tmp_path):
    store = SQLiteStore(tmp_path / "s.sqlite3")
    assert store.remember_jti("iss", "j1", 4e9) is True
    store.record_issued_cards([IssuedCard(uuid="u1", topic="t", service_id="s", hook="patient-view",
                                          patient_key="k", issued_at=1.0)])
    store.add_snooze("k", "t", 4e9)
    assert _sync(store._local.relaxed) == NORMAL
    assert _sync(store._connect()) == FULL  # never switched: no PRAGMA per write any more
    assert store.save_feedback("s", [{"card": "u1", "outcome": "accepted",
                                      "outcomeTimestamp": "2026-01-01T00:00:00Z"}], None) == 1
    assert _sync(store._connect()) == FULL
    # what one connection wrote the other reads at once, and a replay is refused
    assert store.issued_card("u1").topic == "t"
    assert store.snoozed_topics("k", 0.0) == {"t"}
    assert store.remember_jti("iss", "j1", 4e9) is False


def test_a_replay_is_refused_across_stores_and_threads(tmp_path):
    path = tmp_path / "s.sqlite3"
    first, second = SQLiteStore(path), SQLiteStore(path)  # two workers on one host
    assert first.remember_jti("iss", "j", 4e9) is True
    results = []
    thread = threading.Thread(target=lambda: results.append(second.remember_jti("iss", "j", 4e9)))
    thread.start()
    thread.join()
    assert results == [False]
    first.close()
    assert getattr(first._local, "conn", None) is None and first._local.relaxed is None
    assert second.remember_jti("iss", "j2", 4e9) is True


def test_an_in_memory_store_keeps_one_connection(tmp_path):
    store = SQLiteStore(":memory:")
    assert store.remember_jti("iss", "j", 4e9) is True
    assert store.remember_jti("iss", "j", 4e9) is False
    assert getattr(store._local, "relaxed", None) is None
    assert _sync(store._connect()) == FULL  # switched back after the write
