"""Sweep planning: a category's parameter axes (config/simulation.yaml) into concrete runs.

``plan_runs`` samples each category's axes with balanced marginals into concrete ``EpisodeSpec``
runs, each with its own seed derived from the sweep seed: the same config gives the same runs,
for candidate and production alike. Domain code: no dagster import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from adas.simulation.config import CATEGORIES, CategoryConfig, SimulationConfig
from adas.simulation.config import Condition as RunCondition
from adas.simulation.episode import EpisodeSpec
from adas.simulation.scenario_templates import ACTOR_SIZE_M, OSC_CATEGORY, Condition

# Distance between neighbouring vehicles of the cruise and merge files' traffic, by density.
TRAFFIC_SPACING_M: Final[dict[str, dict[str, float]]] = {
    "cruise": {"sparse": 45.0, "dense": 25.0},
    "merge": {"sparse": 50.0, "dense": 30.0},
}


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _balanced(values: Sequence[Any], n: int, rng: np.random.Generator) -> list[Any]:
    """``n`` draws where every value appears floor/ceil(n / len) times, in a seeded order."""
    out: list[Any] = []
    while len(out) < n:
        out.extend(values[i] for i in rng.permutation(len(values)))
    return out[:n]


def plan_category(cfg: SimulationConfig, category: str, n: int, batch: int = 0) -> list[EpisodeSpec]:
    """``n`` runs of a category. ``batch`` > 0: a sequential batch, with its own seeds and run ids
    (``<category>-b<batch>-<i>``); batch 0 is the sweep itself, unchanged (its checkpoints stay valid)."""
    cc = cfg.categories[category]  # type: ignore[index]
    cat_index = CATEGORIES.index(category)
    stream = [cfg.seed, cat_index, 17] + ([batch] if batch else [])
    rng = np.random.default_rng(stream)
    axes = {
        "density": _balanced(cc.densities, n, rng),
        "ego_speed_mps": _balanced(cc.ego_speed_mps, n, rng),
        "gap_time_s": _balanced(cc.gap_time_s, n, rng),
        "actor_type": _balanced(cc.actor_types, n, rng),
        "actor_speed_delta_mps": _balanced(cc.actor_speed_delta_mps, n, rng),
        "condition": _balanced(cc.conditions, n, rng),
    }
    scripted = category in ("cut_in", "stopped_lead")
    runs = []
    for i in range(n):
        cond = axes["condition"][i]
        seed = _seed(cfg.seed, cat_index, 1000 * batch + i) if batch else _seed(cfg.seed, cat_index, i)
        runs.append(
            EpisodeSpec(
                run_id=f"{category}-b{batch}-{i:03d}" if batch else f"{category}-{i:03d}",
                category=category,  # type: ignore[arg-type]
                scenario=cc.scenario,
                density=axes["density"][i],
                weather=cond.weather,
                lighting=cond.lighting,
                severity=cond.severity,
                seed=seed,
                duration_s=cc.duration_s,
                ego_speed_mps=float(axes["ego_speed_mps"][i]),
                gap_time_s=float(axes["gap_time_s"][i]) if category in ("cut_in", "merge") else None,
                actor_type=axes["actor_type"][i] if scripted else None,
                actor_speed_delta_mps=float(axes["actor_speed_delta_mps"][i])
                if category == "cut_in"
                else None,
                xosc=cc.xosc,
                parameters=_scene_parameters(category, cc, cond, seed, axes, i),
            )
        )
    return runs


def _scene_parameters(
    category: str, cc: CategoryConfig, cond: RunCondition, seed: int, axes: dict[str, list[Any]], i: int
) -> dict[str, str]:
    """The run's axes as the parameters of its category's OpenSCENARIO file.

    Every file takes the ego speed, the actor's type and size and the environment; the cut-in also
    the gap time, the actor's speed deficit and the side it comes from (alternating with the seed);
    cruise and merge the traffic's spacing from the density, and (from the seed) where the traffic
    stands and when a cruise lane change may happen; merge the gap time it moves over at."""
    actor = axes["actor_type"][i]
    length, width = ACTOR_SIZE_M[actor]
    params = {
        "EgoSpeed": f"{float(axes['ego_speed_mps'][i]):g}",
        "ActorType": OSC_CATEGORY[actor],
        "ActorLength": f"{length:g}",
        "ActorWidth": f"{width:g}",
        **Condition(weather=cond.weather, lighting=cond.lighting, severity=cond.severity).parameters(),
    }
    if category == "cut_in":
        params |= {
            "GapTime": f"{float(axes['gap_time_s'][i]):g}",
            "ActorSpeedDelta": f"{float(axes['actor_speed_delta_mps'][i]):g}",
            "CutInFrom": "1" if seed % 2 else "-1",
        }
    elif category == "cruise":
        spacing = TRAFFIC_SPACING_M["cruise"][axes["density"][i]]
        params |= {
            "Spacing": f"{spacing:g}",
            "Shift": f"{(seed % 100) / 100 * spacing:.2f}",
            "LaneChangeAt": f"{6 + seed % 7:g}",
        }
    elif category == "merge":
        params |= {
            "Spacing": f"{TRAFFIC_SPACING_M['merge'][axes['density'][i]]:g}",
            "MergeGapTime": f"{float(axes['gap_time_s'][i]):g}",
        }
    return params


def plan_runs(cfg: SimulationConfig, size: str, library: Sequence[EpisodeSpec] = ()) -> list[EpisodeSpec]:
    """Every run of a named sweep size: per-category sweeps, then up to ``library_runs`` library runs."""
    if size not in cfg.sweeps:
        raise ValueError(
            f"unknown sweep size {size!r}; config/simulation.yaml defines: {', '.join(cfg.sweeps)}"
        )
    sweep = cfg.sweeps[size]
    runs: list[EpisodeSpec] = []
    for cat in CATEGORIES:
        n = sweep.runs.get(cat, 0)  # type: ignore[call-overload]
        if n and cat in cfg.categories:
            runs.extend(plan_category(cfg, cat, n))
    runs.extend(list(library)[: sweep.library_runs])
    if sweep.duration_s is not None:
        runs = [r.model_copy(update={"duration_s": sweep.duration_s}) for r in runs]
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate run ids in sweep {size!r}")
    return runs


def plan_batch(cfg: SimulationConfig, size: str, batch: int, n: int) -> list[EpisodeSpec]:
    """Sequential batch ``batch`` (1, 2, ...) of ``n`` new seeded runs for a sweep, spread over its
    categories in the sweep's proportions (largest remainders); library runs are not repeated
    (each is one extracted scenario)."""
    if batch < 1:
        raise ValueError(f"sequential batches count from 1, got {batch}")
    sweep = cfg.sweeps[size]
    weights = {c: sweep.runs.get(c, 0) for c in CATEGORIES if c in cfg.categories}  # type: ignore[call-overload]
    total = sum(weights.values())
    if not total:
        raise ValueError(f"sweep {size!r} has no category runs to extend")
    share = {c: n * w / total for c, w in weights.items()}
    counts = {c: int(v) for c, v in share.items()}
    for c in sorted(share, key=lambda c: (counts[c] - share[c], CATEGORIES.index(c)))[
        : n - sum(counts.values())
    ]:
        counts[c] += 1
    runs = [r for c in CATEGORIES if counts.get(c) for r in plan_category(cfg, c, counts[c], batch)]
    if sweep.duration_s is not None:
        runs = [r.model_copy(update={"duration_s": sweep.duration_s}) for r in runs]
    return runs
