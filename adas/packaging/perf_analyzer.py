"""Triton's ``perf_analyzer`` as a library call: load a served model at fixed concurrencies and
read back throughput and latency percentiles; and the server's own per-model statistics.

PyPI's ``perf-analyzer`` is a placeholder; the real binary ships inside the ``tritonclient``
wheel of the server's version (2.51.0). ``scripts/setup_triton_env.sh`` places it under
``<triton venv>/perf_analyzer/bin`` with the CUDA runtime it links (``lib/libcudart.so.12``,
no GPU needed); it also links Debian's ``libb64.so.0d`` (``scripts/setup_system_deps.sh``).
The binary is run with ``LD_LIBRARY_PATH`` pointing at that ``lib`` folder.

:func:`server_statistics` reads ``/v2/models/stats`` (cumulative per model: success count,
executions, and nanoseconds in queue, compute input, infer and output); the difference of two
snapshots taken around a load (:func:`step_breakdown`) says where a request's time went, step by
step of an ensemble.
"""

from __future__ import annotations

import base64
import csv
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np

from adas.packaging.triton_server import default_triton_venv

Protocol = Literal["http", "grpc"]
BINARY_RELATIVE = Path("perf_analyzer") / "bin" / "perf_analyzer"
LIB_RELATIVE = Path("perf_analyzer") / "lib"
_SETUP_HINT = {
    "libb64.so.0d": "bash scripts/setup_system_deps.sh (Debian package libb64-0d)",
    "libcudart.so.12": "bash scripts/setup_triton_env.sh (from the nvidia-cuda-runtime-cu12 wheel)",
}
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer ran and failed (the message carries its output's tail)."""


class PerfAnalyzerNotInstalledError(PerfAnalyzerError):
    """No runnable perf_analyzer here: the message names what is missing and how to install it."""


@dataclass(frozen=True)
class PerfAnalyzerInstall:
    binary: Path
    lib_dir: Path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(self.lib_dir), env.get("LD_LIBRARY_PATH", "")) if p
        )
        return env


def _missing_libraries(binary: Path, lib_dir: Path) -> list[str]:
    ldd = shutil.which("ldd")
    if ldd is None:
        return []  # cannot tell: the run itself will say
    env = dict(os.environ, LD_LIBRARY_PATH=str(lib_dir))
    out = subprocess.run([ldd, str(binary)], capture_output=True, text=True, env=env, timeout=30)
    return [line.split("=>")[0].strip() for line in out.stdout.splitlines() if "not found" in line]


def find_perf_analyzer(venv: str | Path | None = None) -> PerfAnalyzerInstall:
    """The installed perf_analyzer (``$PERF_ANALYZER`` first, else ``<triton venv>/perf_analyzer``),
    checked to be runnable; else :class:`PerfAnalyzerNotInstalledError` naming what is missing."""
    root = Path(venv) if venv is not None else default_triton_venv()
    env_binary = os.environ.get("PERF_ANALYZER") if venv is None else None
    binary = Path(env_binary) if env_binary else root / BINARY_RELATIVE
    lib_dir = binary.parent.parent / "lib" if env_binary else root / LIB_RELATIVE
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise PerfAnalyzerNotInstalledError(
            f"perf_analyzer is not installed: no executable {binary} "
            "(run `bash scripts/setup_triton_env.sh`, which takes it from the tritonclient 2.51.0 "
            "wheel; PyPI's perf-analyzer package is only a placeholder)"
        )
    missing = _missing_libraries(binary, lib_dir)
    if missing:
        hints = "; ".join(f"{lib}: {_SETUP_HINT.get(lib, 'install it')}" for lib in missing)
        raise PerfAnalyzerNotInstalledError(
            f"perf_analyzer at {binary} cannot load {', '.join(missing)} ({hints})"
        )
    return PerfAnalyzerInstall(binary, lib_dir)


@dataclass(frozen=True)
class PerfPoint:
    """One concurrency level as perf_analyzer measured it (latencies in milliseconds, client side;
    ``server_*_ms``: the server's own per-request averages over the same window)."""

    concurrency: int
    throughput: float  # inferences (= requests here) per second
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float
    server_queue_ms: float
    server_compute_input_ms: float
    server_compute_infer_ms: float
    server_compute_output_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_csv_report(text: str) -> list[PerfPoint]:
    """perf_analyzer's ``-f`` CSV (one row per concurrency, latencies in microseconds)."""
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise PerfAnalyzerError(f"perf_analyzer wrote no measurement rows:\n{text}")

    def ms(row: dict[str, str], key: str) -> float:
        return float(row.get(key) or 0.0) / 1000.0

    return [
        PerfPoint(
            concurrency=int(row["Concurrency"]),
            throughput=float(row["Inferences/Second"]),
            p50_ms=ms(row, "p50 latency"),
            p90_ms=ms(row, "p90 latency"),
            p95_ms=ms(row, "p95 latency"),
            p99_ms=ms(row, "p99 latency"),
            avg_ms=ms(row, "Avg latency"),
            server_queue_ms=ms(row, "Server Queue"),
            server_compute_input_ms=ms(row, "Server Compute Input"),
            server_compute_infer_ms=ms(row, "Server Compute Infer"),
            server_compute_output_ms=ms(row, "Server Compute Output"),
        )
        for row in rows
    ]


def concurrency_ranges(levels: Sequence[int]) -> list[str]:
    """``--concurrency-range`` values covering ``levels`` (one range when evenly spaced)."""
    levels = sorted(set(int(c) for c in levels))
    if not levels or levels[0] < 1:
        raise ValueError(f"concurrency levels must be >= 1, got {list(levels)}")
    if len(levels) == 1:
        return [f"{levels[0]}:{levels[0]}:1"]
    steps = {b - a for a, b in itertools.pairwise(levels)}
    if len(steps) == 1:
        return [f"{levels[0]}:{levels[-1]}:{steps.pop()}"]
    return [f"{c}:{c}:1" for c in levels]


def write_input_data(path: Path, input_name: str, batches: Sequence[Any]) -> Path:
    """perf_analyzer's ``--input-data`` JSON: one entry per request, each a uint8 array sent as
    base64 with its shape (real frames, so that the decode does its real work)."""
    data = []
    for batch in batches:
        arr = np.ascontiguousarray(batch)
        data.append({input_name: {"b64": base64.b64encode(arr.tobytes()).decode(), "shape": list(arr.shape)}})
    path.write_text(json.dumps({"data": data}))
    return path


def run_perf_analyzer(
    model: str,
    url: str,
    concurrency: Sequence[int],
    *,
    protocol: Protocol = "http",
    input_data: Path | None = None,
    shapes: dict[str, Sequence[int]] | None = None,
    measurement_interval_ms: int = 2000,
    stability_percentage: int = 20,
    max_trials: int = 8,
    timeout_s: float = 300.0,
    install: PerfAnalyzerInstall | None = None,
    extra_args: Sequence[str] = (),
) -> list[PerfPoint]:
    """Load ``model`` at ``url`` (``host:port``) at each concurrency and return what perf_analyzer
    measured, one point per level, ascending. Requests use the synchronous client with one
    connection per concurrent client, kept alive (as a production client would)."""
    install = install or find_perf_analyzer()
    points: list[PerfPoint] = []
    with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as tmp:
        for i, rng in enumerate(concurrency_ranges(concurrency)):
            report = Path(tmp) / f"report-{i}.csv"
            cmd = [
                str(install.binary),
                "-m",
                model,
                "-u",
                url,
                "-i",
                protocol,
                f"--concurrency-range={rng}",
                "--sync",
                f"--measurement-interval={measurement_interval_ms}",
                f"--stability-percentage={stability_percentage}",
                f"--max-trials={max_trials}",
                "-f",
                str(report),
            ]
            if input_data is not None:
                cmd.append(f"--input-data={input_data}")
            for name, shape in (shapes or {}).items():
                cmd.append(f"--shape={name}:{','.join(str(int(d)) for d in shape)}")
            cmd += list(extra_args)
            try:
                out = subprocess.run(
                    cmd, capture_output=True, text=True, env=install.env(), timeout=timeout_s
                )
            except subprocess.TimeoutExpired as exc:
                raise PerfAnalyzerError(
                    f"perf_analyzer did not finish in {timeout_s:g} s: {' '.join(cmd)}"
                ) from exc
            tail = "\n".join((out.stdout + out.stderr).splitlines()[-30:])
            if out.returncode != 0 or not report.is_file():
                raise PerfAnalyzerError(
                    f"perf_analyzer exited with {out.returncode} ({' '.join(cmd)}):\n{tail}"
                )
            points += parse_csv_report(report.read_text())
    return sorted(points, key=lambda p: p.concurrency)


# --------------------------------------------------------------------------- server statistics


@dataclass(frozen=True)
class ModelStats:
    """One model's cumulative counters from ``/v2/models/stats``."""

    name: str
    success_count: int  # requests answered
    inference_count: int  # batch items inferred
    execution_count: int  # model executions (a batch is one)
    queue_ns: int
    compute_input_ns: int
    compute_infer_ns: int
    compute_output_ns: int


# ModelStats' counters, after its name, in field order.
_COUNTERS: tuple[str, ...] = tuple(f.name for f in fields(ModelStats))[1:]


@dataclass(frozen=True)
class StepTiming:
    """One model over a window: per request milliseconds in each phase, and the mean batch."""

    name: str
    requests: int
    executions: int
    mean_batch: float
    queue_ms: float
    compute_input_ms: float
    compute_infer_ms: float
    compute_output_ms: float

    @property
    def compute_ms(self) -> float:
        return self.compute_input_ms + self.compute_infer_ms + self.compute_output_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "compute_ms": self.compute_ms}


def server_statistics(http_url: str, timeout_s: float = 10.0) -> dict[str, ModelStats]:
    """Every model's counters (summed over versions) from the server at ``http_url`` (host:port)."""
    with _DIRECT.open(f"http://{http_url}/v2/models/stats", timeout=timeout_s) as resp:
        body = json.loads(resp.read())
    out: dict[str, ModelStats] = {}
    for m in body.get("model_stats", []):
        inf = m.get("inference_stats", {})

        def ns(key: str, inf: dict[str, Any] = inf) -> int:
            return int(inf.get(key, {}).get("ns", 0))

        prev = out.get(m["name"])
        stats = ModelStats(
            name=m["name"],
            success_count=int(inf.get("success", {}).get("count", 0)),
            inference_count=int(m.get("inference_count", 0)),
            execution_count=int(m.get("execution_count", 0)),
            queue_ns=ns("queue"),
            compute_input_ns=ns("compute_input"),
            compute_infer_ns=ns("compute_infer"),
            compute_output_ns=ns("compute_output"),
        )
        if prev is not None:  # several versions: add them up
            stats = ModelStats(
                m["name"],
                *(getattr(prev, f) + getattr(stats, f) for f in _COUNTERS),
            )
        out[m["name"]] = stats
    return out


def step_breakdown(
    before: dict[str, ModelStats], after: dict[str, ModelStats], models: Sequence[str]
) -> list[StepTiming]:
    """Per request time in each of ``models`` between two :func:`server_statistics` snapshots."""
    rows = []
    for name in models:
        a, b = after[name], before.get(name)
        d = {f: getattr(a, f) - (getattr(b, f) if b is not None else 0) for f in _COUNTERS}
        n = max(d["success_count"], 1)
        rows.append(
            StepTiming(
                name=name,
                requests=d["success_count"],
                executions=d["execution_count"],
                mean_batch=d["inference_count"] / max(d["execution_count"], 1),
                queue_ms=d["queue_ns"] / n / 1e6,
                compute_input_ms=d["compute_input_ns"] / n / 1e6,
                compute_infer_ms=d["compute_infer_ns"] / n / 1e6,
                compute_output_ms=d["compute_output_ns"] / n / 1e6,
            )
        )
    return rows
