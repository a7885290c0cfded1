"""``make bench``: throughput and latency of ptsd-cds under production settings, against a parse-only
baseline in the same run, with the issue #7 targets as PASS/FAIL. A benchmark: it prints figures,
it is never part of ``make test``.

What runs (all on loopback, in separate processes):
* the service: gunicorn with the project's conf (``python:cds_service.gunicorn_conf``: 2 gthread
  workers x 4 threads unless PTSD_CDS_WORKERS/THREADS say otherwise), ``PTSD_CDS_AUTH=required``
  with a test issuer made at start (EC P-384 key, inline JWKS, ``PTSD_CDS_PUBLIC_URL`` so ``aud``
  matches): JWT verification and the replay check are in the measured path;
* the baseline: ``scripts/bench/baseline.py`` (parses the JSON body, answers ``{"cards": []}``)
  under the same gunicorn conf;
* the load generator: wrk (Debian's package; installed with apt-get when missing), 1 thread,
  4 connections, ``scripts/bench/wrk.lua``: every request carries its own pre-signed token (unique
  ``jti``; the pool is sized to the row's request count and wrk stops when it is used up);
* a FHIR server that answers after 50 ms (no-prefetch row), a temporary PostgreSQL cluster.

Run ``make bench`` (or ``.venv/bin/python -m scripts.bench --help``); ``--quick`` is a smoke run;
``--only typical,history-2000,fallback`` picks rows. The table is also written as Markdown and
JSON (``--out``, default ``var/bench/latest.{md,json}``).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench import records  # noqa: E402
from scripts.bench.harness import (BenchError, LoadResult, Server, TempPostgres, TestIssuer,  # noqa: E402
                                   ensure_debian_package, free_port, pg_binaries, request, run_wrk)

SIZES = (20, 200, 2000, 10000)
OUTSIDE_SIZES = (2000, 10000)
PV = "/cds-services/ptsd-patient-view"
CONNECTIONS = 4
MIN_FOR_P50 = 5  # fewer answers than this in a row: its p50 is not used for a target
FHIR_DELAY = 0.05

TARGETS_TEXT = """\
- throughput >= 60 % of the parse-only baseline at 200 resources and >= 50 % at 2,000 (typical and history)
- p99 at 200 resources within 3x the baseline's p99 (typical and history)
- p50 at 10,000 resources <= 6x the p50 at 2,000, in every shape (typical, history, outside)
- no-prefetch fallback (four missing keys, FHIR server answering after 50 ms): p50 < 150 ms
- peak RSS per worker < 150 MB with the 2,000-resource record and 50 requests in flight
- response to a 10,000-resource record < 64 KB
- fixed overhead: worker CPU per near-empty request <= 0.40 ms"""


@dataclass
class Row:
    key: str  # selection name, e.g. "history-2000"
    label: str
    path: str
    body: bytes
    resources: int | None = None
    shape: str | None = None
    service: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        s, b = self.service.get("rps"), self.baseline.get("rps")
        return round(s / b, 3) if s and b else None

    @property
    def cpu_ratio(self) -> float | None:
        """Baseline worker CPU per request ÷ the service's: the throughput ratio both would reach
        when CPU-bound, independent of how wrk's 4 connections happen to land on the 2 workers
        (measured: the same baseline row ran at 244 or 742 req/s in two runs minutes apart)."""
        s, b = self.service.get("cpu_ms"), self.baseline.get("cpu_ms")
        return round(b / s, 3) if s and b else None


@dataclass
class Plan:
    duration: float  # target seconds of load per row and server
    min_requests: int
    max_tokens: int
    max_requests_baseline: int
    overhead_requests: int
    rss_requests: int
    row_cap: float  # longest load of one row (slow rows then report the requests they completed)


PLANS = {
    "default": Plan(duration=6, min_requests=8, max_tokens=6000, max_requests_baseline=20000,
                    overhead_requests=3000, rss_requests=100, row_cap=25),
    "quick": Plan(duration=1.5, min_requests=3, max_tokens=800, max_requests_baseline=2000,
                  overhead_requests=300, rss_requests=50, row_cap=15),
}


class Bench:
    def __init__(self, args: argparse.Namespace, wrk: str, workdir: Path):
        self.args = args
        self.plan = PLANS["quick" if args.quick else "default"]
        if args.duration:
            self.plan.duration = args.duration
        self.wrk = wrk
        self.workdir = workdir
        self.today = date.today()
        self.results: dict[str, Any] = {"extra": {}}
        self.notes: list[str] = []
        self.servers: list[Server] = []
        self.procs: list[subprocess.Popen] = []
        self._n = 0
        self._probe_cpu: tuple[float, int] = (0.0, 0)
        self.secret = secrets.token_hex(32)

    # --- selection ----------------------------------------------------------------------------
    def wanted(self, key: str) -> bool:
        if not self.args.only:
            return True
        return any(fnmatch.fnmatch(key, pat) or fnmatch.fnmatch(key, pat + "-*")
                   for pat in self.args.only.split(","))

    # --- processes ----------------------------------------------------------------------------
    def service(self, name: str, extra_env: dict[str, str] | None = None) -> Server:
        env = {"PTSD_CDS_ENV": "production", "PTSD_CDS_AUTH": "required",
               "PTSD_CDS_TRUSTED_ISSUERS": str(self.issuer.path),
               "PTSD_CDS_DATABASE": str(self.workdir / f"{name}.sqlite3"), "PTSD_CDS_LOG_LEVEL": "INFO",
               # Settings of later branches (ignored by a service that does not know them): the patient
               # hash key every instance shares, and the feedback limiter raised above what one test
               # client sends (the limiter still runs; the row measures the write path, not 429s).
               "PTSD_CDS_PATIENT_KEY_SECRET": self.secret, "PTSD_CDS_FEEDBACK_RATE_LIMIT": "1000000/minute"}
        env.update(extra_env or {})
        server = Server(name, "cds_service:create_app()", env, self.workdir, production=True)
        server.env["PTSD_CDS_PUBLIC_URL"] = server.base
        self.servers.append(server)
        return server.start()

    def baseline(self) -> Server:
        # The project's gunicorn conf runs the service's start-up checks in the master: the baseline
        # is not the service, so it only needs settings those checks accept.
        server = Server("baseline", "scripts.bench.baseline:app", {"PTSD_CDS_AUTH": "off"}, self.workdir)
        self.servers.append(server)
        return server.start()

    def start_fhir(self) -> str:
        port = free_port()
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts/bench/fhir_server.py"), "--port", str(port),
                                 "--delay", str(FHIR_DELAY), "--shape", "history", "--size", "20"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=(self.workdir / "fhir.log").open("ab"))
        self.procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if request(base, "GET", "/fhir/Patient/x", timeout=2)[0] == 200:
                    return base + "/fhir"
            except OSError:
                time.sleep(0.1)
        raise BenchError("the local FHIR server did not start")

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        for proc in self.procs:
            proc.terminate()
            proc.wait(10)

    # --- one measurement --------------------------------------------------------------------------
    def write(self, name: str, data: bytes | list[str]) -> Path:
        self._n += 1
        path = self.workdir / f"{self._n:03d}-{name}"
        path.write_bytes(data if isinstance(data, bytes) else ("\n".join(data) + "\n").encode())
        return path

    def tokens(self, server: Server, path: str, count: int) -> list[str]:
        return self.issuer.tokens(server.base + path, count)

    def probe(self, server: Server, row: Row, auth: bool, method: str = "POST") -> tuple[float, int, bytes]:
        """Sequential calls (warm-up, single-call latency, the response); returns (seconds, status, body)."""
        body = row.body.replace(records.UNIQUE.encode(), f"probe-{time.time_ns()}".encode())
        times, status, resp = [], 0, b""
        cpu_before = server.cpu_seconds()
        for i in range(3):
            token = self.tokens(server, row.path, 1)[0] if auth else None
            started = time.perf_counter()
            status, resp = request(server.base, method, row.path, body if method == "POST" else None, token)
            times.append(time.perf_counter() - started)
            body = row.body.replace(records.UNIQUE.encode(), f"probe-{time.time_ns()}".encode())
            if not 200 <= status < 300 or times[-1] > 0.5:
                break
        self._probe_cpu = (server.cpu_seconds() - cpu_before, len(times))
        return min(times), status, resp

    def load(self, server: Server, row: Row, *, auth: bool, connections: int = CONNECTIONS,
             requests_wanted: int | None = None, method: str = "POST",
             max_seconds: float | None = None) -> dict[str, Any]:
        single, status, resp = self.probe(server, row, auth, method)
        out: dict[str, Any] = {"single_ms": round(single * 1000, 2), "status": status, "response_bytes": len(resp)}
        if not 200 <= status < 300:
            out.update({"error": f"HTTP {status}: {resp[:200].decode(errors='replace')}", "non2xx": 1})
            return out
        try:
            out["cards"] = len(json.loads(resp).get("cards", []))
        except (ValueError, AttributeError):
            pass
        plan = self.plan
        cap = plan.max_tokens if auth else plan.max_requests_baseline
        if requests_wanted is None:
            parallel = min(connections, os.cpu_count() or 2)
            requests_wanted = math.ceil(plan.duration * parallel * 1.25 / max(single, 1e-4))
            requests_wanted = max(plan.min_requests, min(cap, requests_wanted))
        limit_seconds = max_seconds or min(plan.row_cap, max(plan.duration * 2.5,
                                                             plan.min_requests * single * 1.5 + 5))
        token_file = None
        if auth:
            token_file = self.write("tokens.txt", self.tokens(server, row.path, requests_wanted + 2 * connections))
        body_file = self.write("body.json", row.body) if method == "POST" else None
        log_offset = server.log_size()
        cpu_before = server.cpu_seconds()
        result: LoadResult = run_wrk(self.wrk, server.base + row.path, method=method, body_file=body_file,
                                     token_file=token_file, limit=requests_wanted, duration=limit_seconds,
                                     connections=connections)
        cpu = server.cpu_seconds() - cpu_before
        out.update(result.as_dict())
        # Worker CPU per answered request (requests still in flight at the stop add a little); for
        # slow rows with few requests the sequential probe calls are the better measure.
        probe_cpu, probe_calls = self._probe_cpu
        if result.requests >= 20 or not probe_calls:
            out["cpu_ms"] = round(cpu * 1000 / result.requests, 3) if result.requests else None
        else:
            out["cpu_ms"] = round(probe_cpu * 1000 / probe_calls, 3)
            out["cpu_ms_from"] = f"{probe_calls} sequential call(s)"
        if result.non2xx:
            out["failures"] = server.failures_since(log_offset)
            print(f"    {server.name}: non-2xx answers: {out['failures']}", flush=True)
        if token_file:
            token_file.unlink()
        return out

    # --- rows ---------------------------------------------------------------------------------------
    def hook_rows(self) -> list[Row]:
        rows = []
        for shape, sizes in (("typical", SIZES), ("history", SIZES), ("outside", OUTSIDE_SIZES)):
            for n in sizes:
                key = f"{shape}-{n}"
                if self.wanted(key):
                    body = json.dumps(records.patient_view(shape, n, self.today)).encode()
                    rows.append(Row(key, f"patient-view {shape} {n:,}", PV, body, n, shape))
        for hook in ("order-select", "order-sign"):
            if self.wanted(hook):
                body = json.dumps(records.order_hook(hook, self.today)).encode()
                rows.append(Row(hook, f"{hook}, benzodiazepine draft", f"/cds-services/ptsd-{hook}", body, 20))
        if self.wanted("feedback"):
            rows.append(Row("feedback", "feedback POST (1 item)", PV + "/feedback",
                            json.dumps(records.feedback_body()).encode()))
        if self.wanted("fallback"):
            body = json.dumps(records.hook_body("patient-view", fhir_server=self.fhir)).encode()
            rows.append(Row("fallback", "patient-view, no prefetch, FHIR 50 ms", PV, body, 20, "history"))
        return rows

    def run(self) -> None:
        needs_fhir = self.wanted("fallback")
        self.fhir = self.start_fhir() if needs_fhir else "http://127.0.0.1:9/fhir"
        self.issuer = TestIssuer(self.workdir, [self.fhir])
        self.rows = self.hook_rows()
        if self.rows:
            service, baseline = self.service("service"), self.baseline()
            print(f"[bench] service {service.base} (workers {service.workers()}), baseline {baseline.base}; "
                  f"{len(self.rows)} rows", flush=True)
            self.check_auth(service, self.rows[0])
            for row in self.rows:
                row.service = self.load(service, row, auth=True)
                row.baseline = self.load(baseline, row, auth=False)
                print("  " + self.row_line(row), flush=True)
            service.stop()
            baseline.stop()
        if self.wanted("overhead"):
            self.overhead()
        if self.wanted("rss"):
            self.rss()
        if self.wanted("postgresql"):
            self.postgresql()

    def check_auth(self, server: Server, row: Row) -> None:
        """The instrument's own check: a token is accepted once, its replay and a missing token are refused."""
        body = row.body.replace(records.UNIQUE.encode(), b"auth-check")
        token = self.tokens(server, row.path, 1)[0]
        first = request(server.base, "POST", row.path, body, token)[0]
        replay = request(server.base, "POST", row.path, body, token)[0]
        anonymous = request(server.base, "POST", row.path, body, None)[0]
        print(f"[bench] auth check: fresh token {first}, same token again {replay}, no token {anonymous}", flush=True)
        self.results["extra"]["auth_check"] = {"fresh": first, "replay": replay, "none": anonymous}
        if not (200 <= first < 300 and replay == 401 and anonymous == 401):
            raise BenchError("authentication is not in the measured path as expected (see the line above)")

    def overhead(self) -> None:
        """Worker CPU per near-empty request (issue #7 item 4): /proc CPU ticks of the workers / requests."""
        body = json.dumps(records.hook_body("patient-view", prefetch_data=records.prefetch([], [], []))).encode()
        row = Row("overhead", "near-empty patient-view", PV, body, 0)
        out = {}
        servers = [("service, auth off", self.service("service-noauth", {"PTSD_CDS_AUTH": "off"}), False),
                   ("service, auth on (JWT + replay)", self.service("service-overhead"), True),
                   ("baseline (floor)", self.baseline(), False)]
        for name, server, auth in servers:
            self.probe(server, row, auth)
            before = server.cpu_seconds()
            res = self.load(server, row, auth=auth, requests_wanted=self.plan.overhead_requests)
            used = server.cpu_seconds() - before
            done = res.get("requests") or 0
            out[name] = {"cpu_ms_per_request": round(used * 1000 / done, 3) if done else None,
                         "requests": done, "non2xx": res.get("non2xx"), "rps": res.get("rps")}
            server.stop()
        self.results["extra"]["overhead"] = out
        print(f"  overhead: " + "; ".join(f"{k} {v['cpu_ms_per_request']} ms CPU/request" for k, v in out.items()),
              flush=True)

    def rss(self) -> None:
        """Peak RSS per worker of a fresh service: 2,000-resource history, sequential, then 50 in flight."""
        body = json.dumps(records.patient_view("history", 2000, self.today)).encode()
        row = Row("rss", "patient-view history 2,000", PV, body, 2000, "history")
        server = self.service("service-rss")
        start = server.peak_rss_mb()
        self.probe(server, row, True)
        self.probe(server, row, True)
        sequential = server.peak_rss_mb()
        res = self.load(server, row, auth=True, connections=50, requests_wanted=max(50, self.plan.rss_requests),
                        max_seconds=self.plan.row_cap / 2)
        in_flight = server.peak_rss_mb()
        server.stop()
        out = {"idle_mb": _mb(start), "sequential_mb": _mb(sequential), "in_flight_50_mb": _mb(in_flight),
               "load": {k: res.get(k) for k in ("requests", "non2xx", "errors", "rps", "p50_ms", "p99_ms")}}
        self.results["extra"]["rss"] = out
        print(f"  peak RSS per worker: idle {out['idle_mb']} MB, 2,000-resource record sequential "
              f"{out['sequential_mb']} MB, 50 in flight {out['in_flight_50_mb']} MB "
              f"(non-2xx {res.get('non2xx')}, errors {res.get('errors')})", flush=True)

    def postgresql(self) -> None:
        """Rows with the PostgreSQL store (replay cache and feedback in PostgreSQL), auth on."""
        out: dict[str, Any] = {}
        self.results["extra"]["postgresql"] = out
        check = subprocess.run([sys.executable, "-c", "from cds_service.store import open_store"], cwd=ROOT,
                               capture_output=True, text=True)
        if check.returncode != 0 and not pg_binaries():
            out["status"] = "needs PostgreSQL store (cds_service.store.open_store, branch store)"
            print(f"  postgresql: {out['status']}", flush=True)
            return
        pg = TempPostgres()
        try:
            try:
                url = pg.start()
            except (BenchError, subprocess.CalledProcessError, OSError) as exc:
                out["status"] = f"skipped: temporary PostgreSQL cluster did not start ({exc})"
                print(f"  postgresql: {out['status']}", flush=True)
                return
            if check.returncode != 0:
                out["status"] = "needs PostgreSQL store (cds_service.store.open_store, branch store)"
                print(f"  postgresql: cluster up at 127.0.0.1:{pg.port}; {out['status']}", flush=True)
                return
            try:
                server = self.service("service-pg", {"PTSD_CDS_DATABASE": url})
            except BenchError as exc:
                out["status"] = f"needs PostgreSQL store (the service did not start with a postgresql:// URL: {exc})"
                print(f"  postgresql: {out['status']}", flush=True)
                return
            by_key = {r.key: r for r in getattr(self, "rows", [])}
            rows = []
            for key, label, path, body in (
                    ("order-sign", "order-sign, benzodiazepine draft", "/cds-services/ptsd-order-sign",
                     json.dumps(records.order_hook("order-sign", self.today)).encode()),
                    ("feedback", "feedback POST (1 item)", PV + "/feedback", json.dumps(records.feedback_body()).encode())):
                row = Row(f"pg-{key}", f"PostgreSQL: {label}", path, body)
                row.service = self.load(server, row, auth=True)
                if key in by_key:
                    row.baseline = by_key[key].baseline
                rows.append(row)
                print("  " + self.row_line(row), flush=True)
            server.stop()
            out["status"] = "measured"
            out["rows"] = [self.row_dict(r) for r in rows]
        finally:
            pg.stop()

    # --- output -------------------------------------------------------------------------------------
    @staticmethod
    def row_line(row: Row) -> str:
        s, b = row.service, row.baseline
        if "error" in s:
            return f"{row.label:44s} ERROR {s['error']}"
        return (f"{row.label:44s} {s.get('rps', 0):8.1f} req/s p50 {_f(s.get('p50_ms'))} p95 {_f(s.get('p95_ms'))} "
                f"p99 {_f(s.get('p99_ms'))} ms non-2xx {s.get('non2xx')}+{s.get('errors')} n={s.get('requests')} "
                f"cpu {s.get('cpu_ms')} ms/req | "
                f"baseline {b.get('rps', 0):8.1f} req/s p50 {_f(b.get('p50_ms'))} p99 {_f(b.get('p99_ms'))} | "
                f"ratio {row.ratio} (CPU {row.cpu_ratio})")

    @staticmethod
    def row_dict(row: Row) -> dict[str, Any]:
        return {"key": row.key, "label": row.label, "resources": row.resources, "shape": row.shape,
                "body_bytes": len(row.body), "service": row.service, "baseline": row.baseline, "ratio": row.ratio,
                "cpu_ratio": row.cpu_ratio}


def _f(v: float | None) -> str:
    return f"{v:8.2f}" if isinstance(v, (int, float)) else "     n/a"


def _mb(d: dict[int, float]) -> float | None:
    return round(max(d.values()), 1) if d else None


# --- targets --------------------------------------------------------------------------------------
def evaluate_targets(rows: dict[str, dict], extra: dict[str, Any]) -> list[tuple[str, str, str]]:
    """[(target, figure, PASS/FAIL/n/a)]"""
    out = []

    def get(key: str, side: str, metric: str):
        return rows.get(key, {}).get(side, {}).get(metric)

    for n, floor in ((200, 0.60), (2000, 0.50)):
        for shape in ("typical", "history"):
            r = rows.get(f"{shape}-{n}", {}).get("ratio")
            out.append((f"throughput {shape} {n:,} >= {floor:.0%} of baseline",
                        f"{r:.1%}" if r is not None else "not run", _verdict(r, lambda v: v >= floor)))
            c = rows.get(f"{shape}-{n}", {}).get("cpu_ratio")
            out.append((f"  the same by worker CPU per request (baseline CPU / service CPU) >= {floor:.0%}",
                        f"{c:.1%}" if c is not None else "not run", _verdict(c, lambda v: v >= floor)))
    for shape in ("typical", "history"):
        s, b = get(f"{shape}-200", "service", "p99_ms"), get(f"{shape}-200", "baseline", "p99_ms")
        ok = None if s is None or b is None else s <= 3 * b
        out.append((f"p99 {shape} 200 <= 3x baseline p99", f"{s} ms vs {b} ms" if s is not None else "not run",
                    _verdict(ok, bool)))
    for shape in ("typical", "history", "outside"):
        big, mid = get(f"{shape}-10000", "service", "p50_ms"), get(f"{shape}-2000", "service", "p50_ms")
        n = min(get(f"{shape}-10000", "service", "requests") or 0, get(f"{shape}-2000", "service", "requests") or 0)
        how = "p50 under load"
        if big and mid and n < MIN_FOR_P50:
            # Too few answers in the row's time cap for a p50: compare single sequential calls instead.
            big, mid = get(f"{shape}-10000", "service", "single_ms"), get(f"{shape}-2000", "service", "single_ms")
            how = f"sequential calls (only {n} answers under load)"
        ratio = big / mid if big and mid else None
        out.append((f"p50 {shape} 10,000 <= 6x p50 at 2,000",
                    f"{ratio:.1f}x ({big} / {mid} ms, {how})" if ratio else "not run", _verdict(ratio, lambda v: v <= 6)))
    fb = get("fallback", "service", "p50_ms")
    out.append(("no-prefetch fallback p50 < 150 ms", f"{fb} ms" if fb is not None else "not run",
                _verdict(fb, lambda v: v < 150)))
    rss = (extra.get("rss") or {}).get("in_flight_50_mb")
    out.append(("peak RSS per worker < 150 MB (2,000 res., 50 in flight)", f"{rss} MB" if rss else "not run",
                _verdict(rss, lambda v: v < 150)))
    sizes = [rows[k]["service"].get("response_bytes") for k in rows if k.endswith("-10000")
             and rows[k]["service"].get("response_bytes")]
    biggest = max(sizes) if sizes else None
    out.append(("response to a 10,000-resource record < 64 KB",
                f"{biggest / 1024:.1f} KiB (largest shape)" if biggest else "not run",
                _verdict(biggest, lambda v: v < 64 * 1024)))
    over = ((extra.get("overhead") or {}).get("service, auth off") or {}).get("cpu_ms_per_request")
    floor = ((extra.get("overhead") or {}).get("baseline (floor)") or {}).get("cpu_ms_per_request")
    out.append(("fixed overhead <= 0.40 ms worker CPU per near-empty request (auth off)",
                f"{over} ms (floor {floor} ms)" if over is not None else "not run", _verdict(over, lambda v: v <= 0.40)))
    bad = sum((r["service"].get("non2xx") or 0) + (r["service"].get("errors") or 0) for r in rows.values())
    bad += sum((r["baseline"].get("non2xx") or 0) + (r["baseline"].get("errors") or 0) for r in rows.values())
    out.append(("non-2xx responses and socket errors (every row) == 0", str(bad), "PASS" if bad == 0 else "FAIL"))
    return out


def _verdict(value, ok) -> str:
    if value is None:
        return "n/a"
    return "PASS" if ok(value) else "FAIL"


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"Run {doc['started']} - {doc['finished']} UTC on {doc['machine']}; commit {doc['commit']}; "
             f"load average {doc['load_before']} before, {doc['load_after']} after; mode {doc['mode']}.", "",
             "| row | body | req/s | p50 ms | p95 ms | p99 ms | non-2xx | n | CPU ms/req | baseline req/s | "
             "baseline p50 | baseline p99 | baseline CPU ms/req | ratio | CPU ratio | response |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    all_rows = list(doc["rows"]) + list((doc["extra"].get("postgresql") or {}).get("rows", []))
    for r in all_rows:
        s, b = r["service"], r["baseline"]
        if "error" in s:
            lines.append(f"| {r['label']} | {_kib(r['body_bytes'])} | ERROR: {s['error'][:80]} |" + " |" * 13)
            continue
        lines.append("| " + " | ".join([
            r["label"], _kib(r["body_bytes"]), _n(s.get("rps"), 1), _n(s.get("p50_ms")), _n(s.get("p95_ms")),
            _n(s.get("p99_ms")), str((s.get("non2xx") or 0) + (s.get("errors") or 0)), str(s.get("requests")),
            _n(s.get("cpu_ms")), _n(b.get("rps"), 1), _n(b.get("p50_ms")), _n(b.get("p99_ms")), _n(b.get("cpu_ms")),
            f"{r['ratio']:.2f}" if r["ratio"] is not None else "-",
            f"{r['cpu_ratio']:.2f}" if r.get("cpu_ratio") is not None else "-", _kib(s.get("response_bytes"))]) + " |")
    pg = doc["extra"].get("postgresql")
    if pg and pg.get("status") != "measured":
        lines.append(f"| PostgreSQL store, auth on | - | {pg.get('status')} |" + " |" * 13)
    lines.append("")
    rss = doc["extra"].get("rss")
    if rss:
        lines.append(f"Peak RSS per worker (VmHWM, fresh service): idle {rss['idle_mb']} MB; 2,000-resource history "
                     f"record, sequential {rss['sequential_mb']} MB; 50 requests in flight {rss['in_flight_50_mb']} MB "
                     f"({rss['load'].get('requests')} requests, non-2xx {rss['load'].get('non2xx')}).")
    over = doc["extra"].get("overhead")
    if over:
        lines.append("Worker CPU per near-empty patient-view (all workers' utime+stime / requests): " + "; ".join(
            f"{k} {v['cpu_ms_per_request']} ms" for k, v in over.items()) + ".")
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {v} |" for t, m, v in doc["targets"]]
    return "\n".join(lines) + "\n"


def _n(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _kib(v) -> str:
    return "-" if not v else (f"{v / 1024:,.1f} KiB" if v < 1024 * 1024 else f"{v / 1024 / 1024:,.1f} MiB")


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test of the harness")
    parser.add_argument("--only", help="comma-separated rows (glob/prefix): typical, history-2000, outside, "
                                       "order-select, order-sign, feedback, fallback, overhead, rss, postgresql")
    parser.add_argument("--duration", type=float, help="seconds of load per row and server (default 6)")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "latest",
                        help="write OUT.md and OUT.json (default var/bench/latest)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (server logs)")
    args = parser.parse_args(argv)

    wrk = ensure_debian_package("wrk", "wrk")
    if not wrk:
        print("make bench needs wrk (Debian package 'wrk'): apt-get install wrk", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="ptsd-cds-bench-"))
    started = datetime.now(timezone.utc)
    load_before = _load()
    bench = Bench(args, wrk, workdir)
    try:
        bench.run()
    except BenchError as exc:
        print(f"[bench] failed: {exc}", file=sys.stderr)
        return 1
    finally:
        bench.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"[bench] work folder kept: {workdir}")
    rows = {r.key: bench.row_dict(r) for r in getattr(bench, "rows", [])}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "?"
    doc = {
        "started": started.strftime("%Y-%m-%d %H:%M"), "finished": datetime.now(timezone.utc).strftime("%H:%M"),
        "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
                   f"wrk -t1 -c{CONNECTIONS}, gunicorn conf cds_service.gunicorn_conf",
        "commit": commit, "load_before": load_before, "load_after": _load(),
        "mode": "quick" if args.quick else "default",
        "rows": list(rows.values()), "extra": bench.results["extra"],
        "targets": evaluate_targets(rows, bench.results["extra"]),
    }
    text = markdown(doc)
    print("\n" + text)
    print("Targets (issue #7):\n" + TARGETS_TEXT)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    print(f"\n[bench] written: {args.out.with_suffix('.md')} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
