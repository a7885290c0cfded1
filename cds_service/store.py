"""Durable state in one SQLite database: card feedback and the JWT replay cache.

SQLite in WAL mode is shared safely by every gunicorn worker on one host: a write is
acknowledged only after it is committed, so feedback that got a 200 survives a restart.
(A multi-host deployment needs a shared store instead; see SECURITY.md.)
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    service_id TEXT NOT NULL,
    card_uuid TEXT NOT NULL,
    outcome TEXT NOT NULL,
    outcome_timestamp TEXT NOT NULL,
    item_json TEXT NOT NULL,
    client_iss TEXT,
    received_at REAL NOT NULL,
    UNIQUE (service_id, card_uuid, outcome, outcome_timestamp, item_json)
);
CREATE INDEX IF NOT EXISTS feedback_card ON feedback (card_uuid);
CREATE TABLE IF NOT EXISTS jwt_replay (
    iss TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (iss, jti)
);
CREATE INDEX IF NOT EXISTS jwt_replay_expiry ON jwt_replay (expires_at);
"""


class StoreUnavailable(Exception):
    """The database cannot be reached or used right now (the caller answers 503, retry later)."""


class Store:
    """Thread-safe access to the service database (one connection per thread)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as conn:
            conn.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=10000")
            self._local.conn = conn
        return conn

    # --- feedback --------------------------------------------------------------------------
    def save_feedback(self, service_id: str, items: Iterable[dict[str, Any]], client_iss: str | None) -> int:
        """Store feedback items in one transaction; repeats of an identical item are kept once.

        Returns the number of items newly stored. Raises StoreUnavailable when the database
        cannot be opened or written (nothing was stored; the caller answers 503).
        """
        try:
            return self._save_feedback(service_id, items, client_iss)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite: {type(exc).__name__}") from None

    def _save_feedback(self, service_id: str, items: Iterable[dict[str, Any]], client_iss: str | None) -> int:
        conn = self._connect()
        now = time.time()
        stored = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for item in items:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO feedback (service_id, card_uuid, outcome, outcome_timestamp,"
                    " item_json, client_iss, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        service_id,
                        item["card"],
                        item["outcome"],
                        item["outcomeTimestamp"],
                        json.dumps(item, sort_keys=True, separators=(",", ":")),
                        client_iss,
                        now,
                    ),
                )
                stored += cur.rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return stored

    def feedback(self, service_id: str | None = None, card_uuid: str | None = None) -> list[dict[str, Any]]:
        """Stored feedback items (newest last), optionally for one service or card."""
        sql = "SELECT service_id, item_json, client_iss FROM feedback"
        where, args = [], []
        if service_id:
            where.append("service_id = ?")
            args.append(service_id)
        if card_uuid:
            where.append("card_uuid = ?")
            args.append(card_uuid)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._connect().execute(sql + " ORDER BY id", args).fetchall()
        return [{"service": s, "item": json.loads(j), "client": c} for s, j, c in rows]

    # --- JWT replay cache ------------------------------------------------------------------
    def remember_jti(self, iss: str, jti: str, expires_at: float) -> bool:
        """Record a token id. True if it was new; False if it was seen before (a replay).

        Atomic across threads and processes: the primary key decides, not a read-then-write.
        """
        conn = self._connect()
        now = time.time()
        conn.execute("DELETE FROM jwt_replay WHERE expires_at < ?", (now,))
        cur = conn.execute(
            "INSERT OR IGNORE INTO jwt_replay (iss, jti, expires_at) VALUES (?, ?, ?)",
            (iss, jti, expires_at),
        )
        return cur.rowcount == 1

    # --- readiness -------------------------------------------------------------------------
    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers a query now."""
        try:
            self._connect().execute("SELECT 1 FROM feedback LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite: {type(exc).__name__}") from None

    def health(self) -> dict[str, Any]:
        """What /readyz shows about the store (no secrets, no patient data)."""
        try:
            self.ping()
        except StoreUnavailable as exc:
            return {"engine": "sqlite", "available": False, "error": str(exc)}
        return {"engine": "sqlite", "available": True}

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
