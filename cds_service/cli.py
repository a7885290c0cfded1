"""``ptsd-cds``: serve the service, check its configuration, evaluate a hook request offline.

    ptsd-cds serve [--dev] [--bind HOST:PORT] [--workers N]
    ptsd-cds check-config
    ptsd-cds purge
    ptsd-cds evaluate REQUEST.json [--today YYYY-MM-DD]
    ptsd-cds feedback-report [--csv] [--include-demo]
    ptsd-cds healthcheck [--path /healthz]
    ptsd-cds --version

Every error is one line on stderr naming what is wrong (a setting, a file), never a traceback;
the exit status is 2 for configuration errors and 1 for a request that cannot be evaluated.
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

from cds_service import startup
from cds_service.config import ConfigError, Settings

PACKAGE_DATA = Path(__file__).resolve().parent / "data"

SANDBOX_ISSUER = startup.SANDBOX_ISSUER

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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: {message} (see {self.prog.split()[0]} --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="ptsd-cds", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"ptsd-cds {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the service under gunicorn")
    serve.add_argument("--dev", action="store_true", help="development defaults (what `make run` uses)")
    serve.add_argument("--bind", help="HOST:PORT (default PTSD_CDS_BIND, else 127.0.0.1:8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default PTSD_CDS_WORKERS, else 2)")

    sub.add_parser("check-config", help="validate the PTSD_CDS_* settings and exit")
    sub.add_parser("purge", help="delete expired replay entries and snoozes, feedback and issued-card "
                                 "records older than PTSD_CDS_FEEDBACK_RETENTION_DAYS")

    health = sub.add_parser("healthcheck", help="exit 0 if the service on PTSD_CDS_BIND answers /healthz "
                                                "(the image's HEALTHCHECK)")
    health.add_argument("--path", default="/healthz", choices=["/healthz", "/readyz"])
    health.add_argument("--timeout", type=float, default=2.0)

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
        if args.command == "healthcheck":
            return _healthcheck(args)
        return _evaluate(args)
    except ConfigError as exc:
        print(f"ptsd-cds: configuration error: {exc}", file=sys.stderr)
        return 2
    except startup.StartupError as exc:
        print(f"ptsd-cds: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line (the type and message), never a traceback
        print(f"ptsd-cds: unexpected error: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr)
        return 1


_issuer_lines = startup.issuer_lines


def _banner(settings: Settings, bind: str, issuers: list[str] | None = None) -> str:
    return "\n".join(startup.banner(settings, bind, issuers or []))


def _version() -> str:
    from cds_service import __version__

    return __version__


def _serve(args: argparse.Namespace) -> int:
    if args.dev:
        for key, value in DEVELOPMENT_DEFAULTS.items():
            os.environ.setdefault(key, value)
    if args.bind:
        os.environ["PTSD_CDS_BIND"] = args.bind
    if args.workers is not None:
        os.environ["PTSD_CDS_WORKERS"] = str(args.workers)
    # The same checks and banner as the image's own gunicorn start (gunicorn_hooks.on_starting,
    # which then sees they were done and stays quiet).
    print("\n".join(startup.run_checks()), file=sys.stderr, flush=True)
    settings, proc = startup.check_settings()
    bind = proc["bind"]

    from gunicorn.app.base import BaseApplication

    from cds_service import gunicorn_hooks

    proxy = _proxy_plan(settings)
    if proxy:
        # The workers see nginx's loopback address: the client's is the last X-Forwarded-For entry
        # (nginx appends it). One more hop only when the operator says so.
        os.environ.setdefault("PTSD_CDS_FORWARDED_HOPS", "1")
    state: dict = {}

    def when_ready(server) -> None:  # gunicorn hook, in the arbiter once it listens
        gunicorn_hooks.when_ready(server)
        if not proxy:
            return
        from cds_service import proxy as nginx

        upstreams = ["%s:%d" % lst.sock.getsockname()[:2] for lst in server.LISTENERS]
        run_dir = nginx.make_run_dir()
        conf = nginx.render(listen=bind, upstreams=upstreams, run_dir=run_dir, max_body=settings.max_body,
                            header_timeout=settings.request_header_timeout,
                            body_timeout=settings.request_body_timeout)
        try:
            state["nginx"] = nginx.NginxProxy(conf, run_dir, listen=bind)
            state["nginx"].start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print(f"ptsd-cds: nginx could not start: {exc}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        print(f"ptsd-cds: nginx on {bind} in front of gunicorn on {', '.join(upstreams)}",
              file=sys.stderr, flush=True)

    def on_exit(server) -> None:  # gunicorn hook: workers have drained their calls
        if "nginx" in state:
            state["nginx"].stop()
            shutil.rmtree(state["nginx"].run_dir, ignore_errors=True)
        gunicorn_hooks.on_exit(server)

    class _Gunicorn(BaseApplication):
        def load_config(self) -> None:
            from cds_service import gunicorn_conf

            for name in dir(gunicorn_conf):
                if name in self.cfg.settings:
                    self.cfg.set(name, getattr(gunicorn_conf, name))
            # Behind nginx, gunicorn listens on a free loopback port (reported in when_ready).
            self.cfg.set("bind", ["127.0.0.1:0"] if proxy else [bind])
            self.cfg.set("workers", proc["workers"])
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


def healthcheck_url(bind: str, path: str = "/healthz") -> str:
    """The URL a local probe uses for PTSD_CDS_BIND (a wildcard address is probed on loopback)."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def _healthcheck(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    bind = startup.check_settings()[1]["bind"] if "PTSD_CDS_BIND" in os.environ else "127.0.0.1:8080"
    if bind.startswith("unix:"):
        print("ptsd-cds: healthcheck needs a TCP PTSD_CDS_BIND, not a unix socket", file=sys.stderr)
        return 1
    url = healthcheck_url(bind.split(",")[0], args.path)
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:  # noqa: S310 - our own loopback URL
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        print(f"ptsd-cds: {url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"ptsd-cds: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


def _check_config() -> int:
    settings, _ = startup.check_settings()
    for line in startup.check_content(settings):  # trusted issuers and keys, card content, FHIR servers
        print("trusted issuer: " + line)
    from cds_service.engine import Engine

    Engine(settings)  # loads and checks card content and terminology
    for line in startup.warnings(settings):
        print(line, file=sys.stderr)
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

    try:
        raw = sys.stdin.read() if str(args.request) == "-" else args.request.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"ptsd-cds: cannot read {args.request}: {exc.strerror or type(exc).__name__}", file=sys.stderr)
        return 1
    except UnicodeDecodeError:
        print(f"ptsd-cds: {args.request} is not UTF-8 text", file=sys.stderr)
        return 1
    try:
        body = json.loads(raw)
        data = HookRequestSchema().load(body)
        data["context"] = CONTEXT_SCHEMAS[data["hook"]]().load(data["context"])
    except (ValueError, KeyError, ValidationError) as exc:
        detail = flatten_errors(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        print(f"ptsd-cds: not a valid CDS Hooks request: {detail}", file=sys.stderr)
        return 1
    # Offline: no client to authenticate, so authentication is off unless PTSD_CDS_AUTH says otherwise.
    settings = Settings.from_env({**os.environ, "PTSD_CDS_AUTH": os.environ.get("PTSD_CDS_AUTH", "off")})
    from cds_service.card_content import CardContentError

    try:
        engine = Engine(settings)
    except CardContentError as exc:
        raise startup.StartupError(f"card content error (PTSD_CDS_CARDS_DIR={settings.cards_dir}): "
                                   f"{str(exc).splitlines()[0]}") from None
    try:
        policy = OutboundPolicy(settings)
        record = gather_record(data, identity=ANONYMOUS, settings=settings, policy=policy,
                               session_factory=policy.new_session)
    except ApiError as exc:  # 412 data unavailable, 400 fhirServer refused
        print(f"ptsd-cds: {exc.message}", file=sys.stderr)
        return 1
    today = args.today or settings.today or date.today()
    cards = engine.evaluate(data["hook"], record, today, catalogue_base=settings.public_url)
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
    from cds_service.patient_data.record import as_json

    resources = ([record.patient] if record.patient else []) + record.conditions + \
        record.medication_requests + record.procedures + list(record.medications.values()) + record.draft_orders
    resources = [as_json(r) for r in resources]
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
