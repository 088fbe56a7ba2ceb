"""One model, every kind: the dense weights exported in each kind's layout decode to the same boxes.

Fast: a small dense model on synthetic frames, every kind as a real ONNX file through ONNX Runtime
and the contract's decoder. Slow (the trained ``demo/bundles/dense-candidate`` on the demo dataset's
validation split): COCO AP of every kind within 0.5 of the dense export's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from adas.detector.coco_metrics import coco_metrics
from adas.detector.data import CocoFrames
from adas.detector.decoders import decode
from adas.detector.dense_bundle import build_dense_contract, read_dense_weights
from adas.detector.dense_model import DenseDetector, build_dense_model
from adas.detector.postprocess import Detections
from adas.detector.preprocess import preprocess
from adas.intake.contract import Contract, Normalization
from adas.intake.feeds import model_feeds
from tests.detector.kind_exports import EXPORTS, kind_contract
from tests.detector.kind_exports import export as export_onnx

NORM = Normalization(scale=1 / 255, mean=(0.45, 0.45, 0.45), std=(0.2, 0.2, 0.2))
CLASSES = [(1, "car"), (2, "truck"), (3, "motorcycle")]
REPO = Path(__file__).resolve().parents[2]
DENSE_BUNDLE = REPO / "demo" / "bundles" / "dense-candidate"
DEMO_DATA = REPO / ".adas" / "datasets" / "demo"
EXACT = ("dense_bfn", "dense_bnf", "dense_objectness")  # the decoder's own NMS: identical answers


def run_kind(
    model: DenseDetector, base: Contract, kind: str, frames: np.ndarray, tmp: Path
) -> list[Detections]:
    module, names = EXPORTS[kind](model, base.postprocess.nms_iou_threshold)
    contract = kind_contract(base, kind)
    path = tmp / f"{kind}.onnx"
    path.write_bytes(
        export_onnx(module, names, contract.input.height_width, contract.input.source_size is not None)
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dets: list[Detections] = []
    for s in range(0, len(frames), 16):
        x, geometry = preprocess(frames[s : s + 16], contract.input)
        feeds = model_feeds(contract.input, x, geometry.source_hw)
        raw = dict(zip(names, session.run(names, feeds), strict=True))
        dets += decode(raw, contract, geometry=geometry, batch_size=len(x))
    return dets


@pytest.fixture(scope="module")
def small_model() -> DenseDetector:
    torch.manual_seed(0)
    model = build_dense_model(num_classes=3, width=8).eval()
    with torch.no_grad():  # untrained features are tiny: amplify them into a spread of scores
        for head in (model.head4, model.head8):
            head.cls_out.weight.normal_(std=1000.0)
            head.cls_out.bias.fill_(-2.0)
    return model


@pytest.mark.parametrize("kind", list(EXPORTS))
def test_every_kind_of_the_same_weights_decodes_to_the_dense_answer(
    small_model: DenseDetector, kind: str, tmp_path: Path
) -> None:
    base = build_dense_contract(
        version="2.0.0", model_name="dense", task="t", normalization=NORM, classes=CLASSES,
        num_candidates=small_model.config.num_candidates, score_threshold=0.8, max_detections=100,
    )  # fmt: skip
    frames = np.random.default_rng(5).integers(0, 256, (4, 96, 384, 3), dtype=np.uint8)
    reference = run_kind(small_model, base, "dense_bfn", frames, tmp_path)
    got = run_kind(small_model, base, kind, frames, tmp_path)
    assert sum(len(d) for d in reference) > 10 and max(len(d) for d in reference) < 100  # no cut ties
    for ref, d in zip(reference, got, strict=True):
        if kind in EXACT:
            assert len(d) == len(ref)
            # Equal scores may come out in another order (objectness x class rounds differently).
            a = np.lexsort((ref.boxes[:, 1], ref.boxes[:, 0], ref.category_ids))
            b = np.lexsort((d.boxes[:, 1], d.boxes[:, 0], d.category_ids))
            np.testing.assert_allclose(d.boxes[b], ref.boxes[a], atol=2e-3)
            np.testing.assert_allclose(d.scores[b], ref.scores[a], atol=1e-4)
            assert d.category_ids[b].tolist() == ref.category_ids[a].tolist()
            continue
        # Fast NMS in the graph keeps a subset of what greedy NMS keeps (and each kept box is one of
        # the model's own candidates, in source pixels, with its score and class).
        assert len(d) <= len(ref) + 2
        for box, score, cat in zip(d.boxes, d.scores, d.category_ids, strict=True):
            same = ref.category_ids == cat
            assert same.any()
            closest = np.abs(ref.boxes[same] - box).max(axis=1).min()
            assert closest < 2e-3 or score < ref.scores[same].max(), (kind, box, score)
        assert len(d) >= 0.8 * len(ref)


@pytest.mark.slow
@pytest.mark.skipif(
    not (DENSE_BUNDLE / "contract.yaml").is_file() or not (DEMO_DATA / "golden_val.json").is_file(),
    reason="needs demo/bundles/dense-candidate and the demo dataset (python -m adas.datasets --out .adas/datasets/demo)",
)
def test_the_trained_dense_model_scores_the_same_ap_in_every_kind(tmp_path: Path) -> None:
    from adas.intake.bundle import read_contract

    base = read_contract(DENSE_BUNDLE)
    model = read_dense_weights(DENSE_BUNDLE / base.model_file, len(base.classes))
    x = np.random.default_rng(0).standard_normal((2, 3, 160, 512)).astype(np.float32)
    session = ort.InferenceSession(str(DENSE_BUNDLE / base.model_file), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(
            model(torch.from_numpy(x)).numpy(), session.run(None, {"images": x})[0], atol=1e-3
        )
    val = CocoFrames.load(DEMO_DATA / "golden_val.json", DEMO_DATA, limit=200)
    low = base.model_copy(
        update={"postprocess": base.postprocess.model_copy(update={"score_threshold": 0.05})}
    )
    aps = {}
    for kind in EXPORTS:
        dets = run_kind(model, low, kind, val.frames, tmp_path)
        records = [r for i, d in zip(val.image_ids, dets, strict=True) for r in d.to_coco(i)]
        aps[kind] = 100 * coco_metrics(val.coco, records, image_ids=val.image_ids)["AP"]
    print({k: round(v, 2) for k, v in aps.items()})
    assert aps["dense_bfn"] > 20
    for kind, ap in aps.items():
        # Differences allowed: Fast NMS vs greedy NMS, and the top-300 / 100-row cuts.
        assert abs(ap - aps["dense_bfn"]) <= 0.5, (kind, aps)
