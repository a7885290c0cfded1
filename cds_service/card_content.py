"""Card content as data: reading and checking ``cards/*.toml`` (one file per card kind).

``load_cards(cards_dir, topics=)`` reads ``shared.toml`` (the documents cards cite, the override
reasons) and every card file once, at start-up; bad content raises ``CardContentError`` naming the
file and the field (missing citation, summary that could reach 140 characters, unknown
placeholder, raw HTML, a made-up code...). ``cds_service.rendering`` turns the loaded templates
and the rules' Findings into CDS Hooks cards. The format is described for clinical reviewers in
``cards/README.md``.
"""

from __future__ import annotations

import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from cds_service.codesystems import BASE, CARD_TOPIC, OVERRIDE_REASON, PSYCHOTHERAPY
from cds_service.rules.finding import HOOKS

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
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_FLAG = re.compile(r"^[a-z][a-z0-9-]*$")
_RAW_HTML = re.compile(r"<[A-Za-z/!?]")
_FORMATTER = string.Formatter()


class _Samples(dict):
    def __missing__(self, key: str) -> str:
        return _SAMPLE_VALUES.get(key, "example")


class CardContentError(ValueError):
    """A card file has content the service will not show (message: file and field)."""


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
    # Shown on the card's catalogue page only, never in the card (long explanations; issue #8 point 15).
    catalogue_only: bool = False


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
    # One suggestion per order the card is about (Finding.orders), filled with that order's values
    # (one card per concern, one "remove" per order: issue #8 point 16).
    each_order: bool = False


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
    # flag -> indicator: when the rule sets the flag, the card has this indicator on every hook
    # (e.g. a PTSD diagnosis of unknown status turns the critical benzodiazepine card into a
    # warning). The first listed flag that is set wins.
    indicator_when: tuple[tuple[str, str], ...] = ()
    # flag -> {hook: summary}: when the rule sets the flag, this summary replaces the hook's one.
    summary_when: tuple[tuple[str, dict[str, str]], ...] = ()


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


def prune(value: Any) -> Any:
    """Drop None, "", [] and {} members, recursively (CDS Hooks GEN-02: omit, never empty)."""
    if isinstance(value, dict):
        out = {k: prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        out = [prune(v) for v in value]
        return [v for v in out if v not in (None, "", [], {})]
    return value


def fill_resource(value: Any, fill) -> Any:
    """A suggested resource template with every string passed through ``fill``."""
    if isinstance(value, str):
        return fill(value)
    if isinstance(value, dict):
        return {k: fill_resource(v, fill) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_resource(v, fill) for v in value]
    return value


# Values a template is filled with for its start-up check: every placeholder present, references
# well formed.
_SAMPLE_VALUES = {"patient_id": "example", "ptsd_condition": "Condition/example", "target_order": "MedicationRequest/example"}


def suggested_resource_problems(resource: dict[str, Any]) -> list[str]:
    """What a strict FHIR R4B reader (fhir.resources) rejects in a filled, pruned suggested resource."""
    from cds_service.facts.fhir_read import strict_problems

    return strict_problems(resource)


def _is_absolute(url: str) -> bool:
    return re.match(r"^https?://[^/\s]+\S*$", url) is not None


# --- loading ---------------------------------------------------------------------------------
def load_cards(cards_dir: str | Path, *, topics: Iterable[str] | None = None) -> dict[str, CardTemplate]:
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
    return cards


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
              "indicator_when", "summary_when",
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
    when = t.table("indicator_when", required=False)
    indicator_when = []
    for flag in (when.data if when else {}):
        if flag not in flags:
            raise when.error(flag, "must be a flag declared in [flags]")
        if when.text(flag) not in INDICATORS:
            raise when.error(flag, f"must be one of {list(INDICATORS)}")
        indicator_when.append((flag, when.text(flag)))

    def check_fields(text: str, where: str) -> set[str]:
        names = template_fields(text, where)
        unknown = names - set(placeholders)
        if unknown:
            raise CardContentError(f"{where}: unknown placeholder(s) {sorted(unknown)}")
        return names

    summaries = _load_summaries(t, hooks)
    summary_when = []
    when_table = t.table("summary_when", required=False)
    for flag in (when_table.data if when_table else {}):
        if flag not in flags:
            raise when_table.error(flag, "must be a flag declared in [flags]")
        summary_when.append((flag, _load_summaries(_Table({"summary": when_table.data[flag]}, path.name,
                                                          f"summary_when.{flag}"), hooks)))
    checked = list(summaries.items()) + [(f"{h} ({flag})", text) for flag, by_hook in summary_when
                                         for h, text in by_hook.items()]
    for h, text in checked:
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
        p.check_keys(["text", "cite", "hooks", "when", "unless", "catalogue_only"])
        text = p.text("text")
        if _RAW_HTML.search(text):
            raise p.error("text", "raw HTML is not allowed (GitHub-flavoured Markdown only)")
        check_fields(text, f"{p.where}.text")
        cite = p.strings("cite", required=True)
        unknown = [c for c in cite if c not in citations]
        if unknown:
            raise p.error("cite", f"unknown citation(s) {unknown}")
        paragraphs.append(Paragraph(text, cite, _visibility(p, hooks, flags),
                                    bool(p.get("catalogue_only", bool, required=False, default=False))))
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
        indicator_when=tuple(indicator_when), summary_when=tuple(summary_when),
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
    s.check_keys(["label", "actions", "hooks", "when", "unless", "each_order"])
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
    return SuggestionTemplate(label, tuple(actions), _visibility(s, hooks, flags),
                              bool(s.get("each_order", bool, required=False, default=False)))


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
    # Full R4 validation of what the service itself puts into the EHR's order basket: the
    # template filled with sample values must be a valid resource (fhir.resources R4B).
    sample = prune(fill_resource(resource, lambda text: text.format_map(_Samples())))
    problems = suggested_resource_problems(sample)
    if problems:
        raise CardContentError(f"{where}: not a valid FHIR R4 {resource.get('resourceType')}: {'; '.join(problems)}")
