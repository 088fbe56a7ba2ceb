"""Sweeps of closed-loop runs: planning, sharding, checkpointing, local processes.

* ``plan_runs``: a category's parameter axes (config/simulation.yaml) sampled with balanced
  marginals into concrete ``EpisodeSpec`` runs, each with its own seed derived from the sweep
  seed: the same config gives the same runs, for candidate and production alike.
* A shard is a pure function of (engine file, ``ShardSpec``): ``run_shard`` needs nothing else,
  so the same call runs in a local process or in a Kubernetes pod; the shard key is the sha256
  of the spec (which names the engine's sha256), so equal work has an equal key, whoever asks.
* ``run_sweep`` checkpoints each finished shard into the artifact store
  (``sim-cache/shards/<key>/result.json`` after its clips), so a crashed or cancelled sweep
  resumes where it stopped, and production's shards are reused across candidates. A
  ``ShardExecutor`` computes the shards without a checkpoint: ``LocalProcessExecutor`` (local
  processes) or ``RemoteShardExecutor``, which puts each spec in the store and launches the
  shard command (``main``, store form) elsewhere; ``resources.simulation_shards`` launches it as
  a Kubernetes Job per shard through dagster-k8s in production.
* Results are reproducible bit for bit: every random draw is seeded by the run, ONNX Runtime
  runs single-threaded per process, records come back in plan order whatever the scheduling.

Domain code: no dagster import; the store is duck-typed (``exists``, ``get_bytes``, ``put_bytes``).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adas.datasets.generator import DatagenConfig
from adas.simulation.clips import make_gif
from adas.simulation.closed_loop import EpisodeSpec, run_episode
from adas.simulation.config import (
    CATEGORIES,
    ClipConfig,
    ControllerConfig,
    MetricsConfig,
    SimulationConfig,
)
from adas.simulation.metrics import RunRecord, episode_metrics
from adas.simulation.perception import PerceptionSpec, build_perception
from adas.storage import ArtifactIntegrityError, ArtifactStore, StoreSettings

logger = logging.getLogger(__name__)

# Bump when a change alters what an episode computes (invalidates every cached shard).
SIM_CODE_VERSION: Final[str] = "4"
CHECKPOINT_PREFIX: Final[str] = "sim-cache/shards"


# ==================================================================================================
# Planning


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _balanced(values: Sequence[Any], n: int, rng: np.random.Generator) -> list[Any]:
    """``n`` draws where every value appears floor/ceil(n / len) times, in a seeded order."""
    out: list[Any] = []
    while len(out) < n:
        out.extend(values[i] for i in rng.permutation(len(values)))
    return out[:n]


def plan_category(cfg: SimulationConfig, category: str, n: int) -> list[EpisodeSpec]:
    cc = cfg.categories[category]  # type: ignore[index]
    cat_index = CATEGORIES.index(category)
    rng = np.random.default_rng([cfg.seed, cat_index, 17])
    axes = {
        "density": _balanced(cc.densities, n, rng),
        "ego_speed_mps": _balanced(cc.ego_speed_mps, n, rng),
        "gap_time_s": _balanced(cc.gap_time_s, n, rng),
        "actor_type": _balanced(cc.actor_types, n, rng),
        "actor_speed_delta_mps": _balanced(cc.actor_speed_delta_mps, n, rng),
        "condition": _balanced(cc.conditions, n, rng),
    }
    scripted = category in ("cut_in", "stopped_lead")
    runs = []
    for i in range(n):
        cond = axes["condition"][i]
        runs.append(
            EpisodeSpec(
                run_id=f"{category}-{i:03d}",
                category=category,  # type: ignore[arg-type]
                scenario=cc.scenario,
                density=axes["density"][i],
                weather=cond.weather,
                lighting=cond.lighting,
                severity=cond.severity,
                seed=_seed(cfg.seed, cat_index, i),
                duration_s=cc.duration_s,
                ego_speed_mps=float(axes["ego_speed_mps"][i]),
                gap_time_s=float(axes["gap_time_s"][i]) if category == "cut_in" else None,
                actor_type=axes["actor_type"][i] if scripted else None,
                actor_speed_delta_mps=float(axes["actor_speed_delta_mps"][i])
                if category == "cut_in"
                else None,
            )
        )
    return runs


def plan_runs(cfg: SimulationConfig, size: str, library: Sequence[EpisodeSpec] = ()) -> list[EpisodeSpec]:
    """Every run of a named sweep size: per-category sweeps, then up to ``library_runs`` library runs."""
    if size not in cfg.sweeps:
        raise ValueError(
            f"unknown sweep size {size!r}; config/simulation.yaml defines: {', '.join(cfg.sweeps)}"
        )
    sweep = cfg.sweeps[size]
    runs: list[EpisodeSpec] = []
    for cat in CATEGORIES:
        n = sweep.runs.get(cat, 0)  # type: ignore[call-overload]
        if n and cat in cfg.categories:
            runs.extend(plan_category(cfg, cat, n))
    runs.extend(list(library)[: sweep.library_runs])
    if sweep.duration_s is not None:
        runs = [r.model_copy(update={"duration_s": sweep.duration_s}) for r in runs]
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate run ids in sweep {size!r}")
    return runs


# ==================================================================================================
# Shards


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


def make_shards(
    runs: Sequence[EpisodeSpec], perception: PerceptionSpec, settings: EpisodeSettings, n_shards: int
) -> list[ShardSpec]:
    """Round-robin over the plan (categories spread evenly); empty shards are dropped."""
    n = max(1, min(n_shards, len(runs)))
    groups = [list(runs[i::n]) for i in range(n)]
    return [
        ShardSpec(shard_index=i, perception=perception, runs=g, settings=settings)
        for i, g in enumerate(groups)
        if g
    ]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


_PERCEPTION_CACHE: dict[tuple[str, str | None], Any] = {}


def run_shard(engine_path: str | None, spec: ShardSpec, threads: int = 1) -> ShardResult:
    """Run every episode of a shard: a pure function of (engine file, shard spec)."""
    t0 = time.perf_counter()
    p = spec.perception
    if p.kind == "engine":
        if engine_path is None:
            raise ValueError(f"shard {spec.shard_index}: perception {p.label!r} needs an engine file")
        actual = _sha256_file(Path(engine_path))
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


def _init_worker() -> None:
    os.environ["SDL_VIDEODRIVER"] = "offscreen"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# ==================================================================================================
# Checkpoints and the sweep


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


class SweepError(RuntimeError):
    """Some shards failed; the ones that finished are checkpointed and will be reused."""


@dataclass
class SweepResult:
    perception: str
    records: list[RunRecord]
    clip_keys: dict[str, str]  # run_id -> store key of the clip
    shards_total: int
    shards_computed: list[int] = field(default_factory=list)
    shards_reused: list[int] = field(default_factory=list)
    wall_s: float = 0.0
    episodes_computed: int = 0
    compute_s: float = 0.0


ShardRunner = Callable[[str | None, ShardSpec], ShardResult]


@dataclass(frozen=True)
class EngineFile:
    """The engine of a sweep, as each kind of executor needs it.

    ``path``: a verified local copy (local processes); ``key`` + ``sha256``: where it lies in the
    artifact store (a pod fetches it from there and verifies it). An oracle perception has none.
    """

    path: str | None = None
    key: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class ShardOutcome:
    """One todo shard as an executor finished it: a result, or an error in one line."""

    spec: ShardSpec
    result: ShardResult | None = None
    error: str | None = None
    checkpointed: bool = False  # the executor already wrote the checkpoint (a pod does)


class ShardExecutor(Protocol):
    """Computes the shards ``run_sweep`` found no checkpoint for, and nothing else: planning,
    checkpoint reuse, progress and ``SweepError`` stay in ``run_sweep``."""

    def describe(self) -> str: ...

    def execute(
        self, todo: Sequence[ShardSpec], engine: EngineFile, store: ArtifactStore
    ) -> Iterator[ShardOutcome]: ...


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


@dataclass(frozen=True)
class LocalProcessExecutor:
    """Shards in spawned local processes; in this process with ``processes <= 1`` or a ``runner``.

    In this process the first failure stops the sweep (as a crash would); a pool finishes the rest.
    """

    processes: int = 2
    runner: ShardRunner | None = None

    def describe(self) -> str:
        n = 1 if self.runner is not None else max(1, self.processes)
        return f"{n} local process(es)"

    def execute(
        self, todo: Sequence[ShardSpec], engine: EngineFile, store: ArtifactStore
    ) -> Iterator[ShardOutcome]:
        if self.runner is not None or self.processes <= 1:
            run = self.runner or run_shard
            for spec in todo:
                try:
                    result = run(engine.path, spec)
                except Exception as exc:
                    yield ShardOutcome(spec, error=_one_line(exc))
                    return  # finished shards stay checkpointed
                yield ShardOutcome(spec, result=result)
            return
        ctx = mp.get_context("spawn")  # fork would copy pygame/SDL and ORT thread state
        with cf.ProcessPoolExecutor(
            max_workers=self.processes, mp_context=ctx, initializer=_init_worker
        ) as pool:
            futures = {pool.submit(run_shard, engine.path, spec): spec for spec in todo}
            yield from _outcomes(futures, checkpointed=False)


def _outcomes(futures: dict[cf.Future, ShardSpec], checkpointed: bool) -> Iterator[ShardOutcome]:
    """Each shard's outcome as its future completes; a failure is reported, not raised."""
    for fut in cf.as_completed(futures):
        spec = futures[fut]
        try:
            result = fut.result()
        except Exception as exc:
            yield ShardOutcome(spec, error=_one_line(exc))
            continue
        yield ShardOutcome(spec, result=result, checkpointed=checkpointed)


# The shard command in its store form (what a pod runs): python -m <SHARD_MODULE> <shard_args(...)>.
SHARD_MODULE: Final[str] = "adas.simulation.orchestration"
SPEC_PREFIX: Final[str] = "sim-cache/specs"


def shard_spec_key(spec: ShardSpec) -> str:
    """Where a shard's spec lies in the store for a pod to read (named by the shard key)."""
    return f"{SPEC_PREFIX}/{spec.key}.json"


def shard_args(spec: ShardSpec, engine: EngineFile) -> list[str]:
    """Arguments of the store form of the shard command for one shard."""
    args = ["--spec-key", shard_spec_key(spec)]
    if spec.perception.kind == "engine":
        if not engine.key or not engine.sha256:
            raise ValueError(
                f"shard {spec.shard_index}: perception {spec.perception.label!r} needs the engine's store key "
                "and sha256 to run outside this process"
            )
        args += ["--engine-key", engine.key, "--engine-sha256", engine.sha256]
    return args


# Runs ``python -m SHARD_MODULE *args`` somewhere; returns when it exited 0, raises otherwise.
ShardLauncher = Callable[[ShardSpec, list[str]], None]


class MissingCheckpointError(RuntimeError):
    """A shard command reported success but its checkpoint is not in the store."""


@dataclass(frozen=True)
class RemoteShardExecutor:
    """Each shard as the store form of the shard command on another machine (a Kubernetes pod).

    The specs go to the store first; ``launch`` runs one shard's command and returns when it
    exited 0; the shard's checkpoint, written by the command, is then read back from the store.
    Up to ``max_parallel`` shards run at a time (one thread each, waiting on its launch).
    """

    launch: ShardLauncher
    max_parallel: int = 16
    where: str = "remote workers"

    def describe(self) -> str:
        return f"{self.where}, up to {self.max_parallel} at a time"

    def _one(self, spec: ShardSpec, args: list[str], store: ArtifactStore) -> ShardResult:
        self.launch(spec, args)
        result = load_checkpoint(store, spec.key)
        if result is None:
            raise MissingCheckpointError(
                f"the shard command exited 0 but left no checkpoint at {checkpoint_prefix(spec.key)}/result.json"
            )
        return result

    def execute(
        self, todo: Sequence[ShardSpec], engine: EngineFile, store: ArtifactStore
    ) -> Iterator[ShardOutcome]:
        if not todo:
            return
        commands = {spec.shard_index: shard_args(spec, engine) for spec in todo}
        for spec in todo:
            store.put_bytes(shard_spec_key(spec), spec.model_dump_json().encode())
        pool = cf.ThreadPoolExecutor(
            max_workers=max(1, min(self.max_parallel, len(todo))), thread_name_prefix="shard"
        )
        try:
            futures = {pool.submit(self._one, s, commands[s.shard_index], store): s for s in todo}
            yield from _outcomes(futures, checkpointed=True)
        finally:
            # Interrupted: shards not yet launched never start; launched ones finish and checkpoint.
            pool.shutdown(wait=False, cancel_futures=True)


def run_sweep(
    store: ArtifactStore,
    runs: Sequence[EpisodeSpec],
    perception: PerceptionSpec,
    settings: EpisodeSettings,
    *,
    engine_path: str | Path | None = None,
    engine_key: str | None = None,
    shards: int = 4,
    processes: int = 2,
    progress: Callable[[str], None] | None = None,
    runner: ShardRunner | None = None,
    executor: ShardExecutor | None = None,
) -> SweepResult:
    """Run (or resume) a sweep: checkpointed shards are loaded, the rest computed and checkpointed.

    The ``executor`` computes the missing shards (default: ``LocalProcessExecutor(processes,
    runner)``; ``processes <= 1`` or a ``runner`` computes in this process). ``engine_key`` names
    the engine in the store for executors that run elsewhere (pods).
    """
    t0 = time.perf_counter()
    engine = EngineFile(
        path=str(engine_path) if engine_path is not None else None,
        key=engine_key,
        sha256=perception.engine_sha256,
    )
    executor = executor or LocalProcessExecutor(processes=processes, runner=runner)
    specs = make_shards(runs, perception, settings, shards)
    results: dict[int, ShardResult] = {}
    out = SweepResult(perception=perception.label, records=[], clip_keys={}, shards_total=len(specs))

    def report(msg: str) -> None:
        logger.info(msg)
        if progress is not None:
            progress(msg)

    todo: list[ShardSpec] = []
    for spec in specs:
        done = load_checkpoint(store, spec.key)
        if done is not None:
            results[spec.shard_index] = done
            out.shards_reused.append(spec.shard_index)
        else:
            todo.append(spec)
    report(
        f"{perception.label}: {len(runs)} runs in {len(specs)} shards; {len(out.shards_reused)} checkpointed, "
        f"{len(todo)} to run on {executor.describe()}"
    )
    errors: list[str] = []

    def finished(spec: ShardSpec, res: ShardResult, checkpointed: bool) -> None:
        if res.key != spec.key:
            raise ValueError(f"the executor returned shard {res.key}, expected {spec.key}")
        if not checkpointed:
            save_checkpoint(store, res)
        results[spec.shard_index] = res
        out.shards_computed.append(spec.shard_index)
        out.episodes_computed += len(res.records)
        out.compute_s += res.wall_s
        collided = sum(r.metrics.collisions for r in res.records)
        report(
            f"{perception.label}: shard {spec.shard_index} done ({len(res.records)} runs, {collided} collisions, "
            f"{res.wall_s:.1f} s); {len(results)}/{len(specs)} shards"
        )

    if todo:
        for outcome in executor.execute(todo, engine, store):
            spec = outcome.spec
            if outcome.error is not None or outcome.result is None:
                errors.append(
                    f"shard {spec.shard_index}: {outcome.error or 'the executor returned no result'}"
                )
                continue
            try:
                finished(spec, outcome.result, outcome.checkpointed)
            except Exception as exc:
                errors.append(f"shard {spec.shard_index}: {_one_line(exc)}")
    if errors:
        raise SweepError(
            f"{perception.label}: {len(errors)} shard(s) failed ({'; '.join(errors)}); "
            f"{len(results)} of {len(specs)} are checkpointed and will be reused on the next run"
        )
    order = {r.run_id: i for i, r in enumerate(runs)}
    for idx in sorted(results):
        res = results[idx]
        for rec in res.records:
            out.records.append(rec)
            if rec.clip_key:
                out.clip_keys[rec.spec.run_id] = f"{checkpoint_prefix(res.key)}/{rec.clip_key}"
    out.records.sort(key=lambda r: order[r.spec.run_id])
    out.shards_computed.sort()
    out.wall_s = round(time.perf_counter() - t0, 3)
    return out


# ==================================================================================================
# One shard as a command: what a Kubernetes pod (or AWS Batch job) runs


class ShardCommandError(RuntimeError):
    """The shard command cannot start: a missing or invalid spec, a wrong or missing engine."""


def _main_files(args: Any) -> int:
    spec = ShardSpec.model_validate_json(args.spec.read_text())
    result = run_shard(str(args.engine) if args.engine else None, spec, threads=args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for rel, data in sorted(result.clips.items()):
        (args.out / rel).parent.mkdir(parents=True, exist_ok=True)
        (args.out / rel).write_bytes(data)
    (args.out / "result.json").write_text(result.model_dump_json(indent=1))
    print(
        f"shard {spec.shard_index} ({result.key[:12]}): {len(result.records)} runs in {result.wall_s:.1f} s -> {args.out}"
    )
    return 0


def _main_store(args: Any) -> int:
    from pydantic import ValidationError

    store = StoreSettings.from_env().build()
    try:
        spec = ShardSpec.model_validate_json(store.get_bytes(args.spec_key))
    except FileNotFoundError as exc:
        raise ShardCommandError(f"no shard spec at --spec-key {args.spec_key} ({_one_line(exc)})") from exc
    except ArtifactIntegrityError as exc:
        raise ShardCommandError(f"shard spec {args.spec_key} is corrupt ({_one_line(exc)})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ShardCommandError(
            f"{args.spec_key} is not a valid ShardSpec ({exc.error_count()} error(s); first: "
            f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']})"
        ) from exc
    if load_checkpoint(store, spec.key) is not None:
        print(f"shard {spec.shard_index} ({spec.key[:12]}): already checkpointed, nothing to do")
        return 0
    engine_path: str | None = None
    if args.engine_key:
        try:
            engine_path = str(store.fetch(args.engine_key, expected_sha256=args.engine_sha256))
        except FileNotFoundError as exc:
            raise ShardCommandError(
                f"no engine at --engine-key {args.engine_key} ({_one_line(exc)})"
            ) from exc
        except ArtifactIntegrityError as exc:
            raise ShardCommandError(
                f"engine {args.engine_key} does not match --engine-sha256 {args.engine_sha256} ({_one_line(exc)})"
            ) from exc
        named = spec.perception.engine_sha256
        if named is not None and named != args.engine_sha256:
            raise ShardCommandError(
                f"--engine-sha256 {args.engine_sha256} is not the engine the shard spec names ({named})"
            )
    elif spec.perception.kind == "engine":
        raise ShardCommandError(
            f"shard {spec.shard_index}: perception {spec.perception.label!r} needs an engine: "
            "pass --engine-key and --engine-sha256"
        )
    result = run_shard(engine_path, spec, threads=args.threads)
    key = save_checkpoint(store, result)
    print(
        f"shard {spec.shard_index} ({result.key[:12]}): {len(result.records)} runs in {result.wall_s:.1f} s "
        f"-> {store.uri(key)}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """One shard as a command, in two forms.

    Store form (what a Kubernetes pod runs; the store comes from the environment, as in
    ``resources.build_artifact_store``: S3 with ``ADAS_ENV=production``, ``ADAS_HOME`` locally)::

        python -m adas.simulation.orchestration --spec-key sim-cache/specs/<key>.json \\
            [--engine-key <key> --engine-sha256 <hex>]

    reads the spec and the engine (verified by sha256) from the store, runs the shard and writes
    its checkpoint (clips, then ``result.json``); a shard already checkpointed exits 0 at once.
    A missing spec or engine or a wrong sha256 exits 2 with one line naming it.

    File form: ``--spec shard.json --out DIR [--engine model.onnx]`` writes ``result.json`` plus
    its clips under ``DIR`` in the checkpoint layout, for whoever collects the sweep.
    """
    import argparse

    ap = argparse.ArgumentParser(prog=f"python -m {SHARD_MODULE}")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--spec", type=Path, help="file form: ShardSpec JSON file")
    src.add_argument("--spec-key", help="store form: artifact store key of the ShardSpec JSON")
    ap.add_argument("--out", type=Path, default=None, help="file form: output directory")
    ap.add_argument("--engine", type=Path, default=None, help="file form: the engine file the spec names")
    ap.add_argument("--engine-key", default=None, help="store form: artifact store key of the engine")
    ap.add_argument("--engine-sha256", default=None, help="store form: the engine's expected sha256")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(list(argv) if argv is not None else None)
    _init_worker()
    if args.spec is not None:
        if args.out is None:
            ap.error("--spec needs --out")
        if args.engine_key or args.engine_sha256:
            ap.error("--engine-key/--engine-sha256 go with --spec-key; use --engine with --spec")
        return _main_files(args)
    if args.out is not None or args.engine is not None:
        ap.error("--spec-key reads and writes the artifact store: --out and --engine go with --spec")
    if bool(args.engine_key) != bool(args.engine_sha256):
        ap.error("--engine-key and --engine-sha256 go together")
    try:
        return _main_store(args)
    except ShardCommandError as exc:
        print(f"shard command: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
