"""The documentation keeps up with the code: every setting in the README's table, every metric in
docs/OPERATIONS.md, every relative link pointing at a file that exists."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from cds_service.config import PROCESS_VARIABLES, PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _table_variables() -> set[str]:
    section = README[README.index("| variable | default | meaning |"):]
    section = section[:section.index("\n\n")]
    return set(re.findall(r"^\| `(PTSD_CDS_[A-Z0-9_]+)`", section, flags=re.M))


def test_every_setting_is_in_the_readme_configuration_table():
    documented = _table_variables()
    expected = {PREFIX + f.name.upper() for f in fields(Settings)} | set(PROCESS_VARIABLES)
    assert sorted(expected - documented) == []
    assert sorted(documented - expected) == []  # no row for a variable nothing reads


def test_every_metric_is_documented():
    from cds_service import metrics

    text = (ROOT / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")
    names = set(re.findall(r'"(ptsd_cds_[a-z_]+)"', (ROOT / "cds_service" / "metrics.py").read_text()))
    assert len(names) == 6
    for name in names:
        counter = name if "duration" in name else name + "_total"
        assert f"`{counter}`" in text, counter
    assert metrics.REQUEST_SECONDS._labelnames == ("service", "endpoint", "status")


def test_relative_links_in_the_docs_exist():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            assert (doc.parent / target).exists(), (doc.name, target)


def test_versions_agree():
    import tomllib

    from cds_service import __version__

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["version"] == __version__ == "0.4.0"
    assert project["license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")[:200]
