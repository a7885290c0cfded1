"""Daily dose in mg/day from ``MedicationRequest.dosageInstruction``.

Decisions (kept deliberately simple; anything we cannot work out gives ``None``, never a guess):

* Several dosage instructions are steps in time (``sequence``, else as written): the **last**
  step with a computable dose is used — the target of a titration ("25 mg for 7 days, then
  100 mg" is 100 mg/day). Steps are not summed.
* As-needed instructions (``asNeededBoolean`` true or ``asNeededCodeableConcept``) give None:
  the amount actually taken per day is unknown.
* Dose: ``doseAndRate[].doseQuantity`` (R4; the first entry that has one) or the STU3-style
  ``Dosage.doseQuantity``. A ``doseRange`` gives its upper end (the most that may be given, for the
  range check) and its low end (what is sure to be given, for trial adequacy). Free-text
  ``Dosage.text`` is not used. An unreadable instruction gives no dose; the order still counts.
* Units: mg; g (x1000); mcg/ug (/1000). Tablet/capsule units (``tablet``, ``TAB``, ``{tbl}``,
  ``capsule`` ...) and a **unitless** quantity (Synthea writes ``{"value": 1}``) are multiplied by
  the strength parsed from the drug name ("sertraline 50 MG Oral Tablet", "Sertraline 100MG",
  "24 HR venlafaxine 37.5 MG Extended Release Oral Capsule"). mL is multiplied by a concentration in
  the name ("2 MG/ML"). When the name has several strengths, the one written right after the
  ingredient is used; otherwise the name must have exactly one strength.
* Frequency: ``timing.repeat.frequency`` (default 1) per ``period`` ``periodUnit`` (period default
  1, periodUnit default d once either is given; units s/min/h/d/wk/mo/a, a month counted as 30
  days, a year as 365; ``frequencyMax``/``periodMax``/bounds are ignored). A ``repeat`` with neither
  period nor periodUnit is read through ``repeat.when`` (one administration per listed time of
  day, e.g. ``frequency 1, when [HS]`` = once a day), else gives None. Without ``repeat`` timing fields, ``timing.code``
  (text, code or display) is read for once-/twice-/three-/four-times-daily words (QD, BID, TID,
  QID, Q12H, Q8H, Q6H, HS, daily, at bedtime ...). No timing at all gives None: a dose alone does not say how often.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from cds_service.facts.fhir_read import Malformed, as_dict, as_list, as_number, as_str, codings

PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.0, "a": 365.0}
PERIOD_WORDS = {"s": "second", "min": "minute", "h": "hour", "d": "day", "wk": "week", "mo": "month", "a": "year"}
MASS_TO_MG = {"mg": 1.0, "milligram": 1.0, "milligrams": 1.0, "g": 1000.0, "gram": 1000.0, "grams": 1000.0,
              "mcg": 0.001, "ug": 0.001, "µg": 0.001, "microgram": 0.001, "micrograms": 0.001}
UNIT_DOSE = {"tab", "tabs", "tablet", "tablets", "tbl", "cap", "caps", "capsule", "capsules"}
VOLUME = {"ml", "milliliter", "milliliters", "millilitre", "millilitres"}
# Administrations per day named by timing.code words (checked in this order).
TIMING_WORDS: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(p, re.IGNORECASE), n)
    for p, n in (
        (r"\b(qid|q6h|four times (a|per) day|four times daily|every 6 hours)\b", 4),
        (r"\b(tid|q8h|three times (a|per) day|three times daily|every 8 hours)\b", 3),
        (r"\b(bid|q12h|twice (a|per) day|twice daily|two times (a|per) day|every 12 hours)\b", 2),
        (r"\b(qd|q24h|daily|once (a|per) day|once daily|every day|qam|qpm|qhs|hs|at bedtime|nightly)\b", 1),
    )
)
MAX_UNITLESS_TABLETS = 4  # a unitless dose above this is not read as a number of tablets
_NUM = r"(\d+(?:\.\d+)?)"
_MASS_UNIT = r"(mg|mcg|g)"


@dataclass(frozen=True)
class DailyDose:
    mg_per_day: float  # the most per day (the high end of a range)
    text: str  # e.g. "50 mg/day (50 mg, 1 × per day)"
    low_mg_per_day: float | None = None  # the low end, when the dose is a range


def fmt(x: float) -> str:
    """2.0 -> "2", 37.5 -> "37.5", 0.3333 -> "0.33"."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


# --- strength from the drug name -----------------------------------------------------------------
def _to_mg(amount: str, unit: str) -> float:
    return float(amount) * MASS_TO_MG[unit.lower()]


def unit_strength_mg(name: str | None, ingredient: str) -> float | None:
    """mg per tablet/capsule written in a drug name, or None (liquids "MG/ML" excluded)."""
    if not name:
        return None
    after = re.search(rf"\b{re.escape(ingredient)}\b(?:\s+[a-z]+){{0,2}}?\s+{_NUM}\s*{_MASS_UNIT}\b(?!/)",
                      name, re.IGNORECASE)
    if after:
        return _to_mg(after.group(1), after.group(2))
    amounts = {_to_mg(a, u) for a, u in re.findall(rf"{_NUM}\s*{_MASS_UNIT}\b(?!/)", name, re.IGNORECASE)}
    return amounts.pop() if len(amounts) == 1 else None


def concentration_mg_per_ml(name: str | None, ingredient: str) -> float | None:
    """mg per mL written in a drug name ("2 MG/ML"), or None."""
    if not name:
        return None
    pattern = rf"{_NUM}\s*{_MASS_UNIT}\s*/\s*ml\b"
    after = re.search(rf"\b{re.escape(ingredient)}\b(?:\s+[a-z]+){{0,2}}?\s+{pattern}", name, re.IGNORECASE)
    if after:
        return _to_mg(after.group(1), after.group(2))
    amounts = {_to_mg(a, u) for a, u in re.findall(pattern, name, re.IGNORECASE)}
    return amounts.pop() if len(amounts) == 1 else None


# --- one administration --------------------------------------------------------------------------
def _dose_quantity(dosage: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None, bool]:
    """(quantity of one administration, the low end, whether it is a range).

    For a ``doseRange`` the quantity is its high end (the most that may be given)."""
    for dr in as_list(dosage.get("doseAndRate")):
        quantity = as_dict(as_dict(dr).get("doseQuantity")) if dr is not None else None
        if quantity:
            return quantity, None, False
    for dr in as_list(dosage.get("doseAndRate")):
        dose_range = as_dict(as_dict(dr).get("doseRange")) if dr is not None else None
        high = as_dict((dose_range or {}).get("high"))
        if high:
            return high, as_dict((dose_range or {}).get("low")), True
    return as_dict(dosage.get("doseQuantity")), None, False  # STU3 shape


def _unit(quantity: dict[str, Any]) -> str | None:
    for key in ("code", "unit"):
        text = as_str(quantity.get(key))
        if text and text.strip():
            return text.strip().strip("{}").lower()
    return None


def _first(names: Sequence[str], parse: Callable[[str | None, str], float | None], ingredient: str) -> float | None:
    return next((v for v in (parse(n, ingredient) for n in names) if v), None)


def dose_per_administration(quantity: dict[str, Any], names: Sequence[str], ingredient: str) -> tuple[float, str] | None:
    """(mg, description) of one administration, or None when it cannot be worked out.

    ``names``: the drug names to read a strength from, best first (record text, code displays).
    """
    value = as_number(quantity.get("value"))
    if value is None or value <= 0:
        return None
    unit = _unit(quantity)
    if unit in MASS_TO_MG:
        return value * MASS_TO_MG[unit], f"{fmt(value)} {unit}"
    if unit is None or unit in UNIT_DOSE:
        strength = _first(names, unit_strength_mg, ingredient)
        if not strength:
            return None
        if unit is None and value == strength:
            return value, f"{fmt(value)} mg"  # a bare number equal to the strength: mg, not tablets
        if unit is None and value > MAX_UNITLESS_TABLETS:
            return None  # not plausibly a number of tablets, and not said to be mg
        return value * strength, f"{fmt(value)} × {fmt(strength)} mg"
    if unit in VOLUME:
        conc = _first(names, concentration_mg_per_ml, ingredient)
        return (value * conc, f"{fmt(value)} mL × {fmt(conc)} mg/mL") if conc else None
    return None


# --- frequency -----------------------------------------------------------------------------------
def _from_repeat(repeat: dict[str, Any]) -> tuple[float, str] | None:
    frequency = as_number(repeat.get("frequency"))
    period = as_number(repeat.get("period"))
    unit = as_str(repeat.get("periodUnit"))
    if period is None and unit is None:
        when = as_list(repeat.get("when"))
        if not when:
            return None
        times = max(len(when), int(frequency or 0))  # frequency 2 "with meals" [C] is still twice
        return float(times), f"{times} × per day"
    frequency = 1.0 if frequency is None else frequency
    period = 1.0 if period is None else period
    days = PERIOD_DAYS.get(unit or "d")
    if days is None or period <= 0 or frequency <= 0:
        return None
    per = f"per {PERIOD_WORDS[unit or 'd']}" if period == 1 else f"every {fmt(period)} {unit or 'd'}"
    return frequency / (period * days), f"{fmt(frequency)} × {per}"


def _from_timing_code(code: Any) -> tuple[float, str] | None:
    concept = as_dict(code) or {}
    words = [as_str(concept.get("text"))] + [t for c in codings(concept) for t in (c.get("code"), c.get("display"))]
    text = " ".join(w for w in words if w)
    for pattern, per_day in TIMING_WORDS:
        if pattern.search(text):
            return float(per_day), f"{per_day} × per day"
    return None


def administrations_per_day(timing: Any) -> tuple[float, str] | None:
    """(administrations per day, description) from a Timing, or None."""
    timing = as_dict(timing)
    if timing is None:
        return None
    repeat = as_dict(timing.get("repeat"))
    if repeat and (repeat.get("frequency") is not None or repeat.get("period") is not None
                   or repeat.get("periodUnit") is not None or repeat.get("when")):
        return _from_repeat(repeat)
    return _from_timing_code(timing.get("code"))


# --- daily dose ----------------------------------------------------------------------------------
def _is_as_needed(dosage: dict[str, Any]) -> bool:
    return dosage.get("asNeededBoolean") is True or dosage.get("asNeededCodeableConcept") is not None


def _one_daily_dose(dosage: Any, names: Sequence[str], ingredient: str) -> DailyDose | None:
    dosage = as_dict(dosage)
    if not dosage or _is_as_needed(dosage):
        return None
    quantity, low_quantity, is_range = _dose_quantity(dosage)
    dose = dose_per_administration(quantity, names, ingredient) if quantity else None
    freq = administrations_per_day(dosage.get("timing")) if dose else None
    if dose is None or freq is None:
        return None
    mg_day = dose[0] * freq[0]
    if not is_range:
        return DailyDose(mg_day, f"{fmt(mg_day)} mg/day ({dose[1]}, {freq[1]})")
    low = dose_per_administration(low_quantity, names, ingredient) if low_quantity else None
    low_day = low[0] * freq[0] if low else 0.0  # no low end: nothing is sure to be given
    return DailyDose(mg_day, f"{fmt(low_day)} to {fmt(mg_day)} mg/day (up to {dose[1]}, {freq[1]})", low_day)


def _step_order(indexed: tuple[int, Any]) -> tuple[float, int]:
    index, dosage = indexed
    try:
        sequence = as_number((as_dict(dosage) or {}).get("sequence"))
    except Malformed:
        sequence = None  # an unreadable sequence: the instruction keeps its written place
    return (sequence if sequence is not None else float(index), index)


def daily_dose(dosages: Any, names: Sequence[str], ingredient: str) -> DailyDose | None:
    """Daily dose of the last dosage step (by ``sequence``, else as written) that has one, else None."""
    try:
        steps = [d for _, d in sorted(enumerate(as_list(dosages)), key=_step_order)]
    except Malformed:
        return None  # dosageInstruction is not a list
    for dosage in reversed(steps):
        try:
            result = _one_daily_dose(dosage, names, ingredient)
        except Malformed:
            continue  # an unreadable step gives no dose; the order itself still counts
        if result is not None:
            return result
    return None
