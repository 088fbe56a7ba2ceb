"""What the contract smoke test compares: served metadata, configuration and answers against the
contract, each comparison a list of sentences naming what disagrees (empty when it agrees)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
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

TRITON_DTYPE = {"float32": "FP32", "float16": "FP16", "uint8": "UINT8", "int64": "INT64", "int32": "INT32"}


def _shape(v: Sequence[Any]) -> list[int]:
    return [int(d) for d in v]  # gRPC's JSON renders int64 dims as strings


def io_diff(kind: str, served: list[dict[str, Any]], wanted: list[tuple[str, str, list[int]]]) -> list[str]:
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


def served_parameters(config: dict[str, Any]) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def normalization_problems(params: dict[str, str], contract: Contract) -> list[str]:
    """The served preprocess (normalization, and the whole input spec) against the contract's."""
    norm = contract.input.normalization
    problems = []
    served_spec = json.loads(params.get("input_spec", "null"))
    wanted_spec = contract.input.model_dump(mode="json")
    if served_spec != wanted_spec:
        keys = sorted(
            k
            for k in set(served_spec or {}) | set(wanted_spec)
            if (served_spec or {}).get(k) != wanted_spec.get(k)
        )
        problems.append(f"preprocess input_spec differs from the contract's input in {keys}")
    served_scale = float(params["scale"])
    if not _close(served_scale, norm.scale):
        problems.append(f"normalization scale: served {served_scale!r} != contract {norm.scale!r}")
    for key in ("mean", "std"):
        served = [float(v) for v in json.loads(params[key])]
        wanted = [float(v) for v in getattr(norm, key)]
        if len(served) != len(wanted) or not all(_close(a, b) for a, b in zip(served, wanted, strict=False)):
            problems.append(f"normalization {key}: served {served} != contract {wanted}")
    return problems


def postprocess_problems(params: dict[str, str], contract: Contract) -> list[str]:
    """The served postprocess (its JSON parameter, whatever the kind) against the contract's."""
    if "postprocess" not in params:
        return ["postprocess parameter postprocess missing"]
    served = json.loads(params["postprocess"])
    wanted = contract.postprocess.model_dump(mode="json")
    problems = []
    for key in sorted(set(served) | set(wanted)):
        a, b = served.get(key), wanted.get(key)
        same = _close(a, b) if isinstance(a, int | float) and isinstance(b, int | float) else a == b
        if not same:
            problems.append(f"postprocess {key}: served {a!r} != contract {b!r}")
    served_ids = json.loads(params.get("class_ids", "null"))
    wanted_ids = [c.id for c in contract.classes]
    if served_ids != wanted_ids:
        problems.append(f"postprocess class_ids: served {served_ids} != contract {wanted_ids}")
    served_hw = json.loads(params.get("input_hw", "null"))
    if served_hw != list(contract.input.height_width):
        problems.append(
            f"postprocess input_hw: served {served_hw} != contract {list(contract.input.height_width)}"
        )
    return problems


def inference_config_problems(path: Path, contract: Contract) -> list[str]:
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
class ServedDetections:
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


def infer(client: Any, module: Any, model: str, frames: np.ndarray, batch: int) -> ServedDetections:
    parts: dict[str, list[np.ndarray]] = {n: [] for n in ENSEMBLE_OUTPUTS}
    for s in range(0, len(frames), batch):
        chunk = np.ascontiguousarray(frames[s : s + batch])
        inp = module.InferInput(FRAMES_INPUT, list(chunk.shape), "UINT8")
        inp.set_data_from_numpy(chunk)
        outs = [module.InferRequestedOutput(n) for n in ENSEMBLE_OUTPUTS]
        result = client.infer(model, [inp], outputs=outs)
        for n in ENSEMBLE_OUTPUTS:
            parts[n].append(result.as_numpy(n))
    return ServedDetections(*(np.concatenate(parts[n]) for n in ENSEMBLE_OUTPUTS))


def format_problems(problems: list[str], limit: int = 6) -> str:
    more = f" (+{len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


def shape_problems(served: ServedDetections, n_frames: int, k: int) -> list[str]:
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


def range_problems(served: ServedDetections, contract: Contract, frame_hw: tuple[int, int]) -> list[str]:
    """Counts, boxes inside the sent frames (``frame_hw``), scores, classes and zero padding."""
    h, w = frame_hw
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


def match_problems(
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


def served_equal(a: ServedDetections, b: ServedDetections) -> list[str]:
    return [
        f"{n} differs between HTTP and gRPC"
        for n in ENSEMBLE_OUTPUTS
        if not np.array_equal(getattr(a, n), getattr(b, n))
    ]
