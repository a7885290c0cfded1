"""Typed views of the FHIR R4 elements the facts stage reads — and only those.

Each view is a ``msgspec.Struct`` (frozen, hashable): decoding a resource into its view checks
the type of every element the rules read (strings are non-empty strings, numbers are numbers,
dates are FHIR dates/dateTimes, booleans are booleans) and ignores every other element, so an
unknown member, an extension without ``url`` or an R5-only field can never hide a resource.
``fhir_read.read_view`` decodes with these types and, when something read is malformed, degrades
element by element (see there). Field names are the FHIR JSON names.

What is read, per resource (nothing else is looked at):

* Condition: ``id``, ``code``, ``clinicalStatus``, ``verificationStatus``, ``onsetDateTime``,
  ``onsetPeriod.start``, ``recordedDate`` (``abatement[x]`` only for its presence, from the raw JSON).
* MedicationRequest: ``id``, ``status``, ``intent``, ``doNotPerform``, ``medicationCodeableConcept``,
  ``medicationReference``, ``authoredOn``, ``dosageInstruction`` (sequence, timing, as-needed, route,
  dose), ``dispenseRequest`` (validity period, expected supply duration, repeats, quantity),
  ``statusReason``.
* Medication (contained or referenced): ``code``, ``form``, ``ingredient[].itemCodeableConcept``.
* Procedure: ``id``, ``status``, ``statusReason`` (why not done: declined psychotherapy), ``code``,
  ``performedDateTime``, ``performedPeriod.start``.
* Patient: ``birthDate``, ``gender``, ``deceasedBoolean``, ``deceasedDateTime``.
* A benzodiazepine MedicationRequest also gets ``MedicationRequestContextView`` (why and how it is
  given: ``reasonCode``, ``reasonReference``, every ``dosageInstruction``'s ``sequence``, ``text``,
  ``route``, as-needed and ``timing`` with ``repeat.count`` / ``countMax`` / bounds); only read for
  benzodiazepines (the exemptions and the taper check of ``medications``).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta, Struct

# FHIR ``string``: at least one character (an empty string is not valid FHIR: read as absent).
String = Annotated[str, Meta(min_length=1, max_length=100_000)]
# FHIR ``date`` / ``dateTime``: the R4 regular expression, except that a time without a zone is
# tolerated (common in real feeds; only the date part is used). Bounded and linear.
DateTime = Annotated[str, Meta(
    pattern=r"^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
            r"(T([01][0-9]|2[0-3]):[0-5][0-9](:([0-5][0-9]|60)(\.[0-9]{1,9})?)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))?)?)?)?$",
    max_length=40)]


class _View(Struct, frozen=True, omit_defaults=True):
    """Base of every view: immutable, hashable (memoised look-ups key on views)."""


class Coding(_View):
    system: String | None = None
    code: String | None = None
    display: String | None = None


class Concept(_View):
    coding: tuple[Coding, ...] = ()
    text: String | None = None


class Reference(_View):
    reference: String | None = None
    display: String | None = None


class Period(_View):
    start: DateTime | None = None
    end: DateTime | None = None


class Quantity(_View):
    value: float | None = None
    unit: String | None = None
    code: String | None = None


class Range(_View):
    low: Quantity | None = None
    high: Quantity | None = None


class DoseAndRate(_View):
    doseQuantity: Quantity | None = None
    doseRange: Range | None = None


class Repeat(_View):
    frequency: float | None = None
    period: float | None = None
    periodUnit: String | None = None
    when: tuple[String, ...] = ()


class Timing(_View):
    repeat: Repeat | None = None
    code: Concept | None = None


class Dosage(_View):
    sequence: float | None = None
    timing: Timing | None = None
    asNeededBoolean: bool | None = None
    asNeededCodeableConcept: Concept | None = None  # its presence means "as needed"
    route: Concept | None = None
    doseAndRate: tuple[DoseAndRate, ...] = ()
    # STU3 shape (dose directly on Dosage), tolerated: seen in real feeds.
    doseQuantity: Quantity | None = None
    doseRange: Range | None = None


class Duration(_View):
    value: float | None = None
    unit: String | None = None
    code: String | None = None


class DispenseRequest(_View):
    validityPeriod: Period | None = None
    expectedSupplyDuration: Duration | None = None
    numberOfRepeatsAllowed: float | None = None
    quantity: Quantity | None = None  # the amount per dispense (supply = quantity / daily use)


class MedicationRequestView(_View):
    id: String | None = None
    status: String | None = None
    intent: String | None = None
    doNotPerform: bool | None = None
    medicationCodeableConcept: Concept | None = None
    medicationReference: Reference | None = None
    authoredOn: DateTime | None = None
    dosageInstruction: tuple[Dosage, ...] = ()
    dispenseRequest: DispenseRequest | None = None
    statusReason: Concept | None = None  # why stopped (e.g. not tolerated): trial assessment


class Ingredient(_View):
    itemCodeableConcept: Concept | None = None


class MedicationView(_View):
    id: String | None = None
    code: Concept | None = None
    form: Concept | None = None
    ingredient: tuple[Ingredient, ...] = ()


class ConditionView(_View):
    id: String | None = None
    code: Concept | None = None
    clinicalStatus: Concept | None = None
    verificationStatus: Concept | None = None
    onsetDateTime: DateTime | None = None
    onsetPeriod: Period | None = None
    recordedDate: DateTime | None = None


class ProcedureView(_View):
    id: String | None = None
    status: String | None = None
    statusReason: Concept | None = None
    code: Concept | None = None
    performedDateTime: DateTime | None = None
    performedPeriod: Period | None = None


class PatientView(_View):
    birthDate: DateTime | None = None
    gender: String | None = None
    deceasedBoolean: bool | None = None
    deceasedDateTime: DateTime | None = None


# --- why and how a benzodiazepine is given (read only for benzodiazepine orders) ---------------
class RepeatDetail(_View):
    count: float | None = None
    countMax: float | None = None
    boundsPeriod: Period | None = None
    boundsDuration: Duration | None = None


class TimingDetail(_View):
    repeat: RepeatDetail | None = None
    code: Concept | None = None


class DosageDetail(_View):
    sequence: float | None = None
    text: String | None = None
    patientInstruction: String | None = None
    timing: TimingDetail | None = None
    asNeededBoolean: bool | None = None
    asNeededCodeableConcept: Concept | None = None
    route: Concept | None = None


class MedicationRequestContextView(_View):
    reasonCode: tuple[Concept, ...] = ()
    reasonReference: tuple[Reference, ...] = ()
    dosageInstruction: tuple[DosageDetail, ...] = ()


VIEWS = (ConditionView, MedicationRequestView, MedicationView, ProcedureView, PatientView,
         MedicationRequestContextView)
__all__ = [name for name in dir() if not name.startswith("_") and name not in ("Annotated", "Meta",
                                                                                "Struct", "msgspec")]
