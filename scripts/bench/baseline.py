"""The parse-only baseline of ``make bench``: the floor any Flask service under the same gunicorn
settings pays for the same bodies.

It parses the JSON body (Flask's ``request.get_json``, i.e. ``json.loads``) and answers
``{"cards": []}``; no authentication, no validation, no clinical work. Served with the project's
own gunicorn conf: ``gunicorn -c python:cds_service.gunicorn_conf scripts.bench.baseline:app``.
"""

from __future__ import annotations

from flask import Flask, jsonify, request

app = Flask("ptsd_cds_bench_baseline")


@app.get("/healthz")
def health():
    return jsonify({"status": "ok"})


@app.post("/cds-services/<service_id>")
@app.post("/cds-services/<service_id>/feedback")
def parse_only(service_id: str):
    body = request.get_json(force=True)
    return jsonify({"cards": [] if isinstance(body, dict) else None})
