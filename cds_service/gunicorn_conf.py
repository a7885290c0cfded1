"""gunicorn settings for ptsd-cds (``gunicorn -c python:cds_service.gunicorn_conf "cds_service:create_app()"``).

Threads per worker, because a hook call may wait on the client's FHIR server; every worker shares
the SQLite database (feedback, JWT replay cache). Override with gunicorn's own variables
(``GUNICORN_CMD_ARGS``, ``WEB_CONCURRENCY``) or PTSD_CDS_BIND / PTSD_CDS_WORKERS.

In production gunicorn is never exposed by itself: ``ptsd-cds serve`` puts nginx in front
(``cds_service/proxy.py``), which reads each request whole before a gthread thread sees it, so
slow or idle clients cannot hold these threads (issue #11, docs/RELIABILITY.md). ``keepalive``
(5 s) stays above nginx's upstream ``keepalive_timeout`` (4 s).
"""

import sys

import gunicorn.http.wsgi

from cds_service.config import ConfigError, process_settings
# Server hooks: start-up checks once in the master, Prometheus multiprocess directory, start/stop events.
from cds_service.gunicorn_hooks import child_exit, on_exit, on_starting, post_worker_init, when_ready  # noqa: F401

# No server banner with a version number (issue #4 hardening).
gunicorn.http.wsgi.SERVER = "ptsd-cds"

try:
    _process = process_settings()
except ConfigError as _exc:  # one line naming the variable, not gunicorn's config traceback
    print(f"ptsd-cds: configuration error: {_exc}", file=sys.stderr, flush=True)
    sys.exit(2)
bind = _process["bind"]
workers = _process["workers"]
worker_class = "gthread"
threads = _process["threads"]
timeout = 30
graceful_timeout = 10
keepalive = 5
accesslog = None  # the service writes its own structured line per call (no PHI, no tokens)
errorlog = "-"
loglevel = "warning"
limit_request_line = 8190
limit_request_fields = 100
# Room for a signed JWT in Authorization (the authenticator caps tokens at 16 KiB itself).
# Requests gunicorn refuses at the HTTP level (oversized headers or URL, malformed framing) get
# gunicorn's own short plain-text answer, not an OperationOutcome: put a reverse proxy in front.
limit_request_field_size = 16384 + 64
