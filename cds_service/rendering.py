"""Card content as data (``cards/*.toml``) and the rendering of Findings into CDS Hooks 2.0 cards.

``CardLibrary.load(cards_dir)`` reads and checks every card file once, at start-up; bad content
raises ``CardContentError`` naming the file and the field (missing citation, summary that could
reach 140 characters, unknown placeholder, raw HTML, ...). ``library.render(finding, patient_id=)``
then builds one card dict; it never emits null, "", [] or {} (CHECKLIST GEN-02).

Templates use ``str.format_map`` on plain ``{name}`` fields only (no attribute or index access,
no conversions or format specs: checked at load), with a dict of prepared strings. Values that
come from the patient record are Markdown-escaped in ``detail``; in the plain-text ``summary``
they are cut to the placeholder's ``max_length``. The format is described for clinical reviewers
in ``cards/README.md``.
"""

from __future__ import annotations

import re
import string
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from cds_service.codesystems import BASE, CARD_TOPIC, OVERRIDE_REASON, PSYCHOTHERAPY
from cds_service.facts.model import ConditionFact, DrugFact, SsriTrial, TherapySession
from cds_service.rules.finding import HOOKS, ORDER_SIGN, Finding

SHARED_FILE = "shared.toml"
SUMMARY_LIMIT = 140  # CDS Hooks: "<140-character summary"
INDICATORS = ("info", "warning", "critical")
SELECTION_BEHAVIORS = ("at-most-one", "any")
KINDS = ("guideline", "label", "trial", "meta-analysis", "study", "regulatory", "service-rule")
VERIFICATION_NOTE = {
    "verified": "",
    "secondary": " *(Read in a secondary source, not in the primary document.)*",
    "recall": " *(Recalled, not re-checked against the primary source: needs a check.)*",
}
# Placeholders the renderer fills itself (the card file still declares the ones it uses).
BUILTIN = {"patient_id", "target_order", "open_steps"}
PROJECT_SYSTEMS = {CARD_TOPIC, OVERRIDE_REASON, PSYCHOTHERAPY}
THERAPY_NAMES = {
    "prolonged-exposure": "prolonged exposure (PE)",
    "cognitive-processing-therapy": "cognitive processing therapy (CPT)",
    "emdr": "EMDR",
}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_FLAG = re.compile(r"^[a-z][a-z0-9-]*$")
_RAW_HTML = re.compile(r"<[A-Za-z/!?]")
_FORMATTER = string.Formatter()


class CardContentError(ValueError):
    """A card file has content the service will not show (message: file and field)."""


class RenderError(RuntimeError):
    """A Finding does not fit its card (a programming error in the rules, not bad data)."""


# --- the loaded content ----------------------------------------------------------------------
@dataclass(frozen=True)
class Document:
    id: str
    short: str
    title: str
    url: str | None
    kind: str


@dataclass(frozen=True)
class Citation:
    id: str
    document: Document
    statement: str
    strength: str | None
    evidence: str | None
    verification: str | None


@dataclass(frozen=True)
class Placeholder:
    name: str
    description: str
    max_length: int | None
    optional: bool


@dataclass(frozen=True)
class Visibility:
    """When an optional part of a card applies: hook list and flags (all ``when``, no ``unless``)."""

    hooks: frozenset[str] | None
    when: frozenset[str]
    unless: frozenset[str]

    def applies(self, hook: str, flags: frozenset[str]) -> bool:
        return ((self.hooks is None or hook in self.hooks) and self.when <= flags
                and not (self.unless & flags))


@dataclass(frozen=True)
class Paragraph:
    text: str
    cite: tuple[str, ...]
    visible: Visibility


@dataclass(frozen=True)
class ActionTemplate:
    type: str
    description: str
    resource: dict[str, Any] | None
    resource_id: str | None


@dataclass(frozen=True)
class SuggestionTemplate:
    label: str
    actions: tuple[ActionTemplate, ...]
    visible: Visibility


@dataclass(frozen=True)
class CardTemplate:
    path: Path
    topic: str
    title: str
    hooks: tuple[str, ...]
    indicators: dict[str, str]
    summaries: dict[str, str]
    source_label: str
    source_document: Document
    placeholders: dict[str, Placeholder]
    flags: dict[str, str]
    paragraphs: tuple[Paragraph, ...]
    citations: dict[str, Citation]
    links: tuple[Document, ...]
    suggestions: tuple[SuggestionTemplate, ...]
    selection_behavior: str | None
    override_reasons: tuple[tuple[str, str], ...]  # (code, display)


# --- reading TOML with errors that name the file and field -----------------------------------
class _Table:
    """A TOML table plus where it is (file and dotted path) for error messages:
    ``step-2-ssri.toml: detail[2].cite: unknown citation(s) [...]``."""

    def __init__(self, data: Any, file: str, path: str = ""):
        self.file, self.path = file, path
        if not isinstance(data, dict):
            raise CardContentError(f"{self.where}: must be a table")
        self.data = data

    @property
    def where(self) -> str:
        return f"{self.file}: {self.path}" if self.path else self.file

    def _child(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, why: str) -> CardContentError:
        return CardContentError(f"{self.file}: {self._child(key)}: {why}")

    def check_keys(self, allowed: Iterable[str]) -> None:
        unknown = sorted(set(self.data) - set(allowed))
        if unknown:
            raise CardContentError(f"{self.where}: unknown field(s) {unknown}")

    def get(self, key: str, kind: type, *, required: bool = True, default: Any = None) -> Any:
        if key not in self.data:
            if required:
                raise self.error(key, "is missing")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise self.error(key, f"must be a {kind.__name__}")
        if isinstance(value, (str, list, dict)) and not value:
            raise self.error(key, "must not be empty")
        return value

    def text(self, key: str, *, required: bool = True) -> str | None:
        value = self.get(key, str, required=required)
        return value.strip() if value is not None else None

    def strings(self, key: str, *, required: bool = False) -> tuple[str, ...]:
        values = self.get(key, list, required=required, default=[])
        if not all(isinstance(v, str) and v for v in values):
            raise self.error(key, "must be a list of non-empty strings")
        return tuple(values)

    def table(self, key: str, *, required: bool = True) -> "_Table | None":
        value = self.get(key, dict, required=required)
        return _Table(value, self.file, self._child(key)) if value is not None else None

    def tables(self, key: str, *, required: bool = False) -> list["_Table"]:
        values = self.get(key, list, required=required, default=[])
        return [_Table(v, self.file, f"{self._child(key)}[{i}]") for i, v in enumerate(values)]


def template_fields(text: str, where: str) -> set[str]:
    """The ``{name}`` fields of a template; refuses anything but plain names."""
    try:
        parts = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise CardContentError(f"{where}: bad template ({exc})") from None
    names = set()
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if not _NAME.match(name) or spec or conversion:
            raise CardContentError(f"{where}: template field {{{name}}} must be a plain name like {{drug}}")
        names.add(name)
    return names


def _resource_strings(value: Any, where: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        yield value, where
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _resource_strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _resource_strings(item, f"{where}[{i}]")


def iter_codings(value: Any) -> Iterable[dict[str, Any]]:
    """Every Coding-shaped object (has system and code) anywhere inside a JSON value."""
    if isinstance(value, dict):
        if "system" in value and "code" in value:
            yield value
        for item in value.values():
            yield from iter_codings(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_codings(item)


# Kinds of document whose web address may be missing (never invented): see cards/shared.toml.
URL_OPTIONAL_KINDS = ("service-rule", "study", "trial")


def _is_absolute(url: str) -> bool:
    return re.match(r"^https?://[^/\s]+\S*$", url) is not None


# --- the library -----------------------------------------------------------------------------
class CardLibrary:
    def __init__(self, cards: dict[str, CardTemplate]):
        self.cards = cards

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self.cards)

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def load(cls, cards_dir: str | Path, *, topics: Iterable[str] | None = None) -> "CardLibrary":
        """Read ``shared.toml`` and every other ``*.toml`` of ``cards_dir`` as one card each.

        With ``topics``, the card files must be exactly those topics (one card per rule topic).
        """
        directory = Path(cards_dir)
        shared_path = directory / SHARED_FILE
        if not shared_path.is_file():
            raise CardContentError(f"{shared_path}: missing (documents and override reasons)")
        shared = _Table(_read_toml(shared_path), SHARED_FILE)
        shared.check_keys(["sources", "override_reasons"])
        documents = _load_documents(shared)
        reasons = _load_override_reasons(shared)
        cards: dict[str, CardTemplate] = {}
        for path in sorted(directory.glob("*.toml")):
            if path.name == SHARED_FILE:
                continue
            card = _load_card(path, documents, reasons)
            cards[card.topic] = card
        if not cards:
            raise CardContentError(f"{directory}: no card files")
        if topics is not None:
            wanted = set(topics)
            missing, extra = sorted(wanted - set(cards)), sorted(set(cards) - wanted)
            if missing or extra:
                raise CardContentError(
                    f"{directory}: card files do not match the rule topics (missing {missing}, no rule for {extra})")
        return cls(cards)

    # -- rendering ------------------------------------------------------------------------
    def render(self, finding: Finding, *, patient_id: str) -> dict[str, Any]:
        card = self.cards.get(finding.topic)
        if card is None:
            raise RenderError(f"no card file for topic {finding.topic!r}")
        hook = finding.hook
        if hook not in card.hooks:
            raise RenderError(f"{card.path.name}: card is not for hook {hook!r}")
        if card.indicators[hook] != finding.indicator:
            raise RenderError(f"{card.path.name}: indicator on {hook} is {card.indicators[hook]!r}, "
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

        summary = self._fill(card, card.summaries[hook], _summary_values(card, values), "summary")
        summary = " ".join(summary.split())
        if len(summary) >= SUMMARY_LIMIT:  # cannot happen after the load-time check; kept as a guard
            raise RenderError(f"{card.path.name}: summary has {len(summary)} characters")

        paragraphs = [p for p in card.paragraphs if p.visible.applies(hook, finding.flags)]
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
            "links": [{"label": d.title, "url": d.url, "type": "absolute"} for d in card.links],
        }
        suggestions = [s for s in (self._suggestion(card, t, values) for t in card.suggestions
                                   if t.visible.applies(hook, finding.flags)) if s]
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
                resource = prune(_fill_resource(action.resource, lambda s: self._fill(card, s, values, "resource")))
                out["resource"] = resource
            if action.resource_id is not None:
                target = self._fill(card, action.resource_id, values, "resource_id")
                if not target:
                    return None  # the draft order has no id: nothing to delete, no suggestion
                out["resourceId"] = target
            actions.append(out)
        return {"label": self._fill(card, template.label, values, "suggestion"),
                "uuid": str(uuid.uuid4()), "actions": actions}


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


def _fill_resource(value: Any, fill) -> Any:
    if isinstance(value, str):
        return fill(value)
    if isinstance(value, dict):
        return {k: _fill_resource(v, fill) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_resource(v, fill) for v in value]
    return value


def prune(value: Any) -> Any:
    """Drop None, "", [] and {} members, recursively (CDS Hooks GEN-02: omit, never empty)."""
    if isinstance(value, dict):
        out = {k: prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        out = [prune(v) for v in value]
        return [v for v in out if v not in (None, "", [], {})]
    return value


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


def condition_line(c: ConditionFact) -> str:
    name = "PTSD" if c.kind == "ptsd" else "Nightmares"
    what = md_escape(c.text or c.code.display or c.code.code or "condition")
    details = _join([
        md_escape(c.code.label()),
        c.clinical_status and f"clinical status {md_escape(c.clinical_status)}",
        c.verification_status and f"verification {md_escape(c.verification_status)}",
        c.onset and f"onset {_date(c.onset)}",
        c.recorded and f"recorded {_date(c.recorded)}",
    ])
    return f"- **{name}:** {what} — {details}{_ref(c.reference)}"


def drug_line(d: DrugFact, hook: str) -> str:
    if d.is_draft_order:
        kind = "Draft order being signed" if hook == ORDER_SIGN else "Selected draft order"
    else:
        kind = "Current medication" if d.is_current else "Medication (not current)"
    details = _join([
        md_escape(d.ingredient),
        md_escape(d.dose_text) if d.dose_text else (f"{d.daily_dose_mg:g} mg/day" if d.daily_dose_mg is not None
                                                   else "daily dose not recorded"),
        d.route and f"route {md_escape(d.route)}",
        d.status and f"status {md_escape(d.status)}",
        d.authored_on and f"ordered {_date(d.authored_on)}",
        (d.period_start or d.period_end) and
        f"valid {_date(d.period_start) or '?'} to {_date(d.period_end) or 'open'}",
        d.code and md_escape(d.code.label()),
    ])
    return f"- **{kind}:** {md_escape(d.label)} — {details}{_ref(d.reference)}"


def trial_line(t: SsriTrial) -> str:
    d = t.drug
    span = f"{_date(d.trial_start) or '?'} to {_date(d.trial_end) or '?'}"
    verdict = f"adequate: {'yes' if t.adequate else 'no'}; failed: {'yes' if t.failed else 'no'}"
    how = md_escape(t.reason) if t.reason else verdict
    return f"- **SSRI trial:** {md_escape(d.label)}, {span} — {how}{_ref(d.reference)}"


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
    lines += [condition_line(c) for c in finding.conditions]
    lines += [drug_line(d, finding.hook) for d in finding.drugs]
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
def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise CardContentError(f"{path.name}: not valid TOML ({exc})") from None


def _load_documents(shared: _Table) -> dict[str, Document]:
    sources = shared.table("sources")
    documents = {}
    for doc_id in sources.data:
        t = sources.table(doc_id)
        t.check_keys(["short", "title", "url", "kind", "where"])
        kind = t.text("kind")
        if kind not in KINDS:
            raise t.error("kind", f"must be one of {list(KINDS)}")
        url = t.text("url", required=kind not in URL_OPTIONAL_KINDS)
        if url is not None and not _is_absolute(url):
            raise t.error("url", "must be an absolute http(s) URL")
        t.text("where")  # where GUIDELINE-FACTS cites it: required, for reviewers
        documents[doc_id] = Document(doc_id, t.text("short"), t.text("title"), url, kind)
    return documents


def _load_override_reasons(shared: _Table) -> dict[str, str]:
    reasons = shared.table("override_reasons")
    for code, display in reasons.data.items():
        if not _FLAG.match(code) or not isinstance(display, str) or not display.strip():
            raise reasons.error(code, "needs a code like 'patient-declined' and a display text")
    return dict(reasons.data)


_CARD_KEYS = ["topic", "title", "hooks", "selection_behavior", "override_reasons", "links", "indicator",
              "summary", "source", "placeholders", "flags", "detail", "citations", "suggestions"]


def _load_card(path: Path, documents: dict[str, Document], reasons: dict[str, str]) -> CardTemplate:
    t = _Table(_read_toml(path), path.name)
    t.check_keys(_CARD_KEYS)
    topic = t.text("topic")
    if path.stem != topic:
        raise t.error("topic", f"must equal the file name ({path.stem!r})")
    hooks = t.strings("hooks", required=True)
    if not set(hooks) <= set(HOOKS) or len(set(hooks)) != len(hooks):
        raise t.error("hooks", f"must be distinct values of {list(HOOKS)}")

    indicator = t.table("indicator")
    if set(indicator.data) != set(hooks):
        raise t.error("indicator", f"needs exactly one entry per hook {list(hooks)}")
    indicators = {h: indicator.text(h) for h in hooks}
    for h, value in indicators.items():
        if value not in INDICATORS:
            raise indicator.error(h, f"must be one of {list(INDICATORS)}")

    placeholders = _load_placeholders(t)
    flags = _load_flags(t)

    def check_fields(text: str, where: str) -> set[str]:
        names = template_fields(text, where)
        unknown = names - set(placeholders)
        if unknown:
            raise CardContentError(f"{where}: unknown placeholder(s) {sorted(unknown)}")
        return names

    summaries = _load_summaries(t, hooks)
    for h, text in summaries.items():
        where = f"{path.name}: summary.{h}"
        names = check_fields(text, where)
        unbounded = sorted(n for n in names if placeholders[n].max_length is None)
        if unbounded:
            raise CardContentError(f"{where}: placeholder(s) {unbounded} need a max_length to be used in a summary")
        worst = text.format_map({n: "x" * placeholders[n].max_length for n in names})
        if len(worst) >= SUMMARY_LIMIT:
            raise CardContentError(
                f"{where}: {len(worst)} characters with the longest values; must stay under {SUMMARY_LIMIT}")

    source = t.table("source")
    source.check_keys(["label", "document"])
    source_doc = _document(source, "document", documents)
    if source_doc.url is None:
        raise source.error("document", "must be a document with a url")

    citations = _load_citations(t, documents)
    paragraphs = []
    for p in t.tables("detail", required=True):
        p.check_keys(["text", "cite", "hooks", "when", "unless"])
        text = p.text("text")
        if _RAW_HTML.search(text):
            raise p.error("text", "raw HTML is not allowed (GitHub-flavoured Markdown only)")
        check_fields(text, f"{p.where}.text")
        cite = p.strings("cite", required=True)
        unknown = [c for c in cite if c not in citations]
        if unknown:
            raise p.error("cite", f"unknown citation(s) {unknown}")
        paragraphs.append(Paragraph(text, cite, _visibility(p, hooks, flags)))
    used = {c for p in paragraphs for c in p.cite}
    unused = sorted(set(citations) - used)
    if unused:
        raise t.error("citations", f"cited by no paragraph: {unused}")

    links = tuple(_document_by_id(t, "links", d, documents) for d in t.strings("links", required=True))
    if any(d.url is None for d in links):
        raise t.error("links", "every link needs a document with a url")

    suggestions = tuple(_load_suggestion(s, hooks, flags, check_fields) for s in t.tables("suggestions"))
    behavior = t.text("selection_behavior", required=bool(suggestions))
    if suggestions and behavior not in SELECTION_BEHAVIORS:
        raise t.error("selection_behavior", f"must be one of {list(SELECTION_BEHAVIORS)}")
    if not suggestions and behavior is not None:
        raise t.error("selection_behavior", "only for cards with suggestions")

    codes = t.strings("override_reasons")
    unknown = [c for c in codes if c not in reasons]
    if unknown:
        raise t.error("override_reasons", f"not defined in {SHARED_FILE}: {unknown}")

    return CardTemplate(
        path=path, topic=topic, title=t.text("title"), hooks=hooks, indicators=indicators,
        summaries=summaries, source_label=source.text("label"), source_document=source_doc,
        placeholders=placeholders, flags=flags, paragraphs=tuple(paragraphs), citations=citations,
        links=links, suggestions=suggestions, selection_behavior=behavior,
        override_reasons=tuple((c, reasons[c]) for c in codes),
    )


def _load_placeholders(t: _Table) -> dict[str, Placeholder]:
    table = t.table("placeholders", required=False)
    out: dict[str, Placeholder] = {}
    if table is None:
        return out
    for name in table.data:
        if not _NAME.match(name):
            raise table.error(name, "placeholder names are lower_case_with_underscores")
        p = table.table(name)
        p.check_keys(["description", "max_length", "optional"])
        limit = p.get("max_length", int, required=False)
        if limit is not None and limit < 1:
            raise p.error("max_length", "must be at least 1")
        out[name] = Placeholder(name, p.text("description"), limit, p.get("optional", bool, required=False, default=False))
    return out


def _load_flags(t: _Table) -> dict[str, str]:
    table = t.table("flags", required=False)
    if table is None:
        return {}
    for name in table.data:
        if not _FLAG.match(name):
            raise table.error(name, "flag names are lower-case-with-dashes")
        table.text(name)
    return dict(table.data)


def _load_summaries(t: _Table, hooks: tuple[str, ...]) -> dict[str, str]:
    value = t.data.get("summary")
    if isinstance(value, str) and value.strip():
        return {h: value.strip() for h in hooks}
    table = t.table("summary")
    if set(table.data) != set(hooks):
        raise t.error("summary", f"needs one text, or one per hook {list(hooks)}")
    return {h: table.text(h) for h in hooks}


def _document(t: _Table, key: str, documents: dict[str, Document]) -> Document:
    return _document_by_id(t, key, t.text(key), documents)


def _document_by_id(t: _Table, key: str, doc_id: str, documents: dict[str, Document]) -> Document:
    if doc_id not in documents:
        raise t.error(key, f"unknown document {doc_id!r} (documents are listed in {SHARED_FILE})")
    return documents[doc_id]


def _load_citations(t: _Table, documents: dict[str, Document]) -> dict[str, Citation]:
    table = t.table("citations")
    out = {}
    for cid in table.data:
        c = table.table(cid)
        c.check_keys(["source", "statement", "strength", "evidence", "verification"])
        doc = _document(c, "source", documents)
        strength = c.text("strength", required=doc.kind == "guideline")
        evidence = c.text("evidence", required=doc.kind not in ("guideline", "service-rule"))
        verification = c.text("verification", required=doc.kind != "service-rule")
        if verification is not None and verification not in VERIFICATION_NOTE:
            raise c.error("verification", f"must be one of {list(VERIFICATION_NOTE)}")
        out[cid] = Citation(cid, doc, c.text("statement").rstrip("."), strength, evidence, verification)
    return out


def _visibility(t: _Table, hooks: tuple[str, ...], flags: dict[str, str]) -> Visibility:
    only = t.strings("hooks")
    if not set(only) <= set(hooks):
        raise t.error("hooks", f"must be among the card's hooks {list(hooks)}")
    when, unless = t.strings("when"), t.strings("unless")
    unknown = sorted(set(when + unless) - set(flags))
    if unknown:
        raise CardContentError(f"{t.where}: flag(s) {unknown} not declared in [flags]")
    return Visibility(frozenset(only) if only else None, frozenset(when), frozenset(unless))


def _load_suggestion(s: _Table, hooks, flags, check_fields) -> SuggestionTemplate:
    s.check_keys(["label", "actions", "hooks", "when", "unless"])
    label = s.text("label")
    check_fields(label, f"{s.where}.label")
    actions = []
    for a in s.tables("actions", required=True):
        a.check_keys(["type", "description", "resource", "resource_id"])
        kind = a.text("type")
        description = a.text("description")
        check_fields(description, f"{a.where}.description")
        if kind == "create":
            if "resource_id" in a.data:
                raise a.error("resource_id", "only for delete actions")
            resource = a.get("resource", dict)
            _check_resource(a, resource, check_fields)
            actions.append(ActionTemplate(kind, description, resource, None))
        elif kind == "delete":
            if "resource" in a.data:
                raise a.error("resource", "a delete action names resource_id only")
            target = a.text("resource_id")
            check_fields(target, f"{a.where}.resource_id")
            actions.append(ActionTemplate(kind, description, None, target))
        else:
            raise a.error("type", "must be 'create' or 'delete'")
    return SuggestionTemplate(label, tuple(actions), _visibility(s, hooks, flags))


def _check_resource(a: _Table, resource: dict[str, Any], check_fields) -> None:
    where = f"{a.where}.resource"
    if resource.get("resourceType") not in ("ServiceRequest", "MedicationRequest"):
        raise CardContentError(f"{where}.resourceType: must be ServiceRequest or MedicationRequest")
    if resource.get("status") != "draft":
        raise CardContentError(f"{where}.status: a suggested resource is a draft")
    if resource.get("intent") not in ("proposal", "plan", "order"):
        raise CardContentError(f"{where}.intent: must be proposal, plan or order")
    if resource.get("subject") != {"reference": "Patient/{patient_id}"}:
        raise CardContentError(f"{where}.subject: must be {{ reference = \"Patient/{{patient_id}}\" }}")
    for text, place in _resource_strings(resource, where):
        check_fields(text, place)
    for coding in iter_codings(resource):
        system = coding.get("system")
        if isinstance(system, str) and system.startswith(BASE) and system not in PROJECT_SYSTEMS:
            raise CardContentError(f"{where}: unknown project code system {system!r}")
