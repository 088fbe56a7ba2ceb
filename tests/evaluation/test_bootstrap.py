"""Paired bootstrap on detection metrics: exact at unit weights, paired, calibrated."""

import numpy as np
import pytest

from adas.detector.coco_metrics import coco_metrics
from adas.evaluation.bootstrap import MatchTable, mean_ap, paired_bootstrap
from adas.evaluation.synthetic_detections import detections, ground_truth
from adas.stats import decide

GOOD = {1: 0.9, 2: 0.85, 3: 0.7}
WORSE = {1: 0.9, 2: 0.85, 3: 0.45}


@pytest.fixture(scope="module")
def world() -> tuple[dict, list, list]:
    gt = ground_truth(120, seed=1)
    return gt, detections(gt, GOOD, seed=2), detections(gt, WORSE, seed=3)


def test_unit_weights_reproduce_pycocotools(world: tuple[dict, list, list]) -> None:
    gt, dets, _ = world
    ref = coco_metrics(gt, dets, backend="pycocotools")
    table = MatchTable.from_coco(gt, dets)
    ap = table.ap(np.ones((1, len(table.image_ids))))
    assert mean_ap(ap)[0] == pytest.approx(ref["AP"], abs=1e-9)
    assert mean_ap(ap, iou_index=0)[0] == pytest.approx(ref["AP50"], abs=1e-9)
    for k, c in enumerate(table.classes):
        assert mean_ap(ap, class_index=k)[0] == pytest.approx(ref["per_class_AP"][c.name], abs=1e-9)


def test_identical_models_give_a_zero_delta_and_a_green_verdict(world: tuple[dict, list, list]) -> None:
    gt, dets, _ = world
    table = MatchTable.from_coco(gt, dets)
    deltas = paired_bootstrap(table, table, n_resamples=300, seed=0)
    ap = deltas.intervals["AP"]
    assert (ap.point, ap.low, ap.high) == (0.0, 0.0, 0.0)
    assert decide(ap, tolerance=0.01).verdict == "green"


def test_a_worse_class_is_red_with_an_interval_excluding_zero(world: tuple[dict, list, list]) -> None:
    gt, good, worse = world
    deltas = paired_bootstrap(
        MatchTable.from_coco(gt, worse),
        MatchTable.from_coco(gt, good),
        n_resamples=1000,
        seed=0,
        recall_classes=["motorcycle"],
    )
    moto = deltas.intervals["AP/motorcycle"]
    assert moto.high < 0 and decide(moto, tolerance=0.02).verdict == "red"
    assert deltas.intervals["recall/motorcycle"].high < 0
    # Cars are detected equally often by both: no regression shown there.
    assert decide(deltas.intervals["AP/car"], tolerance=0.05).verdict != "red"


def test_a_slice_resamples_only_its_own_images(world: tuple[dict, list, list]) -> None:
    gt, good, worse = world
    c, p = MatchTable.from_coco(gt, worse), MatchTable.from_coco(gt, good)
    thin = [im["id"] for im in gt["images"][:30]]
    sliced = paired_bootstrap(c, p, image_ids=thin, n_resamples=500, seed=0)
    whole = paired_bootstrap(c, p, n_resamples=500, seed=0)
    assert sliced.n_images == 30 and whole.n_images == 120
    ref_c = coco_metrics(gt, worse, image_ids=thin, backend="pycocotools")["AP"]
    ref_p = coco_metrics(gt, good, image_ids=thin, backend="pycocotools")["AP"]
    assert sliced.intervals["AP"].point == pytest.approx(ref_c - ref_p, abs=1e-9)
    assert sliced.intervals["AP"].half_width > whole.intervals["AP"].half_width


def test_models_on_different_images_are_refused(world: tuple[dict, list, list]) -> None:
    gt, good, _ = world
    other = ground_truth(10, seed=5, first_id=10_000)
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap(MatchTable.from_coco(gt, good), MatchTable.from_coco(other, []), n_resamples=10)


@pytest.mark.slow
@pytest.mark.nightly  # 2-2.5 min on 2 cores: a coverage study, not a unit check (CI passed 30 min)
def test_nominal_95_percent_intervals_cover_the_true_difference() -> None:
    """200 seeded trials of 80 images each: the 95% interval covers the population's AP
    difference (estimated on 6,000 images) in 93-97% of them."""
    big = ground_truth(6000, seed=100)
    truth = (
        coco_metrics(big, detections(big, WORSE, seed=101))["AP"]
        - coco_metrics(big, detections(big, GOOD, seed=102))["AP"]
    )
    covered = 0
    for trial in range(200):
        gt = ground_truth(80, seed=1000 + trial)
        deltas = paired_bootstrap(
            MatchTable.from_coco(gt, detections(gt, WORSE, seed=5000 + trial)),
            MatchTable.from_coco(gt, detections(gt, GOOD, seed=9000 + trial)),
            n_resamples=1000,
            seed=trial,
        )
        ap = deltas.intervals["AP"]
        covered += ap.low <= truth <= ap.high
    assert 186 <= covered <= 194, f"coverage {covered}/200 (truth {truth:+.4f})"


def test_weighted_calibration_error_is_ece_at_unit_weights_and_duplication_at_weight_two() -> None:
    from adas.evaluation.calibration import _ece, weighted_calibration_error

    rng = np.random.default_rng(0)
    conf = rng.random(500)
    correct = (rng.random(500) < conf**1.5).astype(np.float64)
    keys = np.clip(np.digitize(conf, np.linspace(0, 1, 11)[1:-1]), 0, 9)
    ece, _ = _ece(conf, correct, 10)
    assert weighted_calibration_error(keys, conf, correct, np.ones((1, 500)))[0] == pytest.approx(ece, abs=1e-12)
    # A detection drawn twice by the bootstrap weighs what two copies of it weigh.
    w = np.ones(500)
    w[:50] = 2.0
    dup = np.concatenate([np.arange(500), np.arange(50)])
    ece_dup, _ = _ece(conf[dup], correct[dup], 10)
    assert weighted_calibration_error(keys, conf, correct, w[None, :])[0] == pytest.approx(ece_dup, abs=1e-12)


def test_paired_evidence_is_the_same_with_one_or_two_workers(world: tuple[dict, list, list]) -> None:
    from adas.evaluation.evidence import paired_evidence

    gt, good, worse = world
    ids = [im["id"] for im in gt["images"]]
    slices = {"a": ids[:40], "b": ids[40:90], "c": ids[90:]}
    runs = [
        paired_evidence(gt, worse, good, ids, slices, recall_classes=["motorcycle"], resamples=200, workers=w)
        for w in (1, 2)
    ]
    assert runs[0].model_dump(exclude={"seconds"}) == runs[1].model_dump(exclude={"seconds"})
    assert set(runs[0].slices) == {"a", "b", "c"} and runs[0].calibration is not None
