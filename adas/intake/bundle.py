"""Validate a candidate checkpoint bundle against its contract.

Every failure raises :class:`BundleRejected` naming the file and field at fault, so a person
reading ``inbox/rejected/<bundle>/REJECTED.txt`` knows what to fix without reading code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from adas.intake.contract import CONTRACT_FILE, LINEAGE_FILE, Contract, Lineage

CHECKSUMS_FILE = "SHA256SUMS"
_CHUNK = 1 << 20


class BundleRejected(ValueError):
    """The bundle breaks its contract; ``field`` names where (``file: path.to.field``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class BundleDigest:
    """Per-file sha256 and the bundle hash over (relative path, file hash) pairs."""

    sha256: str
    files: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ValidatedBundle:
    path: Path
    contract: Contract
    lineage: Lineage
    digest: BundleDigest
    parameter_count: int
    output_shapes: dict[str, list[int]]


def digest_bundle(path: Path) -> BundleDigest:
    """Hash every file; the bundle hash ignores the folder's own name, so a re-drop matches."""
    files: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for p in sorted(q for q in Path(path).rglob("*") if q.is_file()):
        rel = p.relative_to(path).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        h, n = hashlib.sha256(), 0
        with open(p, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                n += len(chunk)
        files[rel], sizes[rel] = h.hexdigest(), n
    bundle = hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in files.items()).encode()).hexdigest()
    return BundleDigest(sha256=bundle, files=files, sizes=sizes)


def _pydantic_reason(file: str, err: ValidationError) -> BundleRejected:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    reasons = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<top level>'}: {e['msg'].removeprefix('Value error, ')}"
        for e in err.errors()
    )
    return BundleRejected(f"{file}: {loc}" if loc else file, reasons)


def read_contract(path: Path) -> Contract:
    file = Path(path) / CONTRACT_FILE
    if not file.is_file():
        raise BundleRejected(CONTRACT_FILE, "missing file: every bundle needs an inference contract")
    try:
        raw = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BundleRejected(CONTRACT_FILE, f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, dict):
        raise BundleRejected(CONTRACT_FILE, f"expected a mapping, got {type(raw).__name__}")
    try:
        return Contract.model_validate(raw)
    except ValidationError as exc:
        raise _pydantic_reason(CONTRACT_FILE, exc) from exc


def read_lineage(path: Path) -> Lineage:
    file = Path(path) / LINEAGE_FILE
    if not file.is_file():
        raise BundleRejected(
            LINEAGE_FILE, "missing file: training run id, dataset tag and git SHA are required"
        )
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise BundleRejected(LINEAGE_FILE, f"not valid JSON at line {exc.lineno}: {exc.msg}") from exc
    if not isinstance(raw, dict):
        raise BundleRejected(LINEAGE_FILE, f"expected an object, got {type(raw).__name__}")
    try:
        return Lineage.model_validate(raw)
    except ValidationError as exc:
        raise _pydantic_reason(LINEAGE_FILE, exc) from exc


def verify_checksums(path: Path, digest: BundleDigest) -> None:
    """If the bundle ships ``SHA256SUMS`` (``sha256sum`` format), every listed file must match."""
    sums = Path(path) / CHECKSUMS_FILE
    if not sums.is_file():
        return
    for n, line in enumerate(sums.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise BundleRejected(f"{CHECKSUMS_FILE}: line {n}", "expected '<sha256>  <file>'")
        expected, name = parts[0], parts[1].lstrip("*")
        if name not in digest.files:
            raise BundleRejected(f"{CHECKSUMS_FILE}: line {n}", f"lists {name}, which is not in the bundle")
        if digest.files[name] != expected:
            raise BundleRejected(
                name,
                f"sha256 mismatch: {CHECKSUMS_FILE} says {expected}, file hashes to {digest.files[name]}",
            )


def load_model(path: Path, contract: Contract) -> Any:
    """Load the bundle's model as a callable torch module (torch imported lazily)."""
    import torch

    file = Path(path) / contract.model_file
    if not file.is_file():
        raise BundleRejected(
            f"{CONTRACT_FILE}: model_file", f"names {contract.model_file!r}, which is not in the bundle"
        )
    try:
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
                f"the model rejected an input of shape {list(x.shape)}: {type(exc).__name__}: {str(exc)[:300]}",
            ) from exc
        outputs = named_outputs(result, contract)
        for i, spec in enumerate(contract.outputs):
            actual = list(outputs[spec.name].shape)
            declared = [batch if d == -1 else d for d in spec.shape]
            if actual != declared:
                raise BundleRejected(
                    f"{CONTRACT_FILE}: outputs[{i}].shape",
                    f"declares {spec.shape} for {spec.name!r} but the model produced {actual} at batch {batch}",
                )
            if not bool(torch.isfinite(outputs[spec.name]).all()):
                raise BundleRejected(spec.name, f"output contains NaN/Inf on a zero input of batch {batch}")
            shapes[spec.name] = [-1, *actual[1:]]
    return shapes


def validate_bundle(path: Path) -> ValidatedBundle:
    """Every check intake runs, cheapest first; raises :class:`BundleRejected` on the first failure."""
    path = Path(path)
    if not path.is_dir():
        raise BundleRejected("bundle", f"{path} is not a directory")
    contract = read_contract(path)
    lineage = read_lineage(path)
    digest = digest_bundle(path)
    verify_checksums(path, digest)
    module = load_model(path, contract)
    params = check_finite_weights(module, contract.model_file)
    if params == 0:
        raise BundleRejected(contract.model_file, "has no floating-point weights")
    shapes = smoke_forward(module, contract)
    return ValidatedBundle(path, contract, lineage, digest, params, shapes)
