"""Operations endpoints: readiness, Prometheus metrics, the OpenAPI document and its rendered page,
and the optional restriction of every operations path.

* ``GET /readyz`` - 200 ``{"status": "ready", "checks": {...}}`` when the store answers
  (``store.ping()``), the configuration is valid and the card content has a card for every rule
  topic; 503 ``{"status": "unavailable", ...}`` naming the failed check otherwise. (``/healthz``,
  liveness, is in ``api/routes.py``.)
* ``GET /metrics`` - Prometheus text format (``cds_service.metrics``); 404 with PTSD_CDS_METRICS=off.
* ``GET /openapi.json`` and ``GET /docs/`` - the document (``cds_service.openapi``) and Swagger UI.
  Swagger UI's files come from the ``swagger-ui-bundle`` PyPI package (Apache-2.0), served from
  this process: no CDN, nothing fetched by the browser from elsewhere.

Restriction (``guard``, app-wide and path-based so that routes other modules add under these
paths - the ``/feedback`` dashboard - are covered automatically): the
paths in ``OPS_PREFIXES`` hold no patient data and are open by default. With PTSD_CDS_OPS_TOKEN
set, they need ``Authorization: Bearer <token>`` (compared in constant time); with
PTSD_CDS_OPS_NETWORKS set, the client address must be in one of those networks. Either failing
is a 401 OperationOutcome. ``/healthz`` and ``/readyz`` stay open for load balancers, and the
``/cards`` catalogue stays open because every card links its page there for the clinician. Hand-written
because it is a prefix test and a ``hmac.compare_digest``; no library adds anything here.
"""

from __future__ import annotations

import hmac
import ipaddress
from functools import cache
from pathlib import Path

from flask import Blueprint, Response, jsonify, request, send_from_directory

from cds_service.errors import ApiError

ops = Blueprint("ops", __name__)

# (path prefix, methods or None for all). POST /cds-services/{id}/feedback is not here: only the
# dashboard's GET /feedback... paths are.
OPS_PREFIXES: tuple[tuple[str, frozenset[str] | None], ...] = (
    ("/metrics", None),
    ("/openapi", None),
    ("/docs", None),
    ("/feedback", frozenset({"GET", "HEAD"})),
)

DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'")


def is_ops_path(path: str, method: str) -> bool:
    for prefix, methods in OPS_PREFIXES:
        if (path == prefix or path.startswith(prefix + "/") or path.startswith(prefix + ".")
                or path.startswith(prefix + "?")) and (methods is None or method in methods):
            return True
    return False


@cache
def _networks(values: tuple[str, ...]):
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


@ops.before_app_request
def guard() -> None:
    from cds_service.app import components

    settings = components().settings
    if not (settings.ops_token or settings.ops_networks) or request.method == "OPTIONS":
        return
    if not is_ops_path(request.path, request.method):
        return
    if settings.ops_networks:
        try:
            address = ipaddress.ip_address(request.remote_addr or "")
        except ValueError:
            address = None
        if address is None or not any(address in net for net in _networks(settings.ops_networks)):
            raise ApiError(401, "This operations path is restricted to PTSD_CDS_OPS_NETWORKS", code="security")
    if settings.ops_token:
        sent = request.headers.get("Authorization", "")
        scheme, _, token = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.ops_token.encode()):
            raise ApiError(401, "This operations path needs the operations token (Authorization: Bearer "
                                "<PTSD_CDS_OPS_TOKEN>)", code="login",
                           headers={"WWW-Authenticate": 'Bearer realm="ptsd-cds-ops"'})


# --- readiness ---------------------------------------------------------------------------------
@ops.get("/readyz")
def readyz():
    from cds_service.app import components
    from cds_service.rules import TOPICS

    c = components()
    checks: dict = {}
    ready = True
    # The store never makes an instance "not ready": hook calls are served during a database
    # outage (replay checks fall back to the host-local cache, issue #10), and a load balancer
    # must not pull every instance that shares the database. It is reported in the body.
    try:
        checks["store"] = c.store.health()
    except Exception as exc:  # noqa: BLE001 - whatever the store raises: reported, not fatal
        checks["store"] = {"available": False, "error": type(exc).__name__}
    degraded = not checks["store"].get("available", False)
    missing = [t for t in TOPICS if t not in c.engine.cards.cards]
    checks["cards"] = {"valid": not missing, "kinds": len(c.engine.cards.cards)}
    if missing:
        checks["cards"]["missing"] = missing
        ready = False
    try:
        c.settings.validate()
        checks["configuration"] = {"valid": True}
    except ValueError as exc:
        checks["configuration"] = {"valid": False, "error": str(exc)[:200]}
        ready = False
    status = ("degraded" if degraded else "ready") if ready else "unavailable"
    resp = jsonify({"status": status, "checks": checks})
    resp.status_code = 200 if ready else 503
    return resp


# --- metrics -----------------------------------------------------------------------------------
@ops.get("/metrics")
def metrics_endpoint():
    from cds_service import metrics
    from cds_service.app import components

    if components().settings.metrics != "on":
        raise ApiError(404, "Metrics are switched off (PTSD_CDS_METRICS=off)", code="not-found")
    body, content_type = metrics.exposition()
    return Response(body, mimetype=None, content_type=content_type)


# --- OpenAPI -----------------------------------------------------------------------------------
@ops.get("/openapi.json")
def openapi_json():
    from cds_service.openapi import openapi_document

    return jsonify(openapi_document())


_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ptsd-cds API</title>
<link rel="stylesheet" href="swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="swagger-ui-bundle.js"></script>
<script src="init.js"></script>
</body>
</html>
"""
# Relative to /docs/, so the page also works behind a proxy that adds a path prefix.
_DOCS_INIT = 'window.ui = SwaggerUIBundle({url: "../openapi.json", dom_id: "#swagger-ui", deepLinking: true});\n'


@cache
def swagger_ui_dir() -> Path:
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


def _docs_response(body: str, mimetype: str) -> Response:
    resp = Response(body, mimetype=mimetype)
    resp.headers["Content-Security-Policy"] = DOCS_CSP
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@ops.get("/docs")
def docs_redirect():
    from flask import redirect

    return redirect("docs/", code=308)


@ops.get("/docs/")
def docs_page():
    return _docs_response(_DOCS_PAGE, "text/html")


@ops.get("/docs/init.js")
def docs_init():
    return _docs_response(_DOCS_INIT, "text/javascript")


@ops.get("/docs/<any('swagger-ui.css','swagger-ui-bundle.js'):name>")
def docs_asset(name: str):
    resp = send_from_directory(swagger_ui_dir(), name, max_age=3600)
    resp.headers["Content-Security-Policy"] = DOCS_CSP
    return resp
