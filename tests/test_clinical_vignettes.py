"""Clinical vignettes of issue #8, written apart from the fixtures (other drugs, codes, dates and
shapes than ``fixtures/requests/``): each builds a small record in code and names what a
psychiatrist expects — which cards, which indicator, whether a removal or a draft is offered, what
the card must say. Codes are verified rows of CODES.md / CODES-2.md; today is 2026-11-28.
"""

import json
from datetime import date

import pytest

from cds_service.patient_data.record import PatientRecord

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"; SCT = "http://snomed.info/sct"; ICD = "http://hl7.org/fhir/sid/icd-10-cm"
TF = "http://ptsd-cds.org/fhir/CodeSystem/trauma-focused-psychotherapy"
TODAY = date(2026, 11, 28)
BENZO, MDMA, DOSE, NC = "benzodiazepine-avoid", "mdma-investigational", "dose-out-of-range", "order-not-checked"
S1, S2, S3, S4, S5, S6 = ("step-1-trauma-focused-psychotherapy", "step-2-ssri", "step-3-nightmares",
                          "step-4-venlafaxine", "step-5-combine", "step-6-specialized-referral")
_n = [0]
def nid(p): _n[0] += 1; return f"{p}{_n[0]}"
def cc(system, code, display=None, text=None):
    c = {"coding": [{k: v for k, v in {"system": system, "code": code, "display": display}.items() if v}]} if code else {}
    if text: c["text"] = text
    return c
def cond(system=SCT, code="47505003", display="Posttraumatic stress disorder", text=None, clinical="active",
         verification="confirmed", onset=None, id=None):
    r = {"resourceType": "Condition", "id": id or nid("c"), "subject": {"reference": "Patient/p1"},
         "code": cc(system, code, display, text)}
    if clinical: r["clinicalStatus"] = cc("http://terminology.hl7.org/CodeSystem/condition-clinical", clinical)
    if verification: r["verificationStatus"] = cc("http://terminology.hl7.org/CodeSystem/condition-ver-status", verification)
    if onset: r["onsetDateTime"] = onset
    return r
def dose(mg, per_day=1, unit="mg", route=None, count=None, text=None, seq=None, bounds=None):
    d = {"doseAndRate": [{"doseQuantity": {"value": mg, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}],
         "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}}}
    if count: d["timing"]["repeat"] = {"count": count}
    if bounds: d["timing"]["repeat"]["boundsPeriod"] = bounds
    if route: d["route"] = route
    if text: d["text"] = text
    if seq: d["sequence"] = seq
    return d
def mr(code, display, *dosages, status="active", authored="2026-10-01", end=None, id=None, reason=None, reason_ref=None,
       supply_days=None, status_reason=None, system=RX):
    r = {"resourceType": "MedicationRequest", "id": id or nid("m"), "status": status, "intent": "order",
         "medicationCodeableConcept": cc(system, code, display, display), "subject": {"reference": "Patient/p1"},
         "authoredOn": authored}
    if dosages: r["dosageInstruction"] = list(dosages)
    if end or supply_days:
        r["dispenseRequest"] = {}
        if end: r["dispenseRequest"]["validityPeriod"] = {"start": authored, "end": end}
        if supply_days: r["dispenseRequest"]["expectedSupplyDuration"] = {"value": supply_days, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}
    if reason: r["reasonCode"] = [reason]
    if reason_ref: r["reasonReference"] = [{"reference": reason_ref}]
    if status_reason: r["statusReason"] = status_reason
    return r
def draft(*a, **k):
    k.setdefault("status", "draft"); k.setdefault("authored", "2026-11-28"); return mr(*a, **k)
def proc(modality, day, status="completed", status_reason=None, text=None):
    names = {"cognitive-processing-therapy": "Cognitive processing therapy", "prolonged-exposure": "Prolonged exposure therapy",
             "emdr": "Eye movement desensitization and reprocessing"}
    r = {"resourceType": "Procedure", "id": nid("p"), "status": status, "subject": {"reference": "Patient/p1"},
         "code": cc(TF, modality, names.get(modality), text or names.get(modality) + " session") if modality else cc(None, None, text=text),
         "performedDateTime": day}
    if status_reason: r["statusReason"] = status_reason
    return r
def sessions(modality, n, start="2025-01-06", step_days=7):
    from datetime import date as D, timedelta
    s = D.fromisoformat(start)
    return [proc(modality, (s + timedelta(days=i * step_days)).isoformat()) for i in range(n)]
def patient(gender="male", birth="1980-05-01"):
    return {"resourceType": "Patient", "id": "p1", "gender": gender, "birthDate": birth}

def record(conditions=(), meds=(), procs=(), drafts=(), pt=None):
    return PatientRecord(patient_id="p1", patient=pt or patient(), conditions=list(conditions), medication_requests=list(meds),
                         procedures=list(procs), draft_orders=list(drafts),
                         selections=[f"MedicationRequest/{d['id']}" for d in drafts])

LORAZ1 = ("197901", "lorazepam 1 MG Oral Tablet"); CLON05 = ("197527", "clonazepam 0.5 MG Oral Tablet"); CLON1 = ("197528", "clonazepam 1 MG Oral Tablet")
ALP1 = ("197321", "alprazolam 1 MG Oral Tablet"); TEMA15 = ("198241", "temazepam 15 MG Oral Capsule"); DIAZ5 = ("197591", "diazepam 5 MG Oral Tablet")
CHLOR25 = ("905495", "chlordiazepoxide hydrochloride 25 MG Oral Capsule")
SERT50 = ("312941", "sertraline 50 MG Oral Tablet"); SERT25 = ("312940", "sertraline 25 MG Oral Tablet"); SERT100 = ("312938", "sertraline 100 MG Oral Tablet")
PAR20 = ("1738495", "paroxetine hydrochloride 20 MG Oral Tablet"); VEN150 = ("313581", "24 HR venlafaxine 150 MG Extended Release Oral Capsule")
FLX20 = ("310385", "fluoxetine 20 MG Oral Capsule")
PTSD = cond()
ORAL = {"text": "Oral"}  # SNOMED 26643006 is unverified in CODES-2 §6b: text only

def V(name, rec, hook, expect):
    return name, rec, hook, expect

def actions(card):
    out = []
    for s in card.get("suggestions", []):
        for a in s.get("actions", []):
            res = a.get("resource") or {}
            med = (res.get("medicationCodeableConcept") or {}).get("text") or json.dumps(res.get("code", ""))[:60]
            out.append((a["type"], res.get("resourceType") or a.get("resourceId"), med))
    return out

VIGNETTES = [
    # --- point 1: taper / renewal
    V("taper: current clonazepam 2 mg/day, draft 1 mg/day", record([PTSD], [mr(*CLON1, dose(1, 2), authored="2026-09-01")], [], [draft(*CLON05, dose(0.5, 2))]),
      "order-sign", {"topics": {BENZO: "warning"}, "no_delete": BENZO}),
    V("renewal: current alprazolam 3 mg/day, same draft", record([PTSD], [mr(*ALP1, dose(1, 3), authored="2026-10-15")], [], [draft(*ALP1, dose(1, 3))]),
      "order-select", {"topics": {BENZO: "warning"}, "no_delete": BENZO}),
    V("escalation: current lorazepam 1 mg/day, draft 2 mg/day -> new", record([PTSD], [mr(*LORAZ1, dose(1, 1))], [], [draft(*LORAZ1, dose(1, 2))]),
      "order-sign", {"topics": {BENZO: "critical"}, "delete": BENZO}),
    V("self-tapering instructions (2 steps down)", record([PTSD], [], [], [draft(*DIAZ5, dose(5, 2, seq=1, bounds={"start": "2026-11-28", "end": "2026-12-05"}), dose(5, 1, seq=2, bounds={"start": "2026-12-06", "end": "2026-12-13"}))]),
      "order-sign", {"topics": {BENZO: "warning"}, "no_delete": BENZO}),
    V("new temazepam, no prior", record([PTSD], [], [], [draft(*TEMA15, dose(15, 1))]), "order-sign", {"topics": {BENZO: "critical"}, "delete": BENZO}),
    V("taper beside a new one: one card, one removal", record([PTSD], [mr(*CLON1, dose(1, 2))], [], [draft(*CLON05, dose(0.5, 2)), draft(*LORAZ1, dose(1, 2))]),
      "order-sign", {"topics": {BENZO: "critical"}, "n_delete": 1, "n_cards": {BENZO: 1}}),
    # --- point 2: exemptions
    V("alcohol withdrawal reasonCode (ICD-10-CM F10.230)", record([PTSD], [], [], [draft(*CHLOR25, dose(25, 4), reason=cc(ICD, "F10.230", "Alcohol dependence with withdrawal, uncomplicated"))]),
      "order-sign", {"topics": {}}),
    V("seizure reasonReference to an epilepsy condition", record([PTSD, cond(ICD, "G40.909", "Epilepsy, unspecified", id="epi")], [], [], [draft(*CLON05, dose(0.5, 2), reason_ref="Condition/epi")]),
      "order-sign", {"topics": {}}),
    V("alcohol withdrawal syndrome SNOMED reasonReference", record([PTSD, cond(SCT, "191480000", "Alcohol withdrawal syndrome", id="aw")], [], [], [draft(*DIAZ5, dose(10, 3), reason_ref="Condition/aw")]),
      "order-sign", {"topics": {}}),
    V("epilepsy elsewhere, no reason on order: card names it", record([PTSD, cond(SCT, "191480000", "Alcohol withdrawal syndrome")], [], [], [draft(*CLON05, dose(0.5, 2))]),
      "order-sign", {"topics": {BENZO: "critical"}, "text": ["withdrawal"]}),
    V("Nayzilam nasal midazolam", record([PTSD], [], [], [draft("2173500", "midazolam 50 MG/ML Nasal Spray [Nayzilam]", dose(5, 1, unit="mg"))]), "order-sign", {"topics": {}}),
    V("Diastat rectal diazepam", record([PTSD], [], [], [draft("801958", "0.5 ML diazepam 5 MG/ML Rectal Gel [Diastat]")]), "order-sign", {"topics": {}}),
    V("diazepam given rectally (route text) -> rescue, no card", record([PTSD], [], [], [draft("3322", "diazepam", dose(10, 1, route={"text": "rectal"}))]), "order-sign", {"topics": {}}),
    V("midazolam oral single dose before procedure", record([PTSD], [], [], [draft("6960", "midazolam", dose(7.5, count=1, route=ORAL, text="7.5 mg once 30 minutes before MRI"))]), "order-sign", {"topics": {}}),
    V("unreadable route is no exemption", record([PTSD], [], [], [draft(*LORAZ1, dose(1, 2, route="nasal"))]), "order-sign", {"topics": {BENZO: "critical"}}),
    V("unreadable reasonCode is no exemption", record([PTSD], [], [], [draft(*LORAZ1, dose(1, 2), reason="alcohol withdrawal")]), "order-sign", {"topics": {BENZO: "critical"}}),
    # --- point 7: PTSD coding
    V("text-only PTSD", record([cond(None, None, text="Posttraumatic stress disorder, chronic")], [], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {BENZO: "critical"}}),
    V("text-only 'PTSD - combat related'", record([cond(None, None, text="PTSD - combat related")], [], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {BENZO: "critical"}}),
    V("negated text 'R/O PTSD'", record([cond(None, None, text="R/O PTSD")], [], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {}}),
    V("negated text 'PTSD screen negative'", record([cond(None, None, text="PTSD screen negative")], [], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {}}),
    V("negated text 'denies PTSD symptoms'", record([cond(None, None, text="denies PTSD symptoms")], [], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {}}),
    V("provisional PTSD -> warning", record([cond(verification="provisional")], [], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {BENZO: "warning"}}),
    V("differential PTSD -> warning", record([cond(ICD, "F43.10", "Post-traumatic stress disorder, unspecified", verification="differential")], [], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {BENZO: "warning"}}),
    V("refuted PTSD -> nothing", record([cond(verification="refuted")], [], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {}}),
    V("urn:oid SNOMED PTSD", record([cond(system="urn:oid:2.16.840.1.113883.6.96")], [], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {BENZO: "critical"}}),
    # --- point 8: opioids
    V("current methadone product code without display", record([PTSD], [{**mr("864706", None, dose(10, 1)), "medicationCodeableConcept": {"coding": [{"system": RX, "code": "864706"}]}}], [], [draft(*LORAZ1, dose(1, 2))]),
      "order-sign", {"topics": {BENZO: "critical"}, "text": ["methadone"]}),
    V("current oxycodone ingredient", record([PTSD], [mr("7804", "oxycodone", dose(5, 4))], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {BENZO: "critical"}, "text": ["oxycodone"]}),
    # --- points 9/10: first-line and adequacy
    V("therapy done (12 CPT), no meds -> step 2 offers 3 first-line", record([PTSD], [], sessions("cognitive-processing-therapy", 12)), "patient-view",
      {"topics": {S2: "info"}, "creates": ["sertraline", "paroxetine", "venlafaxine"]}),
    V("failed adequate venlafaxine -> step 4 switch to sertraline/paroxetine", record([PTSD], [mr(*VEN150, dose(150, 1), status="completed", authored="2025-01-01", end="2025-07-01")], sessions("prolonged-exposure", 8, "2024-01-01")),
      "patient-view", {"topics": {S4: "info"}, "creates_any": ["sertraline", "paroxetine"], "creates_not": ["venlafaxine"]}),
    V("failed sertraline + failed paroxetine (2 SSRIs) -> step 5/6, not step 4", record([PTSD], [mr(*SERT100, dose(100, 1), status="completed", authored="2024-01-01", end="2024-06-01"), mr(*PAR20, dose(20, 1), status="completed", authored="2024-07-01", end="2025-01-01")], sessions("emdr", 6, "2023-01-01")),
      "patient-view", {"topics_in": [S5, S6], "not": [S4]}),
    V("fluoxetine tried only -> not a failed first-line: step 2", record([PTSD], [mr(*FLX20, dose(20, 1), status="completed", authored="2025-01-01", end="2025-06-01")], sessions("emdr", 6, "2024-01-01")),
      "patient-view", {"topics": {S2: "info"}}),
    V("under-dosed sertraline 25 mg x 16 weeks -> titrate, not failed", record([PTSD], [mr(*SERT25, dose(25, 1), authored="2026-08-01")], sessions("emdr", 6, "2024-01-01")),
      "patient-view", {"topics": {S2: "info"}, "text": ["titrat"]}),
    V("sertraline 200 mg since 4 weeks -> continue and reassess", record([PTSD], [mr(*SERT100, dose(200, 1), authored="2026-11-01")], sessions("emdr", 6, "2024-01-01")),
      "patient-view", {"topics": {S2: "info"}, "text": ["reassess"]}),
    V("current citalopram -> no antidepressant draft, names it", record([PTSD], [mr("2556", "citalopram", dose(20, 1))], sessions("emdr", 6, "2024-01-01")),
      "patient-view", {"no_creates": ["sertraline", "paroxetine", "venlafaxine"], "text": ["citalopram"]}),
    V("current Trintellix brand -> no antidepressant draft", record([PTSD], [mr("1790886", "vortioxetine 10 MG Oral Tablet [Trintellix]", dose(10, 1))], sessions("emdr", 6, "2024-01-01")),
      "patient-view", {"no_creates": ["sertraline", "paroxetine", "venlafaxine"]}),
    V("stopped sertraline after 10 days, no reason -> no trial: step 2", record([PTSD], [mr(*SERT50, dose(50, 1), status="stopped", authored="2026-05-01", end="2026-05-10")], sessions("emdr", 6, "2024-01-01")),
      "patient-view", {"topics": {S2: "info"}}),
    # --- point 5
    V("pregnant (Z34.01 onset 3 months ago) -> no drug draft", record([PTSD, cond(ICD, "Z34.01", "Encounter for supervision of normal first pregnancy, first trimester", onset="2026-09-01")], [], sessions("cognitive-processing-therapy", 12), pt=patient("female")),
      "patient-view", {"topics": {S2: "info"}, "no_creates": ["sertraline", "paroxetine", "venlafaxine"]}),
    V("pregnancy onset 2 years ago -> drafts allowed", record([PTSD, cond(ICD, "Z34.01", "Encounter for supervision of normal first pregnancy, first trimester", onset="2024-09-01")], [], sessions("cognitive-processing-therapy", 12), pt=patient("female")),
      "patient-view", {"topics": {S2: "info"}, "creates": ["sertraline"]}),
    # --- point 11: courses
    V("CPT under way (5, last 8 days ago) -> continue, no referral", record([PTSD], [], sessions("cognitive-processing-therapy", 5, "2026-10-24")), "patient-view", {"topics": {S1: "info"}, "no_creates_type": ["ServiceRequest"], "text": ["5"]}),
    V("CPT stopped at 5 in 2025 -> resume/restart with referral", record([PTSD], [], sessions("cognitive-processing-therapy", 5, "2025-01-06")), "patient-view", {"topics": {S1: "info"}, "creates_type": ["ServiceRequest"]}),
    V("PE 8 sessions but 4 duplicated same-day -> incomplete", record([PTSD], [], sessions("prolonged-exposure", 4, "2025-01-06") + sessions("prolonged-exposure", 4, "2025-01-06")), "patient-view", {"topics": {S1: "info"}}),
    V("8 PE complete -> step 2", record([PTSD], [], sessions("prolonged-exposure", 8, "2025-01-06")), "patient-view", {"topics": {S2: "info"}}),
    V("mixed 4 CPT + 4 PE -> not complete", record([PTSD], [], sessions("cognitive-processing-therapy", 4, "2025-01-06") + sessions("prolonged-exposure", 4, "2025-03-06")), "patient-view", {"topics": {S1: "info"}}),
    V("psychotherapy declined -> medication step", record([PTSD], [], [proc("prolonged-exposure", "2026-06-01", status="not-done", status_reason=cc(SCT, "105480006", "Procedure declined by patient"))]), "patient-view", {"topics": {S2: "info"}}),
    # --- point 12/17: nightmares
    V("nightmares, no IRT -> step 3 with IRT referral + prazosin draft", record([PTSD, cond(ICD, "F51.5", "Nightmare disorder")], [], sessions("prolonged-exposure", 8, "2025-01-06")), "patient-view",
      {"has": [S3], "creates_type": ["ServiceRequest"], "creates": ["prazosin"]}),
    V("nightmares + pregnant -> no prazosin draft", record([PTSD, cond(ICD, "F51.5", "Nightmare disorder"), cond(ICD, "Z34.01", "pregnancy", onset="2026-09-01")], [], sessions("prolonged-exposure", 8, "2025-01-06"), pt=patient("female")), "patient-view",
      {"has": [S3], "no_creates": ["prazosin"]}),
    # --- point 17 dose
    V("paroxetine 80 mg/day draft, not on paroxetine -> dose card, no start at the top", record([PTSD], [], [], [draft(*PAR20, dose(40, 2))]), "order-sign", {"topics": {DOSE: "warning"}, "no_creates": ["paroxetine"], "text": ["not a starting dose"]}),
    V("sertraline still 'active' after its validity ended -> no antidepressant drafted", record([PTSD], [mr(*SERT100, dose(100, 1), authored="2026-08-01", end="2026-11-10")], sessions("emdr", 6, "2024-01-01")), "patient-view", {"no_creates": ["sertraline", "paroxetine", "venlafaxine"], "text": ["sertraline"]}),
    V("sertraline 300 mg/day draft while on sertraline 200 -> replacement at 200", record([PTSD], [mr(*SERT100, dose(200, 1), authored="2026-06-01")], [], [draft(*SERT100, dose(300, 1))]), "order-sign", {"topics": {DOSE: "warning"}, "creates": ["sertraline"], "delete": DOSE}),
    # --- under 18
    V("15-year-old, 12 CPT done -> step 1, no drug drafts", record([PTSD], [], sessions("cognitive-processing-therapy", 12), pt=patient(birth="2011-03-01")), "patient-view", {"topics": {S1: "info"}, "no_creates": ["sertraline"]}),
    # --- second batch: variants of the same classes
    V("taper coded by ingredient only: clonazepam 2598 1 mg bid current, draft 0.5 bid", record([PTSD], [mr("2598", "clonazepam", dose(1, 2))], [], [draft("2598", "clonazepam", dose(0.5, 2))]), "order-sign", {"topics": {BENZO: "warning"}, "no_delete": BENZO}),
    V("recently ended lorazepam (completed) + new draft -> new, critical", record([PTSD], [mr(*LORAZ1, dose(1, 2), status="completed", authored="2026-06-01", end="2026-07-01")], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {BENZO: "critical"}, "delete": BENZO}),
    V("reasonReference to a missing Condition -> no exemption", record([PTSD], [], [], [draft(*ALP1, dose(1, 2), reason_ref="Condition/nothere")]), "order-sign", {"topics": {BENZO: "critical"}}),
    V("reasonCode ICD-10 G40.909 epilepsy on clonazepam", record([PTSD], [], [], [draft(*CLON05, dose(0.5, 2), reason=cc(ICD, "G40.909", "Epilepsy, unspecified, not intractable, without status epilepticus"))]), "order-sign", {"topics": {}}),
    V("buccal midazolam by route text", record([PTSD], [], [], [draft("6960", "midazolam", dose(10, 1, route={"text": "buccal"}))]), "order-sign", {"topics": {}}),
    V("IV midazolam pre-procedure (injected)", record([PTSD], [], [], [draft("106517", "midazolam 2 MG/ML Injectable Solution", dose(2, 1, route=cc(SCT, "47625008", "Intravenous route")))]), "order-sign", {"topics": {}}),
    V("oral lorazepam, route SNOMED intravenous? no: oral text", record([PTSD], [], [], [draft(*LORAZ1, dose(1, 3, route={"text": "by mouth"}))]), "order-select", {"topics": {BENZO: "critical"}}),
    V("text-only 'Post traumatic stress disorder'", record([cond(None, None, text="Post traumatic stress disorder")], [], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {BENZO: "critical"}}),
    V("text-only 'Posttraumatic stress disorder (PTSD)'", record([cond(None, None, text="Posttraumatic stress disorder (PTSD)")], [], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {BENZO: "critical"}}),
    V("text 'rule out post-traumatic stress disorder'", record([cond(None, None, text="rule out post-traumatic stress disorder")], [], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {}}),
    V("text 'No PTSD'", record([cond(None, None, text="No PTSD")], [], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {}}),
    V("urn:oid ICD-10-CM F43.12", record([cond("urn:oid:2.16.840.1.113883.6.90", "F43.12", "Post-traumatic stress disorder, chronic")], [], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {BENZO: "critical"}}),
    V("WHO ICD-10 F43.1", record([cond("http://hl7.org/fhir/sid/icd-10", "F43.1", "Post-traumatic stress disorder")], [], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {BENZO: "critical"}}),
    V("unconfirmed PTSD", record([cond(verification="unconfirmed")], [], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {BENZO: "warning"}}),
    V("current buprenorphine ingredient + draft", record([PTSD], [mr("1819", "buprenorphine", dose(8, 1))], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {BENZO: "critical"}, "text": ["buprenorphine"]}),
    V("current duloxetine -> no drafts", record([PTSD], [mr("72625", "duloxetine", dose(60, 1))], sessions("emdr", 6, "2024-01-01")), "patient-view", {"no_creates": ["sertraline", "paroxetine", "venlafaxine"], "text": ["duloxetine"]}),
    V("current Wellbutrin XL by text -> no drafts", record([PTSD], [{**mr(None, None, dose(150, 1)), "medicationCodeableConcept": {"text": "Wellbutrin XL 150 mg tablet"}}], sessions("emdr", 6, "2024-01-01")), "patient-view", {"no_creates": ["sertraline", "paroxetine", "venlafaxine"]}),
    V("current amitriptyline (TCA) -> no drafts", record([PTSD], [mr("704", "amitriptyline", dose(25, 1))], sessions("emdr", 6, "2024-01-01")), "patient-view", {"no_creates": ["sertraline", "paroxetine", "venlafaxine"]}),
    V("current trazodone -> no drafts", record([PTSD], [mr("10737", "trazodone", dose(50, 1))], sessions("emdr", 6, "2024-01-01")), "patient-view", {"no_creates": ["sertraline", "paroxetine", "venlafaxine"]}),
    V("failed adequate paroxetine -> step 4 venlafaxine", record([PTSD], [mr(*PAR20, dose(20, 1), status="completed", authored="2025-01-01", end="2025-04-15")], sessions("emdr", 6, "2024-01-01")), "patient-view", {"topics": {S4: "info"}, "creates": ["venlafaxine"]}),
    V("venlafaxine 37.5 for 12 weeks -> under-dosed, step 2", record([PTSD], [mr("313583", "24 HR venlafaxine 37.5 MG Extended Release Oral Capsule", dose(37.5, 1), authored="2026-08-15")], sessions("emdr", 6, "2024-01-01")), "patient-view", {"topics": {S2: "info"}, "text": ["titrat"]}),
    V("sertraline stopped after 7 days: side effects -> not tolerated -> step 4", record([PTSD], [mr(*SERT50, dose(50, 1), status="stopped", authored="2026-05-01", end="2026-05-08", status_reason={"text": "Side effects: nausea"})], sessions("emdr", 6, "2024-01-01")), "patient-view", {"topics": {S4: "info"}}),
    V("pregnancy without onset -> no drafts", record([PTSD, cond(ICD, "Z34.01", "Encounter for supervision of normal first pregnancy, first trimester")], [], sessions("cognitive-processing-therapy", 12), pt=patient("female")), "patient-view", {"topics": {S2: "info"}, "no_creates": ["sertraline", "paroxetine", "venlafaxine"]}),
    V("pregnancy resolved -> drafts", record([PTSD, cond(ICD, "Z34.01", "pregnancy", clinical="resolved", onset="2026-06-01")], [], sessions("cognitive-processing-therapy", 12), pt=patient("female")), "patient-view", {"topics": {S2: "info"}, "creates": ["sertraline"]}),
    V("18th birthday today -> adult", record([PTSD], [], sessions("cognitive-processing-therapy", 12), pt=patient(birth="2008-11-28")), "patient-view", {"topics": {S2: "info"}, "creates": ["sertraline"]}),
    V("one day before 18 -> step 1", record([PTSD], [], sessions("cognitive-processing-therapy", 12), pt=patient(birth="2008-11-29")), "patient-view", {"topics": {S1: "info"}, "no_creates": ["sertraline"]}),
    V("EMDR by text only, 6 sessions -> complete", record([PTSD], [], [proc(None, f"2025-0{m}-10", text="EMDR session") for m in range(1, 7)]), "patient-view", {"topics": {S2: "info"}}),
    V("declined by text statusReason", record([PTSD], [], [proc("cognitive-processing-therapy", "2026-05-01", status="not-done", status_reason={"text": "Patient declined"})]), "patient-view", {"topics": {S2: "info"}}),
    V("nightmares + imagery rehearsal therapy done -> no step 3", record([PTSD, cond(ICD, "F51.5", "Nightmare disorder")], [], sessions("prolonged-exposure", 8, "2025-01-06") + [proc(None, "2025-06-01", text="Imagery rehearsal therapy")]), "patient-view", {"not": [S3]}),
    V("nightmares + current prazosin -> step 3, no prazosin draft", record([PTSD, cond(ICD, "F51.5", "Nightmare disorder")], [mr("312594", "prazosin 2 MG Oral Capsule", dose(2, 1))], sessions("prolonged-exposure", 8, "2025-01-06")), "patient-view", {"has": [S3], "no_creates": ["prazosin"]}),
    V("prazosin 25 mg/day man -> dose card", record([PTSD], [], [], [draft("198141", "prazosin 5 MG Oral Capsule", dose(5, 5))]), "order-sign", {"topics": {DOSE: "warning"}}),
    V("prazosin 15 mg/day woman -> dose card", record([PTSD], [], [], [draft("198141", "prazosin 5 MG Oral Capsule", dose(5, 3))], pt=patient("female")), "order-sign", {"topics": {DOSE: "warning"}}),
    V("prazosin 15 mg/day man -> no dose card", record([PTSD], [], [], [draft("198141", "prazosin 5 MG Oral Capsule", dose(5, 3))]), "order-sign", {"topics": {}}),
    V("sertraline 100 mg {pill} x3 -> dose card", record([PTSD], [], [], [draft(*SERT100, dose(1, 3, unit="{pill}"))]), "order-sign", {"topics": {DOSE: "warning"}}),
    V("acute stress disorder + lorazepam -> warning", record([cond(SCT, "67195008", "Acute stress disorder")], [], [], [draft(*LORAZ1, dose(1, 2))]), "order-sign", {"topics": {BENZO: "warning"}}),
    V("MDMA draft by UNII, no PTSD -> critical", record([], [], [], [draft("KE1SEN21RM", "midomafetamine", system="http://fdasis.nlm.nih.gov")]), "order-sign", {"topics": {MDMA: "critical"}}),
    V("MDMA current by text 'MDMA-assisted therapy' -> warning", record([PTSD], [{**mr(None, None), "medicationCodeableConcept": {"text": "MDMA (midomafetamine) capsule"}}], sessions("prolonged-exposure", 8, "2025-01-06")), "patient-view", {"has": [MDMA]}),
]

def check(name, cards, exp):
    probs = []
    got = {}
    for c in cards:
        got.setdefault(c["source"]["topic"]["code"], []).append(c)
    ind = {t: cs[0]["indicator"] for t, cs in got.items()}
    acts = [a for c in cards for a in actions(c)]
    text = " ".join((c.get("summary", "") + " " + c.get("detail", "")) for c in cards).lower()
    if "topics" in exp and ind != exp["topics"]: probs.append(f"topics {ind} != {exp['topics']}")
    for t in exp.get("has", []):
        if t not in ind: probs.append(f"missing {t}")
    if "topics_in" in exp and not any(t in ind for t in exp["topics_in"]): probs.append(f"none of {exp['topics_in']} in {ind}")
    for t in exp.get("not", []):
        if t in ind: probs.append(f"unexpected {t}")
    if "no_delete" in exp and any(a[0] == "delete" for c in got.get(exp["no_delete"], []) for a in actions(c)): probs.append("has delete")
    if "delete" in exp and not any(a[0] == "delete" for c in got.get(exp["delete"], []) for a in actions(c)): probs.append("no delete")
    if "n_delete" in exp:
        n = sum(1 for a in acts if a[0] == "delete")
        if n != exp["n_delete"]: probs.append(f"{n} deletes")
    for t, n in exp.get("n_cards", {}).items():
        if len(got.get(t, [])) != n: probs.append(f"{len(got.get(t, []))} {t} cards")
    creates = " ".join(str(a[2]).lower() for a in acts if a[0] == "create")
    ctypes = [a[1] for a in acts if a[0] == "create"]
    for w in exp.get("creates", []):
        if w not in creates: probs.append(f"no create of {w}")
    if "creates_any" in exp and not any(w in creates for w in exp["creates_any"]): probs.append(f"no create of any {exp['creates_any']}")
    for w in exp.get("creates_not", []) + exp.get("no_creates", []):
        if w in creates: probs.append(f"creates {w}")
    for t in exp.get("creates_type", []):
        if t not in ctypes: probs.append(f"no create {t}")
    for t in exp.get("no_creates_type", []):
        if t in ctypes: probs.append(f"creates {t}")
    for w in exp.get("text", []):
        if w.lower() not in text: probs.append(f"text lacks {w!r}")
    return ind, acts, probs

@pytest.mark.parametrize("name, rec, hook, expect", VIGNETTES, ids=[v[0] for v in VIGNETTES])
def test_vignette(engine, name, rec, hook, expect):
    out = engine.run(hook, rec, TODAY, catalogue_base="https://cds.example.org/")
    _ind, _acts, problems = check(name, out.cards, expect)
    assert problems == [], (name, [(c["source"]["topic"]["code"], c["indicator"], c["summary"]) for c in out.cards])
