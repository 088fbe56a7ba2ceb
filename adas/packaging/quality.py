"""Engine quality at build time: numerical equivalence vs PyTorch and latency vs the budget.

Latency is measured only on a host that has the target's instruction set (targets.yaml
``isa``): an AVX2 build machine says nothing about a VNNI node's latency, so there the latency
is "not measured: host lacks avx512_vnni", which never passes a budget.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adas.catalog import TargetCatalog
from adas.cpu_isa import Isa, isa_report, missing_isa
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
    # None when not measured: ``latency_not_measured`` says why ("not measured: host lacks ...").
    latency: LatencyReport | None
    budget_ms: float
    equivalence_file: StoredFile
    latency_file: StoredFile
    latency_not_measured: str | None = None

    @property
    def p95_ms(self) -> float | None:
        return None if self.latency is None else float(self.latency.batch(1).p95_ms)

    @property
    def within_budget(self) -> bool:
        """Only a measured p95 within the budget passes."""
        return self.p95_ms is not None and self.p95_ms <= self.budget_ms

    @property
    def latency_summary(self) -> dict[str, float | int | str]:
        if self.latency is None:
            return {"not_measured": str(self.latency_not_measured), "budget_p95_ms": float(self.budget_ms)}
        b1 = self.latency.batch(1)
        return {
            "p50_ms": float(b1.p50_ms),
            "p95_ms": float(b1.p95_ms),
            "p99_ms": float(b1.p99_ms),
            "best_batch": int(self.latency.best_batch),
            "best_throughput_fps": float(self.latency.best_throughput_fps),
            "peak_rss_mib": float(self.latency.peak_rss_mib),
            "budget_p95_ms": float(self.budget_ms),
            "attempts": int(self.latency.attempts),
            **({"contended": self.latency.contended} if self.latency.contended else {}),
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
    target = catalog.target(ref.device)
    latency, not_measured, lat_body = latency_on_this_host(
        lambda: measure_latency(engine_path, contract, config=config), target.isa
    )
    budget = target.latency_budget_ms.p95
    eq_body = {**equivalence.to_metadata(), "map_drop_points": map_drop, "map_failure": map_failure}
    eq_file = stored_file(
        store,
        f"{ref.prefix}/equivalence_report.json",
        data=json.dumps(eq_body, indent=2, default=str).encode(),
    )
    lat_file = stored_file(
        store,
        f"{ref.prefix}/latency_report.json",
        data=json.dumps(lat_body, indent=2, default=str).encode(),
    )
    return EngineQuality(equivalence, map_drop, map_failure, latency, budget, eq_file, lat_file, not_measured)


def latency_on_this_host(
    measure: Callable[[], LatencyReport], target_isa: Isa | None
) -> tuple[LatencyReport | None, str | None, dict[str, Any]]:
    """``measure()`` when this host has the target's instruction set; otherwise no report and
    the reason, "not measured: host lacks avx512_vnni". Also the body of ``latency_report.json``."""
    lacking = missing_isa(target_isa)
    if lacking is not None:
        reason = f"not measured: {lacking}"
        return None, reason, {"not_measured": reason, **isa_report(target_isa)}
    report = measure()
    return report, None, {**report.to_metadata(), **isa_report(target_isa)}
