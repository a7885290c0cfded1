"""Per-client rate limit on feedback writes (flask-limiter, memory storage, per worker process).

Only ``POST /cds-services/{id}/feedback`` is limited. Hook calls are never rate-limited: a 429
on a hook call would hide a benzodiazepine warning. The key is the token's issuer (one EHR),
else the remote address when authentication is off. The limit is checked in the view wrapper,
after authentication, so the issuer is known; a breach answers 429 with ``Retry-After`` and an
OperationOutcome. Counts are kept in each worker process's memory (no shared limiter storage
to run or lose), so behind N instances of W workers a client may write up to N x W times the
rate; that bounds abuse, which is its purpose (docs/SCALING.md).
"""

from __future__ import annotations

import math
import time

from flask import Flask, g, request
from flask_limiter import Limiter, RateLimitExceeded

from cds_service.auth import ANONYMOUS
from cds_service.errors import error_response

FEEDBACK_ENDPOINT = "cds.feedback"


def client_key() -> str:
    identity = g.get("identity", ANONYMOUS)
    if identity.iss:
        return "iss:" + identity.iss
    return "addr:" + (request.remote_addr or "unknown")


def _breach(limit) -> object:
    retry_after = max(1, math.ceil(limit.window[0] - time.time()))  # seconds until a slot frees up
    return error_response(
        429, f"Too many feedback writes from this client (limit {limit.limit}); retry after {retry_after} s. "
             "Hook calls are not limited.",
        code="throttled", headers={"Retry-After": str(retry_after)})


def install_feedback_limit(app: Flask, rate: str) -> Limiter:
    """Wrap the feedback view of ``app`` with its own limiter (one per app, memory storage)."""
    limiter = Limiter(client_key, app=app, storage_uri="memory://", default_limits=[], headers_enabled=False,
                      strategy="moving-window", key_prefix="ptsd-cds-feedback")
    app.view_functions[FEEDBACK_ENDPOINT] = limiter.limit(rate, on_breach=_breach)(
        app.view_functions[FEEDBACK_ENDPOINT])
    # The decorated view checks its own limit. flask-limiter also checks every request in a
    # before_request hook (for default limits, of which there are none): taken out, so a hook
    # call pays nothing for the feedback limit.
    funcs = app.before_request_funcs.get(None, [])
    app.before_request_funcs[None] = [f for f in funcs if f != limiter._check_request_limit]
    # Its after_request (rate-limit headers: disabled here; conditional deductions: none used) and
    # teardown (resets a context that lives on the request context, dropped with it anyway) hooks
    # would run on every request too: taken out, for the same reason.
    app.after_request_funcs[None] = [f for f in app.after_request_funcs.get(None, []) if not _owned(f, limiter)]
    app.teardown_request_funcs[None] = [f for f in app.teardown_request_funcs.get(None, [])
                                        if not _owned(f, limiter)]
    return limiter


def _owned(func, limiter: Limiter) -> bool:
    """A request hook flask-limiter registered for ``limiter`` (a bound method or a partial of it)."""
    return getattr(func, "__self__", None) is limiter or limiter in getattr(func, "args", ())


def rate_limited(exc: RateLimitExceeded):
    """Error handler: the OperationOutcome built at the breach (with Retry-After)."""
    if exc.response is not None:
        return exc.response
    return error_response(429, "Too many feedback writes from this client", code="throttled",
                          headers={"Retry-After": "60"})
