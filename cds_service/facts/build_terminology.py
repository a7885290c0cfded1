"""Compile the generated terminology data files from the project's clinical reference material.

Run (from the repository root)::

    .venv/bin/python -m cds_service.facts.build_terminology --clinical reference/clinical
    .venv/bin/python -m cds_service.facts.build_terminology --shared ../shared

The clinical folder is always named explicitly: ``reference/clinical`` (the in-repository copies of
exactly the files read here) or the shared reference folder's ``clinical/``.

It reads ``CODES.md``'s machine-readable copy (``valuesets/derived/ptsd-cds-codelists.json``) and the
stored FHIR ValueSet expansions under ``valuesets/`` and writes two files into
``cds_service/data/terminology/``:

* ``conditions.json``  - PTSD, nightmare and "looks like PTSD but is not" condition codes, and the
  alcohol-withdrawal and seizure-disorder codes (CODES-2 §1, §2) that exempt a benzodiazepine
  order whose own reason they are.
* ``opioid-products.json`` - RxNorm product codes (SCD/SBD/packs) of the CDC opioid value sets
  (CODES-2 §4b buprenorphine / methadone, §4d analgesics with ambulatory misuse potential), each
  mapped to its opioid ingredient of ``opioids.json``.
* ``medications.json`` - drug ingredients of interest (class, RxNorm ingredient code, generic and
  brand names), every RxNorm code of the relevant value sets mapped to its ingredient, the
  brand-level/legacy codes observed in the Synthea test data, and substance (UNII) codes.

The other files in that folder (``systems.json``, ``routes.json``, ``psychotherapy.json``,
``thresholds.json``) are curated by hand; each entry there carries its own ``source``.

Nothing here invents a code: every code written comes from a file under the clinical folder and
each entry names that file. Curated additions below (brand names, legacy codes) cite the exact
place in ``CODES.md`` / ``SOURCES.md`` they come from.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UNII = "http://fdasis.nlm.nih.gov"
OUT_DIR = Path(__file__).resolve().parent.parent / "data" / "terminology"
CODELISTS = "valuesets/derived/ptsd-cds-codelists.json"
GENERATED_BY = "python -m cds_service.facts.build_terminology (do not edit by hand)"

# --- value sets whose RxNorm expansions are mapped to ingredients -------------------------------
# (id used in the output, file under clinical/, upstream location as stated in valuesets/SOURCES.md)
VALUE_SETS: list[tuple[str, str, str]] = [
    ("cdc-benzodiazepine-medications", "valuesets/opioid-cds-r4/benzodiazepine-medications.json",
     "cqframework/opioid-cds-r4 input/vocabulary/valueset/benzodiazepine-medications.json @ b29bdcbf"),
    ("vsac-schedule-iv-benzodiazepines",
     "valuesets/ecqm-content-qicore-2024/valueset-2.16.840.1.113762.1.4.1125.1.json",
     "cqframework/ecqm-content-qicore-2024 input/vocabulary/valueset/external @ 9ebd48ff"),
    ("vsac-harmful-benzodiazepines-older-adults",
     "valuesets/ecqm-content-qicore-2024/valueset-2.16.840.1.113883.3.464.1003.196.12.1522.json",
     "cqframework/ecqm-content-qicore-2024 input/vocabulary/valueset/external @ 9ebd48ff"),
    ("vsac-antidepressant-medication",
     "valuesets/ecqm-content-qicore-2024/valueset-2.16.840.1.113883.3.464.1003.196.12.1213.json",
     "cqframework/ecqm-content-qicore-2024 input/vocabulary/valueset/external @ 9ebd48ff"),
    ("vsac-antidepressants",
     "valuesets/ecqm-content-qicore-2024/valueset-2.16.840.1.113762.1.4.1248.163.json",
     "cqframework/ecqm-content-qicore-2024 input/vocabulary/valueset/external @ 9ebd48ff"),
    ("vsac-adult-depression-medications",
     "valuesets/ecqm-content-qicore-2024/valueset-2.16.840.1.113883.3.526.3.1566.json",
     "cqframework/ecqm-content-qicore-2024 input/vocabulary/valueset/external @ 9ebd48ff"),
    ("vsac-antihypertensives",
     "valuesets/ecqm-content-qicore-2024/valueset-2.16.840.1.113762.1.4.1248.164.json",
     "cqframework/ecqm-content-qicore-2024 input/vocabulary/valueset/external @ 9ebd48ff"),
]

# --- ingredients of interest --------------------------------------------------------------------
# Benzodiazepine generic names: CODES.md §3a (ingredients) and §3b (per-ingredient rows, incl.
# "other": bromazepam, remimazolam, halazepam, lormetazepam, flunitrazepam, nitrazepam, prazepam).
BENZODIAZEPINES = [
    "alprazolam", "lorazepam", "clonazepam", "diazepam", "chlordiazepoxide", "clorazepate",
    "oxazepam", "temazepam", "triazolam", "estazolam", "flurazepam", "quazepam", "midazolam",
    "clobazam", "bromazepam", "remimazolam", "halazepam", "lormetazepam", "flunitrazepam",
    "nitrazepam", "prazepam",
]
# Antidepressants (issue #8 point 3): the first-line agents sertraline, paroxetine, venlafaxine
# (VA/DoD 2023, GUIDELINE-FACTS §1), fluoxetine, and every other antidepressant of CODES.md §4a /
# CODES-2.md §5a-§5b, by class. Each counts as an antidepressant on record (while one is current no
# card drafts another: service rule); only the three first-line agents make a first-line trial.
ANTIDEPRESSANTS = {
    "ssri": ["sertraline", "paroxetine", "fluoxetine", "citalopram", "escitalopram", "fluvoxamine"],
    "snri": ["venlafaxine", "duloxetine", "desvenlafaxine", "levomilnacipran"],
    "maoi": ["phenelzine", "tranylcypromine", "isocarboxazid", "selegiline"],
    "tca": ["amitriptyline", "nortriptyline", "imipramine", "desipramine", "clomipramine", "doxepin",
            "amoxapine", "maprotiline", "protriptyline", "trimipramine"],
    "other-antidepressant": ["mirtazapine", "bupropion", "trazodone", "nefazodone", "vortioxetine",
                             "vilazodone"],
}
CLASS_OF = {
    **{name: "benzodiazepine" for name in BENZODIAZEPINES},
    **{name: cls for cls, names in ANTIDEPRESSANTS.items() for name in names},
    "prazosin": "prazosin",
    "midomafetamine": "mdma",
}
# CODES-2.md §5a: verified RxNorm ingredient codes of the other antidepressants (the unverified rows
# - fluvoxamine, clomipramine, vortioxetine, trimipramine, protriptyline and those without a code -
# are left out: they are matched by their clinical-drug codes (§5b) and by name).
ANTIDEPRESSANT_INGREDIENT_CODES = {
    "bupropion": "42347", "mirtazapine": "15996", "trazodone": "10737", "nefazodone": "31565",
    "amitriptyline": "704", "nortriptyline": "7531", "imipramine": "5691", "desipramine": "3247",
    "doxepin": "3638",
}
# Extra names per ingredient (besides the generic name) and where they are justified.
EXTRA_NAMES: dict[str, tuple[list[str], str]] = {
    "midomafetamine": (["MDMA", "methylenedioxymethamphetamine", "ecstasy"],
                       "CODES.md §6: 'match on text (MDMA|midomafetamine|methylenedioxymethamphetamine|ecstasy)'"),
}
# Brand names not visible as "[Brand]" in a stored value set display, with their justification.
EXTRA_BRANDS: dict[str, tuple[str, str]] = {
    "Librium": ("chlordiazepoxide", "CODES.md §3b benzodiazepine text-fallback list"),
    "Versed": ("midazolam", "CODES.md §3b benzodiazepine text-fallback list"),
    "Zoloft": ("sertraline", "CODES.md §4b note on missing brand codes; GUIDELINE-FACTS.md §6 (ZOLOFT label)"),
    "Paxil": ("paroxetine", "CODES.md §4b note on missing brand codes; GUIDELINE-FACTS.md §6"),
    "Effexor": ("venlafaxine", "CODES.md §4b note on missing brand codes ('Effexor XR')"),
}
# CODES-2.md §5c "Text fallback for brands" (antidepressants; brand codes unverified or absent).
ANTIDEPRESSANT_BRANDS = {
    "Prozac": "fluoxetine", "Sarafem": "fluoxetine", "Symbyax": "fluoxetine",
    "Pexeva": "paroxetine", "Brisdelle": "paroxetine",
    "Celexa": "citalopram", "Lexapro": "escitalopram", "Luvox": "fluvoxamine",
    "Cymbalta": "duloxetine", "Pristiq": "desvenlafaxine", "Khedezla": "desvenlafaxine",
    "Fetzima": "levomilnacipran", "Viibryd": "vilazodone", "Trintellix": "vortioxetine",
    "Brintellix": "vortioxetine", "Remeron": "mirtazapine", "Wellbutrin": "bupropion",
    "Aplenzin": "bupropion", "Forfivo": "bupropion", "Zyban": "bupropion", "Desyrel": "trazodone",
    "Oleptro": "trazodone", "Nardil": "phenelzine", "Parnate": "tranylcypromine",
    "Marplan": "isocarboxazid", "Emsam": "selegiline", "Elavil": "amitriptyline",
    "Pamelor": "nortriptyline", "Tofranil": "imipramine", "Norpramin": "desipramine",
    "Anafranil": "clomipramine", "Silenor": "doxepin", "Sinequan": "doxepin",
}
for _brand, _ingredient in ANTIDEPRESSANT_BRANDS.items():
    EXTRA_BRANDS[_brand] = (_ingredient, "CODES-2.md §5c text fallback for brands")
EXTRA_BRANDS["Minipress"] = ("prazosin", "CODES-2.md §5c text fallback for brands")
VERIFIED_SBD = ("CODES-2.md §5c (verified brand code; CDC IG archived value set "
                "non-opioid-cns-depressant-medications, clinical/valuesets/more/derived/ptsd-cds-codelists-2.json)")
# Codes at other RxNorm levels (brand groups, legacy concepts) observed in the test records and named
# in the reference material; they are in no stored value set.
OTHER_LEVEL_CODES = [
    ("563026", "Diazepam [Valium]", "diazepam", "CODES.md §3b data-reality warning; samples/synthea/SOURCES.md"),
    ("1153378", "Clonazepam [Klonopin]", "clonazepam", "CODES.md §3b data-reality warning; samples/synthea/SOURCES.md"),
    ("328670", "Sertraline 100MG", "sertraline", "CODES.md §4b note; valuesets/derived/synthea-veteran-ptsd-module-codes.json"),
    ("406022", "Fluoxetine 25MG", "fluoxetine", "CODES.md §4b note; samples/synthea/SOURCES.md (Milan_Beatty)"),
    # CODES-2.md §5c: verified brand (SBD) codes (CDC IG archived value set non-opioid-cns-depressant-medications)
    *[(code, display, ingredient, VERIFIED_SBD) for code, display, ingredient in [
        ("898701", "24 HR trazodone hydrochloride 150 MG Extended Release Oral Tablet [Oleptro]", "trazodone"),
        ("898706", "24 HR trazodone hydrochloride 300 MG Extended Release Oral Tablet [Oleptro]", "trazodone"),
        ("966791", "doxepin 3 MG Oral Tablet [Silenor]", "doxepin"),
        ("966795", "doxepin 6 MG Oral Tablet [Silenor]", "doxepin"),
        ("725080", "fluoxetine 25 MG / olanzapine 3 MG Oral Capsule [Symbyax]", "fluoxetine"),
        ("725064", "fluoxetine 25 MG / olanzapine 6 MG Oral Capsule [Symbyax]", "fluoxetine"),
        ("725068", "fluoxetine 50 MG / olanzapine 12 MG Oral Capsule [Symbyax]", "fluoxetine"),
        ("725072", "fluoxetine 50 MG / olanzapine 6 MG Oral Capsule [Symbyax]", "fluoxetine"),
        ("752869", "mirtazapine 15 MG Disintegrating Oral Tablet [Remeron]", "mirtazapine"),
        ("211322", "mirtazapine 15 MG Oral Tablet [Remeron]", "mirtazapine"),
        ("752870", "mirtazapine 30 MG Disintegrating Oral Tablet [Remeron]", "mirtazapine"),
        ("211323", "mirtazapine 30 MG Oral Tablet [Remeron]", "mirtazapine"),
        ("752871", "mirtazapine 45 MG Disintegrating Oral Tablet [Remeron]", "mirtazapine"),
        ("104838", "tranylcypromine 10 MG Oral Tablet [Parnate]", "tranylcypromine"),
        ("1790886", "vortioxetine 10 MG Oral Tablet [Trintellix]", "vortioxetine"),
        ("1790890", "vortioxetine 20 MG Oral Tablet [Trintellix]", "vortioxetine"),
        ("1790892", "vortioxetine 5 MG Oral Tablet [Trintellix]", "vortioxetine"),
    ]],
]
DOSE_FORM_NON_SYSTEMIC = re.compile(
    r"\b(injection|injectable|auto-injector|prefilled syringe|cartridge|rectal|enema|suppository|nasal)\b",
    re.IGNORECASE,
)


def _load(clinical: Path, rel: str) -> Any:
    with open(clinical / rel, encoding="utf-8") as fh:
        return json.load(fh)


def _row(entry: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: entry[k] for k in keys if entry.get(k) not in (None, "")}


# CODES-2.md §7 (second table): a non-US feed may send F43.1 with the WHO ICD-10 system; the code is
# the ICD-10 category of ICD-10-CM's verified F43.10/.11/.12 — "match it as PTSD" (unverified row).
WHO_ICD10_PTSD = [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F43.1",
                   "display": "Post-traumatic stress disorder", "status": "unverified",
                   "source": "CODES-2.md §7: WHO ICD-10 F43.1 (category shared with ICD-10-CM); match it as PTSD"}]
ACUTE_STRESS = {("http://snomed.info/sct", "67195008"), ("http://hl7.org/fhir/sid/icd-10-cm", "F43.0")}

# --- indications that exempt a benzodiazepine order (issue #8 point 2; CODES-2 §1, §2) ---------
CODELISTS_2 = "valuesets/more/derived/ptsd-cds-codelists-2.json"
ALCOHOL_WITHDRAWAL_VS = "valuesets/more/ecqm-content-qicore-2024/valueset-2.16.840.1.113883.3.464.1003.105.12.1209.json"
SEIZURE_VS = ("valuesets/more/ecqm-content-qicore-2024/valueset-2.16.840.1.113883.3.464.1003.105.12.1206.json",
              "valuesets/more/ecqm-content-qicore-2024/valueset-2.16.840.1.113762.1.4.1248.171.json")
# CODES-2 §2b: dissociative (psychogenic) convulsions are in VSAC "Seizure Disorder" but are not
# epilepsy: never a reason that exempts a benzodiazepine. §1: 386449006 is a procedure, not a Condition.
NOT_AN_INDICATION = {("http://snomed.info/sct", "191714002"), ("http://snomed.info/sct", "386449006")}


def _value_set_rows(clinical: Path, rel: str) -> list[dict[str, Any]]:
    vs = _load(clinical, rel)
    return [{"system": c["system"], "code": c["code"], "display": c.get("display", ""),
             "status": "verified", "source": f"{vs.get('title')} ({vs.get('url')}), clinical/{rel}"}
            for c in vs.get("expansion", {}).get("contains", []) if c.get("system") and c.get("code")]


def build_indications(clinical: Path) -> dict[str, list[dict[str, Any]]]:
    """Alcohol-withdrawal and seizure-disorder codes: the whole VSAC expansions plus the verified
    CODES-2 rows of the section (the F10.13x/F10.93x withdrawal codes are only there)."""
    rows = _load(clinical, CODELISTS_2)["rows"]
    out: dict[str, list[dict[str, Any]]] = {}
    for key, section, files in (("alcoholWithdrawal", "alcohol-withdrawal", (ALCOHOL_WITHDRAWAL_VS,)),
                                ("seizure", "seizure", SEIZURE_VS)):
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        candidates = [r for f in files for r in _value_set_rows(clinical, f)]
        candidates += [_row(r, "system", "code", "display", "status", "source") for r in rows
                       if r.get("section") == section and r.get("status") == "verified" and r.get("code")]
        for r in candidates:
            key2 = (r["system"], r["code"])
            if key2 not in NOT_AN_INDICATION:
                seen.setdefault(key2, r)
        out[key] = sorted(seen.values(), key=lambda r: (r["system"], r["code"]))
    return out


# CODES-2.md §3: current pregnancy = VSAC "Pregnancy" (ICD-10-CM O09-O9A, Z32.01, Z33, Z34, Z3A and
# 64 SNOMED CT concepts) and VSAC "Pregnant State" (Z33.1, Z33.3, 255409004); issue #8 point 5.
PREGNANCY_VALUE_SETS = [
    "valuesets/more/ecqm-content-qicore-2024/valueset-2.16.840.1.113883.3.526.3.378.json",
    "valuesets/more/ecqm-content-qicore-2024/valueset-2.16.840.1.113883.3.3157.4055.json",
]


def _pregnancy(clinical: Path) -> tuple[list[dict[str, Any]], str]:
    """Every code of the pregnancy value sets (system, code, display) and one source for the group."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    sources = []
    for rel in PREGNANCY_VALUE_SETS:
        vs = _load(clinical, rel)
        sources.append(f"VSAC {vs.get('title')} ({vs.get('url')}, {vs.get('version')}), clinical/{rel}")
        for c in vs.get("expansion", {}).get("contains", []):
            if c.get("system") and c.get("code"):
                rows.setdefault((c["system"], c["code"]), {"system": c["system"], "code": c["code"],
                                                           "display": c.get("display", "")})
    return sorted(rows.values(), key=lambda r: (r["system"], r["code"])), "CODES-2.md §3; " + "; ".join(sources)


def build_conditions(clinical: Path) -> dict[str, Any]:
    groups = _load(clinical, CODELISTS)["groups"]
    pregnancy, pregnancy_source = _pregnancy(clinical)
    keys = ("system", "code", "display", "status", "source", "note")
    return {
        "description": "Condition codes: active PTSD, active nightmares, and stress disorders that are NOT PTSD.",
        "source": f"CODES.md §1-§2; {CODELISTS} groups ptsd-condition, nightmare, ptsd-related-not-ptsd",
        "generatedBy": GENERATED_BY,
        "ptsd": [_row(e, *keys) for e in groups["ptsd-condition"] if e.get("code")] + WHO_ICD10_PTSD,
        "nightmares": [_row(e, *keys) for e in groups["nightmare"] if e.get("code")],
        "notPtsd": [_row(e, *keys) for e in groups["ptsd-related-not-ptsd"] if e.get("code")],
        # Acute stress disorder / reaction: not PTSD (no step cards), but a benzodiazepine for it
        # gets the benzodiazepine card as a warning (issue #8 point 6; GUIDELINE-FACTS §0 row 2).
        "acuteStress": [_row(e, *keys) for e in groups["ptsd-related-not-ptsd"]
                        if (e.get("system"), e.get("code")) in ACUTE_STRESS],
        # Current pregnancy (issue #8 point 5, service rule: no drug draft): CODES-2.md §3.
        "pregnancy": pregnancy,
        "pregnancySource": pregnancy_source,
        # The order's own reason (reasonCode / reasonReference) exempts a benzodiazepine order
        # (service rule, issue #8 point 2); elsewhere in the record such a condition is only named.
        **build_indications(clinical),
    }


def _ingredient_in(display: str) -> str | None:
    """The single ingredient of interest named in a value-set display (word match), else None."""
    found = [n for n in CLASS_OF if re.search(rf"\b{n}\b", display, re.IGNORECASE)]
    benzodiazepines = [n for n in found if CLASS_OF[n] == "benzodiazepine"]
    if len(found) > 1 and len(benzodiazepines) == 1:
        # amitriptyline / chlordiazepoxide (Limbitrol): one DrugFact per order, and the
        # benzodiazepine card must never be lost, so the benzodiazepine is the ingredient.
        return benzodiazepines[0]
    if len(found) > 1:
        raise ValueError(f"two ingredients of interest in {display!r}")
    return found[0] if found else None


def _value_set_codes(clinical: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    meta: dict[str, Any] = {}
    codes: dict[str, dict[str, Any]] = {}
    for vs_id, rel, upstream in VALUE_SETS:
        vs = _load(clinical, rel)
        meta[vs_id] = {"title": vs.get("title"), "url": vs.get("url"), "version": vs.get("version"),
                       "file": f"clinical/{rel}", "upstream": upstream}
        for c in vs.get("expansion", {}).get("contains", []):
            ingredient = _ingredient_in(c.get("display", ""))
            if c.get("system") != RXNORM or ingredient is None:
                continue
            row = codes.setdefault(c["code"], {"system": RXNORM, "code": c["code"], "display": c["display"],
                                               "ingredient": ingredient, "valueSets": []})
            row["valueSets"].append(vs_id)
    return meta, sorted(codes.values(), key=lambda r: (r["ingredient"], r["display"]))


def _brands_from_displays(codes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Brand names seen as ``[Brand]`` in value-set displays, with their ingredient and dose forms."""
    brands: dict[str, dict[str, Any]] = {}
    for row in codes:
        m = re.search(r"\[([^\]]+)\]", row["display"])
        if not m:
            continue
        b = brands.setdefault(m.group(1), {"ingredient": row["ingredient"], "displays": []})
        if b["ingredient"] != row["ingredient"]:
            raise ValueError(f"brand {m.group(1)} maps to two ingredients")
        b["displays"].append(row["display"])
    return brands


def _ingredient_codes(clinical: Path) -> dict[str, dict[str, Any]]:
    groups = _load(clinical, CODELISTS)["groups"]
    out: dict[str, dict[str, Any]] = {}
    for group in ("benzodiazepine-ingredient", "ssri-snri-ingredient", "prazosin"):
        for e in groups[group]:
            name = e["display"].split(" (")[0].strip().lower()
            if name in CLASS_OF and e.get("code") and e.get("status") == "verified":
                out[name] = {"rxnorm": e["code"], "source": e["source"]}
    for name, code in ANTIDEPRESSANT_INGREDIENT_CODES.items():
        out.setdefault(name, {"rxnorm": code, "source": "CODES-2.md §5a (verified; US Core allergy-substance), "
                                                         "clinical/valuesets/more/derived/ptsd-cds-codelists-2.json"})
    return out


def build_medications(clinical: Path) -> dict[str, Any]:
    vs_meta, codes = _value_set_codes(clinical)
    ingredient_codes = _ingredient_codes(clinical)
    brands = _brands_from_displays(codes)
    ingredients: dict[str, dict[str, Any]] = {}
    for name, cls in CLASS_OF.items():
        entry: dict[str, Any] = {"class": cls, "names": [name], "brands": []}
        if name in ingredient_codes:
            entry["rxnorm"] = ingredient_codes[name]["rxnorm"]
            entry["rxnormSource"] = ingredient_codes[name]["source"]
        extra = EXTRA_NAMES.get(name)
        if extra:
            entry["names"] += extra[0]
            entry["namesSource"] = extra[1]
        ingredients[name] = entry
    for brand, info in sorted(brands.items()):
        forms = {bool(DOSE_FORM_NON_SYSTEMIC.search(d)) for d in info["displays"]}
        ingredients[info["ingredient"]]["brands"].append({
            "name": brand,
            # every product of this brand in the value sets is an injection/rectal/nasal form
            "nonSystemicOnly": forms == {True},
            "source": "brand in value-set displays, e.g. " + repr(info["displays"][0]),
        })
    for brand, (ingredient, source) in EXTRA_BRANDS.items():
        ingredients[ingredient]["brands"].append({"name": brand, "nonSystemicOnly": False, "source": source})
    return {
        "description": "Drugs of interest: ingredients (class, names), RxNorm codes mapped to ingredients.",
        "source": (f"CODES.md §3-§6; {CODELISTS}; value sets listed in valueSets "
                   "(see clinical/valuesets/SOURCES.md)"),
        "generatedBy": GENERATED_BY,
        "valueSets": vs_meta,
        "ingredients": ingredients,
        "codes": codes,
        "otherLevelCodes": [
            {"system": RXNORM, "code": code, "display": display, "ingredient": ingredient,
             "status": "verified" if source == VERIFIED_SBD else "observed in test data (not in any value set)",
             "source": source}
            for code, display, ingredient, source in OTHER_LEVEL_CODES
        ],
        "substanceCodes": [
            _row(e, "system", "code", "display", "status", "source") | {"ingredient": "midomafetamine"}
            for e in _load(clinical, CODELISTS)["groups"]["mdma"]
            if e.get("system") == UNII and e.get("code")
        ],
    }


# --- opioid products (issue #8 point 8; CODES-2 §4b, §4d) --------------------------------------
OPIOID_VALUE_SETS: list[tuple[str, str]] = [
    ("cdc-buprenorphine-medications", "valuesets/more/opioid-cds-r4/buprenorphine-medications.json"),
    ("cdc-methadone-medications", "valuesets/more/opioid-cds-r4/methadone-medications.json"),
    ("cdc-opioid-analgesics-ambulatory-misuse",
     "valuesets/more/opioid-cds-r4/opioid-analgesics-with-ambulatory-misuse-potential.json"),
]
OPIOIDS_FILE = OUT_DIR / "opioids.json"
# Opioid ingredients named in the displays of those value sets but not among the CODES-2 §4a
# ingredient rows (opioids.json): recognised by their product codes and by name, as read there.
OTHER_OPIOID_INGREDIENTS = ["benzhydrocodone", "dextromoramide", "dipipanone", "heroin", "meptazinol",
                            "pholcodine", "sufentanil"]


def build_opioid_products(clinical: Path, opioids_file: Path = OPIOIDS_FILE) -> dict[str, Any]:
    """Every RxNorm code of the CDC opioid value sets, mapped to the one opioid ingredient of
    ``opioids.json`` its display names (a product naming none or two is refused)."""
    ingredients = json.loads(opioids_file.read_text(encoding="utf-8"))["ingredients"]
    names = {n.lower(): ing for ing, spec in ingredients.items() for n in spec["names"]}
    names.update({n: n for n in OTHER_OPIOID_INGREDIENTS})
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")\b", re.I)
    meta: dict[str, Any] = {}
    codes: dict[str, dict[str, Any]] = {}
    for vs_id, rel in OPIOID_VALUE_SETS:
        vs = _load(clinical, rel)
        meta[vs_id] = {"title": vs.get("title"), "url": vs.get("url"), "version": vs.get("version"),
                       "file": f"clinical/{rel}"}
        for c in vs.get("expansion", {}).get("contains", []):
            if c.get("system") != RXNORM:
                continue
            found = {names[m.lower()] for m in pattern.findall(c.get("display", ""))}
            if len(found) != 1:
                raise ValueError(f"{rel}: {c.get('code')} {c.get('display')!r} names {sorted(found)} opioids")
            row = codes.setdefault(c["code"], {"system": RXNORM, "code": c["code"], "display": c["display"],
                                               "ingredient": found.pop(), "valueSets": []})
            row["valueSets"].append(vs_id)
    return {
        "description": "Opioid products (RxNorm SCD/SBD/packs) mapped to their opioid ingredient: a current "
                       "or ordered opioid coded only with a product code is named on the benzodiazepine card.",
        "source": "CODES-2.md §4b, §4d (CDC Opioid Prescribing IG value sets, opioid-cds-r4@b29bdcbf)",
        "generatedBy": GENERATED_BY,
        "valueSets": meta,
        "extraIngredients": {
            n: {"class": "opioid", "names": [n], "brands": [],
                "source": "ingredient named in the product displays of the value sets above (not a CODES-2 §4a row)"}
            for n in OTHER_OPIOID_INGREDIENTS},
        "codes": sorted(codes.values(), key=lambda r: (r["ingredient"], r["display"])),
    }


def write(clinical: Path, out_dir: Path = OUT_DIR) -> list[Path]:
    """Write the generated files; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in (("conditions.json", build_conditions(clinical)),
                       ("medications.json", build_medications(clinical)),
                       ("opioid-products.json", build_opioid_products(clinical))):
        path = out_dir / name
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cds_service.facts.build_terminology",
                                     description="Compile cds_service/data/terminology/ from a clinical folder.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--clinical", type=Path, help="a clinical folder (e.g. reference/clinical)")
    where.add_argument("--shared", type=Path, help="the shared reference folder (its clinical/ is read)")
    args = parser.parse_args(argv)
    clinical_dir = args.clinical if args.clinical else args.shared / "clinical"
    if not (clinical_dir / CODELISTS).is_file():
        print(f"build_terminology: {clinical_dir / CODELISTS} not found", file=sys.stderr)
        return 2
    for p in write(clinical_dir):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":  # pragma: no cover - manual tool
    sys.exit(main())
