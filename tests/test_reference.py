"""The repository is self-contained: the reference data the tests read is in ``reference/``, every
file there is accounted for (source, licence, hash), and no code reads a path outside the repository."""

from __future__ import annotations

import hashlib
import json
import re

from tests.reference import MANIFEST, REFERENCE, ROOT, checklist_requirements

DOC_FILES = {"manifest.json", "SOURCES.md"}


def _manifest() -> dict:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


def test_every_reference_file_is_listed_with_source_licence_and_hash():
    entries = {e["path"]: e for e in _manifest()["files"]}
    on_disk = {p.relative_to(REFERENCE).as_posix() for p in REFERENCE.rglob("*") if p.is_file()} - DOC_FILES
    assert sorted(on_disk) == sorted(entries)
    for rel, entry in entries.items():
        assert entry["upstream"] and entry["licence"] and entry["used_by"], rel
        assert hashlib.sha256((REFERENCE / rel).read_bytes()).hexdigest() == entry["sha256"], rel


def test_every_listed_user_of_a_reference_file_exists():
    for entry in _manifest()["files"]:
        for user in re.findall(r"(?:tests|scripts|cds_service)/[\w/.-]+\.py", entry["used_by"]):
            assert (ROOT / user).is_file(), (entry["path"], user)


def test_checklist_ids_are_unique_and_well_formed():
    ids = [r["id"] for r in checklist_requirements()]
    assert len(ids) == len(set(ids)) >= 90
    assert all(re.fullmatch(r"[A-Z]+-\d+|cds-[a-z]+-\d", i) for i in ids)
    assert {"DISC-01", "RESP-01", "FB-01"} <= set(ids)


# Patterns that would make code depend on the machine layout instead of the repository.
OUTSIDE = re.compile(r"""Path\(\s*["']/work|["']/work/|parent\s*/\s*["']shared["']|["']\.\./shared""")


def test_no_code_reads_a_path_outside_the_repository():
    offenders = []
    for folder in ("cds_service", "tests", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "test_reference.py":
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if OUTSIDE.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    for name in ("Makefile", ".ci/run", "pyproject.toml"):
        text = (ROOT / name).read_text(encoding="utf-8")
        offenders += [f"{name}: {m}" for m in re.findall(r".*/work/.*", text)]
    assert offenders == []
