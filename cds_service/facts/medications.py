"""Drugs of interest: classification, route, "current", daily dose and trial period.

Every MedicationRequest of the record and every draft order of resourceType MedicationRequest is
classified into benzodiazepine, an antidepressant class (ssri, snri, maoi, tca,
other-antidepressant: every antidepressant of CODES-2 §5, ``model.ANTIDEPRESSANT_CLASSES``),
prazosin, mdma (midomafetamine) or opioid. Anything else is ignored.

**Which drug.** The medication is ``medicationCodeableConcept``, or ``medicationReference``
resolved to a contained Medication (``#id``) or to ``record.medications["Medication/id"]``
(absolute and ``_history`` references are reduced to ``Medication/id``); when it cannot be resolved
its ``display`` is used. A record Medication is read only when the request refers to it; a malformed
one is counted in ``skipped["Medication"]`` and the reference display used instead. Look-ups,
best first: (1) a coding in one of the value sets (``matched_by="valueset"``); (2) an ingredient
code, a known brand-level/legacy RxNorm code such as 563026 "Diazepam [Valium]", or the MDMA UNII
(``"ingredient"``); (3) a generic or brand name, whole word and case-insensitive, in the
CodeableConcept text, coding displays, ``Medication.code`` or the reference display (``"name"``).

**Route.** ``systemic_non_procedural`` is False when a ``dosageInstruction[].route`` text/display
names injection, rectal or nasal use, when a drug name / ``Medication.form`` names such a dose form
("Injectable Solution", "Rectal Gel", "Nasal Spray"; the value-set display of the matched code is
checked too), or when the matched brand exists only in such forms (Diastat, Valtoco, Nayzilam,
Seizalam, Byfavo). No SNOMED route codes are listed in CODES.md, so routes are matched on text.

**Benzodiazepine exemptions** (issue #8 point 2, service rules; ``benzodiazepine_facts``): read only
for benzodiazepine draft orders and current record orders (a past order keeps the route check
above and no exemption: no card looks at it), from ``views.MedicationRequestContextView`` (degrading element by
element: an unreadable route, timing or reason is simply not there, so it never exempts). An order
is exempt (``DrugFact.exemption``) when it is

* ``"injected"`` — every dosage instruction has an injection route (route code of CODES-2 §6b/§6c
  or route words), or the product is an injection form (any benzodiazepine);
* ``"rescue-formulation"`` — diazepam or midazolam as a rescue product (CODES-2 §6a / CODES.md §3b
  codes, a nasal / rectal / buccal dose form or brand), or every instruction has a nasal, rectal or
  buccal route; such routes do not exempt other benzodiazepines;
* ``"midazolam-single-dose"`` / ``"midazolam-pre-procedure"`` — midazolam, by any route, whose
  only instruction has ``timing.repeat.count`` 1 (``countMax`` absent or 1) or says "single dose",
  or whose instruction texts / as-needed reason / reasonCode text say it is given before a
  procedure ("before the MRI", "procedural sedation", "premedication");
* ``"reason-alcohol-withdrawal"`` / ``"reason-seizure"`` — its own ``reasonCode`` is an
  alcohol-withdrawal or seizure-disorder code, or its ``reasonReference`` is an active such
  Condition of the record (``resolve_reasons``). Reason texts alone do not exempt.

**Taper in one order** (issue #8 point 1): ``steps_down`` is True when the order has several dosage
instructions ordered by ``sequence`` (instructions of one sequence are taken together and summed)
or else by ``timing.repeat.boundsPeriod.start``, each with a computable daily dose, and the daily
dose never rises and ends lower than it starts.

**Current.** Status active or on-hold, and either ``dispenseRequest.validityPeriod`` covers today,
or (no validity end) the order was authored - or, without ``authoredOn``, its validity started -
at most 365 days ago (``thresholds.json``). An order with no date at all is not current. Draft
orders are never current.

**Trial period.** ``trial_start`` = authoredOn, else validity start. ``trial_end`` = validity end
(capped at today: a drug cannot have been taken in the future), else today while current, else
the start plus the recorded supply (``expectedSupplyDuration``, or ``quantity`` ÷ the daily dose,
× (1 + ``numberOfRepeatsAllowed``)); without any of these, until the next order of the same drug
when that one was written within ``refillBridgeDays`` (100, ``thresholds.json``: consecutive
renewals are one course), else ``defaultSupplyDays`` (30) — never past today (``bridge_refills``;
issue #8 point 10). ``statusReason`` is kept as text (``DrugFact.status_reason``) for the
not-tolerated rule of ``trials``.

**Not a prescription.** An order with ``doNotPerform: true`` says the drug must not be given: it
is not a drug fact at all.

MedicationRequests with status ``entered-in-error`` are dropped: they never happened. STU3-style
``Dosage.doseQuantity`` is tolerated and read by ``dosing``. The candidate check (which drug) works
on the raw JSON and is memoised per distinct ``medicationCodeableConcept``; only a classified order
is decoded into its view (``views.MedicationRequestView``), once. A dose is worked out only from an
instruction whose dose, timing and as-needed elements all read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Any, Iterable

import msgspec

from cds_service.facts.dosing import daily_dose, dose_per_administration
from cds_service.facts.fhir_read import (
    MAX_MATCH_TEXT, Malformed, Resource, SkipCounter, concept_label, concept_texts, raw_concept, read_each,
    read_view, reference_of, strict_problems, to_date, view_concept, view_or_json,
)
from cds_service.facts.model import ORDERS_BEING_PLACED, Code, ConditionFact, DrugFact, UncheckedOrder
from cds_service.facts.terminology import INDICATION_KINDS, DrugMatch, Terminology, Thresholds
from cds_service.facts.views import (
    Concept, Dosage, DosageDetail, MedicationRequestContextView, MedicationRequestView, MedicationView,
)
from cds_service.patient_data.record import as_json, relative_reference

MATCH_RANK = {"valueset": 0, "ingredient": 1, "code-map": 2, "name": 3}
# The elements of a Dosage that make its dose (sequence only orders the steps).
DOSE_ELEMENTS = ("timing", "asNeededBoolean", "asNeededCodeableConcept", "doseAndRate", "doseQuantity", "doseRange")


@dataclass
class MedicationInfo:
    """What a MedicationRequest says about its drug (from the raw JSON: the candidate check)."""

    codes: list[tuple[str, str, str | None]] = field(default_factory=list)  # codings, best first
    names: list[str] = field(default_factory=list)  # texts/displays, best first (label first)
    medication: Resource | None = None  # the contained or record Medication used, if any
    medication_is_record: bool = False

    @property
    def label(self) -> str | None:
        return self.names[0] if self.names else None


@dataclass(frozen=True)
class OrderContext:
    """Per-call inputs for building DrugFacts."""

    today: date
    thresholds: Thresholds
    is_draft: bool = False
    selected: bool = False


# --- medication resolution -----------------------------------------------------------------------
def _add_medication(info: MedicationInfo, medication: Any) -> None:
    """A Medication's code and ingredient codes (container shapes checked: raises Malformed)."""
    if not isinstance(medication, dict):
        raise Malformed("Medication is not an object")
    codes, names = raw_concept(medication.get("code"))
    ingredients = medication.get("ingredient")
    if ingredients is not None and not isinstance(ingredients, list):
        raise Malformed("ingredient is not an array")
    for item in ingredients or ():
        if isinstance(item, dict):
            codes += raw_concept(item.get("itemCodeableConcept"))[0]
    info.codes += codes
    info.names += names


def _contained_medication(request: Resource, ref: str) -> Resource | None:
    contained = request.get("contained")
    for res in contained if isinstance(contained, list) else ():
        if isinstance(res, dict) and res.get("resourceType") == "Medication" and f"#{res.get('id')}" == ref:
            return res
    return None


def resolve_medication(request: Resource, medications: dict[str, Resource], skipped: SkipCounter) -> MedicationInfo:
    """The drug a MedicationRequest orders (see module docstring), from the raw JSON.

    Raises Malformed for an unreadable request medication. A referenced record Medication that is
    unreadable is counted in ``skipped["Medication"]`` and the reference display used instead.
    """
    info = MedicationInfo()
    concept = request.get("medicationCodeableConcept")
    if concept is not None:
        info.codes, info.names = raw_concept(concept)
        return info
    reference = request.get("medicationReference")
    if reference is not None and not isinstance(reference, dict):
        raise Malformed("medicationReference is not an object")
    reference = reference or {}
    ref = reference.get("reference")
    ref = ref if isinstance(ref, str) else None
    if ref and ref.startswith("#"):
        medication = _contained_medication(request, ref)
        if medication is not None:
            _add_medication(info, medication)
            info.medication = medication
    elif ref:
        medication = medications.get(ref) or medications.get(relative_reference(ref))
        if medication is not None:
            try:
                _add_medication(info, medication)
                info.medication, info.medication_is_record = medication, True
            except Malformed:
                skipped.skip("Medication")
                info.codes, info.names = [], []
    display = reference.get("display")
    if isinstance(display, str) and display:
        info.names.append(display[:512])
    return info


# --- classification ------------------------------------------------------------------------------
def classify(info: MedicationInfo, term: Terminology) -> tuple[DrugMatch, Code | None] | None:
    """Best code match over all codings, else the first name match, else None."""
    best: tuple[DrugMatch, Code | None] | None = None
    for system, code, display in info.codes:
        match = term.drug_by_code(system, code)
        if match and (best is None or MATCH_RANK[match.matched_by] < MATCH_RANK[best[0].matched_by]):
            best = (match, Code(system, code, display))
    if best:
        return best
    for name in info.names:
        match = term.drug_by_name(name)
        if match:
            return match, None
    return None


# The memo key of a parsed concept: its JSON (a number out of range in it, see
# patient_data.record.OUT_OF_RANGE, is written as null: it is read by no view either).
_CONCEPT_KEY = msgspec.json.Encoder(enc_hook=lambda _: None)


@lru_cache(maxsize=4096)
def _identify_concept(encoded: bytes, term: Terminology) -> tuple[MedicationInfo, tuple[DrugMatch, Code | None] | None]:
    """(what it names, the classification) of one medicationCodeableConcept, keyed by its JSON:
    a record with a thousand renewals of one drug identifies it once. Raises Malformed."""
    info = MedicationInfo()
    info.codes, info.names = raw_concept(msgspec.json.decode(encoded))
    return info, classify(info, term)


@lru_cache(maxsize=4096)
def _identify_view(concept: Concept, term: Terminology) -> tuple[MedicationInfo, tuple[DrugMatch, Code | None] | None]:
    """``_identify_concept`` of a medicationCodeableConcept already decoded into its view (the
    frozen view is the key: a thousand renewals of one drug are identified once)."""
    info = MedicationInfo()
    info.codes, info.names = view_concept(concept)
    return info, classify(info, term)


@lru_cache(maxsize=4096)
def _systemic(routes: tuple[str, ...], names: tuple[str, ...], forms: tuple[str, ...], match: DrugMatch,
              term: Terminology) -> bool:
    return is_systemic_non_procedural(list(routes), list(names), list(forms), match, term)


def route_texts(dosages: tuple[Dosage, ...]) -> list[str]:
    """The route of every dosage instruction, as recorded (text, display or code)."""
    labels = (concept_label(d.route) for d in dosages)
    return [r for r in labels if r]


def is_systemic_non_procedural(routes: list[str], names: list[str], forms: list[str], match: DrugMatch,
                               term: Terminology) -> bool:
    """False for injection / rectal / nasal administration (see module docstring)."""
    if any(term.route_is_non_systemic(r) for r in routes):
        return False
    candidates = names + forms + ([match.reference_display] if match.reference_display else [])
    if any(term.dose_form_is_non_systemic(n) for n in candidates):
        return False
    brands = (term.drug_by_name(n) for n in names)
    return not (match.non_systemic_brand or any(b and b.non_systemic_brand for b in brands))


# --- dates ---------------------------------------------------------------------------------------
def is_current(status: str | None, authored: date | None, start: date | None, end: date | None,
               today: date, thresholds: Thresholds) -> bool:
    """Active/on-hold and validity covers today, or (no end) authored within the window."""
    if status not in thresholds.current_statuses:
        return False
    if start is not None and start > today:
        return False
    if end is not None:
        return today <= end
    reference = authored or start
    return reference is not None and (today - reference).days <= thresholds.current_max_age_days


def trial_period(authored: date | None, start: date | None, end: date | None, current: bool,
                 today: date, supply_days: float | None = None) -> tuple[date | None, date | None]:
    """(trial_start, trial_end) as described in the module docstring.

    Without a validity end, a stopped or completed order lasted its supply when one is recorded
    (``dispenseRequest.expectedSupplyDuration`` × (1 + ``numberOfRepeatsAllowed``)); otherwise its
    end is unknown and it counts as a single day (``bridge_refills`` may extend it later).
    """
    trial_start = authored or start
    if end is not None:
        trial_end: date | None = min(end, today)
    elif current:
        trial_end = today
    elif trial_start is not None and supply_days:
        days = min(supply_days, max(0, (today - trial_start).days))  # also keeps the date in range
        trial_end = trial_start + timedelta(days=round(days))
    else:
        trial_end = trial_start
    if trial_start and trial_end and trial_end < trial_start:
        trial_end = trial_start
    return trial_start, trial_end


DURATION_DAYS = {"d": 1.0, "day": 1.0, "days": 1.0, "wk": 7.0, "week": 7.0, "weeks": 7.0,
                 "mo": 30.0, "month": 30.0, "months": 30.0, "h": 1 / 24, "a": 365.0}


def supply_days(view: MedicationRequestView, names: tuple[str, ...] = (), ingredient: str = "",
                daily_mg: float | None = None) -> float | None:
    """Days a dispense covers, times the dispenses allowed (first fill + repeats), or None.

    One dispense covers ``expectedSupplyDuration``, else ``quantity`` (tablets/capsules × the
    strength in the drug name, or mg) divided by the daily dose (issue #8 point 10). A
    ``stopped`` order ended before all its dispenses: only the first fill is counted."""
    dispense = view.dispenseRequest
    if dispense is None:
        return None
    one = _duration_days(dispense.expectedSupplyDuration)
    if one is None and dispense.quantity is not None and daily_mg:
        amount = dose_per_administration(dispense.quantity, names, ingredient)
        one = amount[0] / daily_mg if amount and amount[0] > 0 else None
    if one is None:
        return None
    repeats = 0.0 if view.status == "stopped" else (dispense.numberOfRepeatsAllowed or 0.0)
    return one * (1 + max(0.0, repeats))


def _duration_days(duration) -> float | None:
    if duration is None:
        return None
    per_day = DURATION_DAYS.get((duration.code or duration.unit or "").lower())
    if duration.value is None or duration.value <= 0 or per_day is None:
        return None
    return duration.value * per_day


def status_reason_text(concept: Concept | None) -> str | None:
    """MedicationRequest.statusReason as one text: its text, coding displays and codes."""
    if concept is None:
        return None
    parts = concept_texts(concept) + [c.code for c in concept.coding if c.code]
    return " | ".join(parts)[:MAX_MATCH_TEXT] or None


def bridge_refills(drugs: list[DrugFact], bridge_days: int, today: date | None = None,
                   default_days: int = 0) -> list[DrugFact]:
    """Orders whose end is unknown (no validity end, not current, no supply on record).

    Such an order lasted until the next order of that drug when that one was written within
    ``bridge_days`` (consecutive renewals without end dates are one course, not a row of one-day
    trials; issue #8 point 10: 100 days, ``thresholds.json``); otherwise - the last order, or one
    followed only after a longer gap - it lasted ``default_days`` (30), never past today. Record
    order is kept. One sort per drug: O(n log n)."""
    by_drug: dict[str, list[int]] = {}
    for i, d in enumerate(drugs):
        if d.was_taken and d.trial_start is not None:
            by_drug.setdefault(d.ingredient, []).append(i)
    out = list(drugs)
    for indices in by_drug.values():
        indices.sort(key=lambda i: drugs[i].trial_start)
        for k, i in enumerate(indices):
            d = drugs[i]
            if not (d.period_end is None and not d.is_current and d.trial_end == d.trial_start
                    and not d.supply_days):
                continue
            nxt = drugs[indices[k + 1]] if k + 1 < len(indices) else None
            gap = (nxt.trial_start - d.trial_start).days if nxt is not None else None
            if gap is not None and 0 < gap <= bridge_days:
                end = nxt.trial_start
            elif default_days > 0:
                end = d.trial_start + timedelta(days=default_days)
            else:
                continue
            if today is not None:
                end = min(end, today)
            out[i] = msgspec.structs.replace(d, trial_end=max(end, d.trial_start))
    return out


# --- building a DrugFact -------------------------------------------------------------------------
@lru_cache(maxsize=4096)
def _medication_forms(medication: MedicationView | None) -> list[str]:
    form = medication.form if medication else None
    if form is None:
        return []
    return [t for t in ([form.text] + [c.display for c in form.coding]) if t]


def _forms(info: MedicationInfo, skipped: SkipCounter) -> list[str]:
    """Medication.form texts of the Medication the request uses (its view, partly read if need be)."""
    if info.medication is None:
        return []
    view, complete = read_view(info.medication, MedicationView)
    if not complete:
        skipped.skip("Medication (partly read)")
    return _medication_forms(view)


def dose_steps(request: Resource) -> tuple[Dosage, ...]:
    """The dosage instructions whose dose elements all read (the slow path of a partly read order):
    an instruction with a malformed dose, timing or as-needed element gives no dose — a dose is
    never worked out from a half-read instruction — while the order itself still counts."""
    raw = request.get("dosageInstruction")
    steps = []
    for item in raw if isinstance(raw, list) else ():
        if not isinstance(item, dict):
            continue
        try:
            step = msgspec.convert({k: item[k] for k in DOSE_ELEMENTS if k in item}, Dosage)
        except msgspec.ValidationError:
            continue
        sequence = item.get("sequence")
        if isinstance(sequence, (int, float)) and not isinstance(sequence, bool):
            step = msgspec.structs.replace(step, sequence=float(sequence))
        steps.append(step)
    return tuple(steps)


# --- benzodiazepines: why and how they are given (issue #8 points 1 and 2) ----------------------
@dataclass(frozen=True)
class BenzodiazepineFacts:
    exemption: str | None = None
    reason_kinds: frozenset[str] = frozenset()
    reason_references: tuple[str, ...] = ()
    steps_down: bool = False


def _concept_texts(concept: Concept | None) -> list[str]:
    if concept is None:
        return []
    return [t for t in [concept.text] + [c.display for c in concept.coding] if t]


def _route_kind(dosage: DosageDetail, term: Terminology) -> str | None:
    """"injection", "rescue" (nasal / rectal / buccal) or None (oral, other or no readable route)."""
    route = dosage.route
    if route is None:
        return None
    kinds = {term.route_kind(c.system, c.code) for c in route.coding} - {None}
    texts = _concept_texts(route) + [c.code for c in route.coding if c.code]
    if "injection" in kinds or any(term.exemptions_injection_route(t) for t in texts):
        return "injection"
    if "rescue" in kinds or any(term.names_rescue_route(t) for t in texts):
        return "rescue"
    return None


def _instruction_texts(dosage: DosageDetail) -> list[str]:
    timing_code = dosage.timing.code if dosage.timing else None
    return ([t for t in (dosage.text, dosage.patientInstruction) if t]
            + _concept_texts(dosage.asNeededCodeableConcept) + _concept_texts(timing_code))


def _single_dose(dosages: tuple[DosageDetail, ...], term: Terminology) -> bool:
    if len(dosages) != 1:
        return False
    d = dosages[0]
    repeat = d.timing.repeat if d.timing else None
    if repeat is not None and repeat.count == 1 and repeat.countMax in (None, 1):
        return True
    return any(term.says_single_dose(t) for t in _instruction_texts(d))


@lru_cache(maxsize=4096)
def _product_exemption(match: DrugMatch, info_codes: tuple[tuple[str, str, str | None], ...], names: tuple[str, ...],
                       forms: tuple[str, ...], term: Terminology) -> str | None:
    """Memoised per distinct (drug, codes, names, forms): a thousand renewals are looked at once."""
    rescue_ingredient = match.ingredient in term.exemptions.rescue_ingredients
    candidates = names + forms + ((match.reference_display,) if match.reference_display else ())
    if rescue_ingredient and any(term.is_rescue_product(system, code) for system, code, _ in info_codes):
        return "rescue-formulation"
    if any(term.exemptions_injection_form(n) for n in candidates):
        return "injected"
    if rescue_ingredient and any(term.names_rescue_dose_form(n) for n in candidates):
        return "rescue-formulation"
    brands = [m for m in (term.drug_by_name(n) for n in names) if m]
    if match.non_systemic_brand or any(b.non_systemic_brand for b in brands):
        return "rescue-formulation" if rescue_ingredient else "injected"
    return None


@lru_cache(maxsize=4096)
def _route_exemption(dosages: tuple[DosageDetail, ...], ingredient: str, term: Terminology) -> str | None:
    kinds = [_route_kind(d, term) for d in dosages]
    if not kinds or None in kinds:
        return None  # an instruction without a readable injection / rescue route: no exemption
    if all(k == "injection" for k in kinds):
        return "injected"
    if ingredient in term.exemptions.rescue_ingredients:
        return "rescue-formulation"
    return None


def _order_key(dosage: DosageDetail, by: str):
    if by == "sequence":
        return dosage.sequence
    repeat = dosage.timing.repeat if dosage.timing else None
    period = repeat.boundsPeriod if repeat else None
    return to_date(period.start) if period else None


def steps_down(request: Resource, dosages: tuple[DosageDetail, ...], names: tuple[str, ...],
               ingredient: str) -> bool:
    """The order's own instructions step the daily dose down over sequence or time (see module)."""
    raw = request.get("dosageInstruction")
    items = [x for x in raw if isinstance(x, dict)] if isinstance(raw, list) else []
    if len(items) < 2 or len(items) != len(dosages):
        return False
    by = next((k for k in ("sequence", "bounds") if all(_order_key(d, k) is not None for d in dosages)), None)
    if by is None:
        return False
    groups: dict[Any, float] = {}
    for item, detail in zip(items, dosages):
        step = dose_steps({"dosageInstruction": [item]})
        dose = daily_dose(step, names, ingredient) if step else None
        if dose is None:
            return False  # a step whose dose cannot be worked out: no proven taper
        key = _order_key(detail, by)
        groups[key] = groups.get(key, 0.0) + dose.mg_per_day
    doses = [groups[k] for k in sorted(groups)]
    return len(doses) >= 2 and all(b <= a for a, b in zip(doses, doses[1:])) and doses[-1] < doses[0]


def benzodiazepine_facts(request: Resource, match: DrugMatch, info: MedicationInfo, forms: list[str],
                         names: tuple[str, ...], term: Terminology, skipped: SkipCounter,
                         counted: bool = False) -> BenzodiazepineFacts:
    """Exemption, reasons and own step-down of one benzodiazepine order (see module docstring).
    ``counted``: the order was already counted as partly read (it is counted once)."""
    view, complete = read_view(request, MedicationRequestContextView)
    if not complete and not counted:
        skipped.skip("MedicationRequest (partly read)")
    reason_kinds = frozenset(k for concept in view.reasonCode for c in concept.coding
                             for k in term.condition_kinds(c.system, c.code) if k in INDICATION_KINDS)
    references = tuple(relative_reference(r.reference) for r in view.reasonReference if r.reference)
    exemption = (_product_exemption(match, tuple(info.codes), tuple(info.names), tuple(forms), term)
                 or _route_exemption(view.dosageInstruction, match.ingredient, term))
    if exemption is None and match.ingredient == "midazolam":
        texts = [t for d in view.dosageInstruction for t in _instruction_texts(d)]
        texts += [t for concept in view.reasonCode for t in _concept_texts(concept)]
        if any(term.says_pre_procedure(t) for t in texts):
            exemption = "midazolam-pre-procedure"
        elif _single_dose(view.dosageInstruction, term):
            exemption = "midazolam-single-dose"
    return BenzodiazepineFacts(exemption, reason_kinds, references,
                               steps_down(request, view.dosageInstruction, names, match.ingredient))


REASON_EXEMPTION = {"alcohol-withdrawal": "reason-alcohol-withdrawal", "seizure": "reason-seizure"}


def resolve_reasons(drugs: list[DrugFact], indications: list[ConditionFact]) -> list[DrugFact]:
    """Benzodiazepine orders whose own reason (reasonCode, or reasonReference to one of the record's
    active alcohol-withdrawal / seizure-disorder Conditions) exempts them get that exemption."""
    by_reference = {c.reference: c.kind for c in indications if c.reference}
    out = []
    for d in drugs:
        if d.drug_class == "benzodiazepine" and (d.reason_kinds or d.reason_references):
            kinds = set(d.reason_kinds) | {by_reference[r] for r in d.reason_references if r in by_reference}
            if kinds:
                exemption = d.exemption or REASON_EXEMPTION[sorted(kinds)[0]]
                d = msgspec.structs.replace(d, reason_kinds=frozenset(kinds), exemption=exemption)
        out.append(d)
    return out


def read_medication_request(request: Any, medications: dict[str, Resource], term: Terminology,
                            ctx: OrderContext, skipped: SkipCounter) -> DrugFact | None:
    """A DrugFact for one MedicationRequest, or None when it is not a drug of interest. Raises Malformed."""
    view, request = view_or_json(request, MedicationRequestView)
    if view is not None:  # kept as text and well formed: one typed decode, nothing else parsed
        if view.doNotPerform is True:
            return None
        if view.medicationCodeableConcept is not None:
            info, classified = _identify_view(view.medicationCodeableConcept, term)
        else:
            info = resolve_medication(request.json(), medications, skipped)
            classified = classify(info, term)
        complete = True
    else:
        if request.get("doNotPerform") is True:
            return None  # an order NOT to give the drug: not a prescription of it
        concept = request.get("medicationCodeableConcept")
        if concept is not None:  # the usual shape: identified once per distinct concept (memoised)
            info, classified = _identify_concept(_CONCEPT_KEY.encode(concept), term)
        else:
            info = resolve_medication(request, medications, skipped)
            classified = classify(info, term)
    if classified is None:
        return None
    if view is None:
        view, complete = read_view(request, MedicationRequestView)
    match, code = classified
    if not complete:
        skipped.skip("MedicationRequest (partly read)")
    status = view.status
    if status == "entered-in-error":
        return None
    authored = to_date(view.authoredOn)
    period = view.dispenseRequest.validityPeriod if view.dispenseRequest else None
    start, end = (to_date(period.start), to_date(period.end)) if period else (None, None)
    routes = route_texts(view.dosageInstruction)
    current = not ctx.is_draft and is_current(status, authored, start, end, ctx.today, ctx.thresholds)
    names = tuple(info.names + ([match.reference_display] if match.reference_display else []))
    dose = daily_dose(view.dosageInstruction if complete else dose_steps(request), names, match.ingredient)
    supply = None if ctx.is_draft else supply_days(view, names, match.ingredient, dose.mg_per_day if dose else None)
    trial_start, trial_end = trial_period(authored, start, end, current, ctx.today, supply)
    forms = _forms(info, skipped)
    # Why and how it is given matters for drafts and current orders only (the cards never look at a
    # past benzodiazepine's exemption): a long history is not read twice.
    read_context = match.drug_class == "benzodiazepine" and (ctx.is_draft or current)
    benzo = (benzodiazepine_facts(as_json(request), match, info, forms, names, term, skipped, counted=not complete)
             if read_context else BenzodiazepineFacts())
    return DrugFact(
        reference=reference_of("MedicationRequest", view.id), drug_class=match.drug_class,
        ingredient=match.ingredient, label=info.label or match.ingredient, matched_by=match.matched_by,
        code=code, status=status, authored_on=authored, period_start=start, period_end=end,
        route=routes[0] if routes else None,
        systemic_non_procedural=(benzo.exemption not in ("injected", "rescue-formulation") if read_context
                                 else _systemic(tuple(routes), tuple(info.names), tuple(forms), match, term)),
        daily_dose_mg=dose.mg_per_day if dose else None, dose_text=dose.text if dose else None,
        is_current=current, is_draft_order=ctx.is_draft, is_selected=ctx.selected,
        trial_start=trial_start, trial_end=trial_end, intent=view.intent,
        daily_dose_low_mg=dose.low_mg_per_day if dose else None,
        supply_days=supply, status_reason=status_reason_text(view.statusReason),
        exemption=benzo.exemption, reason_kinds=benzo.reason_kinds,
        reason_references=benzo.reason_references, steps_down=benzo.steps_down,
    )


def extract_drugs(requests: Iterable[Resource], medications: dict[str, Resource], term: Terminology,
                  ctx: OrderContext, skipped: SkipCounter) -> list[DrugFact]:
    """DrugFacts of the record's MedicationRequests (bad resources skipped and counted)."""
    read = lambda r: read_medication_request(r, medications, term, ctx, skipped)  # noqa: E731
    return [f for f in read_each(requests, read, skipped, "MedicationRequest") if f is not None]


def _selection_key(ref: str) -> str:
    return relative_reference(ref) if isinstance(ref, str) else ""


# Drafts of these classes get the full fhir.resources check (their cards change the order basket).
STRICTLY_CHECKED_DRAFTS = frozenset({"benzodiazepine", "mdma"})


def why_unreadable(order: Resource, medications: dict[str, Resource]) -> str | None:
    """Why the drug of an order cannot be read at all (None when it names a code or a text).

    An order naming a drug this service does not know is readable: it is simply not its
    business. One naming nothing readable could be anything, a benzodiazepine included."""
    has_concept = order.get("medicationCodeableConcept") is not None
    try:
        info = resolve_medication(order, medications, SkipCounter())
    except Malformed:
        return ("its drug is recorded in a form that cannot be read" if has_concept
                else "its link to the drug record cannot be read")
    if info.codes or info.names:
        return None
    if has_concept:
        return "its drug has no readable code or name"
    if order.get("medicationReference") is not None:
        return "its drug record cannot be found and no drug name is given"
    return "it names no drug"


def _is_checked(order: Resource, hook: str, selected: set[str]) -> bool:
    """A draft the hook checks: being placed (draft / active / on-hold / no status), not a
    do-not-perform order, and on order-select one of the selections."""
    status = order.get("status")
    placed = status is None or (isinstance(status, str) and status in ORDERS_BEING_PLACED)
    chosen = hook == "order-sign" or f"MedicationRequest/{order.get('id')}" in selected
    return placed and chosen and order.get("doNotPerform") is not True


def extract_draft_drugs(draft_orders: Iterable[Resource], selections: Iterable[str], hook: str,
                        medications: dict[str, Resource], term: Terminology, today: date,
                        skipped: SkipCounter) -> tuple[list[DrugFact], list[UncheckedOrder]]:
    """DrugFacts of the MedicationRequest draft orders (selected per the hook, see extract_facts),
    and the checked drafts whose drug cannot be read at all."""
    selected = {_selection_key(s) for s in selections}
    facts: list[DrugFact] = []
    unchecked: list[UncheckedOrder] = []
    for order in draft_orders:
        if not isinstance(order, dict) or order.get("resourceType") != "MedicationRequest":
            continue
        is_selected = hook == "order-sign" or f"MedicationRequest/{order.get('id')}" in selected
        ctx = OrderContext(today, term.thresholds, is_draft=True, selected=is_selected)
        found = extract_drugs([order], medications, term, ctx, skipped)
        facts += found
        if found and found[0].drug_class in STRICTLY_CHECKED_DRAFTS and strict_problems(order):
            # The handful of drafts the safety cards act on also get a full R4 check (fhir.resources;
            # ~0.1 ms each): not valid R4 is counted for the operator; the order is still read.
            skipped.skip("MedicationRequest (draft, not valid FHIR R4)")
        if not found and _is_checked(order, hook, selected):
            why = why_unreadable(order, medications)
            if why:
                rid = order.get("id")
                unchecked.append(UncheckedOrder(f"MedicationRequest/{rid}" if isinstance(rid, str) and rid
                                                else None, why))
    return facts, unchecked
