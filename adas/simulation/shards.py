"""Shards of a sweep: what a shard is, how it runs, and its checkpoint in the artifact store.

* A shard is a pure function of (engine file, ``ShardSpec``): ``run_shard`` needs nothing else,
  so the same call runs in a local process or in a Kubernetes pod; the shard key is the sha256
  of the spec (which names the engine's sha256), so equal work has an equal key, whoever asks.
* A finished shard is checkpointed at ``sim-cache/shards/<key>/`` (its clips, then
  ``result.json``): the JSON's presence means the shard is complete.
* Results are reproducible bit for bit: every random draw is seeded by the run, ONNX Runtime
  runs single-threaded per process.

Domain code: no dagster import.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from adas.datasets.config import DatagenConfig
from adas.simulation.clips import make_gif
from adas.simulation.closed_loop import run_episode
from adas.simulation.config import (
    SCENARIOS_DIR,
    ClipConfig,
    ControllerConfig,
    MetricsConfig,
    SimulationConfig,
)
from adas.simulation.episode import EpisodeSpec
from adas.simulation.metrics import RunRecord, episode_metrics
from adas.simulation.perception import PerceptionSpec, build_perception
from adas.storage import ArtifactStore, sha256_file

# Bump when a change alters what an episode computes (invalidates every cached shard).
SIM_CODE_VERSION: Final[str] = "5"  # 5: cut-in and stopped-lead runs play OpenSCENARIO files
CHECKPOINT_PREFIX: Final[str] = "sim-cache/shards"


class EpisodeSettings(BaseModel):
    """Everything besides the run and the perception that decides what an episode computes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code_version: str = SIM_CODE_VERSION
    policy_frequency_hz: int
    controller: ControllerConfig
    metrics: MetricsConfig
    clips: ClipConfig
    datagen: DatagenConfig

    @classmethod
    def from_configs(cls, cfg: SimulationConfig, datagen: DatagenConfig) -> EpisodeSettings:
        return cls(
            policy_frequency_hz=cfg.policy_frequency_hz,
            controller=cfg.controller,
            metrics=cfg.metrics,
            clips=cfg.clips,
            datagen=datagen,
        )


class ShardSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    shard_index: int
    perception: PerceptionSpec
    runs: list[EpisodeSpec] = Field(min_length=1)
    settings: EpisodeSettings
    # The OpenSCENARIO files its runs play (path relative to the scenario root -> text): the shard
    # stays a pure function of its spec, and its key changes when a file does.
    scenario_files: dict[str, str] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        canonical = json.dumps(
            self.model_dump(mode="json", exclude={"shard_index"}), sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


class ShardResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    records: list[RunRecord]
    clips: dict[str, bytes] = Field(default_factory=dict, exclude=True)
    wall_s: float


def config_scenario_files() -> dict[str, str]:
    """The shipped scenario files (``config/scenarios/``), by name."""
    return {p.name: p.read_text() for p in sorted(SCENARIOS_DIR.iterdir()) if p.suffix in (".xosc", ".xodr")}


def files_for_runs(runs: Sequence[EpisodeSpec], files: Mapping[str, str]) -> dict[str, str]:
    """The files the OpenSCENARIO runs play: each run's ``xosc`` and every file in its folder (its road)."""
    out: dict[str, str] = {}
    for run in runs:
        if run.xosc is None:
            continue
        if run.xosc not in files:
            raise ValueError(f"run {run.run_id}: no scenario file {run.xosc} among {len(files)} files")
        folder = PurePosixPath(run.xosc).parent
        out |= {name: text for name, text in files.items() if PurePosixPath(name).parent == folder}
    return out


def make_shards(
    runs: Sequence[EpisodeSpec],
    perception: PerceptionSpec,
    settings: EpisodeSettings,
    n_shards: int,
    scenario_files: Mapping[str, str] | None = None,
) -> list[ShardSpec]:
    """Round-robin over the plan (categories spread evenly); empty shards are dropped. Each shard
    carries the scenario files its runs play (``scenario_files``, default: the shipped ones)."""
    files = config_scenario_files() if scenario_files is None else dict(scenario_files)
    n = max(1, min(n_shards, len(runs)))
    groups = [list(runs[i::n]) for i in range(n)]
    return [
        ShardSpec(
            shard_index=i,
            perception=perception,
            runs=g,
            settings=settings,
            scenario_files=files_for_runs(g, files),
        )
        for i, g in enumerate(groups)
        if g
    ]


_PERCEPTION_CACHE: dict[tuple[str, str | None], Any] = {}


def run_shard(engine_path: str | None, spec: ShardSpec, threads: int = 1) -> ShardResult:
    """Run every episode of a shard: a pure function of (engine file, shard spec)."""
    t0 = time.perf_counter()
    p = spec.perception
    if p.kind == "engine":
        if engine_path is None:
            raise ValueError(f"shard {spec.shard_index}: perception {p.label!r} needs an engine file")
        actual, _ = sha256_file(Path(engine_path))
        if p.engine_sha256 is not None and actual != p.engine_sha256:
            raise ValueError(
                f"shard {spec.shard_index}: {engine_path} has sha256 {actual}, the shard spec names {p.engine_sha256}"
            )
    cache_key = (p.model_dump_json(), engine_path)
    perception = _PERCEPTION_CACHE.get(cache_key)
    if perception is None:
        perception = build_perception(p, engine_path, threads=threads)
        _PERCEPTION_CACHE.clear()  # one engine per process at a time
        _PERCEPTION_CACHE[cache_key] = perception
    with tempfile.TemporaryDirectory(prefix="scenarios-") as root:
        for name, text in spec.scenario_files.items():
            path = Path(root) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return _run_episodes(spec, perception, Path(root), t0)


def _run_episodes(spec: ShardSpec, perception: Any, scenario_root: Path, t0: float) -> ShardResult:
    p = spec.perception
    st = spec.settings
    records: list[RunRecord] = []
    clips: dict[str, bytes] = {}
    for run in spec.runs:
        out = run_episode(
            run,
            perception,
            st.datagen,
            st.controller,
            policy_hz=st.policy_frequency_hz,
            clip_seconds=st.clips.seconds,
            scenario_root=scenario_root,
        )
        m = episode_metrics(run, out.trace, st.metrics)
        clip_key = None
        if m.failed and out.clip:
            clip_key = f"clips/{run.run_id}.gif"
            what = "collision" if m.collisions else ("off road" if m.off_road_events else "blocked")
            clips[clip_key] = make_gif(
                out.clip,
                scale=st.clips.scale,
                fps=st.clips.fps,
                title=f"{p.label} {run.run_id} {what}",
                frame_step=st.clips.frame_step,
                colors=st.clips.colors,
            )
            # A small copy for embedding in a report (1x, fewer frames and colours).
            clips[thumbnail_key(clip_key)] = make_gif(
                out.clip, scale=1, fps=st.clips.fps, frame_step=max(4, st.clips.frame_step), colors=8
            )
        records.append(
            RunRecord(
                model=p.label,
                spec=run,
                metrics=m,
                wall_s=round(out.wall_s, 3),
                cpu_s=round(out.cpu_s, 3),
                clip_key=clip_key,
            )
        )
    return ShardResult(key=spec.key, records=records, clips=clips, wall_s=round(time.perf_counter() - t0, 3))


def thumbnail_key(clip_key: str) -> str:
    return clip_key.removesuffix(".gif") + ".thumb.gif"


def init_worker() -> None:
    os.environ["SDL_VIDEODRIVER"] = "offscreen"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def checkpoint_prefix(key: str) -> str:
    return f"{CHECKPOINT_PREFIX}/{key}"


def save_checkpoint(store: ArtifactStore, result: ShardResult) -> str:
    """Clips first, then result.json: the JSON's presence means the shard is complete."""
    prefix = checkpoint_prefix(result.key)
    for rel, data in sorted(result.clips.items()):
        store.put_bytes(f"{prefix}/{rel}", data)
    body = result.model_dump_json(indent=1).encode()
    store.put_bytes(f"{prefix}/result.json", body)
    return f"{prefix}/result.json"


def load_checkpoint(store: ArtifactStore, key: str) -> ShardResult | None:
    path = f"{checkpoint_prefix(key)}/result.json"
    if not store.exists(path):
        return None
    result = ShardResult.model_validate_json(store.get_bytes(path))
    if result.key != key:
        raise ValueError(f"checkpoint {path} holds shard {result.key}, expected {key}")
    return result
