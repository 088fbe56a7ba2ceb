"""Latency and throughput of an engine (or of the PyTorch eager baseline) on this CPU.

Every measurement runs in its own subprocess (``python -m adas_assets.packaging.latency``)
with ``OMP_WAIT_POLICY=PASSIVE``: torch's OpenMP workers and ORT's intra-op threads spin
between calls, and on a 2-core node two runtimes in one process (or the Dagster process's own
torch) fight over the cores; measured in-process, eager latency spread 22-90 ms. The child
also disables ORT's spinning, so what is measured is one runtime alone on the cores.

Protocol per batch size: ``warmup_runs`` untimed calls, then windows of ``window_size`` timed
calls until the p50 of the last ``stable_windows`` windows agree within
``stability_tolerance`` (relative spread) or ``max_windows`` is reached. Percentiles and
throughput come from the last ``stable_windows`` windows. The child reports its peak RSS
(``resource.getrusage``), which includes the runtime's own libraries.

This module imports neither torch nor onnxruntime at import time: the child imports only
the runtime it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adas_assets.intake.contract import Contract
from adas_assets.packaging.config import LatencyConfig, PackagingConfig

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16)


class LatencyMeasurementError(RuntimeError):
    """The measuring subprocess failed or timed out."""


@dataclass(frozen=True)
class BatchLatency:
    batch_size: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    throughput_fps: float
    windows: int
    stable: bool
    timed_runs: int


@dataclass(frozen=True)
class LatencyReport:
    runtime: str
    model: str
    model_size_bytes: int
    per_batch: dict[int, BatchLatency]
    best_batch: int
    best_throughput_fps: float
    peak_rss_mib: float
    threads: int
    seconds: float
    versions: dict[str, str]
    machine: dict[str, Any]
    protocol: dict[str, Any] = field(default_factory=dict)

    def batch(self, size: int) -> BatchLatency:
        return self.per_batch[size]

    def to_metadata(self) -> dict[str, Any]:
        d = asdict(self)
        d["per_batch"] = {str(k): v for k, v in d["per_batch"].items()}
        return d

    def markdown(self) -> str:
        rows = [
            "| batch | p50 ms | p95 ms | p99 ms | frames/s | windows | stable |",
            "|---|---|---|---|---|---|---|",
        ]
        for b in self.per_batch.values():
            rows.append(
                f"| {b.batch_size} | {b.p50_ms:.2f} | {b.p95_ms:.2f} | {b.p99_ms:.2f} | "
                f"{b.throughput_fps:.1f} | {b.windows} | {'yes' if b.stable else 'no'} |"
            )
        return "\n".join(rows)


def machine_info() -> dict[str, Any]:
    """CPU model and core count as ``lscpu`` reports them (falls back to platform/os)."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "cpu_model": platform.processor(),
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return info
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            info["cpu_model"] = value.strip()
        elif key.strip() == "CPU(s)":
            info["cpus"] = int(value.strip())
    return info


# --------------------------------------------------------------------------- parent side


def _latency_config(config: LatencyConfig | PackagingConfig | None) -> LatencyConfig:
    if config is None:
        from adas_assets.packaging.config import default_packaging_config

        return default_packaging_config().latency
    return config.latency if isinstance(config, PackagingConfig) else config


def _run_child(args: list[str], cfg: LatencyConfig) -> dict[str, Any]:
    env = dict(os.environ)
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["OMP_NUM_THREADS"] = str(cfg.intra_op_threads)
    env.setdefault("PYTHONWARNINGS", "ignore")
    with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
        out = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "adas_assets.packaging.latency", *args, "--out", str(out)]
        cmd += ["--config-json", cfg.model_dump_json()]
        try:
            proc = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=cfg.timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LatencyMeasurementError(
                f"latency measurement exceeded {cfg.timeout_s:g} s: {' '.join(args)}"
            ) from exc
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout)[-2000:]
            raise LatencyMeasurementError(f"latency subprocess failed (exit {proc.returncode}):\n{tail}")
        return json.loads(out.read_text())


def _report(raw: dict[str, Any]) -> LatencyReport:
    per_batch = {int(k): BatchLatency(**v) for k, v in raw.pop("per_batch").items()}
    best = max(per_batch.values(), key=lambda b: b.throughput_fps)
    return LatencyReport(
        per_batch=per_batch, best_batch=best.batch_size, best_throughput_fps=best.throughput_fps, **raw
    )


def measure_latency(
    engine_path: str | Path,
    contract: Contract,
    batch_sizes: Sequence[int] | None = DEFAULT_BATCH_SIZES,
    config: LatencyConfig | PackagingConfig | None = None,
) -> LatencyReport:
    """Latency of an ONNX Runtime engine file, measured in a fresh subprocess (module docstring).

    ``batch_sizes=None`` takes them from the config.
    """
    cfg = _latency_config(config)
    sizes = list(batch_sizes) if batch_sizes is not None else cfg.batch_sizes
    _, c, h, w = contract.input.shape
    args = [
        "ort",
        "--model",
        str(Path(engine_path).resolve()),
        "--input-name",
        contract.input.name,
        "--shape",
        f"{c},{h},{w}",
        "--batch-sizes",
        ",".join(str(b) for b in sizes),
    ]
    return _report(_run_child(args, cfg))


def measure_torch_eager_latency(
    bundle_dir: str | Path,
    batch_sizes: Sequence[int] | None = DEFAULT_BATCH_SIZES,
    config: LatencyConfig | PackagingConfig | None = None,
) -> LatencyReport:
    """Latency of the bundle's PyTorch program in eager mode (FP32 baseline), same protocol."""
    cfg = _latency_config(config)
    sizes = list(batch_sizes) if batch_sizes is not None else cfg.batch_sizes
    args = [
        "torch",
        "--model",
        str(Path(bundle_dir).resolve()),
        "--batch-sizes",
        ",".join(str(b) for b in sizes),
    ]
    return _report(_run_child(args, cfg))


# --------------------------------------------------------------------------- child side


def measure_callable(fn: Callable[[], Any], batch_size: int, cfg: LatencyConfig) -> BatchLatency:
    """Warm-up, then windows until the last ``stable_windows`` window p50s agree."""
    for _ in range(cfg.warmup_runs):
        fn()
    windows: list[np.ndarray] = []
    p50s: list[float] = []
    stable = False
    while len(windows) < cfg.max_windows:
        ts = np.empty(cfg.window_size, np.float64)
        for i in range(cfg.window_size):
            t0 = time.perf_counter_ns()
            fn()
            ts[i] = (time.perf_counter_ns() - t0) / 1e6
        windows.append(ts)
        p50s.append(float(np.median(ts)))
        if len(windows) >= max(cfg.min_windows, cfg.stable_windows):
            last = np.asarray(p50s[-cfg.stable_windows :])
            if (last.max() - last.min()) / max(float(np.median(last)), 1e-9) <= cfg.stability_tolerance:
                stable = True
                break
    samples = np.concatenate(windows[-cfg.stable_windows :])
    p50, p95, p99 = (float(v) for v in np.percentile(samples, [50, 95, 99]))
    return BatchLatency(
        batch_size=batch_size,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        mean_ms=float(samples.mean()),
        min_ms=float(samples.min()),
        throughput_fps=batch_size * 1000.0 / float(samples.mean()),
        windows=len(windows),
        stable=stable,
        timed_runs=int(sum(len(w) for w in windows)),
    )


def _ort_runner(
    args: argparse.Namespace, cfg: LatencyConfig
) -> tuple[Callable[[np.ndarray], Any], dict[str, str], int]:
    import onnxruntime as ort

    from adas_assets.packaging.ort_engines import session_options

    sess = ort.InferenceSession(
        args.model, session_options(cfg.intra_op_threads), providers=["CPUExecutionProvider"]
    )
    name = args.input_name

    def run(x: np.ndarray) -> Any:
        return sess.run(None, {name: x})

    return run, {"onnxruntime": ort.__version__}, Path(args.model).stat().st_size


def _torch_runner(
    args: argparse.Namespace, cfg: LatencyConfig
) -> tuple[Callable[[np.ndarray], Any], dict[str, str], int]:
    import torch

    from adas_assets.detector.bundle import load_bundle_model, read_contract

    torch.set_num_threads(cfg.intra_op_threads)
    torch.set_num_interop_threads(1)
    contract = read_contract(args.model)
    module = load_bundle_model(args.model)
    args.shape = ",".join(str(d) for d in contract.input.shape[1:])

    def run(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return module(torch.from_numpy(x))

    size = (Path(args.model) / contract.model_file).stat().st_size
    return run, {"torch": torch.__version__}, size


def _child(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m adas_assets.packaging.latency")
    p.add_argument("kind", choices=["ort", "torch"])
    p.add_argument("--model", required=True, help="engine file (ort) or bundle directory (torch)")
    p.add_argument("--input-name", default="images")
    p.add_argument("--shape", default="", help="C,H,W (ort; torch reads the contract)")
    p.add_argument("--batch-sizes", required=True)
    p.add_argument("--config-json", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    cfg = LatencyConfig.model_validate_json(args.config_json)
    t0 = time.perf_counter()
    make = _ort_runner if args.kind == "ort" else _torch_runner
    run, versions, size = make(args, cfg)
    c, h, w = (int(v) for v in args.shape.split(","))
    rng = np.random.default_rng(0)
    per_batch: dict[str, Any] = {}
    for b in (int(v) for v in args.batch_sizes.split(",")):
        # Values in a typical normalized range; latency of these graphs does not depend on them.
        x = rng.standard_normal((b, c, h, w), dtype=np.float32)
        per_batch[str(b)] = asdict(measure_callable(lambda x=x: run(x), b, cfg))
    report = {
        "runtime": "onnxruntime" if args.kind == "ort" else "torch-eager",
        "model": args.model,
        "model_size_bytes": size,
        "per_batch": per_batch,
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "threads": cfg.intra_op_threads,
        "seconds": time.perf_counter() - t0,
        "versions": versions | {"python": platform.python_version(), "numpy": np.__version__},
        "machine": machine_info(),
        "protocol": cfg.model_dump() | {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "")},
    }
    Path(args.out).write_text(json.dumps(report))


if __name__ == "__main__":
    _child()
