"""Settings, read from environment variables prefixed ``PTSD_CDS_`` with safe defaults.

``Settings.from_env()`` reads the environment; ``create_app(config)`` accepts a mapping of
overrides by field name (``{"auth": "off"}``) or by variable name (``{"PTSD_CDS_AUTH": "off"}``).
Every value is checked at start-up; a bad value stops the service with a message naming the
variable (``ptsd-cds check-config`` runs the same checks).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from typing import Any, Mapping

PREFIX = "PTSD_CDS_"
REPO_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A setting has a value the service cannot run with."""


def _default_cards_dir() -> str:
    return str(REPO_ROOT / "cards")


@dataclass(frozen=True)
class Settings:
    # --- how the service runs ---------------------------------------------------------------
    env: str = "production"  # production | development
    auth: str = "required"  # required | off  (off: no client authentication; development and tests)
    public_url: str | None = None  # external base URL, e.g. https://cds.example.org (JWT aud behind a proxy)
    database: str = "var/ptsd-cds.sqlite3"  # a SQLite path (one host) or a postgresql:// URL (shared store)
    log_level: str = "INFO"
    cors_origins: tuple[str, ...] = ("*",)  # "*" or a list of exact origins
    max_body: int = 10 * 1024 * 1024  # bytes; larger request bodies get 413
    max_json_depth: int = 64  # deepest nesting accepted in a request body
    # `ptsd-cds serve`: nginx in front of gunicorn (auto: when installed; required in production)
    proxy: str = "auto"  # auto | nginx | off (off: only behind another buffering reverse proxy)
    # Reverse proxies in front whose X-Forwarded-For is trusted for the client address (rate limit
    # key, PTSD_CDS_OPS_NETWORKS, access lines). `ptsd-cds serve` sets 1 for its own nginx.
    forwarded_hops: int = 0
    request_header_timeout: float = 10.0  # seconds to receive request line and headers (then 408)
    request_body_timeout: float = 10.0  # seconds between two reads of a request body (then 408)

    # --- client authentication (JWT) --------------------------------------------------------
    trusted_issuers: str | None = None  # path to the trusted-issuer JSON file
    jwt_algorithms: tuple[str, ...] = ("ES384", "RS384", "ES256", "RS256", "ES512", "RS512")
    jwt_leeway: int = 5  # seconds of clock skew allowed on exp / iat
    jwt_max_lifetime: int = 3600  # seconds; longest exp - iat accepted (and replay-cache horizon)
    jwks_cache_ttl: int = 3600  # seconds a fetched JWKS is trusted before re-fetching
    jwks_refresh_interval: int = 60  # seconds between forced re-fetches on an unknown kid

    # --- outbound FHIR calls ----------------------------------------------------------------
    fhir_servers: tuple[str, ...] = ()  # FHIR base URLs allowed for every issuer (prefix match)
    fhir_connect_timeout: float = 1.0
    fhir_read_timeout: float = 3.0
    fhir_total_budget: float = 4.0  # seconds for all FHIR fetching of one hook call
    fhir_max_pages: int = 20  # next-links followed per query
    fhir_max_response: int = 20 * 1024 * 1024  # bytes per FHIR response
    # bytes of all FHIR responses of one hook call together (issue #11: memory per call is bounded)
    fhir_max_total_bytes: int = 128 * 1024 * 1024
    # resources of all FHIR responses of one hook call together (a 10,000-resource record is 1/5)
    fhir_max_resources: int = 50_000
    fhir_max_workers: int = 4  # concurrent FHIR queries per hook call

    # --- the store (docs/SCALING.md) --------------------------------------------------------
    database_pool_min: int = 1  # PostgreSQL connections kept open per worker process
    database_pool_max: int = 5  # PostgreSQL connections per worker process at most (threads + 1)
    database_timeout: float = 0.25  # seconds a call waits for a PostgreSQL connection before the fallback
    patient_key_secret: str | None = None  # HMAC key for patient hashes; required with PostgreSQL (>= 32 chars)
    store_user_comments: str = "off"  # on | off: keep overrideReason.userComment of feedback (free text)
    feedback_retention_days: int = 30  # feedback and issued-card records older than this are purged
    snooze_days: int = 30  # how long a snoozed card stays silent for a patient (issue #8)
    feedback_rate_limit: str = "120/minute"  # feedback writes per client (token issuer, else address), per worker
    replay_fallback: str = "var/replay-fallback.sqlite3"  # host-local replay cache during a PostgreSQL outage

    # --- clinical content -------------------------------------------------------------------
    cards_dir: str = field(default_factory=_default_cards_dir)
    site_code_map: str | None = None  # JSON file mapping local procedure codes to therapies
    today: date | None = None  # fixes "today" for demos and tests; never set in production

    # --- pages for people (cds_service/web) -------------------------------------------------
    demo: str = "off"  # on | off: the EHR-like /demo page (on under `make run`); refused when auth is required
    demo_service_url: str | None = None  # base URL the demo page calls (default: its own origin)
    # --- operations endpoints (/metrics, /openapi.json, /docs, the GET /feedback dashboard, /cards) --
    metrics: str = "on"  # on | off: Prometheus metrics recorded and served at /metrics
    ops_token: str | None = None  # when set, those paths need "Authorization: Bearer <token>"
    ops_networks: tuple[str, ...] = ()  # when set, those paths answer only clients from these networks (CIDR)

    # ----------------------------------------------------------------------------------------
    @property
    def auth_required(self) -> bool:
        return self.auth == "required"

    @property
    def development(self) -> bool:
        return self.env == "development"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        raw = {
            f.name: environ[PREFIX + f.name.upper()]
            for f in fields(cls)
            if PREFIX + f.name.upper() in environ
        }
        return cls().with_overrides(raw)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> "Settings":
        if not overrides:
            return self
        names = {f.name: f for f in fields(self)}
        values: dict[str, Any] = {}
        for key, value in overrides.items():
            name = key[len(PREFIX):].lower() if key.upper().startswith(PREFIX) else key.lower()
            if name not in names:
                raise ConfigError(f"unknown setting {key!r}")
            values[name] = _coerce(name, names[name].type, value)
        settings = replace(self, **values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ConfigError naming the variable when a value cannot work."""

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{PREFIX}{name.upper()}: {why}")

        if self.env not in ("production", "development"):
            raise bad("env", "must be 'production' or 'development'")
        if self.auth not in ("required", "off"):
            raise bad("auth", "must be 'required' or 'off'")
        if self.demo not in ("on", "off"):
            raise bad("demo", "must be 'on' or 'off'")
        if self.demo_service_url and not re.match(r"^https?://[^/\s?#]+/?$", self.demo_service_url):
            raise bad("demo_service_url", "must be an origin like http://127.0.0.1:8080 (no path)")
        if self.proxy not in ("auto", "nginx", "off"):
            raise bad("proxy", "must be 'auto', 'nginx' or 'off'")
        if not 0 <= self.forwarded_hops <= 5:
            raise bad("forwarded_hops", "must be between 0 and 5")
        for name in ("request_header_timeout", "request_body_timeout"):
            if not 0 < getattr(self, name) <= 300:
                raise bad(name, "must be between 0 and 300 seconds")
        if self.public_url and not self.public_url.startswith(("https://", "http://")):
            raise bad("public_url", "must be an absolute http(s) URL")
        for name in ("max_body", "max_json_depth", "jwt_max_lifetime", "fhir_max_pages",
                     "fhir_max_response", "fhir_max_workers", "fhir_max_total_bytes", "fhir_max_resources"):
            if getattr(self, name) <= 0:
                raise bad(name, "must be a positive number")
        for name in ("fhir_connect_timeout", "fhir_read_timeout", "fhir_total_budget"):
            if getattr(self, name) <= 0:
                raise bad(name, "must be a positive number of seconds")
        if self.jwt_leeway < 0 or self.jwt_leeway > 300:
            raise bad("jwt_leeway", "must be between 0 and 300 seconds")
        forbidden = [a for a in self.jwt_algorithms if a.lower() == "none" or a.upper().startswith("HS")]
        if forbidden:
            raise bad("jwt_algorithms", f"symmetric or 'none' algorithms are not allowed: {forbidden}")
        if not self.jwt_algorithms:
            raise bad("jwt_algorithms", "at least one algorithm is needed")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise bad("log_level", "must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        self._validate_store(bad)
        if not Path(self.cards_dir).is_dir():
            raise bad("cards_dir", f"not a directory: {self.cards_dir}")
        if self.site_code_map and not Path(self.site_code_map).is_file():
            raise bad("site_code_map", f"file not found: {self.site_code_map}")
        if self.auth_required and not self.trusted_issuers:
            raise bad("trusted_issuers", "required when PTSD_CDS_AUTH=required (a JSON file of trusted issuers)")
        if self.auth_required and not Path(self.trusted_issuers).is_file():
            raise bad("trusted_issuers", f"file not found: {self.trusted_issuers}")
        if self.metrics not in ("on", "off"):
            raise bad("metrics", "must be 'on' or 'off'")
        if self.ops_token is not None and (len(self.ops_token) < 16 or any(c.isspace() for c in self.ops_token)):
            raise bad("ops_token", "must be at least 16 characters without spaces (e.g. openssl rand -hex 32)")
        for net in self.ops_networks:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise bad("ops_networks", f"not a network in CIDR form: {net[:64]!r}") from None

    def _validate_store(self, bad) -> None:
        scheme = self.database.split("://", 1)[0].lower() if "://" in self.database else ""
        postgres = scheme in ("postgresql", "postgres")
        if scheme and not postgres:
            raise bad("database", f"a file path or a postgresql:// URL, not a {scheme}:// URL")
        if not self.database.strip():
            raise bad("database", "must be a file path or a postgresql:// URL")
        if self.database_pool_min < 0 or self.database_pool_max < 1 or self.database_pool_min > self.database_pool_max:
            raise bad("database_pool_max", "needs 0 <= PTSD_CDS_DATABASE_POOL_MIN <= PTSD_CDS_DATABASE_POOL_MAX, max >= 1")
        if not 0 < self.database_timeout <= 30:
            raise bad("database_timeout", "must be between 0 and 30 seconds")
        if self.patient_key_secret is not None and len(self.patient_key_secret.encode()) < 32:
            raise bad("patient_key_secret", "must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        if postgres and not self.patient_key_secret:
            raise bad("patient_key_secret", "required with a PostgreSQL store: every instance must hash "
                                            "patients with the same key (e.g. `openssl rand -hex 32`)")
        if self.store_user_comments not in ("on", "off"):
            raise bad("store_user_comments", "must be 'on' or 'off'")
        if self.snooze_days < 1:
            raise bad("snooze_days", "must be at least 1 day")
        if self.feedback_retention_days < self.snooze_days:
            raise bad("feedback_retention_days", f"must be at least PTSD_CDS_SNOOZE_DAYS ({self.snooze_days}): "
                                                 "a snooze is explained by the feedback that set it")
        try:
            from limits import parse_many

            if not parse_many(self.feedback_rate_limit):
                raise ValueError("empty")
        except ValueError:
            raise bad("feedback_rate_limit", "a rate such as '120/minute' or '10/second;500/hour'") from None
        if postgres and not self.replay_fallback.strip():
            raise bad("replay_fallback", "a file path for the host-local replay cache is needed with PostgreSQL")

    def describe(self) -> list[str]:
        """Lines for the start-up banner: secrets shown as '***', a database URL without its password."""
        lines = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value:
                shown = "***"
            elif f.name == "database":
                shown = redact_url(value)
            else:
                shown = _show(value)
            lines.append(f"{PREFIX}{f.name.upper()}={shown}")
        return lines


# Settings whose value is a secret: never printed or logged.
SECRET_FIELDS = frozenset({"ops_token", "patient_key_secret"})
# PTSD_CDS_* variables read elsewhere than Settings (by the gunicorn configuration and the CLI).
PROCESS_VARIABLES = ("PTSD_CDS_BIND", "PTSD_CDS_WORKERS", "PTSD_CDS_THREADS")


def known_variables() -> list[str]:
    """Every PTSD_CDS_* variable the service reads."""
    return [PREFIX + f.name.upper() for f in fields(Settings)] + list(PROCESS_VARIABLES)


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """PTSD_CDS_* variables that no part of the service reads, each with the closest known name
    (difflib), e.g. ``("PTSD_CDS_AUHT", "PTSD_CDS_AUTH")`` - a typo would otherwise be ignored."""
    environ = os.environ if environ is None else environ
    known = known_variables()
    out = []
    for name in sorted(environ):
        if name.startswith(PREFIX) and name not in known:
            # compare the part after the prefix, or every name would look alike
            close = difflib.get_close_matches(name[len(PREFIX):], [k[len(PREFIX):] for k in known], n=1, cutoff=0.6)
            out.append((name, PREFIX + close[0] if close else None))
    return out


def process_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The gunicorn-level variables, checked: ``{"bind": str, "workers": int, "threads": int}``.

    Raises ConfigError naming the variable (e.g. ``PTSD_CDS_WORKERS=abc``)."""
    environ = os.environ if environ is None else environ
    bind = environ.get("PTSD_CDS_BIND", "127.0.0.1:8080").strip()
    if not bind or any(c.isspace() for c in bind):
        raise ConfigError(f"PTSD_CDS_BIND: must be HOST:PORT or unix:PATH, not {bind[:64]!r}")
    if not bind.startswith("unix:"):
        host, sep, port = bind.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"PTSD_CDS_BIND: must be HOST:PORT (port 1-65535), not {bind[:64]!r}")
    out: dict[str, Any] = {"bind": bind}
    for key, default, top in (("workers", environ.get("WEB_CONCURRENCY", "2"), 64), ("threads", "4", 256)):
        raw = environ.get(f"PTSD_CDS_{key.upper()}", default)
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"PTSD_CDS_{key.upper()}: must be a whole number, not {str(raw)[:32]!r}") from None
        if not 1 <= value <= top:
            raise ConfigError(f"PTSD_CDS_{key.upper()}: must be between 1 and {top}, not {value}")
        out[key] = value
    return out


def redact_url(value: str) -> str:
    """A database URL with its password (and a password= parameter) replaced by '***'."""
    import re

    if "://" not in value:
        return value
    value = re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@?#]*):[^@/?#]*@", r"\1:***@", value)
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", value)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    return "" if value is None else str(value)


def _coerce(name: str, type_hint: Any, value: Any) -> Any:
    hint = str(type_hint)
    try:
        if value is None:
            return None
        if hint.startswith("tuple"):
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(value)
        if hint.startswith("int"):
            return int(value)
        if hint.startswith("float"):
            return float(value)
        if hint.startswith("date"):
            if isinstance(value, date):
                return value
            return date.fromisoformat(str(value)) if str(value) else None
        if hint.startswith("str | None"):
            return str(value) if str(value) else None
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{PREFIX}{name.upper()}: cannot read {value!r} ({exc})") from None
