"""Triage outputs: failure clips keep their overlay colours; the heat map counts violations per category."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from adas.detector.postprocess import Detections
from adas.simulation.clips import OVERLAY, make_gif, render_frame
from adas.simulation.config import MetricsConfig
from adas.simulation.episode import ClipFrame, EpisodeSpec, EpisodeTrace
from adas.simulation.heatmap import heatmap_png, violation_matrix
from adas.simulation.metrics import VIOLATION_TYPES, RunRecord, episode_metrics
from adas.simulation.perception import GtBox


def _frame(rng: np.random.Generator) -> ClipFrame:
    img = np.clip(rng.normal(180, 6, size=(96, 384, 3)), 0, 255).astype(np.uint8)  # foggy grey
    gt = [
        GtBox((100.0, 40.0, 116.0, 47.0), 1, 0, True),  # the ego
        GtBox((200.0, 40.0, 235.0, 49.0), 2, 1, False),  # a truck nobody detected
        GtBox((300.0, 20.0, 316.0, 27.0), 1, 2, False),  # a detected car
    ]
    dets = Detections(
        np.array([[300.0, 20.0, 316.0, 27.0]], np.float32), np.array([0.9], np.float32), np.array([1])
    )
    return ClipFrame(img, dets, gt[0].xyxy, gt, "t= 1.0s v=25.0m/s")


def test_overlays_keep_their_exact_colours_on_a_foggy_frame() -> None:
    im = render_frame(_frame(np.random.default_rng(0)), scale=2, colors=16).convert("RGB")
    px = np.asarray(im)
    caption = 12
    assert tuple(px[caption + 40 * 2, 200 * 2]) == OVERLAY["missed"]  # top-left corner of the missed truck
    assert tuple(px[caption + 20 * 2, 300 * 2]) == OVERLAY["car"]  # the detected car
    assert tuple(px[caption + 40 * 2, 100 * 2]) in (OVERLAY["ego"], OVERLAY["car"])


def test_gif_is_deterministic_short_and_ends_on_the_last_frame() -> None:
    frames = [_frame(np.random.default_rng(k)) for k in range(9)]
    a = make_gif(frames, scale=2, fps=5, frame_step=2, colors=16, title="x")
    b = make_gif(frames, scale=2, fps=5, frame_step=2, colors=16, title="x")
    assert a == b
    gif = Image.open(io.BytesIO(a))
    assert gif.n_frames == 5  # frames 0, 2, 4, 6, 8
    assert gif.info["duration"] == 400 and gif.size == (768, 96 * 2 + 12)


def _record(category: str, collision: bool, near: int) -> RunRecord:
    n = 20
    ttc = [math.inf] * n
    for k in range(near):
        ttc[2 + 3 * k] = 1.0
    tr = EpisodeTrace(dt=0.2)
    tr.t = [k * 0.2 for k in range(n)]
    tr.speed, tr.gap, tr.ttc = [20.0] * n, [30.0] * n, ttc
    tr.accel_cmd, tr.lead_class, tr.on_road = [0.0] * n, ["motorcycle"] * n, [True] * n
    tr.n_detections, tr.n_tracks = [1] * n, [1] * n
    tr.distance_m, tr.route_length_m = 80.0, 80.0
    tr.collision = {"t_s": 4.0, "with": "car", "kind": "front"} if collision else None
    spec = EpisodeSpec(
        run_id=f"{category}-{int(collision)}{near}",
        category=category,  # type: ignore[arg-type]
        scenario="highway",
        density="sparse",
        weather="clear",
        lighting="day",
        severity=1,
        seed=0,
        duration_s=4.0,
        ego_speed_mps=20.0,
    )
    return RunRecord(
        model="candidate", spec=spec, metrics=episode_metrics(spec, tr, MetricsConfig()), wall_s=0.0
    )


def test_violation_matrix_and_png() -> None:
    recs = [_record("cut_in", True, 0), _record("cut_in", False, 2), _record("cruise", False, 1)]
    counts, runs = violation_matrix(recs, ["cruise", "cut_in"])
    assert runs.tolist() == [1, 2]
    row = {v: counts[i].tolist() for i, v in enumerate(VIOLATION_TYPES)}
    assert row["collision"] == [0, 1] and row["near_miss"] == [1, 2] and row["vru_near_miss"] == [1, 2]
    png = heatmap_png({"candidate": recs, "production": recs[1:]}, title="t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(png)).size[0] > 400
