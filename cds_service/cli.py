"""``ptsd-cds``: serve the service, check its configuration, evaluate a hook request offline.

    ptsd-cds serve [--dev] [--bind HOST:PORT] [--workers N]
    ptsd-cds check-config
    ptsd-cds purge
    ptsd-cds evaluate REQUEST.json [--today YYYY-MM-DD]
    ptsd-cds feedback-report [--csv] [--include-demo]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

from cds_service.config import ConfigError, Settings

PACKAGE_DATA = Path(__file__).resolve().parent / "data"

SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"

# What ``make run`` means by "embedded defaults": only variables that are not set are filled in.
DEVELOPMENT_DEFAULTS = {
    "PTSD_CDS_ENV": "development",
    "PTSD_CDS_AUTH": "off",
    # When authentication is switched on in development, the CDS Hooks sandbox is trusted.
    "PTSD_CDS_TRUSTED_ISSUERS": str(PACKAGE_DATA / "dev-trusted-issuers.json"),
    "PTSD_CDS_DATABASE": "var/ptsd-cds.sqlite3",
    "PTSD_CDS_LOG_LEVEL": "INFO",
    "PTSD_CDS_DEMO": "on",  # the /demo page (cds_service/web); refused while auth is required
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ptsd-cds", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service under gunicorn")
    serve.add_argument("--dev", action="store_true", help="development defaults (what `make run` uses)")
    serve.add_argument("--bind", default=os.environ.get("PTSD_CDS_BIND", "127.0.0.1:8080"))
    serve.add_argument("--workers", type=int, default=int(os.environ.get("PTSD_CDS_WORKERS", "2")))

    sub.add_parser("check-config", help="validate the PTSD_CDS_* settings and exit")
    sub.add_parser("purge", help="delete expired replay entries and snoozes, feedback and issued-card "
                                 "records older than PTSD_CDS_FEEDBACK_RETENTION_DAYS")

    evaluate = sub.add_parser("evaluate", help="print the cards for a hook request, without a server")
    evaluate.add_argument("request", type=Path, help="a CDS Hooks request (JSON file, or - for stdin)")
    evaluate.add_argument("--today", type=date.fromisoformat, help="evaluate as of this date")
    evaluate.add_argument("--strict", action="store_true",
                          help="also validate the whole record with a strict FHIR R4 reader (fhir.resources) "
                               "and report, on stderr, every resource it would reject (exit 3 if any)")

    report = sub.add_parser("feedback-report", help="card acceptance and override figures (as /feedback)")
    report.add_argument("--csv", action="store_true", help="CSV instead of text tables")
    report.add_argument("--include-demo", action="store_true", help="include the demo page's feedback and cards")

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "check-config":
            return _check_config()
        if args.command == "purge":
            return _purge()
        if args.command == "feedback-report":
            from cds_service.web.report import run_report  # owned by the pages (web/) code

            return run_report(args.csv, args.include_demo)
        return _evaluate(args)
    except ConfigError as exc:
        print(f"ptsd-cds: configuration error: {exc}", file=sys.stderr)
        return 2


def _issuer_lines(settings: Settings) -> list[str]:
    """Trusted issuers as the authenticator sees them (also validates the file and its keys)."""
    if not settings.auth_required:
        return []
    from cds_service.auth.jwt_auth import JwtAuthenticator
    from cds_service.store import Store

    return JwtAuthenticator(settings, Store(":memory:")).describe()


def _banner(settings: Settings, bind: str, issuers: list[str] | None = None) -> str:
    lines = [f"ptsd-cds {_version()} on http://{bind}  (discovery: http://{bind}/cds-services)"]
    if settings.development:
        lines.append("DEVELOPMENT SETTINGS - not for patient data:")
    lines += ["  " + line for line in settings.describe()]
    if settings.auth_required:
        lines.append("Client authentication: REQUIRED (signed JWT from a trusted issuer on every call)")
        lines += ["  trusted: " + line for line in issuers or []]
        if any(SANDBOX_ISSUER in line for line in issuers or []):
            lines.append(f"!! Trusting the CDS Hooks sandbox ({SANDBOX_ISSUER}), whose private key is "
                         "public: DEVELOPMENT ONLY, never with real patient data !!")
        if not settings.public_url:
            lines.append("Note: PTSD_CDS_PUBLIC_URL is not set, so the JWT aud is checked against the Host "
                         "header of each call; set it to the external base URL in production (SECURITY.md)")
    else:
        lines.append("!! Client authentication: OFF (PTSD_CDS_AUTH=off) - any caller is accepted. "
                     "DEVELOPMENT AND TESTS ONLY. PTSD_CDS_AUTH=required make run verifies JWTs "
                     "(trusting the CDS Hooks sandbox) !!")
    return "\n".join(lines)


def _version() -> str:
    from cds_service import __version__

    return __version__


def _serve(args: argparse.Namespace) -> int:
    if args.dev:
        for key, value in DEVELOPMENT_DEFAULTS.items():
            os.environ.setdefault(key, value)
    settings = Settings.from_env()
    settings.validate()
    print(_banner(settings, args.bind, _issuer_lines(settings)), file=sys.stderr, flush=True)

    from gunicorn.app.base import BaseApplication

    proxy = _proxy_plan(settings)
    state: dict = {}

    def when_ready(server) -> None:  # gunicorn hook, in the arbiter once it listens
        if not proxy:
            return
        from cds_service import proxy as nginx

        upstreams = ["%s:%d" % lst.sock.getsockname()[:2] for lst in server.LISTENERS]
        run_dir = nginx.make_run_dir()
        conf = nginx.render(listen=args.bind, upstreams=upstreams, run_dir=run_dir, max_body=settings.max_body,
                            header_timeout=settings.request_header_timeout,
                            body_timeout=settings.request_body_timeout)
        try:
            state["nginx"] = nginx.NginxProxy(conf, run_dir, listen=args.bind)
            state["nginx"].start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print(f"ptsd-cds: nginx could not start: {exc}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        print(f"ptsd-cds: nginx on {args.bind} in front of gunicorn on {', '.join(upstreams)}",
              file=sys.stderr, flush=True)

    def on_exit(server) -> None:  # gunicorn hook: workers have drained their calls
        if "nginx" in state:
            state["nginx"].stop()
            shutil.rmtree(state["nginx"].run_dir, ignore_errors=True)

    class _Gunicorn(BaseApplication):
        def load_config(self) -> None:
            from cds_service import gunicorn_conf

            for name in dir(gunicorn_conf):
                if name in self.cfg.settings:
                    self.cfg.set(name, getattr(gunicorn_conf, name))
            # Behind nginx, gunicorn listens on a free loopback port (reported in when_ready).
            self.cfg.set("bind", ["127.0.0.1:0"] if proxy else [args.bind])
            self.cfg.set("workers", args.workers)
            self.cfg.set("when_ready", when_ready)
            self.cfg.set("on_exit", on_exit)

        def load(self):
            from cds_service import create_app

            return create_app()

    _Gunicorn().run()
    return 0


def _proxy_plan(settings: Settings) -> bool:
    """Whether ``serve`` puts nginx in front (ConfigError when it must and cannot)."""
    from cds_service.proxy import nginx_binary

    if settings.proxy == "off":
        print("ptsd-cds: PTSD_CDS_PROXY=off - gunicorn faces clients directly; slow clients can hold its "
              "threads. Only behind another buffering reverse proxy (docs/RELIABILITY.md).", file=sys.stderr)
        return False
    if nginx_binary():
        return True
    if settings.proxy == "nginx" or not settings.development:
        raise ConfigError("PTSD_CDS_PROXY: nginx is not installed; install it (the image has it) or set "
                          "PTSD_CDS_PROXY=off behind another buffering reverse proxy")
    print("ptsd-cds: nginx not installed - development run without the proxy (slow clients can hold "
          "gunicorn threads; docs/RELIABILITY.md)", file=sys.stderr)
    return False


def _check_config() -> int:
    settings = Settings.from_env()
    settings.validate()
    for line in _issuer_lines(settings):  # loads and checks the trusted issuers and their keys
        print("trusted issuer: " + line)
    from cds_service.engine import Engine
    from cds_service.patient_data.outbound import OutboundPolicy

    OutboundPolicy(settings)  # checks PTSD_CDS_FHIR_SERVERS
    Engine(settings)  # loads and checks card content and terminology
    print("configuration OK")
    for line in settings.describe():
        print("  " + line)
    return _check_store(settings)


def _check_store(settings: Settings) -> int:
    """With PostgreSQL, say whether the database answers (nothing is created or changed)."""
    from cds_service.store import is_postgres_url

    if not is_postgres_url(settings.database):
        return 0
    import psycopg

    from cds_service.config import redact_url

    where = redact_url(settings.database)
    try:
        with psycopg.connect(settings.database, connect_timeout=3) as conn:
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone() \
                if conn.execute("SELECT to_regclass('schema_version')").fetchone()[0] else None
    except psycopg.Error as exc:
        print(f"store: PostgreSQL at {where} NOT reachable ({type(exc).__name__}); hook calls would be "
              "served with the host-local replay cache and feedback would answer 503")
        return 1
    version = row[0] if row else None
    print(f"store: PostgreSQL at {where} reachable; schema version {version or 'none yet (created at start)'}")
    return 0


def _purge() -> int:
    """One purge run against the configured store (cron it daily; safe on every instance at once)."""
    import time

    from cds_service.store import StoreUnavailable, open_store

    settings = Settings.from_env()
    settings.validate()
    try:
        store = open_store(settings)
        try:
            counts = store.purge(time.time())
        finally:
            store.close()
    except StoreUnavailable as exc:
        print(f"ptsd-cds: purge failed, the store is unavailable: {exc}", file=sys.stderr)
        return 1
    print("purged: " + ", ".join(f"{name}={count}" for name, count in counts.items()))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from cds_service.engine import Engine
    from cds_service.errors import ApiError
    from cds_service.patient_data.gather import gather_record
    from cds_service.patient_data.outbound import OutboundPolicy
    from cds_service.schemas.request import CONTEXT_SCHEMAS, HookRequestSchema, flatten_errors
    from marshmallow import ValidationError

    from cds_service.auth import ANONYMOUS

    raw = sys.stdin.read() if str(args.request) == "-" else args.request.read_text(encoding="utf-8")
    try:
        body = json.loads(raw)
        data = HookRequestSchema().load(body)
        data["context"] = CONTEXT_SCHEMAS[data["hook"]]().load(data["context"])
    except (ValueError, KeyError, ValidationError) as exc:
        detail = flatten_errors(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        print(f"ptsd-cds: not a valid CDS Hooks request: {detail}", file=sys.stderr)
        return 1
    overrides = {"auth": "off"} if "PTSD_CDS_AUTH" not in os.environ else {}
    settings = Settings.from_env().with_overrides(overrides)
    try:
        policy = OutboundPolicy(settings)
        record = gather_record(data, identity=ANONYMOUS, settings=settings, policy=policy,
                               session_factory=policy.new_session)
    except ApiError as exc:  # 412 data unavailable, 400 fhirServer refused
        print(f"ptsd-cds: {exc.message}", file=sys.stderr)
        return 1
    today = args.today or settings.today or date.today()
    cards = Engine(settings).evaluate(data["hook"], record, today)
    json.dump({"cards": cards}, sys.stdout, indent=2, ensure_ascii=False)
    print()
    if args.strict:
        return 3 if _strict_report(record) else 0
    return 0


def _strict_report(record) -> int:
    """Print what a strict FHIR R4B reader would reject in the record (element paths and error
    kinds, never values); return how many resources it would reject. The service itself reads
    leniently (element by element), so the cards above stand either way."""
    from cds_service.facts import strict_problems

    resources = ([record.patient] if record.patient else []) + record.conditions + \
        record.medication_requests + record.procedures + list(record.medications.values()) + record.draft_orders
    rejected = 0
    for resource in resources:
        problems = strict_problems(resource)
        if problems:
            rejected += 1
            rtype = resource.get("resourceType") if isinstance(resource, dict) else "?"
            rid = resource.get("id") if isinstance(resource, dict) else None
            shown = ", ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
            print(f"strict: {rtype}/{rid if isinstance(rid, str) else '?'}: {shown}", file=sys.stderr)
    print(f"strict FHIR R4 check: {rejected} of {len(resources)} resources would be rejected by a strict "
          "reader (the service read them element by element)", file=sys.stderr)
    return rejected


if __name__ == "__main__":
    raise SystemExit(main())
