"""``ptsd-cds``: serve the service, check its configuration, evaluate a hook request offline.

    ptsd-cds serve [--dev] [--bind HOST:PORT] [--workers N]
    ptsd-cds check-config
    ptsd-cds evaluate REQUEST.json [--today YYYY-MM-DD]
    ptsd-cds healthcheck [--path /healthz]
    ptsd-cds --version

Every error is one line on stderr naming what is wrong (a setting, a file), never a traceback;
the exit status is 2 for configuration errors and 1 for a request that cannot be evaluated.
"""

from __future__ import annotations

import argparse
import json
import os
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

    health = sub.add_parser("healthcheck", help="exit 0 if the service on PTSD_CDS_BIND answers /healthz "
                                                "(the image's HEALTHCHECK)")
    health.add_argument("--path", default="/healthz", choices=["/healthz", "/readyz"])
    health.add_argument("--timeout", type=float, default=2.0)

    evaluate = sub.add_parser("evaluate", help="print the cards for a hook request, without a server")
    evaluate.add_argument("request", type=Path, help="a CDS Hooks request (JSON file, or - for stdin)")
    evaluate.add_argument("--today", type=date.fromisoformat, help="evaluate as of this date")

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "check-config":
            return _check_config()
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
    proc = startup.check_settings()[1]

    from gunicorn.app.base import BaseApplication

    class _Gunicorn(BaseApplication):
        def load_config(self) -> None:
            from cds_service import gunicorn_conf

            for name in dir(gunicorn_conf):
                if name in self.cfg.settings:
                    self.cfg.set(name, getattr(gunicorn_conf, name))
            self.cfg.set("bind", [proc["bind"]])
            self.cfg.set("workers", proc["workers"])

        def load(self):
            from cds_service import create_app

            return create_app()

    _Gunicorn().run()
    return 0


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
    cards = engine.evaluate(data["hook"], record, today)
    json.dump({"cards": cards}, sys.stdout, indent=2, ensure_ascii=False)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
