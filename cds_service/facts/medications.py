"""Drugs of interest: classification, route, "current", daily dose and trial period.

Every MedicationRequest of the record and every draft order of resourceType MedicationRequest is
classified into benzodiazepine, ssri (sertraline, paroxetine, fluoxetine), snri (venlafaxine),
prazosin or mdma (midomafetamine). Anything else is ignored.

**Which drug.** The medication is ``medicationCodeableConcept``, or ``medicationReference``
resolved to a contained Medication (``#id``) or to ``record.medications["Medication/id"]``
(absolute and ``_history`` references are reduced to ``Medication/id``); when it cannot be resolved
its ``display`` is used. A record Medication is validated only when the drug matched; a malformed
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

**Current.** Status active or on-hold, and either ``dispenseRequest.validityPeriod`` covers today,
or (no validity end) the order was authored - or, without ``authoredOn``, its validity started -
at most 365 days ago (``thresholds.json``). An order with no date at all is not current. Draft
orders are never current.

**Trial period.** ``trial_start`` = authoredOn, else validity start. ``trial_end`` = validity end
(capped at today: a drug cannot have been taken in the future), else today while current, else
the start plus the recorded supply (``expectedSupplyDuration`` × (1 + ``numberOfRepeatsAllowed``)),
else the start (no duration is proven) — unless the next order of the same drug was written
within ``refillBridgeDays`` (``thresholds.json``): a renewal, so the order lasted until then
(``bridge_refills``).

**Not a prescription.** An order with ``doNotPerform: true`` says the drug must not be given: it
is not a drug fact at all.

MedicationRequests with status ``entered-in-error`` are dropped: they never happened. STU3-style
``Dosage.doseQuantity`` is tolerated: it is left out of the R4B validation and read by ``dosing``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any, Iterable

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.dosage import Dosage
from fhir.resources.R4B.medicationrequest import MedicationRequestDispenseRequest
from fhir.resources.R4B.reference import Reference

from cds_service.facts.dosing import daily_dose
from cds_service.facts.fhir_read import (
    Malformed, Resource, SkipCounter, as_dict, as_list, as_str, codings, concept_label, concept_texts,
    as_number, element_is_valid, read_each, validated_view,
    parse_date, reference_of, validate,
)
from cds_service.facts.model import Code, DrugFact
from cds_service.facts.terminology import DrugMatch, Terminology, Thresholds
from cds_service.patient_data.record import relative_reference

MATCH_RANK = {"valueset": 0, "ingredient": 1, "code-map": 2, "name": 3}
# STU3-style dose elements directly on Dosage: read by dosing.py, not valid R4 (kept out of validation).
LEGACY_DOSAGE_KEYS = ("doseQuantity", "doseRange", "rateQuantity", "rateRatio", "rateRange")


@dataclass
class MedicationInfo:
    """What a MedicationRequest says about its drug."""

    concepts: list[dict[str, Any]] = field(default_factory=list)  # coded concepts, best first
    names: list[str] = field(default_factory=list)  # texts/displays, best first (label first)
    forms: list[str] = field(default_factory=list)  # Medication.form texts
    contained: list[Resource] = field(default_factory=list)  # contained resources used
    record_medication: Resource | None = None  # the record.medications entry used, if any

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
def _add_medication(info: MedicationInfo, medication: Resource) -> None:
    """Add a Medication's code, ingredient codes and form (shapes checked here: raises Malformed)."""
    concepts = [medication.get("code")]
    concepts += [(as_dict(i) or {}).get("itemCodeableConcept") for i in as_list(medication.get("ingredient"))]
    for concept in concepts:
        codings(concept)  # shape check
        info.concepts.append(as_dict(concept) or {})
    info.names += concept_texts(medication.get("code"))
    info.forms += concept_texts(medication.get("form"))


def _contained_medication(request: Resource, ref: str) -> Resource | None:
    for res in as_list(request.get("contained")):
        if isinstance(res, dict) and res.get("resourceType") == "Medication" and f"#{res.get('id')}" == ref:
            return res
    return None


class MalformedMedication(Malformed):
    """The referenced record Medication (not the request) is unreadable."""


def resolve_medication(request: Resource, medications: dict[str, Resource], use_record: bool = True) -> MedicationInfo:
    """The drug a MedicationRequest orders (see module docstring), without validating anything.

    Raises Malformed for a bad request, MalformedMedication for a bad ``record.medications`` entry.
    """
    info = MedicationInfo()
    concept = request.get("medicationCodeableConcept")
    if concept is not None:
        info.concepts.append(as_dict(concept) or {})
        info.names += concept_texts(concept)
        return info
    reference = as_dict(request.get("medicationReference")) or {}
    ref = as_str(reference.get("reference"))
    if ref and ref.startswith("#"):
        medication = _contained_medication(request, ref)
        if medication is not None:
            info.contained.append(medication)
            _add_medication(info, medication)
    elif ref and use_record:
        medication = medications.get(ref) or medications.get(relative_reference(ref))
        if medication is not None:
            info.record_medication = medication
            try:
                if not isinstance(medication, dict):
                    raise Malformed("not an object")
                _add_medication(info, medication)
            except Malformed:
                raise MalformedMedication("bad Medication") from None
    display = as_str(reference.get("display"))
    if display:
        info.names.append(display)
    return info


def medication_and_match(request: Resource, medications: dict[str, Resource], term: Terminology,
                         skipped: SkipCounter) -> tuple[MedicationInfo, tuple[DrugMatch, Code | None] | None]:
    """Resolve and classify; a referenced record Medication is validated only when the drug matched.

    A bad record Medication is counted in ``skipped["Medication"]`` and the reference display used.
    """
    try:
        info = resolve_medication(request, medications)
        match = classify(info, term)
        if match is not None and info.record_medication is not None:
            try:
                validate(info.record_medication)
            except Malformed:
                raise MalformedMedication("bad Medication") from None
        return info, match
    except MalformedMedication:
        skipped.skip("Medication")
        info = resolve_medication(request, medications, use_record=False)
        return info, classify(info, term)


# --- classification ------------------------------------------------------------------------------
def classify(info: MedicationInfo, term: Terminology) -> tuple[DrugMatch, Code | None] | None:
    """Best code match over all codings, else the first name match, else None."""
    best: tuple[DrugMatch, Code | None] | None = None
    for concept in info.concepts:
        for c in codings(concept):
            match = term.drug_by_code(c.get("system"), c.get("code"))
            if match and (best is None or MATCH_RANK[match.matched_by] < MATCH_RANK[best[0].matched_by]):
                best = (match, Code(c.get("system"), c.get("code"), c.get("display")))
    if best:
        return best
    for name in info.names:
        match = term.drug_by_name(name)
        if match:
            return match, None
    return None


def route_texts(dosages: list[Any]) -> list[str]:
    """The route of every dosage instruction, as recorded (text, display or code)."""
    labels = (concept_label((as_dict(d) or {}).get("route")) for d in dosages)
    return [r for r in labels if r]


def is_systemic_non_procedural(routes: list[str], info: MedicationInfo, match: DrugMatch, term: Terminology) -> bool:
    """False for injection / rectal / nasal administration (see module docstring)."""
    if any(term.route_is_non_systemic(r) for r in routes):
        return False
    names = info.names + info.forms + ([match.reference_display] if match.reference_display else [])
    if any(term.dose_form_is_non_systemic(n) for n in names):
        return False
    brands = (term.drug_by_name(n) for n in info.names)
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


def supply_days(request: Resource) -> float | None:
    """Days a dispense covers, times the dispenses allowed (first fill + repeats), or None.

    A ``stopped`` order ended before all its dispenses: only the first fill is counted."""
    dispense = as_dict(request.get("dispenseRequest")) or {}
    duration = as_dict(dispense.get("expectedSupplyDuration"))
    if not duration:
        return None
    value = as_number(duration.get("value"))
    unit = as_str(duration.get("code")) or as_str(duration.get("unit"))
    per_day = DURATION_DAYS.get((unit or "").lower())
    if value is None or value <= 0 or per_day is None:
        return None
    repeats = as_number(dispense.get("numberOfRepeatsAllowed")) or 0
    if request.get("status") == "stopped":
        repeats = 0
    return value * per_day * (1 + max(0, repeats))


def bridge_refills(drugs: list[DrugFact], bridge_days: int, today: date | None = None) -> list[DrugFact]:
    """Refills: an order of a drug whose end is unknown lasted until the next order of that drug,
    when that one was written within ``bridge_days`` (monthly renewals without end dates are one
    course, not a row of one-day trials). Record order is kept."""
    by_drug: dict[str, list[int]] = {}
    for i, d in enumerate(drugs):
        if d.was_taken and d.trial_start is not None:
            by_drug.setdefault(d.ingredient, []).append(i)
    out = list(drugs)
    for indices in by_drug.values():
        indices.sort(key=lambda i: drugs[i].trial_start)
        for i, j in zip(indices, indices[1:]):
            d, nxt = drugs[i], drugs[j]
            unknown_end = d.period_end is None and not d.is_current and d.trial_end == d.trial_start
            gap = (nxt.trial_start - d.trial_start).days
            if unknown_end and 0 < gap <= bridge_days:
                end = nxt.trial_start if today is None else min(nxt.trial_start, today)
                out[i] = replace(d, trial_end=max(end, d.trial_start))
    return out


# --- building a DrugFact -------------------------------------------------------------------------
def _validity(request: Resource) -> tuple[date | None, date | None]:
    dispense = as_dict(request.get("dispenseRequest")) or {}
    period = as_dict(dispense.get("validityPeriod")) or {}
    return parse_date(period.get("start")), parse_date(period.get("end"))


def _for_validation(request: Resource) -> Resource:
    """The request with STU3-style dose elements removed from its dosages (read separately)."""
    dosages = request.get("dosageInstruction")
    if not isinstance(dosages, list):
        return request
    cleaned = [{k: v for k, v in d.items() if k not in LEGACY_DOSAGE_KEYS} if isinstance(d, dict) else d
               for d in dosages]
    return {**request, "dosageInstruction": cleaned}


_ELEMENT_MODELS = {
    "medicationCodeableConcept": CodeableConcept,
    "medicationReference": Reference,
    "dispenseRequest": MedicationRequestDispenseRequest,
}


def readable_request(request: Resource, contained: list[Resource], skipped: SkipCounter) -> Resource:
    """The parts of a classified MedicationRequest that may be read (see ``validated_view``).

    When the request as a whole does not validate, each dosage instruction is kept only if it
    validates on its own: a dose written in an odd shape gives no dose, not a missed order.
    """
    try:
        validate(_for_validation(request), contained)
        return request
    except Malformed:
        pass
    view = validated_view(request, elements=_ELEMENT_MODELS, skipped=skipped, contained=contained,
                          required=("medicationCodeableConcept", "medicationReference"),
                          strings=("status", "intent"), dates=("authoredOn",))
    raw = request.get("dosageInstruction")
    raw = raw if isinstance(raw, list) else []
    cleaned = _for_validation({"dosageInstruction": raw})["dosageInstruction"]
    dosages = [d for d, clean in zip(raw, cleaned) if element_is_valid(Dosage, clean)]
    if dosages:
        view["dosageInstruction"] = dosages
    return view


def read_medication_request(request: Resource, medications: dict[str, Resource], term: Terminology,
                            ctx: OrderContext, skipped: SkipCounter) -> DrugFact | None:
    """A DrugFact for one MedicationRequest, or None when it is not a drug of interest. Raises Malformed."""
    if not isinstance(request, dict):
        raise Malformed("not an object")
    if request.get("doNotPerform") is True:
        return None  # an order NOT to give the drug: not a prescription of it
    info, classified = medication_and_match(request, medications, term, skipped)
    if classified is None:
        return None
    match, code = classified
    request = readable_request(request, info.contained, skipped)
    status = as_str(request.get("status"))
    if status == "entered-in-error":
        return None
    authored = parse_date(request.get("authoredOn"))
    start, end = _validity(request)
    dosages = as_list(request.get("dosageInstruction"))
    routes = route_texts(dosages)
    current = not ctx.is_draft and is_current(status, authored, start, end, ctx.today, ctx.thresholds)
    trial_start, trial_end = trial_period(authored, start, end, current, ctx.today,
                                          supply_days(request) if not ctx.is_draft else None)
    dose = daily_dose(dosages, info.names + ([match.reference_display] if match.reference_display else []),
                      match.ingredient)
    return DrugFact(
        reference=reference_of(request), drug_class=match.drug_class, ingredient=match.ingredient,
        label=info.label or match.ingredient, matched_by=match.matched_by, code=code, status=status,
        authored_on=authored, period_start=start, period_end=end,
        route=routes[0] if routes else None,
        systemic_non_procedural=is_systemic_non_procedural(routes, info, match, term),
        daily_dose_mg=dose.mg_per_day if dose else None, dose_text=dose.text if dose else None,
        is_current=current, is_draft_order=ctx.is_draft, is_selected=ctx.selected,
        trial_start=trial_start, trial_end=trial_end, intent=as_str(request.get("intent")),
        daily_dose_low_mg=dose.low_mg_per_day if dose else None,
    )


def extract_drugs(requests: Iterable[Resource], medications: dict[str, Resource], term: Terminology,
                  ctx: OrderContext, skipped: SkipCounter) -> list[DrugFact]:
    """DrugFacts of the record's MedicationRequests (bad resources skipped and counted)."""
    read = lambda r: read_medication_request(r, medications, term, ctx, skipped)  # noqa: E731
    return [f for f in read_each(requests, read, skipped, "MedicationRequest") if f is not None]


def _selection_key(ref: str) -> str:
    return relative_reference(ref) if isinstance(ref, str) else ""


def extract_draft_drugs(draft_orders: Iterable[Resource], selections: Iterable[str], hook: str,
                        medications: dict[str, Resource], term: Terminology, today: date,
                        skipped: SkipCounter) -> list[DrugFact]:
    """DrugFacts of the MedicationRequest draft orders; selected per the hook (see extract_facts)."""
    selected = {_selection_key(s) for s in selections}
    facts = []
    for order in draft_orders:
        if not isinstance(order, dict) or order.get("resourceType") != "MedicationRequest":
            continue
        is_selected = hook == "order-sign" or f"MedicationRequest/{order.get('id')}" in selected
        ctx = OrderContext(today, term.thresholds, is_draft=True, selected=is_selected)
        facts += extract_drugs([order], medications, term, ctx, skipped)
    return facts
