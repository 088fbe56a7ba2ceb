"""Use-case of the ``replay_metrics`` asset: the recorded drives through candidate and production.

Reads the replay bundle's sequences from the store, runs every frame through both ONNX Runtime
engines (``perception.EnginePerception``), scores them (``replay.replay``) and stores the report,
the per-segment table and the flagged segments under ``<pack>/replay/``.

Domain code: no dagster import.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from PIL import Image

from adas.catalog import TargetCatalog
from adas.datasets.config import DatagenConfig
from adas.detector.postprocess import Detections
from adas.intake.refs import ReplayBundleRef, StoredFile
from adas.intake.stored import DatasetFiles, fetch_file, read_json, stored_file
from adas.packaging.refs import EngineRef
from adas.simulation.config import SimulationConfig
from adas.simulation.perception import EnginePerception, FrameContext
from adas.simulation.refs import ReplayMetricsRef
from adas.simulation.replay import detect_frames, replay
from adas.simulation.replay_report import ReplayReport
from adas.simulation.steps import EnginePair, json_bytes
from adas.storage import ArtifactStore

# Replay frames carry no simulator state: one neutral context for every frame.
_NO_CONTEXT = FrameContext(seed=0, step=0, time_s=0.0, weather="", lighting="", severity=0)


@dataclass(frozen=True)
class ReplayMetricsResult:
    ref: ReplayMetricsRef
    report: ReplayReport


def replay_px_per_m(datagen: DatagenConfig) -> float:
    """Pixels per metre on the saved (downscaled) replay frames."""
    return datagen.frame.scaling_px_per_m * datagen.frame.width / datagen.frame.render_width


def _detections(
    store: ArtifactStore,
    coco: dict[str, Any],
    dataset_files: DatasetFiles,
    engines: dict[str, EngineRef],
    log: Callable[[str], None],
) -> dict[str, dict[int, Detections]]:
    """Every replay frame through each labelled engine (frames read from the store once, each
    verified against the dataset's file index)."""
    frames: dict[int, np.ndarray] = {}

    def load(im: dict) -> np.ndarray:
        if im["id"] not in frames:
            frames[im["id"]] = np.asarray(Image.open(dataset_files.fetch(im["file_name"])).convert("RGB"))
        return frames[im["id"]]

    dets = {}
    for label, ref in engines.items():
        path = fetch_file(store, ref.engine)
        perception = EnginePerception(path, ref.contract, label=label, threads=2)
        dets[label] = detect_frames(coco, load, lambda f, p=perception: p.detect(f, _NO_CONTEXT))
        log(f"replayed {len(dets[label])} frames through {label} {ref.contract.version}")
    return dets


def _store_report(store: ArtifactStore, prefix: str, report: ReplayReport) -> dict[str, StoredFile]:
    seg_rows = [
        {"model": m.model, **s.model_dump()}
        for m in (report.candidate, report.production)
        for s in m.segments
    ]
    buf = io.BytesIO()
    pl.DataFrame(seg_rows, infer_schema_length=None).write_parquet(buf)
    flagged = [f.model_dump(mode="json") for f in report.flagged]
    return {
        "replay_report.json": stored_file(
            store, f"{prefix}/replay_report.json", data=report.model_dump_json(indent=1).encode()
        ),
        "replay_segments.parquet": stored_file(
            store, f"{prefix}/replay_segments.parquet", data=buf.getvalue()
        ),
        "flagged_segments.json": stored_file(
            store, f"{prefix}/flagged_segments.json", data=json_bytes(flagged)
        ),
    }


def compute_replay_metrics(
    store: ArtifactStore,
    *,
    pair: EnginePair,
    catalog: TargetCatalog,
    cfg: SimulationConfig,
    datagen: DatagenConfig,
    bundle: ReplayBundleRef,
    log: Callable[[str], None] = lambda _: None,
) -> ReplayMetricsResult:
    """Replay the bundle through candidate and production; store and describe the report."""
    pair.require_simulatable(catalog)
    engine = pair.candidate
    coco = read_json(store, bundle.manifest)
    files = DatasetFiles.of(store, bundle)
    dets = _detections(store, coco, files, {"candidate": engine, "production": pair.production}, log)
    report = replay(coco, dets["candidate"], dets["production"], cfg.replay, replay_px_per_m(datagen))
    files = _store_report(store, f"{engine.prefix}/replay", report)
    ref = ReplayMetricsRef(
        **pair.identity(),
        prefix=engine.prefix,
        files=files,
        candidate=report.candidate.totals(),
        production=report.production.totals(),
        flagged=len(report.flagged),
    )
    return ReplayMetricsResult(ref=ref, report=report)
