"""Numbered schema migrations for both engines, recorded in a ``schema_version`` table.

Why not alembic: the schema is five small tables written with plain SQL through two drivers
(sqlite3, psycopg) and no ORM; alembic needs SQLAlchemy as the connection layer, and its
value (autogenerate from models, branching histories) does not apply. A migration here is a
numbered list of statements (or a Python step) applied in one transaction, once, in order;
``schema_version`` holds one row per applied version. Upgrading = deploying a build whose
list is longer: the first instance to start applies the new steps (under a PostgreSQL
advisory lock, or SQLite's write lock), the others find them applied. Migrations only add
(columns, tables, indexes) so that instances of the previous build keep working during a
rolling upgrade; a step that would break the previous build must say so in docs/SCALING.md.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Callable

Step = str | Callable[[Any], None]

log = logging.getLogger("ptsd_cds.store")

SCHEMA_VERSION_DDL = ("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                      " description TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")

# Advisory-lock key for PostgreSQL migrations (any constant 64-bit number; "ptsdcds1").
PG_MIGRATION_LOCK = 0x7074736463647331


def _sqlite_v2_copy_feedback(conn) -> None:
    """Copy feedback kept by the single-file store (before the store package) into the new table."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='feedback_legacy'").fetchone():
        return
    import json

    from cds_service.store.base import canonical_json, feedback_key, iso_week, prepare_feedback_item

    rows = conn.execute("SELECT service_id, item_json, client_iss, received_at FROM feedback_legacy ORDER BY id")
    for service_id, item_json, client_iss, received_at in rows.fetchall():
        item = prepare_feedback_item(json.loads(item_json), store_user_comments=False)
        text = canonical_json(item)
        reason = (item.get("overrideReason") or {}).get("reason") or {}
        conn.execute(
            "INSERT OR IGNORE INTO feedback (item_hash, service_id, card_uuid, outcome, outcome_timestamp,"
            " reason_code, item_json, client_iss, demo, received_at, received_week)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
            (feedback_key(service_id, text), service_id, item["card"], item["outcome"], item["outcomeTimestamp"],
             reason.get("code"), text, client_iss, received_at, iso_week(received_at)))
    conn.execute("DROP TABLE feedback_legacy")


SQLITE: list[tuple[int, str, list[Step]]] = [
    (1, "replay cache and feedback (the single-file store's schema)", [
        """CREATE TABLE IF NOT EXISTS feedback (
            id INTEGER PRIMARY KEY AUTOINCREMENT, service_id TEXT NOT NULL, card_uuid TEXT NOT NULL,
            outcome TEXT NOT NULL, outcome_timestamp TEXT NOT NULL, item_json TEXT NOT NULL, client_iss TEXT,
            received_at REAL NOT NULL,
            UNIQUE (service_id, card_uuid, outcome, outcome_timestamp, item_json))""",
        """CREATE TABLE IF NOT EXISTS jwt_replay (
            iss TEXT NOT NULL, jti TEXT NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (iss, jti))""",
        "CREATE INDEX IF NOT EXISTS jwt_replay_expiry ON jwt_replay (expires_at)",
    ]),
    (2, "feedback keyed by a sha256 of the item; issued cards; snoozes; local secrets", [
        "ALTER TABLE feedback RENAME TO feedback_legacy",
        "DROP INDEX IF EXISTS feedback_card",
        """CREATE TABLE feedback (
            id INTEGER PRIMARY KEY AUTOINCREMENT, item_hash TEXT NOT NULL UNIQUE, service_id TEXT NOT NULL,
            card_uuid TEXT NOT NULL, outcome TEXT NOT NULL, outcome_timestamp TEXT NOT NULL, reason_code TEXT,
            item_json TEXT NOT NULL, client_iss TEXT, demo INTEGER NOT NULL DEFAULT 0,
            received_at REAL NOT NULL, received_week TEXT NOT NULL)""",
        "CREATE INDEX feedback_card ON feedback (card_uuid)",
        "CREATE INDEX feedback_received ON feedback (received_at)",
        _sqlite_v2_copy_feedback,
        """CREATE TABLE issued_cards (
            uuid TEXT PRIMARY KEY, topic TEXT NOT NULL, service_id TEXT NOT NULL, hook TEXT NOT NULL,
            patient_key TEXT, issued_at REAL NOT NULL, issued_week TEXT NOT NULL, demo INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX issued_cards_time ON issued_cards (issued_at)",
        """CREATE TABLE snoozes (
            patient_key TEXT NOT NULL, topic TEXT NOT NULL, until REAL NOT NULL, PRIMARY KEY (patient_key, topic))""",
        "CREATE INDEX snoozes_until ON snoozes (until)",
        "CREATE TABLE local_secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    ]),
]

POSTGRESQL: list[tuple[int, str, list[Step]]] = [
    (1, "replay cache, feedback keyed by a sha256 of the item, issued cards, snoozes", [
        """CREATE TABLE jwt_replay (
            iss TEXT NOT NULL, jti TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (iss, jti))""",
        "CREATE INDEX jwt_replay_expiry ON jwt_replay (expires_at)",
        """CREATE TABLE feedback (
            id BIGSERIAL PRIMARY KEY, item_hash TEXT NOT NULL UNIQUE, service_id TEXT NOT NULL,
            card_uuid TEXT NOT NULL, outcome TEXT NOT NULL, outcome_timestamp TEXT NOT NULL, reason_code TEXT,
            item_json TEXT NOT NULL, client_iss TEXT, demo BOOLEAN NOT NULL DEFAULT FALSE,
            received_at DOUBLE PRECISION NOT NULL, received_week TEXT NOT NULL)""",
        "CREATE INDEX feedback_card ON feedback (card_uuid)",
        "CREATE INDEX feedback_received ON feedback (received_at)",
        """CREATE TABLE issued_cards (
            uuid TEXT PRIMARY KEY, topic TEXT NOT NULL, service_id TEXT NOT NULL, hook TEXT NOT NULL,
            patient_key TEXT, issued_at DOUBLE PRECISION NOT NULL, issued_week TEXT NOT NULL,
            demo BOOLEAN NOT NULL DEFAULT FALSE)""",
        "CREATE INDEX issued_cards_time ON issued_cards (issued_at)",
        """CREATE TABLE snoozes (
            patient_key TEXT NOT NULL, topic TEXT NOT NULL, until DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (patient_key, topic))""",
        "CREATE INDEX snoozes_until ON snoozes (until)",
    ]),
]


def now() -> float:
    return datetime.now(timezone.utc).timestamp()


def latest(migrations: list[tuple[int, str, list[Step]]]) -> int:
    return migrations[-1][0]


def apply(conn: Any, plan: list[tuple[int, str, list[Step]]], engine: str, placeholder: str) -> None:
    """Run every migration of ``plan`` not yet in ``schema_version`` and record it, inside the
    caller's transaction (which holds the engine's migration lock). ``placeholder``: "?" (SQLite)
    or "%s" (psycopg)."""
    conn.execute(SCHEMA_VERSION_DDL)
    done = {v for (v,) in conn.execute("SELECT version FROM schema_version")}
    insert = ("INSERT INTO schema_version (version, description, applied_at) VALUES "
              f"({placeholder}, {placeholder}, {placeholder})")
    for version, description, steps in plan:
        if version in done:
            continue
        for step in steps:
            step(conn) if callable(step) else conn.execute(step)
        conn.execute(insert, (version, description, now()))
        log.info("%s schema migrated to version %d (%s)", engine, version, description)
