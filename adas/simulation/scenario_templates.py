"""What a scenario extracted from a flagged replay interval is, and which closed-loop category it maps to.

``classify`` reads a flagged segment's ground-truth tracks in the ego's frame and picks the key
actor (the one the candidate missed most) and the category (cut-in, stopped lead, merge, cruise);
a ``ScenarioTemplate`` describes the written files and the sweep over them.

Domain code: no dagster import.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from adas.simulation.replay_report import FlaggedSegment, FlaggedTrack, TrackPoint

LANE_WIDTH_M: Final[float] = 4.0
DEFAULT_EGO_SPEED: Final[dict[str, float]] = {
    "highway": 25.0,
    "merge": 25.0,
    "intersection": 8.0,
    "roundabout": 8.0,
}
OSC_CATEGORY: Final[dict[str, str]] = {"car": "car", "truck": "truck", "motorcycle": "motorbike"}
FROM_OSC_CATEGORY: Final[dict[str, str]] = {v: k for k, v in OSC_CATEGORY.items()}
# The bounding box (length, width) a scripted actor of a class gets: the middle of the generator's
# size ranges (config/datagen.yaml vehicle_classes); the world widens it to the smallest labelled size.
ACTOR_SIZE_M: Final[dict[str, tuple[float, float]]] = {
    "car": (4.5, 1.9),
    "truck": (10.5, 2.5),
    "motorcycle": (2.2, 0.8),
}
FOG_RANGE_M: Final[dict[int, float]] = {1: 400.0, 2: 200.0, 3: 120.0, 4: 70.0, 5: 40.0}


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    weather: str
    lighting: str
    severity: int

    def parameters(self) -> dict[str, str]:
        """The condition's physical OpenSCENARIO environment values."""
        sev = max(1, min(5, self.severity))
        fog = FOG_RANGE_M[sev] if self.weather == "fog" else 100000.0
        precip = self.weather if self.weather in ("rain", "snow") else "dry"
        intensity = round(0.15 * sev, 2) if precip != "dry" else 0.0
        sun = {"day": (100000.0, 1.0), "night": (0.0, -0.3), "glare": (100000.0, 0.08)}[self.lighting]
        return {
            "Weather": self.weather,
            "Lighting": self.lighting,
            "Severity": str(self.severity),
            "FogVisualRange": f"{fog:g}",
            "Precipitation": precip,
            "PrecipitationIntensity": f"{intensity:g}",
            "SunIntensity": f"{sun[0]:g}",
            "SunElevation": f"{sun[1]:g}",
        }


class ScenarioTemplate(BaseModel):
    """One extracted scenario: where it came from, what it maps to, its files and its sweep."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario_id: str
    segment_id: str
    source_scenario: str  # highway / merge / intersection / roundabout (the replay's)
    category: str  # the closed-loop category it maps to
    reasons: list[str]
    key_actor: int | None
    key_actor_type: str
    actors: int
    duration_s: float
    defaults: dict[str, str]
    sweep_single: dict[str, list[str]]
    sweep_conditions: list[Condition]
    actor_speed_delta_mps: float
    xosc: str
    xodr: str
    sweep_xosc: str
    # Whether the player can play every point of its sweep (else the reason: elements outside the
    # supported subset, by XML path); a scenario that is not executable is listed, never run.
    executable: bool = True
    reason: str = ""

    @property
    def sweep_size(self) -> int:
        n = len(self.sweep_conditions)
        for values in self.sweep_single.values():
            n *= len(values)
        return n


def ego_frame(seg: FlaggedSegment) -> tuple[bool, float, float]:
    """(vertical, ego length, ego width): a taller-than-wide ego box drives along the frame's y axis."""
    if not seg.ego_points:
        return False, 4.5, 1.9
    e = seg.ego_points[0]
    vertical = e.width_m > e.length_m
    return vertical, max(e.length_m, e.width_m), min(e.length_m, e.width_m)


def fwd_right(p: TrackPoint, vertical: bool) -> tuple[float, float, float, float]:
    """(forward, right, length, width) of a point in the ego's frame (vertical egos assumed heading up)."""
    if vertical:
        return -p.y_m, p.x_m, p.width_m, p.length_m
    return p.x_m, p.y_m, p.length_m, p.width_m


def _key_actor(seg: FlaggedSegment, vertical: bool) -> FlaggedTrack | None:
    if not seg.tracks:
        return None

    def rank(t: FlaggedTrack) -> tuple[float, float]:
        fwd, _, _, _ = fwd_right(t.points[0], vertical)
        return (-(t.missed_by_candidate - t.missed_by_production) - 0.5 * t.missed_by_candidate, abs(fwd))

    return min(seg.tracks, key=rank)


def classify(seg: FlaggedSegment) -> tuple[str, FlaggedTrack | None, float]:
    """(closed-loop category, key actor, key actor's speed deficit vs the ego [m/s])."""
    vertical, _, _ = ego_frame(seg)
    key = _key_actor(seg, vertical)
    ego_speed = DEFAULT_EGO_SPEED.get(seg.scenario, 20.0)
    if key is None or len(key.points) < 2:
        return ("merge" if seg.scenario == "merge" else "cruise"), key, 0.0
    f0, r0, _, _ = fwd_right(key.points[0], vertical)
    f1, r1, _, _ = fwd_right(key.points[-1], vertical)
    dt = max(key.points[-1].t_s - key.points[0].t_s, 1e-3)
    rel_speed = (f1 - f0) / dt
    deficit = max(0.0, -rel_speed)
    half_lane = LANE_WIDTH_M / 2
    if f0 > 0 and abs(r0) > half_lane + 0.5 and abs(r1) < half_lane:
        return "cut_in", key, deficit
    if f0 > 0 and abs(r0) < half_lane and rel_speed < -0.6 * ego_speed:
        return "stopped_lead", key, deficit
    if seg.scenario == "merge":
        return "merge", key, deficit
    return "cruise", key, deficit


def describe(t: ScenarioTemplate) -> dict[str, Any]:
    """A table row for the UI."""
    return {
        "scenario": t.scenario_id,
        "from": f"{t.source_scenario} {t.segment_id}",
        "category": t.category,
        "key_actor": t.key_actor_type,
        "actors": t.actors,
        "duration_s": t.duration_s,
        "sweep_runs": t.sweep_size,
        "why": "; ".join(t.reasons),
        "executable": "yes" if t.executable else f"no: {t.reason}",
    }
