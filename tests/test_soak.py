"""The short soak (issue #11): `scripts/soak.py --seconds 8` against `ptsd-cds serve` (nginx in
front of gunicorn) with 50 slow clients alongside. `make soak` runs the 2-minute one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_short_soak_has_no_errors_and_flat_memory():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "soak.py"), "--seconds", "8", "--windows", "2",
                          "--rate", "20", "--slow", "50"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    report = json.loads(out.stdout)
    assert out.returncode == 0, report["first_errors"]
    assert report["valid"] >= 80 and report["bad"] >= 20 and report["feedback"] >= 8, report
    assert report["valid_errors"] == report["bad_unexpected"] == report["feedback_errors"] == 0
    # Slow clients were there and were closed by the proxy's header timeout, not by us.
    assert report["slow_client_connections"]["slow_clients"] == 50
    # Latency does not drift up and worker memory stays flat (generous bounds: shared 2-core CI).
    assert report["p95_drift"] is not None and report["p95_drift"] < 5, report["latency_per_window"]
    assert report["latency_per_window"][-1]["p95_ms"] < 1000
    assert report["rss_growth_mb"] is not None and report["rss_growth_mb"] < 40, report["worker_rss_mb"]
