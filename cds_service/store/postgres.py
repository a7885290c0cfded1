"""The shared engine: PostgreSQL through psycopg 3 and a psycopg_pool connection pool.

Every instance behind a load balancer uses the same database, so a token's ``jti`` is claimed
once for all of them and feedback lands in one place. The database is not allowed to take the
cards down with it:

* connections come from a pool with a short wait (``PTSD_CDS_DATABASE_TIMEOUT``, default
  0.25 s), a 2 s connect timeout and a 2 s statement timeout;
* the first failure opens a circuit: while the database is unavailable no call waits on it.
  Replay checks go to the host-local SQLite cache (``PTSD_CDS_REPLAY_FALLBACK``, shared by the
  host's workers), feedback raises StoreUnavailable (503), the issued-card record and snoozes
  are skipped (best-effort; counted);
* a background thread probes the database every second; when it answers, the schema is
  migrated if needed, replay entries claimed locally during the outage are copied to the shared
  table (so they cannot be replayed on another host afterwards), and the circuit closes:
  replay checks return to the shared store without a restart.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import psycopg
from psycopg_pool import ConnectionPool

from cds_service.config import redact_url
from cds_service.store import migrations
from cds_service.store.base import (
    DAY, FEEDBACK_COLUMNS, FEEDBACK_COUNTS_SQL, ISSUED_COLUMNS, ISSUED_COUNTS_SQL, IssuedCard, Store,
    StoreUnavailable, feedback_count_dicts, feedback_query, feedback_rows, issued_count_dicts, issued_rows,
)
from cds_service.store.sqlite import PURGE_BATCH, PURGE_EVERY, SQLiteStore

log = logging.getLogger("ptsd_cds.store")

# Errors that mean "the database cannot be used right now" (connection lost or refused, pool
# timeout, server shutting down, statement timeout): they open the circuit.
UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError)
STATEMENT_TIMEOUT_MS = 2000
CONNECT_TIMEOUT_S = 2  # libpq's smallest (a value of 1 is taken as 2)
PROBE_INTERVAL_S = 1.0
FALLBACK_LOG_INTERVAL_S = 10.0


class PostgresStore(Store):
    engine = "postgresql"

    def __init__(self, url: str, *, store_user_comments: bool = False, feedback_retention_days: float = 30.0,
                 pool_min: int = 1, pool_max: int = 5, timeout: float = 0.25,
                 fallback_path: str = "var/replay-fallback.sqlite3", probe_interval: float = PROBE_INTERVAL_S):
        self.url = url
        self.store_user_comments = store_user_comments
        self.retention = float(feedback_retention_days) * DAY
        self.timeout = float(timeout)
        self.probe_interval = probe_interval
        self.schema_version: int | None = None
        self._fallback = SQLiteStore(fallback_path, busy_timeout=1.0)  # on the hook path: never wait long
        self._state = threading.Lock()
        self._down_since: float | None = None
        self._prober: threading.Thread | None = None
        self._closed = threading.Event()
        self._claims = 0
        self._last_fallback_log = 0.0
        self._fallback_since_log = 0
        self._counters = {
            "replay_shared": 0,  # replay checks answered by the shared store
            "replay_fallback": 0,  # replay checks answered by the host-local cache (outage)
            "replay_fallback_replays": 0,  # replays refused by the host-local cache
            "outages": 0,  # times the circuit opened
            "reconnects": 0,  # times the database came back
            "feedback_unavailable": 0,  # feedback calls refused with 503
            "issued_cards_dropped": 0,  # issued-card rows not recorded (best-effort)
            "snooze_unavailable": 0,  # snooze reads or writes that could not reach the database
        }
        self._pool_min, self._pool_max = pool_min, max(pool_max, 1)
        self._pool = self._new_pool()
        try:
            self._pool.wait(timeout=max(self.timeout, CONNECT_TIMEOUT_S + 0.5) if pool_min else self.timeout)
            self._migrate()
        except (psycopg.Error, StoreUnavailable) as exc:
            # Start anyway: hook calls must be served; the prober migrates when the database answers.
            log.error("PostgreSQL store unavailable at start (%s): serving with the host-local replay cache",
                      type(exc).__name__)
            self._trip(exc)

    # --- connections and the circuit ---------------------------------------------------------
    def _new_pool(self) -> ConnectionPool:
        pool = ConnectionPool(
            self.url, min_size=self._pool_min, max_size=self._pool_max, timeout=self.timeout, open=False,
            name="ptsd-cds", check=ConnectionPool.check_connection, reconnect_timeout=30.0,
            max_idle=300.0, num_workers=2, kwargs=self._connect_kwargs())
        pool.open(wait=False)
        return pool

    @staticmethod
    def _connect_kwargs() -> dict[str, Any]:
        return {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S, "application_name": "ptsd-cds",
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 2,
                "tcp_user_timeout": 5000}

    @property
    def available(self) -> bool:
        return self._down_since is None

    @contextmanager
    def _conn(self, what: str) -> Iterator[psycopg.Connection]:
        if self._down_since is not None:
            raise StoreUnavailable(f"PostgreSQL unavailable since {self._down_since:.0f} (reconnecting)")
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.errors.TransactionRollback as exc:  # deadlock or serialization: not an outage
            log.warning("PostgreSQL %s during %s", type(exc).__name__, what)
            raise StoreUnavailable(f"PostgreSQL {type(exc).__name__} during {what}") from None
        except UNAVAILABLE as exc:
            self._trip(exc)
            raise StoreUnavailable(f"PostgreSQL unavailable during {what}: {type(exc).__name__}") from None
        except psycopg.Error as exc:
            log.error("PostgreSQL error during %s: %s", what, type(exc).__name__)
            raise StoreUnavailable(f"PostgreSQL error during {what}: {type(exc).__name__}") from None

    def _trip(self, exc: BaseException) -> None:
        with self._state:
            if self._down_since is not None or self._closed.is_set():
                return
            self._down_since = time.time()
            self._counters["outages"] += 1
            self._prober = threading.Thread(target=self._probe, name="ptsd-cds-store-probe", daemon=True)
            self._prober.start()
        log.error("PostgreSQL store unavailable (%s): replay checks use the host-local cache, feedback "
                  "answers 503, issued-card records are skipped until it answers again", type(exc).__name__)

    def _probe(self) -> None:
        """Until the database answers: probe it directly (not through the pool, whose reconnect
        back-off can reach tens of seconds), then swap in a fresh pool, migrate, sync, close the circuit."""
        while not self._closed.wait(self.probe_interval):
            try:
                with psycopg.connect(self.url, **self._connect_kwargs()) as conn:
                    conn.execute("SELECT 1")
                fresh = self._new_pool()
                try:
                    fresh.wait(timeout=CONNECT_TIMEOUT_S + 0.5)
                except psycopg.Error:
                    fresh.close(timeout=0)
                    raise
                old, self._pool = self._pool, fresh
                threading.Thread(target=old.close, kwargs={"timeout": 1.0}, daemon=True).start()
                self._migrate()
                self._sync_fallback()
            except (psycopg.Error, StoreUnavailable) as exc:
                log.debug("PostgreSQL probe failed: %s", type(exc).__name__)
                continue
            with self._state:
                down = time.time() - (self._down_since or time.time())
                self._down_since = None
                self._counters["reconnects"] += 1
            log.warning("PostgreSQL store available again after %.1f s: replay checks are shared again", down)
            return

    def _migrate(self) -> None:
        """Create or upgrade the schema; an advisory lock makes concurrent starts safe."""
        with self._pool.connection() as conn:
            with conn.transaction():
                conn.execute("SET LOCAL statement_timeout = 0")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (migrations.PG_MIGRATION_LOCK,))
                migrations.apply(conn, migrations.POSTGRESQL, "PostgreSQL", "%s")
        self.schema_version = migrations.latest(migrations.POSTGRESQL)

    def _sync_fallback(self) -> None:
        """Copy replay entries claimed on this host during the outage into the shared table."""
        entries = self._fallback.replay_entries(time.time())
        if not entries:
            return
        with self._pool.connection() as conn:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO jwt_replay (iss, jti, expires_at) VALUES (%s, %s, %s)"
                                " ON CONFLICT (iss, jti) DO NOTHING", entries)
        log.info("copied %d replay entries from the host-local cache to the shared store", len(entries))

    # --- JWT replay cache ------------------------------------------------------------------
    def remember_jti(self, iss: str, jti: str, expires_at: float) -> bool:
        """Claim a token id in the shared table (one winner across instances), else locally."""
        now = time.time()
        try:
            with self._conn("replay check") as conn:
                cur = conn.execute(
                    "INSERT INTO jwt_replay (iss, jti, expires_at) VALUES (%s, %s, %s) ON CONFLICT (iss, jti)"
                    " DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE jwt_replay.expires_at < %s",
                    (iss, jti, float(expires_at), now))
                claimed = cur.rowcount == 1
                with self._state:
                    self._counters["replay_shared"] += 1
                    self._claims += 1
                    purge_now = self._claims % PURGE_EVERY == 0
                if purge_now:
                    conn.execute("DELETE FROM jwt_replay WHERE (iss, jti) IN (SELECT iss, jti FROM jwt_replay"
                                 " WHERE expires_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)", (now, PURGE_BATCH))
                return claimed
        except StoreUnavailable:
            pass
        claimed = self._fallback.remember_jti(iss, jti, expires_at)
        with self._state:
            self._counters["replay_fallback"] += 1
            self._counters["replay_fallback_replays"] += not claimed
            self._fallback_since_log += 1
            due = now - self._last_fallback_log >= FALLBACK_LOG_INTERVAL_S
            if due:
                count, self._fallback_since_log, self._last_fallback_log = self._fallback_since_log, 0, now
        if due:
            log.warning("replay check on the host-local cache (shared store unavailable): %d check(s) since "
                        "the last line; a replay to another host is possible until the store is back", count)
        return claimed

    # --- feedback --------------------------------------------------------------------------
    def save_feedback(self, service_id: str, items: Iterable[dict[str, Any]], client_iss: str | None, *,
                      demo: bool = False) -> int:
        """Store items in one statement (one transaction); True only once committed."""
        rows = feedback_rows(service_id, items, client_iss, demo, time.time(), self.store_user_comments)
        if not rows:
            return 0
        rows.sort(key=lambda row: row[0])  # one key order for every writer: overlapping batches cannot deadlock
        one = "(" + ", ".join(["%s"] * len(FEEDBACK_COLUMNS)) + ")"
        sql = (f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}) VALUES {', '.join([one] * len(rows))}"
               " ON CONFLICT (item_hash) DO NOTHING")
        try:
            with self._conn("feedback") as conn:
                return conn.execute(sql, [v for row in rows for v in row]).rowcount
        except StoreUnavailable:
            with self._state:
                self._counters["feedback_unavailable"] += 1
            raise

    def feedback(self, service_id: str | None = None, card_uuid: str | None = None) -> list[dict[str, Any]]:
        sql, args = feedback_query(service_id, card_uuid, "%s")
        with self._conn("feedback read") as conn:
            rows = conn.execute(sql, args).fetchall()
        return [{"service": s, "item": json.loads(j), "client": c, "demo": bool(d), "received_at": r}
                for s, j, c, d, r in rows]

    def feedback_counts(self, *, include_demo: bool = False) -> list[dict[str, Any]]:
        where = "" if include_demo else " WHERE NOT f.demo AND NOT COALESCE(c.demo, FALSE)"
        with self._conn("feedback counts") as conn:
            return feedback_count_dicts(conn.execute(FEEDBACK_COUNTS_SQL.format(where=where)).fetchall())

    # --- issued cards ----------------------------------------------------------------------
    def record_issued_cards(self, cards: list[IssuedCard]) -> None:
        """One INSERT of N rows; raises StoreUnavailable (callers treat the record as best-effort)."""
        if not cards:
            return
        rows = issued_rows(cards)
        one = "(" + ", ".join(["%s"] * len(ISSUED_COLUMNS)) + ")"
        sql = (f"INSERT INTO issued_cards ({', '.join(ISSUED_COLUMNS)}) VALUES {', '.join([one] * len(rows))}"
               " ON CONFLICT (uuid) DO NOTHING")
        try:
            with self._conn("issued-card record") as conn:
                conn.execute(sql, [v for row in rows for v in row])
        except StoreUnavailable:
            with self._state:
                self._counters["issued_cards_dropped"] += len(cards)
            raise

    def issued_card(self, uuid: str) -> IssuedCard | None:
        with self._conn("issued-card read") as conn:
            row = conn.execute("SELECT uuid, topic, service_id, hook, patient_key, issued_at, demo"
                               " FROM issued_cards WHERE uuid = %s", (uuid,)).fetchone()
        if row is None:
            return None
        u, t, s, h, p, at, d = row
        return IssuedCard(uuid=u, topic=t, service_id=s, hook=h, patient_key=p, issued_at=at, demo=bool(d))

    def issued_counts(self, *, include_demo: bool = False) -> list[dict[str, Any]]:
        where = "" if include_demo else " WHERE NOT demo"
        with self._conn("issued counts") as conn:
            return issued_count_dicts(conn.execute(ISSUED_COUNTS_SQL.format(where=where)).fetchall())

    # --- snoozes ---------------------------------------------------------------------------
    def add_snooze(self, patient_key: str, topic: str, until: float) -> None:
        try:
            with self._conn("snooze write") as conn:
                conn.execute("INSERT INTO snoozes (patient_key, topic, until) VALUES (%s, %s, %s)"
                             " ON CONFLICT (patient_key, topic) DO UPDATE SET until ="
                             " GREATEST(snoozes.until, EXCLUDED.until)", (patient_key, topic, float(until)))
        except StoreUnavailable:
            with self._state:
                self._counters["snooze_unavailable"] += 1
            raise

    def snoozed_topics(self, patient_key: str, now: float) -> set[str]:
        try:
            with self._conn("snooze read") as conn:
                rows = conn.execute("SELECT topic FROM snoozes WHERE patient_key = %s AND until > %s",
                                    (patient_key, now)).fetchall()
        except StoreUnavailable:
            with self._state:
                self._counters["snooze_unavailable"] += 1
            raise
        return {t for (t,) in rows}

    # --- housekeeping ----------------------------------------------------------------------
    def purge(self, now: float) -> dict[str, int]:
        horizon = now - self.retention
        with self._conn("purge") as conn:
            with conn.transaction():
                conn.execute("SET LOCAL statement_timeout = 0")
                counts = {
                    "replay": conn.execute("DELETE FROM jwt_replay WHERE expires_at < %s", (now,)).rowcount,
                    "feedback": conn.execute("DELETE FROM feedback WHERE received_at < %s", (horizon,)).rowcount,
                    "issued_cards": conn.execute("DELETE FROM issued_cards WHERE issued_at < %s",
                                                 (horizon,)).rowcount,
                    "snoozes": conn.execute("DELETE FROM snoozes WHERE until < %s", (now,)).rowcount,
                }
        fallback = self._fallback.purge(now)
        counts["replay_fallback"] = fallback["replay"]
        return counts

    def ping(self) -> None:
        with self._conn("ping") as conn:
            conn.execute("SELECT 1")

    def health(self) -> dict[str, Any]:
        """Engine, availability, pool and counters: no secrets (the URL without its password)."""
        available = self.available
        if available:
            try:
                self.ping()
            except StoreUnavailable:
                available = False
        pool = self._pool.get_stats()
        return {
            "engine": self.engine,
            "available": available,
            "database": redact_url(self.url),
            "schema_version": self.schema_version,
            "unavailable_since": self._down_since,
            "replay_cache": "shared" if available else "host-local",
            "pool": {k: pool.get(k, 0) for k in ("pool_min", "pool_max", "pool_size", "pool_available",
                                                  "requests_waiting")},
            **self.stats(),
        }

    def stats(self) -> dict[str, int]:
        with self._state:
            counters = dict(self._counters)
        return counters | self._fallback.stats()

    def close(self) -> None:
        self._closed.set()
        self._pool.close(timeout=2.0)
        self._fallback.close()
