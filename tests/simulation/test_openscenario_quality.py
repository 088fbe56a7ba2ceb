"""Every shipped (``config/scenarios/``) and every extracted (``scenario_library``) ``.xosc`` passes the
ASAM Quality Checker's OpenSCENARIO XML checks (``asam-qc-openscenarioxml``), not only the XSD: entity
and storyboard references resolve, names are unique per level, expressions use allowed operators.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from adas.simulation.config import SimulationConfig
from adas.simulation.scenario_schema import ScenarioValidationError, check_quality, quality_issues
from adas.simulation.scenarios import build_library
from tests.simulation.test_scenarios import _segment

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "scenarios"


@pytest.mark.parametrize("xosc", sorted(SHIPPED.glob("*.xosc")), ids=lambda p: p.name)
def test_shipped_scenario_passes_the_asam_quality_checker(xosc: Path) -> None:
    assert quality_issues(xosc) == []


def test_every_extracted_scenario_and_sweep_passes_the_asam_quality_checker(
    tmp_path: Path, sim_cfg: SimulationConfig
) -> None:
    build_library([_segment("cut_in"), _segment("stopped")], sim_cfg, tmp_path)
    written = sorted(tmp_path.rglob("*.xosc"))
    assert len(written) == 4  # a scenario and its sweep per segment
    for xosc in written:
        assert quality_issues(xosc) == [], xosc.name


def test_a_dangling_entity_reference_is_named_by_rule_and_xpath(tmp_path: Path) -> None:
    broken = tmp_path / "cut_in.xosc"
    text = (SHIPPED / "cut_in.xosc").read_text()
    actor_in_a_trigger = '<EntityRef entityRef="Actor"/>'
    assert actor_in_a_trigger in text
    broken.write_text(text.replace(actor_in_a_trigger, '<EntityRef entityRef="Ghost"/>', 1))
    (tmp_path / "road.xodr").write_bytes((SHIPPED / "road.xodr").read_bytes())
    issues = quality_issues(broken)
    assert issues, "the checker must find the reference to an undeclared entity"
    assert any(
        i.rule_uid.endswith("reference_control.resolvable_entity_references")
        and any(x.startswith("/OpenSCENARIO/Storyboard") for x in i.xpaths)
        for i in issues
    ), issues
    with pytest.raises(ScenarioValidationError, match="resolvable_entity_references"):
        check_quality(broken)
