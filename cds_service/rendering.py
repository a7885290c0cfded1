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
    BUILTIN, SUMMARY_LIMIT, VERIFICATION_NOTE, CardContentError, CardTemplate, Citation,
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


# Bounds on the "Why this card" list (issue #7: the detail must not grow with the record).
MAX_CONDITION_LINES = 3
MAX_DRUG_LINES = 6
MAX_REFS = 3


class RenderError(RuntimeError):
    """A Finding does not fit its card (a programming error in the rules, not bad data)."""


class CardLibrary:
    def __init__(self, cards: dict[str, CardTemplate]):
        self.cards = cards

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

        paragraphs = [p for p in card.paragraphs if p.visible.applies(hook, finding.flags) and not p.catalogue_only]
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
            "overrideReasons": [{"code": c, "system": OVERRIDE_REASON, "display": d}
                                for c, d in card.override_reasons],
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
def _date(value) -> str | None:
    return value.isoformat() if value else None


def _join(parts: Iterable[str | None]) -> str:
    return "; ".join(p for p in parts if p)


def _ref(reference: str | None) -> str:
    return f" ({md_escape(reference)})" if reference else ""


CONDITION_NAMES = {"ptsd": "PTSD", "nightmares": "Nightmares", "acute-stress": "Acute stress",
                   "alcohol-withdrawal": "Alcohol withdrawal", "seizure": "Seizure disorder"}


def condition_line(c: ConditionFact) -> str:
    name = CONDITION_NAMES.get(c.kind, "Condition")
    what = md_escape(c.text or c.code.display or c.code.code or "condition")
    details = _join([
        md_escape(c.code.label()),
        c.clinical_status and f"clinical status {md_escape(c.clinical_status)}",
        c.verification_status and f"verification {md_escape(c.verification_status)}",
        c.onset and f"onset {_date(c.onset)}",
        c.recorded and f"recorded {_date(c.recorded)}",
    ])
    return f"- **{name}:** {what} — {details}{_ref(c.reference)}"


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
    return f"- **{_drug_kind(d, hook)}:** {md_escape(d.label)} — {details}{_ref(d.reference)}"


def _refs(references: Iterable[str | None], limit: int = MAX_REFS) -> str:
    """" (A, B, C and 34 more)" — at most ``limit`` resource references, then a count."""
    refs = [r for r in references if r]
    if not refs:
        return ""
    shown = ", ".join(refs[:limit]) + (f" and {len(refs) - limit} more" if len(refs) > limit else "")
    return _ref(shown)


def _month(value) -> str:
    return value.strftime("%Y-%m") if value else "?"


def trial_line(t: SsriTrial) -> str:
    d = t.drug
    start, end = (t.start, t.end) if t.orders else (d.trial_start, d.trial_end)
    span = f"{_date(start) or '?'} to {_date(end) or '?'}"
    verdict = f"adequate: {'yes' if t.adequate else 'no'}; failed: {'yes' if t.failed else 'no'}"
    how = md_escape(t.reason) if t.reason else verdict
    refs = _refs(o.reference for o in t.orders) if t.orders else _ref(d.reference)
    return f"- **SSRI trial:** {md_escape(d.ingredient if len(t.orders) > 1 else d.label)}, {span} — {how}{refs}"


def drug_lines(drugs: Iterable[DrugFact], hook: str) -> list[str]:
    """One line per drug order; beyond MAX_DRUG_LINES, one summary line per ingredient and kind
    ("sertraline: 37 orders, 2019-03 to 2026-10; latest: ...") so the detail stays short however
    long the record (issue #7: card detail bounded)."""
    drugs = list(drugs)
    if len(drugs) <= MAX_DRUG_LINES:
        return [drug_line(d, hook) for d in drugs]
    groups: dict[tuple[str, str], list[DrugFact]] = {}
    for d in drugs:
        groups.setdefault((_drug_kind(d, hook), d.ingredient), []).append(d)
    lines = []
    for (kind, ingredient), group in groups.items():
        if len(group) == 1:
            lines.append(drug_line(group[0], hook))
            continue
        dates = sorted(x for d in group for x in (d.trial_start, d.trial_end) if x)
        latest = max(group, key=lambda d: (d.trial_start or date.min, d.trial_end or date.min))
        span = f", {_month(dates[0])} to {_month(dates[-1])}" if dates else ""
        lines.append(f"- **{kind}:** {md_escape(ingredient)} — {len(group)} orders{span}; latest: "
                     f"{md_escape(latest.label)}, {_dose_phrase(latest)}{_refs(d.reference for d in group)}")
    return lines


def session_lines(sessions: Iterable[TherapySession]) -> list[str]:
    """One line per therapy: how many sessions, first and last date."""
    by_therapy: dict[str, list[TherapySession]] = {}
    for s in sessions:
        by_therapy.setdefault(s.therapy, []).append(s)
    lines = []
    for therapy, group in by_therapy.items():
        dates = sorted(s.performed for s in group if s.performed)
        span = f", {dates[0].isoformat()} to {dates[-1].isoformat()}" if dates else ""
        name = THERAPY_NAMES.get(therapy, md_escape(therapy))
        lines.append(f"  - {name}: {len(group)} session{'s' if len(group) != 1 else ''}{span}")
    return lines


def why_section(finding: Finding) -> str:
    lines = ["### Why this card", ""]
    lines += [condition_line(c) for c in finding.conditions[:MAX_CONDITION_LINES]]
    if len(finding.conditions) > MAX_CONDITION_LINES:
        lines.append(f"- … and {len(finding.conditions) - MAX_CONDITION_LINES} more matching conditions"
                     f"{_refs(c.reference for c in finding.conditions[MAX_CONDITION_LINES:])}")
    lines += drug_lines(finding.drugs, finding.hook)
    lines += [f"- **Draft order not checked:** {md_escape(u.reference or 'a draft order without an id')} — "
              f"{md_escape(u.why)}" for u in finding.unchecked[:MAX_DRUG_LINES]]
    if len(finding.unchecked) > MAX_DRUG_LINES:
        lines.append(f"- … and {len(finding.unchecked) - MAX_DRUG_LINES} more draft orders not checked")
    lines += [trial_line(t) for t in finding.ssri_trials]
    if finding.session_count is not None:
        lines.append(f"- **Trauma-focused psychotherapy sessions found:** {finding.session_count}")
        lines += session_lines(finding.sessions)
    if finding.not_found:
        lines.append(f"- **Not found in the record:** {'; '.join(md_escape(n) for n in finding.not_found)}")
    if len(lines) == 2:
        lines.append("- No record facts were needed for this card.")
    return "\n".join(lines)


def sources_section(cited: list[Citation]) -> str:
    lines = ["### Sources", ""]
    for c in cited:
        doc = c.document
        title = f"[{doc.title}]({doc.url})" if doc.url else doc.title
        grade = _join([c.strength and f"Strength: {c.strength}", c.evidence and f"Evidence: {c.evidence}"])
        note = VERIFICATION_NOTE.get(c.verification or "verified", "")
        lines.append(f"- **{doc.short}** — {title}. {c.statement}." + (f" {grade}." if grade else "") + note)
    return "\n".join(lines)


# --- loading helpers -------------------------------------------------------------------------
