#!/usr/bin/env python3
"""Which CDS Hooks 2.0 requirements (../shared/cds-hooks/CHECKLIST.md ids) the tests cite.

Prints a Markdown table: requirement id -> test files whose @pytest.mark.spec names it, then the
checklist ids no test cites. Run: make spec-coverage
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_spec_marks import CHECKLIST, cited_ids  # noqa: E402


def main() -> None:
    text = CHECKLIST.read_text()
    order = list(dict.fromkeys(re.findall(r"\*\*((?:[A-Z]+-\d+)|(?:cds-[a-z]+-\d))\*\*", text)))
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
