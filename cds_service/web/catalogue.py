"""The card catalogue (``/cards``): every card kind of ``cards/*.toml`` as a reviewer reads it.

``catalogue(library)`` turns the loaded card templates (``CardLibrary.cards``, already checked by
``card_content.load_cards``) into plain view data. "When it fires" is derived from data that
already exists, never written twice:

* the card file's header comment (the ``#`` lines before ``topic =``: the rule in words),
* the row for the card in the ``cards/README.md`` table ("shown when"),
* ``cds_service/rules/guideline.toml``: the card's place in the next-step ladder (or that it is an
  independent step, or a safety card), and for ``dose-out-of-range`` the dose ranges with sources.

Markdown (card paragraphs, README cells) is rendered server-side with markdown-it-py, raw HTML
disabled (card content never contains HTML: the loader refuses it).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup

from cds_service.card_content import VERIFICATION_NOTE, CardTemplate
from cds_service.rules import SAFETY_TOPICS
from cds_service.rules.knowledge import GUIDELINE

_MD = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")
VERIFICATION_TEXT = {
    "verified": "verified (read in the cited document)",
    "secondary": "secondary (read in a secondary source, not the primary document)",
    "recall": "recall — needs a check against the primary source",
}


def markdown(text: str) -> Markup:
    """Card Markdown as HTML; ``{placeholders}`` shown as marked-up names (filled per patient)."""
    html = _MD.render(text)
    return Markup(_PLACEHOLDER.sub(r'<span class="placeholder">{\1}</span>', html))


def header_comment(path: Path) -> str:
    """The ``#`` lines at the top of a card file, before the first TOML line, as one text."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    return re.sub(r"\s*Format: README\.md\.?\s*$", "", text).strip()


@lru_cache(maxsize=4)
def _readme_rows(readme: str) -> dict[str, str]:
    """``cards/README.md`` table: card file name -> its "shown when" cell."""
    rows: dict[str, str] = {}
    path = Path(readme)
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0].endswith(".toml`"):
            rows[cells[0].strip("`")] = cells[2]
    return rows


def _ladder(topic: str, titles: dict[str, str]) -> str | None:
    order = GUIDELINE.next_step_order
    if topic in order:
        before = [titles.get(t, t) for t in order[: order.index(topic)]]
        place = f"Step {order.index(topic) + 1} of {len(order)} in the next-step ladder (patient-view, active PTSD): "
        if not before:
            return place + "the first step checked; when it applies, no later step is shown."
        return place + "shown only when none of these applies first: " + "; ".join(before) + "."
    if topic in GUIDELINE.independent_steps:
        return "An independent step: checked on patient-view for active PTSD next to the ladder, whatever step is shown."
    if topic in SAFETY_TOPICS:
        return "A safety card: checked on every hook it lists, before the guideline steps; one card per offending order on order hooks."
    return None


def _card_view(card: CardTemplate, titles: dict[str, str], readme_rows: dict[str, str]) -> dict[str, Any]:
    citations = []
    for c in card.citations.values():
        citations.append({
            "id": c.id, "statement": c.statement, "document": c.document.title, "short": c.document.short,
            "url": c.document.url, "kind": c.document.kind, "strength": c.strength, "evidence": c.evidence,
            "verification": c.verification, "verification_text": VERIFICATION_TEXT.get(c.verification or "", ""),
            "needs_check": c.verification == "recall",
        })
    paragraphs = []
    for p in card.paragraphs:
        v = p.visible
        conditions = []
        if v.hooks is not None:
            conditions.append("only on " + ", ".join(sorted(v.hooks)))
        conditions += [f"when: {card.flags[f]}" for f in sorted(v.when)]
        conditions += [f"unless: {card.flags[f]}" for f in sorted(v.unless)]
        if p.catalogue_only:
            conditions.append("catalogue page only (not shown in the card)")
        paragraphs.append({"html": markdown(p.text), "cite": [card.citations[c].document.short for c in p.cite],
                           "cite_ids": list(p.cite), "conditions": conditions})
    suggestions = []
    for s in card.suggestions:
        v = s.visible
        conditions = [f"only on {', '.join(sorted(v.hooks))}"] if v.hooks is not None else []
        conditions += [f"when: {card.flags[f]}" for f in sorted(v.when)]
        conditions += [f"unless: {card.flags[f]}" for f in sorted(v.unless)]
        suggestions.append({"label": s.label, "conditions": conditions,
                            "actions": [{"type": a.type, "description": a.description} for a in s.actions]})
    dose_ranges = []
    if card.topic == "dose-out-of-range":
        dose_ranges = [{"ingredient": r.ingredient, "min_mg": _num(r.min_mg) if r.min_mg is not None else "—",
                        "max_mg": _num(r.max_mg) + (f" (men: {_num(r.max_mg_male)})" if r.max_mg_male else ""),
                        "source": r.source, "url": r.url, "not_for_forms": list(r.not_for_forms)}
                       for r in GUIDELINE.dose_ranges.values()]
    readme = readme_rows.get(card.path.name)
    return {
        "topic": card.topic, "title": card.title, "file": card.path.name,
        "hooks": [{"hook": h, "indicator": card.indicators[h], "summary": card.summaries[h]} for h in card.hooks],
        "fires_when": header_comment(card.path),
        "readme_when": markdown(readme) if readme else None,
        "ladder": _ladder(card.topic, titles),
        "dose_ranges": dose_ranges,
        "source": {"label": card.source_label, "title": card.source_document.title, "url": card.source_document.url},
        "placeholders": [{"name": p.name, "description": p.description, "max_length": p.max_length,
                          "optional": p.optional} for p in card.placeholders.values()],
        "flags": [{"name": k, "meaning": v} for k, v in card.flags.items()],
        "paragraphs": paragraphs,
        "citations": citations,
        "links": [{"title": d.title, "url": d.url} for d in card.links],
        "suggestions": suggestions,
        "selection_behavior": card.selection_behavior,
        "override_reasons": [{"code": c, "display": d} for c, d in card.override_reasons],
    }


def _num(value: float) -> str:
    return f"{value:g}"


def catalogue(cards: dict[str, CardTemplate], topic_order: tuple[str, ...]) -> list[dict[str, Any]]:
    """View data for every card kind, in the rules' display order (safety cards first)."""
    titles = {t: c.title for t, c in cards.items()}
    readme_rows: dict[str, str] = {}
    first = next(iter(cards.values()), None)
    if first is not None:
        readme_rows = _readme_rows(str(first.path.parent / "README.md"))
    ordered = [t for t in topic_order if t in cards] + sorted(t for t in cards if t not in topic_order)
    return [_card_view(cards[t], titles, readme_rows) for t in ordered]


__all__ = ["catalogue", "markdown", "header_comment", "VERIFICATION_NOTE"]
