"""The storage layer: ``open_store(settings)`` picks the engine from ``PTSD_CDS_DATABASE``.

* a path (default ``var/ptsd-cds.sqlite3``): the embedded SQLite engine (one host);
* a ``postgresql://`` (or ``postgres://``) URL: the PostgreSQL engine, shared by every instance,
  with the host-local SQLite replay cache (``PTSD_CDS_REPLAY_FALLBACK``) for database outages.

The interface (``Store``) is documented in ``cds_service/store/base.py`` and docs/SCALING.md.
"""

from __future__ import annotations

from cds_service.store.base import IssuedCard, Store, StoreUnavailable, iso_week
from cds_service.store.sqlite import SQLiteStore

__all__ = ["IssuedCard", "Store", "StoreUnavailable", "SQLiteStore", "open_store", "is_postgres_url", "iso_week"]


def is_postgres_url(database: str) -> bool:
    return database.lower().startswith(("postgresql://", "postgres://"))


def open_store(settings) -> Store:
    """The store for these settings (schema created or migrated when missing)."""
    retention = getattr(settings, "feedback_retention_days", 30)
    comments = getattr(settings, "store_user_comments", "off") == "on"
    if is_postgres_url(settings.database):
        from cds_service.store.postgres import PostgresStore

        return PostgresStore(
            settings.database,
            store_user_comments=comments,
            feedback_retention_days=retention,
            pool_min=settings.database_pool_min,
            pool_max=settings.database_pool_max,
            timeout=settings.database_timeout,
            fallback_path=settings.replay_fallback,
        )
    return SQLiteStore(settings.database, store_user_comments=comments, feedback_retention_days=retention)
