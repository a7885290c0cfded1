"""The trusted-issuer file (``PTSD_CDS_TRUSTED_ISSUERS``): which CDS clients may call, and their keys.

Format (JSON)::

    {
      "issuers": [
        {
          "iss": "https://ehr.example.org",             # exact match with the token's iss
          "jwks_url": "https://ehr.example.org/jwks",   # exactly one of jwks | jwks_file | jwks_url
          "jku": ["https://ehr.example.org/jwks2"],      # optional: JWKS URLs a token's jku may name
          "fhir_servers": ["https://ehr.example.org/fhir/R4"],  # optional: fhirServer prefixes
          "tenants": ["..."],                            # optional: allowed tenant claims
          "name": "...", "description": "..."           # optional, informational
        }
      ]
    }

* ``jwks``: an inline JWK Set; ``jwks_file``: a path, relative paths resolve against the
  directory of the issuer file; ``jwks_url``: fetched over HTTPS (see ``jwks.py``).
* ``jku``: a token whose header has ``jku`` is accepted only if that URL is listed here (or is
  the issuer's ``jwks_url``); any other ``jku`` is refused and never fetched. For a ``jwks_url``
  issuer the keys are fetched from the (allow-listed) ``jku`` the token names; for ``jwks`` and
  ``jwks_file`` issuers the configured keys are used and ``jku`` is only checked.
* ``fhir_servers``: base URLs this issuer's calls may name as ``fhirServer`` (https, or http on
  a loopback host for development); see ``cds_service.patient_data.outbound``.

Everything is checked at load; problems raise ``ConfigError`` naming the file and the entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cds_service.auth.jwks import FileKeySource, JwksError, KeySource, StaticKeySource
from cds_service.config import ConfigError
from cds_service.patient_data.outbound import parse_url, validate_base_url

_KEY_SOURCES = ("jwks", "jwks_file", "jwks_url")
_ALLOWED_FIELDS = frozenset({*_KEY_SOURCES, "iss", "jku", "fhir_servers", "tenants", "name", "description"})
_ALLOWED_TOP = frozenset({"issuers", "description", "warning"})
MAX_FILE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class TrustedIssuer:
    iss: str
    static_keys: KeySource | None  # from jwks / jwks_file
    jwks_url: str | None
    jku: tuple[str, ...] = ()
    fhir_servers: tuple[str, ...] = ()
    tenants: tuple[str, ...] | None = None
    name: str | None = None

    def allows_jku(self, url: str) -> bool:
        return url == self.jwks_url or url in self.jku

    @property
    def key_description(self) -> str:
        return self.static_keys.description if self.static_keys is not None else f"jwks_url {self.jwks_url}"


def _https_url(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string URL")
    try:
        parsed = parse_url(value, allow_query=True)
    except ValueError as exc:
        raise ValueError(f"{what} {value!r} {exc}") from None
    if parsed.scheme != "https":
        raise ValueError(f"{what} {value!r} must use https")
    return value


def _string_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{what} must be an array of non-empty strings")
    return list(value)


def _load_issuer(entry: Any, base_dir: Path) -> TrustedIssuer:
    if not isinstance(entry, dict):
        raise ValueError("must be an object")
    unknown = sorted(set(entry) - _ALLOWED_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} (allowed: {sorted(_ALLOWED_FIELDS)})")
    iss = entry.get("iss")
    if not isinstance(iss, str) or not iss.strip() or iss != iss.strip():
        raise ValueError("'iss' must be a non-empty string without surrounding spaces")
    sources = [k for k in _KEY_SOURCES if k in entry]
    if len(sources) != 1:
        raise ValueError(f"needs exactly one key source of {list(_KEY_SOURCES)}, found {sources or 'none'}")
    static: KeySource | None = None
    jwks_url: str | None = None
    try:
        if "jwks" in entry:
            static = StaticKeySource(entry["jwks"], where="jwks")
        elif "jwks_file" in entry:
            if not isinstance(entry["jwks_file"], str) or not entry["jwks_file"]:
                raise ValueError("'jwks_file' must be a path")
            path = Path(entry["jwks_file"])
            if not path.is_absolute():
                path = base_dir / path
            static = FileKeySource(path)
        else:
            jwks_url = _https_url(entry["jwks_url"], "'jwks_url'")
    except JwksError as exc:
        raise ValueError(str(exc)) from None
    jku = tuple(_https_url(u, "'jku' entry") for u in _string_list(entry.get("jku", []), "'jku'"))
    fhir_servers = []
    for url in _string_list(entry.get("fhir_servers", []), "'fhir_servers'"):
        try:
            validate_base_url(url)
        except ValueError as exc:
            raise ValueError(f"'fhir_servers' entry {url!r} {exc}") from None
        fhir_servers.append(url)
    tenants = None
    if "tenants" in entry:
        tenants = tuple(_string_list(entry["tenants"], "'tenants'"))
        if not tenants:
            raise ValueError("'tenants', when given, must list at least one tenant")
    name = entry.get("name")
    if name is not None and not isinstance(name, str):
        raise ValueError("'name' must be a string")
    return TrustedIssuer(iss=iss, static_keys=static, jwks_url=jwks_url, jku=jku,
                         fhir_servers=tuple(fhir_servers), tenants=tenants, name=name)


def load_trusted_issuers(path: str | Path) -> dict[str, TrustedIssuer]:
    """Read and check the trusted-issuer file; ConfigError with a clear message on any problem."""
    path = Path(path)
    where = f"PTSD_CDS_TRUSTED_ISSUERS ({path})"
    try:
        too_big = path.stat().st_size > MAX_FILE_BYTES
        text = "" if too_big else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: not UTF-8 text ({exc})") from None
    if too_big:
        raise ConfigError(f"{where}: file larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("issuers"), list):
        raise ConfigError(f'{where}: must be a JSON object {{"issuers": [...]}}')
    unknown = sorted(set(doc) - _ALLOWED_TOP)
    if unknown:
        raise ConfigError(f"{where}: unknown top-level field(s) {unknown}")
    if not doc["issuers"]:
        raise ConfigError(f"{where}: no issuers listed, so no client could ever be authenticated")
    issuers: dict[str, TrustedIssuer] = {}
    base_dir = path.resolve().parent
    for i, entry in enumerate(doc["issuers"]):
        label = f"issuers[{i}]"
        if isinstance(entry, dict) and isinstance(entry.get("iss"), str):
            label += f" ({entry['iss']})"
        try:
            issuer = _load_issuer(entry, base_dir)
        except ValueError as exc:
            raise ConfigError(f"{where}: {label}: {exc}") from None
        if issuer.iss in issuers:
            raise ConfigError(f"{where}: {label}: iss {issuer.iss!r} is listed twice")
        issuers[issuer.iss] = issuer
    return issuers
