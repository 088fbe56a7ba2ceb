"""Evaluation assets (specification step 16): integrity checks, eval reports, quantization
sensitivity, regression gates, and the triggers that re-run them.

Register with the lead's ``make_definitions``::

    from adas_assets.evaluation import assets as evaluation
    assets=[..., *evaluation.evaluation_assets], asset_checks=[..., *evaluation.evaluation_checks],
    sensors=[..., *evaluation.evaluation_sensors], schedules=[..., *evaluation.evaluation_schedules]
"""

import json
import platform
import warnings
from typing import Any

import dagster as dg
import numpy as np
from pydantic import Field

from adas.catalog import TargetCatalog, UnsupportedTargetError, require_supported
from adas.cell import DEVICE_DIMENSION, Cell
from adas.datasets.slices import load_slices
from adas.evaluation.config import EVALUATION_FILE, default_evaluation_settings, file_sha256
from adas.evaluation.gates import (
    GATES_FILE,
    Latency,
    blocking_report,
    evaluate_gates,
    verdict_markdown,
)
from adas.evaluation.inputs import (
    SUITE_ID_OFFSET,
    ChallengeSuiteError,
    list_suites,
    load_split,
    merge_suite,
    read_suite,
    suite_digest,
)
from adas.evaluation.integrity import check_integrity
from adas.evaluation.pipeline import EvalData, ModelUnderTest, evaluate_engine
from adas.evaluation.quantization import markdown as quant_markdown
from adas.evaluation.quantization import quantization_sensitivity as quant_report
from adas.evaluation.quantization import sensitivity_frame
from adas.evaluation.refs import EvalReportRef, GateRef, QuantizationRef
from adas.evaluation.reports import json_bytes, log_to_wandb, summary_markdown, write_files
from adas.evaluation.runner import (
    EngineUnavailableError,
    Predictions,
    latency_from_build,
    measure_latency,
    open_engine,
)
from adas.evaluation.slices import catalog_slices, pct, signed_pct, to_parquet_bytes
from adas.intake.refs import DatasetRef, ReplayBundleRef, SliceCatalogRef
from adas.packaging.refs import EngineRef
from adas.settings import AdasHome
from adas.storage import ArtifactStore
from adas_assets.automation import SupportedTargetCondition, eager_on_supported_targets
from adas_assets.metadata import table as _table
from adas_assets.partitions import (
    TARGET_PARTITIONS,
    per_target_description,
    supported_partition_keys,
)
from resources.artifact_store import ArtifactStoreParam
from resources.io_manager import read_value
from resources.targets import TARGET_CATALOG
from sensors.automation import default_schedule_status, default_sensor_status

EVALUATION = "evaluation"
PRODUCTION_ENGINE = dg.AssetKey("production_engine")
GOLDEN_DATASET = dg.AssetKey("golden_dataset")
SETTINGS_SHA256 = file_sha256(EVALUATION_FILE)
GATES_SHA256 = file_sha256(GATES_FILE)
CHALLENGE_SUITES_DIR = "challenge_suites"


def _png_markdown(title: str, png: bytes, uri: str) -> str:
    import base64

    return f"[{title}]({uri})\n\n![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _read_json(store: ArtifactStore, key: str, sha256: str | None = None) -> Any:
    return json.loads(store.get_bytes(key, expected_sha256=sha256))


def _load_optional_value(store: ArtifactStore, key: dg.AssetKey, partition_key: str) -> Any | None:
    """The stored value of an upstream partition, or None when it was never materialized.

    Used for ``production_engine``: a cell without a production model is evaluated anyway (its
    production-relative gates are reported as skipped), so it is a dependency, not a required input.
    """
    return read_value(store, key, partition_key, TARGET_PARTITIONS)


# --------------------------------------------------------------------------- dataset integrity

INTEGRITY_CHECKS = ("manifest_schema", "no_scene_leakage", "scenario_separation", "temporal_separation")
_CHECK_DESCRIPTIONS = {
    "manifest_schema": "Great Expectations: manifests conform to the schema and value ranges (ids, tags, frame size, boxes).",
    "no_scene_leakage": "No scene id appears in two splits (train/val/test/replay).",
    "scenario_separation": "Scenarios held out of training splits (config/evaluation.yaml) stay out.",
    "temporal_separation": "Consecutive golden frames of a scene are far enough apart; timestamps increase.",
}


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name, asset=GOLDEN_DATASET, blocking=True, description=_CHECK_DESCRIPTIONS[name])
        for name in INTEGRITY_CHECKS
    ],
    ins={"golden_dataset": dg.AssetIn(key=GOLDEN_DATASET)},
    name="dataset_integrity",
    compute_kind="great_expectations",
)
def dataset_integrity(golden_dataset: DatasetRef, artifact_store: ArtifactStoreParam):  # type: ignore[no-untyped-def]
    """Dataset integrity and leakage guards: blocking, so nothing downstream of a bad manifest runs."""
    settings = default_evaluation_settings().integrity
    manifests = {
        name: _read_json(artifact_store, f.key, f.sha256)
        for name, f in golden_dataset.manifests.items()
        if name in settings.splits
    }
    categories = next(iter(manifests.values()))["categories"] if manifests else []
    result = check_integrity(manifests, settings, golden_dataset.frame_size, categories)
    for name in INTEGRITY_CHECKS:
        check = result["checks"][name]
        violations = check["violations"]
        metadata: dict[str, Any] = {
            "violations": len(violations),
            "dataset_tag": golden_dataset.tag,
            "splits": ", ".join(manifests),
        }
        if violations:
            metadata["details"] = dg.MetadataValue.md(
                "\n".join(f"- **{v['rule']}**: {v['message']}" for v in violations)
            )
            metadata["offending_ids"] = dg.MetadataValue.text(
                ", ".join(sorted({i for v in violations for i in v["ids"]})[:200])
            )
        if name == "manifest_schema" and result["schema"] is not None:
            metadata["expectations"] = _table(
                [
                    {
                        "table": t,
                        "rows": r["rows"],
                        "expectations": r["evaluated"],
                        "failed": len(r["failures"]),
                    }
                    for t, r in result["schema"]["tables"].items()
                ],
                {"table": "string", "rows": "int", "expectations": "int", "failed": "int"},
            )
        yield dg.AssetCheckResult(
            check_name=name,
            asset_key=GOLDEN_DATASET,
            passed=bool(check["passed"]),
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=metadata,
            description=violations[0]["message"] if violations else None,
        )


# --------------------------------------------------------------------------- eval report


class EvalConfig(dg.Config):
    profile: str = Field(
        default="standard",
        description="standard (after packaging, nightly) or full (weekly: every clean frame for "
        "robustness, production robustness too)",
    )
    challenge_suites: list[str] = Field(
        default=[],
        description="Folder names under $ADAS_HOME/challenge_suites/ to evaluate as extra slices",
    )
    log_wandb: bool = Field(default=True, description="Log to W&B (mode from config/evaluation.yaml)")
    threads: int = Field(default=2, ge=1, le=64, description="ONNX Runtime intra-op threads")


def _eval_condition() -> dg.AutomationCondition:
    """The per-target eager condition, except that a missing production baseline (no production
    model packaged for the cell) neither holds evaluation back nor blocks it on its checks."""
    prod = dg.AssetSelection.assets(PRODUCTION_ENGINE)
    return (
        eager_on_supported_targets()
        .replace("any_deps_missing", dg.AutomationCondition.any_deps_missing().ignore(prod))
        .replace(
            "all_deps_blocking_checks_passed",
            dg.AutomationCondition.all_deps_blocking_checks_passed().ignore(prod),
        )
    )


def _challenge(
    names: list[str], home: AdasHome, store: ArtifactStore, gt: dict, size_hw: tuple[int, int], log: Any
) -> tuple[list, list[str]]:
    merged, used = [], []
    root = home.root / CHALLENGE_SUITES_DIR
    for k, name in enumerate(names):
        folder = root / name
        try:
            suite = read_suite(folder, gt["categories"])
        except ChallengeSuiteError as exc:
            raise dg.Failure(description=f"challenge suite {name!r}: {exc}") from exc
        digest = suite_digest(folder)
        prefix = f"{CHALLENGE_SUITES_DIR}/{name}/{digest[:12]}"
        if not store.exists(f"{prefix}/manifest.json"):
            store.put_tree(prefix, folder)
        m = merge_suite(
            gt, suite, lambda f, p=prefix: store.get_bytes(f"{p}/{f}"), size_hw, SUITE_ID_OFFSET * (k + 1)
        )
        log(f"challenge suite {name}: {len(m.image_ids)} frames (stored at {prefix})")
        merged.append(m)
        used.append(f"{name}@{digest[:12]}")
    return merged, used


@dg.asset(
    group_name=EVALUATION,
    kinds={"onnx", "polars"},
    partitions_def=TARGET_PARTITIONS,
    deps=[dg.AssetDep(PRODUCTION_ENGINE)],
    automation_condition=_eval_condition(),
    pool="cpu-heavy",
    code_version=f"eval-v1-{SETTINGS_SHA256[:8]}",
    description=per_target_description(
        "Evaluation of the packaged engine of one cell on the golden test split against the "
        "production model packaged for the same cell: COCO metrics (faster-coco-eval), per-class "
        "PR curves, confusion matrix, every slice of `slices.yaml` with deltas vs production "
        "(`slice_metrics.parquet`), calibration (ECE, D-ECE, Brier, reliability diagram, "
        "thresholds per class), robustness (COCO-C corruptions x severities 1-5 with mPC/rPC and "
        "decay slopes, sensor faults, temporal stress on replay), OOD probes (MSP, energy: "
        "AUROC/AUPR), prediction drift (Evidently), latency. Reports are written beside the "
        "model pack and logged to W&B (offline by default)."
    ),
)
def eval_report(
    context: dg.AssetExecutionContext,
    config: EvalConfig,
    engine: EngineRef,
    golden_dataset: DatasetRef,
    slice_catalog: SliceCatalogRef,
    replay_log_bundles: ReplayBundleRef,
    target_catalog: TargetCatalog,
    artifact_store: ArtifactStoreParam,
) -> dg.MaterializeResult:
    cell = Cell.parse(context.partition_key)
    device, precision = cell.device, cell.precision
    try:
        target = require_supported(target_catalog, device, precision)
    except UnsupportedTargetError as exc:
        raise dg.Failure(description=str(exc)) from exc
    if config.profile not in ("standard", "full"):
        raise dg.Failure(description=f"profile must be 'standard' or 'full', got {config.profile!r}")
    settings = default_evaluation_settings()
    log = context.log.info
    production: EngineRef | None = _load_optional_value(
        artifact_store, PRODUCTION_ENGINE, context.partition_key
    )
    if production is None:
        context.log.warning(f"no production_engine for {device}/{precision}: relative gates will be skipped")

    # Ground truth and frames (each verified against its recorded sha256).
    if settings.split not in golden_dataset.manifests:
        raise dg.Failure(description=f"golden_dataset has no manifest {settings.split!r}")
    m = golden_dataset.manifests[settings.split]
    gt = _read_json(artifact_store, m.key, m.sha256)
    contract = engine.contract
    _, _, h, w = contract.input.shape
    size_hw = (int(h), int(w))
    ids, frames, scales = load_split(artifact_store, golden_dataset.prefix, gt, size_hw)
    slices_def = load_slices_from_store(artifact_store, slice_catalog)
    slices = catalog_slices(slices_def, gt)
    home = AdasHome.from_env()
    suites, suite_names = _challenge(config.challenge_suites, home, artifact_store, gt, size_hw, log)
    split_ids = list(ids)
    if suites:
        frames = np.concatenate([frames, *[s.frames for s in suites]])
        scales = scales + [sc for s in suites for sc in s.scales]
        ids = ids + [i for s in suites for i in s.image_ids]
        slices = slices + [s.slice for s in suites]
    replay = _read_json(artifact_store, replay_log_bundles.manifest.key, replay_log_bundles.manifest.sha256)
    r_ids, r_frames, _ = load_split(artifact_store, golden_dataset.prefix, replay, size_hw)
    log(f"{len(split_ids)} {settings.split} frames, {len(r_ids)} replay frames, {len(slices)} slices")

    try:
        cand_engine = open_engine(
            artifact_store.fetch(engine.engine.key, engine.engine.sha256),
            engine.runtime,
            contract,
            config.threads,
        )
        prod_model = None
        if production is not None:
            prod_model = ModelUnderTest(
                "production",
                production.contract.version,
                open_engine(
                    artifact_store.fetch(production.engine.key, production.engine.sha256),
                    production.runtime,
                    production.contract,
                    config.threads,
                ),
                production.contract,
            )
    except EngineUnavailableError as exc:
        raise dg.Failure(description=str(exc)) from exc

    lat = latency_from_build(engine.build)
    if lat is not None:
        latency = Latency(
            p50_ms=lat.get("p50_ms"),
            p95_ms=lat["p95_ms"],
            source="packaging microbenchmark",
            budget_p95_ms=target.latency_budget_ms.p95,
        )
    else:
        measured = measure_latency(cand_engine, contract.input.shape[1:])
        latency = Latency(
            p50_ms=measured["p50_ms"],
            p95_ms=measured["p95_ms"],
            source=f"measured during evaluation on {platform.node()} ({int(measured['runs'])} runs, batch 1)",
            budget_p95_ms=target.latency_budget_ms.p95,
        )
    title = f"{contract.model_name} {contract.version} on {device}/{precision}"
    outcome = evaluate_engine(
        ModelUnderTest("candidate", contract.version, cand_engine, contract),
        prod_model,
        EvalData(
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
        ),
        settings,
        profile=config.profile,  # type: ignore[arg-type]
        latency=latency,
        budget_p95_ms=target.latency_budget_ms.p95,
        title=title,
        log=log,
    )

    prefix = engine.prefix
    files = dict(outcome.files)
    files["slice_metrics.parquet"] = to_parquet_bytes(outcome.slice_frame)
    files["latency_summary.json"] = json_bytes(latency.model_dump())
    report = {
        **outcome.eval_report,
        "engine": {
            "device": device,
            "precision": precision,
            "runtime": engine.runtime,
            **engine.engine.model_dump(),
        },
        "production_engine": None if production is None else production.engine.model_dump(),
        "dataset": {"tag": golden_dataset.tag, "split": settings.split},
        "challenge_suites": suite_names,
        "settings_sha256": SETTINGS_SHA256,
    }
    files["eval_report.json"] = json_bytes(report)
    files["robustness_report.json"] = json_bytes(outcome.robustness_report)
    stored = write_files(artifact_store, prefix, files)
    links = {name: f.uri for name, f in stored.items()}
    summary = summary_markdown(
        report, outcome.robustness_report, outcome.verdict_preview, title=title, links=links
    )
    stored.update(write_files(artifact_store, prefix, {"evaluation_summary.md": summary.encode()}))

    wandb_info: dict[str, Any] = {"mode": "disabled"}
    if config.log_wandb and settings.wandb.enabled:
        metrics = outcome.primary.metrics
        wandb_info = log_to_wandb(
            project=settings.wandb.project,
            mode=settings.wandb.mode,
            run_name=f"eval-{contract.model_name}-{contract.version}-{device}-{precision}",
            config={
                "device": device,
                "precision": precision,
                "version": contract.version,
                "production": None if production is None else production.contract.version,
                "dataset": golden_dataset.tag,
                "profile": config.profile,
                "engine_sha256": engine.engine.sha256,
            },
            summary={
                "AP": metrics["AP"],
                "AP50": metrics["AP50"],
                "AP75": metrics["AP75"],
                "ece": outcome.eval_report["calibration"]["ece"],
                "dece": outcome.eval_report["calibration"]["dece"],
                "mPC": outcome.eval_report["robustness_summary"]["mPC"],
                "rPC": outcome.eval_report["robustness_summary"]["rPC"],
                "ood_auroc_msp": outcome.eval_report["ood"]["auroc_msp"],
                "p95_ms": latency.p95_ms,
                "gate_preview_green": int(outcome.verdict_preview.passed),
            },
            images={
                k.removeprefix("plots/").removesuffix(".png"): v
                for k, v in files.items()
                if k.endswith(".png")
            },
            files=links,
            slice_rows=outcome.slice_frame.to_dicts(),
            adas_home=home.root,
            log=context.log.warning,
        )

    ref = EvalReportRef(
        device=device,
        precision=precision,
        engine=engine,
        production_engine=production,
        dataset_tag=golden_dataset.tag,
        split=settings.split,
        frames=len(split_ids),
        profile=config.profile,
        prefix=prefix,
        files=stored,
        snapshot=outcome.snapshot,
        production_snapshot=outcome.production_snapshot,
        latency=latency,
        challenge_suites=suite_names,
        settings_sha256=SETTINGS_SHA256,
        wandb=wandb_info,
    )
    metrics = outcome.primary.metrics
    pm = outcome.eval_report.get("production_primary") or {}
    rs = outcome.eval_report["robustness_summary"]
    cal = outcome.eval_report["calibration"]
    head = "\n".join(
        [
            f"### {title}",
            "",
            f"Production: {production.contract.version if production else '**none** (no baseline: relative gates skipped)'}; "
            f"{len(split_ids)} frames of `{settings.split}` ({golden_dataset.tag})"
            + (f" + challenge suites {', '.join(suite_names)}" if suite_names else ""),
            "",
            "| | candidate | production |",
            "|---|---|---|",
            f"| AP | {pct(metrics['AP'])} | {pct(pm.get('AP')) if pm else 'n/a'} |",
            f"| AP50 | {pct(metrics['AP50'])} | {pct(pm.get('AP50')) if pm else 'n/a'} |",
            *[
                f"| AP {c} | {pct(v)} | {pct((pm.get('per_class_AP') or {}).get(c)) if pm else 'n/a'} |"
                for c, v in metrics["per_class_AP"].items()
            ],
            f"| ECE / D-ECE | {pct(cal['ece'], 2)} / {pct(cal['dece'], 2)} | "
            + (
                f"{pct((outcome.eval_report['production_calibration'] or {}).get('ece'), 2)} / "
                f"{pct((outcome.eval_report['production_calibration'] or {}).get('dece'), 2)} |"
                if production
                else "n/a |"
            ),
            f"| mPC / rPC | {pct(rs['mPC'])} / {pct(rs['rPC'], 0)}% | |",
            f"| p95 latency | {latency.p95_ms:.2f} ms (budget {target.latency_budget_ms.p95:g} ms) | |",
            "",
            f"Gate preview: **{'GREEN' if outcome.verdict_preview.passed else 'RED'}**: {outcome.verdict_preview.rationale}",
        ]
    )
    slice_rows = [
        {
            "slice": r["slice"],
            "critical": bool(r["critical"]),
            "images": int(r["images"]),
            "AP": pct(r["AP"]),
            "production_AP": pct(r["production_AP"]),
            "delta_AP_pts": signed_pct(r["delta_AP"]),
            "status": r["status"],
        }
        for r in outcome.slice_frame.iter_rows(named=True)
    ]
    metadata: dict[str, Any] = {
        "summary": dg.MetadataValue.md(head),
        "slices": _table(
            slice_rows,
            {
                "slice": "string",
                "critical": "bool",
                "images": "int",
                "AP": "string",
                "production_AP": "string",
                "delta_AP_pts": "string",
                "status": "string",
            },
        ),
        "AP": float(metrics["AP"]) if metrics["AP"] >= 0 else None,
        "AP50": float(metrics["AP50"]) if metrics["AP50"] >= 0 else None,
        "ece": cal["ece"],
        "dece": cal["dece"],
        "mPC": rs["mPC"],
        "rPC": rs["rPC"],
        "ood_auroc_energy": outcome.eval_report["ood"]["auroc_energy"],
        "p95_latency_ms": latency.p95_ms,
        "gate_preview": "green" if outcome.verdict_preview.passed else "red",
        "baseline": production.contract.version if production else "none",
        "pr_curves": dg.MetadataValue.md(
            _png_markdown("PR curves", files["plots/pr_curves.png"], stored["plots/pr_curves.png"].uri)
        ),
        "reliability_diagram": dg.MetadataValue.md(
            _png_markdown("reliability", files["plots/reliability.png"], stored["plots/reliability.png"].uri)
        ),
        "confusion_matrix": dg.MetadataValue.md(
            _png_markdown(
                "confusion matrix",
                files["plots/confusion_matrix.png"],
                stored["plots/confusion_matrix.png"].uri,
            )
        ),
        "robustness_plot": dg.MetadataValue.url(stored["plots/robustness_decay.png"].uri),
        "eval_report_json": dg.MetadataValue.url(stored["eval_report.json"].uri),
        "slice_metrics_parquet": dg.MetadataValue.url(stored["slice_metrics.parquet"].uri),
        "robustness_report_json": dg.MetadataValue.url(stored["robustness_report.json"].uri),
        "evaluation_summary_md": dg.MetadataValue.url(stored["evaluation_summary.md"].uri),
        "timings_s": _table(
            [{"step": k, "seconds": round(v, 2)} for k, v in outcome.timings_s.items()],
            {"step": "string", "seconds": "float"},
        ),
        "wandb": dg.MetadataValue.json(wandb_info),
    }
    for name in ("drift_per_frame.html", "drift_per_detection.html"):
        if name in stored:
            metadata[name.removesuffix(".html")] = dg.MetadataValue.url(stored[name].uri)
    if outcome.eval_report.get("drift"):
        d = outcome.eval_report["drift"]
        metadata["drift_summary"] = dg.MetadataValue.md(
            f"Drifted columns (candidate vs production, same frames): {', '.join(d['drifted']) or 'none'}; "
            f"detections/frame {d['production_mean_detections_per_frame']} -> {d['candidate_mean_detections_per_frame']}"
        )
    return dg.MaterializeResult(value=ref, metadata=metadata)


def load_slices_from_store(store: ArtifactStore, ref: SliceCatalogRef):  # type: ignore[no-untyped-def]
    """The slice catalog snapshot the slice_catalog asset stored (verified), as a SliceCatalog."""
    path = store.fetch(ref.slices_file.key, ref.slices_file.sha256)
    return load_slices(path)


# --------------------------------------------------------------------------- quantization


with warnings.catch_warnings():  # MultiPartitionMapping is beta in Dagster 1.13
    warnings.simplefilter("ignore", dg.BetaWarning)
    _ALL_PRECISIONS_OF_DEVICE = dg.MultiPartitionMapping(
        {DEVICE_DIMENSION: dg.DimensionPartitionMapping(DEVICE_DIMENSION, dg.IdentityPartitionMapping())}
    )


def _quant_condition() -> dg.AutomationCondition:
    """Runs after any evaluation of the device updates (never for devices nobody evaluated, and
    without waiting for precisions the device does not offer), supported cells only."""
    return (
        dg.AutomationCondition.any_deps_updated()
        .allow(dg.AssetSelection.assets("eval_report"))
        .since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & SupportedTargetCondition()
    ).with_label("after an evaluation of the device, supported targets only")


@dg.asset(
    group_name=EVALUATION,
    kinds={"polars"},
    partitions_def=TARGET_PARTITIONS,
    ins={"eval_report": dg.AssetIn(partition_mapping=_ALL_PRECISIONS_OF_DEVICE)},
    automation_condition=_quant_condition(),
    description=per_target_description(
        "Quantization sensitivity of one device: FP32 vs FP16 vs INT8 per slice on the same frames "
        "(AP and delta vs the highest precision evaluated, detection agreement), read from the "
        "stored predictions of every evaluated precision of the device. Slices losing more than "
        "1 AP point are flagged."
    ),
)
def quantization_sensitivity(
    context: dg.AssetExecutionContext,
    eval_report: dict[str, EvalReportRef],
    golden_dataset: DatasetRef,
    slice_catalog: SliceCatalogRef,
    artifact_store: ArtifactStoreParam,
) -> dg.MaterializeResult:
    cell = Cell.parse(context.partition_key)
    device, precision = cell.device, cell.precision
    require = TARGET_CATALOG
    try:
        require_supported(require, device, precision)
    except UnsupportedTargetError as exc:
        raise dg.Failure(description=str(exc)) from exc
    reports = {Cell.parse(k).precision: r for k, r in eval_report.items()}
    if not reports:
        raise dg.Failure(description=f"no eval_report of {device} is materialized yet: nothing to compare")
    # The cell's own evaluation may still be running: compare what exists, say what is missing.
    mine = reports.get(precision) or next(iter(reports.values()))
    preds = {
        p: Predictions.from_json(
            artifact_store.get_bytes(r.files["predictions.json"].key, r.files["predictions.json"].sha256)
        )
        for p, r in reports.items()
        if "predictions.json" in r.files and r.dataset_tag == mine.dataset_tag
    }
    settings = default_evaluation_settings()
    m = golden_dataset.manifests[settings.split]
    gt = _read_json(artifact_store, m.key, m.sha256)
    slices = catalog_slices(load_slices_from_store(artifact_store, slice_catalog), gt)
    report = quant_report(
        gt, preds, slices, operating_threshold=float(mine.engine.contract.postprocess.score_threshold)
    )
    missing = [p for p in require.target(device).precisions if p not in preds]
    report["not_evaluated"] = missing
    if precision not in preds:
        context.log.warning(f"{device}/{precision} has no evaluation yet: compared {', '.join(preds)} only")
    report["versions"] = {p: r.version for p, r in reports.items()}
    stored = write_files(
        artifact_store,
        Cell(device, precision).pack_prefix(mine.engine.contract.task, mine.engine.contract.version),
        {
            "quantization_sensitivity.json": json_bytes(report),
            "quantization_sensitivity.parquet": to_parquet_bytes(sensitivity_frame(report)),
        },
    )
    agree_rows = [
        {
            "precision": p,
            "mean_matched_iou": "n/a" if a["mean_matched_iou"] is None else f"{a['mean_matched_iou']:.3f}",
            "mean_abs_score_drift": "n/a"
            if a["mean_abs_score_drift"] is None
            else f"{a['mean_abs_score_drift']:.4f}",
            "missing_fraction": "n/a" if a["missing_fraction"] is None else f"{a['missing_fraction']:.3f}",
            "extra_fraction": "n/a" if a["extra_fraction"] is None else f"{a['extra_fraction']:.3f}",
        }
        for p, a in report["agreement"].items()
    ]
    flagged = report["flagged"]
    text = (
        f"### {device}: precisions {', '.join(report['precisions'])} (reference {report['reference']})\n\n"
        + quant_markdown(report)
        + (f"\n\nNot evaluated yet: {', '.join(missing)}" if missing else "")
        + "\n\n"
        + (
            "Flagged (> 1 AP point lost): "
            + ", ".join(f"{f['precision']}/{f['slice']} {f['delta_AP_points']:+.1f}" for f in flagged)
            if flagged
            else "No slice loses more than 1 AP point against the reference."
        )
    )
    return dg.MaterializeResult(
        value=QuantizationRef(
            device=device,
            precision=precision,
            reference=report["reference"],
            precisions=report["precisions"],
            flagged=flagged,
            files=stored,
        ),
        metadata={
            "summary": dg.MetadataValue.md(text),
            "agreement_vs_reference": _table(
                agree_rows,
                {
                    "precision": "string",
                    "mean_matched_iou": "string",
                    "mean_abs_score_drift": "string",
                    "missing_fraction": "string",
                    "extra_fraction": "string",
                },
            ),
            "flagged_slices": len(flagged),
            "report": dg.MetadataValue.url(stored["quantization_sensitivity.json"].uri),
            "parquet": dg.MetadataValue.url(stored["quantization_sensitivity.parquet"].uri),
        },
    )


# --------------------------------------------------------------------------- regression gate


@dg.asset(
    group_name=EVALUATION,
    kinds={"python"},
    partitions_def=TARGET_PARTITIONS,
    automation_condition=eager_on_supported_targets(),
    code_version=f"gates-{GATES_SHA256[:12]}",
    description=per_target_description(
        "Green/red promotion signal from the versioned `config/gates.yaml`: weighted mAP >= "
        "production + 1.5 points, no critical-slice regression worse than 2% relative, p95 latency "
        "within the target's budget, ECE not worse than production beyond a tolerance. A red "
        "verdict is recorded (`passed: false`) with a blocking report naming the failing slices; "
        "the blocking `gate_is_green` check stops promotion."
    ),
)
def regression_gate(
    context: dg.AssetExecutionContext, eval_report: EvalReportRef, artifact_store: ArtifactStoreParam
) -> dg.MaterializeResult:
    cell = Cell.parse(context.partition_key)
    device, precision = cell.device, cell.precision
    budget = eval_report.latency.budget_p95_ms if eval_report.latency else None
    verdict = evaluate_gates(
        eval_report.snapshot, eval_report.production_snapshot, eval_report.latency, budget
    )
    contract = eval_report.engine.contract
    prod_version = eval_report.production_engine.contract.version if eval_report.production_engine else None
    title = f"{contract.model_name} {contract.version} on {device}/{precision}"
    files = {
        "gate_verdict.json": json_bytes(
            {
                "device": device,
                "precision": precision,
                "version": contract.version,
                "production_version": prod_version,
                **verdict.model_dump(),
            }
        )
    }
    if not verdict.passed:
        files["blocking_report.md"] = blocking_report(
            verdict,
            title,
            {
                "production": prod_version or "none",
                "evaluation": eval_report.files["eval_report.json"].uri
                if "eval_report.json" in eval_report.files
                else "",
                "slice metrics": eval_report.files["slice_metrics.parquet"].uri
                if "slice_metrics.parquet" in eval_report.files
                else "",
            },
        ).encode()
        context.log.warning(f"gate RED for {title}: {verdict.rationale}")
    stored = write_files(artifact_store, eval_report.prefix, files)
    ref = GateRef(
        device=device,
        precision=precision,
        version=contract.version,
        production_version=prod_version,
        passed=verdict.passed,
        verdict=verdict,
        files=stored,
    )
    metadata: dict[str, Any] = {
        "verdict": "green" if verdict.passed else "red",
        "passed": verdict.passed,
        "rationale": dg.MetadataValue.md(verdict_markdown(verdict, title)),
        "gates": _table(
            [
                {"gate": g.name, "status": g.status, "observed": g.observed, "requirement": g.requirement}
                for g in verdict.gates
            ],
            {"gate": "string", "status": "string", "observed": "string", "requirement": "string"},
        ),
        "failing_slices": dg.MetadataValue.text(", ".join(f.slice for f in verdict.failing_slices) or "none"),
        "gates_version": verdict.gates_version,
        "verdict_json": dg.MetadataValue.url(stored["gate_verdict.json"].uri),
    }
    if "blocking_report.md" in stored:
        metadata["blocking_report"] = dg.MetadataValue.url(stored["blocking_report.md"].uri)
        metadata["blocking_report_text"] = dg.MetadataValue.md(files["blocking_report.md"].decode())
    return dg.MaterializeResult(value=ref, metadata=metadata)


def _gate_is_green(regression_gate: GateRef) -> dg.AssetCheckResult:
    v = regression_gate.verdict
    return dg.AssetCheckResult(
        passed=regression_gate.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=v.rationale,
        metadata={
            "verdict": v.verdict,
            "failed_gates": dg.MetadataValue.text(", ".join(g.name for g in v.failed) or "none"),
            "failing_slices": dg.MetadataValue.text(", ".join(f.slice for f in v.failing_slices) or "none"),
            **(
                {"blocking_report": dg.MetadataValue.url(regression_gate.files["blocking_report.md"].uri)}
                if "blocking_report.md" in regression_gate.files
                else {}
            ),
        },
    )


with warnings.catch_warnings():  # partitioned asset checks are "preview" in Dagster 1.13
    warnings.simplefilter("ignore", dg.PreviewWarning)
    gate_is_green = dg.asset_check(
        asset=regression_gate,
        name="gate_is_green",
        blocking=True,
        partitions_def=TARGET_PARTITIONS,
        description="The regression gate is green. Blocking: promotion downstream of a red gate does not run.",
    )(_gate_is_green)


# --------------------------------------------------------------------------- triggers

evaluation_job = dg.define_asset_job(
    "evaluation_job",
    selection=dg.AssetSelection.assets(eval_report, quantization_sensitivity, regression_gate),
    partitions_def=TARGET_PARTITIONS,
    description="Re-evaluate engines: eval report, quantization sensitivity and regression gate of a cell.",
)


def _evaluated_cells(instance: dg.DagsterInstance) -> list[str]:
    """Supported cells whose engine exists: what a re-evaluation can run on."""
    done = instance.get_materialized_partitions(dg.AssetKey("engine"))
    return [str(k) for k in supported_partition_keys(TARGET_CATALOG) if str(k) in {str(d) for d in done}]


def _eval_run_config(profile: str, suites: list[str]) -> dict[str, Any]:
    return {"ops": {"eval_report": {"config": {"profile": profile, "challenge_suites": suites}}}}


@dg.sensor(
    job=evaluation_job,
    minimum_interval_seconds=60,
    default_status=default_sensor_status(),
    description="Re-evaluates every built engine when a challenge suite (frames + manifest.json) "
    "appears or changes under $ADAS_HOME/challenge_suites/.",
)
def challenge_suite_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    root = AdasHome.from_env().root / CHALLENGE_SUITES_DIR
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current = {p.name: suite_digest(p) for p in list_suites(root)}
    new = {name: d for name, d in current.items() if seen.get(name) != d}
    if not new:
        return dg.SkipReason(f"no new or changed challenge suite under {root}")
    cells = _evaluated_cells(context.instance)
    if not cells:
        return dg.SkipReason(
            f"challenge suite(s) {', '.join(sorted(new))} found, but no engine is built yet; "
            "they will be evaluated with the first engines"
        )
    requests = [
        dg.RunRequest(
            run_key=f"challenge-{name}-{digest[:12]}-{cell}",
            partition_key=cell,
            run_config=_eval_run_config("standard", [name]),
            tags={"adas/challenge_suite": name, "adas/trigger": "challenge_suite"},
        )
        for name, digest in sorted(new.items())
        for cell in cells
    ]
    return dg.SensorResult(run_requests=requests, cursor=json.dumps({**seen, **new}, sort_keys=True))


def _scheduled(context: dg.ScheduleEvaluationContext, profile: str, with_suites: bool) -> Any:
    cells = _evaluated_cells(context.instance)
    if not cells:
        return dg.SkipReason("no engine built yet: nothing to evaluate")
    suites = (
        [p.name for p in list_suites(AdasHome.from_env().root / CHALLENGE_SUITES_DIR)] if with_suites else []
    )
    return [
        dg.RunRequest(
            partition_key=cell,
            run_config=_eval_run_config(profile, suites),
            tags={"adas/trigger": f"schedule-{profile}"},
        )
        for cell in cells
    ]


@dg.schedule(
    job=evaluation_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=default_schedule_status(),
    name="nightly_regression_evaluation",
    description="Nightly regression: every built engine re-evaluated against production (standard profile).",
)
def nightly_regression_evaluation(context: dg.ScheduleEvaluationContext) -> Any:
    return _scheduled(context, "standard", with_suites=False)


@dg.schedule(
    job=evaluation_job,
    cron_schedule="0 3 * * 0",
    execution_timezone="UTC",
    default_status=default_schedule_status(),
    name="weekly_full_library_evaluation",
    description="Weekly full-library evaluation: full robustness profile plus every challenge suite.",
)
def weekly_full_library_evaluation(context: dg.ScheduleEvaluationContext) -> Any:
    return _scheduled(context, "full", with_suites=True)


evaluation_assets = [eval_report, quantization_sensitivity, regression_gate]
evaluation_checks = [dataset_integrity, gate_is_green]
evaluation_sensors = [challenge_suite_sensor]
evaluation_schedules = [nightly_regression_evaluation, weekly_full_library_evaluation]
evaluation_jobs = [evaluation_job]

__all__ = [
    "EvalConfig",
    "evaluation_assets",
    "evaluation_checks",
    "evaluation_jobs",
    "evaluation_schedules",
    "evaluation_sensors",
]
