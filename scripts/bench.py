#!/usr/bin/env python3
"""Latency of ptsd-cds hook calls: in-process (the pipeline alone) and over HTTP (gunicorn, loopback).

Prints p50/p95/p99 per scenario. Scenarios:
  * small      - patient-view, a PTSD patient with a handful of resources (typical sandbox call)
  * order-sign - order-sign with a benzodiazepine draft
  * synthea    - patient-view with a real-shaped Synthea record as prefetch (largest sample; about
                 2 MB of FHIR JSON), from reference/samples/synthea
  * big        - patient-view with 2,000 synthetic resources
Run: make bench  (options: --n 300 --http/--no-http)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.builders import (full_prefetch, hook_request, lorazepam, med_request, ptsd_condition,  # noqa: E402
                            sertraline)

SYNTHEA = ROOT / "reference" / "samples" / "synthea"


def scenarios() -> dict[str, tuple[str, dict]]:
    out = {
        "small": ("ptsd-patient-view", hook_request("patient-view", prefetch=full_prefetch(
            conditions=[ptsd_condition()], medications=[sertraline(status="active", authored="2026-06-01")]))),
        "order-sign": ("ptsd-order-sign", hook_request("order-sign", prefetch=full_prefetch(
            conditions=[ptsd_condition()]), drafts=[lorazepam(), sertraline()])),
    }
    # A long record: 2,000 resources, most of them unrelated to the rules (as in real charts).
    conditions = [ptsd_condition()] + [
        {**ptsd_condition(f"c{i}"), "code": {"text": "Essential hypertension"}} for i in range(699)]
    meds = [med_request(f"m{i}", "312941", "sertraline 50 MG Oral Tablet", status="completed",
                        authored="2015-01-01", dose_mg=50) if i % 20 == 0 else
            {"resourceType": "MedicationRequest", "id": f"m{i}", "status": "completed", "intent": "order",
             "medicationCodeableConcept": {"text": "Lisinopril 10 MG Oral Tablet"},
             "subject": {"reference": "Patient/pat-1"}, "authoredOn": "2015-01-01"} for i in range(700)]
    procs = [{"resourceType": "Procedure", "id": f"p{i}", "status": "completed",
              "code": {"text": "Prolonged exposure therapy session" if i % 20 == 0 else "Dental cleaning"},
              "subject": {"reference": "Patient/pat-1"}, "performedDateTime": "2025-01-01"} for i in range(600)]
    out["2000 resources"] = ("ptsd-patient-view", hook_request("patient-view", prefetch=full_prefetch(
        conditions=conditions, medications=meds, procedures=procs)))
    # Worst case: 700 orders that all need reading closely (every one an SSRI or benzodiazepine).
    heavy = [med_request(f"h{i}", "197901" if i % 50 == 0 else "312941", "x", status="completed",
                         authored="2015-01-01", dose_mg=50) for i in range(700)]
    out["700 drug orders"] = ("ptsd-patient-view", hook_request("patient-view", prefetch=full_prefetch(
        conditions=[ptsd_condition()], medications=heavy)))
    samples = sorted(SYNTHEA.glob("*.json"), key=lambda p: p.stat().st_size) if SYNTHEA.is_dir() else []
    if samples:
        bundle = json.loads(samples[-1].read_text())
        resources = [e["resource"] for e in bundle.get("entry", []) if isinstance(e.get("resource"), dict)]
        by_type = lambda t: [r for r in resources if r.get("resourceType") == t]  # noqa: E731
        body = hook_request("patient-view", prefetch=full_prefetch(
            conditions=by_type("Condition"), medications=by_type("MedicationRequest") + by_type("Medication"),
            procedures=by_type("Procedure")))
        out[f"synthea ({len(resources)} res)"] = ("ptsd-patient-view", body)
    return out


def percentiles(samples: list[float]) -> str:
    samples = sorted(samples)
    q = lambda p: samples[min(len(samples) - 1, int(p * len(samples)))]  # noqa: E731
    return f"p50 {q(0.50):8.2f} ms  p95 {q(0.95):8.2f} ms  p99 {q(0.99):8.2f} ms  mean {statistics.mean(samples):8.2f} ms"


def bench_in_process(n: int) -> None:
    from cds_service import create_app

    app = create_app({"auth": "off", "database": "/tmp/ptsd-cds-bench.sqlite3", "today": "2026-11-28",
                      "log_level": "WARNING"})
    client = app.test_client()
    print("in-process (Flask test client: schema -> patient data -> facts -> rules -> cards)")
    for name, (service, body) in scenarios().items():
        raw = json.dumps(body)
        runs = n if len(raw) < 100_000 else max(20, n // 10)
        for _ in range(5):
            client.post(f"/cds-services/{service}", data=raw, content_type="application/json")
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            resp = client.post(f"/cds-services/{service}", data=raw, content_type="application/json")
            times.append((time.perf_counter() - t) * 1000)
            assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
        print(f"  {name:24s} {len(raw)/1024:9.1f} KiB  n={runs:4d}  {percentiles(times)}  cards={len(resp.get_json()['cards'])}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_http(n: int) -> None:
    import requests

    port = free_port()
    env = {**os.environ, "PTSD_CDS_AUTH": "off", "PTSD_CDS_DATABASE": "/tmp/ptsd-cds-bench.sqlite3",
           "PTSD_CDS_TODAY": "2026-11-28", "PTSD_CDS_LOG_LEVEL": "WARNING", "PTSD_CDS_BIND": f"127.0.0.1:{port}"}
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:cds_service.gunicorn_conf",
                             "cds_service:create_app()"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        session = requests.Session()
        for _ in range(100):
            try:
                if session.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        print("HTTP (gunicorn, 2 workers x 4 threads, loopback, sequential keep-alive)")
        for name, (service, body) in scenarios().items():
            raw = json.dumps(body)
            runs = n if len(raw) < 100_000 else max(20, n // 10)
            headers = {"Content-Type": "application/json"}
            for _ in range(5):
                session.post(f"{base}/cds-services/{service}", data=raw, headers=headers)
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                resp = session.post(f"{base}/cds-services/{service}", data=raw, headers=headers)
                times.append((time.perf_counter() - t) * 1000)
                assert resp.status_code == 200
            print(f"  {name:24s} {len(raw)/1024:9.1f} KiB  n={runs:4d}  {percentiles(times)}")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()
    bench_in_process(args.n)
    if not args.no_http:
        bench_http(args.n)


if __name__ == "__main__":
    main()
