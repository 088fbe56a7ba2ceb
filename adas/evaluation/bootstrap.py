"""Paired bootstrap intervals on detection metrics, without re-running COCOeval per resample.

COCO AP depends on the images only through per-image matches: which detection matched a
ground truth at each IoU threshold, and how many ground truths count. We match once per
image, class and threshold (:func:`adas.detector.coco_metrics.per_image_matches`), sort every
class's detections by score once, and rebuild precision-recall for any resample from weighted
cumulative sums: a resample is a multiplicity per image, so a detection weighs what its image
weighs. The same multiplicities are applied to candidate and production (paired), so the
interval is that of the *difference* on the same images, which is far tighter than two
independent intervals.

With unit weights the result equals COCOeval's ``accumulate()`` (tested against pycocotools).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adas.detector.coco_metrics import per_image_matches
from adas.stats import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, Interval, percentile_interval, resample_weights

# COCO's 101 recall thresholds.
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
# Resamples processed together: bounds memory at ~chunk x detections x 8 bytes per class.
_CHUNK = 250


@dataclass
class ClassMatches:
    """One class's detections over the evaluated images, sorted by score (COCO's mergesort order)."""

    name: str
    image_index: np.ndarray  # [D] index into MatchTable.image_ids
    scores: np.ndarray  # [D]
    matched: np.ndarray  # [T, D] bool, ignored detections already removed per threshold
    counted: np.ndarray  # [T, D] bool: not ignored at that threshold
    gt_per_image: np.ndarray  # [I] ground truths that count


@dataclass
class MatchTable:
    """Everything AP needs, per class, for one model's detections on one set of images."""

    image_ids: list[int]
    iou_thresholds: np.ndarray
    classes: list[ClassMatches] = field(default_factory=list)

    @classmethod
    def from_coco(
        cls, gt: Mapping[str, Any], detections: list[dict[str, Any]], image_ids: Sequence[int] | None = None
    ) -> "MatchTable":
        matches, thresholds = per_image_matches(dict(gt), detections, list(image_ids) if image_ids else None)
        wanted = None if image_ids is None else {int(i) for i in image_ids}
        ids = sorted(int(im["id"]) for im in gt["images"] if wanted is None or int(im["id"]) in wanted)
        index = {img: i for i, img in enumerate(ids)}
        names = {int(c["id"]): str(c["name"]) for c in gt["categories"]}
        by_cat: dict[int, list[Any]] = {}
        for m in matches:
            by_cat.setdefault(m.category_id, []).append(m)
        table = cls(ids, thresholds)
        for cat, name in sorted(names.items()):
            per_image = by_cat.get(cat, [])
            gt_count = np.zeros(len(ids))
            for m in per_image:
                gt_count[index[m.image_id]] = m.num_gt
            if per_image:
                scores = np.concatenate([m.dt_scores for m in per_image])
                img = np.concatenate([np.full(len(m.dt_scores), index[m.image_id]) for m in per_image])
                matched = np.concatenate(
                    [m.dt_matched.reshape(len(thresholds), -1) for m in per_image], axis=1
                )
                ignored = np.concatenate(
                    [m.dt_ignored.reshape(len(thresholds), -1) for m in per_image], axis=1
                )
            else:
                scores, img = np.zeros(0), np.zeros(0, np.int64)
                matched = ignored = np.zeros((len(thresholds), 0), bool)
            order = np.argsort(-scores, kind="mergesort")
            table.classes.append(
                ClassMatches(
                    name=name,
                    image_index=img[order].astype(np.int64),
                    scores=scores[order],
                    matched=matched[:, order] & ~ignored[:, order],
                    counted=~ignored[:, order],
                    gt_per_image=gt_count,
                )
            )
        return table

    def subset_mask(self, image_ids: Sequence[int]) -> np.ndarray:
        keep = {int(i) for i in image_ids}
        return np.array([i in keep for i in self.image_ids], dtype=bool)

    def restrict(self, mask: np.ndarray) -> "MatchTable":
        """The table of the images in ``mask`` only (a slice), re-indexed; detections of other
        images dropped, so a slice's resamples cost what its own detections cost."""
        members = np.flatnonzero(mask)
        new_index = np.full(len(self.image_ids), -1, np.int64)
        new_index[members] = np.arange(len(members))
        out = MatchTable([self.image_ids[i] for i in members], self.iou_thresholds)
        for c in self.classes:
            keep = mask[c.image_index]
            out.classes.append(
                ClassMatches(
                    name=c.name,
                    image_index=new_index[c.image_index[keep]],
                    scores=c.scores[keep],
                    matched=c.matched[:, keep],
                    counted=c.counted[:, keep],
                    gt_per_image=c.gt_per_image[members],
                )
            )
        return out

    def ap(self, weights: np.ndarray) -> np.ndarray:
        """AP per resample, threshold and class: ``[R, T, K]``; NaN where a class has no ground truth.

        ``weights``: ``[R, I]`` multiplicities of the images (1 everywhere: the plain COCO AP).
        """
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        out = np.full((weights.shape[0], len(self.iou_thresholds), len(self.classes)), np.nan)
        for k, c in enumerate(self.classes):
            npos = weights @ c.gt_per_image  # [R]
            # Detections after the last match (in score order) only add false positives at the
            # final recall: they never raise the precision envelope, so they cannot change AP.
            hits = np.flatnonzero(c.matched.any(axis=0))
            end = int(hits[-1]) + 1 if hits.size else 0
            dw = weights[:, c.image_index[:end]]  # [R, D]
            if bool(c.counted[:, :end].all()):
                # Precision only rises at a match, so the envelope, and every recall threshold's
                # first crossing, sit at matched positions: one running sum of every detection's
                # weight (what was seen), then per threshold only the matched positions (~the
                # ground-truth count, not the tens of thousands of low-score detections).
                seen = np.cumsum(dw, axis=1)[:, hits]
                matched_w = dw[:, hits]
                for t in range(len(self.iou_thresholds)):
                    tps = np.cumsum(matched_w * c.matched[t, hits], axis=1)
                    out[:, t, k] = _interpolated_ap(tps, seen, npos)
                continue
            for t in range(len(self.iou_thresholds)):
                w, m = dw[:, c.counted[t, :end]], c.matched[t, :end][c.counted[t, :end]]
                out[:, t, k] = _interpolated_ap(np.cumsum(w * m, axis=1), np.cumsum(w, axis=1), npos)
        return out

    def recall_at(self, weights: np.ndarray, score_threshold: float, iou_index: int = 0) -> np.ndarray:
        """Recall at an operating point per resample and class: ``[R, K]`` (IoU 0.5 by default)."""
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        out = np.full((weights.shape[0], len(self.classes)), np.nan)
        for k, c in enumerate(self.classes):
            npos = weights @ c.gt_per_image
            keep = (c.scores >= score_threshold) & c.matched[iou_index]
            tp = weights[:, c.image_index[keep]].sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, k] = np.where(npos > 0, tp / npos, np.nan)
        return out


def _interpolated_ap(tps: np.ndarray, seen: np.ndarray, npos: np.ndarray) -> np.ndarray:
    """COCOeval.accumulate's 101-point interpolated AP per row, from running sums of matched
    (``tps``) and seen detection weight at the same positions in score order."""
    r = tps.shape[0]
    ap = np.full(r, np.nan)
    defined = npos > 0
    if not defined.any():
        return ap
    if tps.shape[1] == 0:
        ap[defined] = 0.0
        return ap
    # Rows without ground truth are masked out below; dividing by 1 there keeps every value finite.
    rc = tps / np.maximum(npos, 1.0)[:, None]
    pr = tps / np.maximum(seen, 1e-12)  # 0 where nothing is seen yet (tps is 0 there too)
    # Precision envelope: the best precision at any recall at least this high.
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    # One searchsorted for every row: offset each row's recalls (all in [0, 1]) by 2 x row.
    n = rc.shape[1]
    offsets = 2.0 * np.arange(r)[:, None]
    rc += offsets
    thresholds = RECALL_THRESHOLDS[None, :] + offsets
    idx = np.searchsorted(rc.ravel(), thresholds.ravel(), side="left")
    idx = idx.reshape(r, -1) - (np.arange(r) * n)[:, None]
    valid = idx < n
    q = np.where(valid, np.take_along_axis(pr, np.minimum(idx, n - 1), axis=1), 0.0)
    ap[defined] = q.mean(axis=1)[defined]
    return ap


def mean_ap(ap: np.ndarray, iou_index: int | None = None, class_index: int | None = None) -> np.ndarray:
    """COCO's AP (mean over thresholds and defined classes) from ``[R, T, K]``; one value per resample."""
    x = ap if iou_index is None else ap[:, iou_index : iou_index + 1, :]
    x = x if class_index is None else x[:, :, class_index : class_index + 1]
    with np.errstate(invalid="ignore"):
        flat = x.reshape(x.shape[0], -1)
        counts = np.sum(~np.isnan(flat), axis=1)
        sums = np.nansum(flat, axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


@dataclass(frozen=True)
class PairedDeltas:
    """Candidate minus production on the same resampled images, one interval per metric."""

    n_images: int
    n_resamples: int
    intervals: dict[str, Interval]


def paired_bootstrap(
    candidate: MatchTable,
    production: MatchTable,
    *,
    image_ids: Sequence[int] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
    recall_classes: Sequence[str] = (),
    score_threshold: float | tuple[float, float] = 0.3,
    class_weights: Mapping[str, float] | None = None,
) -> PairedDeltas:
    """Intervals on AP, AP50, per-class AP, the class-weighted AP and AP50 (``class_weights``)
    and, for ``recall_classes``, recall at the operating point: ``score_threshold``, or a
    ``(candidate, production)`` pair when each model has its own operating threshold.

    Images are resampled with replacement within ``image_ids`` (default: all), with the same
    draw for both models. Values are fractions (AP 0.452, not 45.2).
    """
    if candidate.image_ids != production.image_ids:
        raise ValueError("paired bootstrap needs both models evaluated on the same images")
    names = [c.name for c in candidate.classes]
    if names != [c.name for c in production.classes]:
        raise ValueError(f"class lists differ: {names} vs {[c.name for c in production.classes]}")
    if image_ids is not None:
        mask = candidate.subset_mask(image_ids)
        candidate, production = candidate.restrict(mask), production.restrict(mask)
    members = len(candidate.image_ids)
    rng = np.random.default_rng(seed)
    thresholds = score_threshold if isinstance(score_threshold, tuple) else (score_threshold, score_threshold)
    weights = _class_weight_vector(names, class_weights)
    metrics = _delta_metrics(
        candidate, production, np.ones((1, members)), names, recall_classes, thresholds, weights
    )
    samples: dict[str, list[np.ndarray]] = {k: [] for k in metrics}
    for start in range(0, n_resamples, _CHUNK):
        w = resample_weights(members, min(_CHUNK, n_resamples - start), rng)
        for key, values in _delta_metrics(
            candidate, production, w, names, recall_classes, thresholds, weights
        ).items():
            samples[key].append(values)
    intervals = {
        key: percentile_interval(np.concatenate(samples[key]), float(point[0]), members, confidence)
        for key, point in metrics.items()
    }
    return PairedDeltas(members, n_resamples, intervals)


def _class_weight_vector(names: list[str], class_weights: Mapping[str, float] | None) -> np.ndarray | None:
    if class_weights is None:
        return None
    unknown = sorted(set(class_weights) - set(names))
    if unknown:
        raise ValueError(f"class weights name classes the ground truth does not have: {unknown}")
    return np.array([float(class_weights.get(n, 0.0)) for n in names])


def weighted_class_mean(per_class: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum_c w_c x_c / sum_c w_c per row of ``[R, K]``, over the classes defined in that row
    (a class without ground truth in a resample is left out of both sums)."""
    defined = ~np.isnan(per_class) & (weights[None, :] > 0)
    num = np.where(defined, per_class, 0.0) @ weights
    den = defined.astype(np.float64) @ weights
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1e-300), np.nan)


def _delta_metrics(
    candidate: MatchTable,
    production: MatchTable,
    w: np.ndarray,
    names: list[str],
    recall_classes: Sequence[str],
    thresholds: tuple[float, float],
    class_weights: np.ndarray | None,
) -> dict[str, np.ndarray]:
    ap_c, ap_p = candidate.ap(w), production.ap(w)
    out = {
        "AP": mean_ap(ap_c) - mean_ap(ap_p),
        "AP50": mean_ap(ap_c, iou_index=0) - mean_ap(ap_p, iou_index=0),
    }
    per_c = np.stack([mean_ap(ap_c, class_index=k) for k in range(len(names))], axis=1)
    per_p = np.stack([mean_ap(ap_p, class_index=k) for k in range(len(names))], axis=1)
    for k, name in enumerate(names):
        out[f"AP/{name}"] = per_c[:, k] - per_p[:, k]
    if class_weights is not None:
        # A class counts in a resample only where both models have it defined (same classes both sides).
        for key, c, p in (("weighted_AP", per_c, per_p), ("weighted_AP50", ap_c[:, 0, :], ap_p[:, 0, :])):
            both = ~np.isnan(c) & ~np.isnan(p)
            out[key] = weighted_class_mean(np.where(both, c, np.nan), class_weights) - weighted_class_mean(
                np.where(both, p, np.nan), class_weights
            )
    if recall_classes:
        rc_c = candidate.recall_at(w, thresholds[0])
        rc_p = production.recall_at(w, thresholds[1])
        for name in recall_classes:
            if name not in names:
                raise ValueError(f"recall class {name!r} is not a class of the ground truth ({names})")
            k = names.index(name)
            out[f"recall/{name}"] = rc_c[:, k] - rc_p[:, k]
    return out
