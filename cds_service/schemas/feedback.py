"""Marshmallow schema for ``POST /cds-services/{id}/feedback`` (CHECKLIST §5, invariants cds-fb-1..3)."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from cds_service.schemas.common import NON_EMPTY, TolerantSchema

# RFC 3339 date-time (FB-03 asks for UTC; offsets are accepted and stored as sent).
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


class CodingSchema(TolerantSchema):
    code = fields.String(required=True, validate=NON_EMPTY)
    system = fields.String(required=True, validate=NON_EMPTY)
    display = fields.String(validate=NON_EMPTY)  # FB-08: not required


class OverrideReasonSchema(TolerantSchema):
    reason = fields.Nested(CodingSchema)
    userComment = fields.String(validate=validate.Length(min=1, max=4000))

    @validates_schema
    def _one_of(self, data: dict[str, Any], **_: Any) -> None:
        if "reason" not in data and "userComment" not in data:  # cds-fb-3
            raise ValidationError("overrideReason needs a reason or a userComment")


class AcceptedSuggestionSchema(TolerantSchema):
    id = fields.String(required=True, validate=NON_EMPTY)


class FeedbackItemSchema(TolerantSchema):
    card = fields.String(required=True, validate=validate.Length(min=1, max=128))
    outcome = fields.String(required=True, validate=validate.OneOf(["accepted", "overridden"]))  # cds-fb-1
    acceptedSuggestions = fields.List(fields.Nested(AcceptedSuggestionSchema), validate=NON_EMPTY)
    overrideReason = fields.Nested(OverrideReasonSchema)
    outcomeTimestamp = fields.String(required=True, validate=validate.Regexp(
        RFC3339, error="must be an RFC 3339 date-time, e.g. 2026-11-28T12:00:00Z"))

    @validates_schema
    def _outcome_fields(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("outcome") == "accepted" and not data.get("acceptedSuggestions"):  # cds-fb-2
            raise ValidationError("an accepted outcome needs acceptedSuggestions", "acceptedSuggestions")


class FeedbackRequestSchema(TolerantSchema):
    feedback = fields.List(fields.Nested(FeedbackItemSchema), required=True,
                           validate=validate.Length(min=1, max=500))
