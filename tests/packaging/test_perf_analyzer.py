"""Triton's perf_analyzer driven by ``adas.packaging.perf_analyzer`` against a real server, the
server's statistics, and the ``triton`` serving settings of ``packaging.yaml``.

No figure is asserted beyond "positive": speed is measured by ``scripts/benchmark_serving.py``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2

from adas.config_errors import ConfigError
from adas.intake.contract import Contract
from adas.packaging import perf_analyzer as pa
from adas.packaging.config import PACKAGING_FILE, TritonConfig, load_packaging_config
from adas.packaging.triton_repository import write_triton_repository
from adas.packaging.triton_server import TritonServer, default_triton_venv
from tests.packaging.test_triton_repository import CPU, _config

VENV = default_triton_venv()
# Like the contract smoke tests: skipped only where the Triton virtualenv does not exist at all;
# where it does, scripts/setup_triton_env.sh has installed perf_analyzer beside the server.
needs_triton_venv = pytest.mark.skipif(
    not VENV.exists(), reason=f"{VENV} is missing: run `bash scripts/setup_triton_env.sh`"
)


@pytest.mark.slow
@needs_triton_venv
def test_perf_analyzer_measures_a_real_server_and_its_steps(
    tmp_path: Path, contract: Contract, onnx_path: Path
) -> None:
    repo = write_triton_repository(
        tmp_path / "repo", contract, onnx_path, serving="python-onnxruntime", max_batch_size=4, **CPU
    )
    h, w = contract.input.height_width
    frames = np.random.default_rng(0).integers(0, 256, size=(4, h, w, 3), dtype=np.uint8)
    data = pa.write_input_data(tmp_path / "input.json", "frames", [frames[i : i + 1] for i in range(4)])
    with TritonServer(repo.root, log_path=tmp_path / "server.log") as server:
        before = pa.server_statistics(server.http_url)
        points = pa.run_perf_analyzer(
            repo.ensemble,
            server.http_url,
            [1, 2],
            input_data=data,
            measurement_interval_ms=500,
            stability_percentage=100,
            max_trials=3,
            timeout_s=120,
        )
        after = pa.server_statistics(server.http_url)
    assert [p.concurrency for p in points] == [1, 2]
    for p in points:
        assert p.throughput > 0
        assert 0 < p.p50_ms <= p.p95_ms <= p.p99_ms
    steps = {s.name: s for s in pa.step_breakdown(before, after, repo.model_names)}
    assert set(steps) == set(repo.model_names)
    served = steps[repo.ensemble].requests
    assert served > 0
    # Every request of the ensemble went through each of its steps once.
    for name in (repo.preprocess, repo.engine, repo.postprocess):
        assert steps[name].requests == served
        assert steps[name].compute_infer_ms > 0 and steps[name].mean_batch >= 1.0


def test_missing_binary_names_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERF_ANALYZER", raising=False)
    with pytest.raises(
        pa.PerfAnalyzerNotInstalledError, match=r"no-venv/perf_analyzer/bin.*setup_triton_env\.sh"
    ):
        pa.find_perf_analyzer(tmp_path / "no-venv")
    # The wrapper refuses before running anything, with the same message.
    monkeypatch.setenv("TRITON_VENV", str(tmp_path / "no-venv"))
    with pytest.raises(pa.PerfAnalyzerNotInstalledError, match="placeholder"):
        pa.run_perf_analyzer("m", "127.0.0.1:1", [1])


@needs_triton_venv
def test_missing_shared_library_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real binary without its lib folder: libcudart.so.12 is named with the script that
    installs it (unless the host happens to provide it system-wide)."""
    real = pa.find_perf_analyzer().binary
    venv = tmp_path / "venv"
    (venv / "perf_analyzer" / "bin").mkdir(parents=True)
    (venv / "perf_analyzer" / "bin" / "perf_analyzer").symlink_to(real)
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    if any(
        Path(d, "libcudart.so.12").exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/local/cuda/lib64")
    ):
        pytest.skip("this host has libcudart.so.12 system-wide")
    with pytest.raises(pa.PerfAnalyzerNotInstalledError, match=r"libcudart\.so\.12.*setup_triton_env\.sh"):
        pa.find_perf_analyzer(venv)


@needs_triton_venv
def test_failed_run_carries_its_output() -> None:
    """A server that is not there: perf_analyzer's own error, not a parse failure."""
    with pytest.raises(pa.PerfAnalyzerError, match="exited with"):
        pa.run_perf_analyzer("absent", "127.0.0.1:9", [1], measurement_interval_ms=200, timeout_s=60)


def test_csv_report_and_concurrency_ranges() -> None:
    text = (
        "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
        "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
        "p50 latency,p90 latency,p95 latency,p99 latency,Avg latency\n"
        "4,120.5,10,200,5,300,25000,800,20,30000,35000,40000,50000,31000\n"
    )
    (p,) = pa.parse_csv_report(text)
    assert p.concurrency == 4 and p.throughput == 120.5
    assert (p.p50_ms, p.p95_ms, p.p99_ms, p.server_compute_infer_ms) == (30.0, 40.0, 50.0, 25.0)
    with pytest.raises(pa.PerfAnalyzerError, match="no measurement rows"):
        pa.parse_csv_report("Concurrency,Inferences/Second\n")
    assert pa.concurrency_ranges([16, 4]) == ["4:16:12"]
    assert pa.concurrency_ranges([1, 2, 4]) == ["1:1:1", "2:2:1", "4:4:1"]
    with pytest.raises(ValueError, match=">= 1"):
        pa.concurrency_ranges([0])


def test_not_executable_binary_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "perf_analyzer"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(stat.S_IRUSR)
    monkeypatch.setenv("PERF_ANALYZER", str(fake))
    assert not os.access(fake, os.X_OK)
    with pytest.raises(pa.PerfAnalyzerNotInstalledError, match=str(fake)):
        pa.find_perf_analyzer()


# --------------------------------------------------------------------------- serving settings


def test_triton_settings_shape_the_repository(tmp_path: Path, contract: Contract, onnx_path: Path) -> None:
    cfg = load_packaging_config().triton
    repo = write_triton_repository(
        tmp_path / "repo",
        contract,
        onnx_path,
        serving="python-onnxruntime",
        max_batch_size=cfg.max_batch_size,
        max_queue_delay_us=1234,
        instance_count=3,
        intra_op_threads=2,
        step_instance_count=1,
        **CPU,
    )
    counts = {}
    for name in (repo.preprocess, repo.engine, repo.postprocess):
        c = _config(repo.root / name / "config.pbtxt")
        assert c.max_batch_size == cfg.max_batch_size
        assert c.dynamic_batching.max_queue_delay_microseconds == 1234
        (group,) = c.instance_group
        assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        counts[name] = group.count
    assert counts == {repo.preprocess: 1, repo.engine: 3, repo.postprocess: 1}
    assert (
        _config(repo.root / repo.engine / "config.pbtxt").parameters["intra_op_threads"].string_value == "2"
    )
    with pytest.raises(ValueError, match="step_instance_count"):
        write_triton_repository(
            tmp_path / "bad", contract, onnx_path, serving="python-onnxruntime", step_instance_count=0, **CPU
        )
    with pytest.raises(ValueError, match="max_queue_delay_us"):
        write_triton_repository(
            tmp_path / "bad", contract, onnx_path, serving="python-onnxruntime", max_queue_delay_us=-1, **CPU
        )


@pytest.mark.parametrize(
    ("line", "bad", "field"),
    [
        ("engine_instances: 2", "engine_instances: 0", r"triton\.engine_instances"),
        ("max_queue_delay_us: 200", "max_queue_delay_us: -5", r"triton\.max_queue_delay_us"),
        ("max_batch_size: 16", "max_batch_size: 0", r"triton\.max_batch_size"),
        ("step_instances: 1", "step_instances: many", r"triton\.step_instances"),
        (
            "engine_intra_op_threads: 1",
            "engine_intra_op_threads: 1\n  spare_cores: 3",
            r"triton\.spare_cores",
        ),
    ],
)
def test_bad_triton_settings_are_rejected_naming_the_field(
    tmp_path: Path, line: str, bad: str, field: str
) -> None:
    text = PACKAGING_FILE.read_text()
    assert line in text
    path = tmp_path / "packaging.yaml"
    path.write_text(text.replace(line, bad))
    with pytest.raises(ConfigError, match=field):
        load_packaging_config(path)

    with pytest.raises(ValueError, match="engine_instances"):
        TritonConfig(engine_instances=0)
