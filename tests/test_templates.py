"""Issue templates: one per ROADMAP phase, plus "experiment", each with the same sections."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / ".github" / "ISSUE_TEMPLATE"
SECTIONS = ["## Goal", "## Checklist", "## Done when", "## Notes"]


def roadmap_phases() -> list[str]:
    """The phase column of ROADMAP.md's table: ``| P00 | ... |`` rows."""
    rows = (line for line in (ROOT / "ROADMAP.md").read_text().splitlines() if line.startswith("|"))
    cells = (line.strip("|").split("|")[0].strip() for line in rows)
    return [cell for cell in cells if re.fullmatch(r"P\d\d", cell)]


def read_template(path: Path) -> tuple[dict, str]:
    """(front matter, body) of a GitHub markdown issue template."""
    text = path.read_text()
    assert text.startswith("---\n"), f"{path.name}: no front matter"
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def templates() -> dict[str, tuple[dict, str]]:
    return {p.name: read_template(p) for p in sorted(TEMPLATES.glob("*.md"))}


def test_the_roadmap_table_parses():
    assert roadmap_phases()[:2] == ["P00", "P10"]
    assert len(roadmap_phases()) >= 6


@pytest.mark.parametrize("phase", roadmap_phases())
def test_every_roadmap_phase_has_a_template(phase):
    names = [front["name"] for front, _ in templates().values()]
    assert any(name.startswith(f"{phase} ") for name in names), f"no template named '{phase} ...'"


def test_there_is_an_experiment_template():
    assert "experiment.md" in templates()


@pytest.mark.parametrize("name", sorted(p.name for p in TEMPLATES.glob("*.md")))
def test_each_template_has_front_matter_and_the_sections_in_order(name):
    front, body = templates()[name]
    assert {"name", "about", "title", "labels"} <= set(front)
    positions = [body.find(f"\n{section}\n") for section in SECTIONS]
    assert all(p >= 0 for p in positions), f"{name}: missing one of {SECTIONS}"
    assert positions == sorted(positions), f"{name}: sections out of order"
    if name != "experiment.md":  # a phase's checklist and criteria are filled in, as tick boxes
        checklist = body.split("## Checklist")[1].split("## Done when")[0]
        done = body.split("## Done when")[1].split("## Notes")[0]
        assert checklist.count("- [ ] ") >= 2 and done.count("- [ ] ") >= 1


def test_config_yml_is_valid_yaml():
    config = TEMPLATES / "config.yml"
    if config.exists():
        assert isinstance(yaml.safe_load(config.read_text()), dict)
