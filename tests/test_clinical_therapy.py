"""Issue #8 points 11, 14/15 (step-1 and step-3 cards) and 17 (nightmare and referral part):
psychotherapy courses, declined psychotherapy, the nightmare card's actions, referral codes and the
site's outgoing code map. Same engine path as tests/test_engine_table.py."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import replace
from datetime import date, timedelta

import pytest

from cds_service.codesystems import PSYCHOTHERAPY, REFERRAL, map_outgoing, parse_outgoing_map
from cds_service.config import REPO_ROOT, Settings
from cds_service.engine import Engine
from cds_service.facts import builders as b
from cds_service.facts import extract_facts
from cds_service.facts.psychotherapy import CourseRules, assess_courses, course_rules, dedupe_sessions
from cds_service.facts.model import TherapySession
from cds_service.rules import evaluate_rules
from cds_service.rules.common import drug_draft_blocks
from cds_service.rules.knowledge import GUIDELINE
from cds_service.web.catalogue import catalogue
from test_engine_table import S1, S2, S3, S6, TODAY, load, record_of, run

SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
GUIDELINE_DATA = tomllib.loads((REPO_ROOT / "cds_service" / "rules" / "guideline.toml").read_text())
EXAMPLE_MAP = REPO_ROOT / "fixtures" / "site-code-map.example.json"
REFERRALS_1 = [("ServiceRequest", "prolonged-exposure"), ("ServiceRequest", "cognitive-processing-therapy"),
               ("ServiceRequest", "emdr")]
IRT = ("ServiceRequest", "image-rehearsal-therapy")
PRAZOSIN = ("MedicationRequest", "312593")

# fixture request -> {topic: (flags, [(resourceType, code) of each suggested resource])}
# The code is the project code of a referral, the RxNorm code of a draft.
TABLE = {
    "ptsd-new.patient-view": {S1: (set(), REFERRALS_1)},
    "ptsd-therapy-done.patient-view": {S1: ({"course-stopped"}, REFERRALS_1)},  # 10 of 12 CPT
    "ptsd-benzo-therapy.patient-view": {S1: ({"course-stopped"}, REFERRALS_1)},  # 3 of 8 PE, last 72 days ago
    "ptsd-cpt-underway.patient-view": {S1: ({"course-under-way"}, [])},  # continue, no referral
    "ptsd-duplicate-sessions.patient-view": {S1: ({"course-stopped"}, REFERRALS_1)},
    "ptsd-mixed-modalities.patient-view": {S1: ({"course-stopped"}, REFERRALS_1)},
    "ptsd-cpt-complete.patient-view": {S2: (None, None)},
    "ptsd-therapy-declined.patient-view": {S2: (None, None)},
    "ptsd-all-done.patient-view": {S1: ({"course-stopped"}, REFERRALS_1), S3: (set(), [IRT, PRAZOSIN])},
    "ptsd-all-done-12.patient-view": {S6: (None, None), S3: (set(), [IRT, PRAZOSIN])},
    "ptsd-ssri-failed-nightmares.patient-view": {S3: (set(), [IRT, PRAZOSIN])},
    # under 18: a complete PE course still gives step 1; no prazosin draft
    "ptsd-teen.patient-view": {S1: ({"under-18", "course-complete"}, REFERRALS_1),
                               S3: ({"no-drug-draft", "under-18"}, [IRT])},
}


def _suggested(card: dict) -> list[tuple[str, str]]:
    out = []
    for s in card.get("suggestions", []):
        for a in s["actions"]:
            r = a["resource"]
            concept = r.get("code") or r.get("medicationCodeableConcept")
            code = next(c["code"] for c in concept["coding"] if c["system"] in (PSYCHOTHERAPY, RXNORM, REFERRAL))
            out.append((r["resourceType"], code))
    return out


@pytest.mark.parametrize("name", sorted(TABLE))
def test_fixture_table(engine, settings, name):
    _body, findings, cards = run(engine, settings, name)
    by_topic = {c["source"]["topic"]["code"]: c for c in cards}
    found = {f.topic: f for f in findings}
    for topic, (flags, suggested) in TABLE[name].items():
        assert topic in by_topic, (name, list(by_topic))
        if flags is not None:
            assert set(found[topic].flags) == flags, (name, topic)
        if suggested is not None:
            assert _suggested(by_topic[topic]) == suggested, (name, topic)


def card_of(engine, settings, name, topic):
    return next(c for c in run(engine, settings, name)[2] if c["source"]["topic"]["code"] == topic)


# --- the step-1 card's words per course state ----------------------------------------------------
def test_course_stopped_says_n_of_m_resume_or_restart(engine, settings):
    card = card_of(engine, settings, "ptsd-therapy-done.patient-view", S1)
    assert card["summary"].startswith("PTSD: 10 of 12 cognitive processing therapy (CPT) sessions done; resume or restart")
    assert "**10 of 12 cognitive processing therapy (CPT) sessions done** (last session: 2025-03-07)" in card["detail"]


def test_course_under_way_says_continue_n_so_far_without_a_referral(engine, settings):
    card = card_of(engine, settings, "ptsd-cpt-underway.patient-view", S1)
    assert "continue the cognitive processing therapy (CPT) course: 5 sessions so far" in card["summary"]
    assert "No new referral is needed" in card["detail"] and "suggestions" not in card
    assert "selectionBehavior" not in card


def test_duplicates_count_once_and_generic_psychotherapy_not_at_all(engine, settings):
    _body, findings, cards = run(engine, settings, "ptsd-duplicate-sessions.patient-view")
    [f] = [f for f in findings if f.topic == S1]
    assert f.session_count == 5 and f.values["course_sessions"] == "5" and f.values["course_needed"] == "6"


def test_therapies_are_not_added_up_and_the_latest_is_named(engine, settings):
    _body, findings, _cards = run(engine, settings, "ptsd-mixed-modalities.patient-view")
    [f] = [f for f in findings if f.topic == S1]
    assert f.session_count == 14 and f.values["course_therapy"] == "EMDR"
    assert (f.values["course_sessions"], f.values["course_needed"]) == ("4", "6")


def test_the_seed_rule_is_gone_from_the_card(engine, settings):
    text = (REPO_ROOT / "cards" / "step-1-trauma-focused-psychotherapy.toml").read_text()
    assert "fewer than 9" not in text and "9 recorded" not in text
    card = card_of(engine, settings, "ptsd-new.patient-view", S1)
    assert "12–16" not in card["detail"]  # a CBT figure, not a length for PE/CPT/EMDR (catalogue only)
    assert "12 CPT, 8 PE or 6 EMDR" in card["detail"]


# --- course facts ---------------------------------------------------------------------------------
def _sessions(therapy: str, n: int, last: date, step_days: int = 7) -> list:
    return [b.procedure(therapy, PSYCHOTHERAPY, id=f"{therapy}-{i}", performed=last - timedelta(days=step_days * i))
            for i in range(n)]


def facts_of(*procedures, **kw):
    return extract_facts(b.record(conditions=[b.condition()], procedures=procedures, **kw),
                         today=TODAY, hook="patient-view")


@pytest.mark.parametrize("therapy, needed", [("cognitive-processing-therapy", 12), ("prolonged-exposure", 8),
                                             ("emdr", 6)])
def test_protocol_length_completes_a_course(therapy, needed):
    old = TODAY - timedelta(days=400)
    short = facts_of(*_sessions(therapy, needed - 1, old))
    assert not short.adequate_psychotherapy and [e.topic for e in evaluate_rules("patient-view", short)] == [S1]
    done = facts_of(*_sessions(therapy, needed, old))
    assert done.adequate_psychotherapy and S1 not in [e.topic for e in evaluate_rules("patient-view", done)]
    assert done.course.needed == needed and done.course.complete


def test_course_sessions_come_from_the_data_file():
    data = json.loads((REPO_ROOT / "cds_service" / "data" / "terminology" / "psychotherapy.json").read_text())
    rules = course_rules()
    assert rules.needed == {t: s["courseSessions"] for t, s in data["therapies"].items() if "courseSessions" in s}
    assert rules.under_way_days == data["course"]["underWayDays"] == 30


@pytest.mark.parametrize("days_ago, under_way", [(0, True), (30, True), (31, False)])
def test_under_way_window(days_ago, under_way):
    f = facts_of(*_sessions("emdr", 3, TODAY - timedelta(days=days_ago)))
    assert f.course.under_way is under_way and f.course_under_way is under_way
    [step] = [e for e in evaluate_rules("patient-view", f) if e.topic == S1]
    assert ("course-under-way" in step.flags) is under_way and ("course-stopped" in step.flags) is not under_way


def test_under_way_window_is_configurable():
    sessions = [TherapySession("Procedure/x", "emdr", "EMDR", "name", None, TODAY - timedelta(days=40))]
    rules = replace(course_rules(), under_way_days=60)
    assert isinstance(rules, CourseRules)
    assert assess_courses(sessions, TODAY, rules)[0].under_way
    assert not assess_courses(sessions, TODAY)[0].under_way


def test_same_day_same_therapy_counts_once_other_therapy_does_not_merge():
    day = TODAY - timedelta(days=100)
    s = [TherapySession(f"Procedure/{i}", t, "x", "name", None, day)
         for i, t in enumerate(["emdr", "emdr", "prolonged-exposure"])]
    s.append(TherapySession("Procedure/undated-1", "emdr", "x", "name", None, None))
    s.append(TherapySession("Procedure/undated-2", "emdr", "x", "name", None, None))
    kept = dedupe_sessions(s)
    assert [x.reference for x in kept] == ["Procedure/0", "Procedure/2", "Procedure/undated-1", "Procedure/undated-2"]


def test_undated_sessions_count_but_never_make_a_course_under_way():
    f = facts_of(*[b.procedure("emdr", PSYCHOTHERAPY, id=f"u{i}") for i in range(3)])
    assert f.course.sessions == 3 and not f.course.under_way and f.course.last is None
    [step] = [e for e in evaluate_rules("patient-view", f) if e.topic == S1]
    assert step.values["course_last"] == "date not recorded" and "course-stopped" in step.flags


def test_a_complete_course_wins_over_a_later_one_under_way():
    old = _sessions("prolonged-exposure", 8, TODAY - timedelta(days=300))
    new = _sessions("emdr", 2, TODAY - timedelta(days=3))
    f = facts_of(*old, *new)
    assert f.adequate_psychotherapy and f.course.therapy == "prolonged-exposure"


# --- declined psychotherapy -----------------------------------------------------------------------
def declined(reason_code=None, reason_system=SNOMED, *, reason_text=None, code="prolonged-exposure",
             system=PSYCHOTHERAPY, text=None, performed=None, id="d1"):
    p = b.procedure(code, system, id=id, text=text, status="not-done", performed=performed)
    p["statusReason"] = b.concept(b.coding(reason_system, reason_code), text=reason_text) if reason_code \
        else b.concept(text=reason_text)
    return p


@pytest.mark.parametrize("procedure", [
    declined("105480006"),  # Procedure declined by patient
    declined("183944003"),  # Procedure refused (legacy, still matched)
    declined("416432009"),  # Procedure not wanted
    declined("895451009", code="90837", system=b.CPT),  # referral declined, generic psychotherapy code
    declined("105480006", "urn:oid:2.16.840.1.113883.6.96"),  # SNOMED as an OID
    declined(reason_text="Patient refused", code=None, text="Declined prolonged exposure therapy"),
    declined(reason_text="declined", code="18512000", system=SNOMED),  # individual psychotherapy
], ids=["declined", "refused-legacy", "not-wanted", "referral-declined", "oid", "text", "generic-snomed"])
def test_declined_psychotherapy_moves_to_the_medication_step(procedure):
    f = facts_of(procedure)
    assert f.psychotherapy_declined and len(f.declined_therapy) == 1
    assert [e.topic for e in evaluate_rules("patient-view", f)] == [S2]


@pytest.mark.parametrize("procedure", [
    declined("183932001"),  # Procedure contraindicated: not a refusal
    declined("428119001"),  # not indicated
    declined("182895007"),  # Drug declined by patient: medication-specific
    declined("105480006", code="73761001", system=SNOMED, text="Colonoscopy"),  # not psychotherapy
    declined("105480006", code="image-rehearsal-therapy"),  # nightmare therapy, not PTSD psychotherapy
    declined(reason_text="patient unwell"),
], ids=["contraindicated", "not-indicated", "drug-declined", "colonoscopy", "irt", "text-no-refusal"])
def test_not_a_declined_psychotherapy(procedure):
    f = facts_of(procedure)
    assert not f.psychotherapy_declined
    assert [e.topic for e in evaluate_rules("patient-view", f)] == [S1]


def test_an_unreadable_status_reason_is_no_refusal_and_skips_nothing():
    p = declined("105480006")
    p["statusReason"] = "declined"  # a string where a CodeableConcept belongs
    f = facts_of(p, *_sessions("emdr", 2, TODAY - timedelta(days=200)))
    assert not f.psychotherapy_declined and f.session_count == 2 and not f.skipped


def test_sessions_after_the_refusal_or_a_course_under_way_keep_step_1():
    later = facts_of(declined("105480006", performed=TODAY - timedelta(days=300)),
                     *_sessions("emdr", 2, TODAY - timedelta(days=100)))
    assert not later.psychotherapy_declined
    under_way = facts_of(declined("105480006"), *_sessions("emdr", 2, TODAY - timedelta(days=5)))
    assert not under_way.psychotherapy_declined
    before = facts_of(declined("105480006", performed=TODAY - timedelta(days=10)),
                      *_sessions("emdr", 2, TODAY - timedelta(days=100)))
    assert before.psychotherapy_declined
    assert [e.topic for e in evaluate_rules("patient-view", before)] == [S2]


def test_under_18_declined_psychotherapy_still_gives_step_1():
    f = extract_facts(b.record(conditions=[b.condition()], procedures=[declined("105480006")]),
                      today=TODAY, hook="patient-view")
    f.age_years = 15
    assert [e.topic for e in evaluate_rules("patient-view", f)] == [S1]


# --- the nightmare card: IRT referral and prazosin draft --------------------------------------------
def _prazosin_draft(card: dict) -> dict:
    [r] = [a["resource"] for s in card.get("suggestions", []) for a in s["actions"]
           if a["resource"]["resourceType"] == "MedicationRequest"]
    return r


def test_prazosin_draft_dose_equals_the_rules_data(engine, settings):
    card = card_of(engine, settings, "ptsd-ssri-failed-nightmares.patient-view", S3)
    draft = _prazosin_draft(card)
    data = GUIDELINE_DATA["drafts"]["prazosin"]
    [dose] = [d["doseQuantity"] for i in draft["dosageInstruction"] for d in i["doseAndRate"]]
    assert (dose["value"], dose["code"]) == (data["start_mg"], "mg")
    assert draft["medicationCodeableConcept"]["coding"][0]["code"] == data["rxnorm"]
    assert draft["dosageInstruction"][0]["timing"]["repeat"]["when"] == ["HS"]
    assert f"start {data['start_mg']:g} mg at bedtime" in card["detail"]
    assert data["start_mg"] <= GUIDELINE.dose_ranges["prazosin"].max_for(None)
    assert draft["reasonReference"] == [{"reference": "Condition/ptsd-ssri-failed-nightmares-c2"}]  # nightmares


def test_no_prazosin_draft_while_prazosin_is_current(engine, settings):
    body = load("ptsd-ssri-failed-nightmares.patient-view")
    pid = body["context"]["patientId"]
    current = b.med_request("312594", id="praz-1", authored=(TODAY - timedelta(days=20)).isoformat(),
                            dosage=[b.dosage(2, "mg")])
    current["subject"] = {"reference": f"Patient/{pid}"}
    body["prefetch"]["medications"]["entry"].append({"resource": current})
    record = record_of(body, settings)
    [card] = [c for c in engine.evaluate("patient-view", record, TODAY) if c["source"]["topic"]["code"] == S3]
    assert _suggested(card) == [IRT]
    assert "already on record" in card["detail"]


def test_drug_draft_blocks_stub():
    f = facts_of()
    assert drug_draft_blocks(f) == frozenset()
    f.age_years = GUIDELINE.adult_age_years - 1
    assert drug_draft_blocks(f) == {"under-18"}
    f.age_years = GUIDELINE.adult_age_years
    assert drug_draft_blocks(f) == frozenset()


def test_nightmare_card_says_what_the_source_says_about_venlafaxine(engine, settings):
    card = card_of(engine, settings, "ptsd-ssri-failed-nightmares.patient-view", S3)
    assert "For nightmare disorder, clonazepam and venlafaxine are not recommended" in card["detail"]
    assert "for PTSD itself, venlafaxine remains a first-line medication" in card["detail"]
    assert "Level A" not in card["detail"].split("### Sources")[0]


# --- referral codes and the outgoing site code map ---------------------------------------------------
def test_referrals_carry_a_verified_snomed_code_next_to_the_project_code(engine, settings):
    s1 = card_of(engine, settings, "ptsd-new.patient-view", S1)
    for s in s1["suggestions"]:
        coding = s["actions"][0]["resource"]["code"]["coding"]
        assert {"system": SNOMED, "code": "18512000", "display": "Individual psychotherapy (regime/therapy)"} in coding
    s3 = card_of(engine, settings, "ptsd-ssri-failed-nightmares.patient-view", S3)
    irt = next(a["resource"] for s in s3["suggestions"] for a in s["actions"] if a["resource"]["resourceType"] == "ServiceRequest")
    assert irt["code"]["text"] == "Image rehearsal therapy (IRT) for nightmares"
    assert [c["code"] for c in irt["code"]["coding"]] == ["image-rehearsal-therapy", "75516001"]


@pytest.fixture(scope="module")
def mapped_engine():
    return Engine(Settings(auth="off", env="development", site_code_map=str(EXAMPLE_MAP)))


def test_site_code_map_adds_local_codes_to_outgoing_suggestions(mapped_engine, settings):
    record = record_of(load("ptsd-ssri-failed-nightmares.patient-view"), settings)
    [s3] = [c for c in mapped_engine.evaluate("patient-view", record, TODAY) if c["source"]["topic"]["code"] == S3]
    irt, praz = [a["resource"] for s in s3["suggestions"] for a in s["actions"]]
    assert irt["code"]["coding"][0] == {"system": "http://hospital.example.org/orderables", "code": "REF-IRT",
                                        "display": "Referral: imagery rehearsal therapy (sleep clinic)"}
    assert [c["code"] for c in irt["code"]["coding"][1:]] == ["image-rehearsal-therapy", "75516001"]
    assert praz["medicationCodeableConcept"]["coding"][0]["code"] == "F-0812"
    record = record_of(load("ptsd-new.patient-view"), settings)
    [s1] = mapped_engine.evaluate("patient-view", record, TODAY)
    assert [s["actions"][0]["resource"]["code"]["coding"][0]["code"] for s in s1["suggestions"]] == [
        "REF-PE", "REF-CPT", "REF-EMDR"]
    # the engine without a map leaves the service's codes alone
    plain = Engine(settings).evaluate("patient-view", record, TODAY)[0]
    assert plain["suggestions"][0]["actions"][0]["resource"]["code"]["coding"][0]["system"] == PSYCHOTHERAPY


def test_outgoing_map_for_a_text_only_referral_code_and_several_local_codes():
    mapping = parse_outgoing_map({"outgoing": [
        {"ours": {"system": REFERRAL, "code": "specialised-ptsd-programme"},
         "local": {"system": "urn:x", "code": "A"}},
        {"ours": {"system": REFERRAL, "code": "specialised-ptsd-programme"},
         "local": {"system": "urn:y", "code": "B", "display": "b"}}]})
    card = {"suggestions": [{"actions": [{"type": "create", "resource": {
        "resourceType": "ServiceRequest", "code": {"text": "t", "coding": [
            {"system": REFERRAL, "code": "specialised-ptsd-programme"}]}}}]}]}
    map_outgoing([card], mapping)
    codes = [c["code"] for c in card["suggestions"][0]["actions"][0]["resource"]["code"]["coding"]]
    assert codes == ["A", "B", "specialised-ptsd-programme"]
    map_outgoing([card], mapping)  # applying twice adds nothing
    assert len(card["suggestions"][0]["actions"][0]["resource"]["code"]["coding"]) == 3


@pytest.mark.parametrize("outgoing, message", [
    ("x", "'outgoing' must be a list"),
    ([{"ours": {"system": "s", "code": "c"}}], r"outgoing\[0\]\.local: must be an object"),
    ([{"ours": {"system": "s"}, "local": {"system": "l", "code": "c"}}], r"outgoing\[0\]\.ours: 'system' and 'code'"),
    ([{"ours": {"system": "s", "code": "c"}, "local": {"system": "l", "code": ""}}], r"'code' must be a non-empty"),
    ([{"ours": {"system": "s", "code": "c"}, "local": {"system": "l", "code": "c"}, "x": 1}], r"unknown key"),
])
def test_a_bad_outgoing_map_is_refused_at_start(tmp_path, outgoing, message):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"procedures": [], "outgoing": outgoing}))
    with pytest.raises(ValueError, match=message):
        Engine(Settings(auth="off", env="development", site_code_map=str(path)))


# --- short cards, nothing internal ------------------------------------------------------------------
INTERNAL = re.compile(r"§|GUIDELINE-FACTS|CODES-2|CODES\.md|issue #|no web address|first author not confirmed|>=")


@pytest.mark.parametrize("name, topic", [(n, t) for n, rows in TABLE.items() for t in rows if t in (S1, S3)])
def test_cards_are_short_and_say_nothing_internal(engine, settings, name, topic):
    card = card_of(engine, settings, name, topic)
    advice = card["detail"].split("### Why this card")[0]
    # the paragraphs without their source marks: what the clinician reads as advice and evidence
    words = re.sub(r" \([^()]*\)$", "", advice.strip(), flags=re.M)
    assert len(words) <= 700, (name, topic, len(words))
    assert not INTERNAL.search(card["summary"] + card["detail"]), (name, topic)


def test_long_text_is_on_the_catalogue_page_not_in_the_card(engine, settings):
    views = {v["topic"]: v for v in catalogue(engine.cards.cards, tuple(engine.cards.cards))}
    step3 = [p for p in engine.cards.cards[S3].paragraphs if p.catalogue_only]
    assert step3 and "2–6 mg" in step3[0].text
    pages = json.dumps(views[S3], ensure_ascii=False)
    assert "2–6 mg" in pages and "this page only" in pages
    card = card_of(engine, settings, "ptsd-ssri-failed-nightmares.patient-view", S3)
    assert "2–6 mg at night in civilian" not in card["detail"]


# --- refusal codes come from the value sets (copies in reference/, see reference/SOURCES.md) ---------
def _value_set_codes() -> dict[str, str]:
    from tests.reference import REFERENCE

    base = REFERENCE / "clinical" / "valuesets" / "more"
    codes: dict[str, str] = {}
    for path in ("ecqm-content-qicore-2024/valueset-2.16.840.1.113883.3.117.1.7.1.93.json",
                 "ecqm-content-qicore-2024/valueset-2.16.840.1.113883.3.526.3.1582.json",
                 "ecqm-content-qicore-2025/valueset-2.16.840.1.113883.3.600.791.json"):
        vs = json.loads((base / path).read_text())
        for c in vs.get("expansion", {}).get("contains", []):
            codes[c["code"]] = c["display"]
        for inc in vs.get("compose", {}).get("include", []):
            for c in inc.get("concept", []):
                codes.setdefault(c["code"], c["display"])
    # the FHIR R4 procedure-not-performed-reason parents (is-a filters, no displays)
    vs = json.loads((base / "fhir-r4" / "ValueSet-procedure-not-performed-reason.json").read_text())
    for inc in vs["compose"]["include"]:
        for f in inc.get("filter", []):
            codes.setdefault(f["value"], "")
    return codes


def test_refusal_codes_are_in_the_refusal_value_sets():
    data = json.loads((REPO_ROOT / "cds_service" / "data" / "terminology" / "psychotherapy.json").read_text())
    known = _value_set_codes()
    refusal = data["declined"]["refusalCodes"]
    assert set(refusal) <= set(known), sorted(set(refusal) - set(known))
    for code, display in refusal.items():
        # the value sets' displays where they give one (the legacy 183944003 only in the FHIR filter)
        assert not known[code] or known[code].split(" (Updated")[0] == display, (code, known[code], display)
    # medication-specific refusals and reasons that are no refusal stay out
    assert not {"182895007", "406149000", "275936005", "183932001", "428119001", "416406003",
                "416064006", "394908001", "416237000"} & set(refusal)
