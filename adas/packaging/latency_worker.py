"""The latency measuring subprocess: ``python -m adas.packaging.latency_worker {ort,torch} ...``.

Started by :mod:`adas.packaging.latency` (``measure_latency``, ``compare_latency``) inside
:mod:`adas.sandbox`, like every process that runs a model: ``--model`` (an engine's folder or
the bundle) is the sandbox's read-only bundle. It imports only the runtime it measures
(onnxruntime or torch), inside the runner that needs it, so the other runtime's threads never
share the cores with the one being timed. The candidate's torch program is loaded by
:func:`adas.packaging.model_worker.load_candidate` (audit hook first). Replies are JSON result
lines (:func:`adas.packaging.model_worker.emit`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from adas.intake.bundle import read_contract
from adas.packaging.config import LatencyConfig
from adas.packaging.latency import machine_info, measure_callable, time_window
from adas.packaging.model_worker import emit, failure, load_candidate
from adas.packaging.ort_session import session_options

_SIZE_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


def _ort_runner(
    args: argparse.Namespace, cfg: LatencyConfig
) -> tuple[Callable[[np.ndarray], Any], dict[str, str], int]:
    import onnxruntime as ort

    # "ort-default": ONNX Runtime's own session defaults (all cores, spinning threads), what a
    # plain ``InferenceSession(path, providers=["CPUExecutionProvider"])`` gets, Model Navigator's
    # OnnxCPU runner included: the reference the platform's tuned session is compared with.
    options = None if args.kind == "ort-default" else session_options(cfg.intra_op_threads)
    sess = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    name = args.input_name
    # A source-size input ([B, 2], RT-DETR's orig_target_sizes) is fed the input's own size: for
    # timing, its order does not matter.
    sizes = {i.name: _SIZE_DTYPES[i.type] for i in sess.get_inputs() if i.name != name}

    def run(x: np.ndarray) -> Any:
        hw = np.asarray(x.shape[2:4])
        feeds = {n: np.tile(hw.astype(dtype), (x.shape[0], 1)) for n, dtype in sizes.items()}
        return sess.run(None, {name: x, **feeds})

    return run, {"onnxruntime": ort.__version__}, Path(args.model).stat().st_size


def _torch_runner(
    args: argparse.Namespace, cfg: LatencyConfig
) -> tuple[Callable[[np.ndarray], Any], dict[str, str], int]:
    import torch

    torch.set_num_threads(cfg.intra_op_threads)
    torch.set_num_interop_threads(1)
    contract = read_contract(Path(args.model))
    args.contract = contract
    module = load_candidate(contract)
    args.shape = ",".join(str(d) for d in contract.input.shape[1:])

    def run(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return module(torch.from_numpy(x))

    size = (Path(args.model) / contract.model_file).stat().st_size
    versions = {"torch": torch.__version__}
    if contract.model_format == "onnx":  # the given file in ONNX Runtime is the bundle's "eager"
        import onnxruntime as ort

        versions["onnxruntime"] = ort.__version__
    return run, versions, size


def _runtime(args: argparse.Namespace) -> str:
    """What was timed: an engine, the bundle's torch program, or (an ONNX bundle's baseline) the
    bundle's own ONNX file in ONNX Runtime FP32, unoptimized, as the team handed it over."""
    if args.kind == "ort":
        return "onnxruntime"
    if args.kind == "ort-default":
        return "onnxruntime (session defaults)"
    contract = getattr(args, "contract", None)
    if contract is not None and contract.model_format == "onnx":
        return "onnxruntime-fp32 (the bundle's own model.onnx: the eager baseline of an ONNX bundle)"
    return "torch-eager"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m adas.packaging.latency_worker")
    p.add_argument("kind", choices=["ort", "ort-default", "torch"])
    p.add_argument("--model", required=True, help="engine file (ort) or bundle directory (torch)")
    p.add_argument("--input-name", default="images")
    p.add_argument("--shape", default="", help="C,H,W (ort; torch reads the contract)")
    p.add_argument("--batch-sizes", required=True)
    p.add_argument("--config-json", required=True)
    p.add_argument("--serve", action="store_true", help="time windows on request (stdin) for compare_latency")
    args = p.parse_args(argv)
    cfg = LatencyConfig.model_validate_json(args.config_json)
    t0 = time.perf_counter()
    machine = machine_info()  # runs lscpu: before a candidate's program is loaded (no processes then)
    make = _torch_runner if args.kind == "torch" else _ort_runner
    try:
        run, versions, size = make(args, cfg)
    except Exception as exc:  # the model's own failure, or what it tried, reported to the parent
        contract = getattr(args, "contract", None)
        emit(
            {
                "error": failure(exc, contract)
                if contract
                else {"kind": "model", "reason": f"{type(exc).__name__}: {exc}"}
            }
        )
        return
    c, h, w = (int(v) for v in args.shape.split(","))
    rng = np.random.default_rng(0)
    if args.serve:
        _serve(run, rng.standard_normal((int(args.batch_sizes), c, h, w), dtype=np.float32), cfg)
        return
    per_batch: dict[str, Any] = {}
    for b in (int(v) for v in args.batch_sizes.split(",")):
        # Values in a typical normalized range; latency of these graphs does not depend on them.
        x = rng.standard_normal((b, c, h, w), dtype=np.float32)
        per_batch[str(b)] = asdict(measure_callable(lambda x=x: run(x), b, cfg))
    report = {
        "runtime": _runtime(args),
        "model": args.model,
        "model_size_bytes": size,
        "per_batch": per_batch,
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "threads": cfg.intra_op_threads,
        "seconds": time.perf_counter() - t0,
        # All of this process's CPU (every thread): the parent subtracts it from what the
        # cores spent meanwhile to see the load other work put on them.
        "cpu_seconds": time.process_time(),
        "versions": versions | {"python": platform.python_version(), "numpy": np.__version__},
        "machine": machine,
        "protocol": cfg.model_dump() | {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "")},
    }
    emit(report)


def _serve(run: Callable[[np.ndarray], Any], x: np.ndarray, cfg: LatencyConfig) -> None:
    """Warm up, say "ready", then time one window per "window" line on stdin (JSON out)."""
    for _ in range(cfg.warmup_runs):
        run(x)
    emit({"ready": True})
    for line in sys.stdin:
        if json.loads(line).get("op") != "window":
            break
        emit({"ms": time_window(lambda: run(x), cfg).tolist()})
    emit({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0})


if __name__ == "__main__":
    main()
