"""The three hooks end to end with full prefetch, shaped like the CDS Hooks sandbox's calls."""

from __future__ import annotations

import json

import pytest

from tests.builders import (full_prefetch, hook_request, lorazepam, med_request, ptsd_condition, sertraline,
                            topics)
from tests.conftest import assert_conformant
from tests.reference import SHARED

EXAMPLES = SHARED / "cds-hooks" / "examples"


def call(client, service, body):
    return client.post(f"/cds-services/{service}", data=json.dumps(body), content_type="application/json")


@pytest.mark.spec("RESP-01 RESP-02 ERR-01 GEN-02 GEN-03")
def test_patient_view_for_a_ptsd_patient_names_one_next_step(client):
    body = hook_request("patient-view", prefetch=full_prefetch(conditions=[ptsd_condition()]))
    result = assert_conformant(call(client, "ptsd-patient-view", body))
    steps = [t for t in topics(result) if t.startswith("step-") and t != "step-3-nightmares"]
    assert steps == ["step-1-trauma-focused-psychotherapy"]


@pytest.mark.spec("RESP-02")
def test_no_guidance_is_an_empty_card_list(client):
    body = hook_request("patient-view", prefetch=full_prefetch(medications=[sertraline(status="active")]))
    resp = call(client, "ptsd-patient-view", body)
    assert assert_conformant(resp) == {"cards": []}


@pytest.mark.spec("HOOK-02 HOOK-03")
def test_order_select_warns_on_a_selected_benzodiazepine(client):
    order = lorazepam()
    body = hook_request("order-select", prefetch=full_prefetch(conditions=[ptsd_condition()]), drafts=[order])
    assert "type" not in body["context"]["draftOrders"]  # as the sandbox sends it
    result = assert_conformant(call(client, "ptsd-order-select", body))
    assert topics(result) == ["benzodiazepine-avoid"]
    card = result["cards"][0]
    assert card["indicator"] == "critical"
    deletes = [a for s in card["suggestions"] for a in s["actions"] if a["type"] == "delete"]
    assert [a["resourceId"] for a in deletes] == ["MedicationRequest/mr-lorazepam"]


def test_order_select_ignores_drafts_that_were_not_selected(client):
    """Hook library order-select: decision support focuses on the selected orders (CHECKLIST §7.2)."""
    body = hook_request("order-select", prefetch=full_prefetch(conditions=[ptsd_condition()]),
                        drafts=[lorazepam(), sertraline()], selections=["MedicationRequest/mr-sertraline"])
    assert "benzodiazepine-avoid" not in topics(assert_conformant(call(client, "ptsd-order-select", body)))


def test_order_sign_checks_every_draft_without_selections(client):
    body = hook_request("order-sign", prefetch=full_prefetch(conditions=[ptsd_condition()]),
                        drafts=[sertraline(), lorazepam()])
    assert "selections" not in body["context"]
    result = assert_conformant(call(client, "ptsd-order-sign", body))
    assert topics(result) == ["benzodiazepine-avoid"]


def test_one_malformed_resource_does_not_fail_the_request(client):
    broken = {"resourceType": "MedicationRequest", "id": "mr-broken", "status": 17,
              "medicationCodeableConcept": "lorazepam"}
    body = hook_request("order-sign", prefetch=full_prefetch(conditions=[ptsd_condition(), {"resourceType": "Condition"}]),
                        drafts=[lorazepam()])
    body["context"]["draftOrders"]["entry"] += [{"resource": broken}, {"resource": "not-an-object"}, "junk"]
    result = assert_conformant(call(client, "ptsd-order-sign", body))
    assert topics(result) == ["benzodiazepine-avoid"]


@pytest.mark.spec("GEN-04")
def test_unknown_extensions_and_members_are_tolerated(client):
    body = hook_request("patient-view", prefetch=full_prefetch(conditions=[ptsd_condition()]))
    body["extension"] = {"com.example.ehr": {"anything": [1, 2, 3]}}
    body["context"]["extension"] = {"com.example.ctx": True}
    body["someFutureField"] = "ignored"
    result = assert_conformant(call(client, "ptsd-patient-view", body))
    assert "step-1-trauma-focused-psychotherapy" in topics(result)


@pytest.mark.spec("PF-13")
def test_null_prefetch_values_mean_no_data(client):
    body = hook_request("patient-view", prefetch={"patient": None, "conditions": None,
                                                  "medications": None, "procedures": None})
    assert assert_conformant(call(client, "ptsd-patient-view", body)) == {"cards": []}


@pytest.mark.spec("PF-13")
def test_empty_searchset_bundles_mean_no_data(client):
    body = hook_request("patient-view", prefetch=full_prefetch())
    assert assert_conformant(call(client, "ptsd-patient-view", body)) == {"cards": []}


@pytest.mark.spec("FB-04")
def test_every_card_and_suggestion_has_a_fresh_uuid(client):
    body = hook_request("order-sign", prefetch=full_prefetch(conditions=[ptsd_condition()]),
                        drafts=[lorazepam("a"), lorazepam("b")])
    first = assert_conformant(call(client, "ptsd-order-sign", body))
    second = assert_conformant(call(client, "ptsd-order-sign", body))
    ids = [c["uuid"] for c in first["cards"] + second["cards"]]
    ids += [s["uuid"] for c in first["cards"] for s in c.get("suggestions", [])]
    assert len(first["cards"]) == 1 and len(first["cards"][0]["suggestions"]) == 2  # one card, one removal each
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", ["order-select-example-1.json", "order-sign-example-1.json",
                                  "patient-view-example-1.json"])
def test_hook_library_examples_are_accepted(client, name):
    """The HL7 hook library's own example contexts validate (with prefetch added: no PTSD -> no cards)."""
    example = json.loads((EXAMPLES / "hl7-cds-hooks-library" / "examples" / name).read_text())
    hook = name.rsplit("-example", 1)[0]
    body = {"hook": hook, "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": example["context"], "prefetch": full_prefetch()}
    result = assert_conformant(call(client, f"ptsd-{hook}", body))
    assert "benzodiazepine-avoid" not in topics(result)


def test_a_benzodiazepine_order_with_an_odd_dose_shape_is_still_warned_about(client):
    """The CDS Hooks spec's own example writes doseAndRate as an object; the order must not slip through."""
    order = lorazepam()
    order["dosageInstruction"][0]["doseAndRate"] = order["dosageInstruction"][0]["doseAndRate"][0]
    del order["subject"]
    body = hook_request("order-sign", prefetch=full_prefetch(conditions=[ptsd_condition()]), drafts=[order])
    result = assert_conformant(call(client, "ptsd-order-sign", body))
    assert topics(result) == ["benzodiazepine-avoid"]
    assert "lorazepam" in result["cards"][0]["summary"]


@pytest.mark.parametrize("junk", [{"id": ["a", "list"]}, {"id": {"an": "object"}}, {"resourceType": ["Condition"]},
                                  {"status": ["active"]}, {"status": {"code": "active"}}])
def test_prefetch_resources_with_malformed_ids_or_types_do_not_fail_the_call(client, junk):
    """Found by fuzzing: an unhashable id or resourceType in prefetch used to raise (500)."""
    broken = {**ptsd_condition("c-2"), **junk}
    prefetch = full_prefetch(conditions=[ptsd_condition(), broken], medications=[{**lorazepam("m-2"), **junk}])
    prefetch["patient"] = {**prefetch["patient"], **junk}
    result = assert_conformant(call(client, "ptsd-patient-view", hook_request("patient-view", prefetch=prefetch)))
    assert "step-1-trauma-focused-psychotherapy" in topics(result)


def test_the_sandbox_rx_view_pill_unit_gives_a_daily_dose(client):
    """The CDS Hooks sandbox's Rx View sends doseQuantity with code {pill}: 1 sertraline 100 mg
    tablet three times a day is 300 mg/day, above the labelled range (issue #8 point 13)."""
    order = sertraline()
    order["medicationCodeableConcept"] = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                      "code": "312938"}]}  # display-less, as some EHRs send
    order["dosageInstruction"] = [{"doseAndRate": [{"doseQuantity": {
        "value": 1, "unit": "pill", "system": "http://unitsofmeasure.org", "code": "{pill}"}}],
        "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}}}]
    body = hook_request("order-sign", prefetch=full_prefetch(conditions=[ptsd_condition()]), drafts=[order])
    result = assert_conformant(call(client, "ptsd-order-sign", body))
    [card] = result["cards"]
    assert card["source"]["topic"]["code"] == "dose-out-of-range" and "300 mg/day" in card["summary"]


def test_acute_stress_benzodiazepine_order_gets_a_warning_with_removal(client):
    """Acute stress disorder (not PTSD): no drug should be offered to prevent PTSD (NICE; VA/DoD:
    insufficient evidence) — the benzodiazepine card as a warning, removal suggested; no step card
    (issue #8 point 6)."""
    acute = {**ptsd_condition("cond-asd"), "code": {"coding": [{"system": "http://snomed.info/sct",
                                                                "code": "67195008",
                                                                "display": "Acute stress disorder"}]}}
    body = hook_request("order-sign", prefetch=full_prefetch(conditions=[acute]), drafts=[lorazepam()])
    [card] = assert_conformant(call(client, "ptsd-order-sign", body))["cards"]
    assert (card["source"]["topic"]["code"], card["indicator"]) == ("benzodiazepine-avoid", "warning")
    assert "acute stress" in card["summary"].lower() and "prevent PTSD" in card["summary"]
    assert "recommended against for PTSD" not in card["detail"]
    deletes = [a["resourceId"] for s in card["suggestions"] for a in s["actions"] if a["type"] == "delete"]
    assert deletes == ["MedicationRequest/mr-lorazepam"]
    view = hook_request("patient-view", prefetch=full_prefetch(conditions=[acute]))
    assert assert_conformant(call(client, "ptsd-patient-view", view)) == {"cards": []}


def test_codes_given_by_oid_are_read_as_their_systems(client):
    """C-CDA-derived feeds send urn:oid: systems (CODES-2 §7): a PTSD Condition and a lorazepam
    order coded that way get the critical card (issue #8 point 7)."""
    condition = ptsd_condition()
    condition["code"]["coding"][0]["system"] = "urn:oid:2.16.840.1.113883.6.96"
    order = lorazepam()
    order["medicationCodeableConcept"] = {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.88", "code": "197901"}]}
    body = hook_request("order-sign", prefetch=full_prefetch(conditions=[condition]), drafts=[order])
    [card] = assert_conformant(call(client, "ptsd-order-sign", body))["cards"]
    assert (card["source"]["topic"]["code"], card["indicator"]) == ("benzodiazepine-avoid", "critical")
    assert "SNOMED CT 47505003" in card["detail"]  # shown under its name, not its OID


def test_a_current_opioid_is_named_on_the_benzodiazepine_card(client):
    """The boxed warning's first item (issue #8 point 8): a patient with a current opioid
    (methadone here, CODES-2 §4a) and a benzodiazepine draft — the card names the opioid."""
    methadone = med_request("mr-methadone", "6813", "methadone", status="active", authored="2026-11-01", dose_mg=30)
    body = hook_request("order-sign", prefetch=full_prefetch(conditions=[ptsd_condition()], medications=[methadone]),
                        drafts=[lorazepam()])
    [card] = assert_conformant(call(client, "ptsd-order-sign", body))["cards"]
    assert card["source"]["topic"]["code"] == "benzodiazepine-avoid"
    assert "With an opioid (methadone)" in card["detail"]
    why = card["detail"].split("### Why this card", 1)[1]
    assert "**Current medication:** methadone" in why  # listed under "Why this card" (by name, not id)
    alone = hook_request("order-sign", prefetch=full_prefetch(conditions=[ptsd_condition()]), drafts=[lorazepam()])
    assert "With an opioid" not in assert_conformant(call(client, "ptsd-order-sign", alone))["cards"][0]["detail"]


def test_each_card_links_its_page_in_the_card_catalogue(make_app):
    """A card links its kind's catalogue page absolutely: from PTSD_CDS_PUBLIC_URL behind a proxy,
    else from the URL the EHR called (issue #8 point 15)."""
    body = hook_request("order-sign", prefetch=full_prefetch(conditions=[ptsd_condition()]), drafts=[lorazepam()])
    behind = make_app(public_url="https://cds.example.org/ptsd").test_client()
    [card] = assert_conformant(call(behind, "ptsd-order-sign", body))["cards"]
    assert {"label": "This card in the ptsd-cds catalogue: Benzodiazepines: recommended against in PTSD",
            "url": "https://cds.example.org/ptsd/cards/benzodiazepine-avoid", "type": "absolute"} in card["links"]
    direct = make_app().test_client()
    [card] = assert_conformant(call(direct, "ptsd-order-sign", body))["cards"]
    assert "http://localhost/cards/benzodiazepine-avoid" in [link["url"] for link in card["links"]]
    page = direct.get("/cards/benzodiazepine-avoid")
    assert page.status_code == 200 and "Benzodiazepines: recommended against in PTSD" in page.get_data(as_text=True)
