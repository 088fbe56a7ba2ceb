"""Frame normalization from a bundle contract's ``Normalization`` (numpy only, no torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from adas.intake.contract import Normalization


def normalize(frames_uint8_nhwc: np.ndarray, normalization: Normalization) -> np.ndarray:
    """uint8 RGB frames [N, H, W, 3] (or one [H, W, 3]) -> float32 [N, 3, H, W]:
    ``(pixel * scale - mean[c]) / std[c]``."""
    frames = np.asarray(frames_uint8_nhwc)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected [N, H, W, 3] RGB frames, got shape {frames.shape}")
    mean = np.asarray(normalization.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(normalization.std, np.float32).reshape(1, 3, 1, 1)
    x = frames.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(normalization.scale)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)
