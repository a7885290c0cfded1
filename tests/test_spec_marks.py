"""Every @pytest.mark.spec names requirement ids that exist in the conformance checklist
(../shared/cds-hooks/CHECKLIST.md), as Inferno's tests cite the requirement they check."""

from __future__ import annotations

import re
from pathlib import Path

from tests.reference import SHARED

TESTS = Path(__file__).resolve().parent
CHECKLIST = SHARED / "cds-hooks" / "CHECKLIST.md"
MARK = re.compile(r'mark\.spec\("([^"]+)"\)')


def cited_ids() -> dict[str, set[str]]:
    ids: dict[str, set[str]] = {}
    for path in sorted(TESTS.glob("test_*.py")):
        for group in MARK.findall(path.read_text()):
            for rid in group.split():
                ids.setdefault(rid, set()).add(path.name)
    return ids


def test_spec_marks_cite_checklist_requirements():
    known = set(re.findall(r"\*\*((?:[A-Z]+-\d+)|(?:cds-[a-z]+-\d))\*\*", CHECKLIST.read_text()))
    known |= set(re.findall(r"`(cds-[a-z]+-\d)`", CHECKLIST.read_text()))
    cited = cited_ids()
    assert len(cited) >= 40
    assert sorted(set(cited) - known) == []
