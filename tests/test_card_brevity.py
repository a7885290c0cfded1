"""Cards a clinician reads (issue #8 point 15): short, free of internal text, readable https links.

``card_content.brevity_problems`` is run over the rendered cards of every fixture request and over
every card kind on every hook (with each of its flags). Card texts are rewritten on three other
branches at the same time: ``PENDING`` names the card kinds that still fail here and why; those
are checked to still fail (so a stale entry is noticed), every other card kind must pass. The
lead empties ``PENDING`` at merge.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cds_service.card_content import (
    DETAIL_LIMIT, INTERNAL_TEXT, CardContentError, advice_and_evidence, brevity_problems, visible_text,
)
from cds_service.config import REPO_ROOT
from cds_service.rendering import BUILTIN, CardLibrary, expected_indicator
from cds_service.rules import TOPICS, Finding
from tests.test_engine_table import TABLE, load, record_of
from test_rules import nightmares, ptsd

CARDS_DIR = REPO_ROOT / "cards"
TODAY = date(2026, 11, 28)
BASE = "https://cds.example.org"

# card kind -> why it still fails on this branch (texts rewritten on another branch)
PENDING: dict[str, str] = {
}
# card kind -> why one of its links is not yet an https page a person reads, from a listed domain
PENDING_LINKS: dict[str, str] = {
}


@pytest.fixture(scope="module")
def fixture_cards(engine, settings) -> list[tuple[str, dict]]:
    """(fixture request, rendered card) of every fixture request, cards linked to the catalogue."""
    out = []
    for name in sorted(TABLE):
        body = load(name)
        for card in engine.run(body["hook"], record_of(body, settings), TODAY, catalogue_base=BASE).cards:
            out.append((name, card))
    return out


def typical_findings(library: CardLibrary):
    """Every card kind on every hook, without flags and with each of its flags, typical values."""
    for card in library.cards.values():
        values = {n: "sertraline" for n in card.placeholders if n not in BUILTIN}
        for hook in card.hooks:
            for flags in [frozenset()] + [frozenset([f]) for f in card.flags]:
                yield Finding(card.topic, hook, expected_indicator(card, hook, flags), conditions=(ptsd(),),
                              values=values, flags=flags, target_order="MedicationRequest/x",
                              open_steps=("step-1-trauma-focused-psychotherapy",))


def topic_of(card: dict) -> str:
    return card["source"]["topic"]["code"]


# --- the checker itself ---------------------------------------------------------------------------
def _card(detail: str, **more) -> dict:
    return {"summary": "Do this.", "indicator": "info", "detail": detail,
            "source": {"label": "ptsd-cds", "topic": {"code": "x"}}, **more}


WHY = "### Why this card\n\n- **PTSD:** " + "long record fact " * 60 + "\n\n"


def test_a_short_clean_card_has_no_problems_and_the_why_list_and_catalogue_link_do_not_count():
    advice = "**Offer trauma-focused psychotherapy.** " + "x" * 500 + " (VA/DoD 2023)"
    sources = "### Sources\n\n- **[VA/DoD 2023](https://www.acpjournals.org/doi/10.7326/M23-2757)** — Strong for."
    catalogue = "[More on this card](https://cds.example.org/cards/step-1-trauma-focused-psychotherapy)"
    card = _card(f"{advice}\n\n{catalogue}\n\n{WHY}{sources}")
    assert brevity_problems(card) == []
    text = visible_text(advice_and_evidence(card["detail"]))
    assert "long record fact" not in text and "More on this card" not in text and "acpjournals" not in text
    assert "VA/DoD 2023 — Strong for." in text and "**" not in text


def test_advice_and_evidence_over_the_limit_is_a_problem():
    assert DETAIL_LIMIT == 700
    card = _card("y" * 701 + "\n\n" + WHY)
    [problem] = brevity_problems(card)
    assert problem.startswith("detail: 701 characters") and "catalogue_only" in problem
    assert brevity_problems(_card("y" * 700 + "\n\n" + WHY)) == []


@pytest.mark.parametrize("text, what", [
    ("as decided in issue #8", "an issue number"),
    ("see §7", "a section sign"),
    ("GUIDELINE-FACTS says so", "a reference file name"),
    ("code from CODES-2", "a reference file name"),
    ("Smith 2022 (first author not confirmed)", "a reviewer's note"),
    ("Green 2014 (no web address on file)", "a reviewer's note"),
    ("at >= 50 mg/day", "'>=' or '<='"),
    ("taken for 34.71 weeks", "weeks with decimals"),
    ("the order MedicationRequest/abc", "a raw resource id"),
])
def test_internal_text_is_a_problem_wherever_a_clinician_reads_it(text, what):
    assert any(what in p for p in brevity_problems(_card(f"Advice: {text}.")))
    assert any(p.startswith("summary:") and what in p for p in brevity_problems(_card("ok", summary=text)))
    in_why = brevity_problems(_card("ok\n\n### Why this card\n\n- " + text))  # the why-list too
    assert any(what in p for p in in_why)
    labelled = _card("ok", suggestions=[{"label": text, "actions": [{"type": "create", "description": "ok"}]}],
                     overrideReasons=[{"code": "c", "system": "s", "display": text}])
    assert {p.split(":", 1)[0] for p in brevity_problems(labelled)} == {"suggestions[0].label",
                                                                       "overrideReasons[0].display"}
    # a link's address is not read: only its label
    assert brevity_problems(_card("[the label](https://example.org/MedicationRequest/abc?x>=1)")) == []


def test_ordinary_clinical_wording_is_not_flagged():
    ok = ("Sertraline 50–200 mg/day for at least 8 weeks; codes are mapped by the site; "
          "a 12-week course; condition resolved.")
    assert brevity_problems(_card(ok)) == []
    assert len(INTERNAL_TEXT) == 7


# --- every fixture request, every card kind --------------------------------------------------------
def test_pending_names_only_card_kinds_that_exist():
    assert set(PENDING) <= set(TOPICS) and set(PENDING_LINKS) <= set(TOPICS)
    assert all(PENDING.values()) and all(PENDING_LINKS.values())


def test_the_cards_of_every_fixture_request_are_brief_and_free_of_internal_text(fixture_cards):
    checked, failing = 0, {}
    for name, card in fixture_cards:
        problems = brevity_problems(card)
        if topic_of(card) in PENDING:
            failing.setdefault(topic_of(card), []).extend(problems)
            continue
        assert problems == [], (name, topic_of(card), problems)
        checked += 1
    # a PENDING entry whose card kind now passes is stale: remove it from PENDING
    stale = sorted(t for t in PENDING if t in {topic_of(c) for _n, c in fixture_cards} and not failing.get(t))
    assert stale == [], f"these card kinds pass now: remove them from PENDING: {stale}"
    assert checked + sum(1 for _n, c in fixture_cards if topic_of(c) in PENDING) == len(fixture_cards)


def test_every_card_kind_on_every_hook_is_brief_and_free_of_internal_text(engine):
    library = engine.cards
    seen: dict[str, list[str]] = {}
    for finding in typical_findings(library):
        card = library.render(finding, patient_id="p1", catalogue_base=BASE)
        problems = brevity_problems(card)
        seen.setdefault(finding.topic, []).extend(problems)
        if finding.topic not in PENDING:
            assert problems == [], (finding.topic, finding.hook, sorted(finding.flags), problems)
    assert set(seen) == set(TOPICS)
    stale = sorted(t for t in PENDING if not seen[t])
    assert stale == [], f"these card kinds pass now: remove them from PENDING: {stale}"


def _why(card: dict) -> str:
    return card["detail"].split("### Why this card", 1)[1].split("### Sources", 1)[0]


def test_the_generic_parts_of_every_card_show_no_internal_text(fixture_cards):
    """No PENDING here: "Why this card", the override reasons and the catalogue link are this
    branch's. SSRI trial lines quote the trial's reason from facts/trials.py (rewritten on branch
    steps), so only their drug and dates are checked."""
    for name, card in fixture_cards:
        why = re.sub(r"^(- \*\*SSRI trial:\*\* [^—]*) — .*$", r"\1", _why(card), flags=re.MULTILINE)
        texts = [visible_text(why)] + [r["display"] for r in card.get("overrideReasons", [])]
        catalogue = [link for link in card["links"] if "/cards/" in link["url"]]
        assert [link["url"] for link in catalogue] == [f"{BASE}/cards/{topic_of(card)}"]
        texts += [link["label"] for link in catalogue]
        for text in texts:
            for what, pattern in INTERNAL_TEXT:
                assert not pattern.search(text), (name, topic_of(card), what, text)
        lines = [line for line in _why(card).splitlines() if line.startswith("- ")]
        assert len([line for line in lines if not line.startswith("- … and ")]) <= 3, (name, lines)


def test_a_long_record_gives_three_facts_and_one_line_for_the_rest(engine):
    conditions = tuple(ptsd(f"Condition/c{i}") for i in range(9))
    card = engine.cards.cards["step-3-nightmares"]
    finding = Finding("step-3-nightmares", "patient-view", "info", conditions=conditions + (nightmares(),),
                      values={n: "x" for n in card.placeholders if n not in BUILTIN}, not_found=("IRT",))
    why = _why(engine.cards.render(finding, patient_id="p1"))
    lines = [line for line in why.splitlines() if line.startswith("- ")]
    assert len(lines) == 4
    assert lines[0].startswith("- **Nightmares:** Nightmare disorder")  # the non-PTSD condition first
    assert lines[1] == "- **Not found in the record:** IRT"
    assert lines[2].startswith("- **PTSD:** PTSD — SNOMED CT 47505003")
    assert lines[3] == "- … and 8 more: 8 conditions"  # many: counted by kind, in one line


# --- links: https pages a person reads, from a domain listed in cards/README.md -------------------
def listed_link_domains() -> set[str]:
    """The domains in the "Link domains" table of cards/README.md (first column, in backticks)."""
    text = (CARDS_DIR / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Link domains\n", 1)[1].split("\n## ", 1)[0]
    return {m for line in section.splitlines() if line.startswith("| `")
            for m in re.findall(r"^\| `([^`]+)`", line)}


def card_urls(card: dict) -> list[str]:
    """Every address a clinician can open from a card (links, source, links inside the detail)."""
    urls = [link["url"] for link in card.get("links", [])] + [card["source"]["url"]]
    urls += re.findall(r"\]\(([^)\s]+)\)", card["detail"])
    return [u for u in urls if not u.startswith(f"{BASE}/cards/")]  # the service's own catalogue page


def link_problems(url: str, domains: set[str]) -> list[str]:
    parts = urlsplit(url)
    problems = []
    if parts.scheme != "https":
        problems.append(f"{url}: not https")
    if parts.path.endswith(".json") or parts.netloc.startswith("api."):
        problems.append(f"{url}: an API call, not a page a person reads")
    if parts.netloc not in domains:
        problems.append(f"{url}: domain {parts.netloc} not listed in cards/README.md 'Link domains'")
    return problems


def test_every_link_is_an_https_page_from_a_listed_domain(fixture_cards, engine):
    domains = listed_link_domains()
    assert domains, "cards/README.md has no 'Link domains' table"
    cards = [card for _n, card in fixture_cards] + [
        engine.cards.render(f, patient_id="p1", catalogue_base=BASE) for f in typical_findings(engine.cards)]
    failing: dict[str, set[str]] = {}
    used = set()
    for card in cards:
        for url in card_urls(card):
            problems = link_problems(url, domains)
            if not problems:
                used.add(urlsplit(url).netloc)
            elif topic_of(card) in PENDING_LINKS:
                failing.setdefault(topic_of(card), set()).update(problems)
            else:
                pytest.fail(f"{topic_of(card)}: {problems}")
    stale = sorted(t for t in PENDING_LINKS if not failing.get(t))
    assert stale == [], f"these card kinds' links pass now: remove them from PENDING_LINKS: {stale}"
    # the table lists exactly the domains the cards link (an EHR allow-list without stale rows)
    assert used == domains, (sorted(domains - used), sorted(used - domains))


def test_the_checks_of_links_can_fail():
    domains = {"www.nice.org.uk"}
    assert link_problems("https://www.nice.org.uk/guidance/ng116", domains) == []
    assert "not https" in link_problems("http://www.nice.org.uk/guidance/ng116", domains)[0]
    assert "API call" in link_problems("https://api.fda.gov/drug/label.json?x=1", {"api.fda.gov"})[0]
    assert "not listed" in link_problems("https://example.org/page", domains)[0]


# --- catalogue_only paragraphs --------------------------------------------------------------------
@pytest.fixture
def cards_copy(tmp_path) -> Path:
    target = tmp_path / "cards"
    shutil.copytree(CARDS_DIR, target)
    return target


LONG_TEXT = "Reviewers' long explanation of combined treatment, kept off the card."


def _add_catalogue_paragraph(cards_dir: Path, extra: str = "catalogue_only = true\n") -> None:
    path = cards_dir / "step-5-combine.toml"
    text = path.read_text(encoding="utf-8")
    anchor = "[citations.combine-rule]"
    assert anchor in text
    path.write_text(text.replace(anchor, f'[[detail]]\ntext = "{LONG_TEXT}"\ncite = ["vadod-psychotherapy"]\n'
                                         f"{extra}\n{anchor}", 1), encoding="utf-8")


def test_a_catalogue_only_paragraph_is_on_the_catalogue_page_and_not_in_the_card(cards_copy, make_app):
    _add_catalogue_paragraph(cards_copy)
    app = make_app(cards_dir=str(cards_copy))
    client = app.test_client()
    body = json.loads((REPO_ROOT / "fixtures" / "requests" / "ptsd-not-combined.patient-view.json").read_text())
    resp = client.post("/cds-services/ptsd-patient-view", data=json.dumps(body), content_type="application/json")
    [card] = resp.get_json()["cards"]
    assert topic_of(card) == "step-5-combine"
    assert LONG_TEXT not in card["detail"] and "Combine trauma-focused psychotherapy" in card["detail"]
    page = client.get("/cards/step-5-combine").get_data(as_text=True)
    assert LONG_TEXT in page and "this page only, not shown in the card" in page
    # without the option the same paragraph is in the card (the test can fail)
    plain = cards_copy.parent / "plain"
    shutil.copytree(CARDS_DIR, plain)
    _add_catalogue_paragraph(plain, extra="")
    other = make_app(cards_dir=str(plain), database=str(cards_copy.parent / "other.sqlite3"))
    resp = other.test_client().post("/cds-services/ptsd-patient-view", data=json.dumps(body),
                                    content_type="application/json")
    assert LONG_TEXT in resp.get_json()["cards"][0]["detail"]


@pytest.mark.parametrize("extra, message", [
    ('catalogue_only = "yes"\n', r"catalogue_only: must be a bool"),
    ("catalog_only = true\n", r"unknown field\(s\) \['catalog_only'\]"),
])
def test_a_bad_catalogue_only_option_is_refused(cards_copy, extra, message):
    _add_catalogue_paragraph(cards_copy, extra)
    with pytest.raises(CardContentError, match=message):
        CardLibrary.load(cards_copy, topics=TOPICS)


def test_a_card_needs_one_paragraph_shown_on_the_card(cards_copy):
    path = cards_copy / "step-6-specialized-referral.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(re.sub(r"^cite = (\[.*\])$", r"cite = \1\ncatalogue_only = true", text, flags=re.MULTILINE),
                    encoding="utf-8")
    with pytest.raises(CardContentError, match=r"step-6-specialized-referral.toml: detail: needs at least one"):
        CardLibrary.load(cards_copy, topics=TOPICS)
