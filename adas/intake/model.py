"""The candidate's model as torch sees it: load, weight check, smoke forward.

An ONNX bundle is loaded into ONNX Runtime and wrapped as :class:`OnnxProgram`, which is called
like the torch modules (a torch batch in, outputs by name out), so the smoke forward, the probe,
packaging's staging and its FP32 reference are one code path for every model format.

Untrusted code: the platform runs these only inside the sandbox (intake's
:mod:`adas.intake.inspect_worker`, after :mod:`adas.intake.pickle_scan` has cleared every pickle
in the file; packaging's :mod:`adas.packaging.model_worker` and the eager latency worker).
"""

from pathlib import Path
from typing import Any

import numpy as np

from adas.intake.contract import CONTRACT_FILE, Contract
from adas.intake.feeds import model_feeds
from adas.intake.files import BundleRejected

# ONNX Runtime's and onnx's start-up read files and load libraries: a sandboxed worker imports
# these before its audit hook goes in when the bundle is ONNX.
ONNX_PRELOAD = ("onnxruntime", "onnx", "onnx.numpy_helper")


class OnnxProgram:
    """An ONNX model in ONNX Runtime (CPU), called like a torch module: ``program(x)`` with a
    torch (or numpy) batch returns ``{output name: torch tensor}``. The contract's source-size
    input, when declared, is each frame's size given as ``source_hw`` (default: the input's own
    size, i.e. frames already at the model's input size)."""

    def __init__(self, file: Path, contract: Contract, intra_op_threads: int = 2) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self.file = Path(file)
        self.contract = contract
        self.session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in contract.outputs]

    def __call__(self, x: Any, source_hw: tuple[int, int] | None = None) -> dict[str, Any]:
        import torch

        batch = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
        outs = self.session.run(self.output_names, model_feeds(self.contract.input, batch, source_hw))
        return {
            n: torch.from_numpy(np.ascontiguousarray(o)) for n, o in zip(self.output_names, outs, strict=True)
        }

    def state_dict(self) -> dict[str, Any]:
        """The graph's initializers (its weights) as torch tensors."""
        import onnx
        import torch
        from onnx import numpy_helper

        model = onnx.load(str(self.file), load_external_data=False)
        return {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer}

    def eval(self) -> "OnnxProgram":
        return self


def load_model(path: Path, contract: Contract) -> Any:
    """Load the bundle's model as a callable torch module (torch imported lazily)."""
    import torch

    file = Path(path) / contract.model_file
    if not file.is_file():
        raise BundleRejected(
            f"{CONTRACT_FILE}: model_file", f"names {contract.model_file!r}, which is not in the bundle"
        )
    try:
        if contract.model_format == "onnx":
            return OnnxProgram(file, contract)
        if contract.model_format == "torch_export":
            module = torch.export.load(str(file)).module()
            # ExportedProgram.module() installs train()/eval() that raise; exporters call them.
            # The traced graph has no mode-dependent ops, so plain nn.Module flags are right.
            for name in ("train", "eval"):
                if name in vars(module):
                    delattr(module, name)
            return module.eval()
        return torch.jit.load(str(file), map_location="cpu").eval()
    except Exception as exc:
        raise BundleRejected(
            contract.model_file, f"cannot be loaded as {contract.model_format}: {type(exc).__name__}: {exc}"
        ) from exc


def check_finite_weights(module: Any, model_file: str) -> int:
    """Count parameters; reject on the first tensor holding NaN or Inf, naming it."""
    import torch

    total = 0
    for name, tensor in module.state_dict().items():
        if not torch.is_floating_point(tensor):
            continue
        total += tensor.numel()
        nan, inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
        if nan or inf:
            raise BundleRejected(model_file, f"weight {name!r} has {nan} NaN and {inf} Inf values")
    return total


def named_outputs(result: Any, contract: Contract) -> dict[str, Any]:
    names = [o.name for o in contract.outputs]
    if isinstance(result, dict):
        missing = [n for n in names if n not in result]
        if missing:
            raise BundleRejected(
                f"{CONTRACT_FILE}: outputs", f"declares {missing}, the model returned only {sorted(result)}"
            )
        return {n: result[n] for n in names}
    seq = list(result) if isinstance(result, list | tuple) else [result]
    if len(seq) != len(names):
        raise BundleRejected(
            f"{CONTRACT_FILE}: outputs",
            f"declares {len(names)} outputs {names}, the model returned {len(seq)}",
        )
    return dict(zip(names, seq, strict=True))


def smoke_forward(
    module: Any, contract: Contract, batch_sizes: tuple[int, ...] = (1, 2)
) -> dict[str, list[int]]:
    """Run zero batches of the declared input shape; shapes must match the contract, values finite."""
    import torch

    _, c, h, w = contract.input.shape
    shapes: dict[str, list[int]] = {}
    for batch in batch_sizes:
        x = torch.zeros((batch, c, h, w), dtype=getattr(torch, contract.input.dtype))
        try:
            with torch.no_grad():
                result = module(x)
        except Exception as exc:
            raise BundleRejected(
                f"{CONTRACT_FILE}: input.shape",
                f"the model rejected an input of shape {list(x.shape)}: {type(exc).__name__}: {error_gist(exc)}",
            ) from exc
        outputs = named_outputs(result, contract)
        for i, spec in enumerate(contract.outputs):
            actual = list(outputs[spec.name].shape)
            # -1 is the batch on axis 0 and any size elsewhere (a dynamic axis); a ragged kind's
            # axis 0 is its rows over the whole batch, any number of them.
            batch_axis = contract.postprocess.kind != "ragged"
            declared = [
                batch if batch_axis and axis == 0 and d == -1 else d for axis, d in enumerate(spec.shape)
            ]
            if len(actual) != len(declared) or any(
                d not in (-1, a) for d, a in zip(declared, actual, strict=True)
            ):
                raise BundleRejected(
                    f"{CONTRACT_FILE}: outputs[{i}].shape",
                    f"declares {spec.shape} for {spec.name!r} but the model produced {actual} at batch {batch}",
                )
            if not bool(torch.isfinite(outputs[spec.name]).all()):
                raise BundleRejected(spec.name, f"output contains NaN/Inf on a zero input of batch {batch}")
            shapes[spec.name] = [-1, *actual[1:]]
    return shapes


def error_gist(exc: BaseException) -> str:
    """The cause of an error in a few hundred characters: TorchScript puts its own traceback
    first and the error that matters last."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) <= 1:
        return (lines[0] if lines else "")[:300]
    return f"{lines[0][:120]} ... {lines[-1][:240]}"
