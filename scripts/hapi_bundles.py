#!/usr/bin/env python3
"""Turn the fixture patients (fixtures/patients/*.json, collection Bundles) into FHIR transaction
Bundles for a FHIR server (fixtures/hapi/<id>.json), loaded by ``docker compose --profile fhir``.

Each resource becomes a ``PUT <type>/<id>`` entry, so loading twice changes nothing and the ids
(and the references between them) stay those of the fixtures. The Patient gets a synthetic
name built from the fixture id ("Fixture" + the id's words), so a FHIR server's UI or the CDS
Hooks Sandbox's patient picker shows something readable; no real person is named.
tests/test_docker.py checks the files are up to date and valid FHIR R4 (fhir.resources).

    python scripts/hapi_bundles.py            # rewrite fixtures/hapi/
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATIENTS = ROOT / "fixtures" / "patients"
OUT = ROOT / "fixtures" / "hapi"


def synthetic_name(patient_id: str) -> dict:
    words = [w for w in patient_id.replace("_", "-").split("-") if w]
    given = " ".join(w.upper() if w.lower() in ("ptsd", "mdma", "ssri") else w.capitalize() for w in words)
    return {"use": "usual", "family": "Fixture", "given": [given],
            "text": f"{given} Fixture (synthetic test patient)"}


def transaction(collection: dict) -> dict:
    entries = []
    for entry in collection.get("entry", []):
        resource = copy.deepcopy(entry["resource"])
        if resource["resourceType"] == "Patient":
            resource["name"] = [synthetic_name(resource["id"])]
        item = {"resource": resource,
                "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}
        if "fullUrl" in entry:
            item = {"fullUrl": entry["fullUrl"], **item}
        entries.append(item)
    return {"resourceType": "Bundle", "id": f"{collection['id']}-load", "type": "transaction", "entry": entries}


# Fixture patients that are deliberately not valid FHIR (they test how the service reads broken
# data): a FHIR server would refuse them, so they are not loaded.
NOT_VALID_FHIR = frozenset({"ptsd-status-unreadable.json"})


def build() -> dict[str, str]:
    """File name -> JSON text of every transaction Bundle (valid fixture patients only)."""
    out = {}
    for path in sorted(PATIENTS.glob("*.json")):
        if path.name in NOT_VALID_FHIR:
            continue
        bundle = transaction(json.loads(path.read_text(encoding="utf-8")))
        out[path.name] = json.dumps(bundle, indent=1, ensure_ascii=False) + "\n"
    return out


def main() -> int:
    OUT.mkdir(exist_ok=True)
    files = build()
    for stale in set(p.name for p in OUT.glob("*.json")) - set(files):
        (OUT / stale).unlink()
    for name, text in files.items():
        (OUT / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} transaction Bundles to {OUT.relative_to(ROOT)}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
