"""COCO box metrics with faster-coco-eval (pycocotools as a cross-check backend).

Values are fractions in [0, 1] (not percent), and follow COCO's convention for undefined
numbers: ``-1.0`` where nothing can be measured (an area range or class without any ground
truth in the evaluated images). With no detections at all every defined AP/AR is 0.0.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Order of COCOeval.stats for iouType="bbox" with maxDets [1, 10, 100].
STAT_NAMES: tuple[str, ...] = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)
BACKENDS = ("faster", "pycocotools")


def _prepared_gt(gt: dict[str, Any], image_ids: Sequence[int] | None) -> dict[str, Any]:
    """A copy of the ground truth restricted to ``image_ids``, with the fields COCOeval needs."""
    keep = None if image_ids is None else {int(i) for i in image_ids}
    images = [im for im in gt.get("images", []) if keep is None or int(im["id"]) in keep]
    anns = []
    for i, a in enumerate(gt.get("annotations", [])):
        if keep is not None and int(a["image_id"]) not in keep:
            continue
        a = dict(a)
        a.setdefault("id", i + 1)
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2]) * float(a["bbox"][3]))
        anns.append(a)
    return {
        "info": copy.deepcopy(gt.get("info", {})),
        "images": [dict(im) for im in images],
        "annotations": anns,
        "categories": [dict(c) for c in gt.get("categories", [])],
    }


def _prepared_dets(
    detections: Iterable[dict[str, Any]], image_ids: set[int], cat_ids: set[int]
) -> list[dict[str, Any]]:
    out = []
    for d in detections:
        if int(d["image_id"]) not in image_ids or int(d["category_id"]) not in cat_ids:
            continue
        x, y, w, h = (float(v) for v in d["bbox"])
        out.append(
            {
                "id": len(out) + 1,
                "image_id": int(d["image_id"]),
                "category_id": int(d["category_id"]),
                "bbox": [x, y, w, h],
                "score": float(d["score"]),
                "area": w * h,
                "iscrowd": 0,
            }
        )
    return out


def _dt_dataset(gt: dict[str, Any], dets: list[dict[str, Any]]) -> dict[str, Any]:
    # Built directly rather than with loadRes(): pycocotools' loadRes crashes on an empty list.
    return {"images": gt["images"], "categories": gt["categories"], "annotations": dets}


def _run(gt: dict[str, Any], dt: dict[str, Any], backend: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(stats[12], precision[T, R, K, A, M], cat ids in K order)."""
    sink = io.StringIO()
    if backend == "faster":
        from faster_coco_eval import COCO, COCOeval_faster

        coco_gt, coco_dt = COCO(gt), COCO(dt)
        ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=lambda *_: None)
    elif backend == "pycocotools":
        from pycocotools.coco import COCO as PyCOCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(sink):
            coco_gt, coco_dt = PyCOCO(), PyCOCO()
            coco_gt.dataset, coco_dt.dataset = gt, dt
            coco_gt.createIndex()
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
    else:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    ev.params.imgIds = sorted(int(im["id"]) for im in gt["images"])
    with contextlib.redirect_stdout(sink):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return (
        np.asarray(ev.stats[: len(STAT_NAMES)], dtype=np.float64),
        np.asarray(ev.eval["precision"]),
        list(ev.params.catIds),
    )


def _mean_defined(x: np.ndarray) -> float:
    x = x[x > -1]
    return float(np.mean(x)) if x.size else -1.0


def coco_metrics(
    gt: dict[str, Any],
    detections: list[dict[str, Any]],
    image_ids: list[int] | None = None,
    backend: str = "faster",
) -> dict[str, Any]:
    """COCO bbox metrics of ``detections`` (COCO result records) against ``gt`` (a COCO dict).

    ``image_ids`` restricts both sides to a subset (a slice); detections on other images or
    with category ids absent from ``gt['categories']`` are ignored. Returns::

        {"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100",
         "AR_small", "AR_medium", "AR_large": float,
         "per_class_AP": {category name: float}, "per_class_AP50": {...},
         "num_images": int, "num_gt": int, "num_detections": int}

    Fractions in [0, 1]; ``-1.0`` marks undefined values (COCO's convention), e.g. the AP of
    a class with no ground truth in the evaluated images, or every value when no image has any
    ground truth. ``backend`` is ``"faster"`` (faster-coco-eval) or ``"pycocotools"``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    g = _prepared_gt(gt, image_ids)
    img_set = {int(im["id"]) for im in g["images"]}
    cats = g["categories"]
    dets = _prepared_dets(detections, img_set, {int(c["id"]) for c in cats})
    result: dict[str, Any] = {
        "num_images": len(g["images"]),
        "num_gt": sum(1 for a in g["annotations"] if not a.get("iscrowd", 0)),
        "num_detections": len(dets),
    }
    names = {int(c["id"]): str(c["name"]) for c in cats}
    if not g["images"] or not g["annotations"]:
        # Nothing to measure: COCOeval would return -1 everywhere (or fail on an empty index).
        result.update(dict.fromkeys(STAT_NAMES, -1.0))
        result["per_class_AP"] = dict.fromkeys(names.values(), -1.0)
        result["per_class_AP50"] = dict.fromkeys(names.values(), -1.0)
        return result
    stats, precision, cat_ids = _run(g, _dt_dataset(g, dets), backend)
    result.update({k: float(v) for k, v in zip(STAT_NAMES, stats, strict=True)})
    # precision: [IoU thresholds, recall thresholds, classes, area ranges (all first), maxDets (100 last)]
    result["per_class_AP"] = {
        names[c]: _mean_defined(precision[:, :, k, 0, -1]) for k, c in enumerate(cat_ids)
    }
    result["per_class_AP50"] = {
        names[c]: _mean_defined(precision[0, :, k, 0, -1]) for k, c in enumerate(cat_ids)
    }
    return result


@dataclass(frozen=True)
class ImageMatches:
    """COCO's per-image matching of one class (area range "all", 100 detections per image).

    ``dt_matched[t, d]``: detection ``d`` matched a ground truth at IoU threshold ``t``;
    ``dt_ignored[t, d]``: it matched an ignored (crowd) ground truth; ``num_gt``: ground truths
    that count. Everything COCOeval.accumulate needs, so AP can be rebuilt for any reweighting of
    images without matching again (the paired bootstrap).
    """

    image_id: int
    category_id: int
    dt_scores: np.ndarray
    dt_matched: np.ndarray
    dt_ignored: np.ndarray
    num_gt: int


def per_image_matches(
    gt: dict[str, Any], detections: list[dict[str, Any]], image_ids: list[int] | None = None
) -> tuple[list[ImageMatches], np.ndarray]:
    """COCOeval's ``evaluate()`` once (pycocotools), as plain arrays; also its IoU thresholds."""
    from pycocotools.coco import COCO as PyCOCO  # heavy, and only evaluation needs it
    from pycocotools.cocoeval import COCOeval

    g = _prepared_gt(gt, image_ids)
    img_set = {int(im["id"]) for im in g["images"]}
    dets = _prepared_dets(detections, img_set, {int(c["id"]) for c in g["categories"]})
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        coco_gt, coco_dt = PyCOCO(), PyCOCO()
        coco_gt.dataset, coco_dt.dataset = g, _dt_dataset(g, dets)
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.imgIds = sorted(img_set)
        ev.evaluate()
    n_area = len(ev.params.areaRng)
    out = []
    # evalImgs is ordered [category][area range][image]; area range 0 is "all".
    n_img = len(ev.params.imgIds)
    for k, cat in enumerate(ev.params.catIds):
        for i, img in enumerate(ev.params.imgIds):
            e = ev.evalImgs[k * n_area * n_img + i]
            if e is None:
                continue
            gt_ignored = np.asarray(e["gtIgnore"], dtype=bool)
            out.append(
                ImageMatches(
                    image_id=int(img),
                    category_id=int(cat),
                    dt_scores=np.asarray(e["dtScores"], dtype=np.float64),
                    dt_matched=np.asarray(e["dtMatches"]) > 0,
                    dt_ignored=np.asarray(e["dtIgnore"], dtype=bool),
                    num_gt=int((~gt_ignored).sum()),
                )
            )
    return out, np.asarray(ev.params.iouThrs, dtype=np.float64)


def precision_table(
    gt: dict[str, Any], detections: Sequence[dict[str, Any]], image_ids: Sequence[int] | None = None
) -> tuple[np.ndarray, list[int]] | None:
    """COCOeval's interpolated precision ``[IoU thresholds, 101 recalls, classes, areas, maxDets]``
    and the class ids in its class order; None when the images hold no ground truth."""
    g = _prepared_gt(gt, image_ids)
    if not g["images"] or not g["annotations"]:
        return None
    img_set = {int(im["id"]) for im in g["images"]}
    dets = _prepared_dets(detections, img_set, {int(c["id"]) for c in g["categories"]})
    _, precision, cat_ids = _run(g, _dt_dataset(g, dets), "faster")
    return precision, cat_ids
