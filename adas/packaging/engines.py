"""The engine of one device x precision cell: built, stored and, for the candidate, checked."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adas.catalog import TargetCatalog, UnsupportedTargetError
from adas.cell import Cell
from adas.intake.refs import CalibrationShardRef, CandidateRef, DatasetRef
from adas.packaging.build import build_engine, calibration_frames, export_candidate
from adas.packaging.config import PackagingConfig
from adas.packaging.operators import UnsupportedOperatorError
from adas.packaging.quality import EngineQuality, engine_quality
from adas.packaging.refs import EngineRef, ExportRef
from adas.packaging.tensorrt_engines import TensorRTUnavailable
from adas.storage import ArtifactStore

# A cell that cannot be built here, said in one sentence: not in the catalog, no TensorRT node,
# or an operator the runtime lacks.
CELL_BUILD_ERRORS = (UnsupportedTargetError, TensorRTUnavailable, UnsupportedOperatorError)


@dataclass
class CellEngine:
    ref: EngineRef
    details: dict[str, Any]
    # Build-time checks (equivalence vs PyTorch, latency vs budget); None when not run.
    quality: EngineQuality | None = None


def build_cell_engine(
    store: ArtifactStore,
    export: ExportRef,
    cell: Cell,
    *,
    catalog: TargetCatalog,
    config: PackagingConfig,
    shard: CalibrationShardRef,
    dataset: DatasetRef,
    with_checks: bool,
    log: Callable[[str], None] = print,
) -> CellEngine:
    """Build ``cell``'s engine from ``export`` (INT8 calibrated on ``shard``) and, ``with_checks``,
    measure its equivalence and latency, recorded in the ref's ``build``.

    Raises one of :data:`CELL_BUILD_ERRORS` for a cell that cannot be built here.
    """
    device, precision = cell.device, cell.precision
    frames = calibration_frames(store, shard, dataset) if precision == "int8" else None
    with tempfile.TemporaryDirectory(prefix=f"engine-{device}-{precision}-") as tmp:
        outcome = build_engine(
            store,
            export,
            device,
            precision,
            catalog=catalog,
            config=config,
            calibration_frames=frames,
            workdir=Path(tmp),
        )
    ref, quality = outcome.ref, None
    if with_checks:
        log(f"{device}/{precision}: numerical equivalence and latency")
        quality = engine_quality(store, ref, dataset, catalog, config)
        build = {
            **ref.build,
            "latency": quality.latency_summary,
            "equivalence_passed": quality.equivalence.passed,
        }
        ref = ref.model_copy(update={"build": build})
    log(f"{device}/{precision}: {ref.runtime} engine {ref.engine.size:,} bytes at {ref.engine.uri}")
    return CellEngine(ref, outcome.details, quality)


def build_production_engine(
    store: ArtifactStore,
    production: CandidateRef,
    cell: Cell,
    *,
    catalog: TargetCatalog,
    config: PackagingConfig,
    shard: CalibrationShardRef,
    dataset: DatasetRef,
    log: Callable[[str], None] = print,
) -> CellEngine:
    """The production model exported and built for ``cell`` with the candidate's code (no checks)."""
    export = export_candidate(store, production, config).ref
    return build_cell_engine(
        store,
        export,
        cell,
        catalog=catalog,
        config=config,
        shard=shard,
        dataset=dataset,
        with_checks=False,
        log=log,
    )
