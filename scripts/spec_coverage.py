#!/usr/bin/env python3
"""Which CDS Hooks 2.0 requirements (ids in reference/cds-hooks/checklist-ids.json) the tests cite.

Prints a Markdown table: requirement id -> test files whose @pytest.mark.spec names it, then the
checklist ids no test cites. Run: make spec-coverage
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reference import checklist_ids  # noqa: E402
from tests.test_spec_marks import cited_ids  # noqa: E402


def main() -> None:
    order = checklist_ids()
    cited = cited_ids()
    print("| requirement | tests |\n|---|---|")
    for rid in order:
        if rid in cited:
            print(f"| {rid} | {', '.join(sorted(cited[rid]))} |")
    missing = [rid for rid in order if rid not in cited]
    print(f"\n{len(order) - len(missing)} of {len(order)} checklist ids cited by a test.")
    print("Not cited (client-side rules, notes, or not yet tested): " + ", ".join(missing))


if __name__ == "__main__":
    main()
