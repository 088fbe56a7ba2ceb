"""Use-case of the ``closed_loop_simulation`` asset: candidate and production over one sweep.

Plans the sweep (config/simulation.yaml plus the scenario library's runs), runs it for production
and then the candidate on identical seeds (``sweep.run_sweep``: checkpointed shards on the given
executor), and stores the outputs under ``<pack>/simulation/``: ``sim_summary.parquet``,
``runs.json``, one JSON per category, the violation heat map and a copy of every failure clip.

A sweep with ``sequential`` set then looks at the gate's pooled rate comparisons and, while they
are amber, adds batches of new seeded runs for both models (``extend_sequentially``; the rule and
its boundaries are in ``sequential``). The stored runs are all of them; ``SimulationRef.sequential``
records the looks, which the verdict uses.

Domain code: no dagster import.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from adas.catalog import TargetCatalog
from adas.datasets.config import DatagenConfig
from adas.intake.refs import StoredFile
from adas.intake.stored import read_file, read_json, stored_file
from adas.simulation.config import SimulationConfig
from adas.simulation.episode import EpisodeSpec
from adas.simulation.executors import ShardExecutor
from adas.simulation.gate import evaluate_gate
from adas.simulation.heatmap import heatmap_png
from adas.simulation.metrics import RunRecord, summarize, summarize_by_category
from adas.simulation.perception import PerceptionSpec
from adas.simulation.planning import plan_batch, plan_runs
from adas.simulation.refs import ScenarioLibraryRef, SimulationRef
from adas.simulation.scenario_sweeps import LIBRARY_DIR
from adas.simulation.sequential import (
    SequentialLook,
    SequentialRecord,
    look_confidence,
    look_schedule,
    next_batch,
)
from adas.simulation.shards import EpisodeSettings, config_scenario_files, thumbnail_key
from adas.simulation.steps import EnginePair, SimulationInputError, json_bytes
from adas.simulation.sweep import SweepResult, run_sweep
from adas.storage import ArtifactStore

# Lets runs launched by automation (no run config) use a smaller sweep.
SIM_SWEEP_ENV = "ADAS_SIM_SWEEP"
DEFAULT_SWEEP = "demo"


@dataclass(frozen=True)
class ClosedLoopResult:
    ref: SimulationRef
    candidate: SweepResult
    production: SweepResult
    runs: list[EpisodeSpec]  # the plan each model ran
    thumbnails: dict[str, bytes]  # "<model>/<run_id>" -> a small copy of the failure clip
    heatmap_png: bytes
    location_uri: str  # where the outputs lie (the store's URI of ``ref.prefix``)

    @property
    def records(self) -> list[RunRecord]:
        """Production's records, then the candidate's (the order of the stored tables)."""
        return [*self.production.records, *self.candidate.records]

    @property
    def episodes_computed(self) -> int:
        return self.candidate.episodes_computed + self.production.episodes_computed

    @property
    def compute_s(self) -> float:
        return self.candidate.compute_s + self.production.compute_s


def choose_sweep(cfg: SimulationConfig, requested: str | None, environ: Mapping[str, str]) -> str:
    """The requested sweep, else ``$ADAS_SIM_SWEEP``, else ``demo``; it must be in the config."""
    sweep = requested or environ.get(SIM_SWEEP_ENV) or DEFAULT_SWEEP
    if sweep not in cfg.sweeps:
        source = "run config" if requested else f"${SIM_SWEEP_ENV}"
        raise SimulationInputError(
            f"sweep {sweep!r} (from {source}) is not in config/simulation.yaml ({', '.join(cfg.sweeps)})"
        )
    return sweep


def _copy_clips(
    store: ArtifactStore, prefix: str, results: Sequence[SweepResult]
) -> tuple[dict[str, StoredFile], dict[str, bytes]]:
    """Every failure clip copied beside the pack, and the thumbnails the shards made of them."""
    clips: dict[str, StoredFile] = {}
    thumbs: dict[str, bytes] = {}
    for res in results:
        for run_id, key in res.clip_keys.items():
            name = f"{res.perception}/{run_id}"
            clips[name] = stored_file(
                store, f"{prefix}/clips/{res.perception}-{run_id}.gif", data=store.get_bytes(key)
            )
            if store.exists(thumbnail_key(key)):
                thumbs[name] = store.get_bytes(thumbnail_key(key))
    return clips, thumbs


def _summary_parquet(records: Sequence[RunRecord], clips: Mapping[str, StoredFile]) -> bytes:
    rows = []
    for r in records:
        clip = clips.get(f"{r.model}/{r.spec.run_id}")
        rows.append({**r.row(), "clip_key": clip.key if clip else None})
    buf = io.BytesIO()
    pl.DataFrame(rows, infer_schema_length=None).write_parquet(buf)
    return buf.getvalue()


def _category_files(
    store: ArtifactStore, prefix: str, cfg: SimulationConfig, cand: SweepResult, prod: SweepResult
) -> dict[str, StoredFile]:
    """``scenarios/<category>.json``: both models' summaries and every run side by side."""
    files = {}
    for cat in sorted({r.spec.category for r in [*prod.records, *cand.records]}):
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
        files[f"scenarios/{cat}.json"] = stored_file(
            store, f"{prefix}/scenarios/{cat}.json", data=json_bytes(body)
        )
    return files


# Runs a list of runs for both models: {"candidate": ..., "production": ...}.
BatchRunner = Callable[[Sequence[EpisodeSpec]], dict[str, SweepResult]]


def extend_sequentially(
    cfg: SimulationConfig,
    sweep: str,
    candidate: SweepResult,
    production: SweepResult,
    run_batch: BatchRunner,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[SweepResult, SweepResult, list[EpisodeSpec], SequentialRecord]:
    """Look at the gate after the sweep; while ``sequential.next_batch`` asks for runs, plan a batch
    of new seeded runs, run it for both models and look again.

    Returns both models' extended results, the added runs, and the record of the looks.
    """
    seq = cfg.sweeps[sweep].sequential
    if seq is None:
        raise ValueError(f"sweep {sweep!r} has no sequential settings")
    planned = len(candidate.records)
    schedule = look_schedule(planned, seq)
    added: list[EpisodeSpec] = []
    looks: list[SequentialLook] = []
    t0 = time.perf_counter()
    while True:
        runs = len(candidate.records)
        confidence = look_confidence(schedule, runs)
        verdict = evaluate_gate(candidate.records, production.records, cfg.gate, rate_confidence=confidence)
        looks.append(
            SequentialLook(runs=runs, confidence=confidence, verdict=verdict.verdict, rates=verdict.rates)
        )
        n, why = next_batch(verdict.verdict, verdict.rates, runs, schedule)
        log(
            f"sequential look {len(looks)} at {runs} runs ({confidence:.2%} intervals): gate {verdict.verdict}, "
            f"rates {verdict.rates}; {f'adding {n} runs' if n else 'stop'}: {why}"
        )
        if not n:
            break
        batch = plan_batch(cfg, sweep, len(looks), n)
        results = run_batch(batch)
        candidate = candidate.extended(results["candidate"])
        production = production.extended(results["production"])
        added += batch
    record = SequentialRecord(
        planned_runs=planned,
        batch_runs=seq.batch_runs,
        max_runs=seq.max_runs,
        schedule=schedule,
        looks=looks,
        stopped=why,
        wall_s=round(time.perf_counter() - t0, 1),
    )
    return candidate, production, added, record


def run_closed_loop_simulation(
    store: ArtifactStore,
    *,
    pair: EnginePair,
    catalog: TargetCatalog,
    cfg: SimulationConfig,
    datagen: DatagenConfig,
    library: ScenarioLibraryRef,
    executor: Callable[[], ShardExecutor],
    local_engine: bool,
    sweep: str | None = None,
    shards: int = 0,
    environ: Mapping[str, str] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> ClosedLoopResult:
    """Run the sweep for production and candidate; store and describe the outputs.

    ``executor`` builds the shard executor once the plan is known; ``local_engine``: the executor
    runs shards here and needs a verified local copy of each engine (pods fetch it themselves).
    ``shards`` 0 takes the sweep's setting. Raises ``SweepError`` when shards fail.
    """
    pair.require_simulatable(catalog)
    cell, engine, production_engine = pair.cell, pair.candidate, pair.production
    name = choose_sweep(cfg, sweep, {} if environ is None else environ)
    library_runs = [EpisodeSpec.model_validate(r) for r in read_json(store, library.index)["runs"]]
    runs = plan_runs(cfg, name, library_runs)
    # One code path plays every scene: the shipped files and the library's, read pinned.
    scenario_files = {
        **config_scenario_files(),
        **{
            f"{LIBRARY_DIR}/{rel}": read_file(store, f).decode()
            for rel, f in library.files.items()
            if rel.endswith((".xosc", ".xodr"))
        },
    }
    settings = EpisodeSettings.from_configs(cfg, datagen)
    n_shards = shards or cfg.sweeps[name].shards
    shard_executor = executor()
    paths = {
        label: store.fetch(ref.engine.key, expected_sha256=ref.engine.sha256) if local_engine else None
        for label, ref in (("production", production_engine), ("candidate", engine))
    }

    def run_both(batch: Sequence[EpisodeSpec]) -> dict[str, SweepResult]:
        results: dict[str, SweepResult] = {}
        for label, ref in (("production", production_engine), ("candidate", engine)):
            spec = PerceptionSpec(
                label=label, kind="engine", engine_sha256=ref.engine.sha256, contract=ref.contract
            )
            results[label] = run_sweep(
                store,
                batch,
                spec,
                settings,
                engine_path=paths[label],
                engine_key=ref.engine.key,
                shards=n_shards,
                executor=shard_executor,
                progress=log,
                scenario_files=scenario_files,
            )
        return results

    results = run_both(runs)
    cand, prod = results["candidate"], results["production"]
    sequential: SequentialRecord | None = None
    if cfg.sweeps[name].sequential is not None:
        cand, prod, added, sequential = extend_sequentially(cfg, name, cand, prod, run_both, log)
        runs = [*runs, *added]
    prefix = f"{engine.prefix}/simulation"
    clips, thumbs = _copy_clips(store, prefix, (cand, prod))
    records = [*prod.records, *cand.records]
    files = {
        "sim_summary.parquet": stored_file(
            store, f"{prefix}/sim_summary.parquet", data=_summary_parquet(records, clips)
        ),
        "runs.json": stored_file(
            store,
            f"{prefix}/runs.json",
            data=json_bytes([r.model_dump(mode="json", exclude={"wall_s", "cpu_s"}) for r in records]),
        ),
        **_category_files(store, prefix, cfg, cand, prod),
    }
    title = (
        f"{engine.contract.model_name} {engine.contract.version} vs production "
        f"{production_engine.contract.version} ({cell.device}/{cell.precision})"
    )
    png = heatmap_png({"candidate": cand.records, "production": prod.records}, title=title)
    files["violations_heatmap.png"] = stored_file(store, f"{prefix}/violations_heatmap.png", data=png)
    c_cat, p_cat = summarize_by_category(cand.records), summarize_by_category(prod.records)
    c_cat["all"], p_cat["all"] = summarize(cand.records), summarize(prod.records)
    ref = SimulationRef(
        **pair.identity(),
        sweep=name,
        prefix=prefix,
        files=files,
        clips=clips,
        candidate=c_cat,
        production=p_cat,
        runs=len(runs),
        shards_computed=len(cand.shards_computed) + len(prod.shards_computed),
        shards_reused=len(cand.shards_reused) + len(prod.shards_reused),
        sequential=sequential,
    )
    return ClosedLoopResult(
        ref=ref,
        candidate=cand,
        production=prod,
        runs=runs,
        thumbnails=thumbs,
        heatmap_png=png,
        location_uri=store.uri(prefix),
    )
