"""Prefetch resources read straight from their JSON text (issue #7 item 1: decode each resource once).

A hook call's prefetch values are kept as text by the body parser (``json_body.parse_hook_body``);
the MedicationRequests and Procedures of its Bundles reach the facts stage as ``RawResource`` and are
decoded once, straight into their views. These tests hold that path to the parsed-JSON path it
replaces: the same facts for every fixture and for every harmless malformation, the same safety
cards through HTTP, and the same refusals of bad text.
"""

from __future__ import annotations

import copy
import json

import pytest

from cds_service.config import REPO_ROOT
from cds_service.facts import extract_facts
from cds_service.json_body import parse_hook_body
from cds_service.patient_data.gather import gather_record
from cds_service.patient_data.outbound import OutboundPolicy
from cds_service.patient_data.record import RawResource
from tests.conftest import assert_outcome
from tests.test_engine_table import TODAY
from tests.test_reading_layer import HARMLESS, _mangle_concept

REQUESTS = REPO_ROOT / "fixtures" / "requests"
NAMES = sorted(p.stem for p in REQUESTS.glob("*.json"))
BENZO_FIXTURE = "ptsd-benzo-therapy.patient-view"  # a current lorazepam order in the prefetch


def _record(body_bytes: bytes, settings, *, as_text: bool):
    body = parse_hook_body(body_bytes, max_depth=64) if as_text else json.loads(body_bytes)
    return gather_record(body, identity=None, settings=settings, policy=OutboundPolicy(settings))


def _facts(body_bytes: bytes, settings, *, as_text: bool):
    record = _record(body_bytes, settings, as_text=as_text)
    return extract_facts(record, today=TODAY, hook=parse_hook_body(body_bytes, max_depth=64)["hook"])


def _fixture(name: str) -> dict:
    return json.loads((REQUESTS / f"{name}.json").read_text())


def _orders(body: dict) -> list[dict]:
    return [e["resource"] for e in body["prefetch"]["medications"]["entry"]]


def _without_uuids(value):
    """Cards and suggestions get a new uuid per call; everything else must match."""
    if isinstance(value, dict):
        return {k: _without_uuids(v) for k, v in value.items() if k != "uuid"}
    if isinstance(value, list):
        return [_without_uuids(v) for v in value]
    return value


@pytest.mark.parametrize("name", NAMES)
def test_every_fixture_gives_the_same_facts_read_from_text_as_from_parsed_json(settings, name):
    raw = (REQUESTS / f"{name}.json").read_bytes()
    assert _facts(raw, settings, as_text=True) == _facts(raw, settings, as_text=False)


def test_prefetch_orders_and_procedures_reach_the_facts_stage_as_text_and_are_decoded_once(settings):
    raw = (REQUESTS / "ptsd-ssri-renewals.patient-view.json").read_bytes()
    record = _record(raw, settings, as_text=True)
    texts = [r for r in record.medication_requests + record.procedures if isinstance(r, RawResource)]
    assert texts and len(texts) == len(record.medication_requests) + len(record.procedures)
    facts = extract_facts(record, today=TODAY, hook="patient-view")
    assert facts.drugs  # read...
    assert all(r._json is None for r in texts)  # ...straight into views: never parsed into dicts


@pytest.mark.parametrize("how", HARMLESS)
def test_a_harmless_malformed_element_reads_the_same_from_text(settings, how):
    body = _fixture(BENZO_FIXTURE)
    for order in _orders(body):
        _mangle_concept(order, "medicationCodeableConcept", how)
    raw = json.dumps(body).encode()
    text, parsed = _facts(raw, settings, as_text=True), _facts(raw, settings, as_text=False)
    assert text == parsed
    assert any(d.drug_class == "benzodiazepine" and d.is_current for d in text.drugs)


@pytest.mark.parametrize("how", HARMLESS)
def test_a_current_benzodiazepine_in_the_prefetch_keeps_its_card_whatever_harmless_element_is_malformed(
        client, how):
    body = _fixture(BENZO_FIXTURE)
    for order in _orders(body):
        _mangle_concept(order, "medicationCodeableConcept", how)
    resp = client.post("/cds-services/ptsd-patient-view", json=body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert "benzodiazepine-avoid" in [c["source"]["topic"]["code"] for c in resp.get_json()["cards"]]


# Numbers msgspec will not hold: beyond float range, or an int of more than 4,300 digits (Python's
# limit). Inside a prefetch resource such a number is kept as its text: a malformed element.
HUGE = ["1e999", "-1e999", "1" * 4301]
PLACES = {  # where the number goes -> (resource picker, key path)
    "unread element of the order": ("order", ("extension",)),
    "the order's dose": ("order", ("dosageInstruction", 0, "doseAndRate", 0, "doseQuantity", "value")),
    "the order's id": ("order", ("id",)),
    "the order's medication code": ("order", ("medicationCodeableConcept", "coding", 0, "code")),
    "the PTSD Condition's id": ("condition", ("id",)),
    "the PTSD Condition's onset": ("condition", ("onsetDateTime",)),
    "the Patient": ("patient", ("birthDate",)),
    "a Bundle entry's search": ("entry", ("search",)),
}


def _put_huge(body: dict, place: str) -> None:
    which, path = PLACES[place]
    target = {"order": lambda: _orders(body)[0],
              "condition": lambda: body["prefetch"]["conditions"]["entry"][0]["resource"],
              "patient": lambda: body["prefetch"]["patient"],
              "entry": lambda: body["prefetch"]["medications"]["entry"][0]}[which]()
    *parents, last = path
    for key in parents:
        target = target[key]
    target[last] = "@HUGE@"


@pytest.mark.parametrize("number", HUGE, ids=["1e999", "-1e999", "4301 digits"])
@pytest.mark.parametrize("place", PLACES)
def test_a_number_beyond_range_inside_a_prefetch_resource_is_one_malformed_element(client, settings, place,
                                                                                  number):
    body = _fixture(BENZO_FIXTURE)
    _put_huge(body, place)
    raw = json.dumps(body).replace('"@HUGE@"', number).encode()
    facts = _facts(raw, settings, as_text=True)  # never raises, never drops the resource
    assert any(d.drug_class == "benzodiazepine" for d in facts.drugs) or place == "the order's medication code"
    assert facts.ptsd or facts.ptsd_unknown_status
    resp = client.post("/cds-services/ptsd-patient-view", data=raw, content_type="application/json")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    topics = [c["source"]["topic"]["code"] for c in resp.get_json()["cards"]]
    # The lorazepam order is still warned about (by its text when its code is the malformed element).
    assert "benzodiazepine-avoid" in topics


@pytest.mark.parametrize("number", HUGE, ids=["1e999", "-1e999", "4301 digits"])
def test_an_order_status_beyond_range_reads_like_any_malformed_status(settings, number):
    body = _fixture(BENZO_FIXTURE)
    _orders(body)[0]["status"] = "@HUGE@"
    huge = _facts(json.dumps(body).replace('"@HUGE@"', number).encode(), settings, as_text=True)
    _orders(body)[0]["status"] = 5
    assert huge == _facts(json.dumps(body).encode(), settings, as_text=False)


@pytest.mark.parametrize("status", ["clinicalStatus", "verificationStatus"])
def test_a_ptsd_status_beyond_range_reads_as_unreadable_not_as_absent(settings, status):
    body = _fixture(BENZO_FIXTURE)
    body["prefetch"]["conditions"]["entry"][0]["resource"][status] = "@HUGE@"
    raw = json.dumps(body).replace('"@HUGE@"', "1e999").encode()
    facts = _facts(raw, settings, as_text=True)
    assert not facts.ptsd and len(facts.ptsd_unknown_status) == 1  # the cautious reading


def test_a_number_beyond_range_elsewhere_in_the_body_is_still_400(client):
    text = json.dumps(_fixture(BENZO_FIXTURE)).replace('"context": {', '"context": {"x": 1e999, ', 1)
    resp = client.post("/cds-services/ptsd-patient-view", data=text, content_type="application/json")
    assert "out of range" in assert_outcome(resp, 400)


def test_a_number_out_of_range_in_an_unread_element_changes_nothing(client):
    body = _fixture(BENZO_FIXTURE)
    before = client.post("/cds-services/ptsd-patient-view", json=body).get_json()["cards"]
    for order in _orders(body):
        order["note"] = [{"text": "x", "madeUpNumber": 1.5}]
    text = json.dumps(body).replace('"madeUpNumber": 1.5', '"madeUpNumber": 1e999')
    after = client.post("/cds-services/ptsd-patient-view", data=text, content_type="application/json")
    assert after.status_code == 200
    assert _without_uuids(after.get_json()["cards"]) == _without_uuids(before)


@pytest.mark.spec("REQ-02")
def test_invalid_utf8_inside_a_prefetch_resource_is_400(client):
    text = json.dumps(_fixture(BENZO_FIXTURE)).encode().replace(b"lorazepam 1 MG Oral Tablet",
                                                                b"loraz\xff\xfepam", 1)
    resp = client.post("/cds-services/ptsd-patient-view", data=text, content_type="application/json")
    assert "UTF-8" in assert_outcome(resp, 400)


@pytest.mark.spec("REQ-02")
@pytest.mark.parametrize("bad, says", [(r"\ud800", "surrogate"), ("NaN", "not valid JSON"),
                                       ("[1, 2,]", "not valid JSON")])
def test_bad_json_inside_a_prefetch_resource_is_400(client, bad, says):
    body = _fixture(BENZO_FIXTURE)
    _orders(body)[0]["note"] = [{"text": "PLACEHOLDER"}]
    text = json.dumps(body).replace('"PLACEHOLDER"', f'"{bad}"' if bad.startswith("\\") else bad)
    resp = client.post("/cds-services/ptsd-patient-view", data=text, content_type="application/json")
    assert says in assert_outcome(resp, 400)


def test_odd_prefetch_shapes_are_read_as_before(client, settings):
    body = _fixture(BENZO_FIXTURE)
    odd = copy.deepcopy(body)
    odd["prefetch"]["medications"]["entry"].insert(0, "not an entry")  # an odd entry: parsed whole
    odd["prefetch"]["procedures"]["entry"].append({"resource": None})
    odd["prefetch"]["conditions"]["entry"].append({"resource": {"resourceType": 7}})
    raw = json.dumps(odd).encode()
    assert _facts(raw, settings, as_text=True) == _facts(raw, settings, as_text=False)
    resp = client.post("/cds-services/ptsd-patient-view", data=raw, content_type="application/json")
    assert "benzodiazepine-avoid" in [c["source"]["topic"]["code"] for c in resp.get_json()["cards"]]
    not_object = copy.deepcopy(body)
    not_object["prefetch"] = ["a", "list"]
    assert "prefetch" in assert_outcome(client.post("/cds-services/ptsd-patient-view", json=not_object), 400)


def _by_reference(body: dict, medication_id: str) -> dict:
    """The fixture's lorazepam orders naming their drug by medicationReference instead of a code."""
    for order in _orders(body):
        del order["medicationCodeableConcept"]
        order["medicationReference"] = {"reference": f"Medication/{medication_id}"}
    return body


def test_an_order_kept_as_text_that_references_its_drug_is_resolved_from_the_prefetch(client):
    body = _by_reference(_fixture(BENZO_FIXTURE), "lz")
    body["prefetch"]["medications"]["entry"].append({"resource": {
        "resourceType": "Medication", "id": "lz", "code": {"coding": [
            {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197901",
             "display": "lorazepam 1 MG Oral Tablet"}]}}})
    resp = client.post("/cds-services/ptsd-patient-view", json=body)
    assert "benzodiazepine-avoid" in [c["source"]["topic"]["code"] for c in resp.get_json()["cards"]]


def test_an_order_kept_as_text_whose_referenced_drug_is_missing_makes_the_data_incomplete(client):
    body = _by_reference(_fixture(BENZO_FIXTURE), "nowhere")
    assert "cannot be identified" in assert_outcome(client.post("/cds-services/ptsd-patient-view", json=body), 412)


@pytest.mark.parametrize("how", HARMLESS + ["no clinical status", "abated, no status"])
def test_a_ptsd_condition_kept_as_text_reads_the_same_whatever_harmless_element_is_malformed(settings, how):
    body = _fixture(BENZO_FIXTURE)
    condition = body["prefetch"]["conditions"]["entry"][0]["resource"]
    if how == "no clinical status":
        del condition["clinicalStatus"]
    elif how == "abated, no status":
        del condition["clinicalStatus"]
        condition["abatementDateTime"] = "2026-01-01"
    else:
        _mangle_concept(condition, "code", how)
    raw = json.dumps(body).encode()
    text, parsed = _facts(raw, settings, as_text=True), _facts(raw, settings, as_text=False)
    assert text == parsed
    assert bool(text.ptsd) is (how != "abated, no status")
