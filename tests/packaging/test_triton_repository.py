"""Triton model repository and inference_config.json: layout, configs, vendoring, wiring.

Fast (no server): every config.pbtxt is parsed with Triton's own ``ModelConfig`` protobuf
(shipped in tritonclient), and the python-backend models are run in-process against a stub
``triton_python_backend_utils`` to prove the served pipeline equals the offline one.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

import adas.detector.decoders  # noqa: F401  (every module the postprocess vendors is loaded: see _load_model)
from adas.detector.bundle import build_contract
from adas.detector.model import build_model
from adas.detector.postprocess import Detections, decode
from adas.detector.preprocess import normalize
from adas.intake.contract import Contract, Normalization
from adas.packaging.inference_config import (
    AUGMENTATIONS_NOTE,
    INFERENCE_CONFIG_FILE,
    build_inference_config,
    read_inference_config,
    write_inference_config,
)
from adas.packaging.triton_repository import (
    VENDOR_HEADER_LINES,
    VENDORED_DECODERS,
    VENDORED_PREPROCESS,
    write_triton_repository,
)

NORM = Normalization(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
CPU = {"device": "x86-cpu", "precision": "fp32", "runtime": "onnxruntime"}


def _contract(**kw: Any) -> Contract:
    return build_contract(
        version="1.2.3", model_name="centernet-test", task="vehicle-detection", normalization=NORM, **kw
    )


@pytest.fixture(scope="module")
def contract() -> Contract:
    return _contract(score_threshold=0.3, nms_iou_threshold=0.45, max_detections=50)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory, contract: Contract) -> Path:
    """An untrained (narrow) detector whose heatmap responds to the frame, exported to ONNX."""
    torch.manual_seed(0)
    model = build_model(width=8)
    with torch.no_grad():
        model.heatmap.weight.normal_(std=50.0)  # untrained features are tiny: amplify them
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    torch.onnx.export(
        model.fuse(),
        (torch.zeros(2, *contract.input.shape[1:]),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=[contract.input.name],
        output_names=[o.name for o in contract.outputs],
        dynamic_axes={n: {0: "batch"} for n in [contract.input.name, *(o.name for o in contract.outputs)]},
    )
    return path


def _config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _params(cfg: model_config_pb2.ModelConfig) -> dict[str, str]:
    return {k: v.string_value for k, v in cfg.parameters.items()}


def test_layout_and_file_list(tmp_path: Path, contract: Contract, onnx_file: Path) -> None:
    repo = write_triton_repository(
        tmp_path / "repo", contract, onnx_file, serving="python-onnxruntime", version=3, **CPU
    )
    m = "centernet-test"
    assert repo.model_names == [m, f"{m}_preprocess", f"{m}_engine", f"{m}_postprocess"]
    expected = {
        INFERENCE_CONFIG_FILE,
        f"{m}/config.pbtxt",
        f"{m}/3/README.txt",  # keeps the ensemble's version dir through object stores
        f"{m}_preprocess/config.pbtxt",
        f"{m}_preprocess/3/model.py",
        *(f"{m}_preprocess/3/{name}" for _, name in VENDORED_PREPROCESS),
        f"{m}_engine/config.pbtxt",
        f"{m}_engine/3/model.py",
        f"{m}_engine/3/model.onnx",
        f"{m}_postprocess/config.pbtxt",
        f"{m}_postprocess/3/model.py",
        *(f"{m}_postprocess/3/{rel}" for _, rel in VENDORED_DECODERS),
    }
    assert f"{m}_postprocess/3/adas/detector/decoders/dense.py" in expected
    assert {f.path for f in repo.files} == expected
    for f in repo.files:
        assert f.sha256 == hashlib.sha256((repo.root / f.path).read_bytes()).hexdigest()
    assert repo.sha256(f"{m}_engine/3/model.onnx") == hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    assert json.loads(json.dumps(repo.to_dict()))["models"] == repo.model_names
    # No temporary directory is left beside the repository.
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]


def test_rewrite_replaces_the_repository(tmp_path: Path, contract: Contract, onnx_file: Path) -> None:
    out = tmp_path / "repo"
    write_triton_repository(out, contract, onnx_file, serving="python-onnxruntime", version=1, **CPU)
    repo = write_triton_repository(out, contract, onnx_file, serving="onnxruntime", version=2, **CPU)
    assert not (out / "centernet-test_engine" / "1").exists()
    assert not (out / "centernet-test_engine" / "2" / "model.py").exists()
    assert {f.path for f in repo.files} == {
        p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("serving", ["python-onnxruntime", "onnxruntime", "tensorrt"])
def test_engine_config_per_serving_mode(
    tmp_path: Path, contract: Contract, onnx_file: Path, serving: str
) -> None:
    model_file = onnx_file
    target = dict(CPU)
    if serving == "tensorrt":
        model_file = tmp_path / "engine.plan"
        model_file.write_bytes(b"not a real engine: only copied")
        target = {"device": "t4", "precision": "fp16", "runtime": "tensorrt"}
    repo = write_triton_repository(
        tmp_path / "repo", contract, model_file, serving=serving, max_batch_size=16, gpus=(1,), **target
    )
    engine_dir = repo.root / repo.engine
    cfg = _config(engine_dir / "config.pbtxt")
    assert cfg.name == repo.engine
    assert cfg.max_batch_size == 16
    assert cfg.HasField("dynamic_batching")
    assert list(cfg.dynamic_batching.preferred_batch_size) == [1, 2, 4, 8, 16]
    # Engine IO is the contract's model tensors, batch axis implied by max_batch_size.
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [
        ("images", model_config_pb2.TYPE_FP32, [3, 96, 384])
    ]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [
        ("heatmap", [3, 24, 96]),
        ("box_size", [2, 24, 96]),
        ("offset", [2, 24, 96]),
    ]
    (group,) = cfg.instance_group
    if serving == "tensorrt":
        assert cfg.platform == "tensorrt_plan" and not cfg.backend
        assert cfg.default_model_filename == "model.plan"
        assert (engine_dir / "1" / "model.plan").read_bytes() == model_file.read_bytes()
        assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU and list(group.gpus) == [1]
    elif serving == "onnxruntime":
        assert cfg.platform == "onnxruntime_onnx" and not cfg.backend
        assert cfg.default_model_filename == "model.onnx"
        assert sorted(p.name for p in (engine_dir / "1").iterdir()) == ["model.onnx"]
        assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        assert _params(cfg)["intra_op_thread_count"] == "1"
    else:
        assert cfg.backend == "python" and not cfg.platform
        assert sorted(p.name for p in (engine_dir / "1").iterdir()) == ["model.onnx", "model.py"]
        assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        assert _params(cfg) == {"model_file": "model.onnx", "intra_op_threads": "1"}
    # The numpy steps always run on CPU, and no config names an execution environment: the
    # server harness provides it.
    for name in (repo.preprocess, repo.postprocess):
        (g,) = _config(repo.root / name / "config.pbtxt").instance_group
        assert g.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    for p in repo.root.rglob("config.pbtxt"):
        assert "EXECUTION_ENV_PATH" not in p.read_text()
    assert read_inference_config(repo.root)["target"] == target


def test_preprocess_and_postprocess_configs(tmp_path: Path, contract: Contract, onnx_file: Path) -> None:
    repo = write_triton_repository(
        tmp_path / "repo", contract, onnx_file, serving="python-onnxruntime", **CPU
    )
    pre = _config(repo.root / repo.preprocess / "config.pbtxt")
    assert pre.backend == "python" and pre.max_batch_size == 8
    assert [(i.name, i.data_type, list(i.dims)) for i in pre.input] == [
        ("frames", model_config_pb2.TYPE_UINT8, [-1, -1, 3])  # frames of any size
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in pre.output] == [
        ("images", model_config_pb2.TYPE_FP32, [3, 96, 384]),
        ("geometry", model_config_pb2.TYPE_FP32, [6]),
    ]
    p = _params(pre)
    assert float(p["scale"]) == NORM.scale
    assert json.loads(p["mean"]) == list(NORM.mean) and json.loads(p["std"]) == list(NORM.std)
    assert json.loads(p["input_spec"]) == contract.input.model_dump(mode="json")

    post = _config(repo.root / repo.postprocess / "config.pbtxt")
    # Batched like the engine, so that dynamic batching hands it several requests to decode at once.
    assert post.backend == "python" and post.max_batch_size == 8 and post.HasField("dynamic_batching")
    assert [(i.name, list(i.dims)) for i in post.input] == [
        ("heatmap", [3, 24, 96]),
        ("box_size", [2, 24, 96]),
        ("offset", [2, 24, 96]),
        ("geometry", [6]),
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in post.output] == [
        ("boxes", model_config_pb2.TYPE_FP32, [50, 4]),
        ("scores", model_config_pb2.TYPE_FP32, [50]),
        ("classes", model_config_pb2.TYPE_INT32, [50]),
        ("num_detections", model_config_pb2.TYPE_INT32, [1]),
    ]
    # One count per image: declared [1], seen by the model (and the ensemble) as a [batch] vector.
    (count,) = [o for o in post.output if o.name == "num_detections"]
    assert count.HasField("reshape") and list(count.reshape.shape) == []
    params = _params(post)
    assert set(params) == {"postprocess", "class_ids", "input_hw"}
    assert json.loads(params["postprocess"]) == contract.postprocess.model_dump(mode="json")
    assert json.loads(params["postprocess"])["nms_iou_threshold"] == 0.45
    assert params["class_ids"] == "[1, 2, 3]" and json.loads(params["input_hw"]) == [96, 384]


def test_ensemble_wiring(tmp_path: Path, contract: Contract, onnx_file: Path) -> None:
    repo = write_triton_repository(
        tmp_path / "repo", contract, onnx_file, serving="python-onnxruntime", version=2, **CPU
    )
    ens = _config(repo.root / repo.ensemble / "config.pbtxt")
    assert ens.platform == "ensemble" and ens.max_batch_size == 0
    assert [(i.name, i.data_type, list(i.dims)) for i in ens.input] == [
        ("frames", model_config_pb2.TYPE_UINT8, [-1, -1, -1, 3])
    ]
    assert [o.name for o in ens.output] == ["boxes", "scores", "classes", "num_detections"]
    steps = ens.ensemble_scheduling.step
    assert [(s.model_name, s.model_version) for s in steps] == [
        (repo.preprocess, 2),
        (repo.engine, 2),
        (repo.postprocess, 2),
    ]
    # Every step consumes only tensors that exist by then, under the names its model declares,
    # and the last step produces exactly the ensemble outputs.
    available = {i.name for i in ens.input}
    for step in steps:
        model = _config(repo.root / step.model_name / "config.pbtxt")
        assert set(step.input_map) == {i.name for i in model.input}
        assert set(step.input_map.values()) <= available
        # The engine's outputs are mapped where the decoder reads them (all, for a heatmap).
        assert set(step.output_map) == {o.name for o in model.output}
        available |= set(step.output_map.values())
    assert set(steps[-1].output_map.values()) == {o.name for o in ens.output}


@pytest.mark.parametrize(("source", "vendored"), [*VENDORED_PREPROCESS, *VENDORED_DECODERS])
def test_vendored_sources_are_identical(
    tmp_path: Path, contract: Contract, onnx_file: Path, source: Path, vendored: str
) -> None:
    repo = write_triton_repository(
        tmp_path / "repo", contract, onnx_file, serving="python-onnxruntime", **CPU
    )
    step = repo.preprocess if (source, vendored) in VENDORED_PREPROCESS else repo.postprocess
    text = (repo.root / step / "1" / vendored).read_text()
    header, body = (
        text.splitlines(keepends=True)[:VENDOR_HEADER_LINES],
        text.splitlines(keepends=True)[VENDOR_HEADER_LINES:],
    )
    assert "".join(body) == source.read_text()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    repo_root = Path(__file__).resolve().parents[2]
    assert f"{source.relative_to(repo_root).as_posix()} (sha256 {digest})" in header[0]


@pytest.mark.parametrize("step_name", ["preprocess", "postprocess"])
def test_python_steps_import_only_their_vendored_code(
    tmp_path: Path, contract: Contract, onnx_file: Path, step_name: str
) -> None:
    """The python-backend model imports the vendored modules, which import without our package,
    pydantic or Pillow-less failures (as in the server's environment)."""
    repo = write_triton_repository(
        tmp_path / "repo", contract, onnx_file, serving="python-onnxruntime", **CPU
    )
    step = getattr(repo, step_name)
    model_py = (repo.root / step / "1" / "model.py").read_text()
    module = "frame_preprocess" if step_name == "preprocess" else "adas.detector.decoders"
    assert f"from {module} import" in model_py
    blocked = (
        "import sys\n"
        "for name in ('adas_assets', 'pydantic', 'adas.intake.contract'): sys.modules[name] = None\n"
        f"sys.path.insert(0, {str(repo.root / step / '1')!r})\n"
        f"import {module} as m\n"
        "assert m.__file__.startswith(sys.path[0]), m.__file__\n"
    )
    proc = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(ast.parse(model_py))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not any(m.startswith("adas_assets") for m in imported), imported


def test_inference_config_fields(tmp_path: Path, contract: Contract) -> None:
    path = write_inference_config(tmp_path, contract, "x86-cpu", "int8", "onnxruntime")
    assert path == tmp_path / INFERENCE_CONFIG_FILE
    assert [p.name for p in tmp_path.iterdir()] == [INFERENCE_CONFIG_FILE]  # no temp file left
    cfg = json.loads(path.read_text())
    assert cfg == build_inference_config(contract, "x86-cpu", "int8", "onnxruntime")
    assert cfg["target"] == {"device": "x86-cpu", "precision": "int8", "runtime": "onnxruntime"}
    assert cfg["input"]["raw_frames"] == {
        "name": "frames",
        "dtype": "uint8",
        "triton_dtype": "UINT8",
        "shape": [-1, -1, -1, 3],
        "layout": "NHWC",
        "color": "RGB",
    }
    assert cfg["preprocess"] == {"resize": "stretch", "letterbox": None, "source_size_input": None}
    assert cfg["input"]["model_tensor"]["name"] == "images"
    assert cfg["input"]["model_tensor"]["shape"] == [-1, 3, 96, 384]
    assert cfg["input"]["model_tensor"]["layout"] == "NCHW"
    assert cfg["normalization"]["mean"] == list(NORM.mean) and cfg["normalization"]["scale"] == NORM.scale
    assert cfg["postprocess"]["score_threshold"] == 0.3
    assert cfg["postprocess"]["nms_iou_threshold"] == 0.45
    assert cfg["postprocess"]["kind"] == "heatmap" and cfg["postprocess"]["type"] == "centernet"
    assert cfg["postprocess"]["max_detections"] == 50
    assert [o["name"] for o in cfg["outputs"]] == ["boxes", "scores", "classes", "num_detections"]
    assert cfg["outputs"][0]["shape"] == [-1, 50, 4]
    assert cfg["class_map"] == [
        {"index": 0, "category_id": 1, "name": "car"},
        {"index": 1, "category_id": 2, "name": "truck"},
        {"index": 2, "category_id": 3, "name": "motorcycle"},
    ]
    assert cfg["augmentations"] == AUGMENTATIONS_NOTE
    assert "disabled at inference" in cfg["augmentations"]
    # Overwrite in place (atomic replace), readable through the helper.
    write_inference_config(path, contract, "x86-cpu", "fp32", "onnxruntime")
    assert read_inference_config(tmp_path)["target"]["precision"] == "fp32"


def test_invalid_combinations_are_rejected(tmp_path: Path, contract: Contract, onnx_file: Path) -> None:
    plan = tmp_path / "engine.plan"
    plan.write_bytes(b"x")
    with pytest.raises(ValueError, match="serialized engine"):
        write_triton_repository(
            tmp_path / "a",
            contract,
            onnx_file,
            device="t4",
            precision="fp16",
            runtime="tensorrt",
            serving="tensorrt",
        )
    with pytest.raises(ValueError, match="needs an ONNX model"):
        write_triton_repository(tmp_path / "b", contract, plan, serving="onnxruntime", **CPU)
    with pytest.raises(ValueError, match="needs runtime='tensorrt'"):
        write_triton_repository(tmp_path / "c", contract, plan, serving="tensorrt", **CPU)
    with pytest.raises(ValueError, match="serving must be one of"):
        write_triton_repository(tmp_path / "d", contract, onnx_file, serving="torchscript", **CPU)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        write_triton_repository(
            tmp_path / "e", contract, tmp_path / "missing.onnx", serving="onnxruntime", **CPU
        )
    assert not any((tmp_path / n).exists() for n in "abcde")
    # An unrelated, non-empty directory is never wiped.
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a Triton repository"):
        write_triton_repository(precious, contract, onnx_file, serving="onnxruntime", **CPU)
    assert (precious / "keep.txt").exists()


# ------------------------------------------------------------- python-backend models, in-process


class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class _Response:
    def __init__(self, output_tensors: list[_Tensor] | None = None, error: Any = None) -> None:
        self.tensors = {t.name(): t.as_numpy() for t in output_tensors or []}
        self.error = error


class _Request:
    def __init__(self, **tensors: np.ndarray) -> None:
        self.tensors = tensors


def _fake_pb_utils() -> types.ModuleType:
    mod = types.ModuleType("triton_python_backend_utils")
    mod.Tensor = _Tensor  # type: ignore[attr-defined]
    mod.InferenceResponse = _Response  # type: ignore[attr-defined]
    mod.TritonError = RuntimeError  # type: ignore[attr-defined]
    mod.get_input_tensor_by_name = lambda req, name: _Tensor(name, req.tensors[name])  # type: ignore[attr-defined]
    return mod


def _load_model(model_dir: Path, version: int, monkeypatch: pytest.MonkeyPatch, tag: str) -> Any:
    """Import ``<model_dir>/<version>/model.py`` as the python backend would and initialize it."""
    vdir = model_dir / str(version)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    # The vendored copies must be what runs, not our installed package: forget both for the
    # test (monkeypatch puts ours back afterwards; every vendored name is imported above).
    for stale in [n for n in sys.modules if n in ("frame_preprocess", "adas") or n.startswith("adas.")]:
        monkeypatch.delitem(sys.modules, stale, raising=False)
    spec = importlib.util.spec_from_file_location(f"_triton_model_{tag}", vdir / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setattr(sys, "path", list(sys.path))  # model.py prepends its dir: undo afterwards
    spec.loader.exec_module(module)
    cfg = _config(model_dir / "config.pbtxt")
    from google.protobuf import json_format

    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(json_format.MessageToDict(cfg, preserving_proto_field_name=True)),
            "model_repository": str(model_dir),
            "model_version": str(version),
        }
    )
    return model


def test_python_backend_models_reproduce_the_offline_pipeline(
    tmp_path: Path, contract: Contract, onnx_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = write_triton_repository(
        tmp_path / "repo", contract, onnx_file, serving="python-onnxruntime", **CPU
    )
    pre = _load_model(repo.root / repo.preprocess, 1, monkeypatch, "pre")
    engine = _load_model(repo.root / repo.engine, 1, monkeypatch, "engine")
    post = _load_model(repo.root / repo.postprocess, 1, monkeypatch, "post")

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(3, 96, 384, 3), dtype=np.uint8)
    # Two requests in one execute() call, as dynamic batching would hand them over.
    (r1, r2) = pre.execute([_Request(frames=frames[:1]), _Request(frames=frames[1:])])
    images = np.concatenate([r1.tensors["images"], r2.tensors["images"]])
    np.testing.assert_array_equal(images, normalize(frames, contract.input.normalization))
    e1, e2 = engine.execute([_Request(images=r1.tensors["images"]), _Request(images=r2.tensors["images"])])
    assert e1.tensors["heatmap"].shape == (1, 3, 24, 96) and e2.tensors["heatmap"].shape == (2, 3, 24, 96)
    heads = {n: np.concatenate([e1.tensors[n], e2.tensors[n]]) for n in ("heatmap", "box_size", "offset")}
    geometry = np.concatenate([r1.tensors["geometry"], r2.tensors["geometry"]])
    np.testing.assert_array_equal(geometry, [[96, 384, 1, 1, 0, 0]] * 3)  # stretch at input size: identity
    (out,) = post.execute([_Request(**heads, geometry=geometry)])
    assert out.error is None
    # Requests handed over together by dynamic batching are decoded as one batch and cut back
    # per request: the same answers as one request of all three frames.
    p1, p2 = post.execute(
        [
            _Request(**{n: h[:1] for n, h in heads.items()}, geometry=geometry[:1]),
            _Request(**{n: h[1:] for n, h in heads.items()}, geometry=geometry[1:]),
        ]
    )
    for name, arr in out.tensors.items():
        assert p1.tensors[name].shape[0] == 1 and p2.tensors[name].shape[0] == 2
        np.testing.assert_array_equal(np.concatenate([p1.tensors[name], p2.tensors[name]]), arr)
    # A malformed request among them fails alone.
    good, bad_geometry = post.execute(
        [_Request(**{n: h[:1] for n, h in heads.items()}, geometry=geometry[:1]), _Request(**heads)]
    )
    assert good.error is None and bad_geometry.error is not None and "postprocess" in str(bad_geometry.error)
    np.testing.assert_array_equal(good.tensors["boxes"], out.tensors["boxes"][:1])
    served_decode = type(post).initialize.__globals__["decode"]
    assert served_decode.__code__.co_filename.startswith(str(repo.root)), "the vendored decoder ran"

    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    local = sess.run([o.name for o in contract.outputs], {"images": images})
    expected = decode(
        dict(zip([o.name for o in contract.outputs], local, strict=True)),
        contract.postprocess,
        [c.id for c in contract.classes],
    )
    assert sum(len(d) for d in expected) > 0
    k = contract.postprocess.max_detections
    assert out.tensors["boxes"].shape == (3, k, 4) and out.tensors["classes"].dtype == np.int32
    for i, d in enumerate(expected):
        n = int(out.tensors["num_detections"][i])
        assert n == len(d)
        np.testing.assert_allclose(out.tensors["boxes"][i, :n], d.boxes, atol=1e-4)
        np.testing.assert_allclose(out.tensors["scores"][i, :n], d.scores, atol=1e-5)
        np.testing.assert_array_equal(out.tensors["classes"][i, :n], d.category_ids)
        assert not out.tensors["scores"][i, n:].any()

    # A malformed request fails alone, with an error naming the step.
    (bad,) = pre.execute([_Request(frames=np.zeros((1, 96, 384), np.uint8))])
    assert bad.error is not None and "preprocess" in str(bad.error)


def test_missing_server_is_an_environment_error(tmp_path: Path, contract: Contract, onnx_file: Path) -> None:
    """Without a runnable tritonserver the smoke test raises (not a failed model check)."""
    from adas.packaging.contract_smoke import run_contract_smoke
    from adas.packaging.triton_server import TritonNotInstalledError, TritonServer, triton_available

    empty = tmp_path / "no-venv"
    empty.mkdir()
    assert not triton_available(empty)
    repo = write_triton_repository(
        tmp_path / "repo", contract, onnx_file, serving="python-onnxruntime", **CPU
    )
    with pytest.raises(TritonNotInstalledError, match=r"setup_triton_env\.sh"):
        TritonServer(repo.root, venv=empty).start()
    frames = np.zeros((1, 96, 384, 3), np.uint8)
    with pytest.raises(TritonNotInstalledError):
        run_contract_smoke(repo, contract, frames, [Detections.empty()], venv=empty)


def _dense_and_e2e_bundles(tmp_path: Path) -> dict[str, tuple[Contract, Path]]:
    """Small untrained models of two other kinds, as ONNX with their contracts: a letterboxed
    dense (BFN) detector and a CenterNet with its decode in the graph (packed detections)."""
    from adas.detector.dense_bundle import build_dense_contract, export_dense_onnx
    from adas.detector.dense_model import build_dense_model
    from adas.detector.e2e import e2e_contract, export_e2e_onnx

    torch.manual_seed(0)
    dense = build_dense_model(num_classes=3, width=8).eval()
    with torch.no_grad():  # some candidates above the threshold
        dense.head4.cls_out.bias.fill_(0.0)
        dense.head8.cls_out.bias.fill_(0.0)
    dense_contract = build_dense_contract(
        version="2.0.0", model_name="dense-test", task="t", normalization=NORM,
        classes=[(1, "car"), (2, "truck"), (3, "motorcycle")], num_candidates=dense.config.num_candidates,
        score_threshold=0.3, max_detections=50,
    )  # fmt: skip
    (tmp_path / "dense.onnx").write_bytes(export_dense_onnx(dense))
    centernet = build_model(width=8)
    with torch.no_grad():
        centernet.heatmap.weight.normal_(std=50.0)
    base = _contract(score_threshold=0.3, max_detections=50)
    (tmp_path / "e2e.onnx").write_bytes(export_e2e_onnx(centernet))
    return {
        "dense": (dense_contract, tmp_path / "dense.onnx"),
        "detections": (e2e_contract(base), tmp_path / "e2e.onnx"),
    }


@pytest.mark.parametrize("kind", ["dense", "detections"])
def test_every_kind_is_served_in_source_pixels_like_the_offline_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    from adas.detector.decoders import decode as decode_any
    from adas.detector.preprocess import preprocess

    contract, onnx_path = _dense_and_e2e_bundles(tmp_path)[kind]
    repo = write_triton_repository(
        tmp_path / "repo", contract, onnx_path, serving="python-onnxruntime", **CPU
    )
    pre = _load_model(repo.root / repo.preprocess, 1, monkeypatch, "pre")
    engine = _load_model(repo.root / repo.engine, 1, monkeypatch, "engine")
    post = _load_model(repo.root / repo.postprocess, 1, monkeypatch, "post")

    frames = np.random.default_rng(2).integers(0, 256, size=(2, 96, 384, 3), dtype=np.uint8)
    (p,) = pre.execute([_Request(frames=frames)])
    assert p.error is None, p.error
    x, geometry = preprocess(frames, contract.input)
    np.testing.assert_array_equal(p.tensors[contract.input.name], x)  # letterbox included
    (e,) = engine.execute([_Request(**{contract.input.name: p.tensors[contract.input.name]})])
    (out,) = post.execute([_Request(**e.tensors, geometry=p.tensors["geometry"])])
    assert out.error is None, out.error

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    raw = dict(zip([o.name for o in contract.outputs], sess.run(None, {contract.input.name: x}), strict=True))
    expected = decode_any(raw, contract, geometry=geometry)
    assert sum(len(d) for d in expected) > 0
    for i, d in enumerate(expected):
        n = int(out.tensors["num_detections"][i])
        assert n == len(d)
        np.testing.assert_allclose(out.tensors["boxes"][i, :n], d.boxes, atol=1e-3)
        np.testing.assert_allclose(out.tensors["scores"][i, :n], d.scores, atol=1e-5)
        np.testing.assert_array_equal(out.tensors["classes"][i, :n], d.category_ids)
        # Source-frame pixels: inside the 96x384 frame, whatever the model's input size.
        assert out.tensors["boxes"][i, :n, [1, 3]].max(initial=0) <= 96.0
