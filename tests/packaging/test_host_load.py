"""A latency is judged only on a host quiet enough to say something about the engine: the load
other work put on the cores is measured around every measurement, a contended one is measured
again, and one still contended is reported as such (never failed by chance)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adas.intake.contract import Contract
from adas.packaging.config import LatencyConfig
from adas.packaging.host_load import CpuSnapshot, HostLoad, host_load, snapshot
from adas.packaging.latency import LatencyReport, measure_latency, measured_on_a_quiet_host

QUICK = LatencyConfig(
    warmup_runs=2, window_size=8, min_windows=2, max_windows=3, stable_windows=2, stability_tolerance=0.5
)


def test_a_snapshot_reads_the_aggregate_cpu_line(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal (clock ticks), then per-cpu lines
    stat.write_text("cpu  1000 50 250 9000 30 5 15 80 0 0\ncpu0 500 25 125 4500 15 2 8 40 0 0\n")
    snap = snapshot(stat)
    tick = 100.0  # Linux's USER_HZ
    assert snap.busy_s == pytest.approx((1000 + 50 + 250 + 5 + 15 + 80) / tick)
    assert snap.steal_s == pytest.approx(80 / tick)
    assert snapshot(tmp_path / "missing").busy_s is None  # not Linux: only the load average


def _snap(t: float, busy: float | None, steal: float | None = 0.0, load: float = 1.0) -> CpuSnapshot:
    return CpuSnapshot(monotonic_s=t, load_1m=load, busy_s=busy, steal_s=steal)


def test_others_cpu_is_what_the_cores_spent_beyond_the_measured_process() -> None:
    # 2 s on 2 cores = 4 core-seconds; the cores were busy 3 s, the measuring process used 1 s.
    load = host_load(_snap(0, 100.0, load=0.4), _snap(2.0, 103.0, load=1.3), own_cpu_s=1.0, cpus=2)
    assert load.others_cpu_fraction == pytest.approx(0.5) and load.steal_fraction == 0.0
    assert load.contended(max_others=0.25, max_steal=0.05) == (
        "contended: other work used 50% of the 2 cores' time (more than 25%); load average 0.4 -> 1.3"
    )
    quiet = host_load(_snap(0, 100.0), _snap(2.0, 101.2), own_cpu_s=1.0, cpus=2)
    assert quiet.others_cpu_fraction == pytest.approx(0.05) and quiet.contended(0.25, 0.05) is None
    stolen = host_load(_snap(0, 100.0, 0.0), _snap(2.0, 101.6, 0.6), own_cpu_s=1.0, cpus=2)
    assert stolen.contended(0.25, 0.05) is not None and "the hypervisor stole 15%" in str(
        stolen.contended(0.25, 0.05)
    )
    unknown = host_load(_snap(0, None, None), _snap(2.0, None, None), own_cpu_s=1.0, cpus=2)
    assert unknown.others_cpu_fraction is None and unknown.contended(0.25, 0.05) is None


def _report(cpu_s: float = 1.0) -> LatencyReport:
    return LatencyReport(
        runtime="onnxruntime", model="m.onnx", model_size_bytes=1, per_batch={}, best_batch=1,
        best_throughput_fps=1.0, peak_rss_mib=1.0, threads=2, seconds=2.0, versions={}, machine={},
        cpu_seconds=cpu_s,
    )  # fmt: skip


class _Host:
    """Snapshots as if other work used ``others[i]`` core-seconds during measurement i (2 cores, 2 s)."""

    def __init__(self, others: list[float]) -> None:
        self.others, self.calls, self.busy, self.t = others, 0, 100.0, 0.0

    def __call__(self) -> CpuSnapshot:
        if self.calls % 2:  # after a measurement: the measured process's 1 s plus the others'
            self.busy += 1.0 + self.others[self.calls // 2]
            self.t += 2.0
        self.calls += 1
        return _snap(self.t, self.busy)


def test_a_contended_measurement_is_taken_again_and_the_quiet_one_kept() -> None:
    pauses: list[float] = []
    cfg = QUICK.model_copy(update={"contention_retries": 2, "contention_pause_s": 1.5})
    report = measured_on_a_quiet_host(_report, cfg, _Host([2.0, 0.1]), pauses.append)
    assert report.contended is None and report.attempts == 2 and pauses == [1.5]
    assert report.host_load["others_cpu_fraction"] == pytest.approx(0.025)


def test_still_contended_after_the_retries_it_says_so_with_the_least_contended_numbers() -> None:
    pauses: list[float] = []
    cfg = QUICK.model_copy(update={"contention_retries": 2, "contention_pause_s": 0.0})
    report = measured_on_a_quiet_host(_report, cfg, _Host([3.0, 1.6, 2.4]), pauses.append)
    assert report.attempts == 3 and len(pauses) == 2
    assert report.host_load["others_cpu_fraction"] == pytest.approx(0.4)
    assert report.contended is not None and report.contended.startswith("contended: other work used 40%")
    assert "after 3 measurements" in report.markdown()


@pytest.fixture
def burners() -> Iterator[int]:
    """CPU burners, one per two cores of this host: about half the cores' time goes to them."""
    n = max(1, (os.cpu_count() or 1) // 2)
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield n
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_a_measurement_beside_cpu_burners_is_reported_contended(
    onnx_path: Path, contract: Contract, burners: int
) -> None:
    report = measure_latency(onnx_path, contract, (1,), QUICK.model_copy(update={"contention_retries": 0}))
    assert report.contended is not None, report.host_load
    assert report.contended.startswith("contended: other work used")
    assert isinstance(HostLoad(**report.host_load), HostLoad)
