"""Where the read-only reference material (``shared/``: clinical facts, codes, CDS Hooks examples,
Synthea samples) is: ``$PTSD_CDS_SHARED``, else beside the checkout (``../shared``, as CI lays
it out), else the workplace copy (``/work/shared``)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_CANDIDATES = [os.environ.get("PTSD_CDS_SHARED"), ROOT.parent / "shared", Path("/work/shared")]
SHARED = next((Path(c) for c in _CANDIDATES if c and (Path(c) / "README.md").is_file()), ROOT.parent / "shared")
