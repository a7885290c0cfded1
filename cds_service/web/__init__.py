"""Pages for people: the EHR-like demo, the card catalogue and the feedback dashboard.

A Flask blueprint (``bp``), registered by ``create_app``. Jinja templates in ``templates/``,
static files in ``static/`` (served at ``/web-static/``; the browser libraries are vendored in
``static/vendor/`` with their licences: no CDN, no build step).

* ``GET /`` — to ``/demo`` when the demo is on (and auth off), else a landing page.
* ``GET /demo`` — an EHR-like page calling the service's own HTTP API from the browser
  (``PTSD_CDS_DEMO=on`` only; refused while ``PTSD_CDS_AUTH=required``: it cannot sign JWTs).
  ``PTSD_CDS_DEMO_SERVICE_URL`` points it at a service on another origin (CORS).
* ``GET /cards``, ``GET /cards/<code>`` — the card catalogue (``catalogue.py``).
* ``GET /feedback[?include_demo=1]`` — acceptance / override rates (``stats.py``, ``charts.py``).

Demo tagging: a call carrying ``X-PTSD-CDS-Client: demo`` sets ``flask.g.demo_client = True``,
only while the demo is on (and auth is off); the store tags the feedback and issued cards of
those calls, and the dashboard leaves them out unless asked.
"""

from __future__ import annotations

import json
import logging
from datetime import date

from flask import Blueprint, Response, current_app, g, redirect, render_template, request, url_for
from markupsafe import Markup

from cds_service.web import charts, demo
from cds_service.web.catalogue import catalogue
from cds_service.web.stats import collect, percent

log = logging.getLogger("ptsd_cds.web")

DEMO_HEADER = "X-PTSD-CDS-Client"
DEMO_VALUE = "demo"

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
               static_url_path="/web-static")


def _components():
    return current_app.extensions["ptsd_cds"]


def _settings():
    return _components().settings


def demo_enabled(settings) -> bool:
    return settings.demo == "on"


@bp.before_app_request
def _tag_demo_client() -> None:
    """``g.demo_client``: this call comes from the demo page (only while the demo is on)."""
    settings = _settings()
    g.demo_client = (demo_enabled(settings) and not settings.auth_required
                     and request.headers.get(DEMO_HEADER, "").strip().lower() == DEMO_VALUE)


def _csp(connect: str = "") -> str:
    extra = f" {connect}" if connect else ""
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self'{extra}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


@bp.after_request
def _page_headers(resp: Response) -> Response:
    # The app's default CSP is "default-src 'none'" (JSON API); pages need their own files.
    if resp.mimetype == "text/html" or request.endpoint == "web.static":
        resp.headers["Content-Security-Policy"] = _csp(g.get("connect_src", ""))
    if request.endpoint == "web.static":
        resp.headers["Cache-Control"] = "public, max-age=300"
    return resp


def _page(template: str, status: int = 200, **context) -> tuple[str, int]:
    settings = _settings()
    return render_template(template, demo_on=demo_enabled(settings), **context), status


# --- pages ------------------------------------------------------------------------------------
@bp.get("/")
def index():
    settings = _settings()
    if demo_enabled(settings) and not settings.auth_required:
        return redirect(url_for("web.demo_page"))
    return _page("landing.html", auth_required=settings.auth_required)


@bp.get("/demo")
def demo_page():
    settings = _settings()
    if not demo_enabled(settings):
        return _page("message.html", 404, title="The demo is off",
                     message="This service runs without its demo page. It is on under `make run`; "
                             "elsewhere set PTSD_CDS_DEMO=on (development only).")
    if settings.auth_required:
        return _page("message.html", 403, title="The demo cannot run while authentication is required",
                     message="This service requires a signed JWT from a trusted EHR on every call "
                             "(PTSD_CDS_AUTH=required). The demo page cannot sign JWTs, so it is "
                             "refused. Run it with `make run` (authentication off, development only).")
    patients = demo.list_patients()
    if not patients:
        return _page("message.html", 503, title="No demo patients",
                     message="The fixture patients (fixtures/patients/*.json) are not on this machine.")
    chosen = demo.find_patient(request.args.get("patient", "")) or patients[0]
    service = (settings.demo_service_url or "").rstrip("/")
    g.connect_src = service
    config = {
        "serviceBase": service,  # "" = this origin
        "patientId": chosen.id,
        "userId": "Practitioner/demo-clinician",
        "today": (settings.today or date.today()).isoformat(),
        "prefetch": demo.prefetch(chosen.bundle),
        "orderMenu": demo.order_menu(),
        "cardsPage": url_for("web.cards_index"),
        "clientHeader": [DEMO_HEADER, DEMO_VALUE],
    }
    # JSON in a non-executed <script type="application/json">; "</" cannot close the element.
    data = Markup(json.dumps(config).replace("</", "<\\/"))
    return _page("demo.html", patients=patients, patient=chosen, summary=demo.patient_summary(chosen.bundle),
                 config=data, service=service or request.host_url.rstrip("/"))


@bp.get("/cards")
def cards_index():
    return _page("cards.html", kinds=_catalogue())


@bp.get("/cards/<code>")
def card_page(code: str):
    kind = next((k for k in _catalogue() if k["topic"] == code), None)
    if kind is None:
        return _page("message.html", 404, title="No such card kind",
                     message=f"There is no card kind with the code '{code[:64]}'. See the catalogue at /cards.")
    return _page("card.html", kind=kind)


@bp.get("/feedback")
def feedback_page():
    from cds_service.store import StoreUnavailable

    include_demo = request.args.get("include_demo") in ("1", "on", "true")
    library = _components().engine.cards
    titles = {t: c.title for t, c in library.cards.items()}
    reason_names = {code: display for c in library.cards.values() for code, display in c.override_reasons}
    try:
        summary = collect(_components().store, include_demo=include_demo, titles=titles,
                          reason_names=reason_names)
    except StoreUnavailable:
        log.warning("feedback dashboard: store unavailable")
        return _page("message.html", 503, title="Feedback figures unavailable",
                     message="The database cannot be reached right now; try again shortly.")
    reason_rows = [(f"{r['display']} ({r['topic']})", r["count"]) for r in summary.reasons]
    return _page(
        "feedback.html", summary=summary, include_demo=include_demo, percent=percent,
        chart_kinds=charts.stacked_rates(summary.kinds),
        chart_reasons=charts.bars(reason_rows, "Override reasons", "overridden", "reasons"),
        chart_weeks=charts.weekly(summary.weeks),
    )


def _catalogue() -> list[dict]:
    from cds_service.rules import TOPICS

    cache = current_app.extensions.setdefault("ptsd_cds_catalogue", {})
    if "kinds" not in cache:
        cache["kinds"] = catalogue(_components().engine.cards.cards, TOPICS)
    return cache["kinds"]
