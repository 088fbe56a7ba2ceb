"""Each kind of bad bundle is rejected with a reason naming the file and field."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from adas.intake.bundle import BundleRejected, digest_bundle, validate_bundle


def _edit_contract(bundle: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = bundle / "contract.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_good_bundle_validates(make_bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle = validate_bundle(make_bundle(), tmp_path / "work")
    assert bundle.contract.version == "0.1.0"
    assert bundle.lineage.git_sha == "abcdef0"
    assert bundle.parameter_count > 100_000
    assert bundle.output_shapes["heatmap"] == [-1, 3, 24, 96]
    assert set(bundle.digest.files) == {"model.pt2", "contract.yaml", "lineage.json"}


def test_bundle_hash_ignores_folder_name_but_not_content(make_bundle) -> None:  # type: ignore[no-untyped-def]
    a, b = make_bundle(name="a"), make_bundle(name="b")
    assert digest_bundle(a).sha256 == digest_bundle(b).sha256
    (b / "lineage.json").write_text((b / "lineage.json").read_text().replace("test-run", "test-run-2"))
    assert digest_bundle(a).sha256 != digest_bundle(b).sha256


@pytest.mark.parametrize(
    ("breakage", "field", "reason"),
    [
        (lambda b: (b / "contract.yaml").unlink(), "contract.yaml", "missing file"),
        (lambda b: (b / "lineage.json").unlink(), "lineage.json", "missing file"),
        (
            lambda b: (b / "model.pt2").unlink(),
            "contract.yaml: model_file",
            "names 'model.pt2', which is not in",
        ),
        (
            lambda b: (b / "contract.yaml").write_text("task: [unclosed\n"),
            "contract.yaml",
            "not valid YAML at line 2",
        ),
        (lambda b: (b / "lineage.json").write_text("{oops"), "lineage.json", "not valid JSON at line 1"),
        (
            lambda b: _edit_contract(b, lambda d: d.update(version="1.3")),
            "contract.yaml: version",
            "'1.3' is not a semantic version",
        ),
        (
            lambda b: _edit_contract(b, lambda d: d["input"].pop("normalization")),
            "contract.yaml: input.normalization",
            "Field required",
        ),
        (
            lambda b: _edit_contract(b, lambda d: d["outputs"][1].update(shape=[-1, 4, 24, 96])),
            "contract.yaml: outputs[1].shape",
            "declares [-1, 4, 24, 96] for 'box_size' but the model produced [1, 2, 24, 96]",
        ),
        (
            lambda b: _edit_contract(b, lambda d: d["input"].update(shape=[-1, 3, 128, 384])),
            "contract.yaml",
            "postprocess.stride 4 does not fit the shapes: heatmap 24x96 x 4 != input 128x384",
        ),
        (
            lambda b: _edit_contract(b, lambda d: d["input"].update(shape=[-1, 5, 96, 384])),
            "contract.yaml: input.shape",
            "the model rejected an input of shape [1, 5, 96, 384]",
        ),
        (
            lambda b: _edit_contract(b, lambda d: d.update(classes=d["classes"][:2])),
            "contract.yaml",
            "heatmap output 'heatmap' must be [batch, 2 classes, h, w]",
        ),
        (
            lambda b: (b / "lineage.json").write_text(
                json.dumps({"training_run_id": "r", "dataset_tag": "d"})
            ),
            "lineage.json: git_sha",
            "Field required",
        ),
        (
            lambda b: (b / "model.pt2").write_bytes((b / "model.pt2").read_bytes()[:2000]),
            "model.pt2",
            "cannot be loaded as torch_export",
        ),
        (
            lambda b: (b / "SHA256SUMS").write_text("0" * 64 + "  model.pt2\n"),
            "model.pt2",
            "sha256 mismatch: SHA256SUMS says 000",
        ),
    ],
)
def test_bad_bundles_are_rejected_naming_the_field(
    make_bundle, breakage, field: str, reason: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    bundle = make_bundle()
    breakage(bundle)
    with pytest.raises(BundleRejected) as info:
        validate_bundle(bundle, tmp_path / "work")
    assert info.value.field == field, str(info.value)
    assert reason in info.value.reason, str(info.value)


def test_nan_weights_are_rejected_naming_the_tensor(tmp_path: Path) -> None:
    from adas.detector.bundle import write_bundle
    from adas.detector.model import CenterNet
    from adas.intake.contract import Lineage, Normalization

    model = CenterNet().eval()
    with torch.no_grad():
        next(iter(model.parameters()))[0, 0, 0, 0] = float("nan")
    bundle = write_bundle(
        model,
        tmp_path / "nan",
        version="0.1.0",
        model_name="test-detector",
        task="vehicle-detection-2d",
        lineage=Lineage(training_run_id="r", dataset_tag="d", git_sha="abcdef0"),
        normalization=Normalization(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
    )
    with pytest.raises(BundleRejected) as info:
        validate_bundle(bundle, tmp_path / "work")
    assert info.value.field == "model.pt2"
    assert "NaN" in info.value.reason and "weight '" in info.value.reason
