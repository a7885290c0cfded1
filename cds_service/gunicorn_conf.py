"""gunicorn settings for ptsd-cds (``gunicorn -c python:cds_service.gunicorn_conf "cds_service:create_app()"``).

Threads per worker, because a hook call may wait on the client's FHIR server; every worker shares
the SQLite database (feedback, JWT replay cache). Override with gunicorn's own variables
(``GUNICORN_CMD_ARGS``, ``WEB_CONCURRENCY``) or PTSD_CDS_BIND / PTSD_CDS_WORKERS.

In production gunicorn is never exposed by itself: ``ptsd-cds serve`` puts nginx in front
(``cds_service/proxy.py``), which reads each request whole before a gthread thread sees it, so
slow or idle clients cannot hold these threads (issue #11, docs/RELIABILITY.md). ``keepalive``
(5 s) stays above nginx's upstream ``keepalive_timeout`` (4 s).
"""

import os

import gunicorn.http.wsgi

# No server banner with a version number (issue #4 hardening).
gunicorn.http.wsgi.SERVER = "ptsd-cds"

bind = os.environ.get("PTSD_CDS_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("PTSD_CDS_WORKERS", os.environ.get("WEB_CONCURRENCY", "2")))
worker_class = "gthread"
threads = int(os.environ.get("PTSD_CDS_THREADS", "4"))
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
