"""Start-up checks and warnings, the same for every way of starting the service.

* ``run_checks(bind)`` - the whole check (process and service settings, trusted issuers and their
  keys, card content, outbound policy) and the banner: development warning, "authentication is
  off" warning, unknown ``PTSD_CDS_*`` variables with the closest known name. Run once per
  start: by ``ptsd-cds serve`` before it starts gunicorn, or by gunicorn's ``on_starting`` hook
  in the master (``cds_service.gunicorn_hooks``) when the image's own ``gunicorn`` command runs.
  It marks the environment (``_PTSD_CDS_STARTUP_DONE``, inherited by the workers) so that the
  workers' ``create_app`` does not repeat the warnings.
* ``app_warnings(settings)`` - what ``create_app`` logs itself when nothing ran the checks first
  (the app factory in tests or in another WSGI server): the same warnings, as log records.

Every failure is a ``StartupError`` with one line that names the variable or file.
"""

from __future__ import annotations

import logging
import os
import sys

from cds_service.config import ConfigError, Settings, process_settings, unknown_variables

log = logging.getLogger("ptsd_cds.startup")

DONE_MARK = "_PTSD_CDS_STARTUP_DONE"  # not PTSD_CDS_*: it is not a setting
SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"


class StartupError(Exception):
    """The service cannot start; ``str()`` is one line naming the setting or file at fault."""


def check_settings(environ=None) -> tuple[Settings, dict]:
    """Settings and process settings, validated (StartupError otherwise)."""
    try:
        proc = process_settings(environ)
        settings = Settings.from_env(environ)
        settings.validate()
    except ConfigError as exc:
        # A misspelt variable is often why a setting is missing or wrong: say so first.
        for name, close in unknown_variables(environ):
            print(f"ptsd-cds: unknown setting {name} is ignored" + (f"; did you mean {close}?" if close else ""),
                  file=sys.stderr)
        raise StartupError(f"configuration error: {exc}") from None
    return settings, proc


def check_content(settings: Settings) -> list[str]:
    """Load what the workers will load (issuers and keys, card content, outbound policy); return
    the trusted-issuer lines for the banner."""
    from cds_service.card_content import CardContentError
    from cds_service.patient_data.outbound import OutboundPolicy
    from cds_service.rendering import CardLibrary
    from cds_service.rules import TOPICS

    try:
        issuers = issuer_lines(settings)
        OutboundPolicy(settings)
        CardLibrary.load(settings.cards_dir, topics=TOPICS)
    except ConfigError as exc:
        raise StartupError(f"configuration error: {exc}") from None
    except (CardContentError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StartupError(f"card content error (PTSD_CDS_CARDS_DIR={settings.cards_dir}): {first}") from None
    return issuers


def issuer_lines(settings: Settings) -> list[str]:
    """Trusted issuers as the authenticator sees them (also validates the file and its keys)."""
    if not settings.auth_required:
        return []
    from cds_service.auth.jwt_auth import JwtAuthenticator
    from cds_service.store import Store

    return JwtAuthenticator(settings, Store(":memory:")).describe()


def warnings(settings: Settings, issuers: list[str] | None = None, environ=None) -> list[str]:
    """The warnings every start shows (empty in a plain production configuration)."""
    out = []
    for name, close in unknown_variables(environ):
        hint = f"; did you mean {close}?" if close else ""
        out.append(f"!! Unknown setting {name} is ignored{hint}")
    if settings.development:
        out.append("!! DEVELOPMENT SETTINGS (PTSD_CDS_ENV=development) - not for patient data")
    if not settings.auth_required:
        out.append("!! Client authentication: OFF (PTSD_CDS_AUTH=off) - any caller is accepted. "
                   "DEVELOPMENT AND TESTS ONLY. PTSD_CDS_AUTH=required make run verifies JWTs "
                   "(trusting the CDS Hooks sandbox)")
    elif any(SANDBOX_ISSUER in line for line in issuers or []):
        out.append(f"!! Trusting the CDS Hooks sandbox ({SANDBOX_ISSUER}), whose private key is "
                   "public: DEVELOPMENT ONLY, never with real patient data")
    if settings.auth_required and not settings.public_url:
        out.append("Note: PTSD_CDS_PUBLIC_URL is not set, so the JWT aud is checked against the Host "
                   "header of each call; set it to the external base URL in production (SECURITY.md)")
    return out


def banner(settings: Settings, bind: str, issuers: list[str]) -> list[str]:
    from cds_service import __version__

    lines = [f"ptsd-cds {__version__} on http://{bind}  (discovery: http://{bind}/cds-services)"]
    lines += ["  " + line for line in settings.describe()]
    if settings.auth_required:
        lines.append("Client authentication: REQUIRED (signed JWT from a trusted issuer on every call)")
        lines += ["  trusted: " + line for line in issuers]
    return lines + warnings(settings, issuers)


def run_checks(bind: str | None = None) -> list[str]:
    """The full start-up check; returns the banner lines. Raises StartupError (one line)."""
    settings, proc = check_settings()
    issuers = check_content(settings)
    os.environ[DONE_MARK] = "1"
    return banner(settings, bind or proc["bind"], issuers)


def app_warnings(settings: Settings) -> None:
    """Log the start-up warnings from ``create_app`` unless the master already showed them."""
    if os.environ.get(DONE_MARK):
        return
    for line in warnings(settings):
        log.warning("%s", line.lstrip("! ").rstrip(" !"))


def log_event(event: str, **fields) -> None:
    from cds_service import __version__, logs

    logs.configure(os.environ.get("PTSD_CDS_LOG_LEVEL", "INFO"))
    logs.event(event, version=__version__, pid=os.getpid(), **fields)
