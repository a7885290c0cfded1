"""The embedded engine: one SQLite file (WAL mode) shared by every worker on one host.

A write is acknowledged only after it is committed (``synchronous=FULL``), so feedback that got
a 200 survives a crash or kill -9. The file is created 0600 and a folder the store creates 0700
(issue #11). This engine is the default (``make run``, tests, a single host) and also serves as
the host-local replay cache of the PostgreSQL engine during a database outage.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from cds_service.store import migrations
from cds_service.store.base import (
    DAY, FEEDBACK_COLUMNS, FEEDBACK_COUNTS_SQL, ISSUED_COLUMNS, ISSUED_COUNTS_SQL, IssuedCard,
    MemoryReplayCache, Store, StoreUnavailable, feedback_count_dicts, feedback_query, feedback_rows,
    issued_count_dicts, issued_rows,
)

log = logging.getLogger("ptsd_cds.store")

# Expired replay entries are deleted on the request path in small indexed batches: every
# PURGE_EVERY-th claim deletes at most PURGE_BATCH expired rows (four times the inflow), so the
# table stays bounded without a full scan; ``ptsd-cds purge`` removes everything expired.
PURGE_EVERY = 64
PURGE_BATCH = 256


def prepare_path(path: str) -> None:
    """Create the database's folder 0700 and its file 0600 (tightening a file we own)."""
    if path == ":memory:" or path.startswith("file:"):
        return
    folder = Path(path).resolve().parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask
    elif folder.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the database folder %s is readable by other users (mode %o); 0700 is advised",
                    folder, stat.S_IMODE(folder.stat().st_mode))
    # Never open() and close() an existing database file here: closing any descriptor of a file
    # drops every POSIX lock this process holds on it, including those of open SQLite connections.
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        return  # created here, 0600 (no connection can have it open yet)
    except FileExistsError:  # there already, or another worker created it at the same instant
        pass
    st = os.stat(path)
    if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
        os.chmod(path, 0o600)
    for suffix in ("-wal", "-shm", "-journal"):  # SQLite creates these with the file's mode
        side = Path(path + suffix)
        if side.exists() and stat.S_IMODE(side.stat().st_mode) & 0o077 and side.stat().st_uid == os.geteuid():
            os.chmod(side, 0o600)


MIGRATION_LOCK_WAIT_S = 30.0


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (BEGIN IMMEDIATE takes the write lock at once): committed when the
    block ends, rolled back when it raises (the caller sees the exception)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _set_wal(conn: sqlite3.Connection) -> None:
    """Switch a new database to WAL. SQLite answers "database is locked" at once (without its busy
    handler) when another connection opens the file in the same instant, so this retries for up to
    MIGRATION_LOCK_WAIT_S (at start only)."""
    deadline = time.monotonic() + MIGRATION_LOCK_WAIT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SQLiteStore(Store):
    """Thread-safe access to one SQLite database (one connection per thread)."""

    engine = "sqlite"

    def __init__(self, path: str | Path, *, store_user_comments: bool = False,
                 feedback_retention_days: float = 30.0, busy_timeout: float = 10.0):
        self.path = str(path)
        self.busy_timeout = float(busy_timeout)
        self._memory = MemoryReplayCache()
        self._memory_claims = 0
        self.store_user_comments = store_user_comments
        self.retention = float(feedback_retention_days) * DAY
        self._local = threading.local()
        self._claims = 0
        self._lock = threading.Lock()
        try:
            prepare_path(self.path)
            self.schema_version = self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open the SQLite database {self.path}: {exc}") from None

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open("FULL")
            self._local.conn = conn
        return conn

    def _open(self, synchronous: str) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        return conn

    def _relaxed(self) -> sqlite3.Connection | None:
        """This thread's second connection, kept at ``synchronous=NORMAL``, for the relaxed writes
        (``_relaxed_write``); None for an in-memory or URI database, where a second connection
        would not reach the same database (those switch the one connection per write)."""
        if self.path == ":memory:" or self.path.startswith("file:"):
            return None
        conn = getattr(self._local, "relaxed", None)
        if conn is None:
            conn = self._open("NORMAL")
            self._local.relaxed = conn
        return conn

    def _migrate(self) -> int:
        # Its own connection with a long lock wait: instances starting together on one host take
        # turns here (at start, not on the hook path, where ``busy_timeout`` stays short).
        if self.path == ":memory:" or self.path.startswith("file:"):
            return self._migrate_with(self._connect())  # one connection is the whole database
        conn = sqlite3.connect(self.path, timeout=MIGRATION_LOCK_WAIT_S, isolation_level=None)
        try:
            _set_wal(conn)
            return self._migrate_with(conn)
        finally:
            conn.close()

    def _migrate_with(self, conn: sqlite3.Connection) -> int:
        with _immediate(conn):  # the write lock: one process migrates, the others wait
            migrations.apply(conn, migrations.SQLITE, "SQLite", "?")
        return migrations.latest(migrations.SQLITE)

    def _write(self, sql: str, args: Iterable[Any] = ()) -> int:
        try:
            return self._connect().execute(sql, tuple(args)).rowcount
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite write failed: {type(exc).__name__}") from None

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        try:
            return self._connect().execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite read failed: {type(exc).__name__}") from None

    # --- JWT replay cache ------------------------------------------------------------------
    def remember_jti(self, iss: str, jti: str, expires_at: float) -> bool:
        """Record a token id. True if it was new; False if it was seen before (a replay).

        Atomic across threads and processes: one statement, the primary key decides (an entry
        that has already expired is taken over, as if it had been purged).
        """
        now = time.time()
        try:
            claimed = self._relaxed_write(lambda conn: conn.execute(
                "INSERT INTO jwt_replay (iss, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT (iss, jti)"
                " DO UPDATE SET expires_at = excluded.expires_at WHERE jwt_replay.expires_at < ?",
                (iss, jti, float(expires_at), now)).rowcount) == 1
        except StoreUnavailable as exc:
            with self._lock:
                self._memory_claims += 1
            log.error("replay check in process memory: the SQLite file cannot be written (%s)", exc)
            return self._memory.claim(iss, jti, expires_at)
        with self._lock:
            self._claims += 1
            purge_now = self._claims % PURGE_EVERY == 0
        if purge_now:
            self._write("DELETE FROM jwt_replay WHERE rowid IN (SELECT rowid FROM jwt_replay"
                        " WHERE expires_at < ? LIMIT ?)", (now, PURGE_BATCH))
        return claimed

    def replay_entries(self, now: float) -> list[tuple[str, str, float]]:
        """Unexpired replay entries (copied to the shared store when it comes back)."""
        return self._read("SELECT iss, jti, expires_at FROM jwt_replay WHERE expires_at >= ?", (now,))

    # --- feedback --------------------------------------------------------------------------
    def save_feedback(self, service_id: str, items: Iterable[dict[str, Any]], client_iss: str | None, *,
                      demo: bool = False) -> int:
        """Store feedback items in one transaction; repeats of an identical item are kept once.

        Returns the number of items newly stored; raises StoreUnavailable (nothing stored).
        """
        rows = feedback_rows(service_id, items, client_iss, demo, time.time(), self.store_user_comments)
        sql = (f"INSERT OR IGNORE INTO feedback ({', '.join(FEEDBACK_COLUMNS)})"
               f" VALUES ({', '.join('?' * len(FEEDBACK_COLUMNS))})")
        try:
            conn = self._connect()
            with _immediate(conn):
                stored = sum(conn.execute(sql, row).rowcount for row in rows)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite write failed: {type(exc).__name__}") from None
        return stored

    def feedback(self, service_id: str | None = None, card_uuid: str | None = None) -> list[dict[str, Any]]:
        """Stored feedback items (oldest first), optionally for one service or card."""
        sql, args = feedback_query(service_id, card_uuid, "?")
        rows = self._read(sql, args)
        return [{"service": s, "item": json.loads(j), "client": c, "demo": bool(d), "received_at": r}
                for s, j, c, d, r in rows]

    def feedback_counts(self, *, include_demo: bool = False) -> list[dict[str, Any]]:
        where = "" if include_demo else " WHERE f.demo = 0 AND COALESCE(c.demo, 0) = 0"
        return feedback_count_dicts(self._read(FEEDBACK_COUNTS_SQL.format(where=where)))

    # --- issued cards ----------------------------------------------------------------------
    def record_issued_cards(self, cards: list[IssuedCard]) -> None:
        if not cards:
            return
        sql = (f"INSERT OR IGNORE INTO issued_cards ({', '.join(ISSUED_COLUMNS)})"
               f" VALUES ({', '.join('?' * len(ISSUED_COLUMNS))})")
        self._relaxed_write(lambda conn: conn.executemany(sql, issued_rows(cards)))

    def _relaxed_write(self, write):
        """A write on the hook path that need not survive a power cut: no fsync at its commit.

        ``synchronous=NORMAL`` in WAL mode keeps the database consistent and durable across a
        process crash or kill -9 (the WAL is in the OS cache); only an OS crash or power cut may
        lose the last transactions. These writes go through a second connection per thread that
        stays at ``NORMAL`` (two statements fewer per write than switching the one connection
        there and back). Used for the issued-card record and snoozes (best-effort; a
        lost snooze shows a card again, the safe direction) and for replay claims (a host that
        lost power is back after the few minutes a token lives; SECURITY.md). Feedback stays
        ``FULL``: an acknowledgement means it is on disk. Measured on this machine: an fsync per
        commit cost 4-9 ms per hook call, without it ~0.1 ms (docs/SCALING.md).
        Raises StoreUnavailable; returns what ``write(conn)`` returns.
        """
        try:
            conn = self._relaxed()
            if conn is not None:  # its own connection: BEGIN, the write, COMMIT (no PRAGMA per write)
                with _immediate(conn):  # all rows in one transaction
                    return write(conn)
            conn = self._connect()
            conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with _immediate(conn):
                    result = write(conn)
            finally:
                conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite write failed: {type(exc).__name__}") from None
        return result

    def issued_card(self, uuid: str) -> IssuedCard | None:
        rows = self._read("SELECT uuid, topic, service_id, hook, patient_key, issued_at, demo FROM issued_cards"
                          " WHERE uuid = ?", (uuid,))
        if not rows:
            return None
        u, t, s, h, p, at, d = rows[0]
        return IssuedCard(uuid=u, topic=t, service_id=s, hook=h, patient_key=p, issued_at=at, demo=bool(d))

    def issued_counts(self, *, include_demo: bool = False) -> list[dict[str, Any]]:
        where = "" if include_demo else " WHERE demo = 0"
        return issued_count_dicts(self._read(ISSUED_COUNTS_SQL.format(where=where)))

    # --- snoozes ---------------------------------------------------------------------------
    def add_snooze(self, patient_key: str, topic: str, until: float) -> None:
        self._relaxed_write(lambda conn: conn.execute(
            "INSERT INTO snoozes (patient_key, topic, until) VALUES (?, ?, ?) ON CONFLICT"
            " (patient_key, topic) DO UPDATE SET until = MAX(snoozes.until, excluded.until)",
            (patient_key, topic, float(until))))

    def snoozed_topics(self, patient_key: str, now: float) -> set[str]:
        return {t for (t,) in self._read("SELECT topic FROM snoozes WHERE patient_key = ? AND until > ?",
                                         (patient_key, now))}

    # --- housekeeping ----------------------------------------------------------------------
    def purge(self, now: float) -> dict[str, int]:
        """Delete expired replay entries, feedback and issued cards past retention, expired snoozes."""
        horizon = now - self.retention
        try:
            conn = self._connect()
            with _immediate(conn):
                counts = {
                    "replay": conn.execute("DELETE FROM jwt_replay WHERE expires_at < ?", (now,)).rowcount,
                    "feedback": conn.execute("DELETE FROM feedback WHERE received_at < ?", (horizon,)).rowcount,
                    "issued_cards": conn.execute("DELETE FROM issued_cards WHERE issued_at < ?",
                                                 (horizon,)).rowcount,
                    "snoozes": conn.execute("DELETE FROM snoozes WHERE until < ?", (now,)).rowcount,
                }
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite purge failed: {type(exc).__name__}") from None
        return counts

    def local_secret(self, name: str, size: int = 32) -> bytes:
        """A random secret generated once and kept in this (0600) file, e.g. the patient-key secret."""
        self._write("INSERT OR IGNORE INTO local_secrets (name, value) VALUES (?, ?)", (name, os.urandom(size)))
        return bytes(self._read("SELECT value FROM local_secrets WHERE name = ?", (name,))[0][0])

    def ping(self) -> None:
        self._read("SELECT 1")

    def health(self) -> dict[str, Any]:
        try:
            self.ping()
            available = True
        except StoreUnavailable:
            available = False
        return {"engine": self.engine, "available": available, "schema_version": self.schema_version,
                **self.stats()}

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"replay_memory": self._memory_claims}  # replay checks answered from process memory

    def close(self) -> None:
        for name in ("conn", "relaxed"):
            conn = getattr(self._local, name, None)
            if conn is not None:
                conn.close()
                setattr(self._local, name, None)
