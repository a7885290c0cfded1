"""Where the reference data the tests read is: ``reference/`` inside the repository.

The files there are copies (same relative paths) of the project's shared reference material —
CDS Hooks examples, the sandbox's public JWKS, value sets and code lists, Synthea samples — plus
the CDS Hooks checklist requirement ids as data (``cds-hooks/checklist-ids.json``). Each file's
upstream source, licence and SHA-256 are in ``reference/manifest.json``; ``make check-reference
SHARED=../shared`` compares the copies with the shared folder. Tests never read a path outside the
repository, so a clone anywhere passes ``make test``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "reference"
# Same layout as the shared folder, so ``SHARED / "cds-hooks" / "examples" / ...`` keeps working.
SHARED = REFERENCE
MANIFEST = REFERENCE / "manifest.json"
CHECKLIST_IDS = REFERENCE / "cds-hooks" / "checklist-ids.json"


@cache
def checklist_requirements() -> tuple[dict, ...]:
    """The CDS Hooks checklist requirements in checklist order: ``{"id", "level", "who", "section"}``."""
    return tuple(json.loads(CHECKLIST_IDS.read_text(encoding="utf-8"))["requirements"])


def checklist_ids() -> list[str]:
    return [r["id"] for r in checklist_requirements()]
