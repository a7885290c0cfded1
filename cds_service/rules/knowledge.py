"""The guideline data the rules read (``guideline.toml``), loaded and checked once at import."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GUIDELINE_FILE = Path(__file__).with_name("guideline.toml")


class GuidelineDataError(ValueError):
    """guideline.toml has content the rules cannot run with (the message names the field)."""


@dataclass(frozen=True)
class DoseRange:
    ingredient: str
    min_mg: float | None  # None: no lower bound is checked
    max_mg: float  # the upper bound (for a patient whose sex is not recorded, and women)
    source: str  # the label / trial it comes from
    url: str | None  # its web address, when one is on file (never made up)
    not_for_forms: tuple[str, ...] = ()  # drug-name words of formulations the range is not for
    max_mg_male: float | None = None  # a higher upper bound for men, when the source gives one

    def max_for(self, sex: str | None) -> float:
        """The upper bound for a patient's recorded sex (unknown sex: the lower, safer bound)."""
        return self.max_mg_male if sex == "male" and self.max_mg_male is not None else self.max_mg

    def contains(self, daily_mg: float, sex: str | None = None) -> bool:
        return (self.min_mg is None or self.min_mg <= daily_mg) and daily_mg <= self.max_for(sex)

    def describe(self, sex: str | None = None) -> str:
        """"25–200 mg/day", or "up to 12 mg/day" without a lower bound."""
        high = f"{self.max_for(sex):g}"
        return f"up to {high} mg/day" if self.min_mg is None else f"{self.min_mg:g}–{high} mg/day"

    def applies_to(self, drug_label: str) -> bool:
        """False for a formulation the range was not written for (e.g. controlled-release)."""
        return not any(re.search(rf"\b{re.escape(w)}\b", drug_label, re.IGNORECASE) for w in self.not_for_forms)


@dataclass(frozen=True)
class Guideline:
    next_step_order: tuple[str, ...]
    independent_steps: tuple[str, ...]
    dose_ranges: dict[str, DoseRange]
    adult_age_years: int = 18
    no_cards_when_deceased: bool = True
    pregnancy_months: int = 10  # a pregnancy with onset within this many months is current


def _need(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``table[key]`` checked for presence and type; ``where`` is "file: path.to.table"."""
    if key not in table:
        raise GuidelineDataError(f"{where}.{key} is missing")
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise GuidelineDataError(f"{where}.{key} has the wrong type")
    return value


def load_guideline(path: Path = GUIDELINE_FILE) -> Guideline:
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    top = f"{path.name}: $"
    steps = _need(data, "next_step", dict, top)
    order = tuple(_need(steps, "order", list, f"{path.name}: next_step"))
    independent = tuple(_need(steps, "independent", list, f"{path.name}: next_step"))
    ranges: dict[str, DoseRange] = {}
    for ingredient, row in _need(data, "dose_ranges", dict, top).items():
        where = f"{path.name}: dose_ranges.{ingredient}"
        low = float(_need(row, "min_mg", (int, float), where)) if "min_mg" in row else None
        high = float(_need(row, "max_mg", (int, float), where))
        male = float(_need(row, "max_mg_male", (int, float), where)) if "max_mg_male" in row else None
        if not ((low is None or 0 < low < high) and high > 0 and (male is None or male >= high)):
            raise GuidelineDataError(f"{where}: need 0 < min_mg < max_mg <= max_mg_male")
        url = row.get("url")
        if url is not None and not (isinstance(url, str) and url.startswith("https://")):
            raise GuidelineDataError(f"{where}.url must be an absolute https URL")
        forms = row.get("not_for_forms", [])
        if not isinstance(forms, list) or not all(isinstance(f, str) and f for f in forms):
            raise GuidelineDataError(f"{where}.not_for_forms must be a list of words")
        ranges[ingredient] = DoseRange(ingredient, low, high, _need(row, "source", str, where), url,
                                       tuple(forms), male)
    patient = _need(data, "patient", dict, top)
    adult = _need(patient, "adult_age_years", int, f"{path.name}: patient")
    deceased = patient.get("no_cards_when_deceased")
    if not isinstance(deceased, bool):
        raise GuidelineDataError(f"{path.name}: patient.no_cards_when_deceased must be true or false")
    pregnancy = _need(patient, "pregnancy_months", int, f"{path.name}: patient")
    if pregnancy <= 0:
        raise GuidelineDataError(f"{path.name}: patient.pregnancy_months must be positive")
    return Guideline(order, independent, ranges, adult, deceased, pregnancy)


GUIDELINE = load_guideline()
