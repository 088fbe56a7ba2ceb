"""Refuse model files whose pickles would do more than rebuild tensors, before anything loads them.

``torch.export.load`` and ``torch.load`` unpickle parts of a ``.pt2`` (sample inputs, constants,
custom objects, weights stored as pickles) and torch may retry with ``weights_only=False``; a
pickle can call any importable function. Every pickle stream in the archive, at any depth of
nested archives, is read by a maintained scanner (picklescan) for the callables it would
import, and each one must be on the allowlist below: tensor and storage rebuilders and plain
containers. The refusal names the archive entry and the callable.
"""

import io
import zipfile
from pathlib import Path

from picklescan.scanner import scan_pickle_bytes

from adas.intake.files import BundleRejected

# Callables a tensor-only pickle needs (torch.save of tensors, TorchScript constants).
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_qtensor"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        ("torch", "Size"),
        ("torch", "Tensor"),
        ("torch", "device"),
        ("torch.nn.parameter", "Parameter"),
        ("torch.storage", "UntypedStorage"),
        ("torch.jit._pickle", "build_intlist"),
        ("torch.jit._pickle", "build_tensorlist"),
        ("torch.jit._pickle", "build_doublelist"),
        ("torch.jit._pickle", "build_boollist"),
        ("torch.jit._pickle", "restore_type_tag"),
        *(
            ("torch", f"{kind}Storage")
            for kind in (
                "Float",
                "Double",
                "Half",
                "BFloat16",
                "Long",
                "Int",
                "Short",
                "Char",
                "Byte",
                "Bool",
            )
        ),
        *(
            ("torch", dtype)
            for dtype in (
                "float32",
                "float16",
                "bfloat16",
                "float64",
                "int64",
                "int32",
                "int8",
                "uint8",
                "bool",
            )
        ),
    }
)
_MAX_NESTING = 3
_PICKLE_PROTOCOLS = {2, 3, 4, 5}


def _is_pickle(name: str, data: bytes) -> bool:
    return name.endswith((".pkl", ".pickle")) or (
        len(data) > 2 and data[0] == 0x80 and data[1] in _PICKLE_PROTOCOLS
    )


def scan_model_file(path: Path, entry_name: str, model_format: str | None = None) -> int:
    """Scan every pickle stream inside the model file; return how many were scanned.

    A ``torch_export`` or ``torchscript`` model is a zip archive: one that is not (truncated, so
    its central directory is gone, or not a torch file at all) is refused here, before the
    sandbox is started, since no load could succeed. Every entry is read in full (CRC checked).
    """
    data = Path(path).read_bytes()
    if model_format in ("torch_export", "torchscript") and not zipfile.is_zipfile(io.BytesIO(data)):
        raise BundleRejected(
            entry_name,
            f"cannot be loaded as {model_format}: not a zip archive (no end of central directory: "
            "truncated, or not a torch.export / TorchScript file)",
        )
    return _scan(data, entry_name, 0)


def _scan(data: bytes, where: str, depth: int) -> int:
    if zipfile.is_zipfile(io.BytesIO(data)):
        if depth >= _MAX_NESTING:
            raise BundleRejected(where, f"archives nested deeper than {_MAX_NESTING} levels")
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            count = 0
            for info in archive.infolist():
                if info.is_dir():
                    continue
                count += _scan(archive.read(info), f"{where}!{info.filename}", depth + 1)
            return count
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise BundleRejected(where, f"is a corrupt archive: {exc}") from exc
    if not _is_pickle(where, data):
        return 0
    result = scan_pickle_bytes(io.BytesIO(data), where)
    if result.scan_err:
        raise BundleRejected(where, "holds a pickle the scanner cannot parse; refused rather than loaded")
    for g in result.globals:
        # ``__torch__.*`` names TorchScript classes: TorchScript's own (C++) unpickler resolves
        # them in the archive's compiled code, never by importing Python.
        if g.module.startswith("__torch__.") or g.module == "__torch__":
            continue
        if (g.module, g.name) not in ALLOWED_GLOBALS:
            raise BundleRejected(
                where,
                f"holds a pickle that would call {g.module}.{g.name}; only tensor data is allowed in a bundle",
            )
    return 1
