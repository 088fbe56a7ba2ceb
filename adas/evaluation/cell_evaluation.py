"""The evaluation of one cell (device x precision): what the ``eval_report`` asset runs.

:func:`evaluate_cell` reads the golden split, the replay logs and any challenge suites from the
artifact store, opens the cell's packaged engine (and production's, when the cell has one),
takes its latency, runs :func:`adas.evaluation.pipeline.evaluate_engine`, writes every report
beside the model pack (:mod:`adas.evaluation.reports`), logs to W&B and returns the
:class:`~adas.evaluation.refs.EvalReportRef` handed downstream. Domain code: no Dagster import.
"""

import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from adas.catalog import Target, TargetCatalog
from adas.cell import Cell
from adas.cpu_isa import missing_isa
from adas.evaluation.config import EVALUATION_FILE, EvaluationSettings, Profile, file_sha256
from adas.evaluation.gates import Latency
from adas.evaluation.inputs import (
    EvaluationInputError,
    challenge_suites_root,
    load_slice_catalog,
    load_split,
    stage_challenge_suites,
)
from adas.evaluation.pipeline import EvalData, EvaluationOutcome, ModelUnderTest, evaluate_engine
from adas.evaluation.refs import EvalReportRef
from adas.evaluation.reports import json_bytes, log_to_wandb, summary_markdown, write_files
from adas.evaluation.runner import Engine, frame_size, latency_from_build, measure_latency, open_engine
from adas.evaluation.slices import catalog_slices, to_parquet_bytes
from adas.intake.refs import DatasetRef, ReplayBundleRef, SliceCatalogRef, StoredFile
from adas.intake.stored import DatasetFiles, fetch_file, read_json
from adas.packaging.refs import EngineRef
from adas.storage import ArtifactStore

PROFILES: tuple[str, ...] = ("standard", "full")
Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    """The default ``log``/``warn``: say nothing."""


@dataclass(frozen=True)
class EvalRequest:
    """One cell's evaluation as asked for: the engines, the data and the options."""

    cell: Cell
    engine: EngineRef
    production: EngineRef | None
    dataset: DatasetRef
    slice_catalog: SliceCatalogRef
    replay: ReplayBundleRef
    profile: str = "standard"
    challenge_suites: Sequence[str] = ()
    log_wandb: bool = True
    threads: int = 2

    @property
    def title(self) -> str:
        c = self.engine.contract
        return f"{c.model_name} {c.version} on {self.cell.device}/{self.cell.precision}"


@dataclass(frozen=True)
class CellEvaluation:
    """What :func:`evaluate_cell` did: the stored reports (``ref``) and the numbers behind them."""

    ref: EvalReportRef
    title: str
    latency: Latency
    outcome: EvaluationOutcome
    files: dict[str, bytes]  # every report written beside the pack but the summary, by name


def load_eval_data(
    store: ArtifactStore,
    request: EvalRequest,
    settings: EvaluationSettings,
    adas_home: Path,
    log: Log = _quiet,
) -> tuple[EvalData, list[str]]:
    """Ground truth and frames of the evaluated split (each file verified against its sha256),
    the challenge suites appended as extra slices, and the replay sequences."""
    manifests = request.dataset.manifests
    if settings.split not in manifests:
        raise EvaluationInputError(f"golden_dataset has no manifest {settings.split!r}")
    gt = read_json(store, manifests[settings.split])
    # Frames at their own size: each model (candidate and production may differ in family and
    # input size) places them as its contract says and answers in these pixels.
    size_hw = frame_size(gt)
    dataset_files = DatasetFiles.of(store, request.dataset)
    ids, frames, scales = load_split(dataset_files, gt, size_hw)
    slices = catalog_slices(load_slice_catalog(store, request.slice_catalog), gt)
    suites, suite_names = stage_challenge_suites(
        store, challenge_suites_root(adas_home), request.challenge_suites, gt, size_hw, log
    )
    split_ids = list(ids)
    if suites:
        frames = np.concatenate([frames, *[s.frames for s in suites]])
        scales = scales + [sc for s in suites for sc in s.scales]
        ids = ids + [i for s in suites for i in s.image_ids]
        slices = slices + [s.slice for s in suites]
    replay = read_json(store, request.replay.manifest)
    r_ids, r_frames, _ = load_split(dataset_files, replay, size_hw)
    log(f"{len(split_ids)} {settings.split} frames, {len(r_ids)} replay frames, {len(slices)} slices")
    data = EvalData(
        gt=gt,
        image_ids=ids,
        frames=frames,
        slices=slices,
        size_hw=size_hw,
        scales=scales,
        replay=replay,
        replay_ids=r_ids,
        replay_frames=r_frames,
        split_ids=split_ids,
    )
    return data, suite_names


def open_model(store: ArtifactStore, label: str, ref: EngineRef, threads: int) -> ModelUnderTest:
    """The packaged engine of ``ref``, fetched (verified) and opened in its runtime; raises
    :class:`~adas.evaluation.runner.EngineUnavailableError` when this machine cannot run it."""
    path = fetch_file(store, ref.engine)
    engine = open_engine(path, ref.runtime, ref.contract, threads)
    return ModelUnderTest(label, ref.contract.version, engine, ref.contract)


def engine_latency(ref: EngineRef, engine: Engine, target: Target) -> Latency:
    """The packaging microbenchmark's latency when the build recorded one, else measured here,
    only when this host has the target's instruction set (else "not measured: host lacks ...")."""
    budget = target.latency_budget_ms.p95
    lat = latency_from_build(ref.build)
    if lat is not None:
        return Latency(
            p50_ms=lat.get("p50_ms"),
            p95_ms=lat["p95_ms"],
            source="packaging microbenchmark",
            budget_p95_ms=budget,
            contended=lat.get("contended"),
        )
    lacking = missing_isa(target.isa)
    if lacking is not None:
        reason = f"not measured: {lacking}"
        return Latency(p95_ms=None, source=reason, budget_p95_ms=budget, not_measured=reason)
    measured = measure_latency(engine, ref.contract.input.shape[1:])
    return Latency(
        p50_ms=measured["p50_ms"],
        p95_ms=measured["p95_ms"],
        source=f"measured during evaluation on {platform.node()} ({int(measured['runs'])} runs, batch 1)",
        budget_p95_ms=budget,
    )


def eval_report_body(
    request: EvalRequest,
    settings: EvaluationSettings,
    outcome: EvaluationOutcome,
    suite_names: list[str],
    settings_sha256: str,
) -> dict[str, Any]:
    """``eval_report.json``: the pipeline's report plus what was evaluated, on what data."""
    engine, production, index = request.engine, request.production, request.dataset.file_index
    return {
        **outcome.eval_report,
        "engine": {
            "device": request.cell.device,
            "precision": request.cell.precision,
            "runtime": engine.runtime,
            **engine.engine.model_dump(),
        },
        "production_engine": None if production is None else production.engine.model_dump(),
        # The file index pins every frame evaluated: a registry entry pins this report, so a reader
        # with only the registry (adas-registry promote) reaches the same frames, verified.
        "dataset": {
            "tag": request.dataset.tag,
            "split": settings.split,
            "file_index": index.model_dump() if index is not None else None,
        },
        "challenge_suites": suite_names,
        "settings_sha256": settings_sha256,
    }


def write_reports(
    store: ArtifactStore,
    request: EvalRequest,
    outcome: EvaluationOutcome,
    report: dict[str, Any],
    latency: Latency,
) -> tuple[dict[str, bytes], dict[str, StoredFile]]:
    """Every report beside the model pack, then ``evaluation_summary.md`` linking to them."""
    files = dict(outcome.files)
    files["slice_metrics.parquet"] = to_parquet_bytes(outcome.slice_frame)
    files["latency_summary.json"] = json_bytes(latency.model_dump())
    files["eval_report.json"] = json_bytes(report)
    files["robustness_report.json"] = json_bytes(outcome.robustness_report)
    prefix = request.engine.prefix
    stored = write_files(store, prefix, files)
    links = {name: f.uri for name, f in stored.items()}
    summary = summary_markdown(
        report, outcome.robustness_report, outcome.verdict_preview, title=request.title, links=links
    )
    stored.update(write_files(store, prefix, {"evaluation_summary.md": summary.encode()}))
    return files, stored


def log_evaluation_to_wandb(
    request: EvalRequest,
    settings: EvaluationSettings,
    outcome: EvaluationOutcome,
    latency: Latency,
    files: dict[str, bytes],
    stored: dict[str, StoredFile],
    adas_home: Path,
    warn: Log = _quiet,
) -> dict[str, Any]:
    """One W&B run for the evaluation when the request and the settings both ask for it."""
    if not (request.log_wandb and settings.wandb.enabled):
        return {"mode": "disabled"}
    contract, cell, production = request.engine.contract, request.cell, request.production
    metrics, report = outcome.primary.metrics, outcome.eval_report
    return log_to_wandb(
        project=settings.wandb.project,
        mode=settings.wandb.mode,
        run_name=f"eval-{contract.model_name}-{contract.version}-{cell.device}-{cell.precision}",
        config={
            "device": cell.device,
            "precision": cell.precision,
            "version": contract.version,
            "production": None if production is None else production.contract.version,
            "dataset": request.dataset.tag,
            "profile": request.profile,
            "engine_sha256": request.engine.engine.sha256,
        },
        summary={
            "AP": metrics["AP"],
            "AP50": metrics["AP50"],
            "AP75": metrics["AP75"],
            "ece": report["calibration"]["ece"],
            "dece": report["calibration"]["dece"],
            "mPC": report["robustness_summary"]["mPC"],
            "rPC": report["robustness_summary"]["rPC"],
            "ood_auroc_msp": report["ood"]["auroc_msp"],
            "p95_ms": latency.p95_ms,
            "gate_preview_green": int(outcome.verdict_preview.passed),
        },
        images={
            k.removeprefix("plots/").removesuffix(".png"): v for k, v in files.items() if k.endswith(".png")
        },
        files={name: f.uri for name, f in stored.items() if name in files},
        slice_rows=outcome.slice_frame.to_dicts(),
        adas_home=adas_home,
        log=warn,
    )


def evaluate_cell(
    store: ArtifactStore,
    request: EvalRequest,
    catalog: TargetCatalog,
    settings: EvaluationSettings,
    *,
    adas_home: Path,
    log: Log = _quiet,
    warn: Log = _quiet,
) -> CellEvaluation:
    """Evaluate the cell's engine against production and store every report beside its pack.

    Raises :class:`~adas.catalog.UnsupportedTargetError` for a cell the catalog does not offer,
    :class:`~adas.evaluation.inputs.EvaluationInputError` (a challenge suite's among them) for
    bad inputs and :class:`~adas.evaluation.runner.EngineUnavailableError` for an engine this
    machine cannot run.
    """
    cell = request.cell
    target = cell.require_supported(catalog)
    if request.profile not in PROFILES:
        raise EvaluationInputError(f"profile must be 'standard' or 'full', got {request.profile!r}")
    if request.production is None:
        warn(f"no production_engine for {cell.device}/{cell.precision}: relative gates will be skipped")
    data, suite_names = load_eval_data(store, request, settings, adas_home, log)
    candidate = open_model(store, "candidate", request.engine, request.threads)
    production = (
        None
        if request.production is None
        else open_model(store, "production", request.production, request.threads)
    )
    latency = engine_latency(request.engine, candidate.engine, target)
    outcome = evaluate_engine(
        candidate,
        production,
        data,
        settings,
        profile=cast(Profile, request.profile),
        latency=latency,
        budget_p95_ms=target.latency_budget_ms.p95,
        title=request.title,
        log=log,
    )
    settings_sha256 = file_sha256(EVALUATION_FILE)
    report = eval_report_body(request, settings, outcome, suite_names, settings_sha256)
    files, stored = write_reports(store, request, outcome, report, latency)
    wandb_info = log_evaluation_to_wandb(request, settings, outcome, latency, files, stored, adas_home, warn)
    ref = EvalReportRef(
        device=cell.device,
        precision=cell.precision,
        engine=request.engine,
        production_engine=request.production,
        dataset_tag=request.dataset.tag,
        split=settings.split,
        frames=len(data.split_ids or []),
        profile=request.profile,
        prefix=request.engine.prefix,
        files=stored,
        snapshot=outcome.snapshot,
        production_snapshot=outcome.production_snapshot,
        evidence=outcome.evidence,
        latency=latency,
        challenge_suites=suite_names,
        settings_sha256=settings_sha256,
        wandb=wandb_info,
    )
    return CellEvaluation(ref=ref, title=request.title, latency=latency, outcome=outcome, files=files)
