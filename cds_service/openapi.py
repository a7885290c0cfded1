"""The OpenAPI 3.0 document of the service (``GET /openapi.json``), generated with apispec.

The request and response bodies come from the marshmallow schemas that validate at run time
(``schemas/request.py``, ``schemas/feedback.py``, ``schemas/response.py``) through apispec's
marshmallow plugin, so the document cannot drift from what the endpoints accept. The bodies that
have no run-time schema (discovery, OperationOutcome, health and readiness) are described by the
small marshmallow schemas below, which the tests check against real responses. What the request
schemas check in Python code (the user types per hook, the draftOrders Bundle, cds-r-1) is added
as JSON Schema from the same data (``_add_custom_validators``). Each service has its own paths, so
each request body names its own hook and context; ``/cds-services/{service_id}`` documents the 404
of any other id.

``RESPONSES`` is the one table of which status codes each operation can answer; the tests walk
the generated document and require a test that produces every documented code
(``tests/test_openapi.py::PRODUCERS``). A status added here needs its producer there. (408 is
never answered by the application: nginx closes a connection whose request does not arrive in
time, docs/RELIABILITY.md.)
"""

from __future__ import annotations

from functools import cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields, validate

from cds_service.schemas.feedback import FeedbackRequestSchema

SNOOZE_NOTE = (
    "Acknowledged only once stored (503 with Retry-After when the store cannot take it). Snooze "
    "(service rule): a guideline-step card overridden with one of its overrideReasons marked "
    "snoozable in the card data (its display says for how long; code and system as offered) is "
    "not shown again on patient-view for that patient for PTSD_CDS_SNOOZE_DAYS (default 30); the "
    "benzodiazepine, MDMA, dose and order-not-checked cards are never snoozed (docs/INTEGRATION.md)."
)
from cds_service.schemas.request import CONTEXT_SCHEMAS, FHIR_ID, USER_TYPES, HookRequestSchema
from cds_service.schemas.response import ResponseSchema
from cds_service.services import SERVICES

FHIR_JSON = "application/fhir+json"
JSON = "application/json"


# --- bodies without a run-time schema -----------------------------------------------------------
class OperationOutcomeIssueSchema(Schema):
    severity = fields.String(required=True, validate=validate.OneOf(["fatal", "error", "warning", "information"]))
    code = fields.String(required=True)
    diagnostics = fields.String(required=True)
    expression = fields.List(fields.String())


class OperationOutcomeSchema(Schema):
    """FHIR R4 OperationOutcome as this service writes it (errors.py)."""

    resourceType = fields.String(required=True, validate=validate.OneOf(["OperationOutcome"]))
    issue = fields.List(fields.Nested(OperationOutcomeIssueSchema), required=True, validate=validate.Length(min=1))


class DiscoveryServiceSchema(Schema):
    hook = fields.String(required=True)
    id = fields.String(required=True)
    title = fields.String()
    description = fields.String(required=True)
    usageRequirements = fields.String()
    prefetch = fields.Dict(keys=fields.String(), values=fields.String())


class DiscoverySchema(Schema):
    services = fields.List(fields.Nested(DiscoveryServiceSchema), required=True)


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok"]))


class ReadinessSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ready", "degraded", "unavailable"]))
    checks = fields.Dict(required=True, metadata={
        "description": "one entry per check: store (engine, available), cards (kinds loaded), "
                       "configuration"})


# --- which operation answers which status ---------------------------------------------------------
_WHY = {
    200: "Success",
    400: "Malformed JSON, wrong shape, missing context, hook not matching the service, "
         "fhirAuthorization without fhirServer, or fhirServer not allowed",
    401: "Authentication failed (a signed JWT from a trusted issuer is required); "
         "WWW-Authenticate: Bearer",
    404: "No CDS service with this id (the known ids are the other /cds-services/... paths)",
    405: "Method not allowed on this path (Allow names the methods)",
    412: "Required patient data (Conditions, MedicationRequests, Procedures) could not be obtained "
         "from prefetch or the FHIR server; the answer names what is missing and why",
    413: "Request body larger than PTSD_CDS_MAX_BODY",
    415: "Content-Type is not application/json (or its charset is not UTF-8)",
    500: "Internal error (no stack trace, no patient data in the body)",
    429: "Too many feedback writes from this client (PTSD_CDS_FEEDBACK_RATE_LIMIT); Retry-After says "
         "when to retry. Hook calls are never rate-limited",
    503: "The store is unavailable right now; nothing was stored (Retry-After)",
}
# Each service has its own paths (its request body names its hook and context); the templated
# paths document what any other id gets. Keys: the path as documented ("{id}" = every service).
_CALL_ERRORS = (400, 401, 405, 413, 415, 500)
RESPONSES: dict[tuple[str, str], tuple[int, ...]] = {
    ("/cds-services", "get"): (200, 401, 405, 500),
    ("/cds-services/{id}", "post"): (200, *_CALL_ERRORS, 412),
    ("/cds-services/{id}/feedback", "post"): (200, *_CALL_ERRORS, 429, 503),
    ("/cds-services/{service_id}", "post"): (401, 404),
    ("/cds-services/{service_id}/feedback", "post"): (401, 404),
    ("/healthz", "get"): (200,),
    ("/readyz", "get"): (200, 503),
    ("/metrics", "get"): (200, 401, 404),
    ("/openapi.json", "get"): (200, 401),
    ("/docs/", "get"): (200, 401),
}
_OPS_401 = "PTSD_CDS_OPS_TOKEN is set and the call did not send it as a Bearer token " \
           "(or came from outside PTSD_CDS_OPS_NETWORKS)"


def _schema_name(schema: Any) -> str:
    """Component names: the class name without "Schema", prefixed by the module when two run-time
    modules use the same class name (feedback's and the response's Coding / OverrideReason)."""
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__.removesuffix("Schema")
    module = cls.__module__.rsplit(".", 1)[-1]
    if module == "feedback" and not name.startswith("Feedback"):
        return "Feedback" + name
    if module == "response" and name in ("Coding", "OverrideReason", "Action"):
        return "Card" + name
    return name


def _error(status: int, why: str | None = None) -> dict[str, Any]:
    return {"description": why or _WHY[status], "content": {FHIR_JSON: {"schema": "OperationOutcome"}}}


def _camel(text: str) -> str:
    first, *rest = text.split("-")
    return first + "".join(part.title() for part in rest)


def _hook_request_name(hook: str) -> str:
    return "".join(part.title() for part in hook.split("-")) + "Request"


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0.3 document (built once per process)."""
    from cds_service import __version__

    spec = APISpec(
        title="ptsd-cds", version=__version__, openapi_version="3.0.3",
        plugins=[MarshmallowPlugin(schema_name_resolver=_schema_name)],
        info={"description": "CDS Hooks 2.0 service giving guideline-based decision support for PTSD. "
                             "Errors are FHIR OperationOutcomes (application/fhir+json).",
              "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}},
    )
    spec.components.security_scheme("cdsHooksJwt", {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "CDS Hooks client JWT (iss, aud = the called URL, exp, iat, jti), signed with a "
                       "key of a trusted issuer. Not required when PTSD_CDS_AUTH=off (development)."})
    spec.components.security_scheme("opsToken", {
        "type": "http", "scheme": "bearer",
        "description": "PTSD_CDS_OPS_TOKEN, only when it is set (open by default)."})
    for name, schema in (("OperationOutcome", OperationOutcomeSchema), ("Discovery", DiscoverySchema),
                         ("CdsResponse", ResponseSchema), ("FeedbackRequest", FeedbackRequestSchema),
                         ("HookRequest", HookRequestSchema), ("Health", HealthSchema),
                         ("Readiness", ReadinessSchema)):
        spec.components.schema(name, schema=schema)
    for hook, context_schema in CONTEXT_SCHEMAS.items():
        context_name = "".join(part.title() for part in hook.split("-")) + "Context"
        spec.components.schema(context_name, schema=context_schema)
        spec.components.schema(_hook_request_name(hook), component={"allOf": [
            {"$ref": "#/components/schemas/HookRequest"},
            {"type": "object", "required": ["hook", "context"], "properties": {
                "hook": {"type": "string", "enum": [hook]},
                "context": {"$ref": f"#/components/schemas/{context_name}"}}},
        ]})

    jwt = [{"cdsHooksJwt": []}]
    ops_security = [{}, {"opsToken": []}]
    service_ids = ", ".join(f"`{s.id}` ({s.hook})" for s in SERVICES)
    unknown_param = {"name": "service_id", "in": "path", "required": True,
                     "schema": {"type": "string", "not": {"enum": [s.id for s in SERVICES]}},
                     "description": f"any id other than the services' ({service_ids})"}

    def responses(path: str, method: str, ok: dict[str, Any] | None = None) -> dict[str, Any]:
        return {str(status): ok if status == 200 else _error(status) for status in RESPONSES[(path, method)]}

    spec.path("/cds-services", operations={"get": {
        "summary": "CDS Hooks discovery", "operationId": "discovery", "security": jwt,
        "responses": responses("/cds-services", "get",
                               {"description": "The services", "content": {JSON: {"schema": "Discovery"}}}),
    }})
    cards = {"description": "Cards (an empty list: no guidance)", "content": {JSON: {"schema": "CdsResponse"}}}
    stored = {"description": "Stored (an informational OperationOutcome)",
              "content": {JSON: {"schema": "OperationOutcome"}}}
    for service in SERVICES:
        spec.path(f"/cds-services/{service.id}", operations={"post": {
            "summary": f"{service.title} ({service.hook})", "description": service.description,
            "operationId": _camel(service.id), "security": jwt,
            "requestBody": {"required": True, "content": {JSON: {"schema": _hook_request_name(service.hook)}}},
            "responses": responses("/cds-services/{id}", "post", cards),
        }})
        spec.path(f"/cds-services/{service.id}/feedback", operations={"post": {
            "summary": f"Feedback on {service.id} cards (accepted / overridden)",
            "description": SNOOZE_NOTE,
            "operationId": _camel(service.id) + "Feedback", "security": jwt,
            "requestBody": {"required": True, "content": {JSON: {"schema": "FeedbackRequest"}}},
            "responses": responses("/cds-services/{id}/feedback", "post", stored),
        }})
    for path, operation_id in (("/cds-services/{service_id}", "unknownService"),
                               ("/cds-services/{service_id}/feedback", "unknownServiceFeedback")):
        spec.path(path, parameters=[unknown_param], operations={"post": {
            "summary": "Any other service id: 404", "operationId": operation_id, "security": jwt,
            "requestBody": {"content": {JSON: {"schema": {"type": "object"}}}},
            "responses": responses(path, "post"),
        }})
    spec.path("/healthz", operations={"get": {
        "summary": "Liveness (no patient data, no authentication)", "operationId": "healthz", "security": [{}],
        "responses": responses("/healthz", "get", {"description": "The process answers",
                                                   "content": {JSON: {"schema": "Health"}}}),
    }})
    spec.path("/readyz", operations={"get": {
        "summary": "Readiness: configuration and card content valid; the store's state reported",
        "operationId": "readyz", "security": [{}],
        "responses": {"200": {"description": "Ready (status \"ready\"), or serving hook calls while the store is "
                                             "unavailable (status \"degraded\", checks.store.available false)",
                              "content": {JSON: {"schema": "Readiness"}}},
                      "503": {"description": "Not ready: the configuration or card content is invalid (named in checks)",
                              "content": {JSON: {"schema": "Readiness"}}}},
    }})
    spec.path("/metrics", operations={"get": {
        "summary": "Prometheus metrics (text exposition format)", "operationId": "metrics",
        "security": ops_security,
        "responses": {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                      "401": _error(401, _OPS_401),
                      "404": _error(404, "Metrics are switched off (PTSD_CDS_METRICS=off)")},
    }})
    spec.path("/openapi.json", operations={"get": {
        "summary": "This document", "operationId": "openapi", "security": ops_security,
        "responses": {"200": {"description": "OpenAPI 3.0 document", "content": {JSON: {"schema": {"type": "object"}}}},
                      "401": _error(401, _OPS_401)},
    }})
    spec.path("/docs/", operations={"get": {
        "summary": "This document rendered (Swagger UI, served locally)", "operationId": "docs",
        "security": ops_security,
        "responses": {"200": {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}},
                      "401": _error(401, _OPS_401)},
    }})
    return _add_custom_validators(_resolve_names(spec.to_dict()))


def _add_custom_validators(doc: dict[str, Any]) -> dict[str, Any]:
    """What the request schemas check in Python (validator functions, ``@validates_schema``) and the
    marshmallow plugin cannot see, written as JSON Schema from the same data (USER_TYPES, FHIR_ID)."""
    schemas = doc["components"]["schemas"]
    fhir_id = FHIR_ID.pattern.strip("^$")
    for hook, types in USER_TYPES.items():
        context = schemas["".join(part.title() for part in hook.split("-")) + "Context"]
        context["properties"]["userId"]["pattern"] = f"^({'|'.join(types)})/{fhir_id}$"
        if "draftOrders" in context["properties"]:  # schemas/request.py _draft_orders
            context["properties"]["draftOrders"] = {
                "type": "object", "required": ["resourceType"],
                "description": "a FHIR Bundle of the draft orders (entries' resources are read as FHIR R4)",
                "properties": {"resourceType": {"type": "string", "enum": ["Bundle"]},
                               "entry": {"type": "array", "items": {"type": "object"}}}}
    request = schemas["HookRequest"]
    request["properties"]["prefetch"] = {  # _prefetch
        "type": "object", "description": "prefetch key -> FHIR resource (or Bundle), or null for none"}
    request["properties"]["fhirServer"]["pattern"] = "^[Hh][Tt][Tt][Pp][Ss]?://[^/\\s?#]+"  # _absolute_url
    request["anyOf"] = [{"not": {"required": ["fhirAuthorization"]}},  # cds-r-1
                        {"required": ["fhirServer"]}]
    return doc


def _resolve_names(doc: dict[str, Any]) -> dict[str, Any]:
    """apispec leaves ``{"schema": "Name"}`` as given in hand-written operations: make them refs."""
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: ({"$ref": f"#/components/schemas/{v}"} if k == "schema" and isinstance(v, str) else walk(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node
    return walk(doc)
