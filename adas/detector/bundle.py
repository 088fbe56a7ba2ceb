"""Write and load candidate bundles (``model.pt2`` + ``contract.yaml`` + ``lineage.json``).

The model is saved as a ``torch.export`` program with a dynamic batch dimension, with
BatchNorm folded into the convs first (what packaging would do anyway). The contract and
lineage files are serialized from the pydantic models of ``adas.intake.contract``,
so intake validates exactly what is written here.

Packaging turns the loaded program into ONNX with
``torch.onnx.export(load_bundle_model(dir), x, dynamo=False, opset_version=17,
dynamic_axes=...)``: ``tests/detector/test_model_and_bundle.py`` checks that path.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from adas.detector.decoders import decode
from adas.detector.model import INPUT_SHAPE, OUTPUT_NAMES, STRIDE, CenterNet
from adas.detector.postprocess import Detections, with_score_threshold
from adas.detector.preprocess import preprocess
from adas.intake import bundle as intake_bundle
from adas.intake.contract import (
    CONTRACT_FILE,
    LINEAGE_FILE,
    ClassEntry,
    Contract,
    HeatmapPostprocess,
    InputSpec,
    Lineage,
    Normalization,
    OutputSpec,
)
from adas.intake.model import load_model

MODEL_FILE = "model.pt2"
INPUT_NAME = "images"
DEFAULT_CLASSES: tuple[tuple[int, str], ...] = ((1, "car"), (2, "truck"), (3, "motorcycle"))
# Upper bound of the exported dynamic batch (torch.export needs a finite range to reason in;
# the example batch is 2 so that the trace does not specialize on size 1).
MAX_BATCH = 1024

OUTPUT_DESCRIPTIONS = {
    "heatmap": "per-class centre logits at stride 4 (apply sigmoid); channel k is classes[k]",
    "box_size": "box width and height (channel 0 = w, 1 = h) in input pixels, linear (not log), at the centre cell",
    "offset": "sub-cell centre offset (channel 0 = x, 1 = y) in output cells, ~[0, 1); centre = (cell + offset) * stride",
}


def git_sha(repo: str | Path = ".") -> str:
    """``git rev-parse HEAD`` of ``repo``, or ``0000000`` where it has no commit (or no git)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "0000000"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) >= 7 else "0000000"


def build_contract(
    *,
    version: str,
    model_name: str,
    task: str,
    normalization: Normalization,
    classes: Sequence[tuple[int, str]] = DEFAULT_CLASSES,
    score_threshold: float = 0.3,
    nms_iou_threshold: float = 0.5,
    max_detections: int = 100,
    model_format: str = "torch_export",
    model_file: str = MODEL_FILE,
) -> Contract:
    c, h, w = INPUT_SHAPE
    oh, ow = h // STRIDE, w // STRIDE
    channels = {"heatmap": len(classes), "box_size": 2, "offset": 2}
    return Contract(
        task=task,
        model_name=model_name,
        version=version,
        model_file=model_file,
        model_format=model_format,  # type: ignore[arg-type]
        input=InputSpec(name=INPUT_NAME, shape=[-1, c, h, w], dtype="float32", normalization=normalization),
        outputs=[
            OutputSpec(
                name=n, shape=[-1, channels[n], oh, ow], dtype="float32", description=OUTPUT_DESCRIPTIONS[n]
            )
            for n in OUTPUT_NAMES
        ],
        classes=[ClassEntry(id=i, name=n) for i, n in classes],
        postprocess=HeatmapPostprocess(
            stride=STRIDE,
            heatmap_output="heatmap",
            size_output="box_size",
            offset_output="offset",
            score_threshold=score_threshold,
            nms_iou_threshold=nms_iou_threshold,
            max_detections=max_detections,
        ),
    )


def export_program(model: CenterNet) -> torch.export.ExportedProgram:
    """``torch.export`` of a BN-fused copy of ``model`` with a dynamic batch dimension."""
    fused = copy.deepcopy(model).cpu().eval().fuse()
    example = torch.zeros(2, *INPUT_SHAPE)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    return torch.export.export(fused, (example,), dynamic_shapes=({0: batch},), strict=False)


def write_bundle(
    model: CenterNet,
    out_dir: str | Path,
    *,
    version: str,
    model_name: str,
    task: str,
    lineage: Lineage,
    normalization: Normalization,
    classes: Sequence[tuple[int, str]] = DEFAULT_CLASSES,
    score_threshold: float = 0.3,
    nms_iou_threshold: float = 0.5,
    max_detections: int = 100,
) -> Path:
    """Write ``model.pt2``, ``contract.yaml`` and ``lineage.json`` into ``out_dir``; returns it.

    The contract is validated (pydantic) before anything is written.
    """
    contract = build_contract(
        version=version,
        model_name=model_name,
        task=task,
        normalization=normalization,
        classes=classes,
        score_threshold=score_threshold,
        nms_iou_threshold=nms_iou_threshold,
        max_detections=max_detections,
    )
    if model.config.num_classes != len(contract.classes):
        raise ValueError(f"model has {model.config.num_classes} classes, contract {len(contract.classes)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.export.save(export_program(model), out / contract.model_file)
    (out / CONTRACT_FILE).write_text(yaml.safe_dump(contract.model_dump(mode="json"), sort_keys=False))
    (out / LINEAGE_FILE).write_text(lineage.model_dump_json(indent=2) + "\n")
    return out


def read_contract(bundle_dir: str | Path) -> Contract:
    """The bundle's contract; errors name the file and field (intake's reader)."""
    return intake_bundle.read_contract(Path(bundle_dir))


def read_lineage(bundle_dir: str | Path) -> Lineage:
    return intake_bundle.read_lineage(Path(bundle_dir))


def load_bundle_model(bundle_dir: str | Path) -> nn.Module:
    """The bundle's model as a callable module (eval mode) returning the contract's outputs in order.

    For tools and tests on bundles this code wrote itself (trusted): it loads the program in
    this process. The platform never does that with a candidate: intake and packaging load it
    only in the sandbox (``adas.intake.inspect_worker``, ``adas.packaging.model_worker``).
    """
    return load_model(Path(bundle_dir), read_contract(bundle_dir))


@torch.no_grad()
def run_detector(
    model: nn.Module,
    frames_uint8: np.ndarray,
    contract: Contract,
    batch_size: int = 64,
    score_threshold: float | None = None,
) -> list[Detections]:
    """uint8 RGB source frames [N, h, w, 3] -> ``Detections`` per frame in source-frame pixels,
    through the contract's preprocess (resize, colour, normalization) and its kind's decoder
    (``score_threshold`` overrides the contract's). Any model family: CenterNet, dense, ..."""
    post = with_score_threshold(contract.postprocess, score_threshold)
    class_ids = [c.id for c in contract.classes]
    names = [o.name for o in contract.outputs]
    was_training = bool(getattr(model, "training", False))
    if isinstance(model, nn.Module):
        model.eval()
    results: list[Detections] = []
    try:
        for s in range(0, len(frames_uint8), batch_size):
            x, geometry = preprocess(frames_uint8[s : s + batch_size], contract.input)
            outs = model(torch.from_numpy(x))
            if isinstance(outs, dict):  # named outputs (an ONNX program, a dict-returning module)
                raw = {n: np.asarray(outs[n]) for n in names}
            else:
                seq = outs if isinstance(outs, (tuple, list)) else [outs]
                raw = {n: o.numpy() for n, o in zip(names, seq, strict=True)}
            results.extend(
                decode(raw, post, class_ids, geometry=geometry, input_hw=contract.input.height_width)
            )
    finally:
        if isinstance(model, nn.Module) and was_training:
            model.train()
    return results
