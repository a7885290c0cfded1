"""The Flask application factory: wiring of settings, stages, CORS, errors and security headers."""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from flask import Flask, Response, g
from flask_cors import CORS
from werkzeug.exceptions import HTTPException

from cds_service import logs, startup
from cds_service.auth import build_authenticator
from cds_service.config import Settings
from cds_service.errors import ApiError, error_response
from cds_service.patient_data.outbound import OutboundPolicy
from cds_service.patient_key import resolve_secret
from cds_service.store import Store, StoreUnavailable, open_store

log = logging.getLogger("ptsd_cds.app")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Strict-Transport-Security": "max-age=31536000",
}

_SECURITY_HEADER_ITEMS = tuple(SECURITY_HEADERS.items())

# Werkzeug's default messages, made actionable for a CDS client developer.
HTTP_MESSAGES = {
    404: ("not-found", "No such endpoint. Discovery is at GET /cds-services; services at "
                       "POST /cds-services/{id}; feedback at POST /cds-services/{id}/feedback"),
    405: ("not-supported", "Method not allowed here"),
    413: ("too-costly", "The request body is larger than this service accepts (PTSD_CDS_MAX_BODY)"),
    415: ("not-supported", "Content-Type must be application/json"),
}


@dataclass
class Components:
    """The stages the request path uses, built once per process."""

    settings: Settings
    store: Store
    authenticator: Any
    outbound: OutboundPolicy
    engine: Any
    patient_key_secret: bytes = b""  # HMAC key of the stored patient hashes (cds_service/patient_key.py)
    # POSIX time of the store's records (issued cards, snoozes); replaced by tests to move time on
    clock: Callable[[], float] = time.time


def create_app(config: Mapping[str, Any] | Settings | None = None) -> Flask:
    """Build the application. ``config``: Settings, or overrides by field or variable name."""
    if isinstance(config, Settings):
        settings = config
        settings.validate()
    else:
        settings = Settings.from_env().with_overrides(config)
        settings.validate()
    logs.configure(settings.log_level)
    startup.app_warnings(settings)  # unless the gunicorn master / `ptsd-cds serve` showed them

    app = Flask("cds_service")
    if settings.forwarded_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Only the client address: the scheme and host the JWT audience is checked against come
        # from PTSD_CDS_PUBLIC_URL (or the Host header), never from X-Forwarded-Proto/-Host.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.forwarded_hops, x_proto=0, x_host=0)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    app.config["DEBUG"] = False
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.json.sort_keys = False
    app.json.ensure_ascii = False

    from cds_service.engine import Engine  # the clinical engine: facts -> rules -> cards

    store = open_store(settings)
    app.extensions["ptsd_cds"] = Components(
        settings=settings,
        store=store,
        authenticator=build_authenticator(settings, store),
        outbound=OutboundPolicy(settings),
        engine=Engine(settings),
        patient_key_secret=resolve_secret(settings, store),
    )

    CORS(
        app,
        resources={r"/cds-services*": {"origins": list(settings.cors_origins)}},
        methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-PTSD-CDS-Client"],  # the last: demo page (web/)
        supports_credentials=False,
        max_age=86400,
    )

    from cds_service.api.routes import bp
    from cds_service.ops import ops

    app.register_blueprint(bp)
    from cds_service.api.ratelimit import install_feedback_limit

    install_feedback_limit(app, settings.feedback_rate_limit)  # feedback only: hook calls are never limited
    from cds_service.web import bp as web_bp  # pages for people: /, /demo, /cards, /feedback

    app.register_blueprint(web_bp)
    app.register_blueprint(ops)
    _register_error_handlers(app)

    @app.after_request
    def _headers(resp: Response) -> Response:
        # One pass over the few headers already set (a page's own CSP wins), then one extend.
        present = {key.lower() for key in resp.headers.keys()}
        resp.headers.extend([(k, v) for k, v in _SECURITY_HEADER_ITEMS if k.lower() not in present])
        return resp

    return app


def components() -> Components:
    from flask import current_app

    return current_app.extensions["ptsd_cds"]


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        g.error_message = exc.message
        return error_response(exc.status, exc.message, code=exc.code, expression=exc.expression,
                              headers=exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code, message = HTTP_MESSAGES.get(status, ("exception", exc.name))
        headers: dict[str, str] = {}
        if status == 405:
            allowed = exc.valid_methods if hasattr(exc, "valid_methods") and exc.valid_methods else []
            if allowed:
                headers["Allow"] = ", ".join(sorted(allowed))
                message = f"{message}; use {', '.join(m for m in sorted(allowed) if m != 'OPTIONS')}"
        return error_response(status, message, code=code, headers=headers)

    @app.errorhandler(StoreUnavailable)
    def _store_unavailable(exc: StoreUnavailable) -> Response:
        g.error_message = "store unavailable"
        log.error("store unavailable: %s", exc)
        return error_response(503, "The service's database is unavailable right now; nothing was stored. "
                                   "Retry later.", code="transient", headers={"Retry-After": "5"})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # Log the exception type and where it happened, not its message: a message can quote
        # data of the request (a patient's name). The body carries neither.
        frames = traceback.extract_tb(exc.__traceback__)
        where = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}:{f.name}" for f in frames[-5:]]
        g.exception = f"{type(exc).__name__} at {' <- '.join(reversed(where[-3:]))}"
        log.error("unhandled %s at %s", type(exc).__name__, " <- ".join(reversed(where)))
        return error_response(500, "Internal error in the CDS service; the event was logged "
                                   "(no patient data is kept). Retry, or report the hookInstance.",
                              code="exception")

