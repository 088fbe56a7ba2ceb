"""OOD probes and uncertainty: a procedural out-of-distribution set, MSP / energy scores, AUROC, AUPR.

The probe set is generated (deterministic per seed) in four kinds the training data never
showed, at the model's input size:

* ``unseen_objects``: a road-like grey background with lane marks, populated by objects of
  unseen shapes (discs, triangles, crosses) in saturated colours absent from the vehicle palette;
* ``vegetation``: green, textured non-road ground (grass / fields);
* ``water``: a smooth, blue, rippled surface;
* ``pattern``: high-frequency checkerboards and stripes (indoor scenes, test charts).

Each frame is scored with the image-level scores :mod:`adas.evaluation.runner` records
from the raw heatmap: **max-sigmoid** (the detector's maximum "softmax" probability; OOD score =
``-max_score``) and **energy** (mean ``-softplus`` of the strongest cells' logits; higher = more
OOD). AUROC and AUPR treat OOD as the positive class, so 0.5 is chance and 1.0 perfect
separation; a value far below 0.5 means the score ranks OOD frames as *more* familiar.

Abstention: with an operating threshold, a sensible detector reports nothing on most OOD
frames; the share of OOD frames with a confident detection is reported next to the in-distribution
detection rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from adas.datasets.weather import gaussian_blur, smooth_field
from adas.detector.postprocess import Detections

OOD_KINDS: Final[tuple[str, ...]] = ("unseen_objects", "vegetation", "water", "pattern")
_NEON = np.array([[255, 0, 255], [0, 255, 64], [255, 128, 255], [0, 255, 255], [255, 255, 128]], np.float32)


def _unseen_objects(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = np.full((h, w, 3), 100.0, np.float32) + rng.normal(0, 4, (h, w, 1)).astype(np.float32)
    for y in np.linspace(h * 0.25, h * 0.75, 3):
        for x0 in range(0, w, 24):
            img[int(y), x0 : x0 + 12] = 230.0
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(3, 9))):
        cy, cx = rng.uniform(8, h - 8), rng.uniform(8, w - 8)
        r = rng.uniform(3, 9)
        color = _NEON[int(rng.integers(0, len(_NEON)))]
        shape = int(rng.integers(0, 3))
        if shape == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        elif shape == 1:
            mask = (yy >= cy - r) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 2)
        else:
            mask = ((np.abs(yy - cy) <= r / 4) & (np.abs(xx - cx) <= r)) | (
                (np.abs(xx - cx) <= r / 4) & (np.abs(yy - cy) <= r)
            )
        img[mask] = color
    return img


def _vegetation(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = smooth_field(rng, h, w, (4, 12))[..., None]
    noise = rng.normal(0, 1, (h, w, 1)).astype(np.float32)
    tex = gaussian_blur(noise, 0.8)
    green = np.array([50, 120, 40], np.float32)
    return green * (0.6 + 0.6 * base) + 25 * tex


def _water(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f = rng.uniform(0.15, 0.4)
    ripples = np.sin(xx * f + 3 * smooth_field(rng, h, w, (3, 8)) * 6) * np.cos(yy * f * 0.7)
    blue = np.array([30, 80, 160], np.float32)
    return blue + 30 * ripples[..., None] + 20 * smooth_field(rng, h, w, (2, 6))[..., None]


def _pattern(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    cell = int(rng.integers(3, 12))
    checker = rng.random() < 0.5
    mask = ((yy // cell) + (xx // cell)) % 2 == 0 if checker else (xx // cell) % 2 == 0
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    return np.where(mask[..., None], a, b).astype(np.float32)


_MAKERS = {"unseen_objects": _unseen_objects, "vegetation": _vegetation, "water": _water, "pattern": _pattern}


def ood_probe_frames(n: int, size_hw: tuple[int, int], seed: int = 7) -> tuple[np.ndarray, list[str]]:
    """``n`` uint8 RGB frames [n, H, W, 3] cycling through :data:`OOD_KINDS`, and their kinds."""
    h, w = size_hw
    frames = np.empty((n, h, w, 3), np.uint8)
    kinds = []
    for k in range(n):
        kind = OOD_KINDS[k % len(OOD_KINDS)]
        rng = np.random.default_rng([seed, k])
        frames[k] = np.clip(_MAKERS[kind](rng, h, w) + 0.5, 0, 255).astype(np.uint8)
        kinds.append(kind)
    return frames, kinds


def auroc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney)."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if pos.size == 0 or neg.size == 0:
        return None
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(allv.size, np.float64)
    sorted_v = allv[order]
    i = 0
    while i < allv.size:
        j = i
        while j + 1 < allv.size and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    r_pos = ranks[: pos.size].sum()
    return float((r_pos - pos.size * (pos.size + 1) / 2.0) / (pos.size * neg.size))


def aupr(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """Average precision of ranking positives above negatives (step-wise, ties as one cut)."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if pos.size == 0 or neg.size == 0:
        return None
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    k = np.arange(1, y.size + 1)
    last = np.r_[s[1:] != s[:-1], True]
    precision = tp[last] / k[last]
    recall = tp[last] / pos.size
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_at_tpr(positive: np.ndarray, negative: np.ndarray, tpr: float = 0.95) -> float | None:
    """False-positive rate (in-distribution flagged OOD) at the threshold catching ``tpr`` of OOD."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if pos.size == 0 or neg.size == 0:
        return None
    thr = np.quantile(pos, 1 - tpr)
    return float(np.mean(neg >= thr))


def ood_report(
    in_max_score: np.ndarray,
    in_energy: np.ndarray,
    in_detections: Sequence[Detections],
    ood_max_score: np.ndarray,
    ood_energy: np.ndarray,
    ood_detections: Sequence[Detections],
    ood_kinds: Sequence[str],
    operating_threshold: float,
) -> dict[str, Any]:
    """AUROC / AUPR / FPR@95 for MSP and energy, per kind, and abstention rates."""
    in_msp, ood_msp = -np.asarray(in_max_score), -np.asarray(ood_max_score)
    in_e, ood_e = np.asarray(in_energy), np.asarray(ood_energy)

    def scores(p_msp: np.ndarray, p_e: np.ndarray) -> dict[str, float | None]:
        return {
            "auroc_msp": auroc(p_msp, in_msp),
            "aupr_msp": aupr(p_msp, in_msp),
            "fpr95_msp": fpr_at_tpr(p_msp, in_msp),
            "auroc_energy": auroc(p_e, in_e),
            "aupr_energy": aupr(p_e, in_e),
            "fpr95_energy": fpr_at_tpr(p_e, in_e),
        }

    def confident(dets: Sequence[Detections]) -> float | None:
        if not dets:
            return None
        return float(np.mean([bool((d.scores >= operating_threshold).any()) for d in dets]))

    kinds = np.asarray(list(ood_kinds))
    per_kind = {}
    for kind in dict.fromkeys(ood_kinds):
        sel = kinds == kind
        per_kind[kind] = {
            "frames": int(sel.sum()),
            **scores(ood_msp[sel], ood_e[sel]),
            "confident_detection_rate": confident([d for d, s in zip(ood_detections, sel, strict=True) if s]),
            "mean_max_score": float(np.mean(np.asarray(ood_max_score)[sel])),
        }
    return {
        "in_distribution_frames": len(in_msp),
        "ood_frames": len(ood_msp),
        **scores(ood_msp, ood_e),
        "per_kind": per_kind,
        "mean_max_score_in_distribution": float(np.mean(in_max_score)) if len(in_max_score) else None,
        "mean_max_score_ood": float(np.mean(ood_max_score)) if len(ood_max_score) else None,
        "abstention": {
            "operating_threshold": operating_threshold,
            "ood_frames_with_confident_detection": confident(ood_detections),
            "in_distribution_frames_with_confident_detection": confident(in_detections),
        },
        "scores": "OOD = positive class; MSP score = -max sigmoid of the heatmap; energy = mean -softplus of the top-10 cell logits",
    }
