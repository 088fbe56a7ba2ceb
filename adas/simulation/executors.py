"""Executors: who computes the shards a sweep found no checkpoint for.

``LocalProcessExecutor`` runs them in local processes (or in this process);
``RemoteShardExecutor`` puts each spec in the store and launches the shard command (the store
form of ``python -m adas.simulation.orchestration``) elsewhere, then reads the checkpoint the
command wrote; ``resources.simulation_shards`` launches it as a Kubernetes Job per shard through
dagster-k8s in production. Planning, checkpoint reuse, progress and ``SweepError`` stay in
``sweep.run_sweep``. Domain code: no dagster import.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from adas.simulation.shards import (
    ShardResult,
    ShardSpec,
    checkpoint_prefix,
    init_worker,
    load_checkpoint,
    one_line,
    run_shard,
)
from adas.storage import ArtifactStore

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
                    yield ShardOutcome(spec, error=one_line(exc))
                    return  # finished shards stay checkpointed
                yield ShardOutcome(spec, result=result)
            return
        ctx = mp.get_context("spawn")  # fork would copy pygame/SDL and ORT thread state
        with cf.ProcessPoolExecutor(
            max_workers=self.processes, mp_context=ctx, initializer=init_worker
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
            yield ShardOutcome(spec, error=one_line(exc))
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
