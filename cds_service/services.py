"""The CDS Services this server offers (the discovery document), and their prefetch templates.

Prefetch templates use only CDS Hooks 2.0 tokens (``{{context.patientId}}``) and the
recommended query subset (CHECKLIST PF-02, PF-03, PF-05). Each key names which part of the
patient record it fills and whether the rules cannot run without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PrefetchKey:
    key: str
    template: str
    required: bool  # True: without this data the rules cannot run (HTTP 412 if it cannot be had)
    about: str  # what it is, for error messages and docs


PREFETCH_KEYS: tuple[PrefetchKey, ...] = (
    PrefetchKey("patient", "Patient/{{context.patientId}}", False, "the Patient resource"),
    PrefetchKey("conditions", "Condition?patient={{context.patientId}}", True,
                "the patient's Conditions (PTSD, nightmares)"),
    PrefetchKey("medications", "MedicationRequest?patient={{context.patientId}}", True,
                "the patient's MedicationRequests (benzodiazepines, SSRIs, venlafaxine, prazosin, MDMA)"),
    PrefetchKey("procedures", "Procedure?patient={{context.patientId}}", True,
                "the patient's Procedures (trauma-focused psychotherapy sessions)"),
)

_DATA_NEEDS = (
    "Needs the patient's Conditions, MedicationRequests and Procedures: send the prefetch keys "
    "'conditions', 'medications' and 'procedures' (and 'patient'), or a fhirServer the service may "
    "query (with fhirAuthorization when the server requires a token). FHIR R4 only. "
)


@dataclass(frozen=True)
class ServiceDefinition:
    id: str
    hook: str
    title: str
    description: str
    usage_requirements: str

    def discovery_entry(self) -> dict[str, Any]:
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "usageRequirements": self.usage_requirements,
            "prefetch": {p.key: p.template for p in PREFETCH_KEYS},
        }


SERVICES: tuple[ServiceDefinition, ...] = (
    ServiceDefinition(
        id="ptsd-patient-view",
        hook="patient-view",
        title="PTSD treatment guidance",
        description=(
            "For a patient with active PTSD: names the next step of the guideline-based treatment "
            "algorithm (trauma-focused psychotherapy, SSRI, venlafaxine, combined treatment, "
            "specialised referral) and nightmare treatment, and warns about current benzodiazepines. "
            "For any patient: flags MDMA (midomafetamine) as investigational."
        ),
        usage_requirements=_DATA_NEEDS + "Cards are decision support for clinicians, not orders.",
    ),
    ServiceDefinition(
        id="ptsd-order-select",
        hook="order-select",
        title="PTSD medication safety on order selection",
        description=(
            "When a medication is selected for a patient with active PTSD: warns against "
            "benzodiazepines (VA/DoD 2023, strong against) and checks SSRI, venlafaxine and prazosin "
            "daily doses. For any patient: flags MDMA (midomafetamine) as investigational."
        ),
        usage_requirements=_DATA_NEEDS + "Only the selected draft MedicationRequests are checked.",
    ),
    ServiceDefinition(
        id="ptsd-order-sign",
        hook="order-sign",
        title="PTSD medication safety at signing",
        description=(
            "Before orders are signed for a patient with active PTSD: warns against benzodiazepines "
            "and checks SSRI, venlafaxine and prazosin daily doses. For any patient: flags MDMA "
            "(midomafetamine) as investigational."
        ),
        usage_requirements=_DATA_NEEDS + "Every draft MedicationRequest is checked.",
    ),
)

SERVICES_BY_ID: dict[str, ServiceDefinition] = {s.id: s for s in SERVICES}


def discovery_document() -> dict[str, Any]:
    return {"services": [s.discovery_entry() for s in SERVICES]}
