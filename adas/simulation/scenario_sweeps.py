"""Scenario sweeps -> concrete closed-loop runs.

``expand_sweep`` reads an OpenSCENARIO ``ParameterValueDistribution`` back into concrete
parameter assignments (the cross product), and ``runs_from_library`` maps those onto highway-env
runs of the matching category (cut-in, stopped lead, merge, cruise).

Domain code: no dagster import. lxml is imported where used (the code location loads without it).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from pathlib import Path

from adas.simulation.config import SimulationConfig
from adas.simulation.episode import EpisodeSpec
from adas.simulation.scenario_schema import ScenarioValidationError, validate_file
from adas.simulation.scenario_templates import FROM_OSC_CATEGORY, ScenarioTemplate


def expand_sweep(sweep_file: str | Path) -> list[dict[str, str]]:
    """Concrete parameter assignments of a ``ParameterValueDistribution`` file (deterministic part):
    the cross product of every single-parameter set and every multi-parameter value set, in file order."""
    from lxml import etree

    validate_file(sweep_file)
    root = etree.parse(str(sweep_file)).getroot()
    det = root.find(".//ParameterValueDistribution/Deterministic")
    if det is None:
        raise ScenarioValidationError(f"{Path(sweep_file).name}: no deterministic ParameterValueDistribution")
    axes: list[list[dict[str, str]]] = []
    for single in det.findall("DeterministicSingleParameterDistribution"):
        name = single.get("parameterName")
        values = [e.get("value") for e in single.findall("DistributionSet/Element")]
        axes.append([{name: v} for v in values])
    for multi in det.findall("DeterministicMultiParameterDistribution"):
        sets = []
        for vs in multi.findall("ValueSetDistribution/ParameterValueSet"):
            sets.append({a.get("parameterRef"): a.get("value") for a in vs.findall("ParameterAssignment")})
        axes.append(sets)
    out = []
    for combo in itertools.product(*axes):
        merged: dict[str, str] = {}
        for part in combo:
            merged.update(part)
        out.append(merged)
    return out


# Where library scenarios lie among a shard's scenario files: ``library/<segment>/<file>``.
LIBRARY_DIR = "library"


def library_xosc(tpl: ScenarioTemplate) -> str:
    """The name a run of an extracted scenario plays it under (its folder holds its road)."""
    return f"{LIBRARY_DIR}/{tpl.segment_id}/{tpl.xosc}"


def _int_seed(*parts: str | int) -> int:
    h = hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()
    return int(h[:8], 16)


def runs_from_library(
    library: Sequence[tuple[ScenarioTemplate, list[dict[str, str]]]],
    cfg: SimulationConfig,
    max_runs: int | None = None,
) -> list[EpisodeSpec]:
    """Each executable scenario's concrete sweep points as OpenSCENARIO runs: the player plays the
    extracted file with the point's parameters, the run is filed under the scenario's category.

    Taken round-robin across scenarios (so a small budget still covers every scenario). The spec's
    fields (ego speed, gap time, actor class, weather) repeat the point's parameters for the tables
    and the gate's per-category checks.
    """
    per: list[list[EpisodeSpec]] = []
    for tpl, points in library:
        cc = cfg.categories.get(tpl.category)  # type: ignore[call-overload]
        if cc is None or not tpl.executable:
            continue
        runs = []
        for k, p in enumerate(points):
            actor = FROM_OSC_CATEGORY.get(p.get("ActorType", "car"), "car")
            runs.append(
                EpisodeSpec(
                    run_id=f"lib-{tpl.scenario_id}-{k:02d}",
                    category=tpl.category,  # type: ignore[arg-type]
                    scenario=cc.scenario,
                    density=cc.densities[0],
                    weather=p.get("Weather", "clear"),
                    lighting=p.get("Lighting", "day"),
                    severity=int(p.get("Severity", "1")),
                    seed=_int_seed(cfg.seed, tpl.scenario_id, k),
                    duration_s=cc.duration_s,
                    ego_speed_mps=float(p.get("EgoSpeed", cc.ego_speed_mps[0])),
                    gap_time_s=float(p["GapTime"]) if tpl.category == "cut_in" and "GapTime" in p else None,
                    actor_type=actor if tpl.category in ("cut_in", "stopped_lead") else None,
                    actor_speed_delta_mps=tpl.actor_speed_delta_mps if tpl.category == "cut_in" else None,
                    source=f"library:{tpl.scenario_id}",
                    xosc=library_xosc(tpl),
                    parameters=dict(p),
                )
            )
        per.append(runs)
    out: list[EpisodeSpec] = []
    for group in itertools.zip_longest(*per):
        out.extend(r for r in group if r is not None)
    return out if max_runs is None else out[:max_runs]
