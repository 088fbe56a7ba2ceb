"""Safety and comfort metrics of closed-loop runs, and a CARLA-style driving score.

Per run (from the ground-truth trace, never from what the perception reported):

* collisions (with the class and kind: front / rear / side), off-road events, an "agent
  blocked" event (the ego stands still for ``blocked_after_s`` with nothing ahead: phantom
  braking on ghosts);
* minimum time-to-collision with the vehicle ahead in the ego's path, near misses (an episode
  of TTC below ``near_miss_ttc_s`` or a bumper gap below ``near_miss_gap_m`` that did not end
  in a collision; with a motorcycle: a vulnerable-road-user near miss);
* rule proxy: unsafe following (time headway below ``unsafe_headway_s`` for at least
  ``unsafe_following_min_s``);
* comfort: realized acceleration and jerk (max, p95, RMS), hard-braking events;
* time to first detection of the vehicles the ego had to react to (each vehicle that was ever
  ahead in its path): from the first frame its GT box is in to the first frame a detection
  matches it, the worst over those vehicles; one never detected counts its whole time in view
  (a lower bound) and in ``undetected_leads``;
* route completion (distance / planned route) and the CARLA leaderboard's driving score:
  ``route completion x prod(penalty ** count)`` with vehicle collision 0.60, off-road (leaving
  the drivable area: CARLA's collision with the static layout) 0.65 and agent blocked
  (CARLA's timeout) 0.70.

Across runs: collisions and every infraction per 1,000 km, means and extremes per scenario
category and per model, on identical seeds for candidate and production.

Domain code: no dagster import.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from adas.simulation.config import MetricsConfig
from adas.simulation.episode import EpisodeSpec, EpisodeTrace

VRU_CLASSES = frozenset({"motorcycle"})
VIOLATION_TYPES: tuple[str, ...] = (
    "collision",
    "near_miss",
    "vru_near_miss",
    "off_road",
    "agent_blocked",
    "unsafe_following",
    "hard_brake",
)


class EpisodeMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int
    duration_s: float
    distance_m: float
    route_completion: float
    collisions: int
    collision_with: str | None = None
    collision_kind: str | None = None
    collision_t_s: float | None = None
    off_road_events: int
    agent_blocked_events: int
    near_misses: int
    vru_near_misses: int
    min_ttc_s: float | None
    min_gap_m: float | None
    unsafe_following_events: int
    unsafe_following_s: float
    hard_brake_events: int
    max_accel_mps2: float
    max_decel_mps2: float
    max_abs_jerk_mps3: float
    p95_abs_jerk_mps3: float
    rms_jerk_mps3: float
    mean_speed_mps: float
    lane_changes: int
    event_triggered_s: float | None = None
    infraction_penalty: float
    driving_score: float
    mean_detections: float
    time_to_first_detection_s: float | None = None  # None: no vehicle was ever ahead in the path and in view
    undetected_leads: int = 0

    @property
    def failed(self) -> bool:
        """A run worth a clip: it collided, left the road or got stuck."""
        return self.collisions > 0 or self.off_road_events > 0 or self.agent_blocked_events > 0


class RunRecord(BaseModel):
    """One run of one model: what was run, and what happened."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    spec: EpisodeSpec
    metrics: EpisodeMetrics
    wall_s: float
    cpu_s: float = 0.0
    clip_key: str | None = None

    def row(self) -> dict[str, Any]:
        """A flat record for the summary table (one row per model x run)."""
        s = self.spec
        return {
            "model": self.model,
            "run_id": s.run_id,
            "category": s.category,
            "scenario": s.scenario,
            "density": s.density,
            "condition": s.condition,
            "weather": s.weather,
            "lighting": s.lighting,
            "severity": s.severity,
            "seed": s.seed,
            "ego_speed_mps": s.ego_speed_mps,
            "gap_time_s": s.gap_time_s,
            "actor_type": s.actor_type,
            "source": s.source,
            **self.metrics.model_dump(),
            "failed": self.metrics.failed,
            "clip_key": self.clip_key,
        }


def _rising_edges(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """(start, end-exclusive) of every run of True values."""
    out: list[tuple[int, int]] = []
    start: int | None = None
    for i, f in enumerate(flags):
        if f and start is None:
            start = i
        elif not f and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(flags)))
    return out


def _finite_min(values: Iterable[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return round(min(finite), 4) if finite else None


def time_to_first_detection(trace: EpisodeTrace) -> tuple[float | None, int]:
    """Worst time to first detection over the vehicles ever ahead in the ego's path, and how many of
    them were never detected (their time counts from entering the view to the end: a lower bound).

    The clock starts when the vehicle's GT box is first in the frame, not when it enters the path:
    a cut-in vehicle seen (and detected) in the next lane is already known when it moves over.
    """
    worst: float | None = None
    undetected = 0
    for lead in dict.fromkeys(i for i in trace.lead_id if i is not None):
        seen = next((k for k, ids in enumerate(trace.visible_ids) if lead in ids), None)
        if seen is None:
            continue  # ahead in the path but never in the frame: nothing to detect
        found = next((k for k in range(seen, len(trace.detected_ids)) if lead in trace.detected_ids[k]), None)
        if found is None:
            undetected += 1
        delay = ((found if found is not None else len(trace.t)) - seen) * trace.dt
        worst = delay if worst is None else max(worst, delay)
    return (round(worst, 3) if worst is not None else None), undetected


def episode_metrics(spec: EpisodeSpec, trace: EpisodeTrace, cfg: MetricsConfig) -> EpisodeMetrics:
    """Every per-run metric from a ground-truth trace."""
    dt = trace.dt
    n = len(trace.t)
    speed = np.asarray(trace.speed, float)
    gap = np.asarray(trace.gap, float)
    ttc = np.asarray(trace.ttc, float)
    collided = trace.collision is not None
    ttfd, undetected = time_to_first_detection(trace)

    # Realized acceleration and jerk (finite differences of the simulated speed).
    acc = np.diff(speed) / dt if n >= 2 else np.zeros(0)
    jerk = np.diff(acc) / dt if len(acc) >= 2 else np.zeros(0)
    abs_jerk = np.abs(jerk)

    danger = [
        (math.isfinite(c) and c < cfg.near_miss_ttc_s) or (math.isfinite(g) and g < cfg.near_miss_gap_m)
        for c, g in zip(ttc, gap, strict=True)
    ]
    near, vru = 0, 0
    events = _rising_edges(danger)
    for k, (a, b) in enumerate(events):
        if collided and k == len(events) - 1 and b == n:
            continue  # the episode that ended in the collision is counted as the collision
        near += 1
        seg = ttc[a:b]
        worst = a + int(np.argmin(np.where(np.isfinite(seg), seg, np.inf))) if np.isfinite(seg).any() else a
        if trace.lead_class[worst] in VRU_CLASSES:
            vru += 1

    headway = np.where(speed > 5.0, gap / np.maximum(speed, 1e-6), np.inf)
    unsafe = [bool(h < cfg.unsafe_headway_s) for h in headway]
    min_steps = max(1, round(cfg.unsafe_following_min_s / dt))
    unsafe_events = [e for e in _rising_edges(unsafe) if e[1] - e[0] >= min_steps]
    hard = _rising_edges([bool(a < -cfg.hard_brake_mps2) for a in acc])
    blocked_flags = [
        bool(v < 0.5 and (not math.isfinite(g) or g > cfg.blocked_clear_ahead_m))
        for v, g in zip(speed, gap, strict=True)
    ]
    blocked_steps = max(1, round(cfg.blocked_after_s / dt))
    blocked = [e for e in _rising_edges(blocked_flags) if e[1] - e[0] >= blocked_steps]
    off_road = _rising_edges([not f for f in trace.on_road])

    counts = {"collision_vehicle": int(collided), "off_road": len(off_road), "agent_blocked": len(blocked)}
    penalty = 1.0
    for name, count in counts.items():
        penalty *= cfg.penalties.get(name, 1.0) ** count
    rc = min(1.0, max(0.0, trace.distance_m / trace.route_length_m)) if trace.route_length_m > 0 else 0.0
    col = trace.collision or {}
    return EpisodeMetrics(
        steps=n,
        duration_s=round(n * dt, 3),
        distance_m=round(trace.distance_m, 3),
        route_completion=round(rc, 4),
        collisions=int(collided),
        collision_with=col.get("with"),
        collision_kind=col.get("kind"),
        collision_t_s=col.get("t_s"),
        off_road_events=len(off_road),
        agent_blocked_events=len(blocked),
        near_misses=near,
        vru_near_misses=vru,
        min_ttc_s=_finite_min(ttc),
        min_gap_m=_finite_min(gap),
        unsafe_following_events=len(unsafe_events),
        unsafe_following_s=round(sum(b - a for a, b in unsafe_events) * dt, 3),
        hard_brake_events=len(hard),
        max_accel_mps2=round(float(acc.max()), 4) if len(acc) else 0.0,
        max_decel_mps2=round(float(max(0.0, -acc.min())), 4) if len(acc) else 0.0,
        max_abs_jerk_mps3=round(float(abs_jerk.max()), 4) if len(abs_jerk) else 0.0,
        p95_abs_jerk_mps3=round(float(np.percentile(abs_jerk, 95)), 4) if len(abs_jerk) else 0.0,
        rms_jerk_mps3=round(float(np.sqrt(np.mean(jerk**2))), 4) if len(jerk) else 0.0,
        mean_speed_mps=round(float(speed.mean()), 4) if n else 0.0,
        lane_changes=trace.lane_changes,
        event_triggered_s=trace.event_triggered_s,
        infraction_penalty=round(penalty, 6),
        driving_score=round(rc * penalty, 6),
        mean_detections=round(float(np.mean(trace.n_detections)), 3) if n else 0.0,
        time_to_first_detection_s=ttfd,
        undetected_leads=undetected,
    )


def violation_counts(m: EpisodeMetrics) -> dict[str, int]:
    """Counts per violation type (the heat map's rows)."""
    return {
        "collision": m.collisions,
        "near_miss": m.near_misses,
        "vru_near_miss": m.vru_near_misses,
        "off_road": m.off_road_events,
        "agent_blocked": m.agent_blocked_events,
        "unsafe_following": m.unsafe_following_events,
        "hard_brake": m.hard_brake_events,
    }


class GroupSummary(BaseModel):
    """Aggregates of one model over a set of runs (a category, or everything)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runs: int
    km: float
    collisions: int
    collisions_per_1000km: float
    off_road: int
    off_road_per_1000km: float
    agent_blocked: int
    near_misses: int
    vru_near_misses: int
    unsafe_following_events: int
    hard_brake_events: int
    min_ttc_s: float | None
    mean_route_completion: float
    mean_driving_score: float
    p95_abs_jerk_mps3: float
    max_decel_mps2: float


def summarize(records: Sequence[RunRecord]) -> GroupSummary:
    ms = [r.metrics for r in records]
    km = sum(m.distance_m for m in ms) / 1000.0
    coll = sum(m.collisions for m in ms)
    off = sum(m.off_road_events for m in ms)

    def per_1000km(x: int) -> float:
        return round(x / km * 1000.0, 3) if km > 0 else 0.0

    jerks = [m.p95_abs_jerk_mps3 for m in ms]
    return GroupSummary(
        runs=len(ms),
        km=round(km, 4),
        collisions=coll,
        collisions_per_1000km=per_1000km(coll),
        off_road=off,
        off_road_per_1000km=per_1000km(off),
        agent_blocked=sum(m.agent_blocked_events for m in ms),
        near_misses=sum(m.near_misses for m in ms),
        vru_near_misses=sum(m.vru_near_misses for m in ms),
        unsafe_following_events=sum(m.unsafe_following_events for m in ms),
        hard_brake_events=sum(m.hard_brake_events for m in ms),
        min_ttc_s=_finite_min(m.min_ttc_s for m in ms if m.min_ttc_s is not None),
        mean_route_completion=round(float(np.mean([m.route_completion for m in ms])), 4) if ms else 0.0,
        mean_driving_score=round(float(np.mean([m.driving_score for m in ms])), 4) if ms else 0.0,
        p95_abs_jerk_mps3=round(float(np.percentile(jerks, 95)), 4) if jerks else 0.0,
        max_decel_mps2=round(max((m.max_decel_mps2 for m in ms), default=0.0), 4),
    )


def summarize_by_category(records: Sequence[RunRecord]) -> dict[str, GroupSummary]:
    cats = sorted({r.spec.category for r in records})
    return {c: summarize([r for r in records if r.spec.category == c]) for c in cats}
