"""A known generator of ground truth and detections: the interval calibration test and the
bootstrap benchmark draw from it (a population whose true AP difference can be measured).

Each image holds a few objects of three classes; a model finds each object with a per-class
probability, with localisation noise, and adds false positives. Scores of hits are higher than
those of false positives on average, so AP is well inside (0, 1) and moves with the hit rate.
"""

from typing import Any

import numpy as np

CATEGORIES = [{"id": 1, "name": "car"}, {"id": 2, "name": "truck"}, {"id": 3, "name": "motorcycle"}]


def ground_truth(n_images: int, seed: int, first_id: int = 1, max_objects: int = 6) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(n_images):
        img = first_id + i
        images.append({"id": img, "width": 384, "height": 96})
        for _ in range(int(rng.integers(1, max_objects + 1))):
            cat = int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15]))
            w, h = {1: (16.0, 7.0), 2: (30.0, 9.0), 3: (8.0, 4.0)}[cat]
            x, y = float(rng.uniform(0, 384 - w)), float(rng.uniform(0, 96 - h))
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": cat, "bbox": [x, y, w, h]})
    return {"images": images, "annotations": anns, "categories": CATEGORIES}


def detections(
    gt: dict[str, Any], hit_rate: dict[int, float], seed: int, fp_per_image: float = 1.0
) -> list[dict]:
    """A model's detections: hits with noise (score ~ Beta(5, 2)), false positives (Beta(2, 4))."""
    rng = np.random.default_rng(seed)
    out = []
    for a in gt["annotations"]:
        if rng.random() < hit_rate[a["category_id"]]:
            x, y, w, h = a["bbox"]
            j = rng.normal(0, 0.08 * w, 2)
            out.append(
                {
                    "image_id": a["image_id"],
                    "category_id": a["category_id"],
                    "bbox": [x + j[0], y + j[1] * 0.3, w, h],
                    "score": float(rng.beta(5, 2)),
                }
            )
    for im in gt["images"]:
        for _ in range(int(rng.poisson(fp_per_image))):
            cat = int(rng.choice([1, 2, 3]))
            out.append(
                {
                    "image_id": im["id"],
                    "category_id": cat,
                    "bbox": [float(rng.uniform(0, 360)), float(rng.uniform(0, 88)), 12.0, 6.0],
                    "score": float(rng.beta(2, 4)),
                }
            )
    return out
