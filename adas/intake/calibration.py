"""Choose an INT8 calibration shard balanced across conditions (night, rain, fog, ...)."""

from __future__ import annotations

import random
from typing import Any

from adas.datasets.coco import image_tags
from adas.datasets.slices import SliceCatalog


def balanced_shard(
    coco: dict[str, Any], catalog: SliceCatalog, n: int, strata: list[str], seed: int = 0
) -> tuple[list[int], dict[str, int]]:
    """Pick ``n`` image ids round-robin over ``strata`` slices, so every condition is represented.

    Returns the chosen ids (sorted) and how many of them fall in each stratum. Raises if a
    stratum has no image at all: a calibration set silently missing fog would quantize fog
    activations badly and nobody would know why.
    """
    rng = random.Random(seed)
    pools: dict[str, list[int]] = {}
    for name in strata:
        ids = catalog.image_ids(coco, name)
        if not ids:
            raise ValueError(f"calibration stratum {name!r} has no image in this split")
        rng.shuffle(ids)
        pools[name] = ids
    chosen: list[int] = []
    taken: set[int] = set()
    while len(chosen) < n and any(pools.values()):
        for name in strata:
            pool = pools[name]
            while pool and pool[-1] in taken:
                pool.pop()
            if pool and len(chosen) < n:
                taken.add(pool[-1])
                chosen.append(pool.pop())
    by_id = {img["id"]: img for img in coco["images"]}
    per_stratum = {
        name: sum(catalog.get(name).matches(image_tags(by_id[i])) for i in chosen) for name in strata
    }
    return sorted(chosen), per_stratum
