"""Latency protocol: subprocess measurement, stability windows, report fields."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from adas.config_errors import ConfigError
from adas.intake.contract import Contract
from adas.packaging.config import LatencyConfig, load_packaging_config
from adas.packaging.latency import (
    LatencyMeasurementError,
    LatencyReport,
    measure_callable,
    measure_latency,
    measure_torch_eager_latency,
)

# Short protocol: the fields are what is tested here, not the numbers.
QUICK = LatencyConfig(
    warmup_runs=2,
    window_size=8,
    min_windows=2,
    max_windows=3,
    stable_windows=2,
    stability_tolerance=0.5,
    contention_retries=0,
)


def _sane(report: LatencyReport, sizes: tuple[int, ...]) -> None:
    assert sorted(report.per_batch) == sorted(sizes)
    for b in report.per_batch.values():
        assert 0 < b.min_ms <= b.p50_ms <= b.p95_ms <= b.p99_ms
        assert b.throughput_fps > 0
        assert QUICK.min_windows <= b.windows <= QUICK.max_windows
        assert b.windows * QUICK.min_window_runs <= b.timed_runs <= b.windows * QUICK.window_size
    assert report.best_batch in sizes
    assert report.best_throughput_fps == max(b.throughput_fps for b in report.per_batch.values())
    assert report.peak_rss_mib > 10
    assert report.threads == QUICK.intra_op_threads
    assert report.machine["cpus"] >= 1
    assert report.protocol["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "| batch | p50 ms |" in report.markdown()
    assert set(report.to_metadata()["per_batch"]) == {str(s) for s in sizes}
    # The host's load during the measurement is kept with it.
    assert report.cpu_seconds > 0 and report.attempts == 1
    assert set(report.host_load) >= {"others_cpu_fraction", "steal_fraction", "load_1m_before", "wall_s"}


def test_ort_latency_report_is_sane(onnx_path: Path, contract: Contract) -> None:
    report = measure_latency(onnx_path, contract, (1, 2), QUICK)
    _sane(report, (1, 2))
    assert report.runtime == "onnxruntime"
    assert report.model_size_bytes == onnx_path.stat().st_size
    assert "onnxruntime" in report.versions


def test_torch_eager_latency_report_is_sane(bundle: Path, contract: Contract) -> None:
    report = measure_torch_eager_latency(bundle, (1,), QUICK)
    _sane(report, (1,))
    assert report.runtime == "torch-eager"
    assert report.model_size_bytes == (bundle / contract.model_file).stat().st_size
    assert "torch" in report.versions


def test_windows_stop_once_stable() -> None:
    cfg = QUICK.model_copy(update={"max_windows": 10, "stability_tolerance": 0.5})
    b = measure_callable(lambda: time.sleep(0.001), 4, cfg)
    assert b.stable and b.windows == 2
    assert b.p50_ms >= 1.0 and b.throughput_fps == pytest.approx(4000 / b.mean_ms)
    # An impossible tolerance runs to max_windows and says it never stabilized.
    strict = QUICK.model_copy(update={"stability_tolerance": 1e-12, "max_windows": 3})
    calls = iter(range(10_000))
    b = measure_callable(lambda: time.sleep(0.0002 * (next(calls) % 7)), 1, strict)
    assert not b.stable and b.windows == 3


def test_child_failure_is_reported(contract: Contract, tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(LatencyMeasurementError, match="latency subprocess failed"):
        measure_latency(missing, contract, (1,), QUICK)


def test_latency_config_is_validated(tmp_path: Path) -> None:
    from adas.packaging.config import PACKAGING_FILE

    bad = tmp_path / "packaging.yaml"
    bad.write_text(
        PACKAGING_FILE.read_text().replace("batch_sizes: [1, 2, 4, 8, 16]", "batch_sizes: [1, 1, 0]")
    )
    with pytest.raises(ConfigError, match=r"latency\.batch_sizes: .*unique and >= 1"):
        load_packaging_config(bad)
    with pytest.raises(ValueError, match="max_windows"):
        LatencyConfig(max_windows=2, stable_windows=3)


def test_interleaved_comparison(bundle: Path, onnx_path: Path, contract: Contract) -> None:
    from adas.packaging.latency import LatencySpec, compare_latency

    c, h, w = contract.input.shape[1:]
    specs = {
        "eager": LatencySpec("torch", bundle, contract.input.name, (c, h, w)),
        "ort": LatencySpec("ort", onnx_path, contract.input.name, (c, h, w)),
        # ONNX Runtime's default session (the benchmark's Model Navigator reference)
        "ort_defaults": LatencySpec("ort-default", onnx_path, contract.input.name, (c, h, w)),
    }
    cmp = compare_latency(specs, "eager", batch_size=1, rounds=3, config=QUICK)
    assert cmp.speedup_vs_baseline["eager"] == 1.0
    assert cmp.speedup_vs_baseline["ort"] > 0 and cmp.speedup_vs_baseline["ort_defaults"] > 0
    # Any two runtimes pair up the same way as each against the baseline.
    assert cmp.paired_ratio("eager", "ort") == cmp.speedup_vs_baseline["ort"]
    assert cmp.paired_ratio("ort", "ort") == 1.0
    for name, b in cmp.per_runtime.items():
        assert 0 < b.p50_ms <= b.p95_ms <= b.p99_ms and b.windows == 3
        assert len(cmp.round_p50_ms[name]) == 3
        assert cmp.peak_rss_mib[name] > 10
    with pytest.raises(ValueError, match="baseline"):
        compare_latency(specs, "nope", config=QUICK)
