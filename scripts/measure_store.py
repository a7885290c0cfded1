"""Measure what the store adds to a hook call (figures quoted in docs/SCALING.md).

    .venv/bin/python scripts/measure_store.py [--calls N]

Starts a throw-away PostgreSQL server (tests/pg_server.py), then for each engine times, in
process: record_issued_cards (one INSERT of N rows), remember_jti (the replay claim), and a
whole order-select hook call with and without the issued-card record. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cds_service import create_app  # noqa: E402
from cds_service.store import IssuedCard  # noqa: E402
from tests.builders import full_prefetch, hook_request, lorazepam, ptsd_condition  # noqa: E402
from tests.pg_server import PgServer  # noqa: E402


def stats(samples):
    samples = sorted(samples)
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)]


def timed(fn, n):
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return stats(samples)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    n = parser.parse_args().calls
    tmp = Path(tempfile.mkdtemp())
    server = PgServer().init()
    try:
        engines = {"sqlite": str(tmp / "m.sqlite3"), "postgresql": server.create_database("measure")}
        body = json.dumps(hook_request("order-select", prefetch=full_prefetch(conditions=[ptsd_condition()]),
                                       drafts=[lorazepam()]))
        for engine, database in engines.items():
            app = create_app({"auth": "off", "database": database, "today": "2026-11-28", "log_level": "ERROR",
                              "patient_key_secret": "m" * 32, "replay_fallback": str(tmp / "fb.sqlite3")})
            store = app.extensions["ptsd_cds"].store
            client = app.test_client()

            def hook():
                resp = client.post("/cds-services/ptsd-order-select", data=body, content_type="application/json")
                assert resp.status_code == 200

            def record3():
                now = time.time()
                store.record_issued_cards([IssuedCard(str(uuid.uuid4()), "benzodiazepine-avoid", "ptsd-order-select",
                                                      "order-select", "ab" * 32, now) for _ in range(3)])

            def claim():
                store.remember_jti("https://ehr.example", str(uuid.uuid4()), time.time() + 300)

            original = store.record_issued_cards
            in_route: list[float] = []

            def recording(cards):  # times the record inside the request, as the route makes it
                t = time.perf_counter()
                original(cards)
                in_route.append((time.perf_counter() - t) * 1000)

            store.record_issued_cards = recording
            timed(hook, 20)  # warm-up
            in_route.clear()
            whole = timed(hook, n)
            store.record_issued_cards = original
            added = stats(in_route)
            rec = timed(record3, n)
            jti = timed(claim, n)
            print(f"{engine:10s} median/p95 ms: hook call {whole[0]:.2f}/{whole[1]:.2f}, of which the issued-card "
                  f"record {added[0]:.3f}/{added[1]:.3f}; record_issued_cards(3 rows) alone {rec[0]:.3f}/{rec[1]:.3f}; "
                  f"remember_jti {jti[0]:.3f}/{jti[1]:.3f}")
            store.close()
    finally:
        server.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
