"""Write a Triton Inference Server model repository for a detector contract.

Layout (``<m>`` is the contract's ``model_name``, ``<v>`` the repository version)::

    <out>/inference_config.json
    <out>/<m>/config.pbtxt, <v>/README.txt           ensemble: frames -> boxes/scores/classes
    <out>/<m>_preprocess/config.pbtxt, <v>/model.py  python: uint8 NHWC frames of any size ->
                                                     the model tensor (stretch or letterbox,
                                                     colour, normalization) + geometry
                                        <v>/frame_preprocess.py, model_feeds.py (vendored)
    <out>/<m>_engine/config.pbtxt, <v>/model.onnx | model.plan [+ model.py]
    <out>/<m>_postprocess/config.pbtxt, <v>/model.py python: the contract's decoder (any kind),
                                                     boxes in source pixels, padded outputs
                                         <v>/adas/detector/...       (vendored decoders)

Clients send raw frames to the ensemble and get boxes back in their own frame's pixels. The
python-backend models are self-contained (the server's environment does not have our package):
the numpy pre- and post-processing is vendored next to each ``model.py`` with a header naming its
source and sha256, and the contract's input and postprocess live in the ``config.pbtxt``
parameters as JSON. Every postprocess kind (heatmap, dense, queries, detections, ragged) is served
by the same postprocess model; a ``ragged`` engine has no batch axis on its outputs, so it is
served unbatched.

``serving`` picks the engine step: ``tensorrt`` (``tensorrt_plan``, GPU), ``onnxruntime``
(``onnxruntime_onnx`` backend, production CPU) or ``python-onnxruntime`` (a python-backend
model running ONNX Runtime: what the PyPI-installable server can run locally).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from adas.intake.contract import Contract
from adas.packaging.inference_config import (
    FRAMES_INPUT,
    INFERENCE_CONFIG_FILE,
    build_inference_config,
    write_json_atomic,
)
from adas.packaging.triton_pbtxt import (
    dynamic_batching,
    instance_group,
    model_header,
    parameters_text,
    quoted,
    tensor_entry,
    tensor_list,
)
from adas.storage import sha256_file

Serving = Literal["python-onnxruntime", "onnxruntime", "tensorrt"]
RuntimeName = Literal["onnxruntime", "tensorrt"]
SERVING_MODES: tuple[str, ...] = ("python-onnxruntime", "onnxruntime", "tensorrt")

_PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = _PACKAGE_DIR / "triton_models"
_DETECTOR_DIR = _PACKAGE_DIR.parent / "detector"
# Vendored sources: (source in this repo, file name inside the Triton model version dir).
VENDORED_PREPROCESS: tuple[tuple[Path, str], ...] = (
    (_DETECTOR_DIR / "preprocess.py", "frame_preprocess.py"),
    (_PACKAGE_DIR.parent / "intake" / "feeds.py", "model_feeds.py"),
)
# The decoders as a package (their own absolute imports resolve against the version folder).
_CORE_DIR = _DETECTOR_DIR.parent
VENDORED_DECODERS: tuple[tuple[Path, str], ...] = tuple(
    (src, src.relative_to(_CORE_DIR.parent).as_posix())
    for src in (
        _CORE_DIR / "__init__.py",
        _DETECTOR_DIR / "__init__.py",
        _DETECTOR_DIR / "postprocess.py",
        _DETECTOR_DIR / "preprocess.py",
        *sorted((_DETECTOR_DIR / "decoders").glob("*.py")),
        _CORE_DIR / "intake" / "__init__.py",
        _CORE_DIR / "intake" / "labels.py",
    )
)
GEOMETRY = "geometry"  # preprocess -> postprocess: source_h, source_w, scale_x, scale_y, pad_x, pad_y
VENDOR_HEADER_LINES = 4
ENSEMBLE_PLACEHOLDER = "README.txt"

_TRITON_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "uint8": "TYPE_UINT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
}


@dataclass(frozen=True)
class RepositoryFile:
    """One file of the repository: path relative to the repository root, sha256, size."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class TritonRepository:
    """What ``write_triton_repository`` wrote."""

    root: Path
    ensemble: str
    preprocess: str
    engine: str
    postprocess: str
    serving: str
    version: int
    max_batch_size: int
    files: tuple[RepositoryFile, ...] = field(default_factory=tuple)

    @property
    def model_names(self) -> list[str]:
        return [self.ensemble, self.preprocess, self.engine, self.postprocess]

    @property
    def inference_config_path(self) -> Path:
        return self.root / INFERENCE_CONFIG_FILE

    def sha256(self, relative_path: str) -> str:
        for f in self.files:
            if f.path == relative_path:
                return f.sha256
        raise KeyError(f"{relative_path} is not in the repository {self.root}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "ensemble": self.ensemble,
            "models": self.model_names,
            "serving": self.serving,
            "version": self.version,
            "max_batch_size": self.max_batch_size,
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files],
        }


def vendored_source(source: Path) -> str:
    """``source``'s text under a header saying where it comes from and its sha256."""
    data = source.read_bytes()
    rel = source.relative_to(_PACKAGE_DIR.parent.parent).as_posix()
    header = (
        f"# Vendored verbatim from {rel} (sha256 {hashlib.sha256(data).hexdigest()})\n"
        "# by adas.packaging.triton_repository: the Triton server's Python environment does\n"
        "# not have the adas package. Do not edit: regenerate the repository instead.\n"
        "\n"
    )
    assert header.count("\n") == VENDOR_HEADER_LINES
    return header + data.decode("utf-8")


# --------------------------------------------------------------------------- the writer


def _check_model_file(model_file: Path, serving: str, runtime: str) -> None:
    if serving not in SERVING_MODES:
        raise ValueError(f"serving must be one of {SERVING_MODES}, got {serving!r}")
    if runtime not in ("onnxruntime", "tensorrt"):
        raise ValueError(f"runtime must be 'onnxruntime' or 'tensorrt', got {runtime!r}")
    if serving == "tensorrt" and runtime != "tensorrt":
        raise ValueError("serving='tensorrt' needs runtime='tensorrt' (a serialized TensorRT engine)")
    if not model_file.is_file():
        raise FileNotFoundError(f"model file {model_file} does not exist")
    is_onnx = model_file.suffix.lower() == ".onnx"
    if serving == "tensorrt" and is_onnx:
        raise ValueError(f"serving='tensorrt' needs a serialized engine (.plan), got ONNX {model_file}")
    if serving != "tensorrt" and not is_onnx:
        raise ValueError(f"serving={serving!r} needs an ONNX model (.onnx), got {model_file}")


def write_triton_repository(
    out_dir: str | Path,
    contract: Contract,
    model_file: str | Path,
    *,
    device: str,
    precision: str,
    runtime: RuntimeName,
    serving: Serving,
    version: int = 1,
    max_batch_size: int = 8,
    instance_count: int = 1,
    gpus: Sequence[int] = (0,),
    intra_op_threads: int = 1,
    step_instance_count: int | None = None,
    max_queue_delay_us: int = 200,
) -> TritonRepository:
    """Write the model repository for ``contract`` into ``out_dir`` (replaced if it exists).

    ``instance_count`` engine instances (each with ``intra_op_threads`` ONNX Runtime threads on
    CPU), ``step_instance_count`` (default: the same) of the preprocess and postprocess models;
    every batched step waits at most ``max_queue_delay_us`` to gather a batch.

    The repository is assembled in a sibling temporary directory and moved into place, so a
    crash never leaves a half-written repository where a server would load it.
    """
    model_file = Path(model_file)
    _check_model_file(model_file, serving, runtime)
    if version < 1:
        raise ValueError(f"version must be >= 1, got {version}")
    if not 1 <= max_batch_size <= 1024:
        raise ValueError(f"max_batch_size must be in [1, 1024], got {max_batch_size}")
    if not 1 <= intra_op_threads <= 64:
        raise ValueError(f"intra_op_threads must be in [1, 64], got {intra_op_threads}")
    step_instance_count = instance_count if step_instance_count is None else step_instance_count
    for name, count in (("instance_count", instance_count), ("step_instance_count", step_instance_count)):
        if not 1 <= count <= 64:
            raise ValueError(f"{name} must be in [1, 64], got {count}")
    if not 0 <= max_queue_delay_us <= 1_000_000:
        raise ValueError(f"max_queue_delay_us must be in [0, 1000000], got {max_queue_delay_us}")
    if contract.input.dtype not in ("float32", "float16"):
        raise ValueError(
            f"the preprocess step produces float tensors; the contract wants {contract.input.dtype}"
        )

    out = Path(out_dir).resolve()
    # Replacing is only safe for a directory this writer made (or an empty one): never wipe
    # an unrelated directory handed in by mistake.
    if out.exists() and any(out.iterdir()) and not (out / INFERENCE_CONFIG_FILE).is_file():
        raise FileExistsError(
            f"{out} exists and is not a Triton repository written here: refusing to replace it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write_models(
            tmp,
            contract,
            model_file,
            serving=serving,
            version=version,
            max_batch_size=max_batch_size,
            instance_count=instance_count,
            gpus=gpus,
            intra_op_threads=intra_op_threads,
            step_instance_count=step_instance_count,
            max_queue_delay_us=max_queue_delay_us,
        )
        config = build_inference_config(contract, device, precision, runtime)
        config["serving"] = {
            "server": "triton",
            "ensemble": contract.model_name,
            "engine_step": serving,
            "repository_version": version,
            "max_batch_size": max_batch_size,
        }
        write_json_atomic(tmp / INFERENCE_CONFIG_FILE, config)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    files = tuple(
        RepositoryFile(p.relative_to(out).as_posix(), *sha256_file(p))  # sha256, size
        for p in sorted(out.rglob("*"))
        if p.is_file()
    )
    m = contract.model_name
    return TritonRepository(
        root=out,
        ensemble=m,
        preprocess=f"{m}_preprocess",
        engine=f"{m}_engine",
        postprocess=f"{m}_postprocess",
        serving=serving,
        version=version,
        max_batch_size=max_batch_size,
        files=files,
    )


def _write_models(
    root: Path,
    contract: Contract,
    model_file: Path,
    *,
    serving: str,
    version: int,
    max_batch_size: int,
    instance_count: int,
    gpus: Sequence[int],
    intra_op_threads: int,
    step_instance_count: int,
    max_queue_delay_us: int,
) -> None:
    m = contract.model_name
    names = {"pre": f"{m}_preprocess", "engine": f"{m}_engine", "post": f"{m}_postprocess"}
    spec = contract.input
    _, c, h, w = spec.shape
    in_type = _TRITON_TYPES[spec.dtype]
    post = contract.postprocess
    k = post.max_detections
    # A ragged engine's outputs are rows of the whole batch ([M, F]), not per image: Triton can
    # batch only tensors whose first axis is the batch, so that engine is served unbatched.
    batched = post.kind != "ragged"
    engine_batch = max_batch_size if batched else 0
    model_outputs = [
        (o.name, _TRITON_TYPES[o.dtype], list(o.shape[1:] if batched else o.shape)) for o in contract.outputs
    ]
    decoded = list(dict.fromkeys(post.output_fields().values()))  # the outputs the decoder reads
    engine_inputs = [(spec.name, in_type, [c, h, w])]
    if spec.source_size is not None:
        engine_inputs.append((spec.source_size.name, _TRITON_TYPES[spec.source_size.dtype], [2]))

    def version_dir(model: str) -> Path:
        d = root / model / str(version)
        d.mkdir(parents=True)
        return d

    def with_batch(dims: list[int]) -> list[int]:
        return dims if batched else [-1, *dims]

    # Preprocess: batched like the engine, so that dynamic batching can group frames early.
    d = version_dir(names["pre"])
    shutil.copyfile(TEMPLATES_DIR / "preprocess.py", d / "model.py")
    for src, name in VENDORED_PREPROCESS:
        (d / name).write_text(vendored_source(src))
    norm = spec.normalization
    pre_outputs = [*engine_inputs, (GEOMETRY, "TYPE_FP32", [6])]
    (root / names["pre"] / "config.pbtxt").write_text(
        model_header(names["pre"], 'backend: "python"', max_batch_size)
        + tensor_list("input", [tensor_entry(FRAMES_INPUT, "TYPE_UINT8", [-1, -1, c])])
        + tensor_list("output", [tensor_entry(n, t, dims) for n, t, dims in pre_outputs])
        + dynamic_batching(max_batch_size, max_queue_delay_us)
        + instance_group(False, step_instance_count, gpus)
        + parameters_text(
            {
                # scale/mean/std stay separate too: the smoke test reads them back from the server.
                "scale": repr(float(norm.scale)),
                "mean": json.dumps([float(v) for v in norm.mean]),
                "std": json.dumps([float(v) for v in norm.std]),
                "input_spec": json.dumps(spec.model_dump(mode="json"), sort_keys=True),
            }
        )
    )

    # Engine.
    d = version_dir(names["engine"])
    engine_io = tensor_list(
        "input", [tensor_entry(n, t, with_batch(dims)) for n, t, dims in engine_inputs]
    ) + tensor_list("output", [tensor_entry(n, t, dims) for n, t, dims in model_outputs])
    if serving == "tensorrt":
        shutil.copyfile(model_file, d / "model.plan")
        head = model_header(names["engine"], 'platform: "tensorrt_plan"', engine_batch)
        head += 'default_model_filename: "model.plan"\n'
        tail = instance_group(True, instance_count, gpus)
    elif serving == "onnxruntime":
        shutil.copyfile(model_file, d / "model.onnx")
        head = model_header(names["engine"], 'platform: "onnxruntime_onnx"', engine_batch)
        head += 'default_model_filename: "model.onnx"\n'
        # ORT backend knobs (same meaning as the python stand-in's intra_op_threads).
        tail = instance_group(False, instance_count, gpus) + parameters_text(
            {"intra_op_thread_count": str(intra_op_threads), "inter_op_thread_count": "1"}
        )
    else:
        shutil.copyfile(model_file, d / "model.onnx")
        shutil.copyfile(TEMPLATES_DIR / "onnxruntime_engine.py", d / "model.py")
        head = model_header(names["engine"], 'backend: "python"', engine_batch)
        tail = instance_group(False, instance_count, gpus) + parameters_text(
            {"model_file": "model.onnx", "intra_op_threads": str(intra_op_threads)}
        )
    (root / names["engine"] / "config.pbtxt").write_text(
        head + engine_io + (dynamic_batching(max_batch_size, max_queue_delay_us) if batched else "") + tail
    )

    # Postprocess: batched like the engine (dynamic batching hands it several requests, decoded
    # as one batch); ``num_detections`` is one number per image, declared ``dims: [1]`` and
    # reshaped to ``[]`` so that the ensemble returns a plain ``[batch]`` vector. A ragged engine's
    # outputs are not per image: its postprocess is unbatched (explicit -1 batch axes).
    d = version_dir(names["post"])
    shutil.copyfile(TEMPLATES_DIR / "postprocess.py", d / "model.py")
    for src, rel in VENDORED_DECODERS:
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(vendored_source(src))
    out_defs = [
        ("boxes", "TYPE_FP32", [-1, k, 4]),
        ("scores", "TYPE_FP32", [-1, k]),
        ("classes", "TYPE_INT32", [-1, k]),
        ("num_detections", "TYPE_INT32", [-1]),
    ]
    heads = {n: (t, dims) for n, t, dims in model_outputs}
    if batched:
        post_inputs = [tensor_entry(n, heads[n][0], heads[n][1]) for n in decoded]
        post_inputs.append(tensor_entry(GEOMETRY, "TYPE_FP32", [6]))
        post_outputs = [
            tensor_entry(n, t, dims[1:]) if dims[1:] else tensor_entry(n, t, [1], reshape=[])
            for n, t, dims in out_defs
        ]
        post_batching = dynamic_batching(max_batch_size, max_queue_delay_us)
    else:
        post_inputs = [tensor_entry(n, heads[n][0], heads[n][1]) for n in decoded]
        post_inputs.append(tensor_entry(GEOMETRY, "TYPE_FP32", [-1, 6]))
        post_outputs = [tensor_entry(n, t, dims) for n, t, dims in out_defs]
        post_batching = ""
    (root / names["post"] / "config.pbtxt").write_text(
        model_header(names["post"], 'backend: "python"', engine_batch)
        + tensor_list("input", post_inputs)
        + tensor_list("output", post_outputs)
        + post_batching
        + instance_group(False, step_instance_count, gpus)
        + parameters_text(
            {
                "postprocess": json.dumps(post.model_dump(mode="json"), sort_keys=True),
                "class_ids": json.dumps([cls.id for cls in contract.classes]),
                "input_hw": json.dumps([h, w]),
            }
        )
    )

    # Ensemble: not batched itself (its batch axis is explicit), its steps batch on their own.
    # Triton wants a version directory even for an ensemble; a small file keeps it alive
    # through object stores and archives that drop empty directories.
    (version_dir(m) / ENSEMBLE_PLACEHOLDER).write_text(
        "Ensemble version directory: the ensemble has no model file; config.pbtxt wires its steps.\n"
    )

    def step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
        imap = " ".join(f"input_map {{ key: {quoted(k_)} value: {quoted(v)} }}" for k_, v in inputs.items())
        omap = " ".join(f"output_map {{ key: {quoted(k_)} value: {quoted(v)} }}" for k_, v in outputs.items())
        return f"    {{ model_name: {quoted(model)} model_version: {version} {imap} {omap} }}"

    # Tensors between steps get step-scoped names in the ensemble: a model output may well be
    # called "scores" or "boxes", like the ensemble's own outputs (a tensor may be written once).
    def pre(n: str) -> str:
        return f"preprocess.{n}"

    def raw(n: str) -> str:
        return f"engine.{n}"

    steps = [
        step(names["pre"], {FRAMES_INPUT: FRAMES_INPUT}, {n: pre(n) for n, _, _ in pre_outputs}),
        step(names["engine"], {n: pre(n) for n, _, _ in engine_inputs}, {n: raw(n) for n in decoded}),
        step(
            names["post"],
            {**{n: raw(n) for n in decoded}, GEOMETRY: pre(GEOMETRY)},
            {n: n for n, _, _ in out_defs},
        ),
    ]
    # A batched postprocess hands the ensemble ``num_detections`` as [batch, 1] (its declared
    # dims): the ensemble gives clients the contract's plain [batch] vector.
    ensemble_outputs = [
        tensor_entry(n, t, dims, reshape=[-1, 1] if batched and len(dims) == 1 else None)
        for n, t, dims in out_defs
    ]
    (root / m / "config.pbtxt").write_text(
        model_header(m, 'platform: "ensemble"', 0)
        + tensor_list("input", [tensor_entry(FRAMES_INPUT, "TYPE_UINT8", [-1, -1, -1, c])])
        + tensor_list("output", ensemble_outputs)
        + "ensemble_scheduling {\n  step [\n"
        + ",\n".join(steps)
        + "\n  ]\n}\n"
    )
