"""Pieces every schema shares: how unknown members are treated, and "not empty"."""

from __future__ import annotations

from marshmallow import EXCLUDE, RAISE, Schema, validate

NON_EMPTY = validate.Length(min=1)


class TolerantSchema(Schema):
    """Requests: unknown members (extensions, later spec versions) are ignored (GEN-04)."""

    class Meta:
        unknown = EXCLUDE


class StrictSchema(Schema):
    """Our own responses: an unknown member is a mistake in the service."""

    class Meta:
        unknown = RAISE
