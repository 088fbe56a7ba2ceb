"""Simulation assets (specification step 17): replay, scenario library, closed loop, sim gate.

Thin Dagster layer over ``adas.simulation``: each asset reads its inputs, calls one use-case of
the core (``replay_metrics``, ``scenario_library``, ``closed_loop_simulation``, ``sim_verdict``),
which stores its outputs beside the model pack
(``models/<task>/<version>/<device>/<precision>/{replay,scenarios,simulation}/``), and hands the
typed result to a presenter (``presenters``) for the metadata a person reads in the UI.
"""

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from pydantic import Field

from adas.catalog import UnsupportedTargetError
from adas.cell import Cell
from adas.config_errors import ConfigError
from adas.datasets.config import load_datagen_config
from adas.intake.refs import ReplayBundleRef
from adas.packaging.refs import EngineRef
from adas.simulation.closed_loop_simulation import run_closed_loop_simulation
from adas.simulation.config import SimulationConfig, load_simulation_config
from adas.simulation.refs import ReplayMetricsRef, ScenarioLibraryRef, SimulationRef, SimVerdictRef
from adas.simulation.replay_metrics import compute_replay_metrics
from adas.simulation.scenario_library import build_scenario_library
from adas.simulation.scenario_schema import ScenarioValidationError
from adas.simulation.sim_verdict import decide_sim_verdict
from adas.simulation.steps import EnginePair, Section, SimulationInputError, code_version
from adas.simulation.sweep import SweepError
from adas_assets.automation import eager_on_supported_targets
from adas_assets.owners import SIMULATION_OWNERS
from adas_assets.partitions import TARGET_PARTITIONS, per_target_asset_check, per_target_description
from adas_assets.simulation.presenters import (
    closed_loop_output,
    replay_metrics_output,
    scenario_library_output,
    sim_gate_check_output,
    sim_verdict_output,
)
from resources.artifact_store import ArtifactStoreParam
from resources.simulation_shards import ShardSetupError, SimulationShardRunner
from resources.targets import TARGET_CATALOG

SIMULATION = "simulation"
# What the use-cases raise for inputs or settings they cannot run with: the step fails naming it.
_FAILURES = (
    ConfigError,
    UnsupportedTargetError,
    SimulationInputError,
    ScenarioValidationError,
    SweepError,
    ShardSetupError,
)


@functools.cache
def _config_at_import() -> SimulationConfig | None:
    try:
        return load_simulation_config()
    except ConfigError:
        return None


def _digest(section: Section) -> str:
    """Code version of an asset: the config section it depends on (an invalid file fails at run time)."""
    return code_version(_config_at_import(), section)


def _sim_asset(
    section: Section, summary: str, **kwargs: Any
) -> Callable[[Callable[..., dg.MaterializeResult]], dg.AssetsDefinition]:
    """``@dg.asset`` of a simulation asset per target cell, eager on the catalog's supported cells,
    whose code version is the digest of its section of `config/simulation.yaml`."""
    return dg.asset(
        group_name=SIMULATION,
        owners=SIMULATION_OWNERS,
        kinds={"python"},
        partitions_def=TARGET_PARTITIONS,
        automation_condition=eager_on_supported_targets(),
        code_version=_digest(section),
        description=per_target_description(summary),
        **kwargs,
    )


@contextmanager
def _failing_step() -> Iterator[None]:
    """A domain error the step cannot recover from becomes a ``dg.Failure`` with its message."""
    try:
        yield
    except _FAILURES as exc:
        raise dg.Failure(description=str(exc)) from exc


# --------------------------------------------------------------------------- open-loop replay


@_sim_asset(
    "replay",
    "Open-loop replay of the recorded drive sequences through the candidate engine and the production "
    "engine: per-frame and per-segment detection metrics against ground truth, time to first "
    "detection of every object, track continuity of a simple IoU tracker (fragmentations, identity "
    "switches), ghost tracks; segments where candidate and production diverge are flagged for review.",
)
def replay_metrics(
    context: dg.AssetExecutionContext,
    engine: EngineRef,
    production_engine: EngineRef,
    replay_log_bundles: ReplayBundleRef,
    artifact_store: ArtifactStoreParam,
) -> dg.MaterializeResult:
    with _failing_step():
        result = compute_replay_metrics(
            artifact_store,
            pair=EnginePair(Cell.parse(context.partition_key), engine, production_engine),
            catalog=TARGET_CATALOG,
            cfg=load_simulation_config(),
            datagen=load_datagen_config(),
            bundle=replay_log_bundles,
            log=context.log.info,
        )
    return replay_metrics_output(result)


# --------------------------------------------------------------------------- scenario library


@_sim_asset(
    "scenarios",
    "Each flagged replay interval as an OpenSCENARIO 1.3 scenario (`.xosc`, actors following their "
    "recorded trajectories, environment) with its OpenDRIVE road (`.xodr`) and a parameter sweep "
    "(`ParameterValueDistribution` over ego speed, gap time, actor type, weather). Every file is "
    "validated against the official schema; the sweep's concrete points become closed-loop runs.",
)
def scenario_library(
    context: dg.AssetExecutionContext, replay_metrics: ReplayMetricsRef, artifact_store: ArtifactStoreParam
) -> dg.MaterializeResult:
    with _failing_step():
        result = build_scenario_library(
            artifact_store,
            cell=Cell.parse(context.partition_key),
            catalog=TARGET_CATALOG,
            cfg=load_simulation_config(),
            replay_metrics=replay_metrics,
            log=context.log.info,
        )
    return scenario_library_output(result)


# --------------------------------------------------------------------------- closed loop


class ClosedLoopConfig(dg.Config):
    sweep: str | None = Field(
        default=None,
        description=(
            "A sweep of config/simulation.yaml (demo, benchmark, smoke); unset: $ADAS_SIM_SWEEP, else demo. "
            "The variable lets runs launched by automation (no run config) use a smaller sweep."
        ),
    )
    processes: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Local simulator processes (local shard runner; in production shards run as pods)",
    )
    shards: int = Field(default=0, ge=0, le=4096, description="Shards (0: the sweep's setting)")


@_sim_asset(
    "closed_loop",
    "Closed-loop simulation on highway-env with the engine's detections driving a proxy controller "
    "(IDM/ACC longitudinal control, lane keeping, safe lane changes): a sweep over categories (cut-in, "
    "stopped lead, cruise, merge), seeds, density, weather and the scenario library's runs, for the "
    "candidate and production on identical seeds. Shards run in local processes (in production: one "
    "Kubernetes pod each), checkpoint to the store and resume after a crash. Outputs: "
    "`sim_summary.parquet`, per-category JSON, a violation heat map and failure clips.",
    pool="cpu-heavy",
    # Locally the shards run in this step's processes (the cores below). In production the
    # `sim_shards` resource fans them out as one Kubernetes Job per shard (dagster-k8s), each running
    # `python -m adas.simulation.orchestration --spec-key ... --engine-key ... --engine-sha256 ...`
    # on the partition's device nodes; this pod then only plans, waits and collects the checkpoints.
    op_tags={
        "dagster-k8s/config": {
            "container_config": {
                "resources": {
                    "requests": {"cpu": "2", "memory": "4Gi"},
                    "limits": {"cpu": "2", "memory": "8Gi"},
                }
            }
        }
    },
)
def closed_loop_simulation(
    context: dg.AssetExecutionContext,
    config: ClosedLoopConfig,
    engine: EngineRef,
    production_engine: EngineRef,
    scenario_library: ScenarioLibraryRef,
    artifact_store: ArtifactStoreParam,
    sim_shards: SimulationShardRunner,
) -> dg.MaterializeResult:
    cell = Cell.parse(context.partition_key)
    with _failing_step():
        result = run_closed_loop_simulation(
            artifact_store,
            pair=EnginePair(cell, engine, production_engine),
            catalog=TARGET_CATALOG,
            cfg=load_simulation_config(),
            datagen=load_datagen_config(),
            library=scenario_library,
            executor=functools.partial(sim_shards.executor, context, cell.device, processes=config.processes),
            # Local processes read a verified local copy; shard pods fetch and verify it themselves.
            local_engine=sim_shards.mode == "local",
            sweep=config.sweep,
            shards=config.shards,
            environ=os.environ,
            log=context.log.info,
        )
    return closed_loop_output(result)


# --------------------------------------------------------------------------- sim gate


@_sim_asset(
    "gate",
    "The Sim Gate from `config/simulation.yaml`: absolute limits per category (zero collisions in "
    "clear-weather cut-in and stopped-lead scenes, nothing off the road), and comparisons with "
    "production paired on the same seeds, each with its interval: collision and failure rates "
    "(McNemar, Newcombe), near misses, minimum TTC, driving score and comfort (bootstrap). Green, "
    "amber (insufficient evidence, with the runs that would decide) or red, with rationale; the "
    "blocking `sim_gate_is_green` check stops promotion on red and warns on amber.",
)
def sim_verdict(
    context: dg.AssetExecutionContext,
    closed_loop_simulation: SimulationRef,
    artifact_store: ArtifactStoreParam,
) -> dg.MaterializeResult:
    with _failing_step():
        result = decide_sim_verdict(
            artifact_store,
            cell=Cell.parse(context.partition_key),
            catalog=TARGET_CATALOG,
            cfg=load_simulation_config(),
            simulation=closed_loop_simulation,
        )
    ref = result.ref
    if not ref.green:
        context.log.warning(
            f"sim gate {ref.verdict.upper()} for {ref.version} on {ref.device}/{ref.precision}"
        )
    return sim_verdict_output(result)


@per_target_asset_check(
    sim_verdict,
    name="sim_gate_is_green",
    blocking=True,
    # Requested with its asset (eager: the asset "will be requested" on the same tick), so the
    # check runs in the asset's run and blocks what is downstream of it there.
    automation_condition=dg.AutomationCondition.eager(),
    description="The sim gate is green. Blocking: promotion downstream of a red sim verdict does not "
    "run; an amber one (insufficient evidence) warns.",
)
def sim_gate_is_green(sim_verdict: SimVerdictRef) -> dg.AssetCheckResult:
    return sim_gate_check_output(sim_verdict)


simulation_assets = [replay_metrics, scenario_library, closed_loop_simulation, sim_verdict]
simulation_checks = [sim_gate_is_green]
