"""Use-case of the ``scenario_library`` asset: flagged replay segments -> validated scenarios and runs.

Each flagged segment becomes an OpenSCENARIO scenario, its OpenDRIVE road and its sweep
(``scenarios.build_library``), every file validated; the sweeps' concrete points become
closed-loop runs (``scenario_sweeps``). The files and an index (``scenario_library.json``:
templates, sweep points, runs) are stored under ``<pack>/scenarios/``.

Domain code: no dagster import.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adas.catalog import TargetCatalog
from adas.cell import Cell
from adas.intake.stored import as_stored_file, read_json, stored_file
from adas.simulation.config import SimulationConfig
from adas.simulation.episode import EpisodeSpec
from adas.simulation.openscenario import load_scenario
from adas.simulation.refs import ReplayMetricsRef, ScenarioLibraryRef
from adas.simulation.replay_report import FlaggedSegment
from adas.simulation.scenario_schema import ScenarioValidationError
from adas.simulation.scenario_sweeps import expand_sweep, runs_from_library
from adas.simulation.scenario_templates import ScenarioTemplate
from adas.simulation.scenarios import build_library
from adas.simulation.steps import json_bytes, require_simulatable
from adas.storage import ArtifactStore


def playable(tpl: ScenarioTemplate, points: list[dict[str, str]], folder: Path) -> ScenarioTemplate:
    """The template marked not executable, with the player's reason, when any sweep point is not."""
    for point in points:
        scenario = load_scenario(folder / tpl.xosc, point)
        if not scenario.executable:
            return tpl.model_copy(update={"executable": False, "reason": scenario.reason})
    return tpl


@dataclass(frozen=True)
class ScenarioLibraryResult:
    ref: ScenarioLibraryRef
    templates: list[ScenarioTemplate]
    runs: list[EpisodeSpec]
    library_uri: str


def build_scenario_library(
    store: ArtifactStore,
    *,
    cell: Cell,
    catalog: TargetCatalog,
    cfg: SimulationConfig,
    replay_metrics: ReplayMetricsRef,
    log: Callable[[str], None] = lambda _: None,
) -> ScenarioLibraryResult:
    """Write, validate and store the scenarios of the flagged segments; map their sweeps to runs.

    Raises ``ScenarioValidationError`` ("generated scenario is invalid: ...") when a file does not
    validate.
    """
    require_simulatable(cell, catalog)
    flagged = [
        FlaggedSegment.model_validate(x)
        for x in read_json(store, replay_metrics.files["flagged_segments.json"])
    ]
    prefix = f"{replay_metrics.prefix}/scenarios"
    with tempfile.TemporaryDirectory(prefix="scenarios-") as tmp:
        try:
            templates = build_library(flagged, cfg, Path(tmp))
            pairs = [(t, expand_sweep(Path(tmp) / t.segment_id / t.sweep_xosc)) for t in templates]
        except ScenarioValidationError as exc:
            raise ScenarioValidationError(f"generated scenario is invalid: {exc}") from exc
        pairs = [(playable(t, points, Path(tmp) / t.segment_id), points) for t, points in pairs]
        templates = [t for t, _ in pairs]
        stored = store.put_tree(prefix, Path(tmp)) if templates else []
    runs = runs_from_library(pairs, cfg)
    index = {
        "scenarios": [t.model_dump(mode="json") for t in templates],
        "sweep_points": {t.scenario_id: pts for t, pts in pairs},
        "runs": [r.model_dump(mode="json") for r in runs],
    }
    index_file = stored_file(store, f"{prefix}/scenario_library.json", data=json_bytes(index))
    files = {s.key.removeprefix(prefix + "/"): as_stored_file(s) for s in stored}
    ref = ScenarioLibraryRef(
        device=cell.device,
        precision=cell.precision,
        version=replay_metrics.version,
        prefix=prefix,
        index=index_file,
        scenarios=[t.scenario_id for t in templates],
        files=files,
        runs=len(runs),
    )
    for t in templates:
        if not t.executable:
            log(f"{t.scenario_id} is not executable (listed, not run): {t.reason}")
    log(f"{len(templates)} scenarios, {len(runs)} concrete runs, {len(files)} files validated")
    return ScenarioLibraryResult(ref=ref, templates=templates, runs=runs, library_uri=store.uri(prefix))
