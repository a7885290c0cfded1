"""gunicorn server hooks (imported by ``cds_service.gunicorn_conf``): what runs once in the master
(and, ``post_worker_init``, once in each worker).

* ``on_starting`` - the start-up checks (settings, trusted issuers, card content), the banner with
  the development and "authentication is off" warnings, and the warning about unknown
  ``PTSD_CDS_*`` variables: once, in the master, before any worker is forked, for every way of
  starting (the image's plain ``gunicorn -c python:cds_service.gunicorn_conf ...`` and
  ``ptsd-cds serve``). A bad setting prints one line naming the variable and the master exits with
  status 2 - no traceback, no worker boot loop.
* Prometheus multiprocess mode: importing this module points ``PROMETHEUS_MULTIPROC_DIR`` at a
  fresh private directory unless the operator set one (then it is emptied at start); ``child_exit``
  marks a dead worker's files so its live gauges are dropped; ``on_exit`` removes a directory this
  module created.
* ``when_ready`` / ``on_exit`` - the ``start`` and ``stop`` events in the JSON log.
* ``post_worker_init`` - in each worker once the app is loaded: the garbage collector tuned for
  request-sized bursts of short-lived objects (``tune_gc``).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from cds_service import startup

_CREATED_DIR: str | None = None


def _prepare_multiprocess_dir() -> None:
    global _CREATED_DIR
    current = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if current:
        path = Path(current)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # values of an earlier run would be summed in
            stale.unlink(missing_ok=True)
        return
    _CREATED_DIR = tempfile.mkdtemp(prefix="ptsd-cds-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _CREATED_DIR


# At import (the master reads its configuration before it forks any worker, and before any worker
# imports prometheus_client, which reads the variable when it is first imported).
_prepare_multiprocess_dir()


def on_starting(server) -> None:
    if os.environ.get(startup.DONE_MARK):
        return  # `ptsd-cds serve` ran the checks and printed the banner before starting gunicorn
    try:
        lines = startup.run_checks(bind=",".join(server.cfg.bind) if server else None)
    except startup.StartupError as exc:
        print(f"ptsd-cds: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    if lines:
        print("\n".join(lines), file=sys.stderr, flush=True)


def when_ready(server) -> None:
    startup.log_event("start", bind=list(server.cfg.bind), workers=server.cfg.workers,
                      threads=server.cfg.threads)


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    startup.log_event("stop")
    if _CREATED_DIR:
        shutil.rmtree(_CREATED_DIR, ignore_errors=True)


# The cyclic garbage collector, tuned per worker (issue #7). A hook call decodes a whole record into
# tens of thousands of short-lived containers; with CPython's default gen0 threshold (700) that
# triggers dozens of collections per call, and the objects still alive (the record being read) are
# promoted until a full collection walks every object the worker imported (fhir.resources, pydantic:
# ~50-70 ms each, every few dozen calls). Freezing what exists once the app is loaded moves those
# objects out of the collector's sight (gc.freeze), and a higher gen0 threshold lets a call's
# record die by reference counting before a collection looks at it. Reference cycles are still
# collected; only less often. Measured: docs/PERFORMANCE.md ("Garbage collection").
GC_GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    """Freeze everything allocated so far and raise the gen0 threshold (older generations unchanged)."""
    import gc

    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def post_worker_init(worker) -> None:
    """In each worker, after the app is loaded (gunicorn server hook)."""
    tune_gc()
