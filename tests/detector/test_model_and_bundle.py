"""Train two steps on a tiny generated dataset, write a bundle, reload and export it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from adas.detector.bundle import (
    load_bundle_model,
    read_contract,
    read_lineage,
    run_detector,
    write_bundle,
)
from adas.detector.data import CenterNetDataset, CocoFrames, make_targets
from adas.detector.model import OUTPUT_NAMES, build_model, count_parameters
from adas.detector.train import TrainConfig, detection_loss, train
from adas.intake.contract import CONTRACT_FILE, LINEAGE_FILE, Contract, Lineage

CATEGORIES = [{"id": 1, "name": "car"}, {"id": 2, "name": "truck"}, {"id": 3, "name": "motorcycle"}]
SIZES = {1: (17, 7), 2: (30, 8), 3: (8, 4)}


def _write_dataset(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """Bright rectangles on a noisy grey road, in the generator's on-disk layout."""
    rng = np.random.default_rng(seed)
    image_id = 1
    for split, n in counts.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        coco: dict = {"images": [], "annotations": [], "categories": CATEGORIES}
        for _ in range(n):
            img = np.clip(90 + rng.normal(0, 8, (96, 384, 3)), 0, 255)
            for _ in range(int(rng.integers(1, 6))):
                c = int(rng.choice([1, 2, 3]))
                w, h = SIZES[c]
                x, y = int(rng.integers(0, 384 - w)), int(rng.integers(0, 96 - h))
                img[y : y + h, x : x + w] = rng.uniform(150, 250, 3)
                coco["annotations"].append(
                    {
                        "id": len(coco["annotations"]) + 1,
                        "image_id": image_id,
                        "category_id": c,
                        "bbox": [float(x), float(y), float(w), float(h)],
                        "area": float(w * h),
                        "iscrowd": 0,
                    }
                )
            name = f"images/{split}/{image_id:06d}.png"
            Image.fromarray(img.astype(np.uint8)).save(root / name)
            coco["images"].append({"id": image_id, "file_name": name, "width": 384, "height": 96})
            image_id += 1
        (root / f"golden_{split}.json").write_text(json.dumps(coco))
    (root / "dataset.json").write_text(json.dumps({"tag": "synthetic-test", "frame_size": [96, 384]}))
    return root


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # The shapes here are tiny: one intra-op thread is as fast, and it does not spin against
    # other processes on a shared 2-core machine (that made this file 2x slower under load).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_dataset(tmp_path_factory.mktemp("data"), {"train": 32, "val": 6, "test": 4})


@pytest.fixture(scope="module")
def bundle(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    result = train(
        TrainConfig(data_dir=dataset, epochs=1, width=8, batch_size=16, num_threads=1), log=lambda _: None
    )
    assert result.dataset_tag == "synthetic-test"
    assert np.isfinite(result.history[0]["loss"])
    lineage = Lineage(
        training_run_id="local-test-0", dataset_tag=result.dataset_tag, git_sha="0000000", epochs=1
    )
    out = write_bundle(
        result.model,
        tmp_path_factory.mktemp("bundle") / "b",
        version="1.3.0",
        model_name="vehicle-centernet",
        task="vehicle-detection",
        lineage=lineage,
        normalization=result.normalization,
        classes=result.classes,
    )
    return out, result.model


def test_model_shapes_and_size() -> None:
    model = build_model().eval()
    assert 300_000 <= count_parameters(model) <= 1_000_000
    outs = model(torch.zeros(2, 3, 96, 384))
    assert [tuple(o.shape) for o in outs] == [(2, 3, 24, 96), (2, 2, 24, 96), (2, 2, 24, 96)]


def test_fuse_keeps_outputs() -> None:
    torch.manual_seed(0)
    model = build_model(width=8)
    model.train()
    model(torch.randn(4, 3, 96, 384))  # populate BN running statistics
    model.eval()
    x = torch.randn(2, 3, 96, 384)
    with torch.no_grad():
        before = model(x)
        after = model.fuse()(x)
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_targets_and_loss() -> None:
    t = make_targets([(40.0, 20.0, 16.0, 8.0, 2), (0.0, 0.0, 8.0, 4.0, 9)], [1, 2, 3], (24, 96))
    # centre (48, 24) px -> cell (12, 6), offset (0, 0); category 9 is unknown and skipped.
    assert t["mask"].sum() == 1 and t["mask"][6, 12] == 1
    assert t["heatmap"][1, 6, 12] == 1.0 and t["heatmap"][0].max() == 0
    assert tuple(t["box_size"][:, 6, 12]) == (16.0, 8.0)
    targets = {k: torch.from_numpy(v)[None] for k, v in t.items()}
    outs = build_model(width=8)(torch.zeros(1, 3, 96, 384))
    losses = detection_loss(outs, targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_dataset_flip_moves_boxes(dataset: Path) -> None:
    frames = CocoFrames.load(dataset / "golden_val.json")
    from adas.detector.data import estimate_normalization

    ds = CenterNetDataset(frames, [1, 2, 3], estimate_normalization(frames.frames), augment=False)
    x, t = ds[0]
    assert x.shape == (3, 96, 384) and x.dtype == torch.float32
    assert t["mask"].sum() >= 1


def test_bundle_validates(bundle: tuple[Path, torch.nn.Module]) -> None:
    out, _ = bundle
    assert {p.name for p in out.iterdir()} == {"model.pt2", CONTRACT_FILE, LINEAGE_FILE}
    contract = Contract.model_validate(yaml.safe_load((out / CONTRACT_FILE).read_text()))
    assert contract == read_contract(out)
    assert contract.model_format == "torch_export" and contract.input.shape == [-1, 3, 96, 384]
    assert [o.name for o in contract.outputs] == list(OUTPUT_NAMES)
    assert [c.id for c in contract.classes] == [1, 2, 3]
    lineage = read_lineage(out)
    assert lineage.dataset_tag == "synthetic-test" and lineage.model_extra == {"epochs": 1}


def test_bundle_reload_dynamic_batch(bundle: tuple[Path, torch.nn.Module]) -> None:
    out, model = bundle
    loaded = load_bundle_model(out)
    contract = read_contract(out)
    model.eval()
    for batch in (1, 4):
        x = torch.randn(batch, 3, 96, 384)
        with torch.no_grad():
            got, ref = loaded(x), model(x)
        for o, spec, r in zip(got, contract.outputs, ref, strict=True):
            assert list(o.shape) == [batch, *spec.shape[1:]]
            torch.testing.assert_close(o, r, atol=1e-4, rtol=1e-4)
    frames = np.zeros((3, 96, 384, 3), np.uint8)
    dets = run_detector(loaded, frames, contract, batch_size=2)
    assert len(dets) == 3


def test_bundle_exports_to_onnx(bundle: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    out, model = bundle
    names = [o.name for o in read_contract(out).outputs]
    dynamic = {n: {0: "batch"} for n in ["images", *names]}

    def export(module: torch.nn.Module, path: Path, **kw: object) -> None:
        torch.onnx.export(
            module,
            (torch.randn(1, 3, 96, 384),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=names,
            dynamic_axes=dynamic,
            **kw,
        )

    # load_bundle_model's module exports as is; a raw ExportedProgram.module() refuses the
    # train(False) call the TorchScript exporter makes, unless the training mode is PRESERVE.
    export(load_bundle_model(out), tmp_path / "a.onnx")
    raw = torch.export.load(str(out / "model.pt2")).module()
    with pytest.raises(NotImplementedError):
        export(raw, tmp_path / "b.onnx")
    export(raw, tmp_path / "b.onnx", training=torch.onnx.TrainingMode.PRESERVE)

    for path in (tmp_path / "a.onnx", tmp_path / "b.onnx"):
        graph = onnx.load(str(path)).graph
        assert {n.op_type for n in graph.node} <= {
            "Conv",
            "Relu",
            "Add",
            "Resize",
            "Constant",
            "Concat",
            "Sigmoid",
        }
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for batch in (1, 4):
            x = torch.randn(batch, 3, 96, 384)
            with torch.no_grad():
                ref = model(x)
            for o, r in zip(sess.run(None, {"images": x.numpy()}), ref, strict=True):
                np.testing.assert_allclose(o, r.numpy(), atol=1e-4, rtol=1e-4)
