"""The candidate's torch program, as packaging uses it: only through the sandbox.

Packaging never loads a candidate's program in its own process. Staging, the ONNX export and
the eager FP32 reference outputs of the equivalence check run in :mod:`adas.packaging.model_worker`
inside :mod:`adas.sandbox`; this module is the parent's side. The parent writes what the worker
needs (the contract, input batches) into a folder the worker sees read-only, and treats all
that comes back as untrusted:

* replies are bounded JSON lines; numbers must be finite and in range, text is shortened and
  stripped of control characters before it reaches an error message;
* files are read out of the scratch folder without following links, regular files only, within
  a size bound; arrays are ``.npy`` (no pickle) of exactly the contract's dtype and shape for the
  batch sent, with finite values;
* the ONNX graph is accepted only through :func:`adas.packaging.export.validate_exported_graph`,
  and its facts (hash, ops, opset) are computed here from the bytes, not taken from the worker.
"""

from __future__ import annotations

import io
import itertools
import math
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adas.intake.contract import Contract, OutputSpec
from adas.intake.files import BundleRejected
from adas.packaging.export import (
    DEFAULT_OPSET,
    ExportError,
    ExportResult,
    graph_result,
    unsupported_export_operator,
    validate_exported_graph,
)
from adas.sandbox import (
    DEFAULT_LIMITS,
    SandboxedWorker,
    SandboxError,
    SandboxLimits,
    SandboxResult,
    copy_scratch_file,
    read_scratch_file,
    run_python_module,
    start_python_module,
)

WORKER = "adas.packaging.model_worker"
EXPORT_FILE = "model.onnx"  # adas.packaging.model_worker.EXPORT_FILE (the worker imports torch)
# protobuf cannot parse a single-file model over 2 GiB, and external data is refused.
MAX_ONNX_BYTES = 2 << 30
# An output with a dynamic axis besides the batch (ragged detections) has no exact size.
MAX_DYNAMIC_OUTPUT_BYTES = 256 << 20
_NPY_HEADER_BYTES = 64 << 10
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _text(value: object, limit: int = 500) -> str:
    """Worker-supplied text fit for an error message: a string, no control characters, bounded."""
    text = value if isinstance(value, str) else ""
    text = _CONTROL.sub("?", text)
    return text if len(text) <= limit else text[:limit] + "..."


def _number(reply: dict[str, Any], key: str, lo: float, hi: float) -> float:
    value = reply.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SandboxError(f"sandboxed {WORKER} replied {key}={_text(repr(value), 80)}: not a finite number")
    if not lo <= value <= hi:
        raise SandboxError(f"sandboxed {WORKER} replied {key}={value}, outside [{lo}, {hi}]")
    return float(value)


def _op_error(op: str, field: str, reason: str) -> Exception:
    """An export fails as :class:`ExportError` (what the export asset reports); staging and the
    reference fail as a refusal of the bundle naming the field."""
    return ExportError(f"{field}: {reason}") if op == "export" else BundleRejected(field, reason)


def _model_failure(failure: object, contract: Contract, op: str, opset: int = DEFAULT_OPSET) -> Exception:
    """The typed error for a failure the worker reported."""
    f = failure if isinstance(failure, dict) else {}
    if f.get("kind") == "unsupported_operator":
        return unsupported_export_operator(
            _text(f.get("operator"), 120), _text(f.get("where"), 300), opset, _text(f.get("detail"), 200)
        )
    reason = _text(f.get("reason")) or "failed without saying why"
    if op == "export" and f.get("kind") == "export":
        return ExportError(reason)  # already says "ONNX export (opset N) failed: ..."
    return _op_error(op, _text(f.get("field"), 200) or contract.model_file, reason)


def _crash(run: SandboxResult, contract: Contract, op: str) -> Exception:
    tail = run.stderr.strip().splitlines()[-1:] or [f"exit status {run.returncode}"]
    return _op_error(op, contract.model_file, f"the sandboxed {op} crashed: {_text(tail[0], 300)}")


def _folders(workdir: Path, contract: Contract) -> tuple[Path, Path, Path]:
    """``inputs`` (written here, read-only in the sandbox, holding the contract), ``scratch``
    (the worker's only writable folder) and the contract file."""
    inputs, scratch = workdir / "inputs", workdir / "scratch"
    inputs.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    spec = inputs / "contract.json"
    spec.write_text(contract.model_dump_json())
    return inputs, scratch, spec


def _run(
    op: str, bundle_dir: Path, contract: Contract, workdir: Path, extra: list[str], limits: SandboxLimits
) -> tuple[dict[str, Any], Path]:
    inputs, scratch, spec = _folders(workdir, contract)
    try:
        run = run_python_module(
            WORKER,
            [op, "--contract", str(spec.resolve()), "--inputs", str(inputs.resolve()), *extra],
            bundle=bundle_dir,
            scratch=scratch,
            read_only=[inputs],
            limits=limits,
        )
    except SandboxError as exc:
        raise _op_error(op, contract.model_file, str(exc)) from exc
    if run.result is None:
        raise _crash(run, contract, op)
    return run.result, scratch


# --------------------------------------------------------------------------- staging


@dataclass(frozen=True)
class StagedModel:
    parameter_count: int
    output_ranges: dict[str, tuple[float, float]]


def stage_in_sandbox(
    bundle_dir: Path, contract: Contract, seed: int = 0, limits: SandboxLimits = DEFAULT_LIMITS
) -> StagedModel:
    """Weights finite, a smoke forward and one random batch, in the sandbox. Raises
    :class:`BundleRejected` naming the weight, output or attempt at fault."""
    with tempfile.TemporaryDirectory(prefix="stage-") as tmp:
        reply, _ = _run("stage", Path(bundle_dir), contract, Path(tmp), ["--seed", str(seed)], limits)
    if "error" in reply:
        raise _model_failure(reply["error"], contract, "stage")
    params = int(_number(reply, "parameter_count", 0, 1e13))
    raw = reply.get("output_ranges")
    names = [o.name for o in contract.outputs]
    if not isinstance(raw, dict) or sorted(raw) != sorted(names):
        raise SandboxError(
            f"sandboxed staging replied output ranges for {_text(repr(raw), 200)}, not {names}"
        )
    ranges = {}
    for name in names:
        pair = raw[name]
        if not isinstance(pair, list) or len(pair) != 2:
            raise SandboxError(f"sandboxed staging replied a range {_text(repr(pair), 80)} for {name!r}")
        lo, hi = (_number({"v": v}, "v", -math.inf, math.inf) for v in pair)
        ranges[name] = (lo, hi)
    return StagedModel(params, ranges)


# --------------------------------------------------------------------------- export


def export_in_sandbox(
    bundle_dir: Path,
    contract: Contract,
    out_path: Path,
    *,
    opset: int = DEFAULT_OPSET,
    max_abs_diff_tolerance: float = 1e-4,
    limits: SandboxLimits = DEFAULT_LIMITS,
) -> ExportResult:
    """The bundle's program exported to ONNX in the sandbox, copied to ``out_path`` and accepted
    only once :func:`validate_exported_graph` passes. Raises :class:`ExportError` (an
    ``UnsupportedExportOperator`` naming operator, node or module, target and hint)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    args = ["--opset", str(opset), "--max-abs-diff", repr(float(max_abs_diff_tolerance))]
    with tempfile.TemporaryDirectory(prefix="export-", dir=out_path.parent) as tmp:
        reply, scratch = _run("export", Path(bundle_dir), contract, Path(tmp), args, limits)
        if "error" in reply:
            raise _model_failure(reply["error"], contract, "export", opset)
        try:
            copy_scratch_file(scratch, EXPORT_FILE, out_path, MAX_ONNX_BYTES)
        except SandboxError as exc:
            raise ExportError(str(exc)) from exc
    model = validate_exported_graph(out_path, contract, opset)
    return graph_result(
        out_path,
        model,
        contract,
        max_abs_diff=_number(reply, "max_abs_diff", 0.0, max_abs_diff_tolerance),
        export_seconds=_number(reply, "export_seconds", 0.0, limits.wall_seconds),
        renamed_nodes=int(_number(reply, "renamed_nodes", 0, len(model.graph.node))),
    )


# --------------------------------------------------------------------------- reference outputs


def _output_bound(spec: OutputSpec, batch: int) -> int:
    dims = [batch if axis == 0 else d for axis, d in enumerate(spec.shape)]
    if any(d == -1 for d in dims):
        return MAX_DYNAMIC_OUTPUT_BYTES
    return math.prod(dims) * np.dtype(spec.dtype).itemsize + _NPY_HEADER_BYTES


def read_reference_output(scratch: Path, name: str, spec: OutputSpec, batch: int) -> np.ndarray:
    """One output array the worker wrote: ``.npy`` without pickles, exactly the contract's dtype,
    rank and fixed axes with ``batch`` rows, finite. Raises :class:`BundleRejected` naming it."""
    try:
        data = read_scratch_file(scratch, name, _output_bound(spec, batch))
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (SandboxError, ValueError, OSError) as exc:
        raise BundleRejected(spec.name, f"the sandboxed reference output is unreadable: {exc}") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype != np.dtype(spec.dtype):
        raise BundleRejected(
            spec.name, f"reference output is {getattr(arr, 'dtype', type(arr))}, not {spec.dtype}"
        )
    declared = [batch if axis == 0 else d for axis, d in enumerate(spec.shape)]
    if arr.ndim != len(declared) or any(d not in (-1, a) for d, a in zip(declared, arr.shape, strict=True)):
        raise BundleRejected(spec.name, f"reference output has shape {list(arr.shape)}, expected {declared}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise BundleRejected(spec.name, f"reference output has {bad} NaN/Inf values")
    return arr


class SandboxedReference:
    """The eager FP32 outputs of the candidate's program, computed in the sandbox: an ``Engine``
    (``run(x, source_hw) -> {output name: array}``) for
    :func:`adas.packaging.equivalence.check_equivalence`."""

    def __init__(
        self, worker: SandboxedWorker, inputs: Path, scratch: Path, contract: Contract, timeout: float
    ) -> None:
        self._worker = worker
        self._inputs = inputs
        self._scratch = scratch
        self._contract = contract
        self._timeout = timeout
        self._ids = itertools.count()

    def run(self, x: np.ndarray, source_hw: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        expected = tuple(self._contract.input.shape[1:])
        if x.ndim != 4 or x.shape[1:] != expected:
            raise ValueError(
                f"input of shape {list(x.shape)}; the model takes [B, {', '.join(map(str, expected))}]"
            )
        rid = next(self._ids)
        batch_file = self._inputs / f"in-{rid}.npy"
        np.save(batch_file, x)
        try:
            request: dict[str, Any] = {"op": "run", "id": rid, "input": batch_file.name}
            if source_hw is not None and self._contract.input.source_size is not None:
                request["source_hw"] = [int(source_hw[0]), int(source_hw[1])]
            reply = self._worker.request(request, self._timeout)
        finally:
            batch_file.unlink(missing_ok=True)
        if reply.get("id") != rid:
            raise SandboxError(
                f"sandboxed reference answered request {_text(repr(reply.get('id')), 40)}, not {rid}"
            )
        if "error" in reply:
            raise _model_failure(reply["error"], self._contract, "reference")
        outputs = {}
        for i, spec in enumerate(self._contract.outputs):
            name = f"out-{rid}-{i}.npy"
            try:
                outputs[spec.name] = read_reference_output(self._scratch, name, spec, x.shape[0])
            finally:
                (self._scratch / name).unlink(missing_ok=True)
        return outputs


@contextmanager
def sandboxed_reference(
    bundle_dir: Path, contract: Contract, limits: SandboxLimits = DEFAULT_LIMITS
) -> Iterator[SandboxedReference]:
    """A sandboxed worker holding the candidate's program for the block's duration; each
    ``run`` waits at most ``limits.wall_seconds``."""
    with tempfile.TemporaryDirectory(prefix="reference-") as tmp:
        inputs, scratch, spec = _folders(Path(tmp), contract)
        args = ["serve", "--contract", str(spec.resolve()), "--inputs", str(inputs.resolve())]
        with start_python_module(
            WORKER, args, bundle=Path(bundle_dir), scratch=scratch, read_only=[inputs], limits=limits
        ) as worker:
            try:
                ready = worker.receive(limits.wall_seconds)
            except SandboxError as exc:
                raise BundleRejected(
                    contract.model_file, f"the sandboxed reference did not start: {exc}"
                ) from exc
            if "error" in ready:
                raise _model_failure(ready["error"], contract, "reference")
            yield SandboxedReference(worker, inputs, scratch, contract, limits.wall_seconds)
