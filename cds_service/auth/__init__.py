"""Client authentication: who is calling (CDS Hooks 2.0 "Trusting CDS Clients").

Contract used by the HTTP layer:

* ``build_authenticator(settings, store)`` returns an object with
  ``authenticate(authorization_header: str | None, audience: str | list[str]) -> ClientIdentity``;
  it raises ``AuthenticationError`` (reason for the log only, never for the caller).
* With ``PTSD_CDS_AUTH=off`` it returns ``ANONYMOUS`` for every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class AuthenticationError(Exception):
    """The caller could not be authenticated. ``str(exc)`` is the reason for the log (no token)."""


@dataclass(frozen=True)
class ClientIdentity:
    iss: str | None  # None when authentication is off
    tenant: str | None = None
    jti: str | None = None
    kid: str | None = None
    fhir_servers: tuple[str, ...] = field(default_factory=tuple)  # FHIR base URLs this issuer may name

    @property
    def anonymous(self) -> bool:
        return self.iss is None


ANONYMOUS = ClientIdentity(iss=None)


class NoAuthentication:
    """PTSD_CDS_AUTH=off: every caller is accepted as anonymous (development and tests)."""

    def authenticate(self, authorization_header: str | None, audience) -> ClientIdentity:
        return ANONYMOUS


def build_authenticator(settings, store):
    if not settings.auth_required:
        return NoAuthentication()
    from cds_service.auth.jwt_auth import JwtAuthenticator  # noqa: PLC0415

    return JwtAuthenticator(settings, store)
