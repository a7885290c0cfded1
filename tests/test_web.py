"""The pages for people (cds_service/web) through Flask's test client: settings, demo data,
catalogue, feedback figures and the ``feedback-report`` command. Browser behaviour (the demo's
JavaScript, CORS, accessibility) is in test_web_browser.py."""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cds_service.cli import DEVELOPMENT_DEFAULTS, main as cli_main
from cds_service.config import ConfigError, Settings
from cds_service.rules import TOPICS
from cds_service.rules.knowledge import GUIDELINE
from cds_service.web import demo
from cds_service.web.catalogue import header_comment
from cds_service.web.stats import csv_report, summarise, text_report

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = ROOT / "fixtures" / "requests"


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data):
        self.parts.append(data)


def text_of(html: str) -> str:
    p = _Text()
    p.feed(html)
    return " ".join(" ".join(p.parts).split())


def feedback_item(card_uuid, outcome, reason=None, suggestion=None):
    item = {"card": card_uuid, "outcome": outcome, "outcomeTimestamp": "2026-11-28T10:00:00Z"}
    if reason:
        item["overrideReason"] = {"reason": {"code": reason, "system": "https://ptsd-cds.example.org/override-reason"}}
    if suggestion:
        item["acceptedSuggestions"] = [{"id": suggestion}]
    return item


def hook_call(client, name, headers=None):
    body = json.loads((REQUESTS / name).read_text())
    service = {"patient-view": "ptsd-patient-view", "order-select": "ptsd-order-select",
               "order-sign": "ptsd-order-sign"}[body["hook"]]
    resp = client.post(f"/cds-services/{service}", json=body, headers=headers or {})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return service, resp.get_json()["cards"]


# --- settings ---------------------------------------------------------------------------------
def test_demo_settings_are_validated():
    with pytest.raises(ConfigError, match="PTSD_CDS_DEMO"):
        Settings(auth="off", demo="yes").validate()
    with pytest.raises(ConfigError, match="PTSD_CDS_DEMO_SERVICE_URL"):
        Settings(auth="off", demo="on", demo_service_url="http://cds.example/path").validate()
    assert Settings.from_env({"PTSD_CDS_AUTH": "off", "PTSD_CDS_DEMO": "on",
                              "PTSD_CDS_DEMO_SERVICE_URL": "http://127.0.0.1:9000"}).demo == "on"
    assert Settings().demo == "off"  # off unless enabled
    assert DEVELOPMENT_DEFAULTS["PTSD_CDS_DEMO"] == "on"  # on under `make run`


# --- / and /demo ------------------------------------------------------------------------------
def test_root_leads_to_the_demo_or_a_landing_page(make_app):
    on = make_app(demo="on").test_client()
    resp = on.get("/")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/demo")
    off = make_app().test_client()
    resp = off.get("/")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    page = text_of(resp.get_data(as_text=True))
    assert "Card catalogue" in page and "PTSD_CDS_DEMO=on" in page
    resp = off.get("/demo")
    assert resp.status_code == 404 and "The demo is off" in text_of(resp.get_data(as_text=True))


def test_demo_is_refused_while_auth_is_required(make_app):
    issuers = ROOT / "cds_service" / "data" / "dev-trusted-issuers.json"
    client = make_app(demo="on", auth="required", trusted_issuers=str(issuers)).test_client()
    resp = client.get("/demo")
    assert resp.status_code == 403
    assert "cannot sign JWTs" in text_of(resp.get_data(as_text=True))
    resp = client.get("/")  # the landing page, which says why, not a redirect to a refusal
    assert resp.status_code == 200 and "cannot sign them" in text_of(resp.get_data(as_text=True))


def test_demo_page_embeds_the_patient_and_allows_only_its_service_origin(make_app):
    client = make_app(demo="on", demo_service_url="http://cds.test:9999").test_client()
    resp = client.get("/demo?patient=ptsd-ssri-failed-nightmares")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    csp = resp.headers["Content-Security-Policy"]
    assert "connect-src 'self' http://cds.test:9999;" in csp and "script-src 'self';" in csp
    config = json.loads(re.search(r'id="demo-config">(.*?)</script>', html, re.S).group(1))
    assert config["serviceBase"] == "http://cds.test:9999"
    assert config["patientId"] == "ptsd-ssri-failed-nightmares"
    page = text_of(html)
    assert "Nightmare disorder" in page and "sertraline 100 MG Oral Tablet" in page
    assert "Prolonged exposure therapy session CPT 90837 12 2024-03-03 2024-05-19" in page
    # an unknown patient id falls back to the first fixture patient, never to a path
    resp = client.get("/demo?patient=../../etc/passwd")
    assert resp.status_code == 200 and demo.list_patients()[0].id in resp.get_data(as_text=True)


def test_prefetch_holds_the_same_resources_as_the_fixture_requests():
    for patient in demo.list_patients():
        request = json.loads((REQUESTS / f"{patient.id}.patient-view.json").read_text())
        mine = demo.prefetch(patient.bundle)
        assert mine["patient"] == request["prefetch"]["patient"], patient.id
        for key in ("conditions", "medications", "procedures"):
            assert [e["resource"] for e in mine[key]["entry"]] == \
                   [e["resource"] for e in request["prefetch"][key]["entry"]], (patient.id, key)


def test_ordering_a_menu_medication_gets_the_services_cards(client):
    """What the demo sends for a chosen medication is a valid order-select request."""
    menu = {o["label"]: o["resource"] for o in demo.order_menu()}
    assert any("lorazepam" in label for label in menu) and any("MDMA" in label for label in menu)
    patient = demo.find_patient("ptsd-new")
    draft = dict(menu["lorazepam 1 MG Oral Tablet — 1 mg twice daily, Oral"], id="draft-1",
                 subject={"reference": "Patient/ptsd-new"}, authoredOn="2026-11-28")
    body = {"hook": "order-select", "hookInstance": "4f0f8c3e-1111-4a3b-9c1d-2b3c4d5e6f70",
            "context": {"userId": "Practitioner/demo-clinician", "patientId": "ptsd-new",
                        "draftOrders": {"resourceType": "Bundle", "type": "collection",
                                        "entry": [{"resource": draft}]},
                        "selections": ["MedicationRequest/draft-1"]},
            "prefetch": demo.prefetch(patient.bundle)}
    cards = client.post("/cds-services/ptsd-order-select", json=body).get_json()["cards"]
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards] == [("benzodiazepine-avoid", "critical")]
    delete = cards[0]["suggestions"][0]["actions"][0]
    assert delete == {**delete, "type": "delete", "resourceId": "MedicationRequest/draft-1"}


def test_demo_header_tags_calls_only_while_the_demo_is_on(make_app):
    seen = []
    for demo_setting in ("on", "off"):
        app = make_app(demo=demo_setting)

        @app.after_request
        def _capture(resp):
            from flask import g

            seen.append((demo_setting, g.get("demo_client")))
            return resp

        app.test_client().get("/cds-services", headers={"X-PTSD-CDS-Client": "demo"})
        app.test_client().get("/cds-services")
    assert seen == [("on", True), ("on", False), ("off", False), ("off", False)]


def test_cors_preflight_allows_the_demo_header(make_app):
    client = make_app(cors_origins="http://demo.test:1").test_client()
    resp = client.options("/cds-services/ptsd-order-select", headers={
        "Origin": "http://demo.test:1", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-ptsd-cds-client"})
    assert resp.headers["Access-Control-Allow-Origin"] == "http://demo.test:1"
    assert "x-ptsd-cds-client" in resp.headers["Access-Control-Allow-Headers"].lower()


# --- /cards -----------------------------------------------------------------------------------
def test_catalogue_lists_every_card_kind_with_its_content(client, app):
    resp = client.get("/cards")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    library = app.extensions["ptsd_cds"].engine.cards.cards
    assert sorted(re.findall(r'<article class="kind" id="([^"]+)"', html)) == sorted(TOPICS)
    page = text_of(html)
    for topic, card in library.items():
        assert card.title in page
        for reason_code, display in card.override_reasons:
            assert display in page
        for citation in card.citations.values():
            assert citation.statement in page
            if citation.strength:
                assert citation.strength in page
    # raw placeholders are shown as names, not filled
    assert '<span class="placeholder">{drug}</span>' in html


def test_card_page_says_when_it_fires_from_the_rules_data(client, app):
    page = text_of(client.get("/cards/step-4-venlafaxine").get_data(as_text=True))
    comment = header_comment(ROOT / "cards" / "step-4-venlafaxine.toml")
    assert comment and comment in page
    position = GUIDELINE.next_step_order.index("step-4-venlafaxine")
    assert f"Step {position + 1} of {len(GUIDELINE.next_step_order)} in the next-step ladder" in page
    cards = app.extensions["ptsd_cds"].engine.cards.cards
    before = "; ".join(cards[t].title for t in GUIDELINE.next_step_order[:position])
    assert f"shown only when none of these applies first: {before}." in page
    dose = text_of(client.get("/cards/dose-out-of-range").get_data(as_text=True))
    for r in GUIDELINE.dose_ranges.values():
        low = f"{r.min_mg:g}" if r.min_mg is not None else "—"
        high = f"{r.max_mg:g}" + (f" (men: {r.max_mg_male:g})" if r.max_mg_male else "")
        assert f"{r.ingredient} {low} {high}" in dose
    nightmares = text_of(client.get("/cards/step-3-nightmares").get_data(as_text=True))
    assert "independent step" in nightmares
    resp = client.get("/cards/no-such-card")
    assert resp.status_code == 404 and "No such card kind" in text_of(resp.get_data(as_text=True))


def test_card_markdown_is_rendered_without_raw_html(client):
    html = client.get("/cards/benzodiazepine-avoid").get_data(as_text=True)
    assert "<strong>" in html  # card paragraphs use **bold**
    assert "<script" not in html.split("</header>", 1)[1]


# --- /feedback and the report -----------------------------------------------------------------
def test_summarise_counts_rates_reasons_and_weeks():
    feedback = [
        {"topic": "benzodiazepine-avoid", "service": "s", "week": "2026-W48", "outcome": "accepted", "reason": None, "count": 2},
        {"topic": "benzodiazepine-avoid", "service": "s", "week": "2026-W48", "outcome": "overridden",
         "reason": "taper-in-progress", "count": 1},
        {"topic": None, "service": "s", "week": "2026-W49", "outcome": "overridden", "reason": None, "count": 1},
    ]
    issued = [{"topic": "benzodiazepine-avoid", "service": "s", "week": "2026-W48", "count": 4},
              {"topic": "step-2-ssri", "service": "s", "week": "2026-W49", "count": 3}]
    s = summarise(feedback, issued, titles={"benzodiazepine-avoid": "Benzo", "step-2-ssri": "SSRI"})
    by = {k.topic: k for k in s.kinds}
    assert (by["benzodiazepine-avoid"].issued, by["benzodiazepine-avoid"].accepted,
            by["benzodiazepine-avoid"].overridden) == (4, 2, 1)
    assert by["benzodiazepine-avoid"].acceptance_rate == 0.5 and by["benzodiazepine-avoid"].override_rate == 0.25
    assert by["step-2-ssri"].acceptance_rate == 0 and by["(unknown card)"].overridden == 1
    assert [(w.week, w.issued, w.accepted, w.overridden) for w in s.weeks] == [("2026-W48", 4, 2, 1), ("2026-W49", 3, 0, 1)]
    assert {(r["topic"], r["reason"], r["count"]) for r in s.reasons} == {
        ("benzodiazepine-avoid", "taper-in-progress", 1), ("(unknown card)", "(no reason given)", 1)}
    rows = list(csv.DictReader(io.StringIO(csv_report(s))))
    benzo = next(r for r in rows if r["table"] == "card_kind" and r["card_kind"] == "benzodiazepine-avoid")
    assert (benzo["issued"], benzo["accepted"], benzo["overridden"], benzo["acceptance_rate"]) == ("4", "2", "1", "0.5000")
    assert "benzodiazepine-avoid" in text_report(s) and "50%" in text_report(s)


def _row(html, topic):
    m = re.search(rf'<tr data-topic="{topic}">(.*?)</tr>', html, re.S)
    return re.findall(r'<td class="(issued|accepted|overridden)">(\d+)</td>', m.group(1)) if m else None


def test_dashboard_and_report_show_the_stores_figures(make_app, tmp_path, monkeypatch, capsys):
    """Seeded through the store's own interface: issued cards and feedback, EHR and demo."""
    from cds_service.store import IssuedCard

    db = str(tmp_path / "ptsd-cds.sqlite3")
    app = make_app(database=db)
    store = app.extensions["ptsd_cds"].store
    now = 1_795_000_000.0  # 2026-11-18 (ISO week 2026-W47)
    store.record_issued_cards([
        IssuedCard("u1", "benzodiazepine-avoid", "ptsd-order-select", "order-select", None, now),
        IssuedCard("u2", "benzodiazepine-avoid", "ptsd-order-select", "order-select", None, now),
        IssuedCard("u3", "step-2-ssri", "ptsd-patient-view", "patient-view", None, now),
        IssuedCard("d1", "benzodiazepine-avoid", "ptsd-order-select", "order-select", None, now, demo=True),
    ])
    store.save_feedback("ptsd-order-select", [feedback_item("u1", "overridden", reason="procedural-short-term")], None)
    store.save_feedback("ptsd-patient-view", [feedback_item("u3", "accepted", suggestion="s1")], None)
    store.save_feedback("ptsd-order-select", [feedback_item("d1", "accepted", suggestion="s2")], None, demo=True)
    client = app.test_client()

    html = client.get("/feedback").get_data(as_text=True)
    assert _row(html, "benzodiazepine-avoid") == [("issued", "2"), ("accepted", "0"), ("overridden", "1")]
    assert _row(html, "step-2-ssri") == [("issued", "1"), ("accepted", "1"), ("overridden", "0")]
    page = text_of(html)
    assert "Benzodiazepines: recommended against in PTSD 2 0 1 0% 50%" in page
    assert "Short-term use for a procedure procedural-short-term 1" in page
    assert '<svg xmlns="http://www.w3.org/2000/svg" role="img"' in html and "<desc" in html
    assert "Demo data is left out" in page
    html = client.get("/feedback?include_demo=1").get_data(as_text=True)
    assert _row(html, "benzodiazepine-avoid") == [("issued", "3"), ("accepted", "1"), ("overridden", "1")]

    monkeypatch.setenv("PTSD_CDS_DATABASE", db)
    assert cli_main(["feedback-report", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    benzo = next(r for r in rows if r["table"] == "card_kind" and r["card_kind"] == "benzodiazepine-avoid")
    assert (benzo["issued"], benzo["accepted"], benzo["overridden"], benzo["override_rate"]) == ("2", "0", "1", "0.5000")
    assert {"table": "override_reason", "card_kind": "benzodiazepine-avoid", "reason": "procedural-short-term",
            "count": "1"}.items() <= next(r for r in rows if r["table"] == "override_reason").items()
    assert cli_main(["feedback-report", "--include-demo"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"benzodiazepine-avoid\s+3\s+1\s+1\s+33%\s+33%", out), out


def test_demo_calls_are_tagged_through_the_http_path(make_app, tmp_path):
    """An EHR's call and feedback count by default; the demo's (X-PTSD-CDS-Client) only on request."""
    app = make_app(demo="on", database=str(tmp_path / "ptsd-cds.sqlite3"))
    client = app.test_client()
    # a new benzodiazepine (a renewal gets no removal suggestion: issue #8 point 1)
    service, cards = hook_call(client, "ptsd-new.sign-lorazepam-and-diazepam.json")
    resp = client.post(f"/cds-services/{service}/feedback", json={"feedback": [
        feedback_item(cards[0]["uuid"], "overridden", reason="procedural-short-term")]})
    assert resp.status_code == 200
    _, demo_cards = hook_call(client, "ptsd-new.sign-lorazepam-and-diazepam.json", {"X-PTSD-CDS-Client": "demo"})
    resp = client.post(f"/cds-services/{service}/feedback", headers={"X-PTSD-CDS-Client": "demo"}, json={
        "feedback": [feedback_item(demo_cards[0]["uuid"], "accepted", suggestion=demo_cards[0]["suggestions"][0]["uuid"])]})
    assert resp.status_code == 200
    html = client.get("/feedback").get_data(as_text=True)
    assert _row(html, "benzodiazepine-avoid") == [("issued", "1"), ("accepted", "0"), ("overridden", "1")]
    html = client.get("/feedback?include_demo=1").get_data(as_text=True)
    assert _row(html, "benzodiazepine-avoid") == [("issued", "2"), ("accepted", "1"), ("overridden", "1")]


def test_dashboard_says_so_when_the_store_is_unavailable(app, client, monkeypatch):
    from cds_service.store import StoreUnavailable

    def down(**_):
        raise StoreUnavailable("connection refused")

    monkeypatch.setattr(app.extensions["ptsd_cds"].store, "feedback_counts", down)
    resp = client.get("/feedback")
    assert resp.status_code == 503
    page = text_of(resp.get_data(as_text=True))
    assert "Feedback figures unavailable" in page and "connection refused" not in page
