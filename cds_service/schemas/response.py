"""Marshmallow schema of a CDS Hooks 2.0 service response (CHECKLIST §4, invariants cds-resp-1..6).

Used by the tests on every response the service produces, and available to anyone who wants to
check a response (``validate_response``). Besides the field rules it enforces GEN-02: no null,
empty string, empty array or empty object anywhere, except the top-level ``"cards": []``.
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from cds_service.schemas.common import NON_EMPTY, StrictSchema


class CodingSchema(StrictSchema):
    code = fields.String(required=True, validate=NON_EMPTY)
    system = fields.String(required=True, validate=NON_EMPTY)
    display = fields.String(validate=NON_EMPTY)


class OverrideReasonSchema(CodingSchema):
    display = fields.String(required=True, validate=NON_EMPTY)  # cds-resp-4


class SourceSchema(StrictSchema):
    label = fields.String(required=True, validate=NON_EMPTY)
    url = fields.Url(schemes={"http", "https"})
    icon = fields.Url(schemes={"http", "https"})
    topic = fields.Nested(CodingSchema)


class ActionSchema(StrictSchema):
    type = fields.String(required=True, validate=validate.OneOf(["create", "update", "delete"]))
    description = fields.String(required=True, validate=NON_EMPTY)  # cds-resp-5
    resource = fields.Dict()
    resourceId = fields.String(validate=NON_EMPTY)

    @validates_schema
    def _by_type(self, data: dict[str, Any], **_: Any) -> None:
        if data["type"] == "delete":  # cds-resp-2
            if "resourceId" not in data or "resource" in data:
                raise ValidationError("a delete action has resourceId and no resource")
        elif "resource" not in data or "resourceType" not in data["resource"]:
            raise ValidationError(f"a {data['type']} action carries the whole FHIR resource")


class SuggestionSchema(StrictSchema):
    label = fields.String(required=True, validate=NON_EMPTY)
    uuid = fields.UUID(required=True)  # required here: feedback needs it (FB-04)
    isRecommended = fields.Boolean()
    actions = fields.List(fields.Nested(ActionSchema), validate=NON_EMPTY)


class LinkSchema(StrictSchema):
    label = fields.String(required=True, validate=NON_EMPTY)
    url = fields.Url(required=True, schemes={"http", "https"})
    type = fields.String(required=True, validate=validate.OneOf(["absolute", "smart"]))
    appContext = fields.String(validate=NON_EMPTY)
    autolaunchable = fields.Boolean()

    @validates_schema
    def _app_context(self, data: dict[str, Any], **_: Any) -> None:
        if "appContext" in data and data["type"] != "smart":  # cds-resp-3
            raise ValidationError("appContext is only for smart links")


class CardSchema(StrictSchema):
    uuid = fields.UUID(required=True)  # required here: feedback needs it (FB-04)
    summary = fields.String(required=True, validate=validate.Length(min=1, max=139))  # "<140"
    detail = fields.String(validate=NON_EMPTY)
    indicator = fields.String(required=True, validate=validate.OneOf(["info", "warning", "critical"]))
    source = fields.Nested(SourceSchema, required=True)
    suggestions = fields.List(fields.Nested(SuggestionSchema), validate=NON_EMPTY)
    selectionBehavior = fields.String(validate=validate.OneOf(["at-most-one", "any"]))
    overrideReasons = fields.List(fields.Nested(OverrideReasonSchema), validate=NON_EMPTY)
    links = fields.List(fields.Nested(LinkSchema), validate=NON_EMPTY)

    @validates_schema
    def _suggestion_rules(self, data: dict[str, Any], **_: Any) -> None:
        suggestions = data.get("suggestions") or []
        if suggestions and "selectionBehavior" not in data:  # cds-resp-6
            raise ValidationError("suggestions need selectionBehavior")
        if data.get("selectionBehavior") == "at-most-one":  # cds-resp-1
            if sum(1 for s in suggestions if s.get("isRecommended")) > 1:
                raise ValidationError("at-most-one allows one recommended suggestion")


class ResponseSchema(StrictSchema):
    cards = fields.List(fields.Nested(CardSchema), required=True)
    systemActions = fields.List(fields.Nested(ActionSchema), validate=NON_EMPTY)


def empty_members(value: Any, path: str = "$") -> list[str]:
    """Paths of every null / "" / [] / {} member (GEN-02)."""
    found: list[str] = []
    if value is None or value == "" or value == [] or value == {}:
        return [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(empty_members(item, f"{path}.{key}"))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.extend(empty_members(item, f"{path}[{i}]"))
    return found


def validate_response(body: Any) -> list[str]:
    """Every problem with a service response, as readable strings (empty list: conformant)."""
    problems: list[str] = []
    if not isinstance(body, dict):
        return ["response is not a JSON object"]
    try:
        ResponseSchema().load(body)
    except ValidationError as exc:
        problems.append(f"schema: {exc.messages}")
    for card_index, card in enumerate(body.get("cards") or []):
        problems.extend(f"empty member {p}" for p in empty_members(card, f"$.cards[{card_index}]"))
    if "systemActions" in body:
        problems.extend(f"empty member {p}" for p in empty_members(body["systemActions"], "$.systemActions"))
    return problems
