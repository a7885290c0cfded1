"""Marshmallow schema for ``POST /cds-services/{id}/feedback`` (CHECKLIST §5, invariants cds-fb-1..3)."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

# RFC 3339 date-time (FB-03 asks for UTC; offsets are accepted and stored as sent).
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


class _Tolerant(Schema):
    class Meta:
        unknown = EXCLUDE


class CodingSchema(_Tolerant):
    code = fields.String(required=True, validate=validate.Length(min=1))
    system = fields.String(required=True, validate=validate.Length(min=1))
    display = fields.String(validate=validate.Length(min=1))  # FB-08: not required


class OverrideReasonSchema(_Tolerant):
    reason = fields.Nested(CodingSchema)
    userComment = fields.String(validate=validate.Length(min=1, max=4000))

    @validates_schema
    def _one_of(self, data: dict[str, Any], **_: Any) -> None:
        if "reason" not in data and "userComment" not in data:  # cds-fb-3
            raise ValidationError("overrideReason needs a reason or a userComment")


class AcceptedSuggestionSchema(_Tolerant):
    id = fields.String(required=True, validate=validate.Length(min=1))


class FeedbackItemSchema(_Tolerant):
    card = fields.String(required=True, validate=validate.Length(min=1, max=128))
    outcome = fields.String(required=True, validate=validate.OneOf(["accepted", "overridden"]))  # cds-fb-1
    acceptedSuggestions = fields.List(fields.Nested(AcceptedSuggestionSchema), validate=validate.Length(min=1))
    overrideReason = fields.Nested(OverrideReasonSchema)
    outcomeTimestamp = fields.String(required=True, validate=validate.Regexp(
        RFC3339, error="must be an RFC 3339 date-time, e.g. 2026-11-28T12:00:00Z"))

    @validates_schema
    def _outcome_fields(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("outcome") == "accepted" and not data.get("acceptedSuggestions"):  # cds-fb-2
            raise ValidationError("an accepted outcome needs acceptedSuggestions", "acceptedSuggestions")


class FeedbackRequestSchema(_Tolerant):
    feedback = fields.List(fields.Nested(FeedbackItemSchema), required=True,
                           validate=validate.Length(min=1, max=500))
