"""Export and engine building: one path for the candidate and for the production baseline."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from adas.catalog import Target, TargetCatalog, require_supported
from adas.cell import Cell
from adas.cpu_isa import isa_report
from adas.intake.contract import Contract
from adas.intake.files import BundleRejected
from adas.intake.onnx_graph import check_onnx_file
from adas.intake.refs import CalibrationShardRef, CandidateRef, DatasetRef, StoredFile
from adas.intake.stored import DatasetFiles, read_json, stored_file
from adas.packaging.config import PackagingConfig
from adas.packaging.export import ExportError, ExportResult, graph_result
from adas.packaging.operators import coverage_report, require_supported_ops
from adas.packaging.ort_engines import build_fp32_engine
from adas.packaging.ort_int8 import build_int8_engine
from adas.packaging.publish import publish_file
from adas.packaging.refs import EngineRef, ExportRef, model_prefix
from adas.packaging.sandboxed_model import export_in_sandbox
from adas.packaging.tensorrt_engines import build_tensorrt_engine
from adas.storage import ArtifactStore

RUNTIMES = ("onnxruntime", "tensorrt")


def fetch_bundle(store: ArtifactStore, candidate: CandidateRef) -> Path:
    """Every bundle file verified against intake's hash; returns the local bundle folder."""
    paths = {name: store.fetch(f.key, expected_sha256=f.sha256) for name, f in candidate.files.items()}
    return paths[candidate.contract.model_file].parent


def load_frames(store: ArtifactStore, dataset: DatasetRef, file_names: Sequence[str]) -> np.ndarray:
    """uint8 RGB frames [N, H, W, 3] from the dataset in the store (each verified against the
    dataset's file index)."""
    return DatasetFiles.of(store, dataset).rgb_frames(file_names)


def calibration_frames(store: ArtifactStore, shard: CalibrationShardRef, dataset: DatasetRef) -> np.ndarray:
    """The frames of the INT8 calibration shard."""
    return load_frames(store, dataset, read_json(store, shard.shard)["file_names"])


@dataclass
class ExportOutcome:
    ref: ExportRef
    details: dict[str, Any]
    coverage_markdown: dict[str, str] = field(default_factory=dict)


def export_graph(
    store: ArtifactStore, candidate: CandidateRef, config: PackagingConfig, workdir: Path
) -> ExportOutcome:
    """ONNX (opset from config, dynamic batch) + the bundle's torch program + operator coverage.

    The program is exported in the sandbox (:func:`export_in_sandbox`); this process only
    validates and stores the graph. An ONNX bundle's file is the graph (:func:`given_graph`). Raises ``ExportError`` (``UnsupportedExportOperator`` naming
    the operator, where the model uses it, the opset and a hint)."""
    bundle_dir = fetch_bundle(store, candidate)
    contract = candidate.contract
    onnx_path = workdir / "model.onnx"
    if contract.model_format == "onnx":
        result = given_graph(bundle_dir / contract.model_file, contract, onnx_path)
    else:
        result = export_in_sandbox(
            bundle_dir,
            contract,
            onnx_path,
            opset=config.onnx.opset,
            max_abs_diff_tolerance=config.onnx.sanity_max_abs_diff,
        )
    reports = {rt: coverage_report(onnx_path, rt) for rt in RUNTIMES}
    prefix = f"{model_prefix(contract.task, contract.version)}/export"
    onnx_file = stored_file(store, f"{prefix}/model.onnx", onnx_path)
    program = stored_file(store, f"{prefix}/{contract.model_file}", bundle_dir / contract.model_file)
    coverage = stored_file(
        store,
        f"{prefix}/operator_coverage.json",
        data=json.dumps({rt: r.to_metadata() for rt, r in reports.items()}, indent=2, default=str).encode(),
    )
    ref = ExportRef(
        candidate=candidate,
        onnx=onnx_file,
        torch_program=program,
        coverage=coverage,
        runtimes_supported={rt: r.supported for rt, r in reports.items()},
    )
    return ExportOutcome(ref, result.to_metadata(), {rt: r.markdown() for rt, r in reports.items()})


def given_graph(model_file: Path, contract: Contract, out_path: Path) -> ExportResult:
    """The export step of an ONNX bundle: its own file is the graph, kept byte for byte (its
    opset, >= 17, and its dynamic batch). Validated (:func:`check_onnx_file`: no external data,
    standard domains, the contract's tensors, checker), then ONNX shape inference in strict
    mode; the operator check is the coverage report that follows. Nothing runs: the file was
    run in the sandbox at intake, and the FP32 reference runs it there again."""
    t0 = time.perf_counter()
    try:
        model = check_onnx_file(model_file, contract)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except BundleRejected as exc:
        raise ExportError(f"{exc.field}: {exc.reason}") from exc
    except onnx.shape_inference.InferenceError as exc:
        raise ExportError(f"{contract.model_file}: ONNX shape inference failed: {str(exc)[:500]}") from exc
    shutil.copyfile(model_file, out_path)
    result = graph_result(
        out_path, model, contract, max_abs_diff=0.0, export_seconds=time.perf_counter() - t0, renamed_nodes=0
    )
    result.notes.append("ONNX bundle: the given model.onnx is the graph (validated, not re-exported)")
    return result


def export_candidate(store: ArtifactStore, candidate: CandidateRef, config: PackagingConfig) -> ExportOutcome:
    """:func:`export_graph` in a scratch folder of its own."""
    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        return export_graph(store, candidate, config, Path(tmp))


def ort_build_environment(target: Target) -> dict[str, str | None]:
    """What an ONNX Runtime engine was built with and for: the build machine's and the target's
    instruction sets (``/proc/cpuinfo``; targets.yaml) and the ONNX Runtime version."""
    return {**isa_report(target.isa), "onnxruntime_version": importlib.metadata.version("onnxruntime")}


@dataclass
class EngineOutcome:
    ref: EngineRef
    details: dict[str, Any]


def build_engine(
    store: ArtifactStore,
    export: ExportRef,
    device: str,
    precision: str,
    *,
    catalog: TargetCatalog,
    config: PackagingConfig,
    calibration_frames: np.ndarray | None,
    workdir: Path,
) -> EngineOutcome:
    """Build the engine of one catalog cell and store it under ``models/<task>/<version>/<device>/<precision>/``.

    Raises ``UnsupportedTargetError`` for a cell the catalog does not offer,
    ``UnsupportedOperatorError`` naming node, op, this cell and a hint when the runtime cannot run
    the graph (the other cells are unaffected),
    ``TensorRTUnavailable`` ("needs a <device> node with TensorRT") off a GPU node.
    """
    target = require_supported(catalog, device, precision)
    contract = export.candidate.contract
    onnx_path = store.fetch(export.onnx.key, expected_sha256=export.onnx.sha256)
    # An operator this runtime lacks fails this cell only, naming the cell.
    require_supported_ops(coverage_report(onnx_path, target.runtime), target=f"{device}/{precision}")
    prefix = Cell(device, precision).pack_prefix(contract.task, contract.version)
    cache: StoredFile | None = None
    if target.runtime == "onnxruntime":
        if precision == "fp32":
            build = build_fp32_engine(onnx_path, workdir / "model.onnx", contract=contract)
            details = build.to_metadata()
        elif precision == "int8":
            if calibration_frames is None or len(calibration_frames) == 0:
                raise ValueError(f"{device}/int8 needs calibration frames (the calibration_shard asset)")
            build = build_int8_engine(
                onnx_path,
                calibration_frames,
                contract,
                workdir,
                config.int8,
                runtime="onnxruntime",
                target_isa=target.isa,
            )
            details = build.to_metadata()
            cache = publish_file(store, f"{prefix}/calibration.cache", build.calibration_cache)
        else:  # the catalog check above keeps other precisions out; this guards a catalog edit
            raise ValueError(f"onnxruntime engines are built for fp32 and int8, not {precision}")
        details = {**details, **ort_build_environment(target)}
        # Write-once: a rebuild with other bytes goes to a content-addressed key beside it.
        engine_file = publish_file(store, f"{prefix}/model.onnx", build.path)
    else:
        trt = build_tensorrt_engine(
            onnx_path,
            device,
            precision,
            workdir,
            workdir / "timing.cache",
            calibration_frames=calibration_frames if precision == "int8" else None,
            contract=contract,
            int8_config=config.int8,
        )
        details = trt.to_metadata()
        engine_file = publish_file(store, f"{prefix}/model.plan", trt.path)
    ref = EngineRef(
        device=device,
        precision=precision,
        runtime=target.runtime,
        candidate=export.candidate,
        engine=engine_file,
        calibration_cache=cache,
        build={k: v for k, v in details.items() if isinstance(v, str | int | float | bool | list | dict)},
    )
    return EngineOutcome(ref, details)
