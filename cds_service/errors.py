"""Errors as FHIR OperationOutcome bodies.

Every non-2xx answer of the service is an OperationOutcome with a message a developer can act
on. Messages never carry a stack trace, a token or patient data: only names of fields, hooks and
services, which the caller sent and are not PHI.
"""

from __future__ import annotations

from typing import Any

import json

from flask import Response


class ApiError(Exception):
    """An error answered to the caller with an HTTP status and an OperationOutcome."""

    def __init__(self, status: int, message: str, *, code: str = "invalid",
                 expression: list[str] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.expression = expression or []
        self.headers = headers or {}


def operation_outcome(message: str, *, code: str = "invalid", severity: str = "error",
                      expression: list[str] | None = None,
                      details: list[str] | None = None) -> dict[str, Any]:
    """An OperationOutcome with one issue per message (``details`` adds more issues)."""
    issues = [_issue(severity, code, message, expression)]
    for extra in details or []:
        issues.append(_issue(severity, code, extra, None))
    return {"resourceType": "OperationOutcome", "issue": issues}


def _issue(severity: str, code: str, text: str, expression: list[str] | None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": text}
    if expression:
        issue["expression"] = expression
    return issue


def error_response(status: int, message: str, *, code: str = "invalid",
                   expression: list[str] | None = None, details: list[str] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    body = operation_outcome(message, code=code, expression=expression, details=details)
    resp = Response(json.dumps(body), status=status, mimetype="application/fhir+json")
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp
