"""Every @pytest.mark.spec names requirement ids that exist in the conformance checklist
(ids copied as data into reference/cds-hooks/checklist-ids.json), as Inferno's tests cite the requirement they check."""

from __future__ import annotations

import re
from pathlib import Path

from tests.reference import checklist_ids

TESTS = Path(__file__).resolve().parent
MARK = re.compile(r'mark\.spec\("([^"]+)"\)')


def cited_ids() -> dict[str, set[str]]:
    ids: dict[str, set[str]] = {}
    for path in sorted(TESTS.glob("test_*.py")):
        for group in MARK.findall(path.read_text()):
            for rid in group.split():
                ids.setdefault(rid, set()).add(path.name)
    return ids


def test_spec_marks_cite_checklist_requirements():
    known = set(checklist_ids())
    assert len(known) >= 90
    cited = cited_ids()
    assert len(cited) >= 40
    assert sorted(set(cited) - known) == []
