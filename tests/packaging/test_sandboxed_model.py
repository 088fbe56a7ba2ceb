"""Packaging runs a candidate's program only in the sandbox, and trusts nothing it sends back.

The bundles here live in an artifact store under ``ADAS_HOME`` (masked inside the sandbox, the
bundle bound back read-only), as packaging fetches them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml

from adas.catalog import load_catalog
from adas.detector.bundle import build_contract, load_bundle_model, read_contract, read_lineage
from adas.intake.contract import CONTRACT_FILE, LINEAGE_FILE, Contract, Lineage, Normalization
from adas.intake.files import BundleRejected
from adas.intake.refs import CandidateRef
from adas.intake.stored import stored_file
from adas.packaging.build import build_engine, export_candidate
from adas.packaging.config import default_packaging_config
from adas.packaging.export import (
    ExportError,
    ExportResult,
    UnsupportedExportOperator,
    export_onnx,
    validate_exported_graph,
)
from adas.packaging.operators import UnsupportedOperatorError
from adas.packaging.sandboxed_model import (
    export_in_sandbox,
    read_reference_output,
    sandboxed_reference,
    stage_in_sandbox,
)
from adas.settings import AdasHome
from adas.storage import LocalArtifactStore

NORMALIZATION = Normalization(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


class _Heads(torch.nn.Module):
    """Three heads of the contract's shapes from one strided conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 7, 4, stride=4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        return y[:, :3], y[:, 3:5], y[:, 5:7]


class _RunningMax(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cummax(x, dim=1)[0]


class _CummaxDetector(torch.nn.Module):
    """A heatmap head ending in an operator ONNX opset 17 cannot express (``aten::cummax``)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _Heads()
        self.head = _RunningMax()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heat, size, offset = self.body(x)
        return self.head(heat), size, offset


class _DetDetector(torch.nn.Module):
    """Exports to ONNX (``Det``), which ONNX Runtime runs and TensorRT's parser does not."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _Heads()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heat, size, offset = self.body(x)
        det = torch.linalg.det(heat[:, 0, :2, :2]).reshape(-1, 1, 1, 1)
        return heat + det * 0, size, offset


class _WritingForward(torch.nn.Module):
    """A TorchScript forward that maps (and so creates) a file outside the bundle: native code,
    which no audit hook sees."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.body = _Heads()
        self.target = target

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        leak = torch.from_file(self.target, shared=True, size=4)
        heat, size, offset = self.body(x)
        return heat + leak.sum() * 0, size, offset


def _write(out: Path, module: torch.nn.Module, *, torchscript: bool = False) -> Path:
    """A bundle holding ``module`` as a ``torch.export`` program (or TorchScript)."""
    out.mkdir(parents=True)
    model_file = "model.ts" if torchscript else "model.pt2"
    contract = build_contract(
        model_name="probe",
        version="0.1.0",
        task="vehicle-detection-2d",
        normalization=NORMALIZATION,
        model_format="torchscript" if torchscript else "torch_export",
        model_file=model_file,
    )
    torch.manual_seed(0)
    module = module.eval()
    if torchscript:
        torch.jit.script(module).save(str(out / model_file))
    else:
        batch = torch.export.Dim("batch", min=1, max=64)
        program = torch.export.export(module, (torch.zeros(2, 3, 96, 384),), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(out / model_file))
    (out / CONTRACT_FILE).write_text(yaml.safe_dump(contract.model_dump(mode="json"), sort_keys=False))
    lineage = Lineage(training_run_id="probe", dataset_tag="sim-test", git_sha="abcdef0")
    (out / LINEAGE_FILE).write_text(lineage.model_dump_json())
    return out


def _candidate(store: LocalArtifactStore, bundle: Path) -> CandidateRef:
    """``bundle`` stored as intake stores a candidate (files under ADAS_HOME, hashes recorded)."""
    contract = read_contract(bundle)
    prefix = f"candidates/{contract.version}-{bundle.name}"
    files = {p.name: stored_file(store, f"{prefix}/{p.name}", p) for p in sorted(bundle.iterdir())}
    return CandidateRef(
        bundle_sha256="0" * 64,
        prefix=prefix,
        files=files,
        contract=contract,
        lineage=read_lineage(bundle),
        parameter_count=1,
        received_at="2026-01-01T00:00:00+00:00",
        source="test",
    )


@pytest.fixture
def store(adas_home: Path) -> LocalArtifactStore:
    return LocalArtifactStore(AdasHome(adas_home).artifacts)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --------------------------------------------------------------------------- containment


@pytest.mark.slow
def test_a_torchscript_forward_that_writes_outside_is_contained_in_every_packaging_step(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "pwned"
    bundle = _write(tmp_path / "bundle", _WritingForward(str(target)), torchscript=True)
    assert not target.exists()
    candidate = _candidate(store, bundle)
    stored_before = _files(Path(store.root))

    # In the sandbox the file cannot be created, so the exporter meets the write as an operator.
    with pytest.raises(ExportError, match=r"operator aten::from_file in _WritingForward\.forward"):
        export_candidate(store, candidate, default_packaging_config())
    with pytest.raises(BundleRejected, match="Read-only file system"):
        stage_in_sandbox(Path(store.fetch(candidate.model.key)).parent, candidate.contract)
    with (
        sandboxed_reference(Path(store.fetch(candidate.model.key)).parent, candidate.contract) as reference,
        pytest.raises(BundleRejected, match="Read-only file system"),
    ):
        reference.run(np.zeros((1, 3, 96, 384), np.float32))

    assert not target.exists() and _files(outside) == []
    assert _files(Path(store.root)) == stored_before  # nothing exported, nothing written beside the bundle


@pytest.mark.slow
def test_export_refuses_a_graph_over_the_sanity_bound_from_the_sandbox(
    bundle: Path, contract: Contract, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match="differs from the torch module"):
        export_in_sandbox(bundle, contract, tmp_path / "model.onnx", max_abs_diff_tolerance=1e-30)
    assert not (tmp_path / "model.onnx").exists()


# --------------------------------------------------------------------------- same results as in-process


@pytest.mark.slow
def test_the_sandboxed_export_is_the_in_process_export(
    exported: ExportResult, bundle: Path, contract: Contract, tmp_path: Path
) -> None:
    in_process = export_onnx(load_bundle_model(bundle), contract, tmp_path / "model.onnx")
    assert exported.sha256 == in_process.sha256
    assert exported.op_histogram == in_process.op_histogram
    assert exported.renamed_nodes == in_process.renamed_nodes
    assert exported.max_abs_diff == pytest.approx(in_process.max_abs_diff, abs=1e-6)


@pytest.mark.slow
def test_staging_in_the_sandbox_reports_parameters_and_finite_ranges(
    bundle: Path, contract: Contract
) -> None:
    staged = stage_in_sandbox(bundle, contract)
    module = load_bundle_model(bundle)
    assert staged.parameter_count == sum(
        t.numel() for t in module.state_dict().values() if t.is_floating_point()
    )
    assert set(staged.output_ranges) == {o.name for o in contract.outputs}
    assert all(np.isfinite(lo) and lo <= hi for lo, hi in staged.output_ranges.values())


# --------------------------------------------------------------------------- named operator failures


@pytest.mark.slow
def test_an_unsupported_operator_fails_export_naming_operator_node_module_target_and_hint(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    candidate = _candidate(store, _write(tmp_path / "cummax", _CummaxDetector()))
    with pytest.raises(UnsupportedExportOperator) as info:
        export_candidate(store, candidate, default_packaging_config())
    err = info.value
    assert isinstance(err, ExportError)  # what the exported_graph asset turns into its failure message
    assert err.operator == "aten::cummax"
    assert err.where == "node cummax in module head (_RunningMax)", err.where
    assert err.target == "ONNX opset 17"
    assert "packaging.onnx.opset" in err.hint
    for part in (err.operator, err.where, err.target, err.hint):
        assert part in str(err), str(err)


@pytest.mark.slow
def test_an_operator_one_runtime_lacks_fails_only_that_cell(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    candidate = _candidate(store, _write(tmp_path / "det", _DetDetector()))
    config = default_packaging_config()
    export = export_candidate(store, candidate, config).ref
    assert export.runtimes_supported == {"onnxruntime": True, "tensorrt": False}
    catalog = load_catalog()

    def build(device: str, precision: str):  # type: ignore[no-untyped-def]
        work = tmp_path / f"{device}-{precision}"
        work.mkdir()
        return build_engine(
            store,
            export,
            device,
            precision,
            catalog=catalog,
            config=config,
            calibration_frames=None,
            workdir=work,
        )

    assert build("x86-cpu", "fp32").ref.runtime == "onnxruntime"  # the CPU cell is built as usual
    with pytest.raises(UnsupportedOperatorError) as info:
        build("t4", "fp16")
    err = info.value
    assert (err.operator, err.target) == ("Det", "t4/fp16")
    assert err.where == "node /body/conv/Det", err.where
    assert "TensorRT" in err.hint and "other targets" in err.hint
    assert str(err).startswith("target t4/fp16: node '/body/conv/Det' uses op 'Det' which tensorrt")
    assert f"hint: {err.hint}" in str(err)


# --------------------------------------------------------------------------- untrusted results


def _mutated(path: Path, tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    model = onnx.load(str(path))
    change(model)
    out = tmp_path / "mutated.onnx"
    out.write_bytes(model.SerializeToString())  # as is: onnx.save would act on external data
    return out


def test_a_graph_from_the_sandbox_is_accepted_only_as_a_clean_export(
    onnx_path: Path, contract: Contract, tmp_path: Path
) -> None:
    assert validate_exported_graph(onnx_path, contract, 17).graph.node

    def external(model: onnx.ModelProto) -> None:
        weight = model.graph.initializer[0]
        weight.data_location = onnx.TensorProto.EXTERNAL
        entry = weight.external_data.add()
        entry.key, entry.value = "location", "/etc/passwd"

    def custom_op(model: onnx.ModelProto) -> None:
        model.graph.node[0].domain = "evil.ops"
        model.opset_import.append(onnx.helper.make_opsetid("evil.ops", 1))

    def swapped_outputs(model: onnx.ModelProto) -> None:
        first, second = onnx.ValueInfoProto(), onnx.ValueInfoProto()
        first.CopyFrom(model.graph.output[0])
        second.CopyFrom(model.graph.output[1])
        model.graph.output[0].CopyFrom(second)
        model.graph.output[1].CopyFrom(first)

    def fixed_batch(model: onnx.ModelProto) -> None:
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1

    cases = [
        (external, "refers to external data"),
        (custom_op, "domain 'evil.ops'"),
        (swapped_outputs, "outputs are \\['box_size', 'heatmap'"),
        (fixed_batch, "fixed batch of 1"),
    ]
    for change, reason in cases:
        with pytest.raises(ExportError, match=reason):
            validate_exported_graph(_mutated(onnx_path, tmp_path, change), contract, 17)
    with pytest.raises(ExportError, match="opset"):
        validate_exported_graph(onnx_path, contract, 18)
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07not a protobuf at all")
    with pytest.raises(ExportError, match="not an ONNX model"):
        validate_exported_graph(tmp_path / "garbage.onnx", contract, 17)


def test_reference_outputs_are_read_as_exact_finite_arrays_only(contract: Contract, tmp_path: Path) -> None:
    spec = contract.outputs[0]  # heatmap [-1, 3, 24, 96] float32
    good = np.zeros((2, *spec.shape[1:]), np.float32)
    np.save(tmp_path / "good.npy", good)
    assert read_reference_output(tmp_path, "good.npy", spec, 2).shape == good.shape

    np.save(tmp_path / "f64.npy", good.astype(np.float64))
    np.save(tmp_path / "rows.npy", good[:1])
    nan = good.copy()
    nan[0, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "link.npy").symlink_to(tmp_path / "good.npy")
    os.link(tmp_path / "good.npy", tmp_path / "hard.npy")
    np.save(tmp_path / "huge.npy", np.zeros((64, *spec.shape[1:]), np.float32))
    cases = {
        "f64.npy": "float64, not float32",
        "rows.npy": r"shape \[1, 3, 24, 96\], expected \[2, 3, 24, 96\]",
        "nan.npy": "1 NaN/Inf",
        "pickled.npy": "unreadable",
        "link.npy": "without following links",
        "hard.npy": "hard link",
        "huge.npy": "over the",
        "missing.npy": "missing",
    }
    for name, reason in cases.items():
        with pytest.raises(BundleRejected, match=reason) as info:
            read_reference_output(tmp_path, name, spec, 2)
        assert info.value.field == spec.name
