"""Card content (cards/*.toml): it loads, it is complete and cited, and it renders conformant cards."""

from __future__ import annotations

import itertools

import msgspec
import json
import re
import shutil
from pathlib import Path

import pytest

from cds_service.codesystems import CARD_TOPIC, OVERRIDE_REASON, PSYCHOTHERAPY, REFERRAL, REFERRAL_CODES
from cds_service.config import REPO_ROOT
from cds_service.card_content import iter_codings
from cds_service.rendering import BUILTIN, CardContentError, CardLibrary, RenderError, md_escape, expected_indicator
from cds_service.rules import TOPICS, Finding, evaluate_rules
from cds_service.rules.knowledge import GUIDELINE
from cds_service.schemas.response import validate_response
from test_rules import drug, facts, order, ptsd
from tests.reference import SHARED

CARDS_DIR = REPO_ROOT / "cards"
CODELISTS = SHARED / "clinical" / "valuesets" / "derived" / "ptsd-cds-codelists.json"
ISSUE_TOPICS = {
    "step-1-trauma-focused-psychotherapy", "step-2-ssri", "step-3-nightmares", "step-4-venlafaxine",
    "step-5-combine", "step-6-specialized-referral", "benzodiazepine-avoid", "mdma-investigational",
    "dose-out-of-range", "order-not-checked"}
LONG = "Ünïcode <b>*long*</b> [value] " * 20  # worst case: long, with Markdown/HTML characters


@pytest.fixture(scope="module")
def library() -> CardLibrary:
    return CardLibrary.load(CARDS_DIR, topics=TOPICS)


def worst_case_findings(library: CardLibrary):
    """Every card x hook x combination of its flags, every value very long."""
    for card in library.cards.values():
        values = {n: LONG for n in card.placeholders if n not in BUILTIN}
        flag_sets = [set(c) for r in range(len(card.flags) + 1) for c in itertools.combinations(card.flags, r)]
        for hook in card.hooks:
            for flags in flag_sets:
                yield Finding(card.topic, hook, expected_indicator(card, hook, frozenset(flags)),
                              conditions=(ptsd(),), values=values,
                              flags=frozenset(flags), target_order="MedicationRequest/x",
                              open_steps=("step-1-trauma-focused-psychotherapy",))


# --- loading ----------------------------------------------------------------------------------
def test_card_files_are_exactly_the_issue_topics(library):
    assert set(library.topics) == ISSUE_TOPICS == set(TOPICS)
    files = {p.stem for p in CARDS_DIR.glob("*.toml")} - {"shared"}
    assert files == ISSUE_TOPICS


def test_every_card_cites_and_links_its_sources(library):
    for card in library.cards.values():
        assert card.citations, card.topic
        assert card.links and all(d.url.startswith(("https://", "http://")) for d in card.links), card.topic
        assert all(p.cite for p in card.paragraphs), card.topic
        # every guideline citation carries its strength as data, every other one its evidence
        for c in card.citations.values():
            if c.document.kind == "guideline":
                assert c.strength, (card.topic, c.id)
            elif c.document.kind != "service-rule":
                assert c.evidence and c.verification, (card.topic, c.id)


def test_summaries_stay_under_140_characters_with_worst_case_values(library):
    for finding in worst_case_findings(library):
        card = library.render(finding, patient_id="p1")
        assert 0 < len(card["summary"]) < 140, (finding.topic, finding.hook, card["summary"])


def test_every_rendering_is_a_conformant_card_without_empty_members(library):
    cards = [library.render(f, patient_id="p1") for f in worst_case_findings(library)]
    assert validate_response({"cards": cards}) == []
    for card in cards:
        assert card["source"]["topic"]["system"] == CARD_TOPIC
        assert all(r["system"] == OVERRIDE_REASON for r in card.get("overrideReasons", []))
        assert all(link["type"] == "absolute" for link in card["links"])


def test_record_values_cannot_inject_markup(library):
    escaped = 0
    for finding in worst_case_findings(library):
        detail = library.render(finding, patient_id="p1")["detail"]
        assert not re.search(r"(?<!\\)<[A-Za-z/]", detail), "unescaped HTML tag"
        assert not re.search(r"(?<!\\)\*long", detail)
        escaped += "\\*long\\*" in detail
    assert escaped  # the long values did reach the detail text, escaped
    assert md_escape("<script>*x*[y](z)") == "\\<script>\\*x\\*\\[y\\](z)"


def test_detail_ends_with_why_then_sources(library):
    for finding in worst_case_findings(library):
        detail = library.render(finding, patient_id="p1")["detail"]
        why, sources = detail.index("### Why this card"), detail.index("### Sources")
        assert why < sources and detail.count("### ") == 2
        cited = re.findall(r"^- \*\*(.+?)\*\*(?:: |$)", detail[sources:], flags=re.M)
        assert cited, finding.topic
        assert len(cited) == len(set(cited)), "each document once"  # statements: on the catalogue page
        # every paragraph before "Why" names its sources in brackets at the end
        for paragraph in detail[:why].strip().split("\n\n"):
            assert re.search(r"\([^()]+\)$", paragraph), paragraph


def test_suggested_resources_use_only_verified_codes(library):
    verified = {(c["system"], c["code"]): c.get("display")
                for group in json.loads(CODELISTS.read_text())["groups"].values()
                for c in group if c["status"] == "verified"}
    seen = 0
    for card in library.cards.values():
        for s in card.suggestions:
            for action in s.actions:
                for coding in iter_codings(action.resource or {}):
                    if coding["system"] == "http://unitsofmeasure.org":
                        continue  # a dose unit, not a clinical code
                    seen += 1
                    if coding["system"] == PSYCHOTHERAPY:
                        assert coding["code"] in ("prolonged-exposure", "cognitive-processing-therapy", "emdr",
                                                  "image-rehearsal-therapy")
                    elif coding["system"] == REFERRAL:
                        assert REFERRAL_CODES.get(coding["code"]) == coding["display"], coding
                    else:
                        assert verified.get((coding["system"], coding["code"])) == coding["display"], coding
    assert seen >= 6




def test_dose_card_states_each_checked_range_with_its_source(library):
    card = library.cards["dose-out-of-range"]
    cited_urls = {c.document.url for c in card.citations.values()}
    for ingredient, limits in GUIDELINE.dose_ranges.items():
        assert ingredient in card.flags
        texts = [p.text for p in card.paragraphs if ingredient in p.visible.when]
        assert len(texts) == 1, ingredient
        bounds = [b for b in (limits.min_mg, limits.max_mg, limits.max_mg_male) if b is not None]
        assert all(f"{b:g}" in texts[0] for b in bounds), ingredient
        assert limits.url in cited_urls, ingredient


# --- wording that GUIDELINE-FACTS corrects --------------------------------------------------------
def _all_text(card) -> str:
    parts = [card.title, *card.summaries.values(), *(p.text for p in card.paragraphs),
             *(c.statement for c in card.citations.values())]
    return "\n".join(parts)


def test_corrected_seed_claims_do_not_appear(library):
    everything = "\n".join(_all_text(c) for c in library.cards.values())
    for wrong in ("10-40", "10–40", "32.5", "63%", "9-12 months", "9–12 months", "53-85", "53–85", "triple"):
        assert wrong not in everything, wrong
    assert "causes" not in everything.lower()


def test_benzodiazepine_harms_are_associations(library):
    text = _all_text(library.cards["benzodiazepine-avoid"])
    assert "associated with" in text
    assert "Strong against" in {c.strength for c in library.cards["benzodiazepine-avoid"].citations.values()}


def test_prazosin_may_be_used_not_level_a(library):
    text = _all_text(library.cards["step-3-nightmares"])
    assert "Prazosin may be used" in text and "off-label" in text
    for sentence in re.split(r"(?<=[.;])\s+", text):
        if "Level A" in sentence:
            assert "no longer" in sentence or "downgraded" in sentence, sentence
        if "prazosin" in sentence.lower() and "recommended" in sentence:
            assert "may be used" in sentence, sentence


def test_mdma_card_quotes_no_efficacy_numbers(library):
    text = _all_text(library.cards["mdma-investigational"])
    assert "%" not in text and "CAPS" not in text
    assert "Schedule I" in text and "9 Aug 2024" in text and "phase 3 trial" in text
    assert "only within an authorised" not in text  # GUIDELINE-FACTS §8 says Schedule I, no more (issue #8 point 14)


# --- load-time validation -----------------------------------------------------------------------
@pytest.fixture
def cards_copy(tmp_path) -> Path:
    target = tmp_path / "cards"
    shutil.copytree(CARDS_DIR, target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("file, old, new, message", [
    ("step-2-ssri.toml", 'cite = ["sertraline-label", "paroxetine-label", "venlafaxine-trials"]', 'cite = ["no-such-citation"]',
     r"step-2-ssri.toml: detail\[6\]\.cite: unknown citation"),
    ("step-2-ssri.toml", 'cite = ["sertraline-label", "paroxetine-label", "venlafaxine-trials"]', "cite = []",
     r"step-2-ssri.toml: detail\[6\]\.cite"),
    ("step-1-trauma-focused-psychotherapy.toml", "offer PE, CPT or EMDR", "offer PE, CPT or EMDR " + "x" * 60,
     r"step-1-trauma-focused-psychotherapy.toml: summary.patient-view: \d+ characters"),
    ("step-4-venlafaxine.toml", "trial of {failed_ssri} failed", "trial of {failed_drug} failed", r"unknown placeholder\(s\) \['failed_drug'\]"),
    ("step-4-venlafaxine.toml", "trial of {failed_ssri} failed", "trial of {failed_ssri.__class__} failed", r"must be a plain name"),
    ("step-2-ssri.toml", "trial_weeks = { description", "trial_weeks = { max_length = 9, description",
     None),  # still valid: proves the mutation harness itself does not always fail
    ("step-2-ssri.toml", "**Offer sertraline", "<b>Offer sertraline", r"raw HTML"),
    ("step-1-trauma-focused-psychotherapy.toml", 'strength = "Strong for"\n', "",
     r"citations.vadod-psychotherapy.strength: is missing"),
    ("dose-out-of-range.toml", 'when = ["prazosin"]', 'when = ["prazosine"]', r"flag\(s\) \['prazosine'\] not declared"),
    ("benzodiazepine-avoid.toml", '"patient-declined-alternatives"]', '"patient-declined-alternative"]',
     r"override_reasons: not defined in shared.toml"),
    ("mdma-investigational.toml", 'order-sign = "critical"\n\n[summary]', 'order-sign = "urgent"\n\n[summary]',
     r"indicator.order-sign: must be one of"),
    ("step-6-specialized-referral.toml", 'status = "draft"', 'status = "active"', r"a suggested resource is a draft"),
    ("step-6-specialized-referral.toml", 'selection_behavior = "at-most-one"\n', "", r"selection_behavior: is missing"),
    ("shared.toml", 'url = "https://doi.org/10.5664/jcsm.7178"', 'url = "doi.org/10.5664/jcsm.7178"',
     r"sources.aasm-2018.url: must be an absolute"),
    ("step-3-nightmares.toml", 'topic = "step-3-nightmares"', 'topic = "step-3-nightmare"', r"must equal the file name"),
    # Full R4 validation of suggested resources at start (issue #7: fhir.resources where it is worth it)
    ("step-2-ssri.toml", 'doseQuantity = { value = 25,', 'doseQuantity = { value = "twenty-five",',
     r"step-2-ssri.toml: suggestions\[0\].actions\[0\].resource: not a valid FHIR R4 MedicationRequest"),
    ("step-1-trauma-focused-psychotherapy.toml", 'reasonReference = [{ reference = "{ptsd_condition}" }]',
     'reasonReference = { reference = "{ptsd_condition}" }', r"not a valid FHIR R4 ServiceRequest"),
    ("benzodiazepine-avoid.toml", '[indicator_when]\n# Every order is a taper or renewal of what the patient already takes: a warning, no removal.\ntaper-only = "warning"',
     '[indicator_when]\nno-such-flag = "warning"', r"indicator_when.no-such-flag: must be a flag declared"),
])
def test_bad_card_content_is_refused_naming_file_and_field(cards_copy, file, old, new, message):
    _edit(cards_copy / file, old, new)
    if message is None:
        CardLibrary.load(cards_copy, topics=TOPICS)
        return
    with pytest.raises(CardContentError, match=message):
        CardLibrary.load(cards_copy, topics=TOPICS)


def test_a_missing_or_extra_card_file_is_refused(cards_copy):
    (cards_copy / "step-5-combine.toml").unlink()
    with pytest.raises(CardContentError, match=r"missing \['step-5-combine'\]"):
        CardLibrary.load(cards_copy, topics=TOPICS)


def test_an_unused_citation_is_refused(cards_copy):
    _edit(cards_copy / "step-3-nightmares.toml", "[citations.aasm-irt]", "[citations.unused]\nsource = \"aasm-2018\"\n"
          "statement = \"x\"\nstrength = \"x\"\nverification = \"verified\"\n\n[citations.aasm-irt]")
    with pytest.raises(CardContentError, match=r"cited by no paragraph: \['unused'\]"):
        CardLibrary.load(cards_copy, topics=TOPICS)


# --- rendering contracts -----------------------------------------------------------------------
def test_every_suggested_resource_is_valid_fhir_r4(library):
    """What the service puts into the EHR's order basket passes a strict R4B reader
    (fhir.resources), for every card kind, hook and combination of flags."""
    from cds_service.facts.fhir_read import strict_problems

    checked = 0
    for finding in worst_case_findings(library):
        card = library.render(finding, patient_id="p1")
        for suggestion in card.get("suggestions", []):
            for action in suggestion["actions"]:
                if "resource" in action:
                    assert strict_problems(action["resource"]) == [], (finding.topic, action["resource"])
                    checked += 1
    assert checked >= 8  # three referrals, two SSRI drafts, venlafaxine, the specialised programme...


def test_render_refuses_a_finding_that_does_not_fit_its_card(library):
    base = Finding("benzodiazepine-avoid", "order-select", "critical",
                   values={"drug": "x", "daily_dose": "y", "orders": "x, y"},
                   target_order="MedicationRequest/1")
    library.render(base, patient_id="p")
    for bad in (Finding("benzodiazepine-avoid", "order-select", "warning", values=base.values),
                Finding("benzodiazepine-avoid", "order-select", "critical", values={**base.values, "dose": "1"}),
                Finding("benzodiazepine-avoid", "order-select", "critical", values=base.values, flags=frozenset({"x"})),
                Finding("dose-out-of-range", "patient-view", "warning"),
                Finding("mdma-investigational", "order-select", "critical", values={"drug": "x"})):
        with pytest.raises(RenderError):
            library.render(bad, patient_id="p")


def test_delete_suggestion_targets_the_order_and_is_dropped_without_an_id(library):
    [finding] = evaluate_rules("order-select", facts(drafts=[order("lorazepam", "d-7")]))
    card = library.render(finding, patient_id="p1")
    [suggestion] = card["suggestions"]
    assert suggestion["actions"] == [{"type": "delete", "description": suggestion["actions"][0]["description"],
                                      "resourceId": "MedicationRequest/d-7"}]
    assert card["selectionBehavior"] == "any" and card["indicator"] == "critical"
    no_id = library.render(msgspec.structs.replace(finding, orders=()) if hasattr(finding, "__struct_fields__")
                           else type(finding)(**{**finding.__dict__, "orders": ()}), patient_id="p1")
    assert "suggestions" not in no_id and "selectionBehavior" not in no_id


def test_several_benzodiazepine_orders_are_one_card_with_one_removal_each(library):
    """One card per concern (issue #8 point 16): both orders named, each removable on its own."""
    [finding] = evaluate_rules("order-sign", facts(drafts=[order("lorazepam", "d-1", mg=2),
                                                           order("clonazepam", "d-2", mg=15)]))
    card = library.render(finding, patient_id="p1")
    assert card["selectionBehavior"] == "any"
    assert [s["actions"][0]["resourceId"] for s in card["suggestions"]] == ["MedicationRequest/d-1",
                                                                            "MedicationRequest/d-2"]
    assert [s["label"] for s in card["suggestions"]] == ["Remove the lorazepam order", "Remove the clonazepam order"]
    assert "lorazepam, 2 mg/day; clonazepam, 15 mg/day" in card["detail"]
    assert "lorazepam, clonazepam" in card["summary"]


def test_create_suggestions_are_draft_resources_for_the_patient(library):
    [step1] = evaluate_rules("patient-view", facts(n_sessions=0))
    card = library.render(step1, patient_id="pat-9")
    resources = [a["resource"] for s in card["suggestions"] for a in s["actions"]]
    assert [r["code"]["coding"][0]["code"] for r in resources] == [
        "prolonged-exposure", "cognitive-processing-therapy", "emdr"]
    for r in resources:
        assert r["resourceType"] == "ServiceRequest" and r["status"] == "draft" and r["intent"] == "order"
        assert r["subject"] == {"reference": "Patient/pat-9"}
        assert r["reasonReference"] == [{"reference": "Condition/ptsd-1"}]
    # without a Condition id there is no reasonReference at all (never an empty one)
    no_ref = Finding(**{**step1.__dict__, "values": {"session_count": "0"}})
    for s in library.render(no_ref, patient_id="pat-9")["suggestions"]:
        assert "reasonReference" not in s["actions"][0]["resource"]


def test_ssri_suggestions_only_without_a_current_antidepressant(library):
    [fresh] = evaluate_rules("patient-view", facts(n_sessions=9))
    card = library.render(fresh, patient_id="p")
    meds = [s["actions"][0]["resource"]["medicationCodeableConcept"]["coding"][0]["code"] for s in card["suggestions"]]
    assert meds == ["312940", "1738495", "313583"]  # sertraline, paroxetine, venlafaxine ER
    [on_drug] = evaluate_rules("patient-view", facts(n_sessions=9, drugs=[drug("sertraline", mg=25)]))
    card = library.render(on_drug, patient_id="p")
    assert "suggestions" not in card and "sertraline 25 mg/day" in card["detail"]


def test_the_mdma_card_does_not_repeat_the_step_cards(library):
    """Issue #8 point 16: the MDMA card says it is not a guideline step; it names no step card."""
    [mdma] = evaluate_rules("order-select", facts(n_sessions=0, drafts=[order("midomafetamine", "d-m")]))[:1]
    detail = library.render(mdma, patient_id="p")["detail"]
    assert "Not a step of guideline-based PTSD treatment" in detail
    assert library.cards["step-1-trauma-focused-psychotherapy"].title not in detail
    [pv] = evaluate_rules("patient-view", facts(n_sessions=0, drugs=[drug("midomafetamine")]))[:1]
    assert "the guideline-step card shows" in library.render(pv, patient_id="p")["detail"]
    [no_ptsd] = evaluate_rules("patient-view", facts(ptsd_active=False, drugs=[drug("midomafetamine")]))
    assert "guideline-step card" not in library.render(no_ptsd, patient_id="p")["detail"]
