"""coco_metrics: faster-coco-eval vs pycocotools, hand-checkable cases, empty/absent edge cases."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from adas.detector.coco_metrics import STAT_NAMES, coco_metrics

CATEGORIES = [{"id": 1, "name": "car"}, {"id": 2, "name": "truck"}, {"id": 3, "name": "motorcycle"}]


def _random_case(seed: int = 0, n_images: int = 120) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Noisy detections of random small boxes, plus false positives and class confusions."""
    rng = np.random.default_rng(seed)
    gt: dict[str, Any] = {"images": [], "annotations": [], "categories": CATEGORIES}
    dets: list[dict[str, Any]] = []
    sizes = {1: (17.0, 7.0), 2: (30.0, 8.0), 3: (8.0, 4.0)}
    for i in range(1, n_images + 1):
        gt["images"].append({"id": i, "width": 384, "height": 96, "file_name": f"{i}.png"})
        for _ in range(int(rng.integers(0, 10))):
            c = int(rng.choice([1, 1, 1, 2, 3]))
            w, h = sizes[c]
            if rng.random() < 0.05:  # a few large boxes so that AP_medium is defined
                w, h = w * 3, h * 5
            x, y = float(rng.uniform(0, 384 - w)), float(rng.uniform(0, 96 - h))
            gt["annotations"].append(
                {"id": len(gt["annotations"]) + 1, "image_id": i, "category_id": c, "bbox": [x, y, w, h]}
            )
            if rng.random() < 0.85:
                dets.append(
                    {
                        "image_id": i,
                        "category_id": c if rng.random() < 0.9 else 1,
                        "bbox": [
                            x + rng.normal(0, 1.5),
                            y + rng.normal(0, 1),
                            w * rng.uniform(0.8, 1.2),
                            h * rng.uniform(0.8, 1.2),
                        ],
                        "score": float(rng.random()),
                    }
                )
        for _ in range(int(rng.integers(0, 3))):
            dets.append(
                {
                    "image_id": i,
                    "category_id": int(rng.integers(1, 4)),
                    "bbox": [float(rng.uniform(0, 360)), float(rng.uniform(0, 80)), 10.0, 5.0],
                    "score": float(rng.random() * 0.5),
                }
            )
    return gt, dets


@pytest.mark.parametrize("subset", [None, list(range(1, 40))])
def test_backends_agree(subset: list[int] | None) -> None:
    gt, dets = _random_case()
    fast = coco_metrics(gt, dets, image_ids=subset, backend="faster")
    ref = coco_metrics(gt, dets, image_ids=subset, backend="pycocotools")
    for k in STAT_NAMES:
        assert fast[k] == pytest.approx(ref[k], abs=1e-9), k
    for k in ("per_class_AP", "per_class_AP50"):
        assert fast[k].keys() == ref[k].keys()
        for name in fast[k]:
            assert fast[k][name] == pytest.approx(ref[k][name], abs=1e-9), (k, name)
    assert 0.0 < fast["AP"] < fast["AP50"] < 1.0
    assert fast["AP_medium"] > -1


def test_perfect_detections_score_one() -> None:
    gt, _ = _random_case(seed=1, n_images=20)
    dets = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in gt["annotations"]
    ]
    for backend in ("faster", "pycocotools"):
        m = coco_metrics(gt, dets, backend=backend)
        assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0)
        assert all(v == pytest.approx(1.0) for v in m["per_class_AP"].values())


def test_hand_computed_ap50() -> None:
    # One image, two cars. Detections by score: TP, FP, TP -> precision 1, .5, .67 at
    # recall .5, .5, 1. The interpolated precision is 1 up to recall .5 and .67 above:
    # AP50 = (51 * 1 + 50 * 2/3) / 101.
    gt = {
        "images": [{"id": 1, "width": 384, "height": 96}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 10]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [100, 40, 20, 10]},
        ],
        "categories": CATEGORIES,
    }
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 10], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [200, 40, 20, 10], "score": 0.8},
        {"image_id": 1, "category_id": 1, "bbox": [100, 40, 20, 10], "score": 0.7},
    ]
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    for backend in ("faster", "pycocotools"):
        m = coco_metrics(gt, dets, backend=backend)
        assert m["AP50"] == pytest.approx(expected, abs=1e-12)
        # truck and motorcycle have no ground truth: undefined, reported as -1 (COCO convention).
        assert m["per_class_AP"] == {
            "car": pytest.approx(expected, abs=1e-12),
            "truck": -1.0,
            "motorcycle": -1.0,
        }
        assert m["AP_medium"] == -1.0 and m["AP_large"] == -1.0


def test_empty_detections() -> None:
    gt, _ = _random_case(seed=2, n_images=10)
    for backend in ("faster", "pycocotools"):
        m = coco_metrics(gt, [], backend=backend)
        assert m["AP"] == 0.0 and m["AR100"] == 0.0 and m["num_detections"] == 0
        assert not any(np.isnan(m[k]) for k in STAT_NAMES)


def test_no_ground_truth_in_subset() -> None:
    gt = {"images": [{"id": 1, "width": 384, "height": 96}], "annotations": [], "categories": CATEGORIES}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]
    for backend in ("faster", "pycocotools"):
        m = coco_metrics(gt, dets, backend=backend)
        assert all(m[k] == -1.0 for k in STAT_NAMES)
        assert set(m["per_class_AP"].values()) == {-1.0}
    # An empty slice (no images at all) behaves the same.
    gt2, dets2 = _random_case(seed=3, n_images=5)
    assert coco_metrics(gt2, dets2, image_ids=[])["AP"] == -1.0


def test_ignores_foreign_images_and_categories() -> None:
    gt, dets = _random_case(seed=4, n_images=10)
    base = coco_metrics(gt, dets)
    noise = [
        {"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.99},
        {"image_id": 1, "category_id": 42, "bbox": [0, 0, 5, 5], "score": 0.99},
    ]
    assert coco_metrics(gt, dets + noise)["AP"] == base["AP"]


def test_unknown_backend() -> None:
    gt, dets = _random_case(seed=5, n_images=2)
    with pytest.raises(ValueError, match="backend"):
        coco_metrics(gt, dets, backend="nope")
