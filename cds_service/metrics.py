"""Prometheus metrics (prometheus-client), served at ``GET /metrics``.

What is counted (no patient data, no token; every label has a small, fixed set of values):

* ``ptsd_cds_request_duration_seconds{service,endpoint,status}`` - histogram of each call's time
  in the application (``service`` is a known service id or ``-``; ``endpoint`` is ``call``,
  ``feedback``, ``discovery``, ``ops`` or ``other``)
* ``ptsd_cds_cards_total{service,kind}`` - cards answered, by card kind (topic)
* ``ptsd_cds_fhir_fetch_duration_seconds`` - histogram of each FHIR request to a client's server
* ``ptsd_cds_fhir_fetch_errors_total{reason}`` - FHIR requests that failed (timeout, unreachable,
  http status class, too large, other)
* ``ptsd_cds_auth_failures_total{reason}`` - 401s by reason category
* ``ptsd_cds_feedback_total{service,outcome}`` - feedback items received (accepted / overridden)

Under gunicorn the workers are separate processes, so prometheus-client's multiprocess mode is
used: ``cds_service.gunicorn_hooks`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory in
the master before any worker starts (and marks dead workers' files on ``child_exit``); ``/metrics``
then sums every worker's values. Without that variable (tests, ``create_app`` in a script) the
process's own registry is served.

Cost: recording one call (histogram + counters) takes a few microseconds; the figure measured on
this machine is in docs/OPERATIONS.md (``tests/test_metrics.py`` bounds it).
"""

from __future__ import annotations

import os
import re

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import REGISTRY as _PROCESS_REGISTRY
from prometheus_client import disable_created_metrics

disable_created_metrics()  # no *_created series: halves the exposition, nothing reads them

# Latency buckets around the service's targets (sub-millisecond in-process, seconds with FHIR).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUEST_SECONDS = Histogram(
    "ptsd_cds_request_duration_seconds", "Time the application spent on a call",
    ["service", "endpoint", "status"], buckets=_LATENCY_BUCKETS)
CARDS = Counter("ptsd_cds_cards", "Cards answered, by card kind", ["service", "kind"])
FHIR_SECONDS = Histogram(
    "ptsd_cds_fhir_fetch_duration_seconds", "Time of one FHIR request to the client's FHIR server",
    buckets=_LATENCY_BUCKETS)
FHIR_ERRORS = Counter("ptsd_cds_fhir_fetch_errors", "FHIR requests that failed, by reason", ["reason"])
AUTH_FAILURES = Counter("ptsd_cds_auth_failures", "Calls refused with 401, by reason", ["reason"])
FEEDBACK = Counter("ptsd_cds_feedback", "Feedback items received, by outcome", ["service", "outcome"])

# Bounded label values: anything else is "other" (label values never carry caller text).
_AUTH_REASONS = (  # matched in order against the authenticator's reason (cds_service/auth)
    ("missing", re.compile(r"^(no Authorization header|Authorization header is not a Bearer|empty Bearer)")),
    ("replay", re.compile(r"^replayed jti")),
    ("expired", re.compile(r"^token expired|^token iat/nbf is in the future|^exp before iat")),
    ("untrusted-issuer", re.compile(r"^untrusted issuer|^tenant .* not allowed|^jku .* not allow-listed")),
    ("signature", re.compile(r"^bad signature|^no \S+ key with kid|^algorithm .* not accepted")),
    ("audience", re.compile(r"^aud does not match|^no expected audience")),
    ("malformed", re.compile(r"^(malformed|Bearer token too long|token |exp / iat|jti must|invalid token|iss changed|tenant must)")),
)
_FHIR_REASONS = (
    ("timeout", re.compile(r"timed out|time budget", re.I)),
    ("unreachable", re.compile(r"unreachable|could not be read", re.I)),
    ("http", re.compile(r"answered", re.I)),
    ("too-large", re.compile(r"too large", re.I)),
    ("refused", re.compile(r"outside fhirServer|must use https|refused|unguarded|not usable", re.I)),
    ("invalid-json", re.compile(r"json", re.I)),
)


def _category(message: str, table) -> str:
    for name, pattern in table:
        if pattern.search(message):
            return name
    return "other"


def auth_reason(message: str) -> str:
    return _category(message, _AUTH_REASONS)


def fhir_reason(message: str) -> str:
    return _category(message, _FHIR_REASONS)


# Labelled children, cached: ``labels()`` costs more than the observation itself. The label
# values come from fixed sets (service ids, endpoint kinds, status codes, card kinds), so the
# caches stay small.
_CALL_CHILDREN: dict = {}
_CARD_CHILDREN: dict = {}


def observe_call(service: str, endpoint: str, status: int, seconds: float, card_kinds=()) -> None:
    key = (service, endpoint, status)
    child = _CALL_CHILDREN.get(key)
    if child is None:
        child = _CALL_CHILDREN[key] = REQUEST_SECONDS.labels(service, endpoint, str(status))
    child.observe(seconds)
    for kind in card_kinds:
        counter = _CARD_CHILDREN.get((service, kind))
        if counter is None:
            counter = _CARD_CHILDREN[(service, kind)] = CARDS.labels(service, kind)
        counter.inc()


def observe_fhir(seconds: float, error: str | None = None) -> None:
    FHIR_SECONDS.observe(seconds)
    if error is not None:
        FHIR_ERRORS.labels(fhir_reason(error)).inc()


def observe_auth_failure(message: str) -> None:
    AUTH_FAILURES.labels(auth_reason(message)).inc()


def observe_feedback(service: str, items) -> None:
    for item in items:
        FEEDBACK.labels(service, item["outcome"]).inc()


def multiprocess_dir() -> str | None:
    """The multiprocess directory, when this process records into it. Decided by how
    prometheus-client stored values when it was imported (the variable set later, e.g. by a test
    that imports the gunicorn configuration, does not switch a running process over)."""
    from prometheus_client import values

    if values.ValueClass.__name__ == "MutexValue":
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric (all workers' values summed in multiprocess mode)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(_PROCESS_REGISTRY), CONTENT_TYPE_LATEST


class FhirStats:
    """FHIR requests of one hook call: count, total time and errors (for the call's log line),
    each also recorded in the metrics. Called from the FHIR client's threads (hence the lock)."""

    __slots__ = ("count", "seconds", "errors", "_lock", "_record")

    def __init__(self, record: bool = True):
        import threading

        self.count = 0
        self.seconds = 0.0
        self.errors = 0
        self._lock = threading.Lock()
        self._record = record

    def __call__(self, seconds: float, error: str | None = None) -> None:
        with self._lock:
            self.count += 1
            self.seconds += seconds
            if error is not None:
                self.errors += 1
        if self._record:
            observe_fhir(seconds, error)
