"""The documentation cannot drift from the code: the search-space reference lists exactly the fields the
validator knows, and nothing in the repository's markdown points outside it."""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.space import collapse
from orchestrator.space.schema import Param, Resources, SamplerSpec, SchedulerSpec, SpaceFile

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "search-space.md"
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|", re.M)  # a table row whose first cell is a field in backticks


def validator_fields() -> set[str]:
    """Every field of a space file as a dotted path, as the validator knows it."""
    fields = set(SpaceFile.model_fields)
    for section, model in (("resources", Resources), ("sampler", SamplerSpec), ("scheduler", SchedulerSpec)):
        fields |= {f"{section}.{name}" for name in model.model_fields}
    fields |= {f"params.<name>.{name}" for name in Param.model_fields}
    fields |= {f"stop_when.{collapse.FROM_EPOCH}", "stop_when.<metric>"}
    return fields


def test_the_space_reference_documents_every_field_the_validator_knows() -> None:
    documented = set(ROW.findall(REFERENCE.read_text()))
    known = validator_fields()
    assert not known - documented, f"fields missing from {REFERENCE.name}: {sorted(known - documented)}"
    assert not documented - known, f"{REFERENCE.name} documents fields the validator does not know: " \
                                   f"{sorted(documented - known)}"


def test_the_reference_check_reads_the_tables() -> None:
    assert ROW.findall("| `scheduler.max_t` | int | epochs | ... |\n| plain | x |\n") == ["scheduler.max_t"]


def test_no_markdown_in_the_repository_points_outside_it() -> None:
    outside = []
    for path in [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("*/README.md")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "../shared" in line or re.search(r"\]\((\.\./)+", line):
                outside.append(f"{path.relative_to(ROOT)}:{number}")
    assert not outside, f"links outside the repository: {outside}"


def test_every_doc_the_readme_lists_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    linked = set(re.findall(r"\]\((docs/[^)#]+)", readme))
    assert linked, "the README links the docs"
    missing = sorted(link for link in linked if not (ROOT / link).is_file())
    assert not missing, f"the README links docs that do not exist: {missing}"
    assert {f"docs/{p.name}" for p in ROOT.glob("docs/*.md")} <= linked, "a doc the README does not list"


def test_the_readme_stays_short() -> None:
    """What gansweep is, the first sweep and links: the rest lives in docs/."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
