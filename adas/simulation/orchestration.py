"""One shard as a command: what a Kubernetes pod (or AWS Batch job) runs.

    python -m adas.simulation.orchestration --spec-key sim-cache/specs/<key>.json \\
        [--engine-key <key> --engine-sha256 <hex>]

The sweep's pieces live beside it: ``planning`` (runs of a sweep), ``shards`` (a shard, its run
and its checkpoint), ``executors`` (local processes, or this command elsewhere) and ``sweep``
(``run_sweep``: plan, reuse checkpoints, compute the rest). This module stays importable without
Dagster: a pod opens the store with ``adas.storage.StoreSettings.from_env().build()``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from adas.simulation.executors import SHARD_MODULE, shard_spec_key
from adas.simulation.shards import (
    ShardSpec,
    init_worker,
    load_checkpoint,
    one_line,
    run_shard,
    save_checkpoint,
)
from adas.storage import ArtifactIntegrityError, StoreSettings


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
    store = StoreSettings.from_env().build()
    try:
        spec = ShardSpec.model_validate_json(store.get_bytes(args.spec_key))
    except FileNotFoundError as exc:
        raise ShardCommandError(f"no shard spec at --spec-key {args.spec_key} ({one_line(exc)})") from exc
    except ArtifactIntegrityError as exc:
        raise ShardCommandError(f"shard spec {args.spec_key} is corrupt ({one_line(exc)})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ShardCommandError(
            f"{args.spec_key} is not a valid ShardSpec ({exc.error_count()} error(s); first: "
            f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']})"
        ) from exc
    # The spec's store key names the sha256 of its content (shard_spec_key): that is its pin.
    if shard_spec_key(spec) != args.spec_key:
        raise ShardCommandError(
            f"shard spec {args.spec_key} holds a spec whose content hashes to {spec.key}, not to the "
            "key it is stored under: it was modified after it was written"
        )
    if load_checkpoint(store, spec.key) is not None:
        print(f"shard {spec.shard_index} ({spec.key[:12]}): already checkpointed, nothing to do")
        return 0
    engine_path: str | None = None
    if args.engine_key:
        try:
            engine_path = str(store.fetch(args.engine_key, expected_sha256=args.engine_sha256))
        except FileNotFoundError as exc:
            raise ShardCommandError(f"no engine at --engine-key {args.engine_key} ({one_line(exc)})") from exc
        except ArtifactIntegrityError as exc:
            raise ShardCommandError(
                f"engine {args.engine_key} does not match --engine-sha256 {args.engine_sha256} ({one_line(exc)})"
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

    Store form (what a Kubernetes pod runs; the store comes from the environment through
    ``adas.storage.StoreSettings.from_env()``, as for the code location: S3 with
    ``ADAS_ENV=production``, ``ADAS_HOME`` locally)::

        python -m adas.simulation.orchestration --spec-key sim-cache/specs/<key>.json \\
            [--engine-key <key> --engine-sha256 <hex>]

    reads the spec and the engine (verified by sha256) from the store, runs the shard and writes
    its checkpoint (clips, then ``result.json``); a shard already checkpointed exits 0 at once.
    A missing spec or engine or a wrong sha256 exits 2 with one line naming it.

    File form: ``--spec shard.json --out DIR [--engine model.onnx]`` writes ``result.json`` plus
    its clips under ``DIR`` in the checkpoint layout, for whoever collects the sweep.
    """
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
    init_worker()
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
