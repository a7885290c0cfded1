"""Patient facts: age in whole years (from ``birthDate``), recorded sex (``gender``), and whether
the patient has died (``deceasedBoolean`` true or any ``deceasedDateTime``).

Read from ``views.PatientView`` only. A missing or unreadable birth date gives no age (the adult
rules apply: issue #8 point 4). A partial birth date ("1990" or "1990-07") counts from its *last*
possible day, so the age is never overstated: a child is never taken for an adult.
"""

from __future__ import annotations

import calendar
from datetime import date
from typing import Any

import msgspec

from cds_service.facts.fhir_read import SkipCounter, read_view, to_date
from cds_service.facts.views import PatientView


class PatientFacts(msgspec.Struct, frozen=True):
    age_years: int | None = None
    sex: str | None = None
    deceased: bool = False


def age_on(birth: date, today: date) -> int:
    """Whole years between a birth date and today."""
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def latest_birth_date(text: str | None) -> date | None:
    """The latest day a FHIR date (possibly partial) can mean."""
    first = to_date(text)
    if first is None or text is None:
        return None
    if len(text) == 4:
        return date(first.year, 12, 31)
    if len(text) == 7:
        return date(first.year, first.month, calendar.monthrange(first.year, first.month)[1])
    return first


def read_patient(patient: Any, today: date, skipped: SkipCounter) -> PatientFacts:
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        return PatientFacts()
    view, complete = read_view(patient, PatientView)
    if not complete:
        skipped.skip("Patient (partly read)")
    birth = latest_birth_date(view.birthDate)
    age = age_on(birth, today) if birth and birth <= today else None
    deceased = view.deceasedBoolean is True or view.deceasedDateTime is not None
    return PatientFacts(age_years=age, sex=view.gender.lower() if view.gender else None, deceased=deceased)
