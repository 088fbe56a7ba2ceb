"""Simulation assets (specification step 17): replay, scenario library, closed loop, sim gate.

Thin Dagster layer over ``adas.simulation``: each asset reads its inputs, calls the
domain functions and stores what they return beside the model pack
(``models/<task>/<version>/<device>/<precision>/{replay,scenarios,simulation}/``), with
metadata a person can read in the UI.
"""

import base64
import functools
import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from adas.catalog import UnsupportedTargetError, require_supported
from adas.cell import Cell
from adas.config_errors import ConfigError
from adas.intake.refs import ReplayBundleRef, StoredFile
from adas.packaging.refs import EngineRef
from adas.simulation.config import SimulationConfig, load_simulation_config
from adas.simulation.refs import ReplayMetricsRef, ScenarioLibraryRef, SimulationRef, SimVerdictRef
from adas.storage import ArtifactStore
from adas_assets.automation import eager_on_supported_targets
from adas_assets.metadata import table as _table
from adas_assets.partitions import TARGET_PARTITIONS, per_target_description
from resources.artifact_store import ArtifactStoreParam
from resources.simulation_shards import ShardSetupError, SimulationShardRunner
from resources.targets import TARGET_CATALOG

SIMULATION = "simulation"


@functools.cache
def _config_at_import() -> SimulationConfig | None:
    try:
        return load_simulation_config()
    except ConfigError:
        return None


def _digest(section: str) -> str:
    """Code version of an asset: the config section it depends on (an invalid file fails at run time)."""
    from adas.simulation.orchestration import SIM_CODE_VERSION

    cfg = _config_at_import()
    if cfg is None:
        return "invalid-config"
    parts: dict[str, Any] = {
        "replay": cfg.replay.model_dump(mode="json"),
        "scenarios": {k: v.model_dump(mode="json") for k, v in cfg.categories.items()},
        "closed_loop": cfg.model_dump(mode="json", exclude={"replay", "gate"}),
        "gate": cfg.gate.model_dump(mode="json"),
    }
    blob = json.dumps(parts[section], sort_keys=True, separators=(",", ":"))
    return f"{section}-v{SIM_CODE_VERSION}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _put(store: ArtifactStore, key: str, data: bytes) -> StoredFile:
    s = store.put_bytes(key, data)
    return StoredFile(key=s.key, uri=s.uri, sha256=s.sha256, size=s.size)


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def _cell(context: dg.AssetExecutionContext, *engines: EngineRef) -> tuple[str, str]:
    cell = Cell.parse(context.partition_key)
    device, precision = cell.device, cell.precision
    try:
        require_supported(TARGET_CATALOG, device, precision)
    except UnsupportedTargetError as exc:
        raise dg.Failure(description=str(exc)) from exc
    for e in engines:
        if e.runtime != "onnxruntime":
            raise dg.Failure(
                description=(
                    f"{device}/{precision}: the {e.runtime} engine cannot run in this CPU simulator; "
                    "closed-loop perception needs an ONNX Runtime engine here (TensorRT cells need a GPU "
                    "simulation worker with the tensorrt runtime)"
                )
            )
    return device, precision


def _config() -> SimulationConfig:
    try:
        return load_simulation_config()
    except ConfigError as exc:
        raise dg.Failure(description=str(exc)) from exc


# --------------------------------------------------------------------------- open-loop replay


@dg.asset(
    group_name=SIMULATION,
    kinds={"python"},
    partitions_def=TARGET_PARTITIONS,
    automation_condition=eager_on_supported_targets(),
    code_version=_digest("replay"),
    description=per_target_description(
        "Open-loop replay of the recorded drive sequences through the candidate engine and the production "
        "engine: per-frame and per-segment detection metrics against ground truth, time to first "
        "detection of every object, track continuity of a simple IoU tracker (fragmentations, identity "
        "switches), ghost tracks; segments where candidate and production diverge are flagged for review."
    ),
)
def replay_metrics(
    context: dg.AssetExecutionContext,
    engine: EngineRef,
    production_engine: EngineRef,
    replay_log_bundles: ReplayBundleRef,
    artifact_store: ArtifactStoreParam,
) -> dg.MaterializeResult:
    import numpy as np
    import polars as pl
    from PIL import Image

    from adas.datasets.generator import load_datagen_config
    from adas.simulation.perception import EnginePerception, FrameContext
    from adas.simulation.replay import detect_frames, replay

    device, precision = _cell(context, engine, production_engine)
    cfg = _config()
    datagen = load_datagen_config()
    manifest = replay_log_bundles.manifest
    coco = json.loads(artifact_store.get_bytes(manifest.key, expected_sha256=manifest.sha256))
    base = manifest.key.rsplit("/", 1)[0]
    frames: dict[int, Any] = {}

    def load(im: dict) -> Any:
        if im["id"] not in frames:
            path = artifact_store.fetch(f"{base}/{im['file_name']}")
            frames[im["id"]] = np.asarray(Image.open(path).convert("RGB"))
        return frames[im["id"]]

    ctx = FrameContext(seed=0, step=0, time_s=0.0, weather="", lighting="", severity=0)
    dets = {}
    for label, ref in (("candidate", engine), ("production", production_engine)):
        path = artifact_store.fetch(ref.engine.key, expected_sha256=ref.engine.sha256)
        perception = EnginePerception(path, ref.contract, label=label, threads=2)
        dets[label] = detect_frames(coco, load, lambda f, p=perception: p.detect(f, ctx))
        context.log.info(f"replayed {len(dets[label])} frames through {label} {ref.contract.version}")
    px_per_m = datagen.frame.scaling_px_per_m * datagen.frame.width / datagen.frame.render_width
    report = replay(coco, dets["candidate"], dets["production"], cfg.replay, px_per_m)

    prefix = f"{engine.prefix}/replay"
    seg_rows = [
        {"model": m.model, **s.model_dump()}
        for m in (report.candidate, report.production)
        for s in m.segments
    ]
    buf = io.BytesIO()
    pl.DataFrame(seg_rows, infer_schema_length=None).write_parquet(buf)
    files = {
        "replay_report.json": _put(
            artifact_store, f"{prefix}/replay_report.json", report.model_dump_json(indent=1).encode()
        ),
        "replay_segments.parquet": _put(artifact_store, f"{prefix}/replay_segments.parquet", buf.getvalue()),
        "flagged_segments.json": _put(
            artifact_store,
            f"{prefix}/flagged_segments.json",
            _json([f.model_dump(mode="json") for f in report.flagged]),
        ),
    }
    cand_t, prod_t = report.candidate.totals(), report.production.totals()
    ref = ReplayMetricsRef(
        device=device,
        precision=precision,
        version=engine.contract.version,
        production_version=production_engine.contract.version,
        prefix=engine.prefix,
        files=files,
        candidate=cand_t,
        production=prod_t,
        flagged=len(report.flagged),
    )
    keys = [
        "recall",
        "precision",
        "fp_per_frame",
        "mean_ttfd_s",
        "never_detected",
        "fragmentations",
        "id_switches",
        "ghost_tracks",
    ]
    totals = [{"metric": k, "candidate": _num(cand_t[k]), "production": _num(prod_t[k])} for k in keys]
    ttfd_rows = []
    pc, pp = report.candidate.per_class_ttfd(), report.production.per_class_ttfd()
    for cls in sorted(set(pc) | set(pp)):
        c, p = pc.get(cls, {}), pp.get(cls, {})
        ttfd_rows.append(
            {
                "class": cls,
                "objects": c.get("objects", 0),
                "never_detected_cand": c.get("never_detected", 0),
                "never_detected_prod": p.get("never_detected", 0),
                "mean_ttfd_s_cand": _num(c.get("mean_ttfd_s")),
                "mean_ttfd_s_prod": _num(p.get("mean_ttfd_s")),
            }
        )
    seq_rows = report.sequence_table()
    return dg.MaterializeResult(
        value=ref,
        metadata={
            "summary": dg.MetadataValue.md(
                f"### Replay of {len(report.candidate.sequences)} sequences ({cand_t['frames']} frames): "
                f"candidate {engine.contract.version} vs production {production_engine.contract.version}\n\n"
                f"{ref.flagged} segment(s) flagged for review (divergence from production, or the candidate's worst)."
            ),
            "totals": _table(totals, {"metric": "string", "candidate": "float", "production": "float"}),
            "sequences": _table(
                seq_rows,
                {
                    k: ("string" if k in ("sequence", "condition") else "float")
                    for k in (seq_rows[0] if seq_rows else {})
                },
            ),
            "time_to_first_detection": _table(
                ttfd_rows,
                {
                    "class": "string",
                    "objects": "int",
                    "never_detected_cand": "int",
                    "never_detected_prod": "int",
                    "mean_ttfd_s_cand": "float",
                    "mean_ttfd_s_prod": "float",
                },
            ),
            "flagged_segments": _table(
                [
                    {
                        "segment": f.segment_id,
                        "condition": f"{f.weather}/{f.lighting}",
                        "recall_cand": _num(f.candidate_recall),
                        "recall_prod": _num(f.production_recall),
                        "why": "; ".join(f.reasons),
                    }
                    for f in report.flagged
                ],
                {
                    "segment": "string",
                    "condition": "string",
                    "recall_cand": "float",
                    "recall_prod": "float",
                    "why": "string",
                },
            ),
            "flagged": ref.flagged,
            "replay_report": dg.MetadataValue.url(files["replay_report.json"].uri),
        },
    )


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


# --------------------------------------------------------------------------- scenario library


@dg.asset(
    group_name=SIMULATION,
    kinds={"python"},
    partitions_def=TARGET_PARTITIONS,
    automation_condition=eager_on_supported_targets(),
    code_version=_digest("scenarios"),
    description=per_target_description(
        "Each flagged replay interval as an OpenSCENARIO 1.3 scenario (`.xosc`, actors following their "
        "recorded trajectories, environment) with its OpenDRIVE road (`.xodr`) and a parameter sweep "
        "(`ParameterValueDistribution` over ego speed, gap time, actor type, weather). Every file is "
        "validated against the official schema; the sweep's concrete points become closed-loop runs."
    ),
)
def scenario_library(
    context: dg.AssetExecutionContext, replay_metrics: ReplayMetricsRef, artifact_store: ArtifactStoreParam
) -> dg.MaterializeResult:
    from adas.simulation.replay import FlaggedSegment
    from adas.simulation.scenarios import (
        ScenarioValidationError,
        build_library,
        describe,
        expand_sweep,
        runs_from_library,
    )

    device, precision = _cell(context)
    cfg = _config()
    f = replay_metrics.files["flagged_segments.json"]
    flagged = [
        FlaggedSegment.model_validate(x)
        for x in json.loads(artifact_store.get_bytes(f.key, expected_sha256=f.sha256))
    ]
    prefix = f"{replay_metrics.prefix}/scenarios"
    with tempfile.TemporaryDirectory(prefix="scenarios-") as tmp:
        try:
            templates = build_library(flagged, cfg, Path(tmp))
            pairs = [(t, expand_sweep(Path(tmp) / t.segment_id / t.sweep_xosc)) for t in templates]
        except ScenarioValidationError as exc:
            raise dg.Failure(description=f"generated scenario is invalid: {exc}") from exc
        stored = artifact_store.put_tree(prefix, Path(tmp)) if templates else []
    runs = runs_from_library(pairs, cfg)
    index = {
        "scenarios": [t.model_dump(mode="json") for t in templates],
        "sweep_points": {t.scenario_id: pts for t, pts in pairs},
        "runs": [r.model_dump(mode="json") for r in runs],
    }
    index_file = _put(artifact_store, f"{prefix}/scenario_library.json", _json(index))
    files = {
        s.key.removeprefix(prefix + "/"): StoredFile(key=s.key, uri=s.uri, sha256=s.sha256, size=s.size)
        for s in stored
    }
    ref = ScenarioLibraryRef(
        device=device,
        precision=precision,
        version=replay_metrics.version,
        prefix=prefix,
        index=index_file,
        scenarios=[t.scenario_id for t in templates],
        files=files,
        runs=len(runs),
    )
    context.log.info(f"{len(templates)} scenarios, {len(runs)} concrete runs, {len(files)} files validated")
    rows = [describe(t) for t in templates]
    return dg.MaterializeResult(
        value=ref,
        metadata={
            "scenarios": _table(
                rows,
                {
                    "scenario": "string",
                    "from": "string",
                    "category": "string",
                    "key_actor": "string",
                    "actors": "int",
                    "duration_s": "float",
                    "sweep_runs": "int",
                    "why": "string",
                },
            ),
            "scenario_count": len(templates),
            "concrete_runs": len(runs),
            "schema": dg.MetadataValue.text(
                "OpenSCENARIO 1.3 (asam-qc-openscenarioxml XSD), OpenDRIVE 1.7 core XSD"
            ),
            "library": dg.MetadataValue.url(artifact_store.uri(prefix)),
            "index": dg.MetadataValue.url(index_file.uri),
        },
    )


# --------------------------------------------------------------------------- closed loop


SIM_SWEEP_ENV = "ADAS_SIM_SWEEP"


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


def _gif_markdown(title: str, thumb: bytes, uri: str) -> str:
    return f"**{title}** ([full clip]({uri}))\n\n![{title}](data:image/gif;base64,{base64.b64encode(thumb).decode()})"


@dg.asset(
    group_name=SIMULATION,
    kinds={"python"},
    partitions_def=TARGET_PARTITIONS,
    automation_condition=eager_on_supported_targets(),
    code_version=_digest("closed_loop"),
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
    description=per_target_description(
        "Closed-loop simulation on highway-env with the engine's detections driving a proxy controller "
        "(IDM/ACC longitudinal control, lane keeping, safe lane changes): a sweep over categories (cut-in, "
        "stopped lead, cruise, merge), seeds, density, weather and the scenario library's runs, for the "
        "candidate and production on identical seeds. Shards run in local processes (in production: one "
        "Kubernetes pod each), checkpoint to the store and resume after a crash. Outputs: "
        "`sim_summary.parquet`, per-category JSON, a violation heat map and failure clips."
    ),
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
    import polars as pl

    from adas.datasets.generator import load_datagen_config
    from adas.simulation.closed_loop import EpisodeSpec
    from adas.simulation.heatmap import heatmap_png
    from adas.simulation.metrics import RunRecord, summarize, summarize_by_category
    from adas.simulation.orchestration import (
        EpisodeSettings,
        SweepError,
        plan_runs,
        run_sweep,
        thumbnail_key,
    )
    from adas.simulation.perception import PerceptionSpec

    device, precision = _cell(context, engine, production_engine)
    cfg = _config()
    sweep = config.sweep or os.environ.get(SIM_SWEEP_ENV) or "demo"
    if sweep not in cfg.sweeps:
        source = "run config" if config.sweep else f"${SIM_SWEEP_ENV}"
        raise dg.Failure(
            description=f"sweep {sweep!r} (from {source}) is not in config/simulation.yaml ({', '.join(cfg.sweeps)})"
        )
    index = json.loads(
        artifact_store.get_bytes(scenario_library.index.key, expected_sha256=scenario_library.index.sha256)
    )
    library = [EpisodeSpec.model_validate(r) for r in index["runs"]]
    runs = plan_runs(cfg, sweep, library)
    settings = EpisodeSettings.from_configs(cfg, load_datagen_config())
    shards = config.shards or cfg.sweeps[sweep].shards
    try:
        executor = sim_shards.executor(context, device, processes=config.processes)
    except ShardSetupError as exc:
        raise dg.Failure(description=str(exc)) from exc
    results = {}
    for label, ref in (("production", production_engine), ("candidate", engine)):
        spec = PerceptionSpec(
            label=label, kind="engine", engine_sha256=ref.engine.sha256, contract=ref.contract
        )
        # Local processes read a verified local copy; shard pods fetch and verify it themselves.
        path = (
            artifact_store.fetch(ref.engine.key, expected_sha256=ref.engine.sha256)
            if sim_shards.mode == "local"
            else None
        )
        try:
            results[label] = run_sweep(
                artifact_store,
                runs,
                spec,
                settings,
                engine_path=path,
                engine_key=ref.engine.key,
                shards=shards,
                executor=executor,
                progress=context.log.info,
            )
        except SweepError as exc:
            raise dg.Failure(description=str(exc)) from exc
    cand, prod = results["candidate"], results["production"]
    records: list[RunRecord] = [*prod.records, *cand.records]
    prefix = f"{engine.prefix}/simulation"
    clips: dict[str, StoredFile] = {}
    thumbs: dict[str, bytes] = {}
    for res in (cand, prod):
        for run_id, key in res.clip_keys.items():
            data = artifact_store.get_bytes(key)
            clips[f"{res.perception}/{run_id}"] = _put(
                artifact_store, f"{prefix}/clips/{res.perception}-{run_id}.gif", data
            )
            if artifact_store.exists(thumbnail_key(key)):
                thumbs[f"{res.perception}/{run_id}"] = artifact_store.get_bytes(thumbnail_key(key))
    rows = []
    for r in records:
        row = r.row()
        clip = clips.get(f"{r.model}/{r.spec.run_id}")
        row["clip_key"] = clip.key if clip else None
        rows.append(row)
    buf = io.BytesIO()
    pl.DataFrame(rows, infer_schema_length=None).write_parquet(buf)
    files = {
        "sim_summary.parquet": _put(artifact_store, f"{prefix}/sim_summary.parquet", buf.getvalue()),
        "runs.json": _put(
            artifact_store,
            f"{prefix}/runs.json",
            _json([r.model_dump(mode="json", exclude={"wall_s", "cpu_s"}) for r in records]),
        ),
    }
    for cat in sorted({r.spec.category for r in records}):
        c_recs = [r for r in cand.records if r.spec.category == cat]
        p_recs = [r for r in prod.records if r.spec.category == cat]
        body = {
            "category": cat,
            "description": cfg.categories[cat].description if cat in cfg.categories else "",  # type: ignore[index]
            "candidate": summarize(c_recs).model_dump(),
            "production": summarize(p_recs).model_dump(),
            "runs": [
                {
                    "spec": c.spec.model_dump(mode="json"),
                    "candidate": c.metrics.model_dump(),
                    "production": p.metrics.model_dump(),
                }
                for c, p in zip(c_recs, p_recs, strict=True)
            ],
        }
        files[f"scenarios/{cat}.json"] = _put(artifact_store, f"{prefix}/scenarios/{cat}.json", _json(body))
    title = f"{engine.contract.model_name} {engine.contract.version} vs production {production_engine.contract.version} ({device}/{precision})"
    png = heatmap_png({"candidate": cand.records, "production": prod.records}, title=title)
    files["violations_heatmap.png"] = _put(artifact_store, f"{prefix}/violations_heatmap.png", png)

    c_cat, p_cat = summarize_by_category(cand.records), summarize_by_category(prod.records)
    c_cat["all"], p_cat["all"] = summarize(cand.records), summarize(prod.records)
    ref = SimulationRef(
        device=device,
        precision=precision,
        version=engine.contract.version,
        production_version=production_engine.contract.version,
        sweep=sweep,
        prefix=prefix,
        files=files,
        clips=clips,
        candidate=c_cat,
        production=p_cat,
        runs=len(runs),
        shards_computed=len(cand.shards_computed) + len(prod.shards_computed),
        shards_reused=len(cand.shards_reused) + len(prod.shards_reused),
    )
    summary_rows = []
    for cat in c_cat:
        for model, s in (("candidate", c_cat[cat]), ("production", p_cat.get(cat))):
            if s is None:
                continue
            summary_rows.append(
                {
                    "category": cat,
                    "model": model,
                    "runs": s.runs,
                    "km": s.km,
                    "collisions": s.collisions,
                    "collisions_per_1000km": s.collisions_per_1000km,
                    "near_misses": s.near_misses,
                    "vru_near_misses": s.vru_near_misses,
                    "off_road": s.off_road,
                    "min_ttc_s": _num(s.min_ttc_s),
                    "driving_score": s.mean_driving_score,
                    "route_completion": s.mean_route_completion,
                    "p95_jerk": s.p95_abs_jerk_mps3,
                }
            )
    failures = [
        {
            "model": r.model,
            "run": r.spec.run_id,
            "category": r.spec.category,
            "condition": r.spec.condition,
            "actor": r.spec.actor_type or "",
            "what": (
                f"collision ({r.metrics.collision_kind}) with {r.metrics.collision_with}"
                if r.metrics.collisions
                else ("off road" if r.metrics.off_road_events else "blocked")
            ),
            "clip": clips[f"{r.model}/{r.spec.run_id}"].uri if f"{r.model}/{r.spec.run_id}" in clips else "",
        }
        for r in records
        if r.metrics.failed
    ]
    computed = cand.episodes_computed + prod.episodes_computed
    compute_s = cand.compute_s + prod.compute_s
    metadata: dict[str, Any] = {
        "summary": _table(
            summary_rows,
            {
                "category": "string",
                "model": "string",
                "runs": "int",
                "km": "float",
                "collisions": "int",
                "collisions_per_1000km": "float",
                "near_misses": "int",
                "vru_near_misses": "int",
                "off_road": "int",
                "min_ttc_s": "float",
                "driving_score": "float",
                "route_completion": "float",
                "p95_jerk": "float",
            },
        ),
        "violations_heatmap": dg.MetadataValue.md(
            f"[violations_heatmap.png]({files['violations_heatmap.png'].uri})\n\n"
            f"![violations](data:image/png;base64,{base64.b64encode(png).decode()})"
        ),
        "failures": _table(
            failures,
            {
                "model": "string",
                "run": "string",
                "category": "string",
                "condition": "string",
                "actor": "string",
                "what": "string",
                "clip": "string",
            },
        ),
        "candidate_collisions": c_cat["all"].collisions,
        "production_collisions": p_cat["all"].collisions,
        "candidate_driving_score": c_cat["all"].mean_driving_score,
        "production_driving_score": p_cat["all"].mean_driving_score,
        "runs_per_model": len(runs),
        "library_runs": sum(1 for r in runs if r.source.startswith("library:")),
        "shards": dg.MetadataValue.text(
            f"{ref.shards_computed} computed, {ref.shards_reused} reused from checkpoints "
            f"({computed} episodes, {compute_s:.0f} s of worker time)"
        ),
        "sim_summary": dg.MetadataValue.url(files["sim_summary.parquet"].uri),
        "location": dg.MetadataValue.url(artifact_store.uri(prefix)),
    }
    cand_fail = [f for f in failures if f["model"] == "candidate" and f"candidate/{f['run']}" in thumbs]
    if cand_fail:
        parts = [
            _gif_markdown(
                f"{f['run']}: {f['what']} ({f['condition']})",
                thumbs[f"candidate/{f['run']}"],
                clips[f"candidate/{f['run']}"].uri,
            )
            for f in cand_fail[:2]
        ]
        metadata["failure_clips"] = dg.MetadataValue.md("\n\n".join(parts))
    return dg.MaterializeResult(value=ref, metadata=metadata)


# --------------------------------------------------------------------------- sim gate


@dg.asset(
    group_name=SIMULATION,
    kinds={"python"},
    partitions_def=TARGET_PARTITIONS,
    automation_condition=eager_on_supported_targets(),
    code_version=_digest("gate"),
    description=per_target_description(
        "The Sim Gate: per-category pass criteria from `config/simulation.yaml` (zero collisions in "
        "cut-in and stopped-lead scenes, no increase in near misses vs production on the same seeds, none "
        "with vulnerable road users, bounded driving-score and comfort regressions). Green or red with "
        "rationale; the blocking `sim_gate_is_green` check stops promotion on red."
    ),
)
def sim_verdict(
    context: dg.AssetExecutionContext,
    closed_loop_simulation: SimulationRef,
    artifact_store: ArtifactStoreParam,
) -> dg.MaterializeResult:
    from adas.simulation.gate import evaluate_gate
    from adas.simulation.metrics import RunRecord

    device, precision = _cell(context)
    cfg = _config()
    f = closed_loop_simulation.files["runs.json"]
    records = [
        RunRecord.model_validate({**r, "wall_s": 0.0})
        for r in json.loads(artifact_store.get_bytes(f.key, expected_sha256=f.sha256))
    ]
    cand = [r for r in records if r.model == "candidate"]
    prod = [r for r in records if r.model == "production"]
    verdict = evaluate_gate(cand, prod, cfg.gate)
    prefix = closed_loop_simulation.prefix
    body = {
        "device": device,
        "precision": precision,
        "version": closed_loop_simulation.version,
        "production_version": closed_loop_simulation.production_version,
        "sweep": closed_loop_simulation.sweep,
        "verdict": verdict.status,
        **verdict.model_dump(mode="json"),
    }
    files = {
        "sim_verdict.json": _put(artifact_store, f"{prefix}/sim_verdict.json", _json(body)),
        "sim_verdict.md": _put(artifact_store, f"{prefix}/sim_verdict.md", verdict.rationale.encode()),
    }
    ref = SimVerdictRef(
        device=device,
        precision=precision,
        version=closed_loop_simulation.version,
        production_version=closed_loop_simulation.production_version,
        green=verdict.green,
        rationale=verdict.rationale,
        checks=verdict.checks,
        files=files,
    )
    if not verdict.green:
        context.log.warning(f"sim gate RED for {ref.version} on {device}/{precision}")
    return dg.MaterializeResult(
        value=ref,
        metadata={
            "verdict": verdict.status,
            "green": verdict.green,
            "rationale": dg.MetadataValue.md(verdict.rationale),
            "failed_checks": dg.MetadataValue.text(
                ", ".join(f"{c.scope}:{c.name}" for c in verdict.failed_checks) or "none"
            ),
            "checks": _table(
                [
                    {
                        "check": c.name,
                        "scope": c.scope,
                        "candidate": _num(c.candidate),
                        "production": _num(c.production),
                        "limit": c.limit,
                        "passed": c.passed,
                    }
                    for c in verdict.checks
                ],
                {
                    "check": "string",
                    "scope": "string",
                    "candidate": "float",
                    "production": "float",
                    "limit": "string",
                    "passed": "bool",
                },
            ),
            "verdict_json": dg.MetadataValue.url(files["sim_verdict.json"].uri),
        },
    )


def _sim_gate_is_green(sim_verdict: SimVerdictRef) -> dg.AssetCheckResult:
    failed = [c for c in sim_verdict.checks if not c.passed]
    return dg.AssetCheckResult(
        passed=sim_verdict.green,
        severity=dg.AssetCheckSeverity.ERROR,
        description=sim_verdict.rationale.split("\n", 1)[0],
        metadata={
            "verdict": sim_verdict.status,
            "failed_checks": dg.MetadataValue.text(
                ", ".join(f"{c.scope}:{c.name}" for c in failed) or "none"
            ),
            "verdict_json": dg.MetadataValue.url(sim_verdict.files["sim_verdict.json"].uri),
        },
    )


with warnings.catch_warnings():  # partitioned asset checks are "preview" in Dagster 1.13
    warnings.simplefilter("ignore", dg.PreviewWarning)
    sim_gate_is_green = dg.asset_check(
        asset=sim_verdict,
        name="sim_gate_is_green",
        blocking=True,
        partitions_def=TARGET_PARTITIONS,
        description="The sim gate is green. Blocking: promotion downstream of a red sim verdict does not run.",
    )(_sim_gate_is_green)


simulation_assets = [replay_metrics, scenario_library, closed_loop_simulation, sim_verdict]
simulation_checks = [sim_gate_is_green]
