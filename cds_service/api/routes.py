"""HTTP endpoints: discovery, service calls, feedback (CDS Hooks 2.0 §Discovery, §Calling, §Feedback).

One way through for a service call:
HTTP -> auth (``before_request``) -> request schema -> patient data -> engine (facts -> rules ->
cards) -> response. Each stage lives in its own module; this file only connects them.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import date, datetime
from typing import Any

from flask import Blueprint, g, jsonify, request
from marshmallow import ValidationError

from cds_service import logs, metrics
from cds_service.app import components
from cds_service.api.ratelimit import RateLimitExceeded, rate_limited
from cds_service.auth import ANONYMOUS, AuthenticationError
from cds_service.codesystems import OVERRIDE_REASON
from cds_service.errors import ApiError
from cds_service.json_body import check_content_type, parse_hook_body, parse_json_body, read_body
from cds_service.patient_data.gather import gather_record
from cds_service.schemas.feedback import FeedbackRequestSchema
from cds_service.schemas.request import CONTEXT_SCHEMAS, HookRequestSchema, flatten_errors
from cds_service.patient_key import patient_key
from cds_service.services import SERVICES_BY_ID, ServiceDefinition, discovery_document
from cds_service.store import IssuedCard, StoreUnavailable
from cds_service.store.base import DAY

bp = Blueprint("cds", __name__)
bp.register_error_handler(RateLimitExceeded, rate_limited)  # 429 + Retry-After, an OperationOutcome
log = logging.getLogger("ptsd_cds.api")

_HOOK_REQUEST = HookRequestSchema()
_CONTEXTS = {hook: schema() for hook, schema in CONTEXT_SCHEMAS.items()}
_FEEDBACK = FeedbackRequestSchema()


# --- cross-cutting: timing, authentication, the access log ----------------------------------
# App-wide hooks: they also run for calls that match no route (404) or no method (405), so
# every call gets its log line. Authentication applies to this blueprint's endpoints only.
@bp.before_app_request
def _authenticate() -> None:
    # ``request`` and ``g`` are context-local proxies: each attribute through them costs a
    # look-up, so each hook binds the objects once (the same objects, never a copy).
    ctx, req = g._get_current_object(), request._get_current_object()
    ctx.started = time.perf_counter()
    ctx.log = {}
    ctx.identity = ANONYMOUS
    ctx.request_id = logs.request_id(req.headers.get("X-Request-ID"))
    if req.method == "OPTIONS" or req.blueprint != bp.name or req.endpoint == "cds.health":
        return  # CORS preflights carry no credentials (SANDBOX.md); health checks are public
    c = components()
    if not c.settings.auth_required:
        return  # PTSD_CDS_AUTH=off: every caller is anonymous (nothing to work out per call)
    try:
        ctx.identity = c.authenticator.authenticate(req.headers.get("Authorization"), _audience(c, req))
    except AuthenticationError as exc:
        log.warning("authentication failed: %s", exc)  # the reason, for the operator (never the token)
        ctx.log["auth_error"] = str(exc)[:300]  # also on the call's access line
        if c.settings.metrics == "on":
            metrics.observe_auth_failure(str(exc))
        raise ApiError(401, "Authentication failed", code="login",
                       headers={"WWW-Authenticate": 'Bearer realm="cds-services"'}) from None


def _audience(c, req) -> str | list[str]:
    """The URL the client called, as it must appear in the JWT ``aud`` (JWT-06).

    Feedback: the spec does not say which URL a feedback token names (CHECKLIST FB-06); the
    sandbox signs the feedback URL itself, others may sign the service URL: both are accepted.
    """
    public = c.settings.public_url
    called = public.rstrip("/") + req.path if public else req.base_url
    if req.endpoint == "cds.feedback":
        return [called, called.removesuffix("/feedback")]
    return called


_ENDPOINT_KIND = {"cds.call_service": "call", "cds.feedback": "feedback", "cds.discovery": "discovery",
                  "cds.health": "ops"}


@bp.after_app_request
def _access_log(resp):
    ctx, req = g._get_current_object(), request._get_current_object()
    values = ctx.__dict__  # what this call set on ``g`` (absent when a hook before ours failed)
    now = time.perf_counter()
    seconds = now - values.get("started", now)
    rid = values.get("request_id") or logs.request_id(None)
    resp.headers["X-Request-ID"] = rid
    endpoint = req.endpoint or ""
    kind = _ENDPOINT_KIND.get(endpoint) or ("ops" if endpoint.startswith("ops.") else "other")
    log_fields = values.get("log", {})
    method = req.method
    status = resp.status_code
    if method != "OPTIONS" and components().settings.metrics == "on":
        metrics.observe_call(log_fields.get("service", "-"), kind, status, seconds,
                             log_fields.get("card_kinds", ()))
    # Probes and scrapes (healthz, readyz, metrics) are not logged when they succeed.
    if method != "OPTIONS" and not (kind == "ops" and status < 400):
        fields: dict[str, Any] = {
            "request_id": rid,
            "remote": req.remote_addr,
            "method": method,
            "path": req.path[:200],
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
        }
        fields.update(log_fields)
        fhir = values.get("fhir")
        if fhir is not None and fhir.count:
            fields["fhir_queries"] = fhir.count
            fields["fhir_ms"] = round(fhir.seconds * 1000, 1)
            if fhir.errors:
                fields["fhir_errors"] = fhir.errors
        identity = values.get("identity", ANONYMOUS)
        if identity.iss:
            fields["client"] = identity.iss
        if status >= 400 and values.get("error_message"):
            fields["error"] = values["error_message"]
        if status >= 500 and values.get("exception"):
            fields["exception"] = values["exception"]
        logs.access(logs.level_for(status), **fields)
    return resp


# --- endpoints ------------------------------------------------------------------------------
@bp.get("/healthz")
def health():
    return jsonify({"status": "ok"})


@bp.get("/cds-services")
def discovery():
    return jsonify(discovery_document())


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str):
    ctx, req, c = g._get_current_object(), request._get_current_object(), components()
    call_log = ctx.log
    service = _service(service_id)
    call_log["service"] = service.id
    body = _json_body(req, c, parse_hook_body)  # prefetch values stay JSON text for the patient-data stage
    data = _validate_request(body, service, call_log)
    ctx.fhir = stats = metrics.FhirStats(record=c.settings.metrics == "on")

    def session_factory():
        session = c.outbound.new_session()
        session.ptsd_observer = stats  # FHIR request count, time and errors of this call
        return session

    record = gather_record(data, identity=ctx.identity, settings=c.settings, policy=c.outbound,
                           session_factory=session_factory)
    today = c.settings.today or date.today()
    # The catalogue page of each card kind, linked absolutely (PTSD_CDS_PUBLIC_URL, else the URL called).
    base = c.settings.public_url or req.host_url
    key = _patient_key(data, c, ctx.identity)
    outcome = c.engine.run(service.hook, record, today, catalogue_base=base,
                           snoozed=(lambda: _snoozed_topics(key, c, call_log)) if key else None)
    call_log["cards"] = len(outcome.cards)
    if outcome.snoozed:
        call_log["snoozed"] = outcome.snoozed  # card kinds left out (topic codes only)
    _record_issued(outcome.cards, service, key, c, ctx)
    if outcome.cards:
        call_log["card_kinds"] = [card["source"]["topic"]["code"] for card in outcome.cards]
    if outcome.skipped:
        call_log["unreadable"] = outcome.skipped  # resource counts only, no patient data
    if record.missing:
        call_log["unavailable"] = record.missing
    return jsonify({"cards": outcome.cards})


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str):
    service = _service(service_id)
    g.log["service"] = service.id
    body = _json_body(request._get_current_object(), components())
    if not isinstance(body, dict):
        raise ApiError(400, "The feedback body must be a JSON object {\"feedback\": [...]}", code="structure")
    try:
        data = _FEEDBACK.load(body)
    except ValidationError as exc:
        raise _invalid(exc.messages, "Invalid feedback") from None
    _refuse_unstorable_text(data["feedback"])
    g.log["feedback"] = len(data["feedback"])
    try:
        # acknowledged only after the commit; never an acknowledgement when the store cannot take it
        stored = components().store.save_feedback(service.id, data["feedback"], g.identity.iss,
                                                  demo=bool(g.get("demo_client", False)))
    except StoreUnavailable:
        g.log["store"] = "unavailable"
        raise ApiError(503, "Feedback cannot be stored right now (the feedback store is unavailable); "
                            "nothing was stored: retry later", code="transient",
                       headers={"Retry-After": "5"}) from None
    _snooze_from_feedback(data["feedback"], service, components())
    if components().settings.metrics == "on":
        metrics.observe_feedback(service.id, data["feedback"])
    return jsonify({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "information",
            "code": "informational",
            "diagnostics": f"Received {len(data['feedback'])} feedback item(s); {stored} new, "
                           f"{len(data['feedback']) - stored} already stored",
        }],
    })


# --- helpers --------------------------------------------------------------------------------
def _patient_key(data: dict[str, Any], c, identity) -> str | None:
    """The keyed hash of this call's patient (issuer, FHIR server, patient id); None without an id
    or when it cannot be computed (the call goes on: nothing is recorded, nothing is snoozed)."""
    patient_id = (data.get("context") or {}).get("patientId")
    if not patient_id:
        return None
    try:
        return patient_key(c.patient_key_secret, identity.iss, data.get("fhirServer"), patient_id)
    except Exception as exc:  # noqa: BLE001 - a hash must never cost the clinician a card
        log.error("patient key failed: %s", type(exc).__name__)
        return None


def _snoozed_topics(key: str, c, call_log: dict[str, Any]) -> set[str]:
    """The card kinds snoozed for this patient now; best-effort: the store down shows every card."""
    try:
        return c.store.snoozed_topics(key, c.clock())
    except StoreUnavailable:
        call_log["snooze_read"] = "skipped"
    except Exception as exc:  # noqa: BLE001 - a snooze must never cost the clinician a card
        log.error("snooze read failed: %s", type(exc).__name__)
        call_log["snooze_read"] = "failed"
    return set()


def _record_issued(cards: list[dict[str, Any]], service: ServiceDefinition, key: str | None, c, ctx) -> None:
    """Record one IssuedCard per returned card (one INSERT); best-effort: never fails the call."""
    if not cards:
        return
    now = c.clock()
    demo = bool(ctx.get("demo_client", False))
    try:
        issued = [IssuedCard(uuid=card["uuid"], topic=card["source"]["topic"]["code"], service_id=service.id,
                             hook=service.hook, patient_key=key, issued_at=now, demo=demo) for card in cards]
        c.store.record_issued_cards(issued)
    except StoreUnavailable:
        ctx.log["issued_record"] = "skipped"  # the store is down: cards are served, the record is not kept
    except Exception as exc:  # noqa: BLE001 - a record must never cost the clinician a card
        log.error("issued-card record failed: %s", type(exc).__name__)  # no card or patient content
        ctx.log["issued_record"] = "failed"


def _snooze_from_feedback(items: list[dict[str, Any]], service: ServiceDefinition, c) -> None:
    """Snooze (service rule, issue #8 point 18): a card dismissed ("overridden") with a snoozable
    reason of the project's code system is not shown again on patient-view for that patient for
    PTSD_CDS_SNOOZE_DAYS, counted from the dismissal (its outcomeTimestamp, never later than now,
    never earlier than the card). The card is found by uuid in the issued-card record; only its own
    service's feedback counts; demo calls never snooze (the demo's patients are shared).
    Best-effort, after the feedback is stored: a failure here never changes the answer."""
    if g.get("demo_client", False):
        return
    snoozed = 0
    try:
        now = c.clock()
        for item in items:
            reason = (item.get("overrideReason") or {}).get("reason") or {}
            if (item.get("outcome") != "overridden" or reason.get("system") != OVERRIDE_REASON
                    or reason.get("code") not in c.engine.snoozable_reasons):
                continue  # no store read for feedback that cannot snooze
            issued = c.store.issued_card(item["card"])
            if (issued is None or issued.demo or not issued.patient_key or issued.service_id != service.id
                    or not c.engine.snoozes(issued.topic, reason.get("code"))):
                continue
            dismissed = max(issued.issued_at, min(_posix(item["outcomeTimestamp"], now), now))
            until = dismissed + c.settings.snooze_days * DAY
            if until > now:
                c.store.add_snooze(issued.patient_key, issued.topic, until)
                snoozed += 1
    except StoreUnavailable:
        g.log["snooze_write"] = "skipped"
    except Exception as exc:  # noqa: BLE001 - stored feedback is acknowledged whatever happens here
        log.error("snooze from feedback failed: %s", type(exc).__name__)
        g.log["snooze_write"] = "failed"
    if snoozed:
        g.log["snoozes_set"] = snoozed


def _posix(timestamp: str, default: float) -> float:
    """An RFC 3339 date-time (validated by the feedback schema) as POSIX seconds."""
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default


def _refuse_unstorable_text(value: Any) -> None:
    """400 for text no database can keep as sent: a lone surrogate or a NUL character (keys too)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ApiError(400, "Invalid feedback: a string holds a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "Invalid feedback: a string holds a lone UTF-16 surrogate "
                                "(not valid Unicode)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_unstorable_text(key)
            _refuse_unstorable_text(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_unstorable_text(item)


def _service(service_id: str) -> ServiceDefinition:
    service = SERVICES_BY_ID.get(service_id)
    if service is None:
        known = ", ".join(SERVICES_BY_ID)
        raise ApiError(404, f"No CDS service with id '{service_id[:64]}'. Known services: {known}",
                       code="not-found")
    return service


def _json_body(req, c, parse=parse_json_body) -> Any:
    check_content_type(req.mimetype, req.mimetype_params)
    settings = c.settings
    return parse(read_body(req, settings.max_body), max_depth=settings.max_json_depth)


def _validate_request(body: Any, service: ServiceDefinition, call_log: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object (a CDS Hooks request)", code="structure")
    try:
        data = _HOOK_REQUEST.load(body)
    except ValidationError as exc:
        _note_instance(body, call_log)
        raise _invalid(exc.messages, "Invalid CDS Hooks request") from None
    call_log["hook"] = data["hook"]
    call_log["hookInstance"] = data["hookInstance"]
    if data["hook"] != service.hook:
        raise ApiError(400, f"Service '{service.id}' answers the '{service.hook}' hook, "
                            f"not '{data['hook'][:64]}'", expression=["hook"])
    try:
        data["context"] = _CONTEXTS[service.hook].load(data["context"])
    except ValidationError as exc:
        raise _invalid({"context": exc.messages}, f"Invalid {service.hook} context") from None
    return data


# A request that failed validation still gets its hook and hookInstance on the log line (to
# correlate with the client's logs), but only when they look like identifiers, not free text.
_LOGGABLE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def _note_instance(body: dict[str, Any], call_log: dict[str, Any]) -> None:
    for key in ("hook", "hookInstance"):
        value = body.get(key)
        if isinstance(value, str) and _LOGGABLE_ID.match(value):
            call_log[key] = value


def _invalid(messages: Any, title: str) -> ApiError:
    pairs = flatten_errors(messages)
    text = "; ".join(f"{path}: {msg}" if path else msg for path, msg in pairs)
    return ApiError(400, f"{title}: {text}", expression=sorted({p for p, _ in pairs if p}))
