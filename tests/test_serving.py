"""The service as `make run` serves it: gunicorn, several workers, one SQLite database.

Starts gunicorn on a free loopback port (bounded: a few requests, then stopped).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.builders import full_prefetch, hook_request, lorazepam, ptsd_condition

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    db = tmp_path_factory.mktemp("serving") / "ptsd-cds.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PTSD_CDS_")}
    env.update({"PTSD_CDS_AUTH": "off", "PTSD_CDS_DATABASE": str(db), "PTSD_CDS_BIND": f"127.0.0.1:{port}",
                "PTSD_CDS_WORKERS": "2", "PTSD_CDS_TODAY": "2026-11-28"})
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:cds_service.gunicorn_conf",
                             "cds_service:create_app()"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("gunicorn did not start: " + proc.stdout.read().decode(errors="replace")[-2000:])
    yield {"base": base, "proc": proc, "db": db}
    proc.terminate()
    proc.wait(15)


def test_gunicorn_serves_discovery_without_a_version_banner(server):
    resp = requests.get(server["base"] + "/cds-services", timeout=5)
    assert resp.status_code == 200 and len(resp.json()["services"]) == 3
    assert resp.headers["Server"] == "ptsd-cds"  # no product version
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_gunicorn_answers_hooks_and_preflights(server):
    body = hook_request("order-select", prefetch=full_prefetch(conditions=[ptsd_condition()]), drafts=[lorazepam()])
    resp = requests.post(server["base"] + "/cds-services/ptsd-order-select", data=json.dumps(body),
                         headers={"Content-Type": "application/json", "Origin": "https://sandbox.cds-hooks.org"},
                         timeout=5)
    assert resp.status_code == 200
    assert [c["source"]["topic"]["code"] for c in resp.json()["cards"]] == ["benzodiazepine-avoid"]
    assert resp.headers["Access-Control-Allow-Origin"] in ("*", "https://sandbox.cds-hooks.org")
    pre = requests.options(server["base"] + "/cds-services/ptsd-order-select/feedback", timeout=5, headers={
        "Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert pre.status_code == 200 and "authorization" in pre.headers["Access-Control-Allow-Headers"].lower()


def test_feedback_from_many_calls_across_workers_is_all_stored(server):
    session = requests.Session()
    for i in range(30):
        item = {"card": f"card-{i}", "outcome": "overridden", "outcomeTimestamp": "2026-11-28T12:00:00Z",
                "overrideReason": {"userComment": "n/a"}}
        resp = session.post(server["base"] + "/cds-services/ptsd-order-sign/feedback",
                            data=json.dumps({"feedback": [item]}),
                            headers={"Content-Type": "application/json"}, timeout=5)
        assert resp.status_code == 200
    from cds_service.store import Store

    cards = {f["item"]["card"] for f in Store(server["db"]).feedback(service_id="ptsd-order-sign")}
    assert {f"card-{i}" for i in range(30)} <= cards


def test_each_worker_tunes_the_garbage_collector_once_the_app_is_loaded():
    """gunicorn calls the conf's ``post_worker_init`` in every worker after loading the app: it freezes
    what start-up allocated and raises gen0's threshold (docs/PERFORMANCE.md, issue #7)."""
    # In a fresh interpreter: importing the conf prepares a metrics directory in the environment.
    probe = ("import gc; before = gc.get_threshold(); import cds_service.gunicorn_conf as conf; "
             "from cds_service import gunicorn_hooks; assert conf.post_worker_init is gunicorn_hooks.post_worker_init; "
             "conf.post_worker_init(None); after = gc.get_threshold(); "
             "print(before[0], after[0], gunicorn_hooks.GC_GEN0_THRESHOLD, after[1:] == before[1:], "
             "gc.get_freeze_count() > 1000); gunicorn_hooks.on_exit(None)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out[0] == "700" and out[1] == out[2] and int(out[1]) > 700
    assert out[3:] == ["True", "True"]  # older generations unchanged; start-up objects frozen
