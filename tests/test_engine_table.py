"""Every fixture request through the whole engine (facts -> rules -> cards): which cards, in order.

The table is the behaviour the fixtures were written to show (fixtures/README.md). Each rendered
card must also list, under "Why this card", the record facts that made it fire.
"""

from __future__ import annotations

import json
import re
from datetime import date

import pytest

from cds_service.config import REPO_ROOT, Settings
from cds_service.engine import Engine
from cds_service.patient_data.gather import gather_record
from cds_service.patient_data.outbound import OutboundPolicy
from cds_service.schemas.response import validate_response

TODAY = date(2026, 11, 28)
FIXTURES = REPO_ROOT / "fixtures"
REQUESTS = FIXTURES / "requests"
PATIENTS = FIXTURES / "patients"
SERVICE_IDS = {"patient-view": "ptsd-patient-view", "order-select": "ptsd-order-select",
               "order-sign": "ptsd-order-sign"}

BENZO, MDMA, DOSE = "benzodiazepine-avoid", "mdma-investigational", "dose-out-of-range"
NOT_CHECKED = "order-not-checked"
S1, S2, S3, S4, S5, S6 = ("step-1-trauma-focused-psychotherapy", "step-2-ssri", "step-3-nightmares",
                          "step-4-venlafaxine", "step-5-combine", "step-6-specialized-referral")

# fixture request -> [(topic, indicator), ...] in the order the engine must return them
TABLE: dict[str, list[tuple[str, str]]] = {
    # patient-view: the next-step ladder
    "ptsd-new.patient-view": [(S1, "info")],
    "ptsd-benzo-therapy.patient-view": [(BENZO, "warning"), (S1, "info")],
    # 10 CPT sessions, the last in 2025: a course of 12 stopped (issue #8 point 11; was step-2)
    "ptsd-therapy-done.patient-view": [(S1, "info")],  # + current midazolam injection: ignored
    "ptsd-ssri-underway.patient-view": [(S2, "info")],
    "ptsd-ssri-titration.patient-view": [(S2, "info")],  # a stopped titration step is not a failure
    "ptsd-ssri-renewals.patient-view": [(S4, "info")],  # 3 monthly orders = one adequate course
    "ptsd-ssri-failed-nightmares.patient-view": [(S4, "info"), (S3, "info")],
    "ptsd-not-combined.patient-view": [(S5, "info")],
    # 10 CPT sessions: a CPT course is 12 (issue #8 point 11; was step-6); nightmares, no IRT (issue #8)
    "ptsd-all-done.patient-view": [(S1, "info"), (S3, "info")],
    "ptsd-mdma.patient-view": [(MDMA, "warning"), (S1, "info")],
    "mdma-no-ptsd.patient-view": [(MDMA, "warning")],
    # psychotherapy courses (issue #8 point 11; details in tests/test_clinical_therapy.py)
    "ptsd-cpt-complete.patient-view": [(S2, "info")],  # 12 CPT: complete
    "ptsd-cpt-underway.patient-view": [(S1, "info")],  # 5 CPT, last 15 days ago: continue, no referral
    "ptsd-therapy-declined.patient-view": [(S2, "info")],  # declined psychotherapy: medication step
    "ptsd-duplicate-sessions.patient-view": [(S1, "info")],  # 8 EMDR records on 5 days + generic visits
    "ptsd-mixed-modalities.patient-view": [(S1, "info")],  # 5 PE + 5 CPT + 4 EMDR: none complete
    "ptsd-all-done-12.patient-view": [(S6, "info"), (S3, "info")],  # as ptsd-all-done with 12 CPT
    # patient-view: must stay silent
    "benzo-no-ptsd.patient-view": [],
    "ptsd-resolved.patient-view": [],
    "acute-stress.patient-view": [],
    "ptsd-status-unreadable.patient-view": [],  # PTSD of unknown status: absent for the steps
    "ptsd-teen.patient-view": [(S1, "info"), (S3, "info")],  # under 18: psychotherapy whatever the course
    "ptsd-deceased.patient-view": [],  # service rule: no cards for a deceased patient
    # first-line medication steps (issue #8 points 3, 5, 9, 10; details in test_clinical_steps.py)
    "ptsd-venlafaxine-failed.patient-view": [(S4, "info")],  # sertraline or paroxetine next
    "ptsd-sertraline-underdosed.patient-view": [(S2, "info")],  # under-dosed: titrate
    "ptsd-sertraline-at-maximum.patient-view": [(S2, "info")],  # continue and reassess
    "ptsd-paroxetine-not-tolerated.patient-view": [(S4, "info")],  # not tolerated = failed
    "ptsd-sertraline-stopped-early.patient-view": [(S2, "info")],  # 10 days, no reason: no trial
    "ptsd-fluoxetine-tried.patient-view": [(S2, "info")],  # fluoxetine is no first-line trial
    "ptsd-on-escitalopram.patient-view": [(S2, "info")],  # current antidepressant: no draft
    "ptsd-pregnant.patient-view": [(S2, "info")],  # current pregnancy: no draft
    "ptsd-pregnancy-past.patient-view": [(S2, "info")],  # onset over 10 months ago: drafts
    "ptsd-sertraline-quantity.patient-view": [(S4, "info")],  # supply from quantity: adequate
    "ptsd-switch-under-way.patient-view": [(S4, "info")],  # the switch to venlafaxine under way
    # order-select: only selected drafts count
    # a renewal at the current dose: a warning supporting the taper, no removal (issue #8 point 1)
    "ptsd-benzo-therapy.select-lorazepam": [(BENZO, "warning")],
    "ptsd-new.select-sertraline-with-unselected-lorazepam": [],
    "ptsd-new.select-paroxetine-10": [(DOSE, "warning")],
    "ptsd-new.select-midazolam-injection": [],
    "ptsd-new.select-mdma": [(MDMA, "critical")],
    "ptsd-ssri-failed-nightmares.select-venlafaxine-450": [(DOSE, "warning")],
    "benzo-no-ptsd.select-mdma": [(MDMA, "critical")],
    "acute-stress.select-lorazepam": [(BENZO, "warning")],  # no drug to prevent PTSD (issue #8 point 6)
    "ptsd-status-unreadable.select-lorazepam": [(BENZO, "warning")],  # unknown status: safe direction
    "ptsd-teen.select-venlafaxine-450": [(DOSE, "warning")],  # dose checks still apply under 18
    "ptsd-deceased.select-lorazepam": [],
    # order-sign: every draft counts
    "ptsd-new.sign-sertraline-300-and-prazosin-2": [(DOSE, "warning")],
    "ptsd-new.sign-lorazepam-and-diazepam": [(BENZO, "critical")],  # one card, one removal per order
    "ptsd-ssri-failed-nightmares.sign-prazosin-30": [(DOSE, "warning")],
    "ptsd-mdma.sign-mdma": [(MDMA, "critical")],
    "benzo-no-ptsd.sign-clonazepam": [],
    "ptsd-resolved.sign-alprazolam": [],
    "ptsd-new.sign-unreadable-drug": [(NOT_CHECKED, "warning")],  # never silence
    "ptsd-pregnant.sign-sertraline-300": [(DOSE, "warning")],  # no replacement drafted in pregnancy
}


def load(name: str) -> dict:
    return json.loads((REQUESTS / f"{name}.json").read_text())


def record_of(body: dict, settings: Settings):
    return gather_record(body, identity=None, settings=settings, policy=OutboundPolicy(settings))


def run(engine: Engine, settings: Settings, name: str):
    body = load(name)
    record = record_of(body, settings)
    return body, engine.findings(body["hook"], record, TODAY), engine.evaluate(body["hook"], record, TODAY)


def clinical_tables() -> dict[str, list[tuple[str, str]]]:
    """The scenario tables of the clinical branches' own test files (tests/test_clinical_*.py)."""
    import importlib

    tables: dict[str, list[tuple[str, str]]] = {}
    for path in sorted((REPO_ROOT / "tests").glob("test_clinical_*.py")):
        tables.update(getattr(importlib.import_module(f"tests.{path.stem}"), "TABLE", {}))  # vignettes: none
    return tables


def test_every_fixture_request_is_in_the_table():
    """Every fixture request is in this table or in a clinical table (``tests/test_clinical_*.py``,
    which may check the same request for other things: actions, flags, words)."""
    others = clinical_tables()
    assert {p.stem for p in REQUESTS.glob("*.json")} == set(TABLE) | set(others)


def test_every_card_kind_is_shown_by_some_fixture(engine):
    shown = {topic for rows in TABLE.values() for topic, _ in rows}
    assert shown == set(engine.cards.topics)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_fixture_gives_the_expected_cards(engine, settings, name):
    body, findings, cards = run(engine, settings, name)
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards] == TABLE[name]
    assert validate_response({"cards": cards}) == []
    # the same evaluation again: same cards in the same order (only the uuids differ)
    again = engine.evaluate(body["hook"], record_of(body, settings), TODAY)
    assert [(c["summary"], c["detail"]) for c in again] == [(c["summary"], c["detail"]) for c in cards]
    assert len({c["uuid"] for c in cards + again}) == 2 * len(cards)


@pytest.mark.parametrize("name", sorted(n for n, rows in TABLE.items() if rows))
def test_each_card_lists_the_record_facts_that_made_it_fire(engine, settings, name):
    """At most three facts, the most relevant first, then one "… and N more" line naming the rest
    (issue #8 point 15); a fact names the drug or condition, never a raw resource id."""
    _body, findings, cards = run(engine, settings, name)
    assert len(findings) == len(cards)
    for finding, card in zip(findings, cards):
        why = card["detail"].split("### Why this card", 1)[1].split("### Sources", 1)[0]
        lines = [line for line in why.splitlines() if line.startswith("- ")]
        shown = [line for line in lines if not line.startswith("- … and ")]
        more = [line for line in lines if line.startswith("- … and ")]
        assert 1 <= len(shown) <= 3 and len(more) <= 1 and lines[-1] == (more or shown)[-1], (name, lines)
        assert not re.search(r"\b(Condition|MedicationRequest|Procedure)/", why), (name, why)
        for c in finding.conditions:  # each condition shown with its code and status, or named below
            text = c.text or c.code.display or ""
            assert (c.code.code in why and (c.clinical_status or "") in why) or (more and text[:20] in more[0]), (name, c)
        for d in finding.drugs:  # each drug shown with its dose and status, or named / counted below
            assert d.ingredient in why or d.label in why or more, (name, d)
            if d.label in why and d.daily_dose_mg is not None:
                assert f"{d.daily_dose_mg:g} mg" in why, (name, d)
        for t in finding.ssri_trials:
            assert "adequate" in why
        if finding.session_count is not None:
            assert (f"sessions found:** {finding.session_count}" in why
                    or f"{finding.session_count} trauma-focused psychotherapy sessions" in why)
        drafts = [d for d in finding.drugs if d.is_draft_order]
        if drafts:  # the orders being placed come first
            assert drafts[0].label in shown[0], (name, shown)
        elif finding.unchecked:
            assert "Draft order not checked" in shown[0]
        elif any(c.kind != "ptsd" for c in finding.conditions):  # nightmares, acute stress: before PTSD
            assert not shown[0].startswith("- **PTSD:**"), (name, shown)
        assert finding.conditions or finding.drugs, "a card with no evidence"


def test_card_details_name_the_specifics(engine, settings):
    def card(name, topic):
        return next(c for c in run(engine, settings, name)[2] if c["source"]["topic"]["code"] == topic)

    assert "**3 of 8 prolonged exposure (PE) sessions done**" in card("ptsd-benzo-therapy.patient-view", S1)["detail"]
    assert card("ptsd-benzo-therapy.patient-view", S1)["summary"].startswith("PTSD: 3 of 8 prolonged exposure")
    assert "**sertraline 25 mg/day**" in card("ptsd-ssri-underway.patient-view", S2)["detail"]
    assert "**sertraline 50 mg/day**" in card("ptsd-ssri-titration.patient-view", S2)["detail"]
    assert "3 orders" in card("ptsd-ssri-renewals.patient-view", S4)["detail"]
    assert "suggestions" not in card("ptsd-ssri-underway.patient-view", S2)
    assert len(card("ptsd-cpt-complete.patient-view", S2)["suggestions"]) == 3  # sertraline, paroxetine, venlafaxine
    assert "trial of sertraline failed" in card("ptsd-ssri-failed-nightmares.patient-view", S4)["summary"]
    assert "300 mg/day" in card("ptsd-new.sign-sertraline-300-and-prazosin-2", DOSE)["summary"]
    assert "above" in card("ptsd-new.sign-sertraline-300-and-prazosin-2", DOSE)["summary"]
    assert "below" in card("ptsd-new.select-paroxetine-10", DOSE)["summary"]
    # MDMA: not a guideline step, without repeating the step card (issue #8 point 16)
    assert "Not a step of guideline-based PTSD treatment" in card("ptsd-new.select-mdma", MDMA)["detail"]
    assert "Not a step of guideline-based PTSD treatment" not in card("benzo-no-ptsd.select-mdma", MDMA)["detail"]
    benzo = card("ptsd-benzo-therapy.select-lorazepam", BENZO)  # a renewal (issue #8 point 1)
    assert "suggestions" not in benzo and benzo["summary"].startswith("Benzodiazepine taper or renewal (lorazepam)")
    assert "continues or steps down what the patient already takes" in benzo["detail"]
    assert [r["code"] for r in benzo["overrideReasons"]] == [
        "procedural-short-term", "seizure-or-alcohol-withdrawal", "taper-in-progress", "patient-declined-alternatives"]
    pv = card("ptsd-benzo-therapy.patient-view", BENZO)
    assert "do not stop abruptly" in pv["detail"] and "suggestions" not in pv


def test_several_benzodiazepine_orders_give_one_card_that_removes_each(engine, settings):
    _body, findings, cards = run(engine, settings, "ptsd-new.sign-lorazepam-and-diazepam")
    [card] = cards
    assert [s["actions"][0]["resourceId"] for s in card["suggestions"]] == [
        "MedicationRequest/d-lorazepam", "MedicationRequest/d-diazepam"]
    assert card["selectionBehavior"] == "any"


def test_no_patient_name_reaches_a_card(engine, settings):
    body = load("ptsd-benzo-therapy.patient-view")
    body["prefetch"]["patient"]["name"] = [{"family": "Zyxwvutson", "given": ["Quentina"]}]
    cards = engine.evaluate("patient-view", record_of(body, settings), TODAY)
    assert cards and "Zyxwvutson" not in json.dumps(cards) and "Quentina" not in json.dumps(cards)


# --- the fixtures themselves ------------------------------------------------------------------
def _resources(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", [])]


@pytest.mark.parametrize("name", sorted(TABLE))
def test_request_fixture_matches_its_patient_and_the_hook_shapes(name):
    body = load(name)
    context = body["context"]
    patient = json.loads((PATIENTS / f"{context['patientId']}.json").read_text())
    expected = sorted((r["resourceType"], r["id"]) for r in _resources(patient))
    prefetch = body["prefetch"]
    got = [(prefetch["patient"]["resourceType"], prefetch["patient"]["id"])]
    for key in ("conditions", "medications", "procedures"):
        assert prefetch[key]["resourceType"] == "Bundle" and prefetch[key]["type"] == "searchset"
        got += [(r["resourceType"], r["id"]) for r in _resources(prefetch[key])]
    assert sorted(got) == expected  # the prefetch is exactly the patient's record
    assert "name" not in prefetch["patient"]
    if body["hook"] == "patient-view":
        assert "draftOrders" not in context and "selections" not in context
        return
    drafts = context["draftOrders"]
    assert "type" not in drafts and all("fullUrl" not in e for e in drafts["entry"])  # sandbox shape
    assert all(r["status"] == "draft" for r in _resources(drafts))
    if body["hook"] == "order-sign":
        assert "selections" not in context
    else:
        ids = {f"{r['resourceType']}/{r['id']}" for r in _resources(drafts)}
        assert context["selections"] and set(context["selections"]) <= ids


@pytest.mark.parametrize("name", sorted(TABLE))
def test_fixture_through_the_http_service(make_app, name):
    """The same table through Flask (request schema, prefetch, engine, response)."""
    body = load(name)
    client = make_app().test_client()
    resp = client.post(f"/cds-services/{SERVICE_IDS[body['hook']]}", json=body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    data = resp.get_json()
    assert validate_response(data) == []
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in data["cards"]] == TABLE[name]
