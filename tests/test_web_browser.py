"""Browser tests in real Chromium (Debian's ``chromium``, driven by pip ``playwright``).

The demo page is served on one origin (``http://demo.test:P1``) and the CDS service on another
(``http://cds.test:P2``), two real HTTP servers on 127.0.0.1 sharing one database; Chromium maps
the two names to 127.0.0.1 with ``--host-resolver-rules`` and resolves nothing else, so CORS is
exercised for real (preflights included) and no outside host is reached. The service allows
exactly the demo origin.

Steps: the demo fires patient-view, order-select and order-sign; a benzodiazepine order shows the
critical card; taking its suggestion removes the order; dismissing sends feedback that the
dashboard counts (demo data only with the toggle); the catalogue shows every card kind; axe-core
(from the PyPI package ``axe-playwright-python``) finds no serious or critical violation.
Screenshots of each step: ``test-artifacts/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from cds_service import create_app
from cds_service.rules import TOPICS

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
# A new benzodiazepine for the patient on lorazepam (a lorazepam renewal gets no removal: issue #8 point 1).
DIAZEPAM = "diazepam 5 MG Oral Tablet — 5 mg three times daily, Oral"



class Recorder:
    """WSGI middleware: what reached the service (method, path, Origin header)."""

    def __init__(self, app):
        self.app, self.calls, self._lock = app, [], threading.Lock()

    def __call__(self, environ, start_response):
        with self._lock:
            self.calls.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""),
                               environ.get("HTTP_ORIGIN"), environ.get("HTTP_X_PTSD_CDS_CLIENT")))
        return self.app(environ, start_response)


class Server:
    def __init__(self, app):
        self.httpd = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.httpd.server_port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """The service on cds.test and the demo page on demo.test (separate apps, one database)."""
    db = str(tmp_path_factory.mktemp("web") / "ptsd-cds.sqlite3")
    common = {"auth": "off", "database": db, "today": "2026-11-28", "demo": "on"}
    # Ports are known only once bound: bind the page server first, then the service.
    page_holder: dict = {}

    def page_app(environ, start_response):
        return page_holder["app"](environ, start_response)

    page_server = Server(page_app)
    demo_origin = f"http://demo.test:{page_server.port}"
    service = Recorder(create_app({**common, "cors_origins": demo_origin}))
    service_server = Server(service)
    cds_origin = f"http://cds.test:{service_server.port}"
    page_holder["app"] = create_app({**common, "demo_service_url": cds_origin})
    yield {"demo": demo_origin, "cds": cds_origin, "service": service}
    page_server.stop()
    service_server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--host-resolver-rules=MAP demo.test 127.0.0.1, MAP cds.test 127.0.0.1, MAP * ~NOTFOUND, "
            "EXCLUDE localhost",
        ])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.set_default_timeout(10_000)
    yield pg
    context.close()
    assert errors == [], errors  # no JavaScript error on any page


def shot(pg, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def assert_accessible(pg, name: str) -> None:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(pg)
    bad = [f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
           for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert bad == [], f"{name}: {bad}"


def card(pg, container: str, topic: str, indicator: str):
    return pg.locator(f"{container} article.card-{indicator}[data-topic='{topic}']")


def test_demo_fires_every_hook_and_feedback_reaches_the_dashboard(sites, page):
    pg = page
    pg.goto(f"{sites['demo']}/demo?patient=ptsd-benzo-therapy")
    # patient-view: the current lorazepam gives the warning card, and the next step is step 1
    warning = card(pg, "#pv-cards", "benzodiazepine-avoid", "warning")
    warning.wait_for()
    assert card(pg, "#pv-cards", "step-1-trauma-focused-psychotherapy", "info").count() == 1
    assert "ptsd-benzo-therapy" in pg.locator("h1").inner_text()
    assert "lorazepam 1 MG Oral Tablet" in pg.locator("section.chart").inner_text()
    warning.locator("summary").click()  # open the Markdown detail: rendered, with its sources
    assert warning.locator(".markdown strong").count() >= 1
    assert "VA/DoD" in warning.locator(".markdown").inner_text()
    shot(pg, "01-patient-view")
    assert_accessible(pg, "demo patient-view")

    # order-select: choose diazepam -> the critical card with a "remove the order" suggestion
    pg.select_option("#order-choice", label=DIAZEPAM)
    pg.click("#add-order")
    critical = card(pg, "#order-cards", "benzodiazepine-avoid", "critical")
    critical.wait_for()
    assert pg.locator("#draft-list li").count() == 1
    assert "diazepam" in critical.locator(".summary").inner_text().lower()
    shot(pg, "02-order-select-critical")
    assert_accessible(pg, "demo order-select card")

    # taking the suggestion applies its delete action: the draft order is gone; feedback accepted
    critical.locator("button.suggestion").first.click()
    critical.locator(".outcome").filter(has_text="feedback sent").wait_for()
    assert pg.locator("#draft-list li").count() == 0
    assert pg.locator("#no-drafts").is_visible()
    shot(pg, "03-suggestion-taken")

    # order again, then dismiss the card with an override reason (keyboard only)
    pg.select_option("#order-choice", label=DIAZEPAM)
    pg.click("#add-order")
    critical = card(pg, "#order-cards", "benzodiazepine-avoid", "critical")
    critical.wait_for()
    critical.locator("button.dismiss").focus()
    pg.keyboard.press("Enter")
    reason = critical.locator("select")
    assert reason.evaluate("el => el === document.activeElement")  # focus moved to the reason
    reason.select_option(label="Short-term use for a procedure")
    critical.locator("form button[type=submit]").focus()
    pg.keyboard.press("Enter")
    critical.locator(".outcome").filter(has_text="Dismissed").wait_for()
    shot(pg, "04-dismissed")

    # order-sign: the draft still there gives the critical card again; a second click signs
    pg.click("#sign-orders")
    card(pg, "#order-cards", "benzodiazepine-avoid", "critical").wait_for()
    pg.locator("#status").filter(has_text="order-sign: 1 card").wait_for()
    shot(pg, "05-order-sign")
    pg.click("#sign-orders")
    pg.locator("#signed-list li").filter(has_text="diazepam").wait_for()
    assert pg.locator("#draft-list li").count() == 0

    # every hook was called on the other origin, with CORS preflights and the demo header
    calls = sites["service"].calls
    posts = {path for method, path, origin, client in calls
             if method == "POST" and origin == sites["demo"] and client == "demo"}
    assert {"/cds-services/ptsd-patient-view", "/cds-services/ptsd-order-select",
            "/cds-services/ptsd-order-sign", "/cds-services/ptsd-order-select/feedback"} <= posts
    assert any(m == "OPTIONS" and origin == sites["demo"] for m, _p, origin, _c in calls)

    # the dashboard counts the demo's feedback only when asked to
    pg.goto(f"{sites['cds']}/feedback?include_demo=1")
    row = pg.locator("#kinds-table tr[data-topic='benzodiazepine-avoid']")
    assert row.locator(".accepted").inner_text() == "1"
    assert row.locator(".overridden").inner_text() == "1"
    assert int(row.locator(".issued").inner_text()) >= 3
    reason_row = pg.locator("#reasons-table tr[data-topic='benzodiazepine-avoid'][data-reason='procedural-short-term']")
    assert reason_row.locator(".count").inner_text() == "1"
    shot(pg, "06-dashboard-with-demo")
    assert_accessible(pg, "feedback dashboard")
    pg.goto(f"{sites['cds']}/feedback")
    assert pg.locator("#kinds-table tr[data-topic='benzodiazepine-avoid']").count() == 0
    assert not pg.locator("#include_demo").is_checked()
    pg.locator("label[for=include_demo]").click()  # the toggle, by its label
    pg.locator("form.toggle button").click()
    pg.locator("#kinds-table tr[data-topic='benzodiazepine-avoid']").wait_for()


def test_catalogue_shows_every_card_kind(sites, page):
    pg = page
    pg.goto(f"{sites['demo']}/cards")
    for topic in TOPICS:
        kind = pg.locator(f"article.kind#{topic}")
        assert kind.count() == 1, topic
        assert kind.locator(".fires-when").inner_text().strip(), topic
        assert kind.locator("table.citations tbody tr").count() >= 1, topic
    shot(pg, "07-catalogue")
    assert_accessible(pg, "card catalogue")
    pg.click("article.kind#benzodiazepine-avoid h2 a")
    pg.wait_for_url("**/cards/benzodiazepine-avoid")
    assert pg.locator("h1").inner_text() == "Benzodiazepines: recommended against in PTSD"
    assert pg.locator("ul.reasons li").count() == 4
    pg.emulate_media(media="print")
    assert pg.locator("header.site").is_hidden()  # print CSS: no navigation on paper
    shot(pg, "08-card-page-print")


def test_demo_says_clearly_when_the_service_requires_authentication(tmp_path, browser):
    """A demo page pointed at a service that requires JWTs shows why nothing can be called."""
    issuers = Path(__file__).resolve().parent.parent / "cds_service" / "data" / "dev-trusted-issuers.json"
    db = str(tmp_path / "ptsd-cds.sqlite3")
    holder: dict = {}
    page_server = Server(lambda environ, start_response: holder["app"](environ, start_response))
    demo_origin = f"http://demo.test:{page_server.port}"
    service_server = Server(create_app({"auth": "required", "trusted_issuers": str(issuers), "database": db,
                                        "cors_origins": demo_origin}))
    holder["app"] = create_app({"auth": "off", "database": db, "demo": "on",
                                "demo_service_url": f"http://cds.test:{service_server.port}"})
    context = browser.new_context()
    try:
        pg = context.new_page()
        pg.goto(f"{demo_origin}/demo?patient=ptsd-new")
        pg.locator("#status.error").filter(has_text="requires authentication").wait_for(timeout=10_000)
        assert "cannot sign JWTs" in pg.locator("#pv-cards").inner_text()
        shot(pg, "09-service-requires-auth")
    finally:
        context.close()
        page_server.stop()
        service_server.stop()


def test_every_fixture_patient_opens_with_the_services_cards(sites, page):
    """Each chart renders exactly the patient-view cards the service gives for that patient."""
    import json

    from cds_service.web import demo

    service_client = create_app({"auth": "off", "database": ":memory:", "today": "2026-11-28"}).test_client()
    for patient in demo.list_patients():
        request = json.loads((Path(__file__).resolve().parent.parent / "fixtures" / "requests"
                              / f"{patient.id}.patient-view.json").read_text())
        expected = [(c["source"]["topic"]["code"], c["indicator"]) for c in
                    service_client.post("/cds-services/ptsd-patient-view", json=request).get_json()["cards"]]
        page.goto(f"{sites['demo']}/demo?patient={patient.id}")
        page.locator("#status").filter(has_text="patient-view:").wait_for()
        shown = page.locator("#pv-cards article.card").evaluate_all(
            "els => els.map(e => [e.dataset.topic, e.className.match(/card-(info|warning|critical)/)[1]])")
        assert [tuple(x) for x in shown] == expected, patient.id
        if not expected:
            assert "No cards" in page.locator("#pv-cards").inner_text()
