"""Terminology: code systems, value sets, drug names, therapy patterns and the site code map.

All clinical content lives in ``cds_service/data/terminology/*.json`` (compiled from the project's
clinical reference material; every entry carries a ``source``):

* ``systems.json``      - canonical code system URIs and their short names.
* ``conditions.json``   - PTSD / nightmare / not-PTSD condition codes (generated).
* ``medications.json``  - ingredients of interest, RxNorm codes -> ingredient, names (generated).
* ``routes.json``       - words marking injection / rectal / nasal administration.
* ``psychotherapy.json``- trauma-focused therapy ids, verified codes and text patterns.
* ``thresholds.json``   - current-order window and adequate-SSRI-trial thresholds.
* ``opioids.json``      - opioid ingredients (named on the benzodiazepine card; hand-maintained).
* ``opioid-products.json`` - opioid product codes of the CDC value sets -> ingredient (generated).
* ``benzodiazepine-exemptions.json`` - rescue formulations, route codes, single-dose and
  pre-procedure words (when a benzodiazepine order gets no card; hand-maintained service rules).
* ``condition-text.json`` - PTSD named in a Condition's text, and the negations that cancel it.

``Terminology.load()`` reads them once per process (cached) and builds set/dict look-ups and
compiled regular expressions, so every look-up during a hook call is O(1) or one regex search.

Site code map
-------------
A site can map its local Procedure codes to a trauma-focused therapy with a JSON file (setting
``site_code_map``; example in ``fixtures/site-code-map.example.json``)::

    {
      "description": "optional free text",
      "procedures": [
        {"system": "http://hospital.example.org/codes", "code": "PSY-PE",
         "therapy": "prolonged-exposure", "display": "optional label"}
      ]
    }

``therapy`` is one of ``prolonged-exposure``, ``cognitive-processing-therapy``, ``emdr``.
``system`` and ``code`` are non-empty strings, matched exactly (system URI after trimming a
trailing ``/``). Unknown keys, a missing ``procedures`` list, a bad therapy id or one code mapped to
two therapies raise ``ValueError`` naming the problem and the entry index. An ``outgoing`` section
(the site's codes for the referrals and drafts the cards suggest) is read and checked by
``cds_service.codesystems.parse_outgoing_map``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from cds_service.codesystems import PSYCHOTHERAPY, read_site_code_map
from cds_service.facts.fhir_read import MAX_MATCH_TEXT
from cds_service.facts.model import DrugClass, MatchedBy, TherapyKind

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "terminology"

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"  # WHO ICD-10 (non-US feeds)
ICD11 = "http://id.who.int/icd/release/11/mms"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UNII = "http://fdasis.nlm.nih.gov"

THERAPIES: tuple[TherapyKind, ...] = ("prolonged-exposure", "cognitive-processing-therapy", "emdr",
                                      "image-rehearsal-therapy")
ConditionKind = str  # "ptsd" | "nightmares" | "acute-stress" | "alcohol-withdrawal" | "seizure"
# Condition kinds that exempt a benzodiazepine order whose own reason they are (issue #8 point 2).
INDICATION_KINDS = frozenset({"alcohol-withdrawal", "seizure"})


# --- small pure helpers ---------------------------------------------------------------------------
def canonical_system(system: str | None) -> str | None:
    """Trim whitespace and a trailing ``/`` from a code system URI (None stays None); a
    ``urn:oid:`` form listed in ``systems.json`` becomes its URI (CODES-2 §7: C-CDA-derived feeds
    send OIDs)."""
    if not isinstance(system, str):
        return None
    system = system.strip().rstrip("/")
    if system[:8].lower() == "urn:oid:":
        return _oid_uris().get(system[8:], system)
    return system or None


@lru_cache(maxsize=1)
def _oid_uris() -> dict[str, str]:
    return {s["oid"]: s["uri"] for s in _read("systems.json")["systems"] if s.get("oid")}


def normalise_code(system: str | None, code: str | None) -> str | None:
    """Code as used for look-ups: trimmed; ICD-10-CM also upper-cased and without the dot."""
    if not isinstance(code, str):
        return None
    code = code.strip()
    if system == ICD10CM or system == ICD10:
        code = code.replace(".", "").upper()
    return code or None


def _system_names() -> dict[str, str]:
    names = {s["uri"]: s["name"] for s in _read("systems.json")["systems"]}
    names[PSYCHOTHERAPY] = "ptsd-cds trauma-focused psychotherapy"
    return names


def system_name(system: str | None) -> str:
    """Short human name of a code system ("SNOMED CT", "ICD-10-CM", ...), else the URI itself."""
    if system is None:
        return "code"
    return _cached_system_names().get(canonical_system(system) or "", system)


@lru_cache(maxsize=1)
def _cached_system_names() -> dict[str, str]:
    return _system_names()


def _read(name: str) -> dict[str, Any]:
    with open(DATA_DIR / name, encoding="utf-8") as fh:
        return json.load(fh)


@lru_cache(maxsize=16)
def _cached_words(words: tuple[str, ...]) -> re.Pattern[str]:
    return _word_regex(words)


def _word_regex(words: Iterable[str]) -> re.Pattern[str]:
    """One case-insensitive whole-word alternation, longest words first."""
    alts = sorted({w.strip() for w in words if w.strip()}, key=len, reverse=True)
    body = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in alts)
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)


# --- match results --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DrugMatch:
    """How a drug was recognised."""

    ingredient: str
    drug_class: DrugClass
    matched_by: MatchedBy
    non_systemic_brand: bool = False  # matched a brand sold only as injection/rectal/nasal forms
    reference_display: str | None = None  # display of the matched code in our tables (has the dose form)


@dataclass(frozen=True)
class Thresholds:  # noqa: PLR0902 - plain data
    current_max_age_days: int
    current_statuses: frozenset[str]
    ssri_min_weeks: float
    ssri_min_daily_dose_mg: Mapping[str, float]
    ssri_trial_gap_days: int  # orders of one drug this close together are one uninterrupted course
    refill_bridge_days: int  # an order without an end lasted until the next order of the drug within this
    default_supply_days: int = 30  # a last order without end or supply lasted this long
    # first-line agents whose minimum effective dose is exclusive ("above 37.5 mg")
    trial_above_min_only: frozenset[str] = frozenset()
    trial_max_daily_dose_mg: Mapping[str, float] = field(default_factory=dict)
    not_tolerated_within_days: int = 14
    not_tolerated_words: tuple[str, ...] = ()

    def at_min_dose(self, ingredient: str, daily_mg: float | None) -> bool:
        """At or above the minimum effective daily dose (above it for venlafaxine)."""
        low = self.ssri_min_daily_dose_mg.get(ingredient)
        if low is None or daily_mg is None:
            return False
        return daily_mg > low if ingredient in self.trial_above_min_only else daily_mg >= low

    def not_tolerated(self, reason: str | None) -> bool:
        """A statusReason text that says the drug was not tolerated (whole words)."""
        return _search(_cached_words(self.not_tolerated_words), reason)


# --- the terminology ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)  # hashed by identity: the memoised look-ups below key on it
class _Base:
    """Everything loaded from the data folder (shared by all Terminology instances)."""

    conditions: dict[tuple[str, str], frozenset[str]]
    not_ptsd: frozenset[tuple[str, str]]
    drug_codes: dict[tuple[str, str], tuple[str, MatchedBy, str]]  # -> ingredient, matched_by, display
    drug_class: dict[str, DrugClass]
    name_regex: re.Pattern[str]
    name_to_ingredient: dict[str, tuple[str, bool]]  # lower-case name -> (ingredient, non-systemic brand)
    route_regex: re.Pattern[str]
    dose_form_regex: re.Pattern[str]
    therapy_codes: dict[tuple[str, str], TherapyKind]
    therapy_patterns: tuple[tuple[TherapyKind, re.Pattern[str]], ...]
    therapy_exclusion: re.Pattern[str]
    thresholds: Thresholds
    exemptions: "Exemptions | None" = None
    condition_text: "ConditionText | None" = None


@dataclass(frozen=True, eq=False)
class Exemptions:
    """benzodiazepine-exemptions.json, compiled."""

    rescue_ingredients: frozenset[str]
    rescue_products: frozenset[tuple[str, str]]
    route_codes: dict[tuple[str, str], str]  # (system, code) -> "injection" | "rescue"
    rescue_route_regex: re.Pattern[str]
    rescue_dose_form_regex: re.Pattern[str]
    single_dose_regex: re.Pattern[str]
    pre_procedure_regex: re.Pattern[str]
    injection_route_regex: re.Pattern[str]  # routes.json routeWords.injection
    injection_form_regex: re.Pattern[str]  # routes.json doseFormWords.injection


@dataclass(frozen=True, eq=False)
class ConditionText:
    """condition-text.json, compiled: a PTSD term, a negation before it, a negation after it."""

    term: re.Pattern[str]
    negated_before: re.Pattern[str]
    negated_after: re.Pattern[str]


def _build_conditions(data: dict[str, Any]) -> tuple[dict[tuple[str, str], frozenset[str]], frozenset]:
    kinds: dict[tuple[str, str], set[str]] = {}
    for kind, group in (("ptsd", "ptsd"), ("nightmares", "nightmares"), ("acute-stress", "acuteStress"),
                        ("pregnancy", "pregnancy"), ("alcohol-withdrawal", "alcoholWithdrawal"),
                        ("seizure", "seizure")):
        for row in data.get(group, []):
            key = (row["system"], normalise_code(row["system"], row["code"]))
            kinds.setdefault(key, set()).add(kind)
    not_ptsd = frozenset((r["system"], normalise_code(r["system"], r["code"])) for r in data["notPtsd"])
    overlap = {k for k in not_ptsd & kinds.keys() if kinds[k] & {"ptsd", "nightmares"}}
    if overlap:
        raise ValueError(f"conditions.json: codes both PTSD and not-PTSD: {sorted(overlap)}")
    return {k: frozenset(v) for k, v in kinds.items()}, not_ptsd


def _build_drug_codes(data: dict[str, Any]) -> dict[tuple[str, str], tuple[str, MatchedBy, str]]:
    codes: dict[tuple[str, str], tuple[str, MatchedBy, str]] = {}
    for name, ing in data["ingredients"].items():
        if ing.get("rxnorm"):
            codes[(RXNORM, ing["rxnorm"])] = (name, "ingredient", name)
    for row in data["otherLevelCodes"] + data["substanceCodes"]:
        codes[(row["system"], row["code"])] = (row["ingredient"], "ingredient", row.get("display", ""))
    for row in data["codes"]:
        codes[(row["system"], row["code"])] = (row["ingredient"], "valueset", row["display"])
    return codes


def _build_names(data: dict[str, Any]) -> tuple[re.Pattern[str], dict[str, tuple[str, bool]]]:
    names: dict[str, tuple[str, bool]] = {}
    for ingredient, ing in data["ingredients"].items():
        for n in ing["names"]:
            names[n.lower()] = (ingredient, False)
        for brand in ing["brands"]:
            names[brand["name"].lower()] = (ingredient, bool(brand.get("nonSystemicOnly")))
    return _word_regex(names), names


def _build_therapies(data: dict[str, Any]) -> tuple[dict, tuple, re.Pattern[str]]:
    codes: dict[tuple[str, str], TherapyKind] = {(PSYCHOTHERAPY, t): t for t in THERAPIES}
    patterns: list[tuple[TherapyKind, re.Pattern[str]]] = []
    for therapy, spec in data["therapies"].items():
        if therapy not in THERAPIES:
            raise ValueError(f"psychotherapy.json: unknown therapy {therapy!r}")
        for c in spec.get("verifiedCodes", []):
            codes[(c["system"], normalise_code(c["system"], c["code"]))] = therapy
        patterns += [(therapy, re.compile(p, re.IGNORECASE)) for p in spec["textPatterns"]]
    exclusion = re.compile("|".join(data["textExclusions"]["patterns"]), re.IGNORECASE)
    return codes, tuple(patterns), exclusion


def _build_thresholds(data: dict[str, Any]) -> Thresholds:
    cur, ssri = data["currentOrder"], data["adequateSsriTrial"]
    return Thresholds(
        current_max_age_days=int(cur["maxAgeDays"]),
        current_statuses=frozenset(cur["statuses"]),
        ssri_min_weeks=float(ssri["minWeeks"]),
        ssri_min_daily_dose_mg={k: float(v) for k, v in ssri["minDailyDoseMg"].items()},
        ssri_trial_gap_days=int(ssri["maxGapDays"]),
        refill_bridge_days=int(cur["refillBridgeDays"]),
        default_supply_days=int(cur["defaultSupplyDays"]),
        trial_above_min_only=frozenset(ssri.get("aboveMinOnly", [])),
        trial_max_daily_dose_mg={k: float(v) for k, v in ssri.get("maxDailyDoseMg", {}).items()},
        not_tolerated_within_days=int(ssri["notToleratedWithinDays"]),
        not_tolerated_words=tuple(ssri["notToleratedWords"]),
    )


def _alternation(words: Iterable[str]) -> str:
    alts = sorted({w.strip() for w in words if w.strip()}, key=len, reverse=True)
    return "|".join(re.escape(w).replace(r"\ ", r"\s+").replace(r"\-", r"[-\s]?") for w in alts)


def _build_exemptions(data: dict[str, Any], routes: dict[str, Any]) -> Exemptions:
    products = data["rescueProductCodes"]
    route_codes = {(c["system"], c["code"]): kind for kind in ("injection", "rescue")
                   for c in data["routeCodes"][kind]}
    return Exemptions(
        rescue_ingredients=frozenset(data["rescueIngredients"]),
        rescue_products=frozenset((products["system"], c) for c in products["codes"]),
        route_codes=route_codes,
        rescue_route_regex=_word_regex(data["rescueRouteWords"]),
        rescue_dose_form_regex=_word_regex(data["rescueDoseFormWords"]),
        single_dose_regex=_word_regex(data["singleDoseWords"]),
        pre_procedure_regex=_word_regex(data["preProcedureWords"]),
        injection_route_regex=_word_regex(routes["routeWords"]["injection"]),
        injection_form_regex=_word_regex(routes["doseFormWords"]["injection"]),
    )


# Between a negation and the PTSD term: at most three words, never across ';' or '.'.
_GAP = r"(?:[^\w;.]+\w+){0,3}?[^\w;.]+"


def _build_condition_text(data: dict[str, Any]) -> ConditionText:
    term = _alternation(data["ptsdTerms"])
    before = _alternation(data["negationBefore"])
    after_words = [w for w in data["negationAfter"] if w.lower() != "negative"]
    after = _alternation(after_words) + (r"|negative(?!\s+for\b)" if len(after_words) < len(data["negationAfter"]) else "")
    return ConditionText(
        term=re.compile(rf"(?<!\w)(?:{term})(?!\w)", re.IGNORECASE),
        negated_before=re.compile(rf"(?<![\w/])(?:{before})(?![\w/]){_GAP}(?:{term})(?!\w)", re.IGNORECASE),
        negated_after=re.compile(rf"(?<!\w)(?:{term})(?!\w){_GAP}(?:{after})(?![\w/])", re.IGNORECASE),
    )


@lru_cache(maxsize=1)
def _base() -> _Base:
    conditions, not_ptsd = _build_conditions(_read("conditions.json"))
    meds = _read("medications.json")
    opioids = _read("opioids.json")["ingredients"]
    overlap = set(opioids) & set(meds["ingredients"])
    if overlap:
        raise ValueError(f"opioids.json: ingredients already in medications.json: {sorted(overlap)}")
    products = _read("opioid-products.json")
    meds = {**meds, "ingredients": {**meds["ingredients"], **opioids, **products["extraIngredients"]},
            "codes": meds["codes"] + products["codes"]}
    name_regex, name_map = _build_names(meds)
    routes = _read("routes.json")
    therapy_codes, therapy_patterns, exclusion = _build_therapies(_read("psychotherapy.json"))
    return _Base(
        conditions=conditions,
        not_ptsd=not_ptsd,
        drug_codes=_build_drug_codes(meds),
        drug_class={name: ing["class"] for name, ing in meds["ingredients"].items()},
        name_regex=name_regex,
        name_to_ingredient=name_map,
        route_regex=_word_regex(w for ws in routes["routeWords"].values() for w in ws),
        dose_form_regex=_word_regex(w for ws in routes["doseFormWords"].values() for w in ws),
        therapy_codes=therapy_codes,
        therapy_patterns=therapy_patterns,
        therapy_exclusion=exclusion,
        thresholds=_build_thresholds(_read("thresholds.json")),
        exemptions=_build_exemptions(_read("benzodiazepine-exemptions.json"), routes),
        condition_text=_build_condition_text(_read("condition-text.json")),
    )


@dataclass(frozen=True, eq=False)  # hashed by identity (memoised look-ups key on it)
class Terminology:
    """Look-ups used by the facts stage. Create with :meth:`load` (cheap after the first call)."""

    base: _Base
    site_procedures: Mapping[tuple[str, str], TherapyKind] = field(default_factory=dict)

    # construction -------------------------------------------------------------------------------
    @classmethod
    def load(cls, site_code_map: str | os.PathLike[str] | Mapping[str, Any] | None = None) -> "Terminology":
        """The terminology, plus a site code map (file path or already-parsed dict) when given.

        Raises ValueError when the site code map cannot be read or is invalid.
        """
        if site_code_map is None:
            return _default_terminology()
        if isinstance(site_code_map, Mapping):
            return cls(_base(), parse_site_code_map(site_code_map, "site code map"))
        return _terminology_for_file(os.fspath(site_code_map))

    def with_site_code_map(self, site_code_map: str | os.PathLike[str] | Mapping[str, Any]) -> "Terminology":
        """A copy of this terminology that also knows the given site code map."""
        loaded = Terminology.load(site_code_map)
        return Terminology(self.base, {**self.site_procedures, **loaded.site_procedures})

    # conditions ---------------------------------------------------------------------------------
    def condition_kinds(self, system: str | None, code: str | None) -> frozenset[str]:
        """{"ptsd"}, {"nightmares"}, both, {"acute-stress"}, or empty for one coding."""
        return _condition_kinds(self.base, system, code)

    def condition_kind_by_text(self, text: str | None) -> str | None:
        """"ptsd" when a Condition text names PTSD and nothing negates it (condition-text.json)."""
        return _condition_kind_by_text(self.base, text[:MAX_TEXT]) if text else None

    # benzodiazepine exemptions ------------------------------------------------------------------
    @property
    def exemptions(self) -> Exemptions:
        return self.base.exemptions  # type: ignore[return-value]

    def route_kind(self, system: str | None, code: str | None) -> str | None:
        """"injection" or "rescue" for a listed route code (CODES-2 §6b/§6c), else None."""
        system = canonical_system(system)
        return self.exemptions.route_codes.get((system, code.strip() if isinstance(code, str) else code))  # type: ignore[arg-type]

    def is_rescue_product(self, system: str | None, code: str | None) -> bool:
        system = canonical_system(system)
        return (system, normalise_code(system, code)) in self.exemptions.rescue_products

    def names_rescue_route(self, text: str | None) -> bool:
        return _search(self.exemptions.rescue_route_regex, text)

    def names_rescue_dose_form(self, text: str | None) -> bool:
        return _search(self.exemptions.rescue_dose_form_regex, text)

    def exemptions_injection_route(self, text: str | None) -> bool:
        """A route text names injection (intravenous, IM, subcutaneous ...)."""
        return _search(self.exemptions.injection_route_regex, text)

    def exemptions_injection_form(self, text: str | None) -> bool:
        """A drug name / form names an injection dose form."""
        return _search(self.exemptions.injection_form_regex, text)

    def says_single_dose(self, text: str | None) -> bool:
        return _search(self.exemptions.single_dose_regex, text)

    def says_pre_procedure(self, text: str | None) -> bool:
        return _search(self.exemptions.pre_procedure_regex, text)

    def is_not_ptsd(self, system: str | None, code: str | None) -> bool:
        """True for the listed look-alikes (acute stress disorder ...)."""
        system = canonical_system(system)
        return (system, normalise_code(system, code)) in self.base.not_ptsd

    # drugs --------------------------------------------------------------------------------------
    def drug_by_code(self, system: str | None, code: str | None) -> DrugMatch | None:
        return _drug_by_code(self.base, system, code)

    def drug_by_name(self, text: str | None) -> DrugMatch | None:
        """First generic or brand name of interest in ``text`` (whole words, case-insensitive)."""
        return _drug_by_name(self.base, text[:MAX_TEXT]) if text else None

    def route_is_non_systemic(self, route_text: str | None) -> bool:
        """Dosage.route text says injection / rectal / nasal."""
        return _search(self.base.route_regex, route_text)

    def dose_form_is_non_systemic(self, name: str | None) -> bool:
        """A drug name / form names an injection, rectal or nasal dose form."""
        return _search(self.base.dose_form_regex, name)

    # psychotherapy ------------------------------------------------------------------------------
    def therapy_by_code(self, system: str | None, code: str | None) -> tuple[TherapyKind, MatchedBy] | None:
        system = canonical_system(system)
        key = (system, normalise_code(system, code))
        if key in self.site_procedures:
            return self.site_procedures[key], "code-map"  # type: ignore[index]
        therapy = self.base.therapy_codes.get(key)  # type: ignore[arg-type]
        return (therapy, "valueset") if therapy else None

    def therapy_by_text(self, text: str | None) -> TherapyKind | None:
        """The therapy a procedure text names, unless it describes a referral / declined session."""
        return _therapy_by_text(self.base, text[:MAX_TEXT]) if text else None

    # thresholds ---------------------------------------------------------------------------------
    @property
    def thresholds(self) -> Thresholds:
        return self.base.thresholds


# Look-ups by text are memoised per distinct text (a record of 1,000 identical orders matches the
# name once); texts are cut to MAX_TEXT characters before any pattern sees them.
MAX_TEXT = MAX_MATCH_TEXT


@lru_cache(maxsize=8192)
def _condition_kinds(base: _Base, system: str | None, code: str | None) -> frozenset[str]:
    system = canonical_system(system)
    return base.conditions.get((system, normalise_code(system, code)), frozenset())  # type: ignore[arg-type]


@lru_cache(maxsize=8192)
def _condition_kind_by_text(base: _Base, text: str) -> str | None:
    ct = base.condition_text
    if ct is None or not ct.term.search(text):
        return None
    if ct.negated_before.search(text) or ct.negated_after.search(text):
        return None
    return "ptsd"


@lru_cache(maxsize=8192)
def _drug_by_code(base: _Base, system: str | None, code: str | None) -> DrugMatch | None:
    system = canonical_system(system)
    hit = base.drug_codes.get((system, normalise_code(system, code)))  # type: ignore[arg-type]
    if hit is None:
        return None
    ingredient, matched_by, display = hit
    return DrugMatch(ingredient, base.drug_class[ingredient], matched_by, reference_display=display)


@lru_cache(maxsize=8192)
def _drug_by_name(base: _Base, text: str) -> DrugMatch | None:
    m = base.name_regex.search(text)
    if m is None:
        return None
    ingredient, non_systemic = base.name_to_ingredient[re.sub(r"\s+", " ", m.group(0).lower())]
    return DrugMatch(ingredient, base.drug_class[ingredient], "name", non_systemic_brand=non_systemic)


@lru_cache(maxsize=8192)
def _search(pattern: re.Pattern[str], text: str | None) -> bool:
    """Whether ``pattern`` occurs in a caller's text (cut to MAX_TEXT; no text: False)."""
    return bool(text) and pattern.search(text[:MAX_TEXT]) is not None  # type: ignore[index]


@lru_cache(maxsize=8192)
def _therapy_by_text(base: _Base, text: str) -> TherapyKind | None:
    for therapy, pattern in base.therapy_patterns:
        if pattern.search(text):
            return None if base.therapy_exclusion.search(text) else therapy
    return None


@lru_cache(maxsize=1)
def _default_terminology() -> Terminology:
    return Terminology(_base())


@lru_cache(maxsize=16)
def _terminology_for_file(path: str) -> Terminology:
    return Terminology(_base(), load_site_code_map_file(path))


# --- site code map --------------------------------------------------------------------------------
# "outgoing": the site's codes for what the cards suggest (read by cds_service.codesystems).
_SITE_TOP_KEYS = {"procedures", "description", "source", "outgoing"}
_SITE_ENTRY_KEYS = {"system", "code", "therapy", "display", "note"}


def load_site_code_map_file(path: str) -> dict[tuple[str, str], TherapyKind]:
    """Read and validate a site code map file (see module docstring). Raises ValueError."""
    return parse_site_code_map(read_site_code_map(path), f"site code map {path}")


def parse_site_code_map(data: Any, where: str = "site code map") -> dict[tuple[str, str], TherapyKind]:
    """Validate a parsed site code map; return {(system, code): therapy}. Raises ValueError."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: must be a JSON object with a 'procedures' list")
    unknown = set(data) - _SITE_TOP_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_SITE_TOP_KEYS)}")
    entries = data.get("procedures")
    if not isinstance(entries, list):
        raise ValueError(f"{where}: 'procedures' must be a list")
    mapping: dict[tuple[str, str], TherapyKind] = {}
    for i, entry in enumerate(entries):
        key, therapy = _parse_site_entry(entry, f"{where}: procedures[{i}]")
        if mapping.get(key, therapy) != therapy:
            raise ValueError(f"{where}: procedures[{i}]: code {key[1]!r} of {key[0]} is mapped to two therapies")
        mapping[key] = therapy
    return mapping


def _parse_site_entry(entry: Any, where: str) -> tuple[tuple[str, str], TherapyKind]:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: must be an object with system, code and therapy")
    unknown = set(entry) - _SITE_ENTRY_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_SITE_ENTRY_KEYS)}")
    for name in ("system", "code", "therapy"):
        if not isinstance(entry.get(name), str) or not entry[name].strip():
            raise ValueError(f"{where}: '{name}' must be a non-empty string")
    if entry["therapy"] not in THERAPIES:
        raise ValueError(f"{where}: therapy {entry['therapy']!r} is not one of {list(THERAPIES)}")
    system = canonical_system(entry["system"])
    return (system, normalise_code(system, entry["code"])), entry["therapy"]  # type: ignore[return-value]
