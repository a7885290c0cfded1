"""Verify the CDS client's JWT (CDS Hooks 2.0 "Trusting CDS Clients"; CHECKLIST JWT-01..11).

``JwtAuthenticator(settings, store).authenticate(authorization_header, audience)`` returns a
``ClientIdentity`` or raises ``AuthenticationError(reason)``. The reason is for the log: it
names the check that failed and safe identifiers (iss, kid, jti), never the token.

Order of checks (cheap and local first; the replay cache is written only for a token that
passed everything else, so a forged token cannot burn a legitimate client's jti):

1. ``Authorization: Bearer <token>`` present, sane size, three base64url parts;
2. header: ``alg`` in ``settings.jwt_algorithms`` (never ``none`` / ``HS*``), ``kid`` present,
   ``typ`` (if present) is ``JWT``;
3. unverified ``iss`` is a trusted issuer; a ``jku`` header is in that issuer's allow-list
   (otherwise refused and never fetched);
4. the key: ``kid`` in the issuer's key set (JWKS re-fetched once on an unknown kid,
   rate-limited), and of the kind the ``alg`` needs (kty / curve / the JWK's own alg);
5. PyJWT verifies the signature with exactly that key and that one algorithm, and the claims:
   ``iss``, ``aud`` (the URL called; string or array), ``exp`` and ``iat`` required; ``exp``
   not passed and ``iat`` / ``nbf`` not in the future, each with ``settings.jwt_leeway``;
6. ``exp - iat <= settings.jwt_max_lifetime``; ``jti`` a non-empty string; ``tenant`` (if the
   issuer lists tenants) allowed;
7. ``store.remember_jti(iss, jti, exp + leeway)``: atomic across workers, and across instances with
   the PostgreSQL store (cds_service/store/); False = replay.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from typing import Any, Callable

import jwt
import requests

from cds_service.auth import AuthenticationError, ClientIdentity
from cds_service.auth.issuers import TrustedIssuer, load_trusted_issuers
from cds_service.auth.jwks import ALGORITHM_KEYS, JwksCache, VerificationKey
from cds_service.config import ConfigError

MAX_TOKEN_LENGTH = 16 * 1024
MAX_JTI_LENGTH = 256
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti"]


def _safe(value: Any, limit: int = 80) -> str:
    """A log-safe rendering of an attacker-supplied value (repr, truncated)."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def bearer_token(authorization_header: str | None) -> str:
    if not authorization_header:
        raise AuthenticationError("no Authorization header")
    scheme, _, token = authorization_header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthenticationError("Authorization header is not a Bearer token")
    token = token.strip()
    if not token:
        raise AuthenticationError("empty Bearer token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise AuthenticationError("Bearer token too long")
    if not _TOKEN_RE.match(token):
        raise AuthenticationError("malformed token (not a compact JWS)")
    return token


class JwtAuthenticator:
    def __init__(self, settings, store, *, session: requests.Session | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if not settings.trusted_issuers:
            raise ConfigError("PTSD_CDS_TRUSTED_ISSUERS: required when PTSD_CDS_AUTH=required")
        unsupported = [a for a in settings.jwt_algorithms if a not in ALGORITHM_KEYS]
        if unsupported:
            raise ConfigError(f"PTSD_CDS_JWT_ALGORITHMS: unsupported or unsafe algorithm(s) {unsupported}"
                              f" (supported: {', '.join(ALGORITHM_KEYS)})")
        self.settings = settings
        self.store = store
        self.algorithms = tuple(settings.jwt_algorithms)
        self.leeway = settings.jwt_leeway
        self.max_lifetime = settings.jwt_max_lifetime
        self.issuers: dict[str, TrustedIssuer] = load_trusted_issuers(settings.trusted_issuers)
        self.jwks = JwksCache(settings, session=session, clock=clock)

    def describe(self) -> list[str]:
        """Lines for the start-up log: who is trusted, and where their keys come from."""
        lines = []
        for iss in self.issuers.values():
            extra = f"; jku allow-list: {', '.join(iss.jku)}" if iss.jku else ""
            fhir = ", ".join(iss.fhir_servers) or "none"
            lines.append(f"trusted issuer {iss.iss}: keys from {iss.key_description}{extra}; fhir_servers: {fhir}")
        return lines

    # ------------------------------------------------------------------------------------
    def _key_for(self, issuer: TrustedIssuer, kid: str, alg: str, jku: str | None) -> VerificationKey | None:
        if issuer.static_keys is not None:
            return issuer.static_keys.lookup(kid, alg)
        url = jku if jku is not None else issuer.jwks_url
        assert url is not None  # a jwks_url issuer always has one
        return self.jwks.source(url).lookup(kid, alg)

    def authenticate(self, authorization_header: str | None, audience: str | list[str]) -> ClientIdentity:
        """``audience``: the URL called, or a list of URLs any of which ``aud`` may name."""
        if not audience:
            raise AuthenticationError("no expected audience (server misconfiguration)")
        token = bearer_token(authorization_header)

        # --- header -------------------------------------------------------------------
        # One unverified read gives the header and the claims that pick the key; PyJWT then
        # parses and verifies the token once (``_peek``: a well-formed token is read without
        # PyJWT's per-character base64url scan, which ``bearer_token``'s regex already did).
        unverified_token = _peek(token)
        if unverified_token is None:  # anything unusual: PyJWT's own unverified read decides
            try:
                unverified_token = jwt.api_jwt.decode_complete(token, options={"verify_signature": False})
            except jwt.PyJWTError:
                raise AuthenticationError(f"malformed token ({_bad_part(token)})") from None
        header = unverified_token["header"]
        if not isinstance(header, dict):
            raise AuthenticationError("malformed token (header)")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthenticationError(f"algorithm {_safe(alg)} not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthenticationError("token header has no kid")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise AuthenticationError(f"token typ {_safe(typ)} is not JWT")
        jku = header.get("jku")
        if jku is not None and not isinstance(jku, str):
            raise AuthenticationError("token jku is not a string")

        # --- issuer (unverified, only to pick the keys) --------------------------------
        unverified = unverified_token["payload"]
        iss = unverified.get("iss")
        if not isinstance(iss, str) or not iss:
            raise AuthenticationError("token has no iss")
        issuer = self.issuers.get(iss)
        if issuer is None:
            raise AuthenticationError(f"untrusted issuer {_safe(iss)}")
        if jku is not None and not issuer.allows_jku(jku):
            raise AuthenticationError(f"jku {_safe(jku)} is not allow-listed for issuer {_safe(iss)} (not fetched)")

        # --- key and signature ---------------------------------------------------------
        key = self._key_for(issuer, kid, alg, jku)
        if key is None:
            raise AuthenticationError(f"no {alg} key with kid {_safe(kid)} for issuer {_safe(iss)}")
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=audience,
                issuer=iss,
                leeway=self.leeway,
                options={
                    "require": _REQUIRED_CLAIMS,
                    "verify_signature": True,
                    "verify_aud": True,
                    "verify_iss": True,
                    "verify_exp": True,
                    "verify_iat": True,
                    "verify_nbf": True,
                },
            )
        except jwt.InvalidSignatureError:
            raise AuthenticationError(f"bad signature (issuer {_safe(iss)}, kid {_safe(kid)})") from None
        except jwt.ExpiredSignatureError:
            raise AuthenticationError(f"token expired (issuer {_safe(iss)})") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationError(f"token iat/nbf is in the future (issuer {_safe(iss)})") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError(f"aud does not match {_safe(audience, 200)} (issuer {_safe(iss)})") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"token lacks claim {_safe(exc.claim)} (issuer {_safe(iss)})") from None
        except jwt.exceptions.InvalidJTIError:
            raise AuthenticationError(f"jti must be a non-empty string (issuer {_safe(iss)})") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError("iss changed between reads") from None
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"invalid token ({type(exc).__name__}; issuer {_safe(iss)})") from None

        # --- lifetime, jti, tenant -----------------------------------------------------
        exp, iat = claims["exp"], claims["iat"]
        if isinstance(exp, bool) or isinstance(iat, bool) or not isinstance(exp, (int, float)) \
                or not isinstance(iat, (int, float)):
            raise AuthenticationError("exp / iat must be numbers")
        if exp < iat:
            raise AuthenticationError(f"exp before iat (issuer {_safe(iss)})")
        if exp - iat > self.max_lifetime:
            raise AuthenticationError(
                f"token lifetime {int(exp - iat)} s exceeds {self.max_lifetime} s (issuer {_safe(iss)})")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
            raise AuthenticationError(f"jti must be a non-empty string of at most {MAX_JTI_LENGTH} characters")
        tenant = claims.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise AuthenticationError("tenant must be a string")
        if issuer.tenants is not None and tenant not in issuer.tenants:
            shown = "(none)" if tenant is None else _safe(tenant)
            raise AuthenticationError(f"tenant {shown} not allowed for issuer {_safe(iss)}")

        # --- replay (last: only tokens that passed everything else are recorded) ----------
        if not self.store.remember_jti(iss, jti, float(exp) + self.leeway):
            raise AuthenticationError(f"replayed jti {_safe(jti)} (issuer {_safe(iss)})")

        return ClientIdentity(iss=iss, tenant=tenant, jti=jti, kid=kid, fhir_servers=issuer.fhir_servers)


def _segment(part: str) -> bytes | None:
    """One base64url segment (alphabet already checked by ``_TOKEN_RE``, no padding), decoded as
    PyJWT decodes it; None where PyJWT would refuse it (a length of 4n+1, a non-canonical
    encoding)."""
    if len(part) % 4 == 1:
        return None
    raw = part.encode("ascii")
    decoded = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != raw:
        return None
    return decoded


def _peek(token: str) -> dict[str, Any] | None:
    """The unverified header and payload of a token that ``bearer_token`` accepted, read as PyJWT
    reads them (its base64url rules, ``json.loads``, JSON objects), as
    ``{"header": ..., "payload": ...}``; None for anything PyJWT might read differently or
    refuse (then PyJWT's own unverified read runs and its error decides the reason). Never
    trusted: PyJWT verifies the signature and the claims afterwards from the token itself.

    Why not only PyJWT: its unverified read checks every character of each segment in a Python
    generator, and the verified read after it does the same again: the unverified read measured
    33 µs this way against 10.5 µs with ``_peek`` (timeit; cProfile overstated it about tenfold;
    docs/PERFORMANCE.md, "Fixed cost per call")."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header_raw, payload_raw, signature = (_segment(part) for part in parts)
        if header_raw is None or payload_raw is None or signature is None:
            return None
        header = json.loads(header_raw)
        if not isinstance(header, dict) or "b64" in header or "crit" in header \
                or ("kid" in header and not isinstance(header["kid"], str)):
            return None  # detached payloads, critical extensions, odd kids: PyJWT's read
        payload = json.loads(payload_raw)
    except (ValueError, RecursionError, binascii.Error):
        return None
    if not isinstance(payload, dict):
        return None
    return {"header": header, "payload": payload}


def _bad_part(token: str) -> str:
    """Which part of an unreadable token is at fault, for the operator (error path only)."""
    try:
        jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return "header"
    return "payload"
