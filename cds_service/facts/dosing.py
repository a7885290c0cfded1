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
* Units: mg; g (x1000); mcg/ug (/1000). Tablet/capsule units (``tablet``, ``TAB``, ``{tbl}``, ``{pill}``,
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
from functools import lru_cache
from typing import Callable, Sequence

from cds_service.facts.fhir_read import MAX_MATCH_TEXT
from cds_service.facts.views import Concept, Dosage, Quantity, Timing

PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.0, "a": 365.0}
PERIOD_WORDS = {"s": "second", "min": "minute", "h": "hour", "d": "day", "wk": "week", "mo": "month", "a": "year"}
MASS_TO_MG = {"mg": 1.0, "milligram": 1.0, "milligrams": 1.0, "g": 1000.0, "gram": 1000.0, "grams": 1000.0,
              "mcg": 0.001, "ug": 0.001, "µg": 0.001, "microgram": 0.001, "micrograms": 0.001}
UNIT_DOSE = {"tab", "tabs", "tablet", "tablets", "tbl", "cap", "caps", "capsule", "capsules", "pill", "pills"}
VOLUME = {"ml", "milliliter", "milliliters", "millilitre", "millilitres"}
# Administrations per day named by timing.code words (checked in this order). Alternations of
# literals between word boundaries: linear in the (capped) text.
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
# A number: it can only start where no digit or dot precedes it, and its digits are taken
# possessively, so a long run of digits is scanned once (linear), never re-tried from every offset.
_NUM = r"(?<![\d.])(\d{1,9}+(?:\.\d{1,6}+)?)"
_MASS_UNIT = r"(mg|mcg|g)"
_STRENGTH = re.compile(rf"{_NUM}\s*+{_MASS_UNIT}\b(?!/)", re.IGNORECASE)
_CONCENTRATION = re.compile(rf"{_NUM}\s*+{_MASS_UNIT}\s*+/\s*+ml\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z]+", re.IGNORECASE)


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


def _after_ingredient(name: str, ingredient: str, pattern: re.Pattern[str]) -> float | None:
    """The amount written right after the ingredient ("sertraline 50 MG", "venlafaxine HCl 75 MG").

    Found without a backtracking pattern: the ingredient is located with ``str.find`` on the
    lower-cased name, then at most two words may stand between it and the amount."""
    lowered = name.lower()
    start = 0
    while (at := lowered.find(ingredient, start)) >= 0:
        start = at + len(ingredient)
        before_ok = at == 0 or not lowered[at - 1].isalnum()
        after_ok = start >= len(lowered) or not lowered[start].isalnum()
        if not (before_ok and after_ok):
            continue
        i = start
        for words in range(3):  # at most two words between the ingredient and the amount
            j = i
            while j < len(lowered) and lowered[j].isspace():
                j += 1
            if j == i:
                break  # a space must come first
            m = pattern.match(lowered, j)
            if m:
                return _to_mg(m.group(1), m.group(2))
            word = _WORD.match(lowered, j)
            if word is None or words == 2:
                break
            i = word.end()
    return None


@lru_cache(maxsize=4096)
def unit_strength_mg(name: str | None, ingredient: str) -> float | None:
    """mg per tablet/capsule written in a drug name, or None (liquids "MG/ML" excluded)."""
    if not name:
        return None
    name = name[:MAX_MATCH_TEXT]
    after = _after_ingredient(name, ingredient, _STRENGTH)
    if after is not None:
        return after
    amounts = {_to_mg(a, u) for a, u in _STRENGTH.findall(name)}
    return amounts.pop() if len(amounts) == 1 else None


@lru_cache(maxsize=4096)
def concentration_mg_per_ml(name: str | None, ingredient: str) -> float | None:
    """mg per mL written in a drug name ("2 MG/ML"), or None."""
    if not name:
        return None
    name = name[:MAX_MATCH_TEXT]
    after = _after_ingredient(name, ingredient, _CONCENTRATION)
    if after is not None:
        return after
    amounts = {_to_mg(a, u) for a, u in _CONCENTRATION.findall(name)}
    return amounts.pop() if len(amounts) == 1 else None


# --- one administration --------------------------------------------------------------------------
def _dose_quantity(dosage: Dosage) -> tuple[Quantity | None, Quantity | None, bool]:
    """(quantity of one administration, the low end, whether it is a range).

    For a ``doseRange`` the quantity is its high end (the most that may be given)."""
    for dr in dosage.doseAndRate:
        if dr.doseQuantity is not None:
            return dr.doseQuantity, None, False
    for dr in dosage.doseAndRate:
        if dr.doseRange is not None and dr.doseRange.high is not None:
            return dr.doseRange.high, dr.doseRange.low, True
    return dosage.doseQuantity, None, False  # STU3 shape


def _unit(quantity: Quantity) -> str | None:
    for text in (quantity.code, quantity.unit):
        if text and text.strip():
            return text.strip().strip("{}").lower()
    return None


def _first(names: Sequence[str], parse: Callable[[str | None, str], float | None], ingredient: str) -> float | None:
    return next((v for v in (parse(n, ingredient) for n in names) if v), None)


def dose_per_administration(quantity: Quantity, names: Sequence[str], ingredient: str) -> tuple[float, str] | None:
    """(mg, description) of one administration, or None when it cannot be worked out.

    ``names``: the drug names to read a strength from, best first (record text, code displays).
    """
    value = quantity.value
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
def _from_repeat(repeat) -> tuple[float, str] | None:
    frequency, period, unit = repeat.frequency, repeat.period, repeat.periodUnit
    if period is None and unit is None:
        if not repeat.when:
            return None
        times = max(len(repeat.when), int(frequency or 0))  # frequency 2 "with meals" [C] is still twice
        return float(times), f"{times} × per day"
    frequency = 1.0 if frequency is None else frequency
    period = 1.0 if period is None else period
    days = PERIOD_DAYS.get(unit or "d")
    if days is None or period <= 0 or frequency <= 0:
        return None
    per = f"per {PERIOD_WORDS[unit or 'd']}" if period == 1 else f"every {fmt(period)} {unit or 'd'}"
    return frequency / (period * days), f"{fmt(frequency)} × {per}"


def _from_timing_code(code: Concept | None) -> tuple[float, str] | None:
    if code is None:
        return None
    words = [code.text] + [t for c in code.coding for t in (c.code, c.display)]
    text = " ".join(w for w in words if w)[:MAX_MATCH_TEXT]
    for pattern, per_day in TIMING_WORDS:
        if pattern.search(text):
            return float(per_day), f"{per_day} × per day"
    return None


def administrations_per_day(timing: Timing | None) -> tuple[float, str] | None:
    """(administrations per day, description) from a Timing, or None."""
    if timing is None:
        return None
    repeat = timing.repeat
    if repeat and (repeat.frequency is not None or repeat.period is not None
                   or repeat.periodUnit is not None or repeat.when):
        return _from_repeat(repeat)
    return _from_timing_code(timing.code)


# --- daily dose ----------------------------------------------------------------------------------
def _is_as_needed(dosage: Dosage) -> bool:
    return dosage.asNeededBoolean is True or dosage.asNeededCodeableConcept is not None


def _one_daily_dose(dosage: Dosage, names: Sequence[str], ingredient: str) -> DailyDose | None:
    if _is_as_needed(dosage):
        return None
    quantity, low_quantity, is_range = _dose_quantity(dosage)
    dose = dose_per_administration(quantity, names, ingredient) if quantity else None
    freq = administrations_per_day(dosage.timing) if dose else None
    if dose is None or freq is None:
        return None
    mg_day = dose[0] * freq[0]
    if not is_range:
        return DailyDose(mg_day, f"{fmt(mg_day)} mg/day ({dose[1]}, {freq[1]})")
    low = dose_per_administration(low_quantity, names, ingredient) if low_quantity else None
    low_day = low[0] * freq[0] if low else 0.0  # no low end: nothing is sure to be given
    return DailyDose(mg_day, f"{fmt(low_day)} to {fmt(mg_day)} mg/day (up to {dose[1]}, {freq[1]})", low_day)


@lru_cache(maxsize=4096)
def daily_dose(dosages: tuple[Dosage, ...], names: tuple[str, ...], ingredient: str) -> DailyDose | None:
    """Daily dose of the last dosage step (by ``sequence``, else as written) that has one, else None.

    Memoised: a record of 1,000 identical renewals works the dose out once. ``dosages`` are the
    instructions whose dose elements were read completely (see ``medications``)."""
    steps = sorted(enumerate(dosages), key=lambda pair: (pair[1].sequence if pair[1].sequence is not None
                                                        else float(pair[0]), pair[0]))
    for _, dosage in reversed(steps):
        result = _one_daily_dose(dosage, names, ingredient)
        if result is not None:
            return result
    return None
