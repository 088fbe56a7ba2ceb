"""The scene plan: every scene of a dataset with its split, scenario, density, condition and
seed, decided in the main process from the config alone (deterministic, before any simulation)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from adas.datasets.coco import GOLDEN_SPLITS, REPLAY_SPLIT
from adas.datasets.config import DatagenConfig


@dataclass(frozen=True)
class SceneSpec:
    split: str
    scene_index: int
    scene_id: str
    scenario: str
    density: str
    weather: str
    lighting: str
    severity: int
    n_frames: int
    frame_interval_s: float
    warmup_s: float
    env_seed: int


def _allocate(weights: dict[str, float], n: int) -> list[str]:
    """Exactly ``n`` labels in proportion to ``weights`` (largest remainder, ties by order)."""
    if n <= 0:
        return []
    total = sum(weights.values())
    quotas = {k: n * w / total for k, w in weights.items()}
    counts = {k: math.floor(q) for k, q in quotas.items()}
    order = sorted(weights, key=lambda k: (-(quotas[k] - counts[k]), list(weights).index(k)))
    for k in order[: n - sum(counts.values())]:
        counts[k] += 1
    return [k for k in weights for _ in range(counts[k])]


def scene_seed(seed: int, scene_index: int) -> int:
    return int(np.random.SeedSequence([seed, scene_index]).generate_state(1)[0])


def plan_scenes(config: DatagenConfig, size: str) -> list[SceneSpec]:
    """Every scene of the dataset with its split, scenario, density, condition and seed."""
    if size not in config.sizes:
        raise ValueError(f"unknown size {size!r}; config defines: {', '.join(config.sizes)}")
    sizes = config.sizes[size]
    rng = np.random.default_rng([config.seed, 0])
    specs: list[SceneSpec] = []
    scene_index = 1
    cond_weights = {f"{c.weather}/{c.lighting}": c.weight for c in config.conditions}

    def add(
        split: str,
        scenarios: list[str],
        densities: list[str],
        conditions: list[str],
        frames: list[int],
        interval: float,
        warmup: tuple[float, float],
    ) -> None:
        nonlocal scene_index
        for scenario, density, cond, n_frames in zip(scenarios, densities, conditions, frames, strict=True):
            weather, lighting = cond.split("/")
            severity = 0 if cond == "clear/day" else int(rng.choice(config.severities))
            if weather != "clear" and lighting != "day":
                # Two stacked adverse conditions at full severity leave nothing visible at all.
                severity = max(1, severity - 1)
            specs.append(
                SceneSpec(
                    split=split,
                    scene_index=scene_index,
                    scene_id=f"{scenario}-s{scene_index:04d}",
                    scenario=scenario,
                    density=density,
                    weather=weather,
                    lighting=lighting,
                    severity=severity,
                    n_frames=n_frames,
                    frame_interval_s=interval,
                    warmup_s=round(float(rng.uniform(*warmup)), 3),
                    env_seed=scene_seed(config.seed, scene_index),
                )
            )
            scene_index += 1

    for split in GOLDEN_SPLITS:
        total = getattr(sizes, split)
        per = config.golden.frames_per_scene
        n_scenes = math.ceil(total / per)
        frames = [per] * n_scenes
        if n_scenes and total % per:
            frames[-1] = total % per
        scenarios, densities = _scenarios_and_densities(config.split_scenarios[split], config, n_scenes, rng)
        conditions = [str(c) for c in rng.permutation(_allocate(cond_weights, n_scenes))]
        add(
            split,
            scenarios,
            densities,
            conditions,
            frames,
            config.golden.frame_interval_s,
            config.golden.warmup_s,
        )

    n_seq = sizes.replay_sequences
    scenarios, densities = _scenarios_and_densities(config.replay.scenarios, config, n_seq, rng)
    conditions = [
        f"{c.weather}/{c.lighting}"
        for c in (config.replay.conditions[i % len(config.replay.conditions)] for i in range(n_seq))
    ]
    add(
        REPLAY_SPLIT,
        scenarios,
        densities,
        conditions,
        [sizes.replay_frames] * n_seq,
        config.replay.frame_interval_s,
        config.replay.warmup_s,
    )
    return specs


def _scenarios_and_densities(
    weights: dict[str, float], config: DatagenConfig, n: int, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    # Densities are dealt round-robin (smooth weighted) over the scenes grouped by scenario, so each
    # scenario gets both densities in proportion and the overall mix is exact.
    scenarios = _allocate(weights, n)
    mix = dict(config.density_mix)
    total = sum(mix.values())
    credit = dict.fromkeys(mix, 0.0)
    densities: list[str] = []
    for _ in range(n):
        for d in mix:
            credit[d] += mix[d] / total
        pick = max(mix, key=lambda d: credit[d])
        credit[pick] -= 1.0
        densities.append(pick)
    order = rng.permutation(n)
    return [scenarios[i] for i in order], [densities[i] for i in order]
