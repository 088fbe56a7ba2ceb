"""The sandboxed half of packaging: the candidate's torch program loaded, staged, exported, run.

Run by :mod:`adas.packaging.sandboxed_model` as ``python -m adas.packaging.model_worker <op>``
inside :mod:`adas.sandbox` (no network, read-only file system, the bundle and the parent's input
folder read-only, one writable scratch directory). The audit hook goes in after torch (and what
the op needs of ONNX / ONNX Runtime) is imported and before the model file is touched, as in
intake's worker. Operations:

* ``stage``: weights finite, a smoke forward of zero batches, one random batch of real-range
  frames; replies with the parameter count and each output's value range.
* ``export``: the ONNX graph written to ``<scratch>/model.onnx`` by
  :func:`adas.packaging.export.export_onnx`; replies with what only the export knows (max abs
  difference vs torch, seconds, renamed nodes). The parent validates the graph itself.
* ``serve``: the reference outputs of the eager FP32 program (an ONNX bundle's own file in ONNX
  Runtime, :class:`adas.intake.model.OnnxProgram`): replies ``ready``, then for each
  request ``{"id": k, "input": "<name>.npy"}`` (a batch the parent wrote into the input folder)
  writes ``<scratch>/out-<k>-<i>.npy`` per contract output ``i`` and replies ``{"id": k}``.

Every reply is one JSON line (:data:`adas.sandbox.RESULT_PREFIX`); a failure is
``{"error": {"kind": ..., ...}}`` naming what the model did (see :func:`failure`).
"""

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adas.detector.preprocess import preprocess
from adas.intake.contract import Contract
from adas.intake.files import BundleRejected
from adas.intake.model import (
    ONNX_PRELOAD,
    check_finite_weights,
    error_gist,
    load_model,
    named_outputs,
    smoke_forward,
)
from adas.packaging.equivalence import run_reference
from adas.packaging.export import ExportError, export_onnx
from adas.packaging.operators import UnsupportedOperatorError
from adas.sandbox import RESULT_PREFIX
from adas.sandbox_guard import SandboxViolation, bundle_dir, install, scratch_dir, violations

EXPORT_FILE = "model.onnx"
MAX_SOURCE_SIDE = 1 << 15  # pixels: a source-size value past this is not a frame size


def emit(reply: dict[str, Any]) -> None:
    """One reply line; the leading newline ends whatever the model itself left unterminated."""
    print("\n" + RESULT_PREFIX + json.dumps(reply), flush=True)


def load_candidate(contract: Contract, preload: Sequence[str] = ()) -> Any:
    """The bundle's module, loaded only once the audit hook is in.

    torch's start-up (and that of ``preload``: ONNX Runtime, the ONNX exporter) reads files and
    loads libraries, so those are imported first."""
    import torch  # noqa: F401, PLC0415 (this process's only torch user; imported before the guard)

    for name in (*preload, *(ONNX_PRELOAD if contract.model_format == "onnx" else ())):
        importlib.import_module(name)
    sys.dont_write_bytecode = True  # imports after this point never write .pyc files
    install(str(scratch_dir()))
    return load_model(bundle_dir(), contract)


def failure(exc: BaseException, contract: Contract) -> dict[str, Any]:
    """A failure as the parent reads it; an attempt the sandbox refused comes first, even when
    the model caught the refusal and failed some other way."""
    if violations:
        reason = f"the model tried to {violations[0]}"
        if not isinstance(exc, SandboxViolation):
            reason += f" ({type(exc).__name__}: {error_gist(exc)})"
        return {"kind": "violation", "field": contract.model_file, "reason": reason}
    if isinstance(exc, UnsupportedOperatorError):
        return {
            "kind": "unsupported_operator",
            "operator": exc.operator,
            "where": exc.where,
            "target": exc.target,
            "hint": exc.hint,
            "detail": getattr(exc, "detail", ""),
        }
    if isinstance(exc, ExportError):
        return {"kind": "export", "field": contract.model_file, "reason": str(exc)[:1000]}
    if isinstance(exc, BundleRejected):
        return {"kind": "rejected", "field": exc.field, "reason": exc.reason}
    return {
        "kind": "model",
        "field": contract.model_file,
        "reason": f"{type(exc).__name__}: {error_gist(exc)}",
    }


def random_forward_ranges(module: Any, contract: Contract, seed: int) -> dict[str, list[float]]:
    """One batch of random real-range frames through the model; every output must be finite."""
    import torch  # noqa: PLC0415 (loaded by load_candidate)

    _, _, h, w = contract.input.shape
    frames = np.random.default_rng(seed).integers(0, 256, size=(4, h, w, 3), dtype=np.uint8)
    with torch.no_grad():
        result = module(torch.from_numpy(preprocess(frames, contract.input)[0]))
    outputs = named_outputs(result, contract)
    ranges = {}
    for spec in contract.outputs:
        arr = outputs[spec.name].detach().numpy()
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise BundleRejected(
                spec.name, f"output has {bad} NaN/Inf values on a random batch of real-range frames"
            )
        ranges[spec.name] = [float(arr.min()), float(arr.max())]
    return ranges


def _stage(contract: Contract, args: argparse.Namespace) -> dict[str, Any]:
    module = load_candidate(contract)
    params = check_finite_weights(module, contract.model_file)
    smoke_forward(module, contract)
    return {"parameter_count": params, "output_ranges": random_forward_ranges(module, contract, args.seed)}


def _export(contract: Contract, args: argparse.Namespace) -> dict[str, Any]:
    module = load_candidate(contract, preload=("onnxruntime", "torch.onnx"))
    result = export_onnx(
        module,
        contract,
        scratch_dir() / EXPORT_FILE,
        opset=args.opset,
        max_abs_diff_tolerance=args.max_abs_diff,
    )
    return {
        "max_abs_diff": result.max_abs_diff,
        "export_seconds": result.export_seconds,
        "renamed_nodes": result.renamed_nodes,
    }


def request_source_hw(value: Any) -> tuple[int, int] | None:
    """A run request's ``source_hw``: absent, or two positive integer pixel counts."""
    if value is None:
        return None
    ok = isinstance(value, list) and len(value) == 2
    if not ok or not all(type(v) is int and 0 < v <= MAX_SOURCE_SIDE for v in value):
        raise ValueError(f"source_hw must be [height, width] in 1..{MAX_SOURCE_SIDE}, got {str(value)[:60]}")
    return value[0], value[1]


def _serve(contract: Contract, inputs: Path) -> None:
    module = load_candidate(contract)
    names = [o.name for o in contract.outputs]
    emit({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("op") != "run":
            break
        rid = int(request["id"])
        try:
            name = str(request["input"])
            if "/" in name:
                raise ValueError(f"input {name!r} is not a plain file name")
            source_hw = request_source_hw(request.get("source_hw"))
            outputs = run_reference(module, np.load(inputs / name, allow_pickle=False), names, source_hw)
            for i, head in enumerate(names):
                np.save(scratch_dir() / f"out-{rid}-{i}.npy", np.ascontiguousarray(outputs[head]))
            emit({"id": rid})
        except Exception as exc:  # the model's own failure, reported to the parent
            emit({"id": rid, "error": failure(exc, contract)})


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m adas.packaging.model_worker")
    p.add_argument("op", choices=["stage", "export", "serve"])
    p.add_argument("--contract", required=True, type=Path, help="the contract as JSON (input folder)")
    p.add_argument("--inputs", required=True, type=Path, help="the parent's read-only input folder")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--max-abs-diff", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    contract = Contract.model_validate_json(args.contract.read_text())
    try:
        if args.op == "serve":
            _serve(contract, args.inputs)
            return 0
        reply = (_stage if args.op == "stage" else _export)(contract, args)
        if violations:  # the model swallowed a refusal and carried on: still a refusal
            raise SandboxViolation(violations[0])
    except Exception as exc:  # the model's own failure, reported as the op's failure
        reply = {"error": failure(exc, contract)}
    emit(reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
