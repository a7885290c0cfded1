#!/usr/bin/env python3
"""Compare the in-repository copies of reference data (``reference/``) with the shared reference
folder they were copied from, and (with ``--update``) refresh them.

Maintainer command, never run by the tests or the service::

    make check-reference SHARED=../shared          # exit 1 when a copy differs or is missing
    python scripts/check_reference.py --shared ../shared --update

``reference/manifest.json`` lists every copied file with its upstream source, licence and SHA-256.
Most files are byte-identical copies (same relative path as under the shared folder). One file is
derived: ``cds-hooks/checklist-ids.json`` holds only the requirement ids (with level, side and
section) of ``cds-hooks/CHECKLIST.md`` - data, not its prose - and is compared by re-extracting.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "reference"
MANIFEST = REFERENCE / "manifest.json"
CHECKLIST_IDS = "cds-hooks/checklist-ids.json"
CHECKLIST_SOURCE = "cds-hooks/CHECKLIST.md"

_ID = r"(?:[A-Z]+-\d+|cds-[a-z]+-\d)"
_LINE = re.compile(rf"^\s*-\s+\*\*({_ID})\*\*\s*((?:`[A-Za-z ]+`/?)*)")
_WHO = re.compile(r"\[(Svc|Cli|Both)\]")
_ANY_BOLD = re.compile(rf"\*\*({_ID})\*\*")
_ANY_CODE = re.compile(r"`(cds-[a-z]+-\d)`")


def extract_checklist_ids(text: str) -> list[dict]:
    """Every requirement id of the checklist in order of first appearance, with the level keyword,
    the side it binds and the section heading where the id is defined (None when only cited)."""
    rows: dict[str, dict] = {}
    section = None
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        m = _LINE.match(line)
        if m and m.group(1) not in rows:
            level = m.group(2).replace("`", "") or None
            who = _WHO.search(line)
            rows[m.group(1)] = {"id": m.group(1), "level": level, "who": who and who.group(1), "section": section}
        for rid in _ANY_BOLD.findall(line) + _ANY_CODE.findall(line):
            rows.setdefault(rid, {"id": rid, "level": None, "who": None, "section": section})
    return list(rows.values())


def checklist_document(text: str) -> dict:
    return {"source": "CHECKLIST.md of the project's CDS Hooks 2.0 reference (ids only); "
                      "regenerate with scripts/check_reference.py --update",
            "requirements": extract_checklist_ids(text)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dump(data: dict) -> str:
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def compare(shared: Path, update: bool = False) -> list[str]:
    """Return one line per difference (empty: the copies match the shared folder)."""
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    problems = []
    for entry in manifest["files"]:
        rel = entry["path"]
        mine = REFERENCE / rel
        if rel == CHECKLIST_IDS:
            upstream_text = (shared / CHECKLIST_SOURCE).read_text(encoding="utf-8")
            expected = _dump(checklist_document(upstream_text))
            if not mine.is_file() or mine.read_text(encoding="utf-8") != expected:
                problems.append(f"{rel}: differs from the ids in {shared / CHECKLIST_SOURCE}")
                if update:
                    mine.write_text(expected, encoding="utf-8")
        else:
            theirs = shared / rel
            if not theirs.is_file():
                problems.append(f"{rel}: not in {shared}")
            elif not mine.is_file() or mine.read_bytes() != theirs.read_bytes():
                problems.append(f"{rel}: differs from {theirs}")
                if update:
                    mine.parent.mkdir(parents=True, exist_ok=True)
                    mine.write_bytes(theirs.read_bytes())
        if update and mine.is_file():
            entry["sha256"] = sha256(mine)
    if update:
        MANIFEST.write_text(_dump(manifest), encoding="utf-8")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", required=True, type=Path, help="the shared reference folder (e.g. ../shared)")
    parser.add_argument("--update", action="store_true", help="copy the shared files over the in-repo copies")
    args = parser.parse_args(argv)
    if not (args.shared / "README.md").is_file():
        print(f"check-reference: {args.shared} is not the shared reference folder (no README.md)", file=sys.stderr)
        return 2
    problems = compare(args.shared, update=args.update)
    for line in problems:
        print(("updated " if args.update else "") + line)
    if not problems:
        print(f"reference/: all copies match {args.shared}")
    return 1 if problems and not args.update else 0


if __name__ == "__main__":
    sys.exit(main())
