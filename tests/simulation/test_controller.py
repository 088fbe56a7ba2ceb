"""The perception-driven controller: pixel->world, ego exclusion, tracker coasting, IDM/ACC, lane changes."""

from __future__ import annotations

import numpy as np
import pytest

from adas.detector.postprocess import Detections
from adas.simulation.config import ControllerConfig
from adas.simulation.controller import (
    EgoState,
    ProxyController,
    Track,
    WorldDetection,
    WorldTracker,
    _Neighbour,
    detections_to_world,
    idm_acceleration,
)


class StraightLane:
    """A lane along +x centred on y = ``y``."""

    def __init__(self, y: float, width: float = 4.0) -> None:
        self.y, self.width = y, width

    def local_coordinates(self, p: np.ndarray) -> tuple[float, float]:
        return float(p[0]), float(p[1] - self.y)

    def width_at(self, s: float) -> float:
        return self.width


def _track(x: float, y: float, vx: float, tid: int = 0, t: float = 0.0) -> Track:
    return Track(
        tid,
        np.array([x, y]),
        np.array([vx, 0.0]),
        np.array([2.3, 1.0]),
        1,
        hits=5,
        last_seen_s=t,
        velocity_known=True,
    )


def test_pixels_to_world_and_ego_excluded_by_position() -> None:
    # origin (100, -5) m, 5.5 px/m render, saved at 0.64x: 3.52 px/m on the saved frame
    k = 5.5 * 0.64
    ego_px = (50 * k, 5 * k)  # the ego at world (150, 0)
    car_px = (80 * k, 5 * k)  # a car at world (180, 0)
    dets = Detections(
        np.array(
            [
                [ego_px[0] - 8, ego_px[1] - 3, ego_px[0] + 8, ego_px[1] + 3],
                [car_px[0] - 8, car_px[1] - 3, car_px[0] + 8, car_px[1] + 3],
            ],
            np.float32,
        ),
        np.array([0.9, 0.8], np.float32),
        np.array([1, 2]),
    )
    world = detections_to_world(
        dets,
        origin=(100.0, -5.0),
        scaling_px_per_m=5.5,
        frame_scale=0.64,
        ego_position=(150.0, 0.0),
        ego_half_extent=(2.3, 1.0),
        exclusion_margin_m=1.0,
    )
    assert len(world) == 1, "the ego's own box must be excluded"
    (d,) = world
    assert d.center == pytest.approx((180.0, 0.0), abs=1e-3)
    assert d.half_extent[0] == pytest.approx(8 / k, rel=1e-3)
    assert d.category_id == 2


def test_tracker_confirms_coasts_through_single_misses_and_drops_persistent_ones() -> None:
    cfg = ControllerConfig(confirm_hits=2, max_coast_s=1.0)
    tr = WorldTracker(cfg)
    det = lambda x: [WorldDetection((x, 0.0), (2.3, 1.0), 1, 0.9)]  # noqa: E731
    assert tr.update(det(100.0), 0.0, default_velocity=(20.0, 0.0)) == []  # one hit: not confirmed yet
    confirmed = tr.update(det(102.0), 0.2, default_velocity=(20.0, 0.0))
    assert len(confirmed) == 1
    assert confirmed[0].velocity[0] == pytest.approx(10.0)  # measured, not the ego's default
    # A frame-independent miss: the track coasts on its velocity.
    coasting = tr.update([], 0.4, default_velocity=(20.0, 0.0))
    assert len(coasting) == 1 and coasting[0].predicted(0.4)[0] == pytest.approx(104.0)
    again = tr.update(det(106.1), 0.6, default_velocity=(20.0, 0.0))
    assert [t.track_id for t in again] == [confirmed[0].track_id]
    # A persistent miss (> max_coast_s): the object is gone for the controller.
    for k in range(1, 7):
        out = tr.update([], 0.6 + 0.2 * k, default_velocity=(20.0, 0.0))
    assert out == []


def test_new_track_of_a_stationary_object_is_associated_despite_ego_default_velocity() -> None:
    tr = WorldTracker(ControllerConfig())
    # Seen first with the ego's velocity as a guess (25 m/s): the object is in fact parked.
    tr.update([WorldDetection((200.0, 0.0), (2.0, 1.0), 1, 0.9)], 0.0, default_velocity=(25.0, 0.0))
    confirmed = tr.update(
        [WorldDetection((200.0, 0.0), (2.0, 1.0), 1, 0.9)], 0.2, default_velocity=(25.0, 0.0)
    )
    assert len(confirmed) == 1 and confirmed[0].velocity[0] == pytest.approx(0.0)


def test_acc_model_brakes_for_a_stopped_leader_and_less_than_idm_for_a_benign_cut_in() -> None:
    cfg = ControllerConfig()
    assert idm_acceleration(cfg, 25.0, 25.0, None) == pytest.approx(0.0)
    stopped = idm_acceleration(cfg, 25.0, 25.0, _Neighbour(gap=60.0, speed=0.0))
    assert stopped <= -5.0  # v^2 / 2s = 5.2 m/s^2 is the minimum to stop in time
    cut_in = _Neighbour(gap=18.0, speed=18.0)
    acc = idm_acceleration(cfg, 25.0, 25.0, cut_in)
    plain = idm_acceleration(cfg.model_copy(update={"cah_coolness": 0.0}), 25.0, 25.0, cut_in)
    assert plain == -cfg.max_decel_mps2  # IDM alone over-brakes
    assert -cfg.max_decel_mps2 < acc < -2.0


def test_controller_acts_only_on_tracks_in_its_path() -> None:
    cfg = ControllerConfig(lane_changes=False)
    ctrl = ProxyController(cfg)
    ego = EgoState(np.array([0.0, 0.0]), 25.0, (2.3, 1.0), 25.0, 1.0)
    lane = StraightLane(0.0)
    beside = _track(30.0, 4.0, 0.0, t=1.0)  # stopped, in the next lane
    assert ctrl.decide(ego, [beside], [lane], {}, False).acceleration == pytest.approx(0.0)
    ahead = _track(50.0, 0.3, 0.0, t=1.0)  # stopped, in the ego's path
    cmd = ctrl.decide(ego, [beside, ahead], [lane], {}, False)
    assert cmd.acceleration < -5.0 and cmd.leader_gap_m == pytest.approx(50.0 - 4.6)


def test_lane_change_only_when_the_perceived_target_lane_is_clear() -> None:
    cfg = ControllerConfig(lane_changes=True)
    ego = EgoState(np.array([0.0, 0.0]), 25.0, (2.3, 1.0), 25.0, 10.0)
    lane, left = StraightLane(0.0), StraightLane(-4.0)
    slow = _track(40.0, 0.0, 10.0, t=10.0)
    cmd = ProxyController(cfg).decide(ego, [slow], [lane], {"left": left}, False)
    assert cmd.lane_change == "left"
    closing_from_behind = _track(-12.0, -4.0, 30.0, tid=1, t=10.0)
    cmd = ProxyController(cfg).decide(ego, [slow, closing_from_behind], [lane], {"left": left}, False)
    assert cmd.lane_change is None, "a vehicle close behind in the target lane forbids the change"
    cmd = ProxyController(cfg.model_copy(update={"lane_changes": False})).decide(
        ego, [slow], [lane], {"left": left}, False
    )
    assert cmd.lane_change is None
