"""Engine quality at build time: numerical equivalence vs PyTorch and latency vs the budget."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from adas.catalog import TargetCatalog
from adas.intake.refs import DatasetRef, StoredFile
from adas.intake.stored import read_json, stored_file
from adas.packaging.build import fetch_bundle, load_frames
from adas.packaging.config import PackagingConfig
from adas.packaging.equivalence import (
    EquivalenceReport,
    check_equivalence,
    map_drop_failure,
    task_map_drop,
)
from adas.packaging.latency import LatencyReport, measure_latency
from adas.packaging.ort_engines import OrtEngine
from adas.packaging.refs import EngineRef
from adas.packaging.sandboxed_model import sandboxed_reference
from adas.storage import ArtifactStore

# Real validation frames used for the decode-level comparison and the INT8 task check.
VALIDATION_FRAMES = 200


@dataclass
class EngineQuality:
    equivalence: EquivalenceReport
    map_drop: float | None
    map_failure: str | None
    latency: LatencyReport
    budget_ms: float
    equivalence_file: StoredFile
    latency_file: StoredFile

    @property
    def p95_ms(self) -> float:
        return float(self.latency.batch(1).p95_ms)

    @property
    def within_budget(self) -> bool:
        return self.p95_ms <= self.budget_ms

    @property
    def latency_summary(self) -> dict[str, float | int]:
        b1 = self.latency.batch(1)
        return {
            "p50_ms": float(b1.p50_ms),
            "p95_ms": float(b1.p95_ms),
            "p99_ms": float(b1.p99_ms),
            "best_batch": int(self.latency.best_batch),
            "best_throughput_fps": float(self.latency.best_throughput_fps),
            "peak_rss_mib": float(self.latency.peak_rss_mib),
            "budget_p95_ms": float(self.budget_ms),
        }


def validation_sample(
    store: ArtifactStore, dataset: DatasetRef, n: int = VALIDATION_FRAMES
) -> tuple[dict, list[int], Any]:
    """The first ``n`` validation images (manifest order: deterministic), their ids and frames."""
    coco = read_json(store, dataset.manifests["golden_val"])
    images = coco["images"][:n]
    frames = load_frames(store, dataset, [img["file_name"] for img in images])
    return coco, [img["id"] for img in images], frames


def engine_quality(
    store: ArtifactStore, ref: EngineRef, dataset: DatasetRef, catalog: TargetCatalog, config: PackagingConfig
) -> EngineQuality:
    if ref.runtime != "onnxruntime":
        raise NotImplementedError(f"build-time checks run ONNX Runtime engines here, not {ref.runtime}")
    contract = ref.contract
    engine_path = store.fetch(ref.engine.key, expected_sha256=ref.engine.sha256)
    engine = OrtEngine(engine_path, contract=contract)
    coco, image_ids, frames = validation_sample(store, dataset)
    map_drop = map_failure = None
    # The eager FP32 reference is the candidate's program, run in the sandbox.
    with sandboxed_reference(fetch_bundle(store, ref.candidate), contract) as reference:
        equivalence = check_equivalence(reference, engine, contract, config, ref.precision, frames)
        if ref.precision == "int8":
            _, _, map_drop = task_map_drop(reference, engine, contract, coco, image_ids, frames)
            map_failure = map_drop_failure(map_drop, config, ref.precision)
    latency = measure_latency(engine_path, contract, config=config)
    budget = catalog.target(ref.device).latency_budget_ms.p95
    eq_body = {**equivalence.to_metadata(), "map_drop_points": map_drop, "map_failure": map_failure}
    eq_file = stored_file(
        store,
        f"{ref.prefix}/equivalence_report.json",
        data=json.dumps(eq_body, indent=2, default=str).encode(),
    )
    lat_file = stored_file(
        store,
        f"{ref.prefix}/latency_report.json",
        data=json.dumps(latency.to_metadata(), indent=2, default=str).encode(),
    )
    return EngineQuality(equivalence, map_drop, map_failure, latency, budget, eq_file, lat_file)
