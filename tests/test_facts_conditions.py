"""Active PTSD / nightmare conditions, robustness, and a run over real-shaped Synthea records."""

from __future__ import annotations

import json
import time
from datetime import date

import pytest

from cds_service.facts import builders as b
from cds_service.facts import extract_facts
from cds_service.facts.builders import ICD10CM, ICD11, SNOMED
from tests.reference import SHARED

TODAY = date(2026, 11, 28)
SYNTHEA = SHARED / "samples" / "synthea"


def facts_for(*conditions, **kw):
    return extract_facts(b.record(conditions=conditions, **kw), today=TODAY, hook="patient-view")


# --- code matching --------------------------------------------------------------------------------
@pytest.mark.parametrize("system, code", [
    (SNOMED, "47505003"), (SNOMED, "313182004"), (SNOMED, "699241002"), (SNOMED, "443919007"),
    (ICD10CM, "F43.1"), (ICD10CM, "F43.10"), (ICD10CM, "F43.11"), (ICD10CM, "F43.12"),
    (ICD10CM, "F4310"), (ICD10CM, "F431"), (ICD11, "6B40"), (ICD11, "6B41"),
])
def test_ptsd_code_forms(system, code):
    facts = facts_for(b.condition(code, system))
    assert facts.has_active_ptsd
    assert facts.ptsd[0].code.code == code and facts.ptsd[0].code.system == system


@pytest.mark.parametrize("system, code", [
    (ICD10CM, "F43.0"),       # acute stress reaction
    (SNOMED, "67195008"),     # acute stress disorder
    (SNOMED, "426174008"),    # chronic stress disorder
    (SNOMED, "F43.10"),       # ICD code under the SNOMED system
    (SNOMED, "38341003"),     # hypertension
])
def test_look_alikes_are_not_ptsd(system, code):
    assert facts_for(b.condition(code, system)).ptsd == []


def test_only_the_matching_coding_is_reported():
    c = b.condition("38341003")
    c["code"]["coding"].append(b.coding(ICD10CM, "F43.12", "PTSD, chronic"))
    fact = facts_for(c).ptsd[0]
    assert fact.code.label() == 'ICD-10-CM F43.12 "PTSD, chronic"'


# --- clinical / verification status --------------------------------------------------------------
@pytest.mark.parametrize("clinical", [None, "active", "recurrence", "relapse"])
def test_active_clinical_statuses(clinical):
    assert facts_for(b.condition(clinical=clinical)).has_active_ptsd


@pytest.mark.parametrize("abatement", [{"abatementDateTime": "2024-05-01"}, {"abatementString": "resolved 2024"},
                                       {"abatementBoolean": True}])
def test_no_status_but_an_abatement_is_not_active(abatement):
    """FHIR R4 con-4: an abated Condition is inactive, resolved or in remission."""
    assert not facts_for({**b.condition(clinical=None), **abatement}).has_active_ptsd
    assert facts_for({**b.condition(clinical=None), "abatementBoolean": False}).has_active_ptsd


def test_status_codes_are_read_case_insensitively():
    assert facts_for(b.condition(clinical="Active")).has_active_ptsd
    assert not facts_for(b.condition(verification="Refuted")).has_active_ptsd


@pytest.mark.parametrize("clinical", ["inactive", "remission", "resolved"])
def test_inactive_clinical_statuses(clinical):
    assert not facts_for(b.condition(clinical=clinical)).has_active_ptsd


@pytest.mark.parametrize("verification, counts", [
    ("refuted", False), ("entered-in-error", False), ("confirmed", True), (None, True),
])
def test_verification_status(verification, counts):
    assert facts_for(b.condition(verification=verification)).has_active_ptsd is counts


@pytest.mark.parametrize("verification", ["unconfirmed", "provisional", "differential", "Provisional"])
def test_unconfirmed_ptsd_is_kept_apart(verification):
    """Issue #8 point 7 (service rule): not confirmed PTSD counts for the safety cards (as a
    warning) but not for the guideline steps."""
    facts = facts_for(b.condition(verification=verification))
    assert not facts.has_active_ptsd and facts.ptsd == []
    assert [c.confirmed for c in facts.ptsd_unconfirmed] == [False]


def test_fact_provenance():
    c = b.condition("47505003", display="Posttraumatic stress disorder", text="PTSD", id="abc",
                    onset="2015-06-19T16:51:27+00:00", recorded="2015-07")
    fact = facts_for(c).ptsd[0]
    assert fact.reference == "Condition/abc"
    assert fact.text == "PTSD"
    assert (fact.clinical_status, fact.verification_status) == ("active", "confirmed")
    assert fact.onset == date(2015, 6, 19) and fact.recorded == date(2015, 7, 1)


# --- nightmares -----------------------------------------------------------------------------------
@pytest.mark.parametrize("system, code", [
    (SNOMED, "111487009"), (SNOMED, "428687006"), (ICD10CM, "F51.5"), (ICD10CM, "F515"),
])
def test_nightmare_codes(system, code):
    assert facts_for(b.condition(code, system)).has_active_nightmares


def test_ptsd_nightmares_code_gives_both_facts():
    facts = facts_for(b.condition("428687006"))
    assert [f.kind for f in facts.ptsd] == ["ptsd"] and [f.kind for f in facts.nightmares] == ["nightmares"]


def test_plain_nightmares_are_not_ptsd():
    facts = facts_for(b.condition("111487009"))
    assert facts.nightmares and not facts.ptsd


def test_resolved_nightmares_do_not_count():
    assert not facts_for(b.condition("F51.5", ICD10CM, clinical="resolved")).has_active_nightmares


# --- robustness -----------------------------------------------------------------------------------
def test_malformed_conditions_are_skipped_and_counted():
    good = b.condition(id="good")
    string_code = {**b.condition(id="s1"), "code": "F43.10"}
    string_status = {**b.condition(id="s2"), "clinicalStatus": "active"}
    no_subject = {k: v for k, v in b.condition(id="s3").items() if k != "subject"}  # not an element read
    bad_date = b.condition(id="s4", onset="19-06-2015")
    facts = facts_for(good, string_code, string_status, no_subject, bad_date, "not a resource", None)
    # Safety first: a PTSD diagnosis with an unrelated malformed element (no subject, a bad date)
    # still counts, read from the elements that read; an unreadable code does not, and an
    # unreadable status is unknown (never guessed active or inactive).
    assert [f.reference for f in facts.ptsd] == ["Condition/good", "Condition/s3", "Condition/s4"]
    assert facts.ptsd[2].onset is None
    assert [f.reference for f in facts.ptsd_unknown_status] == ["Condition/s2"]
    assert facts.skipped == {"Condition": 3, "Condition (partly read)": 2}


def test_unrelated_conditions_are_not_validated_or_counted():
    unrelated = {k: v for k, v in b.condition("38341003").items() if k != "subject"}  # invalid, not a candidate
    assert facts_for(unrelated).skipped == {}


def test_record_lists_of_the_wrong_type_read_as_empty():
    record = b.record()
    record.conditions = {"resourceType": "Condition"}  # type: ignore[assignment]
    facts = extract_facts(record, today=TODAY, hook="patient-view")
    assert facts.ptsd == [] and facts.skipped == {}


def _paths(node, path=()):
    yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from _paths(child, path + (key,))


def test_random_corruption_never_raises():
    """Replace random elements of matching resources with junk: facts are built, never an exception."""
    import copy
    import random

    rng = random.Random(7)
    junk = [None, "x", 3, 2.5, True, [], {}, ["a"], {"a": 1}, "2020-13-40", -1]
    base = [b.condition("F43.10", ICD10CM, onset="2020-01-01"),
            b.med_request("197901", authored="2026-10-01", dosage=[b.dosage(1, "TAB", route="oral")]),
            b.med_request(reference="#m", contained=[b.medication("312941", id="m")], dosage=[b.dosage(50, "mg")]),
            b.procedure("emdr", b.PSYCHOTHERAPY, performed="2026-01-01")]
    skipped = 0
    for _ in range(300):
        resources = copy.deepcopy(base)
        target = rng.choice(resources)
        path = rng.choice([p for p in _paths(target) if p])
        parent = target
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = copy.deepcopy(rng.choice(junk))
        record = b.record(conditions=resources[:1], medication_requests=resources[1:3],
                          procedures=resources[3:], draft_orders=resources[1:3])
        facts = extract_facts(record, today=TODAY, hook=rng.choice(["order-select", "order-sign"]))
        assert isinstance(facts.combined, bool) and isinstance(facts.failed_ssri, bool)
        skipped += sum(facts.skipped.values())
    assert skipped > 0  # the corruption was noticed, not silently read


# --- real-shaped records --------------------------------------------------------------------------
def _synthea(prefix: str):
    path = next(SYNTHEA.glob(f"{prefix}_*.json"))
    return b.record_from_bundle(json.loads(path.read_text(encoding="utf-8")))


def test_synthea_eliseo_resolved_ptsd_and_old_sertraline():
    # The record holds PTSD 47505003 resolved 2017 and sertraline 328670 "Sertraline 100MG" (active,
    # authored 2015-07-03, 1 unit once daily), no trauma-focused Procedure.
    facts = extract_facts(_synthea("Eliseo_Cummings"), today=TODAY, hook="patient-view")
    assert facts.ptsd == [] and facts.sessions == [] and facts.skipped == {}
    [sertraline] = [d for d in facts.drugs if d.drug_class == "ssri"]
    # and an opioid, named on a benzodiazepine card (issue #8 point 8): "Acetaminophen/Hydrocodone", by its product code
    assert [(d.ingredient, d.matched_by) for d in facts.drugs if d.drug_class == "opioid"] == [("hydrocodone", "valueset")]
    assert (sertraline.ingredient, sertraline.code.code, sertraline.daily_dose_mg) == ("sertraline", "328670", 100.0)
    assert sertraline.status == "active" and not sertraline.is_current
    assert sertraline.authored_on == date(2015, 7, 3)


def test_synthea_ernie_brand_level_benzodiazepines():
    facts = extract_facts(_synthea("Ernie_Rosenbaum"), today=TODAY, hook="patient-view")
    assert sorted(d.ingredient for d in facts.drugs) == ["clonazepam", "diazepam", "diazepam"]
    assert all(d.drug_class == "benzodiazepine" and not d.is_current for d in facts.drugs)


def test_big_record_is_fast():
    record = _synthea("Eliseo_Cummings")
    copies = 100  # 22 clinical resources per copy: 2,200
    record.conditions = [dict(c, id=f"{c['id']}-{i}") for i in range(copies) for c in record.conditions]
    record.procedures = [dict(p, id=f"{p['id']}-{i}") for i in range(copies) for p in record.procedures]
    record.medication_requests = [dict(m, id=f"{m['id']}-{i}") for i in range(copies)
                                  for m in record.medication_requests]
    assert len(record.conditions) + len(record.procedures) + len(record.medication_requests) >= 2000
    extract_facts(record, today=TODAY, hook="patient-view")  # warm-up (terminology, validators)
    start = time.perf_counter()
    facts = extract_facts(record, today=TODAY, hook="patient-view")
    assert time.perf_counter() - start < 0.5
    assert len([d for d in facts.drugs if d.drug_class == "ssri"]) == copies
