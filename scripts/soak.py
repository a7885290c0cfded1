#!/usr/bin/env python3
"""Soak: a steady mix of every hook, bad requests and feedback against the production set-up
(`ptsd-cds serve`: nginx in front of gunicorn), with slow clients alongside (issue #11).

    python scripts/soak.py                 # 2 minutes, 20 calls/s, 50 slow clients (make soak)
    python scripts/soak.py --seconds 10    # the short variant (tests/test_soak.py)

Reports errors (0 expected for valid requests; bad requests must get their 4xx), latency per
window (drift = last window's p95 / first window's), and the gunicorn workers' RSS per window
(flat expected). Loopback only; the load stops by itself. Exit status 1 when a valid request
failed or a bad request was not answered with its 4xx.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from slow_clients import SlowClients, percentiles  # noqa: E402

REQUESTS = ROOT / "fixtures" / "requests"
VALID = [
    ("ptsd-patient-view", "ptsd-benzo-therapy.patient-view.json"),
    ("ptsd-patient-view", "ptsd-ssri-titration.patient-view.json"),
    ("ptsd-order-select", "ptsd-benzo-therapy.select-lorazepam.json"),
    ("ptsd-order-select", "ptsd-new.select-paroxetine-10.json"),
    ("ptsd-order-sign", "ptsd-new.sign-lorazepam-and-diazepam.json"),
    ("ptsd-order-sign", "ptsd-mdma.sign-mdma.json"),
]
BAD = [  # (path, body, content type, expected status)
    ("/cds-services/ptsd-patient-view", b'{"hook": "patient-view", ', "application/json", 400),
    ("/cds-services/ptsd-patient-view", b'{"hook": "patient-view"}', "application/json", 400),
    ("/cds-services/ptsd-order-sign", b"<xml/>", "application/xml", 415),
    ("/cds-services/no-such-service", b"{}", "application/json", 404),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PTSD_CDS_")}
    env.update({"PTSD_CDS_AUTH": "off", "PTSD_CDS_DATABASE": str(workdir / "soak.sqlite3"),
                "PTSD_CDS_TODAY": "2026-11-28", "PTSD_CDS_LOG_LEVEL": "WARNING"})
    log = open(workdir / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "cds_service.cli", "serve", "--bind", f"127.0.0.1:{port}"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit("service exited: " + (workdir / "serve.log").read_text(errors="replace")[-2000:])
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("service did not start")


def worker_rss_mb(arbiter_pid: int) -> float:
    """Sum of VmRSS of the arbiter's children that are not nginx (the gunicorn workers)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("PPid", "0").strip()) == arbiter_pid and b"nginx" not in cmd:
            total += int(fields.get("VmRSS", "0 kB").split()[0])
    return round(total / 1024, 1)


def soak(base: str, seconds: float, rate: float, slow: int, arbiter_pid: int | None, windows: int) -> dict:
    bodies = [(svc, (REQUESTS / name).read_bytes()) for svc, name in VALID]
    lock = threading.Lock()
    stats = {"valid": 0, "valid_errors": 0, "bad": 0, "bad_unexpected": 0, "feedback": 0, "feedback_errors": 0}
    window_len = seconds / windows
    window_times: list[list[float]] = [[] for _ in range(windows)]
    rss: list[float] = []
    errors: list[str] = []
    port = int(base.rsplit(":", 1)[1])
    slow_clients = SlowClients("127.0.0.1", port, slow, interval=1.0, seconds=seconds + 5).start() if slow else None
    start = time.monotonic()
    end = start + seconds
    card_ids: list[str] = []

    def one(i: int, session: requests.Session) -> None:
        kind = i % 10
        try:
            if kind < 7:  # a valid hook call
                svc, body = bodies[i % len(bodies)]
                t0 = time.monotonic()
                r = session.post(f"{base}/cds-services/{svc}", data=body, timeout=10,
                                 headers={"Content-Type": "application/json"})
                elapsed = time.monotonic() - t0
                ok = r.status_code == 200 and "cards" in r.json()
                with lock:
                    stats["valid"] += 1
                    if ok:
                        w = min(windows - 1, int((t0 - start) / window_len))
                        window_times[w].append(elapsed)
                        card_ids.extend(c["uuid"] for c in r.json()["cards"] if "uuid" in c)
                        del card_ids[:-50]
                    else:
                        stats["valid_errors"] += 1
                        errors.append(f"{svc}: HTTP {r.status_code}")
            elif kind < 9:  # a bad request
                path, body, ctype, want = BAD[i % len(BAD)]
                r = session.post(base + path, data=body, timeout=10, headers={"Content-Type": ctype})
                good = r.status_code == want and r.json().get("resourceType") == "OperationOutcome"
                with lock:
                    stats["bad"] += 1
                    if not good:
                        stats["bad_unexpected"] += 1
                        errors.append(f"bad request {path}: HTTP {r.status_code}, wanted {want}")
            else:  # feedback on a card issued earlier
                with lock:
                    card = card_ids[-1] if card_ids else "00000000-0000-4000-8000-000000000000"
                item = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-28T12:00:00Z"}
                r = session.post(f"{base}/cds-services/ptsd-order-sign/feedback", timeout=10,
                                 data=json.dumps({"feedback": [item]}), headers={"Content-Type": "application/json"})
                with lock:
                    stats["feedback"] += 1
                    if r.status_code != 200:
                        stats["feedback_errors"] += 1
                        errors.append(f"feedback: HTTP {r.status_code}")
        except (requests.RequestException, ValueError) as exc:
            with lock:
                stats["valid_errors" if kind < 7 else "bad_unexpected" if kind < 9 else "feedback_errors"] += 1
                errors.append(f"{type(exc).__name__}")

    # Steady load: 4 client threads, each paced so that together they send `rate` calls/s.
    def client(t: int) -> None:
        session = requests.Session()
        i = t
        next_at = time.monotonic()
        while time.monotonic() < end:
            one(i, session)
            i += 4
            next_at += 4 / rate
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    next_sample = start
    while time.monotonic() < end:
        if arbiter_pid and time.monotonic() >= next_sample:
            rss.append(worker_rss_mb(arbiter_pid))
            next_sample += window_len
        time.sleep(0.2)
    for t in threads:
        t.join(15)
    if arbiter_pid:
        rss.append(worker_rss_mb(arbiter_pid))
    if slow_clients:
        slow_clients.stop()
    per_window = [percentiles(w) for w in window_times]
    first, last = per_window[0]["p95_ms"], per_window[-1]["p95_ms"]
    return {
        "seconds": seconds, "rate_per_s": rate, "slow_clients": slow, **stats,
        "latency_per_window": per_window,
        "p95_drift": round(last / first, 2) if first and last else None,
        "worker_rss_mb": rss,
        "rss_growth_mb": round(rss[-1] - rss[0], 1) if len(rss) >= 2 else None,
        "slow_client_connections": slow_clients.summary() if slow_clients else None,
        "first_errors": errors[:10],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--rate", type=float, default=20.0, help="calls per second (all kinds together)")
    ap.add_argument("--slow", type=int, default=50, help="slow clients alongside")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--url", help="soak a running service instead of starting `ptsd-cds serve`")
    args = ap.parse_args(argv)
    proc = None
    with tempfile.TemporaryDirectory(prefix="ptsd-cds-soak-") as tmp:
        if args.url:
            base, pid = args.url.rstrip("/"), None
        else:
            proc, base = start_service(Path(tmp))
            pid = proc.pid
        try:
            report = soak(base, args.seconds, args.rate, args.slow, pid, args.windows)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
    print(json.dumps(report, indent=2))
    failed = report["valid_errors"] or report["bad_unexpected"] or report["feedback_errors"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
