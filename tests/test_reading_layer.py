"""The reading layer (issue #7): each candidate decoded once into a typed view of what the rules
read, degrading element by element — a harmless malformed element never hides a safety card."""

from __future__ import annotations

import copy
import json
import re
import time
from datetime import date

import pytest

from cds_service.facts import builders as b
from cds_service.facts import extract_facts
from cds_service.facts.dosing import unit_strength_mg
from cds_service.facts.fhir_read import read_view, strict_problems, to_date
from cds_service.facts.views import ConditionView, MedicationRequestView
from cds_service.json_body import nesting_depth, nesting_exceeds
from tests.builders import full_prefetch, hook_request, lorazepam, ptsd_condition, topics
from tests.conftest import assert_conformant, assert_outcome

TODAY = date(2026, 11, 28)


def call(client, service, body):
    return client.post(f"/cds-services/{service}", data=json.dumps(body), content_type="application/json")


def _mangle_concept(resource, key, how):
    concept = resource[key]
    coding = concept["coding"][0]
    if how == "empty display":
        coding["display"] = ""
    elif how == "empty text":
        concept["text"] = ""
    elif how == "empty version":
        coding["version"] = ""
    elif how == "extension without url":
        concept["extension"] = [{"valueString": "x"}]
        coding["extension"] = [{"valueBoolean": True}]
    elif how == "unknown member":
        concept["madeUp"] = {"a": 1}
        coding["alsoMadeUp"] = 3
    elif how == "second malformed coding":
        concept["coding"].append({"system": 5, "code": ["197901"], "display": {}})
    elif how == "malformed first coding":
        concept["coding"].insert(0, {"system": "urn:x", "code": 42})
    return resource


HARMLESS = ["empty display", "empty text", "empty version", "extension without url", "unknown member",
            "second malformed coding", "malformed first coding"]


@pytest.mark.parametrize("how", HARMLESS)
@pytest.mark.parametrize("service", ["ptsd-order-select", "ptsd-order-sign"])
def test_benzodiazepine_order_keeps_its_critical_card_whatever_harmless_element_is_malformed(client, how, service):
    order = _mangle_concept(lorazepam(), "medicationCodeableConcept", how)
    hook = service.removeprefix("ptsd-")
    body = hook_request(hook, prefetch=full_prefetch(conditions=[ptsd_condition()]), drafts=[order],
                        **({"selections": ["MedicationRequest/mr-lorazepam"]} if hook == "order-select" else {}))
    result = assert_conformant(call(client, service, body))
    [card] = [c for c in result["cards"] if c["source"]["topic"]["code"] == "benzodiazepine-avoid"]
    assert card["indicator"] == "critical"
    deletes = [a["resourceId"] for s in card["suggestions"] for a in s["actions"] if a["type"] == "delete"]
    assert deletes == ["MedicationRequest/mr-lorazepam"]


@pytest.mark.parametrize("how", HARMLESS)
def test_ptsd_condition_with_a_harmless_malformed_element_keeps_every_card(client, how):
    condition = _mangle_concept(ptsd_condition(), "code", how)
    view = assert_conformant(call(client, "ptsd-patient-view", hook_request(
        "patient-view", prefetch=full_prefetch(conditions=[condition]))))
    assert topics(view) == ["step-1-trauma-focused-psychotherapy"]
    sign = assert_conformant(call(client, "ptsd-order-sign", hook_request(
        "order-sign", prefetch=full_prefetch(conditions=[condition]), drafts=[lorazepam()])))
    assert "benzodiazepine-avoid" in topics(sign)


def test_an_empty_condition_text_is_read_as_absent():
    condition = {**b.condition(), "code": {**b.condition()["code"], "text": ""}}
    facts = extract_facts(b.record(conditions=[condition]), today=TODAY, hook="patient-view")
    assert [f.reference for f in facts.ptsd] == ["Condition/c1"]
    assert facts.ptsd[0].text is None  # the empty text is left out, the coding display is not used as text
    assert facts.skipped == {"Condition (partly read)": 1}


def test_a_clean_resource_is_read_in_one_pass_and_not_counted():
    view, complete = read_view(b.med_request("197901", authored="2026-01-01", dosage=[b.dosage(1, "mg")]),
                               MedicationRequestView)
    assert complete and view.medicationCodeableConcept.coding[0].code == "197901"
    assert view.dosageInstruction[0].doseAndRate[0].doseQuantity.value == 1


def test_malformed_elements_are_left_out_one_by_one():
    raw = b.med_request("197901", authored="not a date", dosage=[b.dosage(1, "mg"), {"timing": "daily"}])
    raw["medicationCodeableConcept"]["coding"].append({"code": 7})
    raw["status"] = 3
    view, complete = read_view(raw, MedicationRequestView)
    assert not complete
    assert view.authoredOn is None and view.status is None
    assert [c.code for c in view.medicationCodeableConcept.coding] == ["197901", None]
    assert view.dosageInstruction[0].doseAndRate[0].doseQuantity.value == 1
    assert view.dosageInstruction[1].timing is None  # the bad timing only


@pytest.mark.parametrize("text, expected", [
    ("2015-07-03", date(2015, 7, 3)), ("2015-07", date(2015, 7, 1)), ("2015", date(2015, 1, 1)),
    ("2015-07-03T10:00:00+02:00", date(2015, 7, 3)), ("2026-02-30", None), (None, None),
])
def test_dates(text, expected):
    assert to_date(text) == expected


@pytest.mark.parametrize("value", ["19-06-2015", "2015-7-3", "yesterday", "2015-07-03T25:00:00Z", "2015-07-03 "])
def test_malformed_dates_are_not_read(value):
    view, complete = read_view({**b.condition(), "onsetDateTime": value}, ConditionView)
    assert not complete and view.onsetDateTime is None and view.code is not None


def test_strict_reader_reports_where_not_what():
    bad = {**b.med_request("197901"), "authoredOn": "last Tuesday", "subject": {"reference": 5}}
    problems = strict_problems(bad)
    assert sorted(p.split(":")[0] for p in problems) == ["authoredOn", "subject.reference"]
    assert all("Tuesday" not in p for p in problems)
    assert strict_problems(b.med_request("197901")) == []


# --- linear time ------------------------------------------------------------------------------
def _ratio(work, small, large):
    """Time of work(large) / time of work(small): about large/small when linear, its square when
    quadratic. A ratio, not a time: it holds on a slow or a busy machine."""
    def measure(n):
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            work(n)
            best = min(best, time.perf_counter() - started)
        return max(best, 1e-6)

    return measure(large) / measure(small)


def test_tablet_strength_parser_is_linear():
    # issue #11 finding 3: "sertraline " + "1" * n took 9 s at 16 KB
    assert unit_strength_mg("sertraline " + "1" * 16_000, "sertraline") is None
    # The patterns themselves are linear (the 512-character cap on names is a second guard).
    from cds_service.facts.dosing import _STRENGTH, _after_ingredient

    def parse(n):
        name = "sertraline " + "1" * n + " x"
        _STRENGTH.findall(name)
        _after_ingredient(name.lower(), "sertraline", _STRENGTH)

    assert _ratio(parse, 50_000, 500_000) < 40
    assert _ratio(lambda n: _after_ingredient("sertraline " * n, "sertraline", _STRENGTH), 5_000, 50_000) < 40
    assert unit_strength_mg("sertraline 50 MG Oral Tablet", "sertraline") == 50
    assert unit_strength_mg("24 HR venlafaxine 37.5 MG Extended Release Oral Capsule", "venlafaxine") == 37.5
    assert unit_strength_mg("venlafaxine HCl ER 75 MG", "venlafaxine") == 75


def test_nesting_check_is_linear_on_escaped_quotes():
    # issue #11 finding 3: 18 s at 80 KB with the former regular expression
    def body(n):
        return ("[" * 65 + '"' + '\\"' * n + "]" * 65).encode()

    assert nesting_exceeds(body(40_000), 64) in (True, False)
    assert _ratio(lambda n: nesting_exceeds(body(n), 64), 100_000, 1_000_000) < 40


@pytest.mark.spec("REQ-02")
def test_pathological_nesting_bodies_are_refused_quickly(client):
    for raw in (("[" * 65 + '"' + '\\"' * 40_000 + '"' + "]" * 65).encode(), b"[" * 200_000 + b"]" * 200_000):
        resp = client.post("/cds-services/ptsd-patient-view", data=raw, content_type="application/json")
        assert "nesting deeper than 64" in assert_outcome(resp, 400)


def test_depth_counts_brackets_outside_strings_only():
    assert nesting_depth(b'{"a": "[[[{{{", "b": [1, [2]]}') == 3
    assert nesting_depth(b'["\\\\", ["\\"]]"]]') == 2
    assert nesting_exceeds(json.dumps([[[[1]]]]).encode(), 3) and not nesting_exceeds(b"[[[1]]]", 3)


# --- strict encoding ---------------------------------------------------------------------------
@pytest.mark.spec("REQ-02")
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-32-be", "utf-8-sig"])
def test_a_body_that_is_not_utf8_is_400(client, encoding):
    body = json.dumps(hook_request("patient-view", prefetch=full_prefetch())).encode(encoding)
    text = assert_outcome(client.post("/cds-services/ptsd-patient-view", data=body,
                                      content_type="application/json"), 400)
    assert "UTF-8" in text


def test_a_lone_surrogate_in_feedback_is_400_and_never_stored(client, app):
    raw = ('{"feedback": [{"card": "\\ud800", "outcome": "accepted", '
           '"outcomeTimestamp": "2026-11-28T10:00:00Z", "acceptedSuggestions": [{"id": "x"}]}]}').encode()
    resp = client.post("/cds-services/ptsd-order-sign/feedback", data=raw, content_type="application/json")
    assert "surrogate" in assert_outcome(resp, 400)
    raw_hook = json.dumps(hook_request("patient-view", prefetch=full_prefetch())).replace(
        '"pat-1"', '"pat-\\udc00"', 1).encode()
    assert_outcome(client.post("/cds-services/ptsd-patient-view", data=raw_hook,
                               content_type="application/json"), 400)


def test_a_record_with_many_identical_orders_reads_each_once():
    orders = [b.med_request("312941", id=f"s{i}", authored="2026-01-01", dosage=[b.dosage(50, "mg")])
              for i in range(300)]
    facts = extract_facts(b.record(medication_requests=copy.deepcopy(orders)), today=TODAY, hook="patient-view")
    assert len(facts.drugs) == 300 and {d.daily_dose_mg for d in facts.drugs} == {50}


# --- bounded card detail --------------------------------------------------------------------------
def _treatment_history(n: int) -> dict:
    """Active PTSD; n/2 monthly sertraline renewals (adequate, failed) and n/2 EMDR sessions, none
    of them inside a drug period (so step 5, which lists the whole history, is the card)."""
    orders, sessions = [], []
    for i in range(n // 2):
        start = date(1960, 1, 1).toordinal() + i
        orders.append(b.med_request("312941", id=f"s{i}", status="completed",
                                    authored=date.fromordinal(start).isoformat(),
                                    validity=(date.fromordinal(start).isoformat(), date.fromordinal(start).isoformat()),
                                    dosage=[b.dosage(100, "mg")]))
    for i in range(n // 2):
        sessions.append(b.procedure("emdr", b.PSYCHOTHERAPY, id=f"p{i}",
                                    performed=date.fromordinal(date(2000, 1, 1).toordinal() + i).isoformat()))
    long_course = b.med_request("312941", id="long", status="completed", authored="1990-01-01",
                                validity=("1990-01-01", "1990-06-01"), dosage=[b.dosage(100, "mg")])
    venlafaxine = b.med_request("313585", id="v", status="completed", authored="1992-01-01",
                                validity=("1992-01-01", "1992-06-01"), dosage=[b.dosage(1, "capsule")])
    return full_prefetch(conditions=[ptsd_condition()], medications=orders + [long_course, venlafaxine],
                         procedures=sessions)


@pytest.mark.parametrize("n", [2_000, 10_000])
def test_card_detail_is_bounded_however_long_the_record(client, n):
    result = assert_conformant(call(client, "ptsd-patient-view",
                                    hook_request("patient-view", prefetch=_treatment_history(n))))
    size = len(json.dumps(result))
    assert topics(result) == ["step-5-combine"]
    assert size < 64 * 1024, size
    detail = result["cards"][0]["detail"]
    assert re.search(rf"— {n // 2}\d? orders, 19", detail) and "… and " in detail  # summarised, with a count
    assert f"PTSD: Posttraumatic stress disorder; {n // 2} trauma-focused psychotherapy sessions" in detail


# --- fail safe: unreadable drafts, unknown status (issue #11) ---------------------------------------
def _not_checked(result):
    return [c for c in result["cards"] if c["source"]["topic"]["code"] == "order-not-checked"]


@pytest.mark.parametrize("medication", [
    {"medicationCodeableConcept": "lorazepam"},                          # a string, not a CodeableConcept
    {"medicationCodeableConcept": {"coding": "197901"}},                 # coding not an array
    {"medicationCodeableConcept": {"coding": [{"system": 1, "code": 2}]}},  # nothing readable
    {"medicationCodeableConcept": {}},                                   # empty
    {"medicationReference": {"reference": "#missing"}},                  # contained Medication missing
    {},                                                                  # no medication at all
])
def test_a_draft_whose_medication_cannot_be_read_gets_the_order_not_checked_card(client, medication):
    order = {k: v for k, v in lorazepam().items() if k != "medicationCodeableConcept"} | medication
    result = assert_conformant(call(client, "ptsd-order-sign", hook_request(
        "order-sign", prefetch=full_prefetch(conditions=[ptsd_condition()]), drafts=[order])))
    [card] = _not_checked(result)
    assert card["indicator"] == "warning" and "not checked for benzodiazepines" in card["summary"].lower()
    assert "**Draft order not checked:** its medication could not be read" in card["detail"]


def test_a_drug_the_service_does_not_know_is_not_its_business(client):
    order = lorazepam()
    order["medicationCodeableConcept"] = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                      "code": "316049", "display": "Hydrochlorothiazide 25 MG"}]}
    result = assert_conformant(call(client, "ptsd-order-sign", hook_request(
        "order-sign", prefetch=full_prefetch(conditions=[ptsd_condition()]), drafts=[order])))
    assert result == {"cards": []}


def test_unreadable_drafts_need_ptsd_and_must_be_checked_by_the_hook(client):
    bad = {**lorazepam("mr-bad"), "medicationCodeableConcept": "?"}
    no_ptsd = assert_conformant(call(client, "ptsd-order-sign", hook_request(
        "order-sign", prefetch=full_prefetch(), drafts=[bad])))
    assert _not_checked(no_ptsd) == []
    unselected = assert_conformant(call(client, "ptsd-order-select", hook_request(
        "order-select", prefetch=full_prefetch(conditions=[ptsd_condition()]), drafts=[bad, lorazepam()],
        selections=["MedicationRequest/mr-lorazepam"])))
    assert [c["source"]["topic"]["code"] for c in unselected["cards"]] == ["benzodiazepine-avoid"]


@pytest.mark.parametrize("status", ["active", {"coding": "active"}, {"coding": [{"code": 1}]}])
def test_ptsd_of_unknown_status_gets_the_benzodiazepine_card_as_a_warning_and_no_step_card(client, status):
    condition = {**ptsd_condition(), "clinicalStatus": status}
    sign = assert_conformant(call(client, "ptsd-order-sign", hook_request(
        "order-sign", prefetch=full_prefetch(conditions=[condition]), drafts=[lorazepam()])))
    [card] = sign["cards"]
    assert (card["source"]["topic"]["code"], card["indicator"]) == ("benzodiazepine-avoid", "warning")
    assert "could not read" in card["detail"]
    view = assert_conformant(call(client, "ptsd-patient-view", hook_request(
        "patient-view", prefetch=full_prefetch(conditions=[condition]))))
    assert view == {"cards": []}  # guideline steps treat the unknown as absent
