"""Contract smoke test: serve a Triton repository on the real server and hold it to the contract.

Starts ``tritonserver`` on the repository and, over BOTH HTTP and gRPC with ``tritonclient``:

* server liveness/readiness and metadata, readiness of every model of the ensemble;
* model metadata (names, datatypes, shapes) of the ensemble against ``inference_config`` and
  of the engine against the contract's tensors;
* the served configuration (preprocess normalization, postprocess thresholds and class map)
  and the repository's ``inference_config.json`` against the contract;
* known frames through the ensemble: output shapes and dtypes, value ranges (boxes inside
  the frame, scores in [0, 1], classes in the class map, zero padding), and detections equal
  to ``expected`` (what our own engine + ``decode`` give on the same frames);
* HTTP and gRPC answers identical; p50 request latency per protocol at batch 1.

Every check lands in the report with pass/fail and a detail that names what disagrees.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adas.detector.postprocess import Detections
from adas.intake.contract import Contract
from adas.packaging.contract_checks import (
    TRITON_DTYPE,
    ServedDetections,
    format_problems,
    infer,
    inference_config_problems,
    io_diff,
    match_problems,
    normalization_problems,
    postprocess_problems,
    range_problems,
    served_equal,
    served_parameters,
    shape_problems,
)
from adas.packaging.inference_config import FRAMES_INPUT, INFERENCE_CONFIG_FILE
from adas.packaging.triton_repository import TritonRepository
from adas.packaging.triton_server import TritonNotInstalledError, TritonServer, TritonServerError

PROTOCOLS = ("http", "grpc")
# Replaces tritonclient's defaults, so the message limits are restated; a proxy configured in
# the environment must never see requests to our loopback server.
_GRPC_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.enable_http_proxy", 0),
]


@dataclass(frozen=True)
class SmokeCheck:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class ContractSmokeReport:
    repository: str
    model: str
    frames: int
    checks: list[SmokeCheck] = field(default_factory=list)
    server_version: str | None = None
    startup_seconds: float | None = None
    # p50 of batch-1 requests through the ensemble, per protocol, in milliseconds.
    latency_ms_p50: dict[str, float] = field(default_factory=dict)
    server_log: str | None = None

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[SmokeCheck]:
        return [c for c in self.checks if not c.passed]

    def check(self, name: str) -> SmokeCheck:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; have {[c.name for c in self.checks]}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    def to_markdown(self) -> str:
        head = (
            f"**Triton contract smoke: {'PASS' if self.passed else 'FAIL'}** "
            f"({sum(c.passed for c in self.checks)}/{len(self.checks)} checks; server "
            f"{self.server_version or '?'}, startup "
            + (f"{self.startup_seconds:.2f} s" if self.startup_seconds is not None else "n/a")
            + ", p50 "
            + ", ".join(f"{p} {ms:.2f} ms" for p, ms in self.latency_ms_p50.items())
            + ")"
        )
        rows = [
            f"| {c.name} | {'pass' if c.passed else '**FAIL**'} | {c.detail.replace('|', chr(92) + '|')} |"
            for c in self.checks
        ]
        return "\n".join([head, "", "| check | result | detail |", "|---|---|---|", *rows])


class _Recorder:
    def __init__(self, report: ContractSmokeReport) -> None:
        self.report = report

    def add(self, name: str, passed: bool, detail: str = "") -> bool:
        self.report.checks.append(SmokeCheck(name, bool(passed), detail))
        return bool(passed)

    def run(self, name: str, fn: Callable[[], tuple[bool, str]]) -> bool:
        """Record ``fn()``'s (passed, detail); an exception is a failed check, not a crash."""
        try:
            passed, detail = fn()
        except Exception as exc:
            passed, detail = False, f"{type(exc).__name__}: {exc}"
        return self.add(name, passed, detail)


# --------------------------------------------------------------------------- the smoke test


@dataclass(frozen=True)
class _ServedModel:
    """The served model's names and the contract they are held to."""

    contract: Contract
    model: str
    steps: dict[str, str]

    @property
    def max_detections(self) -> int:
        return self.contract.postprocess.max_detections


def _metadata(client: Any, proto: str, name: str) -> dict[str, Any]:
    if proto == "grpc":
        return client.get_model_metadata(name, as_json=True)
    return client.get_model_metadata(name)


def _server_checks(rec: _Recorder, proto: str, client: Any, served: _ServedModel) -> None:
    """Liveness, server metadata, model readiness, and the ensemble's and engine's tensors."""
    model, steps, contract = served.model, served.steps, served.contract
    c = contract.input.shape[1]
    k = served.max_detections
    rec.run(
        f"{proto}: server live and ready",
        lambda: (bool(client.is_server_live() and client.is_server_ready()), "live and ready"),
    )

    def server_meta() -> tuple[bool, str]:
        meta = client.get_server_metadata(as_json=True) if proto == "grpc" else client.get_server_metadata()
        rec.report.server_version = meta.get("version")
        return meta.get("name") == "triton" and bool(meta.get("version")), (
            f"{meta.get('name')} {meta.get('version')}"
        )

    rec.run(f"{proto}: server metadata", server_meta)

    def models_ready() -> tuple[bool, str]:
        not_ready = [n for n in (model, *steps.values()) if not client.is_model_ready(n)]
        return not not_ready, (
            f"not ready: {not_ready}" if not_ready else f"{model} + {len(steps)} steps ready"
        )

    rec.run(f"{proto}: models ready", models_ready)

    def ensemble_meta() -> tuple[bool, str]:
        meta = _metadata(client, proto, model)
        problems = io_diff("input", meta["inputs"], [(FRAMES_INPUT, "UINT8", [-1, -1, -1, c])])
        problems += io_diff(
            "output",
            meta["outputs"],
            [
                ("boxes", "FP32", [-1, k, 4]),
                ("scores", "FP32", [-1, k]),
                ("classes", "INT32", [-1, k]),
                ("num_detections", "INT32", [-1]),
            ],
        )
        if meta.get("platform") != "ensemble":
            problems.append(f"platform {meta.get('platform')!r} != 'ensemble'")
        return not problems, format_problems(problems) or "frames -> boxes/scores/classes/num_detections"

    rec.run(f"{proto}: ensemble metadata matches inference_config", ensemble_meta)

    def engine_meta() -> tuple[bool, str]:
        meta = _metadata(client, proto, steps["engine"])
        i = contract.input
        wanted = [(i.name, TRITON_DTYPE[i.dtype], list(i.shape))]
        if i.source_size is not None:
            wanted.append((i.source_size.name, TRITON_DTYPE[i.source_size.dtype], [-1, 2]))
        problems = io_diff("input", meta["inputs"], wanted)
        problems += io_diff(
            "output",
            meta["outputs"],
            [(o.name, TRITON_DTYPE[o.dtype], list(o.shape)) for o in contract.outputs],
        )
        return not problems, format_problems(problems) or "engine tensors match the contract"

    rec.run(f"{proto}: engine metadata matches the contract", engine_meta)


def _served_config_checks(rec: _Recorder, client: Any, served: _ServedModel) -> int:
    """The configuration the server actually loaded (not the files on disk) against the contract;
    returns the preprocess step's max batch size."""
    configs: dict[str, dict[str, Any]] = {}

    def served_params(
        step: str, problems_of: Callable[[dict[str, str], Contract], list[str]]
    ) -> tuple[bool, str]:
        configs[step] = client.get_model_config(served.steps[step])
        problems = problems_of(served_parameters(configs[step]), served.contract)
        return not problems, format_problems(problems) or "ok"

    rec.run(
        "preprocess normalization matches the contract",
        lambda: served_params("preprocess", normalization_problems),
    )
    rec.run(
        "postprocess parameters match the contract",
        lambda: served_params("postprocess", postprocess_problems),
    )
    return max(1, int(configs.get("preprocess", {}).get("max_batch_size", 1)))


def _answer_checks(
    rec: _Recorder,
    clients: dict[str, Any],
    modules: dict[str, Any],
    served: _ServedModel,
    frames: np.ndarray,
    batch: int,
    expected: list[Detections],
    box_tol: float,
    tolerance: float,
) -> dict[str, ServedDetections]:
    """Known frames through the ensemble over each protocol: shapes, ranges, the local engine's
    detections, and the same answer over HTTP and gRPC."""
    answers: dict[str, ServedDetections] = {}
    for proto, client in clients.items():
        try:
            answers[proto] = infer(client, modules[proto], served.model, frames, batch)
        except Exception as exc:
            rec.add(f"{proto}: inference", False, f"{type(exc).__name__}: {exc}")
            continue
        out = answers[proto]
        shapes = shape_problems(out, len(frames), served.max_detections)
        rec.add(f"{proto}: output shapes and dtypes", not shapes, format_problems(shapes) or "ok")
        if shapes:
            continue
        ranges = range_problems(out, served.contract, (int(frames.shape[1]), int(frames.shape[2])))
        rec.add(f"{proto}: output value ranges", not ranges, format_problems(ranges) or "ok")
        match = match_problems(out.detections(), expected, box_tol, tolerance)
        total = int(out.num_detections.sum())
        rec.add(
            f"{proto}: detections equal the local engine's",
            not match,
            format_problems(match)
            or f"{total} detections on {len(frames)} frames within {box_tol:g} px / {tolerance:g}",
        )
    if len(answers) == 2:
        diff = served_equal(answers["http"], answers["grpc"])
        rec.add("http and grpc answers identical", not diff, format_problems(diff) or "bit-identical")
    return answers


def _latency(
    rec: _Recorder,
    client: Any,
    module: Any,
    proto: str,
    model: str,
    frame: np.ndarray,
    requests: int,
) -> None:
    """p50 of batch-1 requests after one warm-up request (stub imports, first ORT run)."""
    try:
        infer(client, module, model, frame, 1)
        times = []
        for _ in range(max(1, requests)):
            t0 = time.perf_counter()
            infer(client, module, model, frame, 1)
            times.append((time.perf_counter() - t0) * 1000.0)
    except Exception as exc:
        rec.add(f"{proto}: latency requests", False, f"{type(exc).__name__}: {exc}")
        return
    rec.report.latency_ms_p50[proto] = float(statistics.median(times))


def run_contract_smoke(
    repository: TritonRepository | str | Path,
    contract: Contract,
    frames_uint8: np.ndarray,
    expected: list[Detections],
    *,
    venv: str | Path | None = None,
    tolerance: float = 1e-3,
    box_tolerance_px: float | None = None,
    latency_requests: int = 10,
    log_path: str | Path | None = None,
    startup_timeout_s: float = 60.0,
) -> ContractSmokeReport:
    """Serve ``repository`` and check it against ``contract``; see the module docstring.

    ``expected[i]`` are the detections of ``frames_uint8[i]`` (uint8 [N, H, W, 3]) from our own
    engine + ``decode``. Scores must agree within ``tolerance``, box coordinates within
    ``box_tolerance_px`` pixels (default: ``tolerance``). A repository the server refuses to
    load is a failed ``server start`` check carrying the log's tail; a missing server
    (no ``.venv-triton``) raises ``TritonServerError``.
    """
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp

    repo_root = repository.root if isinstance(repository, TritonRepository) else Path(repository)
    frames = np.asarray(frames_uint8)
    c = contract.input.shape[1]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != c:
        raise ValueError(f"frames must be uint8 [N, H, W, {c}], got {frames.dtype} {list(frames.shape)}")
    if len(expected) != len(frames):
        raise ValueError(f"{len(expected)} expected detection lists for {len(frames)} frames")
    box_tol = tolerance if box_tolerance_px is None else box_tolerance_px
    model = contract.model_name
    served = _ServedModel(
        contract,
        model,
        {step: f"{model}_{step}" for step in ("preprocess", "engine", "postprocess")},
    )
    report = ContractSmokeReport(repository=str(repo_root), model=model, frames=len(frames))
    rec = _Recorder(report)

    # Offline checks of the repository's own record (no server needed).
    ic = inference_config_problems(repo_root / INFERENCE_CONFIG_FILE, contract)
    rec.add("inference_config.json matches the contract", not ic, format_problems(ic) or "ok")

    server = TritonServer(repo_root, venv=venv, log_path=log_path, startup_timeout_s=startup_timeout_s)
    try:
        server.start()
    except TritonServerError as exc:
        if isinstance(exc, TritonNotInstalledError):
            raise
        rec.add("server start", False, str(exc))
        report.server_log = str(server.log_path) if server.log_path else None
        return report
    report.startup_seconds = server.startup_seconds
    report.server_log = str(server.log_path) if server.log_path else None
    rec.add("server start", True, f"ready in {server.startup_seconds:.2f} s")

    clients: dict[str, Any] = {}
    try:
        clients["http"] = thttp.InferenceServerClient(server.http_url)
        clients["grpc"] = tgrpc.InferenceServerClient(server.grpc_url, channel_args=_GRPC_CHANNEL_ARGS)
        modules = {"http": thttp, "grpc": tgrpc}
        for proto, client in clients.items():
            _server_checks(rec, proto, client, served)
        batch = _served_config_checks(rec, clients["http"], served)
        answers = _answer_checks(rec, clients, modules, served, frames, batch, expected, box_tol, tolerance)
        for proto in answers:
            _latency(rec, clients[proto], modules[proto], proto, model, frames[:1], latency_requests)
    finally:
        # Close clients before stopping the server: an open HTTP keep-alive connection would
        # make it wait out its exit timeout.
        for client in clients.values():
            with contextlib.suppress(Exception):
                client.close()
        server.stop()
    return report
