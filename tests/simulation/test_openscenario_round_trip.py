"""Round trip: a replay interval extracted by the scenario library, played back with the ego replaced by
a follower of the recorded ego track, puts every actor where the replay recorded it (within 0.2 m).

The replay records ground truth in the ego's frame; the extracted file places the ego at its start
and writes every actor in world coordinates for the default ``EgoSpeed``. Following the recorded ego
track (the ego frame moving at ``EgoSpeed``) must reproduce each actor's recorded (forward, right)
offset, box centre to box centre, at each recorded time.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from adas.simulation.config import SimulationConfig
from adas.simulation.openscenario import EgoState, Player, load_scenario
from adas.simulation.replay_report import FlaggedSegment
from adas.simulation.scenario_templates import ego_frame, fwd_right
from adas.simulation.scenarios import build_library
from tests.simulation.test_scenarios import _segment

TOLERANCE_M = 0.2


def _play_with_recorded_ego(
    seg: FlaggedSegment, folder: Path, xosc: str
) -> tuple[dict[float, dict[str, tuple[float, float]]], float]:
    """Every actor's box centre relative to the ego's, in the ego's (forward, right) frame, per time."""
    scenario = load_scenario(folder / xosc)
    assert scenario.executable, scenario.reason
    player = Player(scenario, step_s=1.0 / seg.fps, ego="Ego")
    start = player.ego_start
    assert start is not None
    vertical, _, _ = ego_frame(seg)
    ego_track = {round(p.t_s - seg.start_s, 3): fwd_right(p, vertical)[:2] for p in seg.ego_points}

    def ego_at(t: float) -> EgoState:  # the recorded-trajectory follower
        fwd, right = ego_track[round(t, 3)]
        return EgoState(start.x + start.v * t + fwd, start.y - right, start.h, start.v)

    def offsets() -> dict[str, tuple[float, float]]:
        centres = {p.name: p.box_center for p in player.poses()}
        ex, ey = centres.pop("Ego")
        return {n: (x - ex, ey - y) for n, (x, y) in centres.items()}

    seen = {0.0: offsets()}
    while round(player.time + player.step_s, 3) in ego_track:
        player.step(ego_at(player.time + player.step_s))
        seen[round(player.time, 3)] = offsets()
    return seen, start.v


@pytest.mark.parametrize("kind", ["cut_in", "stopped"])
def test_an_extracted_interval_plays_back_the_recorded_actor_positions(
    kind: str, tmp_path: Path, sim_cfg: SimulationConfig
) -> None:
    seg = _segment(kind)
    (template,) = build_library([seg], sim_cfg, tmp_path)
    seen, _ = _play_with_recorded_ego(seg, tmp_path / template.segment_id, template.xosc)
    vertical, _, _ = ego_frame(seg)
    compared = 0
    for track in seg.tracks:
        for p in track.points:
            t = round(p.t_s - seg.start_s, 3)
            want = fwd_right(p, vertical)[:2]
            got = seen[t][f"Actor{track.gt_track}"]
            error = math.hypot(got[0] - want[0], got[1] - want[1])
            assert error <= TOLERANCE_M, (
                f"Actor{track.gt_track} at t={t}: played {got}, recorded {want} ({error:.3f} m apart)"
            )
            compared += 1
    assert compared == sum(len(t.points) for t in seg.tracks) == 20
