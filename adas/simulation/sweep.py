"""A sweep of closed-loop runs: sharded, checkpointed, resumable.

``run_sweep`` checkpoints each finished shard into the artifact store, so a crashed or cancelled
sweep resumes where it stopped, and production's shards are reused across candidates; an
executor (``executors``) computes the shards without a checkpoint. Records come back in plan
order whatever the scheduling. Domain code: no dagster import.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adas.simulation.episode import EpisodeSpec
from adas.simulation.executors import EngineFile, LocalProcessExecutor, ShardExecutor, ShardRunner
from adas.simulation.metrics import RunRecord
from adas.simulation.perception import PerceptionSpec
from adas.simulation.shards import (
    EpisodeSettings,
    ShardResult,
    ShardSpec,
    checkpoint_prefix,
    load_checkpoint,
    make_shards,
    one_line,
    save_checkpoint,
)
from adas.storage import ArtifactStore

logger = logging.getLogger(__name__)


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

    def extended(self, more: SweepResult) -> SweepResult:
        """This sweep followed by ``more`` (a sequential batch of the same perception)."""
        if more.perception != self.perception:
            raise ValueError(f"cannot extend {self.perception}'s sweep with {more.perception}'s runs")
        offset = self.shards_total  # shard indices continue across batches
        return SweepResult(
            perception=self.perception,
            records=[*self.records, *more.records],
            clip_keys={**self.clip_keys, **more.clip_keys},
            shards_total=self.shards_total + more.shards_total,
            shards_computed=[*self.shards_computed, *(offset + i for i in more.shards_computed)],
            shards_reused=[*self.shards_reused, *(offset + i for i in more.shards_reused)],
            wall_s=round(self.wall_s + more.wall_s, 3),
            episodes_computed=self.episodes_computed + more.episodes_computed,
            compute_s=self.compute_s + more.compute_s,
        )


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
    scenario_files: Mapping[str, str] | None = None,
) -> SweepResult:
    """Run (or resume) a sweep: checkpointed shards are loaded, the rest computed and checkpointed.

    The ``executor`` computes the missing shards (default: ``LocalProcessExecutor(processes,
    runner)``; ``processes <= 1`` or a ``runner`` computes in this process). ``engine_key`` names
    the engine in the store for executors that run elsewhere (pods). ``scenario_files``: the
    OpenSCENARIO files the runs play, by the name their ``xosc`` uses (default: the shipped ones).
    """
    t0 = time.perf_counter()
    engine = EngineFile(
        path=str(engine_path) if engine_path is not None else None,
        key=engine_key,
        sha256=perception.engine_sha256,
    )
    executor = executor or LocalProcessExecutor(processes=processes, runner=runner)
    specs = make_shards(runs, perception, settings, shards, scenario_files)
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
                errors.append(f"shard {spec.shard_index}: {one_line(exc)}")
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
