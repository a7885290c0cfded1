"""Issue #8, branch benzo: benzodiazepine tapers and exemptions, PTSD by text and unconfirmed PTSD,
opioids by product code, and the sentences of the benzodiazepine, MDMA and order-not-checked cards.

The scenario table runs each fixture request through the same engine path as
``tests/test_engine_table.py`` (facts -> rules -> cards) and through the HTTP service; the rest
checks the facts and rules behind it with small records (``cds_service.facts.builders``).
"""

from __future__ import annotations

import json
import re
import time
from datetime import date

import pytest

from cds_service.config import REPO_ROOT
from cds_service.facts import builders as b
from cds_service.facts import build_terminology, extract_facts
from cds_service.facts.builders import ICD10CM, RXNORM, SNOMED
from cds_service.facts.terminology import Terminology, _condition_kind_by_text
from cds_service.rules import evaluate_rules
from cds_service.schemas.response import validate_response
from tests.test_engine_table import (  # the fixtures engine and settings are in conftest.py
    BENZO, MDMA, NOT_CHECKED, S1, SERVICE_IDS, TODAY, load, record_of, run,
)
from tests.test_engine_table import test_request_fixture_matches_its_patient_and_the_hook_shapes as _shape

V3_ROUTE = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"

# fixture request -> ([(topic, indicator), ...], resource ids the benzodiazepine card's suggestions delete)
TABLE: dict[str, list[tuple[str, str]]] = {
    # point 1 / 16: renewal, own taper, taper beside a new order, a higher dose is new
    "ptsd-benzo-therapy.sign-lorazepam-renewal-and-new-diazepam": [(BENZO, "critical")],
    "ptsd-benzo-therapy.select-lorazepam-higher-dose": [(BENZO, "critical")],
    "ptsd-new.select-lorazepam-own-taper": [(BENZO, "warning")],
    # point 2: the order's own reason, rescue formulation, procedural midazolam; unreadable route
    "ptsd-epilepsy.select-clonazepam-for-seizures": [],
    "ptsd-epilepsy.select-clonazepam": [(BENZO, "critical")],  # epilepsy elsewhere: named, no exemption
    "ptsd-epilepsy.select-nasal-diazepam": [],
    "ptsd-new.select-lorazepam-for-alcohol-withdrawal": [],
    "ptsd-new.select-midazolam-before-mri": [],
    "ptsd-new.select-diazepam-route-unreadable": [(BENZO, "critical")],
    # point 7: PTSD by text, negated text, provisional PTSD
    "ptsd-text-only.patient-view": [(S1, "info")],
    "ptsd-text-only.select-lorazepam": [(BENZO, "critical")],
    "ptsd-rule-out.select-lorazepam": [],
    "ptsd-provisional.patient-view": [],  # no step cards for unconfirmed PTSD (service rule)
    "ptsd-provisional.select-lorazepam": [(BENZO, "warning")],
    # point 8: an opioid coded with a product code only
    "ptsd-buprenorphine.sign-alprazolam": [(BENZO, "critical")],
    # the new patients in the patient view (the demo lists every patient)
    "ptsd-epilepsy.patient-view": [(S1, "info")],
    "ptsd-rule-out.patient-view": [],
    "ptsd-buprenorphine.patient-view": [(S1, "info")],
}
REMOVALS = {
    "ptsd-benzo-therapy.select-lorazepam": [],
    "ptsd-benzo-therapy.sign-lorazepam-renewal-and-new-diazepam": ["MedicationRequest/d-diazepam"],
    "ptsd-benzo-therapy.select-lorazepam-higher-dose": ["MedicationRequest/d-lorazepam"],
    "ptsd-new.select-lorazepam-own-taper": [],
    "ptsd-epilepsy.select-clonazepam": ["MedicationRequest/d-clonazepam"],
    "ptsd-new.select-diazepam-route-unreadable": ["MedicationRequest/d-diazepam"],
    "ptsd-text-only.select-lorazepam": ["MedicationRequest/d-lorazepam"],
    "ptsd-provisional.select-lorazepam": ["MedicationRequest/d-lorazepam"],
    "ptsd-buprenorphine.sign-alprazolam": ["MedicationRequest/d-alprazolam"],
}


def _card(cards, topic=BENZO):
    return next(c for c in cards if c["source"]["topic"]["code"] == topic)


def _removals(card) -> list[str]:
    return [a["resourceId"] for s in card.get("suggestions", []) for a in s["actions"] if a["type"] == "delete"]


@pytest.mark.parametrize("name", sorted(TABLE))
def test_fixture_gives_the_expected_cards(engine, settings, name):
    _body, _findings, cards = run(engine, settings, name)
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards] == TABLE[name]
    assert validate_response({"cards": cards}) == []


@pytest.mark.parametrize("name", sorted(REMOVALS))
def test_removal_suggestions_only_for_new_benzodiazepines(engine, settings, name):
    card = _card(run(engine, settings, name)[2])
    assert _removals(card) == REMOVALS[name]
    assert ("selectionBehavior" in card) == bool(REMOVALS[name])


@pytest.mark.parametrize("name", sorted(TABLE))
def test_fixture_matches_its_patient(name):
    _shape(name)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_fixture_through_the_http_service(make_app, name):
    body = load(name)
    resp = make_app().test_client().post(f"/cds-services/{SERVICE_IDS[body['hook']]}", json=body)
    assert resp.status_code == 200
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in resp.get_json()["cards"]] == TABLE[name]


def test_the_taper_cards_say_what_to_do(engine, settings):
    alone = _card(run(engine, settings, "ptsd-new.select-lorazepam-own-taper")[2])
    assert alone["summary"].startswith("Benzodiazepine taper or renewal (lorazepam)")
    first = alone["detail"].split("\n\n")[0]
    assert first.startswith("**Support the gradual taper; do not stop abruptly.**")
    # its own step-down, nothing current on record: the card says it would then be a new one
    assert "no current benzodiazepine is on record" in first.lower() and "it is a new benzodiazepine" in first.lower()
    mixed = _card(run(engine, settings, "ptsd-benzo-therapy.sign-lorazepam-renewal-and-new-diazepam")[2])
    paragraphs = mixed["detail"].split("\n\n")
    assert paragraphs[0].startswith("**Remove the new benzodiazepine order (diazepam, 15 mg/day)")
    assert paragraphs[1].startswith("**Keep lorazepam, 2 mg/day**")
    why = mixed["detail"].split("### Why this card")[1]
    assert "**Current medication:** lorazepam 1 MG Oral Tablet" in why and "ordered 2026-08-01" in why  # the order the renewal continues


def test_the_card_names_epilepsy_elsewhere_and_a_product_coded_opioid(engine, settings):
    epilepsy = _card(run(engine, settings, "ptsd-epilepsy.select-clonazepam")[2])
    assert "Also on record: **Epilepsy**" in epilepsy["detail"]
    assert "**Seizure disorder:** Epilepsy" in epilepsy["detail"]
    opioid = _card(run(engine, settings, "ptsd-buprenorphine.sign-alprazolam")[2])
    assert "**With an opioid (buprenorphine):**" in opioid["detail"]


def test_provisional_ptsd_is_named_as_not_confirmed(engine, settings):
    card = _card(run(engine, settings, "ptsd-provisional.select-lorazepam")[2])
    assert "PTSD is recorded as provisional (not confirmed)" in card["detail"]


# --- facts: taper in one order, renewal ------------------------------------------------------
def _facts(*drafts, records=(), conditions=(b.condition(),), hook="order-sign"):
    return extract_facts(b.record(conditions=conditions, medication_requests=records, draft_orders=drafts),
                         today=TODAY, hook=hook)


def _step(mg, seq=None, start=None, frequency=1):
    d = b.dosage(mg, "mg", frequency=frequency)
    if seq is not None:
        d["sequence"] = seq
    if start:
        d["timing"]["repeat"]["boundsPeriod"] = {"start": start}
    return d


def _lorazepam(*dosages, id="d1", status="draft", **kw):
    return b.med_request("197901", id=id, status=status, dosage=list(dosages), **kw)


@pytest.mark.parametrize("dosages, steps_down", [
    ([_step(2, 1), _step(1, 2), _step(0.5, 3)], True),
    ([_step(0.5, 3), _step(2, 1), _step(1, 2)], True),  # ordered by sequence, not as written
    ([_step(1, start="2026-12-15"), _step(2, start="2026-12-01")], True),  # by bounds start
    ([_step(1, 1), _step(1, 1)], False),  # one sequence: taken together, not steps
    ([_step(1, 1), _step(2, 2)], False),  # rising
    ([_step(1, 1), _step(1, 2)], False),  # level: no step down
    ([_step(2), _step(1)], False),  # neither sequence nor time: not provably steps
    ([_step(2, 1), {**_step(1, 2), "asNeededBoolean": True}], False),  # a step without a known dose
    ([_step(2, 1, frequency=2), _step(1, 1), _step(2, 2)], True),  # 5 mg/day, then 2 mg/day
])
def test_own_dosage_instructions_that_step_down(dosages, steps_down):
    [drug] = _facts(_lorazepam(*dosages)).draft_drugs
    assert drug.steps_down is steps_down


@pytest.mark.parametrize("current_mg, draft_mg, taper", [(2, 2, True), (3, 2, True), (1, 2, False), (None, 2, False)])
def test_a_renewal_at_the_same_or_a_lower_dose_is_a_taper(current_mg, draft_mg, taper):
    current = _lorazepam(*([b.dosage(current_mg, "mg")] if current_mg else []), id="m1", status="active",
                         authored="2026-10-01")
    findings = evaluate_rules("order-sign", _facts(_lorazepam(b.dosage(draft_mg, "mg")), records=[current]))
    [finding] = findings
    assert finding.indicator == ("warning" if taper else "critical")
    assert ("taper-only" in finding.flags) is taper
    assert [ref for ref, _ in finding.orders] == ([] if taper else ["MedicationRequest/d1"])


def test_the_order_itself_in_the_record_is_no_renewal():
    """Some EHRs return the order being signed in the record too: it does not continue itself."""
    order = _lorazepam(b.dosage(1, "mg"), id="same", status="active", authored="2026-11-28")
    [finding] = evaluate_rules("order-sign", _facts(order, records=[order]))
    assert finding.indicator == "critical" and [ref for ref, _ in finding.orders] == ["MedicationRequest/same"]


def test_another_benzodiazepine_is_no_renewal():
    current = b.med_request("197591", id="m1", authored="2026-10-01", dosage=[b.dosage(10, "mg")])  # diazepam
    [finding] = evaluate_rules("order-sign", _facts(_lorazepam(b.dosage(1, "mg")), records=[current]))
    assert finding.indicator == "critical" and "taper" not in finding.flags


# --- facts: exemptions ------------------------------------------------------------------------
def _route(system, code, display=None):
    return {"coding": [b.coding(system, code, display)]}


def _one(order, **kw):
    [drug] = _facts(order, **kw).draft_drugs
    return drug


@pytest.mark.parametrize("order, exemption", [
    (_lorazepam({**b.dosage(2, "mg"), "route": _route(V3_ROUTE, "IM")}), "injected"),
    (_lorazepam({**b.dosage(2, "mg"), "route": _route(SNOMED, "47625008")}), "injected"),
    (b.med_request("197591", dosage=[{**b.dosage(10, "mg"), "route": _route(V3_ROUTE, "RECTAL")}]), "rescue-formulation"),
    (b.med_request("2682573", dosage=[b.dosage(10, "mg")]), "rescue-formulation"),  # Libervant buccal film
    (b.med_request("2173500", dosage=[b.dosage(5, "mg")]), "rescue-formulation"),  # Nayzilam
    (b.med_request(text="midazolam 10 mg buccal", dosage=[b.dosage(10, "mg")]), "rescue-formulation"),
    (b.med_request("6960", dosage=[{**b.dosage(5, "mg", route="Buccal")}]), "rescue-formulation"),
    # a nasal / rectal / buccal route exempts only diazepam and midazolam
    (_lorazepam({**b.dosage(1, "mg"), "route": _route(V3_ROUTE, "BUC")}), None),
    (_lorazepam({**b.dosage(1, "mg"), "route": _route(V3_ROUTE, "NASAL")}), None),
    # midazolam, any route: a single dose or before a procedure
    (b.med_request("422410", dosage=[{**b.dosage(7.5, "mg"), "timing": {"repeat": {"count": 1}}}]), "midazolam-single-dose"),
    (b.med_request("422410", dosage=[b.dosage(7.5, "mg", text="single dose at 08:00")]), "midazolam-single-dose"),
    (b.med_request("422410", dosage=[b.dosage(7.5, "mg", text="30 min before the procedure")]), "midazolam-pre-procedure"),
    ({**b.med_request("422410", dosage=[b.dosage(7.5, "mg")]), "reasonCode": [{"text": "Procedural sedation"}]},
     "midazolam-pre-procedure"),
    (b.med_request("422410", dosage=[{**b.dosage(7.5, "mg"), "timing": {"repeat": {"count": 3}}}]), None),
    (b.med_request("422410", dosage=[b.dosage(7.5, "mg", frequency=2)]), None),
    # not midazolam: a single dose or a procedure does not exempt
    (_lorazepam({**b.dosage(1, "mg"), "timing": {"repeat": {"count": 1}}}), None),
    (_lorazepam(b.dosage(1, "mg", text="1 mg before the MRI")), None),
    # an unreadable route or timing is no exemption
    (b.med_request("197591", dosage=[{**b.dosage(10, "mg"), "route": "rectal"}]), None),
    (b.med_request("422410", dosage=[{**b.dosage(7.5, "mg"), "timing": {"repeat": {"count": "once"}}}]), None),
    # a mixed order (oral and rectal instructions) is not a rescue order
    (b.med_request("197591", dosage=[b.dosage(5, "mg", route="Oral"), b.dosage(10, "mg", route="Rectal")]), None),
])
def test_route_formulation_and_procedural_exemptions(order, exemption):
    drug = _one(order)
    assert drug.exemption == exemption
    findings = evaluate_rules("order-sign", _facts(order))
    assert bool(findings) is (exemption is None)


SEIZURE = b.condition("G40.909", ICD10CM, id="c-epi")
WITHDRAWAL = b.condition("191480000", SNOMED, id="c-aw")


@pytest.mark.parametrize("extra, conditions, exempt", [
    ({"reasonCode": [b.concept(b.coding(ICD10CM, "F10.239"))]}, (), True),
    ({"reasonCode": [b.concept(b.coding(SNOMED, "84757009"))]}, (), True),  # epilepsy
    ({"reasonCode": [b.concept(b.coding(SNOMED, "191714002"))]}, (), False),  # dissociative convulsions
    ({"reasonCode": [b.concept(text="alcohol withdrawal")]}, (), False),  # a reason text alone
    ({"reasonCode": "F10.239"}, (), False),  # unreadable reason
    ({"reasonReference": [{"reference": "Condition/c-epi"}]}, (SEIZURE,), True),
    ({"reasonReference": [{"reference": "https://fhir.example.org/fhir/Condition/c-aw"}]}, (WITHDRAWAL,), True),
    ({"reasonReference": [{"reference": "Condition/c-epi"}]}, (), False),  # not in the record
    ({"reasonReference": [{"reference": "Condition/c-epi"}]},
     (b.condition("G40.909", ICD10CM, id="c-epi", clinical="resolved"),), False),
    ({"reasonReference": [{"reference": "Condition/c1"}]}, (), False),  # the PTSD itself
    ({"reasonReference": {"reference": "Condition/c-epi"}}, (SEIZURE,), False),  # unreadable
    ({}, (SEIZURE, WITHDRAWAL), False),  # elsewhere in the record: named, no exemption
])
def test_the_orders_own_reason_exempts_it(extra, conditions, exempt):
    order = {**_lorazepam(b.dosage(1, "mg")), **extra}
    facts = _facts(order, conditions=(b.condition(),) + tuple(conditions))
    findings = evaluate_rules("order-sign", facts)
    assert bool(findings) is not exempt
    if findings and conditions and all(c["clinicalStatus"]["coding"][0]["code"] == "active" for c in conditions):
        assert "indication-elsewhere" in findings[0].flags
        assert {c.reference for c in findings[0].conditions} >= {f"Condition/{c['id']}" for c in conditions}


def test_patient_view_skips_a_current_benzodiazepine_given_for_its_own_reason():
    current = {**_lorazepam(b.dosage(1, "mg"), id="m1", status="active", authored="2026-10-01"),
               "reasonReference": [{"reference": "Condition/c-aw"}]}
    facts = extract_facts(b.record(conditions=[b.condition(), WITHDRAWAL], medication_requests=[current]),
                          today=TODAY, hook="patient-view")
    assert [f.topic for f in evaluate_rules("patient-view", facts) if f.topic == BENZO] == []


# --- facts: PTSD by text, unconfirmed PTSD -----------------------------------------------------
@pytest.mark.parametrize("text, ptsd", [
    ("PTSD, chronic, combat-related", True), ("post-traumatic stress disorder", True),
    ("posttraumatic stress disorder", True), ("Post traumatic stress disorder, delayed onset", True),
    ("Chronic PTSD; denies SI", True), ("PTSD, negative for depression", True),
    ("rule out PTSD", False), ("r/o PTSD", False), ("R/O chronic PTSD", False), ("PTSD screen negative", False),
    ("negative PTSD screen", False), ("no PTSD", False), ("history of PTSD, ruled out", False),
    ("denies PTSD symptoms", False), ("no history of PTSD", False), ("family history of PTSD", False),
    ("PTSDish", False), ("anxiety", False),
])
def test_ptsd_recorded_as_text_only(text, ptsd):
    facts = extract_facts(b.record(conditions=[b.condition(None, text=text)]), today=TODAY, hook="patient-view")
    assert facts.has_active_ptsd is ptsd
    if ptsd:
        assert facts.ptsd[0].by_text and facts.ptsd[0].code.label() == f'recorded as text "{text}"'


def test_a_coded_look_alike_is_not_overridden_by_its_text():
    acute = b.condition("67195008", SNOMED, text="Acute stress disorder, PTSD to be excluded")
    other = b.condition("F43.0", ICD10CM, text="Acute stress reaction (no PTSD)")
    facts = extract_facts(b.record(conditions=[acute, other]), today=TODAY, hook="patient-view")
    assert facts.ptsd == [] and len(facts.acute_stress) == 2


def test_text_matching_is_bounded_and_memoised():
    term = Terminology.load()
    long_text = "PTSD " + "word, " * 20_000 + "r/o"
    start = time.perf_counter()
    assert term.condition_kind_by_text(long_text) == "ptsd"  # the negation lies beyond the 512-character cap
    assert term.condition_kind_by_text("x" * 100_000 + " rule out PTSD") is None  # nothing within the cap
    assert time.perf_counter() - start < 0.05
    before = _condition_kind_by_text.cache_info().hits
    conditions = [b.condition(None, text="PTSD, chronic", id=f"c{i}") for i in range(200)]
    extract_facts(b.record(conditions=conditions), today=TODAY, hook="patient-view")
    assert _condition_kind_by_text.cache_info().hits - before >= 199


@pytest.mark.parametrize("verification", ["provisional", "differential", "unconfirmed"])
def test_unconfirmed_ptsd_gives_a_warning_and_no_step_card(verification):
    facts = _facts(_lorazepam(b.dosage(1, "mg")), conditions=(b.condition(verification=verification),))
    [finding] = evaluate_rules("order-sign", facts)
    assert (finding.topic, finding.indicator) == (BENZO, "warning") and "ptsd-unconfirmed" in finding.flags
    pv = extract_facts(b.record(conditions=[b.condition(verification=verification)]), today=TODAY, hook="patient-view")
    assert evaluate_rules("patient-view", pv) == []


def test_confirmed_ptsd_wins_over_an_unconfirmed_one():
    facts = _facts(_lorazepam(b.dosage(1, "mg")),
                   conditions=(b.condition(verification="provisional", id="c0"), b.condition()))
    [finding] = evaluate_rules("order-sign", facts)
    assert finding.indicator == "critical" and "ptsd-unconfirmed" not in finding.flags


# --- opioids by product code ------------------------------------------------------------------
@pytest.mark.parametrize("code, ingredient", [("1010606", "buprenorphine"), ("864706", "methadone"),
                                              ("1049621", "oxycodone")])
def test_an_opioid_coded_only_with_a_product_code_is_named(code, ingredient):
    opioid = {"resourceType": "MedicationRequest", "id": "m-op", "status": "active", "intent": "order",
              "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}]},
              "subject": b.PATIENT, "authoredOn": "2026-11-01"}
    facts = _facts(_lorazepam(b.dosage(1, "mg")), records=[opioid])
    [finding] = evaluate_rules("order-sign", facts)
    assert "opioid" in finding.flags and finding.values["opioids"] == ingredient


# --- generated data in step with the reference copies ------------------------------------------
CLINICAL = REPO_ROOT / "reference" / "clinical"
TERMINOLOGY = REPO_ROOT / "cds_service" / "data" / "terminology"


def test_generated_condition_and_opioid_files_match_the_reference_copies():
    conditions = json.loads((TERMINOLOGY / "conditions.json").read_text())
    built = build_terminology.build_conditions(CLINICAL)
    assert conditions["alcoholWithdrawal"] == built["alcoholWithdrawal"]
    assert conditions["seizure"] == built["seizure"]
    codes = {(r["system"], r["code"]) for r in conditions["alcoholWithdrawal"]}
    assert {(ICD10CM, "F10.130"), (ICD10CM, "F10.939"), (SNOMED, "8635005")} <= codes  # CODES-2 §1
    assert (SNOMED, "191714002") not in {(r["system"], r["code"]) for r in conditions["seizure"]}
    products = json.loads((TERMINOLOGY / "opioid-products.json").read_text())
    assert products == build_terminology.build_opioid_products(CLINICAL)
    assert len(products["codes"]) >= 557


def test_rescue_and_route_codes_are_verified_rows_of_the_code_lists():
    rows = json.loads((CLINICAL / "valuesets/more/derived/ptsd-cds-codelists-2.json").read_text())["rows"]
    verified = {(r["system"], r["code"]) for r in rows if r["status"] == "verified"}
    codes_1 = json.loads((CLINICAL / "valuesets/derived/ptsd-cds-codelists.json").read_text())
    benzo_vs = json.loads((CLINICAL / "valuesets/opioid-cds-r4/benzodiazepine-medications.json").read_text())
    in_vs = {(c["system"], c["code"]) for c in benzo_vs["expansion"]["contains"]}
    data = json.loads((TERMINOLOGY / "benzodiazepine-exemptions.json").read_text())
    for kind in ("injection", "rescue"):
        for c in data["routeCodes"][kind]:
            assert (c["system"], c["code"]) in verified, c
    for code in data["rescueProductCodes"]["codes"]:
        assert (RXNORM, code) in in_vs, code  # every rescue product is a benzodiazepine of the CDC set
    assert codes_1  # the first-pass code list (CODES.md) is there too


# --- card sentences (points 14 and 15) -------------------------------------------------------
INTERNAL = re.compile(r"§|GUIDELINE-FACTS|CODES-2|CODES\.md|issue #|first author not confirmed|"
                      r"no web address on file|>=|api\.fda\.gov", re.IGNORECASE)
MY_FIXTURES = sorted(TABLE) + ["ptsd-benzo-therapy.select-lorazepam", "ptsd-benzo-therapy.patient-view",
                               "acute-stress.select-lorazepam", "ptsd-status-unreadable.select-lorazepam",
                               "ptsd-new.select-mdma", "ptsd-mdma.patient-view", "ptsd-new.sign-unreadable-drug"]


def _visible_advice_and_sources(engine, finding, card) -> str:
    """What a clinician reads of a card's advice and evidence: the paragraphs, then each cited
    source by its short name with its statement and grade (the full reference is on the catalogue
    page) — "Why this card" is bounded on its own."""
    template = engine.cards.cards[finding.topic]
    paragraphs = [p for p in template.paragraphs
                  if p.visible.applies(finding.hook, finding.flags) and not p.catalogue_only]
    cited = list(dict.fromkeys(template.citations[c] for p in paragraphs for c in p.cite))
    lines = [card["detail"].split("### Why this card")[0]]
    for c in cited:
        grade = "; ".join(x for x in (c.strength and f"Strength: {c.strength}",
                                      c.evidence and f"Evidence: {c.evidence}") if x)
        lines.append(f"{c.document.short} — {c.statement}. {grade}")
    return " ".join(" ".join(lines).replace("*", "").split())


@pytest.mark.parametrize("name", MY_FIXTURES)
def test_my_cards_hold_nothing_internal_and_stay_short(engine, settings, name):
    _body, findings, cards = run(engine, settings, name)
    for finding, card in zip(findings, cards):
        if card["source"]["topic"]["code"] not in (BENZO, MDMA, NOT_CHECKED):
            continue
        text = json.dumps({k: card[k] for k in ("summary", "detail", "links")})
        assert not INTERNAL.search(text), (name, INTERNAL.search(text))
        visible = _visible_advice_and_sources(engine, finding, card)
        assert len(visible) <= 700, (name, len(visible), visible)
        assert all(link["url"].startswith("https://") for link in card["links"])


def test_card_sentences_agree_with_the_guideline_facts(engine, settings):
    benzo = _card(run(engine, settings, "ptsd-epilepsy.select-clonazepam")[2])["detail"]
    assert "worse psychotherapy outcomes" not in benzo  # Rosen 2013 found no weaker response to PE
    assert "PE, CPT or EMDR" not in benzo and "sertraline" not in benzo  # the step card's advice
    pv = _card(run(engine, settings, "ptsd-benzo-therapy.patient-view")[2])["detail"]
    assert "Boxed warning: use with opioids; abuse, misuse, addiction; dependence, withdrawal." in pv
    mdma = _card(run(engine, settings, "ptsd-new.select-mdma")[2], MDMA)
    assert "only within an authorised" not in mdma["detail"] and "only in an authorised" not in mdma["summary"]
    assert "Schedule I" in mdma["summary"] and "Schedule I" in mdma["detail"]
    assert not re.search(r"letter[^.]*unblinding", mdma["detail"])  # the issues were not the letter's
    for name in ("ptsd-mdma.patient-view", "ptsd-new.select-mdma"):  # the step card's advice is not repeated
        assert "Steps still open" not in _card(run(engine, settings, name)[2], MDMA)["detail"]


def test_catalogue_only_paragraphs_are_on_the_page_not_in_the_card(engine, settings, make_app):
    card = _card(run(engine, settings, "ptsd-new.sign-lorazepam-and-diazepam")[2])
    assert "risk ratio 1.53" not in card["detail"]
    page = make_app().test_client().get("/cards/benzodiazepine-avoid").get_data(as_text=True)
    assert "risk ratio 1.53" in page and "this page only" in page
