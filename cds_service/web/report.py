"""``ptsd-cds feedback-report [--csv] [--include-demo]``: the ``/feedback`` figures in a terminal.

Reads the store named by ``PTSD_CDS_DATABASE`` (SQLite path or PostgreSQL URL) and the card
titles from ``PTSD_CDS_CARDS_DIR``; prints text tables, or CSV (``stats.CSV_FIELDS``) with
``--csv``. Errors are one line on stderr (exit 1), never a traceback.
"""

from __future__ import annotations

import os
import sys

from cds_service.card_content import CardContentError, load_cards
from cds_service.config import Settings
from cds_service.store import StoreUnavailable, open_store
from cds_service.web.stats import collect, csv_report, text_report


def run_report(as_csv: bool, include_demo: bool, out=None) -> int:
    out = out or sys.stdout
    # Reading figures needs no client authentication settings (no trusted-issuer file).
    settings = Settings.from_env({**os.environ, "PTSD_CDS_AUTH": "off"})
    try:
        cards = load_cards(settings.cards_dir)
    except CardContentError as exc:
        print(f"ptsd-cds: card content: {exc}", file=sys.stderr)
        return 1
    titles = {t: c.title for t, c in cards.items()}
    reasons = {code: display for c in cards.values() for code, display in c.override_reasons}
    try:
        store = open_store(settings)
        try:
            summary = collect(store, include_demo=include_demo, titles=titles, reason_names=reasons)
        finally:
            store.close()
    except StoreUnavailable as exc:
        print(f"ptsd-cds: the store is unavailable: {exc}", file=sys.stderr)
        return 1
    out.write(csv_report(summary) if as_csv else text_report(summary))
    return 0
