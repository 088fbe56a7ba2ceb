"""Deterministic demo-data generator on the highway-env simulator.

Each scene is one highway-env episode (its own seed) driven by the simulator's own traffic models;
frames are rendered top-down at ``frame.render_*``, ground-truth boxes come from the vehicle
polygons through the viewer's world-to-pixel transform, the frame is downscaled to the saved size
and a weather/lighting transform plus sensor noise is applied. Scenes are generated in worker
processes and assembled into COCO manifests in plan order, so the output depends only on
(config, size), never on scheduling.

Choices made to keep the domain from being trivially easy (see docs and config/datagen.yaml):
small objects (downscaled frames), three classes told apart by size only (shared colour palette,
some colours close to the road grey), dense traffic, heavy weather, a held-out scenario.

Modelling choices that differ from stock highway-env, each for a stated reason:
  - the ego is an IDM/MOBIL vehicle like the others: a scripted "IDLE" ego rear-ends traffic
    within seconds and the rest of the scene is a frozen pile-up;
  - collision checks are off for every vehicle: crashed vehicles stop forever, which again yields
    degenerate scenes; IDM keeps distances, and rare overlaps are acceptable in a perception set;
  - per-vehicle LENGTH/WIDTH (class sizes) are instance attributes set after reset; the renderer
    and ``polygon()`` both read them, and DISTANCE_WANTED is set per vehicle because IDM measures
    gaps centre to centre (its default assumes 5 m cars, which would make trucks overlap).

Every vehicle visible in a frame is annotated, the ego included (``is_ego: true``): a detector sees
the ego like any other vehicle, and consumers that must exclude it (the closed-loop controller) can
use the flag or its fixed position in the frame.

Domain code: no dagster import here.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image
from pydantic import BaseModel

from adas.datasets.coco import (
    CATEGORIES,
    DATASET_META_FILE,
    GOLDEN_SPLITS,
    REPLAY_SPLIT,
    image_file_name,
    split_file,
    write_coco,
    write_json_atomic,
)
from adas.datasets.config import (
    GENERATOR_VERSION,
    DatagenConfig,
    config_hash,
    dataset_tag,
)
from adas.datasets.scene_plan import SceneSpec, plan_scenes
from adas.datasets.simulator import Box, SceneSimulator, import_simulator
from adas.datasets.slices import DEFAULT_SLICES_PATH, SliceCatalog, load_slices
from adas.datasets.weather import apply_weather

logger = logging.getLogger(__name__)


# ==================================================================================================
# Worker


@dataclass(frozen=True)
class FrameResult:
    frame_index: int
    timestamp_s: float
    file_name: str
    boxes: list[Box]


@dataclass(frozen=True)
class SceneResult:
    spec: SceneSpec
    frames: list[FrameResult]
    seconds: float
    cpu_seconds: float


_WORKER_STATE: dict[str, Any] = {}


def _init_worker(config: DatagenConfig, out_dir: str) -> None:
    import_simulator()
    _WORKER_STATE["config"] = config
    _WORKER_STATE["out_dir"] = Path(out_dir)


def _run_scene_task(spec: SceneSpec) -> SceneResult:
    return run_scene(_WORKER_STATE["config"], spec, _WORKER_STATE["out_dir"])


def run_scene(config: DatagenConfig, spec: SceneSpec, out_dir: Path) -> SceneResult:
    """Simulate one scene, write its PNG frames under ``out_dir`` and return its annotations."""
    t0, c0 = time.perf_counter(), time.process_time()
    rng = np.random.default_rng([config.seed, spec.scene_index, 1])
    sim = SceneSimulator(config, spec.scenario, spec.density, spec.env_seed, rng)
    frames: list[FrameResult] = []
    try:
        sim.advance(spec.warmup_s)
        start = sim.time_s
        for k in range(spec.n_frames):
            if k:
                sim.advance(spec.frame_interval_s)
            rendered = sim.render()
            frame_rng = np.random.default_rng([config.seed, spec.scene_index, 2, k])
            # Same layout seed for every frame of the scene: fog banks and glare spots stay put.
            layout_rng = np.random.default_rng([config.seed, spec.scene_index, 3])
            img = apply_weather(
                rendered.image,
                spec.weather,
                spec.lighting,
                frame_rng,
                severity=spec.severity or 1,
                layout_rng=layout_rng,
                noise_sigma=config.sensor_noise.sigma,
                blur_sigma=config.sensor_noise.blur_sigma_px,
            )
            name = image_file_name(spec.split, spec.scene_id, k)
            path = out_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            # Level 1: noisy frames barely compress anyway, and level 6 costs ~7 ms a frame.
            Image.fromarray(img).save(path, format="PNG", compress_level=1)
            frames.append(FrameResult(k, round(sim.time_s - start, 3), name, rendered.boxes))
    finally:
        sim.close()
    return SceneResult(
        spec=spec, frames=frames, seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0
    )


# Rough relative cost per simulated second, for longest-first scheduling over the workers.
_COST: Final[dict[tuple[str, str], float]] = {
    ("highway", "sparse"): 0.5,
    ("highway", "dense"): 1.5,
    ("merge", "sparse"): 0.3,
    ("merge", "dense"): 0.8,
    ("intersection", "sparse"): 0.8,
    ("intersection", "dense"): 1.5,
    ("roundabout", "sparse"): 0.5,
    ("roundabout", "dense"): 1.2,
}


def _estimated_cost(spec: SceneSpec) -> float:
    sim_s = spec.warmup_s + spec.n_frames * spec.frame_interval_s
    return 1.0 + sim_s * _COST.get((spec.scenario, spec.density), 1.0)


# ==================================================================================================
# Orchestration


class DatasetSummary(BaseModel):
    tag: str
    out_dir: str
    size: str
    seed: int
    config_hash: str
    counts: dict[str, int]
    annotation_counts: dict[str, int]
    per_slice_counts: dict[str, dict[str, int]]
    n_scenes: int
    n_sequences: int
    workers: int
    seconds: float
    frames_per_s: float
    # CPU time spent inside scene simulation over all workers: wall-clock on an otherwise idle
    # machine is about cpu_seconds / workers (+ ~2 s start-up), whatever else shares the cores.
    cpu_seconds: float


def generate_dataset(
    out_dir: Path,
    config: DatagenConfig,
    size: str = "demo",
    workers: int = 2,
    progress: Callable[[str], None] | None = None,
    slices: SliceCatalog | None = None,
) -> DatasetSummary:
    """Generate the dataset into ``out_dir`` (its ``images/`` folder is replaced) and summarise it.

    ``workers <= 1`` runs in this process (sets SDL_VIDEODRIVER=offscreen here).
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    specs = plan_scenes(config, size)
    tag = dataset_tag(config, size)
    chash = config_hash(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Stale frames of an earlier run must not survive next to the new manifests.
    shutil.rmtree(out_dir / "images", ignore_errors=True)

    def report(msg: str) -> None:
        logger.info(msg)
        if progress is not None:
            progress(msg)

    n_frames_total = sum(s.n_frames for s in specs)
    report(f"datagen {tag}: {len(specs)} scenes, {n_frames_total} frames, {workers} worker(s)")
    order = sorted(specs, key=_estimated_cost, reverse=True)
    results: dict[int, SceneResult] = {}
    every = max(1, len(specs) // 20)
    done_frames = 0

    def collect(res_iter: Iterable[SceneResult]) -> None:
        nonlocal done_frames
        for res in res_iter:
            results[res.spec.scene_index] = res
            done_frames += len(res.frames)
            i = len(results)
            if i % every == 0 or i == len(specs):
                el = time.perf_counter() - t0
                report(
                    f"scene {i}/{len(specs)}: {done_frames}/{n_frames_total} frames, "
                    f"{done_frames / max(el, 1e-9):.1f} frames/s"
                )

    if workers <= 1:
        _init_worker(config, str(out_dir))
        collect(run_scene(config, s, out_dir) for s in order)
    else:
        ctx = mp.get_context("spawn")  # fork would copy pygame/SDL state; spawn starts clean workers
        with ctx.Pool(workers, initializer=_init_worker, initargs=(config, str(out_dir))) as pool:
            collect(pool.imap_unordered(_run_scene_task, order, chunksize=1))

    manifests = _assemble(config, specs, results, tag, chash)
    for split, data in manifests.items():
        write_coco(split_file(out_dir, split), data)

    if slices is None and DEFAULT_SLICES_PATH.is_file():
        slices = load_slices(DEFAULT_SLICES_PATH)
    per_slice = {split: slices.counts(data) for split, data in manifests.items()} if slices else {}
    counts = {split: len(data["images"]) for split, data in manifests.items()}
    ann_counts = {split: len(data["annotations"]) for split, data in manifests.items()}
    seconds = time.perf_counter() - t0
    meta = {
        "tag": tag,
        "seed": config.seed,
        "size": size,
        "generator_version": GENERATOR_VERSION,
        "config_hash": chash,
        "frame_size": [config.frame.height, config.frame.width],
        "categories": CATEGORIES,
        "counts": counts,
        "annotation_counts": ann_counts,
        "per_slice_counts": per_slice,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(out_dir / DATASET_META_FILE, meta)
    summary = DatasetSummary(
        tag=tag,
        out_dir=str(out_dir),
        size=size,
        seed=config.seed,
        config_hash=chash,
        counts=counts,
        annotation_counts=ann_counts,
        per_slice_counts=per_slice,
        n_scenes=len(specs),
        n_sequences=sum(1 for s in specs if s.split == REPLAY_SPLIT),
        workers=workers,
        seconds=round(seconds, 2),
        frames_per_s=round(n_frames_total / seconds, 2),
        cpu_seconds=round(sum(r.cpu_seconds for r in results.values()), 2),
    )
    report(
        f"datagen {tag}: done in {seconds:.1f} s ({summary.frames_per_s:.1f} frames/s, "
        f"{summary.cpu_seconds:.0f} CPU-s in scenes)"
    )
    return summary


def _assemble(
    config: DatagenConfig, specs: Sequence[SceneSpec], results: dict[int, SceneResult], tag: str, chash: str
) -> dict[str, dict[str, Any]]:
    """COCO dicts in plan order: ids are independent of which worker finished first."""
    manifests: dict[str, dict[str, Any]] = {}
    for split in (*GOLDEN_SPLITS, REPLAY_SPLIT):
        manifests[split] = {
            "info": {
                "description": f"simulated top-down ADAS frames ({split})",
                "tag": tag,
                "split": split,
                "seed": config.seed,
                "config_hash": chash,
                "generator_version": GENERATOR_VERSION,
            },
            "images": [],
            "annotations": [],
            "categories": CATEGORIES,
        }
    manifests[REPLAY_SPLIT]["sequences"] = []
    image_id = 1
    ann_id = 1
    for spec in specs:
        res = results[spec.scene_index]
        data = manifests[spec.split]
        ids: list[int] = []
        for fr in res.frames:
            data["images"].append(
                {
                    "id": image_id,
                    "file_name": fr.file_name,
                    "width": config.frame.width,
                    "height": config.frame.height,
                    "scene_id": spec.scene_id,
                    "frame_index": fr.frame_index,
                    "timestamp_s": fr.timestamp_s,
                    "scenario": spec.scenario,
                    "density": spec.density,
                    "weather": spec.weather,
                    "lighting": spec.lighting,
                    "split": spec.split,
                    "severity": spec.severity,
                }
            )
            for b in fr.boxes:
                x, y, w, h = b.bbox
                data["annotations"].append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": b.category_id,
                        "bbox": [x, y, w, h],
                        "area": round(w * h, 3),
                        "iscrowd": 0,
                        "track_id": b.track_id,
                        "is_ego": b.is_ego,
                    }
                )
                ann_id += 1
            ids.append(image_id)
            image_id += 1
        if spec.split == REPLAY_SPLIT:
            data["sequences"].append(
                {
                    "sequence_id": f"seq{len(data['sequences']):02d}-{spec.scene_id}",
                    "scene_id": spec.scene_id,
                    "image_ids": ids,
                    "fps": round(1.0 / spec.frame_interval_s, 3),
                    "scenario": spec.scenario,
                    "weather": spec.weather,
                    "lighting": spec.lighting,
                }
            )
    return manifests
