"""Marshmallow schemas for CDS Hooks 2.0 service calls (CHECKLIST §3, §7).

The schemas check the envelope and the hook context; the FHIR resources inside ``prefetch`` and
``draftOrders`` are kept as plain JSON here (the clinical-facts stage validates only what the
rules read, and one bad resource never fails the request). Unknown members, ``extension``
included, are tolerated (GEN-04).
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from cds_service.schemas.common import NON_EMPTY, TolerantSchema

# FHIR id datatype: [A-Za-z0-9\-\.]{1,64}. Enforced because patientId goes into FHIR query URLs.
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# "ResourceType/id" (hook library invariant ord-1).
REFERENCE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
USER_TYPES = {
    "patient-view": ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson"),
    "order-select": ("Practitioner", "PractitionerRole"),
    "order-sign": ("Practitioner", "PractitionerRole"),
}


class FhirAuthorizationSchema(TolerantSchema):
    access_token = fields.String(required=True, validate=NON_EMPTY)
    token_type = fields.String(required=True, validate=validate.OneOf(["Bearer", "bearer"]))
    expires_in = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))
    scope = fields.String(required=True, validate=NON_EMPTY)
    subject = fields.String(required=True, validate=NON_EMPTY)
    patient = fields.String(validate=validate.Regexp(FHIR_ID))


class _BaseContext(TolerantSchema):
    hook: str = ""
    userId = fields.String(required=True, validate=validate.Regexp(
        REFERENCE, error="must be 'ResourceType/id', e.g. 'Practitioner/123'"))
    patientId = fields.String(required=True, validate=validate.Regexp(
        FHIR_ID, error="must be a FHIR id (letters, digits, '-', '.'; at most 64)"))
    encounterId = fields.String(validate=validate.Regexp(FHIR_ID, error="must be a FHIR id"))

    @validates_schema
    def _user_type(self, data: dict[str, Any], **_: Any) -> None:
        user = data.get("userId")
        allowed = USER_TYPES.get(self.hook)
        if user and allowed and user.split("/", 1)[0] not in allowed:
            raise ValidationError(
                f"{self.hook} userId must reference one of: {', '.join(allowed)}", "userId")


def _draft_orders(value: Any) -> None:
    if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
        raise ValidationError("must be a FHIR Bundle (resourceType 'Bundle')")
    entries = value.get("entry", [])
    if not isinstance(entries, list):
        raise ValidationError("Bundle.entry must be an array")


class PatientViewContext(_BaseContext):
    hook = "patient-view"


class OrderSignContext(_BaseContext):
    hook = "order-sign"
    draftOrders = fields.Raw(required=True, validate=_draft_orders)


class OrderSelectContext(OrderSignContext):
    hook = "order-select"
    selections = fields.List(
        fields.String(validate=validate.Regexp(REFERENCE, error="must be 'ResourceType/id'")),
        required=True, validate=NON_EMPTY)


CONTEXT_SCHEMAS: dict[str, type[Schema]] = {
    "patient-view": PatientViewContext,
    "order-select": OrderSelectContext,
    "order-sign": OrderSignContext,
}


def _prefetch(value: Any) -> None:
    if not isinstance(value, dict):
        raise ValidationError("must be an object of prefetch key to FHIR resource or null")


def _absolute_url(value: str) -> None:
    if not re.match(r"^https?://[^/\s?#]+", value, re.IGNORECASE):
        raise ValidationError("must be an absolute http(s) URL")


class HookRequestSchema(TolerantSchema):
    hook = fields.String(required=True, validate=NON_EMPTY)
    hookInstance = fields.String(required=True, validate=validate.Length(min=1, max=128))
    fhirServer = fields.String(validate=_absolute_url)
    fhirAuthorization = fields.Nested(FhirAuthorizationSchema)
    context = fields.Dict(required=True)
    prefetch = fields.Raw(validate=_prefetch)
    extension = fields.Raw()

    @validates_schema
    def _authorization_needs_server(self, data: dict[str, Any], **_: Any) -> None:
        # cds-r-1: fhirAuthorization requires fhirServer.
        if "fhirAuthorization" in data and "fhirServer" not in data:
            raise ValidationError("fhirAuthorization was sent without fhirServer", "fhirServer")


def flatten_errors(messages: Any, prefix: str = "") -> list[tuple[str, str]]:
    """marshmallow's nested error dict as (path, message) pairs, e.g. ('context.patientId', ...)."""
    out: list[tuple[str, str]] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            path = prefix if key == "_schema" else (f"{prefix}.{key}" if prefix else str(key))
            out.extend(flatten_errors(value, path))
    elif isinstance(messages, list):
        for value in messages:
            if isinstance(value, (dict, list)):
                out.extend(flatten_errors(value, prefix))
            else:
                out.append((prefix, str(value)))
    else:
        out.append((prefix, str(messages)))
    return out
