"""Latency and throughput of an engine (or of the PyTorch eager baseline) on this CPU.

Every measurement runs in its own subprocess (``python -m adas.packaging.latency_worker``),
inside :mod:`adas.sandbox` (a candidate's eager program is untrusted code; an engine gets the
same sandbox, so there is one way to start a measuring child) with ``OMP_WAIT_POLICY=PASSIVE``: torch's OpenMP workers and ORT's intra-op threads spin
between calls, and on a 2-core node two runtimes in one process (or the Dagster process's own
torch) fight over the cores; measured in-process, eager latency spread 22-90 ms. The child
also disables ORT's spinning, so what is measured is one runtime alone on the cores.

Protocol per batch size: ``warmup_runs`` untimed calls, then windows of ``window_size`` timed
calls (or ``max_window_seconds``, whichever ends first, at least ``min_window_runs``) until the p50 of the last ``stable_windows`` windows agree within
``stability_tolerance`` (relative spread) or ``max_windows`` is reached. Percentiles and
throughput come from the last ``stable_windows`` windows. The child reports its peak RSS
(``resource.getrusage``), which includes the runtime's own libraries.

This module imports neither torch nor onnxruntime: the child (:mod:`adas.packaging.latency_worker`)
imports only the runtime it measures.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from adas.intake.contract import Contract
from adas.packaging.config import LatencyConfig, PackagingConfig, default_packaging_config
from adas.packaging.host_load import CpuSnapshot, host_load, snapshot
from adas.sandbox import SandboxedWorker, SandboxError, SandboxLimits, run_python_module, start_python_module

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16)
WORKER_MODULE = "adas.packaging.latency_worker"


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
    cpu_seconds: float = 0.0  # the measuring process's own CPU
    # The host during the measurement kept (adas.packaging.host_load), how many measurements it
    # took, and why it is contended (None: it was not).
    host_load: dict[str, Any] = field(default_factory=dict)
    attempts: int = 1
    contended: str | None = None

    def batch(self, size: int) -> BatchLatency:
        return self.per_batch[size]

    def to_metadata(self) -> dict[str, Any]:
        d = asdict(self)
        d["per_batch"] = {str(k): v for k, v in d["per_batch"].items()}
        return d

    def markdown(self) -> str:
        rows = [
            *([f"**{self.contended}** (after {self.attempts} measurements)", ""] if self.contended else []),
            "| batch | p50 ms | p95 ms | p99 ms | frames/s | windows | stable |",
            "|---|---|---|---|---|---|---|",
        ]
        for b in self.per_batch.values():
            rows.append(
                f"| {b.batch_size} | {b.p50_ms:.2f} | {b.p95_ms:.2f} | {b.p99_ms:.2f} | "
                f"{b.throughput_fps:.1f} | {b.windows} | {'yes' if b.stable else 'no'} |"
            )
        return "\n".join(rows)


_LSCPU_NUMBERS = {"CPU family": "cpu_family", "Model": "cpu_model_number"}


def machine_info() -> dict[str, Any]:
    """CPU model, family/model numbers and core count as ``lscpu`` reports them (falls back to
    platform/os): "AMD EPYC" alone names a Zen 1 and a Zen 4 alike."""
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
        elif key.strip() in _LSCPU_NUMBERS:
            info[_LSCPU_NUMBERS[key.strip()]] = value.strip()
    return info


# --------------------------------------------------------------------------- parent side


def _latency_config(config: LatencyConfig | PackagingConfig | None) -> LatencyConfig:
    if config is None:
        return default_packaging_config().latency
    return config.latency if isinstance(config, PackagingConfig) else config


def _limits(cfg: LatencyConfig) -> SandboxLimits:
    # Every measuring thread may use a core for the whole wall-clock limit.
    return SandboxLimits(
        cpu_seconds=int(cfg.timeout_s * max(1, cfg.intra_op_threads)) + 60, wall_seconds=cfg.timeout_s
    )


def _child_env(cfg: LatencyConfig) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(cfg.intra_op_threads), "PYTHONWARNINGS": "ignore"}


def _visible(kind: str, model: Path) -> Path:
    """What the sandbox shows read-only: the bundle folder (torch) or the engine's folder (ort)."""
    return model if kind == "torch" else model.parent


def _run_child(kind: str, model: Path, args: list[str], cfg: LatencyConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
        try:
            run = run_python_module(
                WORKER_MODULE,
                [kind, "--model", str(model), *args, "--config-json", cfg.model_dump_json()],
                bundle=_visible(kind, model),
                scratch=Path(tmp) / "scratch",
                limits=_limits(cfg),
                env=_child_env(cfg),
            )
        except SandboxError as exc:
            raise LatencyMeasurementError(
                f"latency measurement exceeded {cfg.timeout_s:g} s: {kind} {model}"
            ) from exc
    if run.returncode != 0 or run.result is None or "error" in run.result:
        said = run.result.get("error") if run.result else None
        tail = str(said)[:2000] if said else (run.stderr or run.stdout)[-2000:]
        raise LatencyMeasurementError(f"latency subprocess failed (exit {run.returncode}):\n{tail}")
    return run.result


def _finite(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise LatencyMeasurementError(
            f"latency worker replied {what}={str(value)[:40]}: not a finite number >= 0"
        )
    return float(value)


def _batch_latency(raw: object, size: int) -> BatchLatency:
    """One batch's numbers as the (untrusted) worker reported them, checked field by field."""
    names = [f.name for f in fields(BatchLatency)]
    if not isinstance(raw, dict) or sorted(raw) != sorted(names):
        raise LatencyMeasurementError(f"latency worker replied an unexpected record for batch {size}")
    values = {k: _finite(raw[k], k) for k in names if k != "stable"}
    if int(values["batch_size"]) != size or not isinstance(raw["stable"], bool):
        raise LatencyMeasurementError(
            f"latency worker replied a record for batch {raw['batch_size']}, not {size}"
        )
    ints = ("batch_size", "windows", "timed_runs")
    return BatchLatency(**{k: int(v) if k in ints else v for k, v in values.items()}, stable=raw["stable"])


def _report(raw: dict[str, Any], sizes: Sequence[int]) -> LatencyReport:
    """The worker's report, checked: exactly the batches asked for, finite numbers."""
    per_batch_raw = raw.pop("per_batch", None)
    if not isinstance(per_batch_raw, dict) or sorted(per_batch_raw) != sorted(str(b) for b in sizes):
        raise LatencyMeasurementError(f"latency worker replied batches other than {list(sizes)}")
    per_batch = {int(b): _batch_latency(per_batch_raw[str(b)], int(b)) for b in sizes}
    best = max(per_batch.values(), key=lambda b: b.throughput_fps)
    if set(raw) & {"host_load", "attempts", "contended"}:
        raise LatencyMeasurementError("latency worker replied fields only the parent sets")
    raw["cpu_seconds"] = _finite(raw.get("cpu_seconds"), "cpu_seconds")
    try:
        return LatencyReport(
            per_batch=per_batch, best_batch=best.batch_size, best_throughput_fps=best.throughput_fps, **raw
        )
    except TypeError as exc:
        raise LatencyMeasurementError(f"latency worker replied an unexpected report: {exc}") from exc


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
    args = ["--input-name", contract.input.name, "--shape", f"{c},{h},{w}"]
    args += ["--batch-sizes", ",".join(str(b) for b in sizes)]
    return measured_on_a_quiet_host(
        lambda: _report(_run_child("ort", Path(engine_path).resolve(), args, cfg), sizes), cfg
    )


def measured_on_a_quiet_host(
    measure: Callable[[], LatencyReport],
    cfg: LatencyConfig,
    take_snapshot: Callable[[], CpuSnapshot] = snapshot,
    pause: Callable[[float], None] = time.sleep,
) -> LatencyReport:
    """``measure()`` with the host's load recorded around it; measured again (up to
    ``contention_retries`` times) while other work contended for the cores. Returns the first
    uncontended report, else the least contended one, marked ``contended`` with the reason."""
    reports: list[LatencyReport] = []
    for attempt in range(1, cfg.contention_retries + 2):
        before = take_snapshot()
        report = measure()
        load = host_load(before, take_snapshot(), report.cpu_seconds)
        reason = load.contended(cfg.max_others_cpu_fraction, cfg.max_steal_fraction)
        report = replace(report, host_load=load.to_metadata(), attempts=attempt, contended=reason)
        if reason is None:
            return report
        reports.append(report)
        if attempt <= cfg.contention_retries:
            pause(cfg.contention_pause_s)
    least = min(reports, key=lambda r: r.host_load.get("others_cpu_fraction") or 0.0)
    return replace(least, attempts=len(reports))


def measure_torch_eager_latency(
    bundle_dir: str | Path,
    batch_sizes: Sequence[int] | None = DEFAULT_BATCH_SIZES,
    config: LatencyConfig | PackagingConfig | None = None,
) -> LatencyReport:
    """Latency of the bundle's PyTorch program in eager mode (FP32 baseline), same protocol,
    the program loaded only inside the sandbox."""
    cfg = _latency_config(config)
    sizes = list(batch_sizes) if batch_sizes is not None else cfg.batch_sizes
    args = ["--batch-sizes", ",".join(str(b) for b in sizes)]
    return measured_on_a_quiet_host(
        lambda: _report(_run_child("torch", Path(bundle_dir).resolve(), args, cfg), sizes), cfg
    )


@dataclass(frozen=True)
class LatencySpec:
    """One runtime to compare: an ORT engine file (``kind="ort"``; ``"ort-default"`` with ONNX
    Runtime's default session options instead of the platform's) or a bundle (``"torch"``)."""

    kind: str
    model: Path
    input_name: str = "images"
    shape: tuple[int, int, int] = (3, 96, 384)


@dataclass(frozen=True)
class Comparison:
    """Paired, interleaved batch latency of several runtimes (``compare_latency``)."""

    batch_size: int
    rounds: int
    per_runtime: dict[str, BatchLatency]
    # Median over rounds of (baseline window p50 / runtime window p50): each ratio pairs two
    # windows measured seconds apart, so load that drifts over minutes cancels out.
    speedup_vs_baseline: dict[str, float]
    # baseline / runtime of the 25th percentile of round p50s: the least contended quarter of
    # the windows of each runtime (bursty load on a shared machine makes the paired ratios
    # noisy; this is the "best of N" estimate of the uncontended ratio).
    speedup_quiet_quartile: dict[str, float]
    baseline: str
    peak_rss_mib: dict[str, float]
    round_p50_ms: dict[str, list[float]] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        return asdict(self)

    def paired_ratio(self, slower: str, faster: str) -> float:
        """Median over rounds of ``slower``'s window p50 / ``faster``'s (windows of the same round,
        seconds apart): how many times faster ``faster`` is, with drifting load cancelled."""
        return paired_ratio(self.round_p50_ms[slower], self.round_p50_ms[faster])


def paired_ratio(slower_p50s: Sequence[float], faster_p50s: Sequence[float]) -> float:
    return float(np.median([s / f for s, f in zip(slower_p50s, faster_p50s, strict=True)]))


def _stats(samples: np.ndarray, batch_size: int, windows: int, stable: bool) -> BatchLatency:
    p50, p95, p99 = (float(v) for v in np.percentile(samples, [50, 95, 99]))
    return BatchLatency(
        batch_size=batch_size,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        mean_ms=float(samples.mean()),
        min_ms=float(samples.min()),
        throughput_fps=batch_size * 1000.0 / float(samples.mean()),
        windows=windows,
        stable=stable,
        timed_runs=int(samples.size),
    )


def compare_latency(
    specs: dict[str, LatencySpec],
    baseline: str,
    batch_size: int = 1,
    rounds: int = 20,
    config: LatencyConfig | PackagingConfig | None = None,
) -> Comparison:
    """Latency of several runtimes measured in turns, for fair ratios on a shared machine.

    Each runtime lives in its own sandboxed subprocess (as in ``measure_latency``), warms
    up, then waits, blocked on stdin (no spinning), while the others run. Every round times one
    window of ``window_size`` calls per runtime, in rotated order. Percentiles are over all
    rounds; speedups are medians of per-round paired ratios vs ``baseline``.
    """
    cfg = _latency_config(config)
    if baseline not in specs:
        raise ValueError(f"baseline {baseline!r} is not one of {sorted(specs)}")
    deadline = time.monotonic() + cfg.timeout_s
    names = list(specs)
    samples: dict[str, list[np.ndarray]] = {n: [] for n in names}
    rss: dict[str, float] = {}

    def read(worker: SandboxedWorker, key: str) -> Any:
        try:
            reply = worker.receive(max(0.0, deadline - time.monotonic()))
        except SandboxError as exc:
            raise LatencyMeasurementError(f"latency comparison: {exc}") from exc
        if key not in reply:
            raise LatencyMeasurementError(f"latency worker replied {str(reply)[:300]} instead of {key!r}")
        return reply[key]

    with ExitStack() as stack:
        workers: dict[str, SandboxedWorker] = {}
        for name, spec in specs.items():
            model = Path(spec.model).resolve()
            args = [spec.kind, "--model", str(model), "--input-name", spec.input_name]
            args += ["--shape", ",".join(str(d) for d in spec.shape), "--batch-sizes", str(batch_size)]
            args += ["--config-json", cfg.model_dump_json(), "--serve"]
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"latency-{name}-"))
            workers[name] = stack.enter_context(
                start_python_module(
                    WORKER_MODULE,
                    args,
                    bundle=_visible(spec.kind, model),
                    scratch=Path(tmp) / "scratch",
                    limits=_limits(cfg),
                    env=_child_env(cfg),
                )
            )
            # Sequential start-up: loading torch would slow the others' warm-up.
            read(workers[name], "ready")
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                workers[name].send({"op": "window"})
                ms = np.asarray(read(workers[name], "ms"), np.float64)
                if ms.ndim != 1 or not ms.size or not np.isfinite(ms).all() or (ms < 0).any():
                    raise LatencyMeasurementError(
                        f"latency worker {name!r} replied a window that is not timings"
                    )
                samples[name].append(ms)
        for name in names:
            workers[name].send({"op": "quit"})
            rss[name] = _finite(read(workers[name], "peak_rss_mib"), "peak_rss_mib")
    per = {n: _stats(np.concatenate(w), batch_size, len(w), True) for n, w in samples.items()}
    rounds_p50 = {n: [float(np.median(w)) for w in samples[n]] for n in names}
    speed = {n: paired_ratio(rounds_p50[baseline], rounds_p50[n]) for n in names}
    q25 = {n: float(np.percentile(v, 25)) for n, v in rounds_p50.items()}
    quiet = {n: q25[baseline] / q25[n] for n in names}
    return Comparison(batch_size, rounds, per, speed, quiet, baseline, rss, rounds_p50)


# --------------------------------------------------------------------------- timing (runs in the child)


def time_window(fn: Callable[[], Any], cfg: LatencyConfig) -> np.ndarray:
    """Milliseconds of ``window_size`` calls, or fewer once ``max_window_seconds`` is spent."""
    times: list[float] = []
    budget_ms = cfg.max_window_seconds * 1000.0
    while len(times) < cfg.window_size and (len(times) < cfg.min_window_runs or sum(times) < budget_ms):
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return np.asarray(times, np.float64)


def measure_callable(fn: Callable[[], Any], batch_size: int, cfg: LatencyConfig) -> BatchLatency:
    """Warm-up, then windows until the last ``stable_windows`` window p50s agree."""
    for _ in range(cfg.warmup_runs):
        fn()
    windows: list[np.ndarray] = []
    p50s: list[float] = []
    stable = False
    while len(windows) < cfg.max_windows:
        ts = time_window(fn, cfg)
        windows.append(ts)
        p50s.append(float(np.median(ts)))
        if len(windows) >= max(cfg.min_windows, cfg.stable_windows):
            last = np.asarray(p50s[-cfg.stable_windows :])
            if (last.max() - last.min()) / max(float(np.median(last)), 1e-9) <= cfg.stability_tolerance:
                stable = True
                break
    stats = _stats(np.concatenate(windows[-cfg.stable_windows :]), batch_size, len(windows), stable)
    return replace(stats, timed_runs=int(sum(len(w) for w in windows)))
