"""Rendering Findings into CDS Hooks 2.0 cards, from the card content of ``cards/*.toml``.

``CardLibrary.load(cards_dir)`` loads the content once (``cds_service.card_content``);
``library.render(finding, patient_id=)`` then builds one card dict; it never emits null, "", []
or {} (CHECKLIST GEN-02).

Templates use ``str.format_map`` on plain ``{name}`` fields only (no attribute or index access,
no conversions or format specs: checked at load), with a dict of prepared strings. Values that
come from the patient record are Markdown-escaped in ``detail``; in the plain-text ``summary``
they are cut to the placeholder's ``max_length``.
"""

from __future__ import annotations

import re
import uuid
from datetime import date
from pathlib import Path
from typing import Any, Iterable, Mapping

from cds_service.card_content import (  # noqa: F401  (CardContentError, BUILTIN: re-exported)
    BUILTIN, SNOOZE_NOTE, SUMMARY_LIMIT, CardContentError, CardTemplate, Citation,
    SuggestionTemplate, fill_resource, load_cards, prune, template_fields,
)
from cds_service.codesystems import CARD_TOPIC, OVERRIDE_REASON
from cds_service.facts.model import ConditionFact, DrugFact, SsriTrial, TherapySession
from cds_service.rules.finding import ORDER_SIGN, Finding

THERAPY_NAMES = {
    "prolonged-exposure": "prolonged exposure (PE)",
    "cognitive-processing-therapy": "cognitive processing therapy (CPT)",
    "emdr": "EMDR",
    "image-rehearsal-therapy": "image rehearsal therapy (IRT)",
}




class RenderError(RuntimeError):
    """A Finding does not fit its card (a programming error in the rules, not bad data)."""


class CardLibrary:
    def __init__(self, cards: dict[str, CardTemplate]):
        self.cards = cards
        # PTSD_CDS_SNOOZE_DAYS (set by the engine): a snoozable override reason says for how long
        # it hides the card, so the clinician knows before choosing it (issue #8 point 18).
        self.snooze_days: int | None = None

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self.cards)

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def load(cls, cards_dir: str | Path, *, topics: Iterable[str] | None = None) -> "CardLibrary":
        """Read and check the card content (see ``cds_service.card_content.load_cards``)."""
        return cls(load_cards(cards_dir, topics=topics))

    # -- rendering ------------------------------------------------------------------------
    def render(self, finding: Finding, *, patient_id: str, catalogue_base: str | None = None) -> dict[str, Any]:
        card = self.cards.get(finding.topic)
        if card is None:
            raise RenderError(f"no card file for topic {finding.topic!r}")
        hook = finding.hook
        if hook not in card.hooks:
            raise RenderError(f"{card.path.name}: card is not for hook {hook!r}")
        expected = expected_indicator(card, hook, finding.flags)
        if expected != finding.indicator:
            raise RenderError(f"{card.path.name}: indicator on {hook} is {expected!r}, "
                              f"the rule said {finding.indicator!r}")
        unknown_flags = set(finding.flags) - set(card.flags)
        if unknown_flags:
            raise RenderError(f"{card.path.name}: flags not declared in the card: {sorted(unknown_flags)}")
        unknown_values = set(finding.values) - (set(card.placeholders) - BUILTIN)
        if unknown_values:
            raise RenderError(f"{card.path.name}: values not declared as placeholders: {sorted(unknown_values)}")
        values = dict(finding.values)
        # built-ins may be empty: an empty resourceId drops its suggestion, empty members are pruned
        values["patient_id"] = patient_id
        values["target_order"] = finding.target_order or ""
        values["open_steps"] = "; ".join(self.cards[t].title for t in finding.open_steps)

        template = next((by_hook[hook] for flag, by_hook in card.summary_when if flag in finding.flags),
                        card.summaries[hook])
        summary = self._fill(card, template, _summary_values(card, values), "summary")
        summary = " ".join(summary.split())
        if len(summary) >= SUMMARY_LIMIT:  # cannot happen after the load-time check; kept as a guard
            raise RenderError(f"{card.path.name}: summary has {len(summary)} characters")

        paragraphs = [p for p in card.paragraphs
                      if not p.catalogue_only and p.visible.applies(hook, finding.flags)]
        md_values = {k: v if k in BUILTIN else md_escape(v) for k, v in values.items()}
        cited: list[Citation] = []
        blocks = []
        for p in paragraphs:
            marks = []
            for cid in p.cite:
                citation = card.citations[cid]
                if citation not in cited:
                    cited.append(citation)
                if citation.document.short not in marks:
                    marks.append(citation.document.short)
            blocks.append(f"{self._fill(card, p.text, md_values, 'detail')} ({'; '.join(marks)})")
        blocks.append(why_section(finding))
        blocks.append(sources_section(cited))

        result: dict[str, Any] = {
            "uuid": str(uuid.uuid4()),
            "summary": summary,
            "indicator": finding.indicator,
            "detail": "\n\n".join(blocks),
            "source": {
                "label": card.source_label,
                "url": card.source_document.url,
                "topic": {"system": CARD_TOPIC, "code": card.topic, "display": card.title},
            },
            "overrideReasons": [{"code": c, "system": OVERRIDE_REASON,
                                 "display": self._reason_display(card, c, d)} for c, d in card.override_reasons],
            "links": [{"label": d.title, "url": d.url, "type": "absolute"} for d in card.links]
            + ([{"label": f"This card in the ptsd-cds catalogue: {card.title}",
                 "url": f"{catalogue_base.rstrip('/')}/cards/{card.topic}", "type": "absolute"}]
               if catalogue_base and catalogue_base.startswith(("https://", "http://")) else []),
        }
        suggestions = []
        for t in card.suggestions:
            if not t.visible.applies(hook, finding.flags):
                continue
            if t.each_order:  # one per order the card is about, with that order's values
                filled = [self._suggestion(card, t, {**values, **order_values, "target_order": ref})
                          for ref, order_values in finding.orders]
            else:
                filled = [self._suggestion(card, t, values)]
            suggestions += [x for x in filled if x]
        if suggestions:
            result["suggestions"] = suggestions
            result["selectionBehavior"] = card.selection_behavior
        return prune(result)

    def _reason_display(self, card: CardTemplate, code: str, display: str) -> str:
        if self.snooze_days and code in card.snoozable_reasons:
            return SNOOZE_NOTE.format(display=display, days=self.snooze_days)
        return display

    def _fill(self, card: CardTemplate, template: str, values: Mapping[str, str], part: str) -> str:
        needed = template_fields(template, f"{card.path.name}: {part}")
        missing = [n for n in needed if n not in values and not card.placeholders[n].optional]
        if missing:
            raise RenderError(f"{card.path.name}: {part} needs values for {sorted(missing)}")
        return template.format_map({n: values.get(n, "") for n in needed})

    def _suggestion(self, card: CardTemplate, template: SuggestionTemplate,
                    values: Mapping[str, str]) -> dict[str, Any] | None:
        actions = []
        for action in template.actions:
            out: dict[str, Any] = {"type": action.type,
                                   "description": self._fill(card, action.description, values, "suggestion")}
            if action.resource is not None:
                resource = prune(fill_resource(action.resource, lambda s: self._fill(card, s, values, "resource")))
                out["resource"] = resource
            if action.resource_id is not None:
                target = self._fill(card, action.resource_id, values, "resource_id")
                if not target:
                    return None  # the draft order has no id: nothing to delete, no suggestion
                out["resourceId"] = target
            actions.append(out)
        return {"label": self._fill(card, template.label, values, "suggestion"),
                "uuid": str(uuid.uuid4()), "actions": actions}


def expected_indicator(card: CardTemplate, hook: str, flags: frozenset[str]) -> str:
    """The card's indicator on ``hook`` given the rule's flags (``indicator_when`` first)."""
    return next((ind for flag, ind in card.indicator_when if flag in flags), card.indicators[hook])


def _summary_values(card: CardTemplate, values: Mapping[str, str]) -> dict[str, str]:
    """Values cut to the placeholder's max_length (with an ellipsis), for the plain-text summary."""
    out = {}
    for name, value in values.items():
        limit = card.placeholders[name].max_length if name in card.placeholders else None
        value = " ".join(value.split())
        if limit is not None and len(value) > limit:
            value = value[: limit - 1].rstrip() + "…"
        out[name] = value
    return out


def md_escape(text: str) -> str:
    """Record text made inert in Markdown: no emphasis, links, headings, tables or HTML tags."""
    text = " ".join(str(text).split())
    return re.sub(r"([\\`*_\[\]<#|])", r"\\\1", text)


# --- "Why this card" and "Sources" -----------------------------------------------------------
# "Why this card" names at most MAX_WHY_LINES record facts, the most relevant first, then one line
# "… and N more: ..." (issue #8 point 15: a clinician reads three facts, not the record). A fact
# names the drug, condition or therapy as the record does, never a raw resource id.
def _date(value) -> str | None:
    return value.isoformat() if value else None


def _join(parts: Iterable[str | None]) -> str:
    return "; ".join(p for p in parts if p)


CONDITION_NAMES = {"ptsd": "PTSD", "nightmares": "Nightmares", "acute-stress": "Acute stress",
                   "pregnancy": "Pregnancy", "alcohol-withdrawal": "Alcohol withdrawal",
                   "seizure": "Seizure disorder"}


def _condition_name(c: ConditionFact) -> str:
    return CONDITION_NAMES.get(c.kind, "Condition")


def condition_line(c: ConditionFact) -> str:
    what = md_escape(c.text or c.code.display or c.code.code or "condition")
    details = _join([
        md_escape(c.code.label()),
        c.clinical_status and f"clinical status {md_escape(c.clinical_status)}",
        c.verification_status and f"verification {md_escape(c.verification_status)}",
        c.onset and f"onset {_date(c.onset)}",
        c.recorded and f"recorded {_date(c.recorded)}",
    ])
    return f"- **{_condition_name(c)}:** {what} — {details}"


def _drug_kind(d: DrugFact, hook: str) -> str:
    if d.is_draft_order:
        return "Draft order being signed" if hook == ORDER_SIGN else "Selected draft order"
    return "Current medication" if d.is_current else "Medication (not current)"


def _dose_phrase(d: DrugFact) -> str:
    if d.dose_text:
        return md_escape(d.dose_text)
    return f"{d.daily_dose_mg:g} mg/day" if d.daily_dose_mg is not None else "daily dose not recorded"


def drug_line(d: DrugFact, hook: str) -> str:
    details = _join([
        md_escape(d.ingredient),
        _dose_phrase(d),
        d.route and f"route {md_escape(d.route)}",
        d.status and f"status {md_escape(d.status)}",
        d.authored_on and f"ordered {_date(d.authored_on)}",
        (d.period_start or d.period_end) and
        f"valid {_date(d.period_start) or '?'} to {_date(d.period_end) or 'open'}",
        d.code and md_escape(d.code.label()),
    ])
    return f"- **{_drug_kind(d, hook)}:** {md_escape(d.label)} — {details}"


def _month(value) -> str:
    return value.strftime("%Y-%m") if value else "?"


def drug_group_line(kind: str, group: list[DrugFact], hook: str) -> str:
    """Several orders of one drug: one line with their number and span, then the latest order."""
    if len(group) == 1:
        return drug_line(group[0], hook)
    dates = sorted(x for d in group for x in (d.trial_start, d.trial_end) if x)
    latest = max(group, key=lambda d: (d.trial_start or date.min, d.trial_end or date.min))
    span = f", {_month(dates[0])} to {_month(dates[-1])}" if dates else ""
    return (f"- **{kind}:** {md_escape(group[0].ingredient)} — {len(group)} orders{span}; latest: "
            f"{md_escape(latest.label)}, {_dose_phrase(latest)}")


def trial_line(t: SsriTrial) -> str:
    d = t.drug
    start, end = (t.start, t.end) if t.orders else (d.trial_start, d.trial_end)
    span = f"{_date(start) or '?'} to {_date(end) or '?'}"
    verdict = f"adequate: {'yes' if t.adequate else 'no'}; failed: {'yes' if t.failed else 'no'}"
    how = md_escape(t.reason) if t.reason else verdict
    return f"- **First-line medication trial:** {md_escape(d.ingredient if len(t.orders) > 1 else d.label)}, {span} — {how}"


def session_line(count: int, sessions: Iterable[TherapySession]) -> str:
    """The number of trauma-focused sessions, then per therapy its count and first and last date."""
    by_therapy: dict[str, list[TherapySession]] = {}
    for s in sessions:
        by_therapy.setdefault(s.therapy, []).append(s)
    parts = []
    for therapy, group in by_therapy.items():
        dates = sorted(s.performed for s in group if s.performed)
        span = f", {dates[0].isoformat()} to {dates[-1].isoformat()}" if dates else ""
        name = THERAPY_NAMES.get(therapy, md_escape(therapy))
        parts.append(f"{name}: {len(group)} session{'s' if len(group) != 1 else ''}{span}")
    return f"- **Trauma-focused psychotherapy sessions found:** {count}" + (f" — {'; '.join(parts)}" if parts else "")


MAX_WHY_LINES = 3
_MORE_NAMES = 4  # "… and N more" names up to this many facts, else counts them by kind
_SHORT = 48


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return md_escape(text if len(text) <= _SHORT else text[: _SHORT - 1].rstrip() + "…")


def why_facts(finding: Finding) -> list[tuple[str, str, str]]:
    """Every record fact behind the card as (line, short name, kind), most relevant first:
    draft orders that cannot be checked, the draft orders being placed, a condition other than
    PTSD (nightmares, acute stress), the SSRI trials, other drugs (current first), what was looked
    for and not found, PTSD, the psychotherapy sessions. Orders of one drug are one fact; an
    order that is part of a listed SSRI trial is told by the trial."""
    hook = finding.hook
    facts: list[tuple[int, str, str, str]] = []
    for u in finding.unchecked:
        facts.append((0, f"- **Draft order not checked:** its medication could not be read ({md_escape(u.why)})",
                      "a draft order not checked", "draft order"))
    in_trials = {o.reference for t in finding.ssri_trials for o in t.orders} | {
        t.drug.reference for t in finding.ssri_trials}
    groups: dict[tuple[str, str], list[DrugFact]] = {}
    for d in finding.drugs:
        if d.reference and d.reference in in_trials:
            continue
        groups.setdefault((_drug_kind(d, hook), d.ingredient), []).append(d)
    for (kind, _ingredient), group in groups.items():
        rank = 1 if group[0].is_draft_order else 4 if group[0].is_current else 5
        name = group[0].label if len(group) == 1 else f"{group[0].ingredient} ({len(group)} orders)"
        facts.append((rank, drug_group_line(kind, group, hook), f"{_short(name)} ({kind.lower()})",
                      "medication order" if len(group) == 1 else "medication"))
    for c in finding.conditions:
        rank = 7 if c.kind == "ptsd" else 2
        facts.append((rank, condition_line(c), f"{_condition_name(c)}: {_short(c.text or c.code.display or c.code.code)}",
                      "condition"))
    for t in finding.ssri_trials:
        facts.append((3, trial_line(t), f"SSRI trial of {md_escape(t.drug.ingredient)}", "SSRI trial"))
    if finding.not_found:
        facts.append((6, f"- **Not found in the record:** {'; '.join(md_escape(n) for n in finding.not_found)}",
                      f"not found: {'; '.join(_short(n) for n in finding.not_found)}", "not found"))
    if finding.session_count is not None:
        facts.append((8, session_line(finding.session_count, finding.sessions),
                      f"{finding.session_count} trauma-focused psychotherapy sessions", "sessions"))
    facts.sort(key=lambda f: f[0])  # stable: the rule's own order within a rank
    return [(line, name, kind) for _rank, line, name, kind in facts]


def _plural(kind: str, n: int) -> str:
    return kind if n == 1 else (kind + "s" if not kind.endswith("s") else kind)


def more_line(rest: list[tuple[str, str, str]]) -> str:
    """One line for the facts not shown: their short names, or with many, their number by kind."""
    if len(rest) <= _MORE_NAMES:
        return f"- … and {len(rest)} more: {'; '.join(name for _line, name, _kind in rest)}"
    counts: dict[str, int] = {}
    for _line, _name, kind in rest:
        counts[kind] = counts.get(kind, 0) + 1
    return f"- … and {len(rest)} more: " + ", ".join(f"{n} {_plural(k, n)}" for k, n in counts.items())


def why_section(finding: Finding) -> str:
    facts = why_facts(finding)
    lines = ["### Why this card", ""]
    lines += [line for line, _name, _kind in facts[:MAX_WHY_LINES]]
    if len(facts) > MAX_WHY_LINES:
        lines.append(more_line(facts[MAX_WHY_LINES:]))
    if not facts:
        lines.append("- No record facts were needed for this card.")
    return "\n".join(lines)


def _grade(strength: str | None) -> str | None:
    """The grade as a clinician reads it ("Strong for", "Do not offer"): a strength's remark in
    brackets and a reviewer's note that no grade was read are left to the catalogue page."""
    if not strength or strength.lower().startswith("not stated"):
        return None
    return strength.split(" (", 1)[0].strip() or None


def sources_section(cited: list[Citation]) -> str:
    """Each cited document once, by its short name (linked) and the strength of what the card cites
    from it. The statements themselves, their evidence and how each was verified are on the card
    kind's catalogue page (``/cards/<topic>``), where a reviewer reads them: in the EHR a card
    stays short (issue #8 point 15)."""
    lines = ["### Sources", ""]
    by_document: dict[str, tuple[Any, list[str], set[str]]] = {}
    for c in cited:
        doc, strengths, checks = by_document.setdefault(c.document.short, (c.document, [], set()))
        checks.add(c.verification or "verified")
        grade = _grade(c.strength) if c.verification != "recall" else None  # a recalled grade is not shown
        if grade and grade not in strengths:
            strengths.append(grade)
    for short, (doc, strengths, checks) in by_document.items():
        name = f"[{doc.short}]({doc.url})" if doc.url else doc.short
        if doc.kind == "service-rule":
            lines.append(f"- **{name}**: this service's own decision, not a guideline statement")
            continue
        # A statement recalled but not yet read in the source is said so (the clinician weighs it).
        recalled = ["recalled, not yet verified"] if "recall" in checks else []
        shown = strengths + recalled
        lines.append(f"- **{name}**" + (f": {'; '.join(shown)}" if shown else ""))
    return "\n".join(lines)


# --- loading helpers -------------------------------------------------------------------------
