"""Terminology data and look-ups (cds_service.facts.terminology)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cds_service.codesystems import PSYCHOTHERAPY
from cds_service.facts import build_terminology
from cds_service.facts.model import Code
from cds_service.facts.terminology import (
    DATA_DIR, ICD10CM, ICD11, RXNORM, SNOMED, Terminology, parse_site_code_map, system_name,
)
from tests.reference import SHARED

CLINICAL = SHARED / "clinical"
SYNTHEA = SHARED / "samples" / "synthea"
EXAMPLE_MAP = Path(__file__).resolve().parent.parent / "fixtures" / "site-code-map.example.json"


@pytest.fixture(scope="module")
def term() -> Terminology:
    return Terminology.load()


# --- system names ---------------------------------------------------------------------------------
@pytest.mark.parametrize("uri, name", [
    (SNOMED, "SNOMED CT"), (ICD10CM, "ICD-10-CM"), (ICD11, "ICD-11"), (RXNORM, "RxNorm"),
    ("http://www.ama-assn.org/go/cpt", "CPT"), ("http://snomed.info/sct/", "SNOMED CT"),
])
def test_system_name_known(uri, name):
    assert system_name(uri) == name


def test_system_name_unknown_is_the_uri():
    assert system_name("http://hospital.example.org/codes") == "http://hospital.example.org/codes"


def test_code_label_uses_system_name():
    assert Code(SNOMED, "47505003", "Posttraumatic stress disorder").label() == \
        'SNOMED CT 47505003 "Posttraumatic stress disorder"'
    assert Code(ICD10CM, "F43.10").label() == "ICD-10-CM F43.10"


# --- loading --------------------------------------------------------------------------------------
def test_default_terminology_is_cached():
    assert Terminology.load() is Terminology.load()


def test_file_site_map_is_cached_per_path():
    assert Terminology.load(str(EXAMPLE_MAP)) is Terminology.load(str(EXAMPLE_MAP))


# --- condition look-ups ---------------------------------------------------------------------------
@pytest.mark.parametrize("system, code", [
    (SNOMED, "47505003"), (ICD10CM, "F43.10"), (ICD10CM, "F4310"), (ICD10CM, " f43.12 "),
    (ICD10CM, "F43.1"), (ICD11, "6B41"), (SNOMED + "/", "313182004"),
])
def test_ptsd_codes(term, system, code):
    assert "ptsd" in term.condition_kinds(system, code)


@pytest.mark.parametrize("system, code", [
    (ICD10CM, "F43.0"), (SNOMED, "67195008"), (SNOMED, "F43.10"), (ICD10CM, "47505003"),
    ("http://hl7.org/fhir/sid/icd-10", "F43.0"), (None, "47505003"), ("urn:oid:2.16.840.1.113883.6.96", "F43.10"),
])
def test_not_ptsd_codes(term, system, code):
    assert not term.condition_kinds(system, code) & {"ptsd", "nightmares"}


@pytest.mark.parametrize("system, code", [
    ("urn:oid:2.16.840.1.113883.6.96", "47505003"),   # SNOMED CT by OID (CODES-2 §7)
    ("urn:oid:2.16.840.1.113883.6.90", "F43.10"),     # ICD-10-CM by OID
    ("URN:OID:2.16.840.1.113883.6.90", "F4312"),
    ("http://hl7.org/fhir/sid/icd-10", "F43.1"),      # WHO ICD-10 (non-US feeds)
    ("urn:oid:2.16.840.1.113883.6.3", "f43.1"),       # WHO ICD-10 by OID
])
def test_ptsd_coded_the_way_real_feeds_code_it(term, system, code):
    assert "ptsd" in term.condition_kinds(system, code)


def test_drugs_by_oid(term):
    assert term.drug_by_code("urn:oid:2.16.840.1.113883.6.88", "197901").ingredient == "lorazepam"
    assert term.drug_by_code("urn:oid:2.16.840.1.113883.4.9", "KE1SEN21RM").drug_class == "mdma"
    assert term.drug_by_code("urn:oid:1.2.3", "197901") is None  # an unknown OID is not RxNorm


def test_acute_stress_is_its_own_kind_never_ptsd(term):
    assert term.condition_kinds(SNOMED, "67195008") == {"acute-stress"}
    assert term.condition_kinds(ICD10CM, "F43.0") == {"acute-stress"}
    assert term.condition_kinds(SNOMED, "426174008") == frozenset()  # chronic stress disorder: nothing


def test_acute_stress_disorder_is_listed_as_look_alike(term):
    assert term.is_not_ptsd(SNOMED, "67195008") and term.is_not_ptsd(ICD10CM, "F430")


def test_ptsd_nightmare_code_is_both(term):
    assert term.condition_kinds(SNOMED, "428687006") == {"ptsd", "nightmares"}


# --- drug look-ups --------------------------------------------------------------------------------
def test_drug_by_value_set_code(term):
    m = term.drug_by_code(RXNORM, "197901")
    assert (m.ingredient, m.drug_class, m.matched_by) == ("lorazepam", "benzodiazepine", "valueset")


def test_drug_by_ingredient_and_legacy_code(term):
    assert term.drug_by_code(RXNORM, "36437").matched_by == "ingredient"
    legacy = term.drug_by_code(RXNORM, "563026")
    assert (legacy.ingredient, legacy.matched_by) == ("diazepam", "ingredient")


@pytest.mark.parametrize("text, ingredient", [
    ("Ativan 1 mg tablet", "lorazepam"), ("XANAX XR", "alprazolam"), ("Effexor XR 75 mg", "venlafaxine"),
    ("3,4-methylenedioxymethamphetamine", "midomafetamine"), ("MDMA-assisted therapy", "midomafetamine"),
    ("Zoloft", "sertraline"),
])
def test_drug_by_name(term, text, ingredient):
    assert term.drug_by_name(text).ingredient == ingredient


@pytest.mark.parametrize("text", ["Ativanx", "hydroxyzine", "Lexaprofen", ""])
def test_drug_by_name_needs_a_whole_word(term, text):
    assert term.drug_by_name(text) is None


def test_desvenlafaxine_codes_are_not_venlafaxine(term):
    # 24 HR desvenlafaxine 100 MG (VSAC 1213): an antidepressant of its own, not venlafaxine
    assert term.drug_by_code(RXNORM, "790264").ingredient == "desvenlafaxine"
    assert term.drug_by_name("desvenlafaxine 50 MG").ingredient == "desvenlafaxine"


def test_route_words(term):
    assert term.route_is_non_systemic("Intravenous route")
    assert term.route_is_non_systemic("IV")
    assert not term.route_is_non_systemic("Oral route")
    assert term.dose_form_is_non_systemic("diazepam 5 MG/ML Rectal Gel")
    assert not term.dose_form_is_non_systemic("diazepam 5 MG Oral Tablet [Schedule IV]")


def test_thresholds_from_data(term):
    t = term.thresholds
    assert t.ssri_min_daily_dose_mg == {"sertraline": 50.0, "paroxetine": 20.0, "venlafaxine": 37.5}
    assert t.at_min_dose("venlafaxine", 75) and not t.at_min_dose("venlafaxine", 37.5)  # above 37.5
    assert t.at_min_dose("sertraline", 50) and not t.at_min_dose("sertraline", 25)
    assert t.refill_bridge_days == 100 and t.default_supply_days == 30 and t.not_tolerated_within_days == 14
    assert t.ssri_min_weeks == 8 and t.current_max_age_days == 365


# --- therapy look-ups -----------------------------------------------------------------------------
@pytest.mark.parametrize("code", ["prolonged-exposure", "cognitive-processing-therapy", "emdr"])
def test_project_therapy_codes(term, code):
    assert term.therapy_by_code(PSYCHOTHERAPY, code) == (code, "valueset")


@pytest.mark.parametrize("text, therapy", [
    ("Prolonged Exposure therapy", "prolonged-exposure"), ("EMDR", "emdr"),
    ("Eye movement desensitisation and reprocessing", "emdr"),
    ("cognitive processing therapy, session 3", "cognitive-processing-therapy"),
    ("CPT 90837", None), ("CPT session", None), ("Psychotherapy", None),
    ("Referral to prolonged exposure therapy", None),
])
def test_therapy_by_text(term, text, therapy):
    assert term.therapy_by_text(text) == therapy


# --- site code map --------------------------------------------------------------------------------
def test_example_site_map_loads():
    t = Terminology.load(str(EXAMPLE_MAP))
    assert t.therapy_by_code("http://hospital.example.org/codes", "PSY-PE") == ("prolonged-exposure", "code-map")


def test_site_map_from_dict():
    t = Terminology.load({"procedures": [{"system": "urn:local", "code": "X1", "therapy": "emdr"}]})
    assert t.therapy_by_code("urn:local", "X1") == ("emdr", "code-map")
    assert Terminology.load().therapy_by_code("urn:local", "X1") is None  # default not changed


@pytest.mark.parametrize("data, message", [
    ([], "must be a JSON object"),
    ({}, "'procedures' must be a list"),
    ({"procedure": []}, "unknown key"),
    ({"procedures": ["PSY-PE"]}, r"procedures\[0\]: must be an object"),
    ({"procedures": [{"system": "s", "code": "c", "therapy": "tf-cbt"}]}, "is not one of"),
    ({"procedures": [{"system": "s", "code": "", "therapy": "emdr"}]}, "'code' must be a non-empty string"),
    ({"procedures": [{"system": "s", "code": "c", "therapy": "emdr", "colour": 1}]}, "unknown key"),
    ({"procedures": [{"system": "s", "code": "c", "therapy": "emdr"},
                     {"system": "s", "code": "c", "therapy": "prolonged-exposure"}]}, "two therapies"),
])
def test_invalid_site_map(data, message):
    with pytest.raises(ValueError, match=message):
        parse_site_code_map(data)


def test_site_map_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        Terminology.load(str(bad))
    with pytest.raises(ValueError, match="cannot read file"):
        Terminology.load(str(tmp_path / "missing.json"))


# --- data provenance ------------------------------------------------------------------------------
def _code_rows() -> list[dict]:
    cond = json.loads((DATA_DIR / "conditions.json").read_text(encoding="utf-8"))
    meds = json.loads((DATA_DIR / "medications.json").read_text(encoding="utf-8"))
    rows = cond["ptsd"] + cond["nightmares"] + cond["notPtsd"] + meds["otherLevelCodes"] + meds["substanceCodes"]
    rows += [{"code": i["rxnorm"], "source": i["rxnormSource"]} for i in meds["ingredients"].values() if "rxnorm" in i]
    return rows + meds["codes"]


def test_every_data_file_states_its_source():
    for path in DATA_DIR.glob("*.json"):
        assert json.loads(path.read_text(encoding="utf-8")).get("source"), path.name
    for row in _code_rows():
        assert row.get("source") or row.get("valueSets"), row


def test_every_code_comes_from_the_clinical_reference():
    """Each code is in a value set or code list of the clinical reference, or - the rows marked
    "observed in test data" - is a coding of the Synthea samples it was observed in."""
    corpus = "\n".join(p.read_text(encoding="utf-8") for p in CLINICAL.rglob("*.json"))
    known = set(re.findall(r"[\w.]+", corpus))
    samples = "\n".join(p.read_text(encoding="utf-8") for p in SYNTHEA.glob("*.json"))
    observed = set(re.findall(r'"code": "([^"]+)"', samples))
    rows = _code_rows()
    from_test_data = [r for r in rows if r.get("status", "").startswith("observed in test data")]
    assert len(from_test_data) >= 4
    assert [r["code"] for r in from_test_data if r["code"] not in observed] == []
    assert [r["code"] for r in rows if r not in from_test_data and r["code"] not in known] == []


def test_generated_files_are_up_to_date(tmp_path):
    build_terminology.write(CLINICAL, tmp_path)
    for name in ("conditions.json", "medications.json"):
        assert (tmp_path / name).read_text(encoding="utf-8") == (DATA_DIR / name).read_text(encoding="utf-8")
