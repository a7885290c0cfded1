"""The store contract shared by both engines (SQLite, PostgreSQL): data types and helpers.

Everything the service keeps goes through a ``Store``: the JWT replay cache, card feedback,
the issued-card record (card uuid -> kind, service, hook, keyed patient hash, time, demo flag)
and snoozes. Times are POSIX seconds (float, UTC); weeks are ISO weeks ("2026-W48") computed
once when a row is written, so that both engines group by the same text column.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

DAY = 86400.0


class StoreUnavailable(Exception):
    """The database cannot be reached or used right now (feedback answers 503)."""


@dataclass(frozen=True)
class IssuedCard:
    """One card the service returned: what the feedback dashboard joins feedback to."""

    uuid: str
    topic: str
    service_id: str
    hook: str
    patient_key: str | None
    issued_at: float
    demo: bool = False


def iso_week(ts: float) -> str:
    """ISO 8601 week of a POSIX time, in UTC: ``2026-W48``."""
    year, week, _ = datetime.fromtimestamp(ts, timezone.utc).isocalendar()
    return f"{year}-W{week:02d}"


def prepare_feedback_item(item: dict[str, Any], *, store_user_comments: bool) -> dict[str, Any]:
    """The item as stored: ``overrideReason.userComment`` dropped unless comments are kept.

    A free-text comment may name the patient, so it is kept only when the operator opts in
    (``PTSD_CDS_STORE_USER_COMMENTS=on``, issue #11). An overrideReason left empty is removed.
    """
    item = dict(item)
    reason = item.get("overrideReason")
    if isinstance(reason, dict) and not store_user_comments and "userComment" in reason:
        reason = {k: v for k, v in reason.items() if k != "userComment"}
        if reason:
            item["overrideReason"] = reason
        else:
            del item["overrideReason"]
    return item


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def feedback_key(service_id: str, item_json: str) -> str:
    """Bounded uniqueness key of a stored item: sha256 of service id and canonical item (hex).

    Idempotency needs only equality of the whole item; indexing a 64-character digest instead
    of the item itself keeps the index small (issue #11: 30 clients wrote 1.46 GB).
    """
    return hashlib.sha256(f"{service_id}\n{item_json}".encode("utf-8", "surrogatepass")).hexdigest()


def feedback_rows(service_id: str, items: Iterable[dict[str, Any]], client_iss: str | None, demo: bool,
                  now: float, store_user_comments: bool) -> list[tuple]:
    """Rows for the feedback table, in column order of ``FEEDBACK_COLUMNS``."""
    week = iso_week(now)
    rows = []
    for raw in items:
        item = prepare_feedback_item(raw, store_user_comments=store_user_comments)
        text = canonical_json(item)
        reason = (item.get("overrideReason") or {}).get("reason") or {}
        rows.append((
            feedback_key(service_id, text), service_id, item["card"], item["outcome"],
            item["outcomeTimestamp"], reason.get("code"), text, client_iss, bool(demo), now, week,
        ))
    return rows


FEEDBACK_COLUMNS = ("item_hash", "service_id", "card_uuid", "outcome", "outcome_timestamp", "reason_code",
                    "item_json", "client_iss", "demo", "received_at", "received_week")


def feedback_query(service_id: str | None, card_uuid: str | None, placeholder: str) -> tuple[str, list[str]]:
    """The stored-feedback read of both engines (``placeholder``: "?" for SQLite, "%s" for psycopg)."""
    sql = "SELECT service_id, item_json, client_iss, demo, received_at FROM feedback"
    where, args = [], []
    if service_id:
        where.append(f"service_id = {placeholder}")
        args.append(service_id)
    if card_uuid:
        where.append(f"card_uuid = {placeholder}")
        args.append(card_uuid)
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + " ORDER BY id", args


def issued_rows(cards: Iterable[IssuedCard]) -> list[tuple]:
    return [(c.uuid, c.topic, c.service_id, c.hook, c.patient_key, float(c.issued_at), iso_week(c.issued_at),
             bool(c.demo)) for c in cards]


ISSUED_COLUMNS = ("uuid", "topic", "service_id", "hook", "patient_key", "issued_at", "issued_week", "demo")


class MemoryReplayCache:
    """The last resort of the replay check: this process's memory, when no database can be written.

    Used only when the SQLite file itself fails (disk full, a lock held past its timeout), or, with
    PostgreSQL, when the database and the host-local file both fail. Refusing every authenticated
    hook call then would hide every warning; accepting every token would drop replay protection.
    This keeps it per process (a replay to another worker is possible meanwhile), bounded in size
    (the oldest entries go first), and counted. Hand-written: a dict with expiry is all it is.
    """

    def __init__(self, max_entries: int = 100_000):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, iss: str, jti: str, expires_at: float) -> bool:
        now = time.time()
        with self._lock:
            seen = self._entries.get((iss, jti))
            if seen is not None and seen >= now:
                return False
            self._entries[(iss, jti)] = float(expires_at)
            if len(self._entries) > self.max_entries:
                for key in [k for k, exp in self._entries.items() if exp < now]:
                    del self._entries[key]
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            return True


class Store:
    """The storage interface (both engines implement every method).

    ``Store(path)`` called on this base class opens the embedded SQLite engine (kept for the
    callers and tests written before the PostgreSQL engine); new code uses ``open_store(settings)``.
    """

    engine = "abstract"

    def __new__(cls, *args: Any, **kwargs: Any):
        if cls is Store:
            from cds_service.store.sqlite import SQLiteStore

            return super().__new__(SQLiteStore)
        return super().__new__(cls)

    # replay cache
    def remember_jti(self, iss: str, jti: str, expires_at: float) -> bool:
        raise NotImplementedError

    # feedback
    def save_feedback(self, service_id: str, items: Iterable[dict[str, Any]], client_iss: str | None, *,
                      demo: bool = False) -> int:
        raise NotImplementedError

    def feedback(self, service_id: str | None = None, card_uuid: str | None = None) -> list[dict[str, Any]]:
        raise NotImplementedError

    def feedback_counts(self, *, include_demo: bool = False) -> list[dict[str, Any]]:
        raise NotImplementedError

    # issued cards
    def record_issued_cards(self, cards: list[IssuedCard]) -> None:
        raise NotImplementedError

    def issued_card(self, uuid: str) -> IssuedCard | None:
        raise NotImplementedError

    def issued_counts(self, *, include_demo: bool = False) -> list[dict[str, Any]]:
        raise NotImplementedError

    # snoozes
    def add_snooze(self, patient_key: str, topic: str, until: float) -> None:
        raise NotImplementedError

    def snoozed_topics(self, patient_key: str, now: float) -> set[str]:
        raise NotImplementedError

    # housekeeping
    def purge(self, now: float) -> dict[str, int]:
        raise NotImplementedError

    def ping(self) -> None:
        raise NotImplementedError

    def health(self) -> dict[str, Any]:
        raise NotImplementedError

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        raise NotImplementedError


FEEDBACK_COUNTS_SQL = (
    "SELECT c.topic, f.service_id, f.received_week, f.outcome, f.reason_code, COUNT(*)"
    " FROM feedback f LEFT JOIN issued_cards c ON c.uuid = f.card_uuid{where}"
    " GROUP BY c.topic, f.service_id, f.received_week, f.outcome, f.reason_code"
    " ORDER BY f.received_week, f.service_id, c.topic, f.outcome, f.reason_code"
)
ISSUED_COUNTS_SQL = (
    "SELECT topic, service_id, issued_week, COUNT(*) FROM issued_cards{where}"
    " GROUP BY topic, service_id, issued_week ORDER BY issued_week, service_id, topic"
)


def feedback_count_dicts(rows: Iterable[tuple]) -> list[dict[str, Any]]:
    return [{"topic": t, "service": s, "week": w, "outcome": o, "reason": r, "count": int(n)}
            for t, s, w, o, r, n in rows]


def issued_count_dicts(rows: Iterable[tuple]) -> list[dict[str, Any]]:
    return [{"topic": t, "service": s, "week": w, "count": int(n)} for t, s, w, n in rows]
