"""The sandboxed half of intake: load the candidate's model, check its weights, run a smoke forward.

Run by :func:`adas.intake.bundle.inspect_model` as
``python -m adas.intake.inspect_worker`` inside :mod:`adas.sandbox` (no network, read-only
file system, the bundle read-only, one writable scratch directory), started ahead of its job
(:class:`adas.sandbox.Standby`): it imports torch and ONNX Runtime, says it is ready, and waits
for one request (the contract) on its stdin; by then the parent has filled its (read-only)
bundle folder. The audit hook goes in after those imports and before the model file is touched.
It does one job and exits. After the smoke forward, the model's outputs on a probe batch are
checked against what the contract declares (:mod:`adas.intake.probe`). The result is one JSON
line: the parameter count and output shapes, or the refusal (field, reason).
"""

import importlib
import json
import sys

from adas.intake.contract import Contract
from adas.intake.files import BundleRejected
from adas.intake.model import ONNX_PRELOAD, check_finite_weights, load_model, named_outputs, smoke_forward
from adas.intake.probe import check_probe_outputs, probe_batch
from adas.sandbox import RESULT_PREFIX
from adas.sandbox_guard import SandboxViolation, bundle_dir, install, scratch_dir, violations

_MAX_REQUEST_BYTES = 1 << 20


def main() -> int:
    # torch's own start-up reads files and loads libraries: done before the guard goes in, and
    # before the job (and so any byte of the bundle) arrives.
    import torch

    for name in ONNX_PRELOAD:
        importlib.import_module(name)
    print(RESULT_PREFIX + json.dumps({"ready": True}), flush=True)
    line = sys.stdin.buffer.readline(_MAX_REQUEST_BYTES)
    if not line.strip():
        return 0  # stopped before a job came
    contract = Contract.model_validate_json(json.loads(line)["contract"])
    sys.dont_write_bytecode = True  # imports after this point never write .pyc files
    install(str(scratch_dir()))
    try:
        module = load_model(bundle_dir(), contract)
        params = check_finite_weights(module, contract.model_file)
        if params == 0:
            raise BundleRejected(contract.model_file, "has no floating-point weights")
        shapes = smoke_forward(module, contract)
        probe = probe_batch(contract)
        with torch.no_grad():
            outputs = named_outputs(module(torch.from_numpy(probe)), contract)
        check_probe_outputs({k: v.detach().numpy() for k, v in outputs.items()}, contract, len(probe))
        result: dict = {"parameter_count": params, "output_shapes": shapes}
    except SandboxViolation as exc:
        result = {"field": contract.model_file, "reason": str(exc)}
    except BundleRejected as exc:
        result = {"field": exc.field, "reason": exc.reason}
    except Exception as exc:  # the model's own failure, reported as a refusal of the bundle
        result = {"field": contract.model_file, "reason": f"{type(exc).__name__}: {str(exc)[:300]}"}
    if violations and "reason" not in result:
        result = {"field": contract.model_file, "reason": f"the model tried to {violations[0]}"}
    elif violations:
        result["reason"] = f"the model tried to {violations[0]} ({result['reason']})"
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
