"""Sensor faults: graceful degradation on blank (black), saturated (white), flat grey and
stuck-noise frames means no detection at or above the operating threshold on them.

Domain code: no Dagster import.
"""

from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from adas.evaluation.runner import Predict

SENSOR_FAULTS: Final[tuple[str, ...]] = ("black", "white", "grey", "stuck_noise")


def fault_frames(kind: str, n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    if kind == "black":
        return np.zeros((n, h, w, 3), np.uint8)
    if kind == "white":
        return np.full((n, h, w, 3), 255, np.uint8)
    if kind == "grey":
        return np.full((n, h, w, 3), 128, np.uint8)
    if kind == "stuck_noise":
        return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    raise ValueError(f"unknown sensor fault {kind!r}; known: {', '.join(SENSOR_FAULTS)}")


def sensor_fault_check(
    predict: Predict,
    size_hw: tuple[int, int],
    faults: Sequence[str],
    frames: int,
    operating_threshold: float,
    seed: int = 0,
) -> dict[str, Any]:
    """Graceful degradation: no confident detection on blanked / saturated / noise frames."""
    h, w = size_hw
    results = {}
    for kind in faults:
        dets = predict(fault_frames(kind, frames, h, w, seed))
        scores = np.concatenate([d.scores for d in dets]) if dets else np.zeros(0)
        confident = int((scores >= operating_threshold).sum())
        results[kind] = {
            "frames": frames,
            "confident_detections": confident,
            "max_score": float(scores.max()) if scores.size else 0.0,
            "passed": confident == 0,
        }
    failing = [k for k, r in results.items() if not r["passed"]]
    return {
        "rule": f"no detection with score >= {operating_threshold:g} on a faulty camera frame",
        "operating_threshold": operating_threshold,
        "faults": results,
        "passed": not failing,
        "failing": failing,
    }
