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
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adas.detector.postprocess import Detections
from adas.intake.contract import Contract
from adas.packaging.inference_config import (
    ENSEMBLE_OUTPUTS,
    FRAMES_INPUT,
    INFERENCE_CONFIG_FILE,
    build_inference_config,
)
from adas.packaging.triton_repository import TritonRepository
from adas.packaging.triton_server import TritonNotInstalledError, TritonServer, TritonServerError

_TRITON_DTYPE = {"float32": "FP32", "float16": "FP16", "uint8": "UINT8", "int64": "INT64", "int32": "INT32"}
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


# --------------------------------------------------------------------------- helpers


def _shape(v: Sequence[Any]) -> list[int]:
    return [int(d) for d in v]  # gRPC's JSON renders int64 dims as strings


def _io_diff(kind: str, served: list[dict[str, Any]], wanted: list[tuple[str, str, list[int]]]) -> list[str]:
    got = {t["name"]: (t["datatype"], _shape(t["shape"])) for t in served}
    problems = []
    for name, dtype, shape in wanted:
        if name not in got:
            problems.append(f"{kind} {name!r} missing (served {sorted(got)})")
            continue
        if got[name][0] != dtype:
            problems.append(f"{kind} {name!r} datatype {got[name][0]} != {dtype}")
        if got[name][1] != shape:
            problems.append(f"{kind} {name!r} shape {got[name][1]} != {shape}")
    extra = sorted(set(got) - {n for n, _, _ in wanted})
    if extra:
        problems.append(f"unexpected {kind}s {extra}")
    return problems


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def _params(config: dict[str, Any]) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def _normalization_problems(params: dict[str, str], contract: Contract) -> list[str]:
    norm = contract.input.normalization
    problems = []
    served_scale = float(params["scale"])
    if not _close(served_scale, norm.scale):
        problems.append(f"normalization scale: served {served_scale!r} != contract {norm.scale!r}")
    for key in ("mean", "std"):
        served = [float(v) for v in json.loads(params[key])]
        wanted = [float(v) for v in getattr(norm, key)]
        if len(served) != len(wanted) or not all(_close(a, b) for a, b in zip(served, wanted, strict=False)):
            problems.append(f"normalization {key}: served {served} != contract {wanted}")
    return problems


def _postprocess_problems(params: dict[str, str], contract: Contract) -> list[str]:
    post = contract.postprocess
    wanted: dict[str, Any] = {
        "stride": post.stride,
        "heatmap_output": post.heatmap_output,
        "size_output": post.size_output,
        "offset_output": post.offset_output,
        "score_threshold": post.score_threshold,
        "nms_iou_threshold": post.nms_iou_threshold,
        "max_detections": post.max_detections,
    }
    problems = []
    for key, value in wanted.items():
        if key not in params:
            problems.append(f"postprocess parameter {key} missing")
            continue
        raw = params[key]
        same = raw == value if isinstance(value, str) else _close(float(raw), float(value))
        if not same:
            problems.append(f"postprocess {key}: served {raw} != contract {value}")
    served_ids = json.loads(params.get("class_ids", "null"))
    wanted_ids = [c.id for c in contract.classes]
    if served_ids != wanted_ids:
        problems.append(f"postprocess class_ids: served {served_ids} != contract {wanted_ids}")
    return problems


def _inference_config_problems(path: Path, contract: Contract) -> list[str]:
    if not path.is_file():
        return [f"{path.name} missing from the repository"]
    served = json.loads(path.read_text())
    target = served.get("target", {})
    wanted = build_inference_config(
        contract, target.get("device", "?"), target.get("precision", "?"), target.get("runtime", "?")
    )
    return [
        f"{INFERENCE_CONFIG_FILE} {key}: {served.get(key)} != contract {wanted[key]}"
        for key in (
            "model_name",
            "input",
            "normalization",
            "model_outputs",
            "outputs",
            "postprocess",
            "class_map",
        )
        if served.get(key) != wanted[key]
    ]


@dataclass(frozen=True)
class _Served:
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    num_detections: np.ndarray

    def detections(self) -> list[Detections]:
        return [
            Detections(
                self.boxes[i, :n].astype(np.float32),
                self.scores[i, :n].astype(np.float32),
                self.classes[i, :n].astype(np.int64),
            )
            for i, n in enumerate(self.num_detections.tolist())
        ]


def _infer(client: Any, module: Any, model: str, frames: np.ndarray, batch: int) -> _Served:
    parts: dict[str, list[np.ndarray]] = {n: [] for n in ENSEMBLE_OUTPUTS}
    for s in range(0, len(frames), batch):
        chunk = np.ascontiguousarray(frames[s : s + batch])
        inp = module.InferInput(FRAMES_INPUT, list(chunk.shape), "UINT8")
        inp.set_data_from_numpy(chunk)
        outs = [module.InferRequestedOutput(n) for n in ENSEMBLE_OUTPUTS]
        result = client.infer(model, [inp], outputs=outs)
        for n in ENSEMBLE_OUTPUTS:
            parts[n].append(result.as_numpy(n))
    return _Served(*(np.concatenate(parts[n]) for n in ENSEMBLE_OUTPUTS))


def _format_problems(problems: list[str], limit: int = 6) -> str:
    more = f" (+{len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


def _shape_problems(served: _Served, n_frames: int, k: int) -> list[str]:
    wanted = {
        "boxes": ((n_frames, k, 4), np.float32),
        "scores": ((n_frames, k), np.float32),
        "classes": ((n_frames, k), np.int32),
        "num_detections": ((n_frames,), np.int32),
    }
    problems = []
    for name, (shape, dtype) in wanted.items():
        arr = getattr(served, name)
        if arr.shape != shape or arr.dtype != dtype:
            problems.append(f"{name} {arr.dtype}{list(arr.shape)} != {np.dtype(dtype)}{list(shape)}")
    return problems


def _range_problems(served: _Served, contract: Contract) -> list[str]:
    _, _, h, w = contract.input.shape
    k = contract.postprocess.max_detections
    class_ids = {c.id for c in contract.classes}
    problems = []
    for i, n in enumerate(served.num_detections.tolist()):
        if not 0 <= n <= k:
            problems.append(f"frame {i}: num_detections {n} outside [0, {k}]")
            continue
        b, s, c = served.boxes[i, :n], served.scores[i, :n], served.classes[i, :n]
        if not np.all(np.isfinite(b)) or not np.all(np.isfinite(s)):
            problems.append(f"frame {i}: non-finite boxes or scores")
        if b.size and (
            b[:, [0, 2]].min() < 0
            or b[:, [1, 3]].min() < 0
            or b[:, [0, 2]].max() > w
            or b[:, [1, 3]].max() > h
        ):
            problems.append(f"frame {i}: boxes outside the {w}x{h} frame")
        if b.size and (np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1])):
            problems.append(f"frame {i}: boxes with x1 < x0 or y1 < y0")
        if s.size and (s.min() < 0 or s.max() > 1):
            problems.append(f"frame {i}: scores outside [0, 1] ({s.min():.4g}..{s.max():.4g})")
        if s.size > 1 and np.any(np.diff(s) > 0):
            problems.append(f"frame {i}: scores not sorted descending")
        bad = sorted(set(c.tolist()) - class_ids)
        if bad:
            problems.append(f"frame {i}: classes {bad} not in the class map {sorted(class_ids)}")
        if np.any(served.boxes[i, n:]) or np.any(served.scores[i, n:]) or np.any(served.classes[i, n:]):
            problems.append(f"frame {i}: non-zero padding past num_detections={n}")
    return problems


def _match_problems(
    got: list[Detections], expected: list[Detections], box_tol: float, score_tol: float
) -> list[str]:
    """Same count per frame; each expected detection has a served one of the same class with
    every box coordinate within ``box_tol`` px and the score within ``score_tol``."""
    if len(got) != len(expected):
        return [f"{len(got)} frames served, {len(expected)} expected"]
    problems = []
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        if len(g) != len(e):
            problems.append(f"frame {i}: {len(g)} detections served, {len(e)} expected")
            continue
        used = np.zeros(len(g), bool)
        for j in np.argsort(-e.scores, kind="stable"):
            same = np.flatnonzero((g.category_ids == e.category_ids[j]) & ~used)
            if same.size == 0:
                problems.append(f"frame {i}: expected class {int(e.category_ids[j])} detection not served")
                continue
            dist = np.abs(g.boxes[same] - e.boxes[j]).max(axis=1)
            best = int(same[np.argmin(dist)])
            used[best] = True
            db = float(np.abs(g.boxes[best] - e.boxes[j]).max())
            ds = abs(float(g.scores[best]) - float(e.scores[j]))
            if db > box_tol or ds > score_tol:
                problems.append(
                    f"frame {i}: class {int(e.category_ids[j])} detection at {np.round(e.boxes[j], 1).tolist()} "
                    f"differs by {db:.3g} px (tolerance {box_tol:g}) / score {ds:.3g} (tolerance {score_tol:g})"
                )
    return problems


def _served_equal(a: _Served, b: _Served) -> list[str]:
    return [
        f"{n} differs between HTTP and gRPC"
        for n in ENSEMBLE_OUTPUTS
        if not np.array_equal(getattr(a, n), getattr(b, n))
    ]


# --------------------------------------------------------------------------- the smoke test


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
    _, c, h, w = contract.input.shape
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (h, w, c):
        raise ValueError(f"frames must be uint8 [N, {h}, {w}, {c}], got {frames.dtype} {list(frames.shape)}")
    if len(expected) != len(frames):
        raise ValueError(f"{len(expected)} expected detection lists for {len(frames)} frames")
    box_tol = tolerance if box_tolerance_px is None else box_tolerance_px
    model = contract.model_name
    names = {
        "preprocess": f"{model}_preprocess",
        "engine": f"{model}_engine",
        "postprocess": f"{model}_postprocess",
    }
    k = contract.postprocess.max_detections
    report = ContractSmokeReport(repository=str(repo_root), model=model, frames=len(frames))
    rec = _Recorder(report)

    # Offline checks of the repository's own record (no server needed).
    ic = _inference_config_problems(repo_root / INFERENCE_CONFIG_FILE, contract)
    rec.add("inference_config.json matches the contract", not ic, _format_problems(ic) or "ok")

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

        def metadata(proto: str, name: str) -> dict[str, Any]:
            client = clients[proto]
            if proto == "grpc":
                return client.get_model_metadata(name, as_json=True)
            return client.get_model_metadata(name)

        for proto, client in clients.items():
            rec.run(
                f"{proto}: server live and ready",
                lambda client=client: (
                    bool(client.is_server_live() and client.is_server_ready()),
                    "live and ready",
                ),
            )

            def server_meta(client: Any = client, proto: str = proto) -> tuple[bool, str]:
                meta = (
                    client.get_server_metadata(as_json=True)
                    if proto == "grpc"
                    else client.get_server_metadata()
                )
                report.server_version = meta.get("version")
                return meta.get("name") == "triton" and bool(meta.get("version")), (
                    f"{meta.get('name')} {meta.get('version')}"
                )

            rec.run(f"{proto}: server metadata", server_meta)

            def models_ready(client: Any = client) -> tuple[bool, str]:
                not_ready = [n for n in (model, *names.values()) if not client.is_model_ready(n)]
                return not not_ready, (
                    f"not ready: {not_ready}" if not_ready else f"{model} + {len(names)} steps ready"
                )

            rec.run(f"{proto}: models ready", models_ready)

            def ensemble_meta(proto: str = proto) -> tuple[bool, str]:
                meta = metadata(proto, model)
                problems = _io_diff("input", meta["inputs"], [(FRAMES_INPUT, "UINT8", [-1, h, w, c])])
                problems += _io_diff(
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
                return not problems, _format_problems(
                    problems
                ) or "frames -> boxes/scores/classes/num_detections"

            rec.run(f"{proto}: ensemble metadata matches inference_config", ensemble_meta)

            def engine_meta(proto: str = proto) -> tuple[bool, str]:
                meta = metadata(proto, names["engine"])
                i = contract.input
                problems = _io_diff(
                    "input", meta["inputs"], [(i.name, _TRITON_DTYPE[i.dtype], list(i.shape))]
                )
                problems += _io_diff(
                    "output",
                    meta["outputs"],
                    [(o.name, _TRITON_DTYPE[o.dtype], list(o.shape)) for o in contract.outputs],
                )
                return not problems, _format_problems(problems) or "engine tensors match the contract"

            rec.run(f"{proto}: engine metadata matches the contract", engine_meta)

        # The served configuration (what the server actually loaded, not the files on disk).
        configs: dict[str, dict[str, Any]] = {}

        def served_params(
            step: str, problems_of: Callable[[dict[str, str], Contract], list[str]]
        ) -> tuple[bool, str]:
            configs[step] = clients["http"].get_model_config(names[step])
            problems = problems_of(_params(configs[step]), contract)
            return not problems, _format_problems(problems) or "ok"

        rec.run(
            "preprocess normalization matches the contract",
            lambda: served_params("preprocess", _normalization_problems),
        )
        rec.run(
            "postprocess parameters match the contract",
            lambda: served_params("postprocess", _postprocess_problems),
        )
        batch = max(1, int(configs.get("preprocess", {}).get("max_batch_size", 1)))

        served: dict[str, _Served] = {}
        for proto, client in clients.items():
            try:
                served[proto] = _infer(client, modules[proto], model, frames, batch)
            except Exception as exc:
                rec.add(f"{proto}: inference", False, f"{type(exc).__name__}: {exc}")
                continue
            out = served[proto]
            shapes = _shape_problems(out, len(frames), k)
            rec.add(f"{proto}: output shapes and dtypes", not shapes, _format_problems(shapes) or "ok")
            if shapes:
                continue
            ranges = _range_problems(out, contract)
            rec.add(f"{proto}: output value ranges", not ranges, _format_problems(ranges) or "ok")
            match = _match_problems(out.detections(), expected, box_tol, tolerance)
            total = int(out.num_detections.sum())
            rec.add(
                f"{proto}: detections equal the local engine's",
                not match,
                _format_problems(match)
                or f"{total} detections on {len(frames)} frames within {box_tol:g} px / {tolerance:g}",
            )
        if len(served) == 2:
            diff = _served_equal(served["http"], served["grpc"])
            rec.add("http and grpc answers identical", not diff, _format_problems(diff) or "bit-identical")

        # Latency at batch 1 after one warm-up request (stub imports, first ORT run).
        for proto, client in clients.items():
            if proto not in served:
                continue
            one = frames[:1]
            try:
                _infer(client, modules[proto], model, one, 1)
                times = []
                for _ in range(max(1, latency_requests)):
                    t0 = time.perf_counter()
                    _infer(client, modules[proto], model, one, 1)
                    times.append((time.perf_counter() - t0) * 1000.0)
            except Exception as exc:
                rec.add(f"{proto}: latency requests", False, f"{type(exc).__name__}: {exc}")
                continue
            report.latency_ms_p50[proto] = float(statistics.median(times))
    finally:
        # Close clients before stopping the server: an open HTTP keep-alive connection would
        # make it wait out its exit timeout.
        for client in clients.values():
            with contextlib.suppress(Exception):
                client.close()
        server.stop()
    return report
