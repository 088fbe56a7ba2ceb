"""A corpus of malicious and malformed bundles, each built from a good one by one change.

Every entry is ``(name, build, field, reason)``: ``build(bundle, outside)`` breaks a copy of the
template bundle (``outside`` is a folder outside the bundle, for links and payload targets);
intake must refuse it with a :class:`BundleRejected` whose field contains ``field`` and whose
reason contains ``reason``.
"""

import io
import os
import pickle
import socket
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from adas.detector.model import CenterNet

Build = Callable[[Path, Path], None]
PAYLOAD_MARK = "pwned"


class _Payload:
    """Pickles into a call of ``os.system`` that would write ``target``."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.target}",))


class _Exec:
    def __reduce__(self) -> tuple:
        return (exec, ("open('/tmp/pwned-exec', 'w').write('x')",))


def _pickle(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=2)


def _torch_save_zip(payload: bytes) -> bytes:
    """A torch.save-style archive whose data.pkl is ``payload``."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")
    return out.getvalue()


def _rewrite_pt2(bundle: Path, replace: dict[str, bytes]) -> None:
    """Rewrite the bundle's model.pt2 with some archive entries replaced or added."""
    path = bundle / "model.pt2"
    src = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        names = src.namelist()
        for name in names:
            z.writestr(name, replace.get(name, src.read(name)))
        for name, data in replace.items():
            if name not in names:
                z.writestr(name, data)
    path.write_bytes(out.getvalue())


def _entry(bundle: Path, suffix: str) -> str:
    return next(n for n in zipfile.ZipFile(bundle / "model.pt2").namelist() if n.endswith(suffix))


def _contract(bundle: Path, edit: Callable[[dict], None]) -> None:
    path = bundle / "contract.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _contract_text(bundle: Path, edit: Callable[[str], str]) -> None:
    path = bundle / "contract.yaml"
    path.write_text(edit(path.read_text()))


def _lineage_text(bundle: Path, text: str) -> None:
    (bundle / "lineage.json").write_text(text)


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def _socket(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()


class WritingForward(torch.nn.Module):
    """A TorchScript model whose forward maps (and so creates) a file outside the bundle."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.net = CenterNet().eval()
        self.target = target

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        leak = torch.from_file(self.target, shared=True, size=4)
        heat, size, offset = self.net(x)
        return heat + leak.sum() * 0, size, offset


def _torchscript_writer(bundle: Path, outside: Path) -> None:
    scripted = torch.jit.script(WritingForward(str(outside / PAYLOAD_MARK)))
    scripted.save(str(bundle / "model.ts"))
    (bundle / "model.pt2").unlink()
    _contract(bundle, lambda d: d.update(model_file="model.ts", model_format="torchscript"))


def corpus() -> list[tuple[str, Build, str, str]]:
    big = "x" * 1000
    return [
        # --- the file system -------------------------------------------------------------------
        (
            "symlink-to-passwd",
            lambda b, o: (b / "notes.txt").symlink_to("/etc/passwd"),
            "notes.txt",
            "symbolic link",
        ),
        ("deep-symlink", lambda b, o: _deep_link(b), "a/b/key", "symbolic link"),
        ("symlinked-folder", lambda b, o: (b / "docs").symlink_to(o), "docs", "symbolic link"),
        ("dangling-symlink", lambda b, o: (b / "gone").symlink_to(b / "nowhere"), "gone", "symbolic link"),
        ("looping-symlink", lambda b, o: (b / "loop").symlink_to(b / "loop"), "loop", "symbolic link"),
        ("hard-link", lambda b, o: os.link(_outside_file(o), b / "key.pem"), "key.pem", "hard link"),
        ("fifo", lambda b, o: os.mkfifo(b / "pipe"), "pipe", "FIFO"),
        ("socket", lambda b, o: _socket(b / "sock"), "sock", "socket"),
        ("deep-folders", lambda b, o: (b / "1/2/3/4/5/6").mkdir(parents=True), "1/2/3/4", "nested deeper"),
        (
            "many-files",
            lambda b, o: [(b / f"f{i:03d}").write_text("x") for i in range(70)],
            "bundle",
            "more than 64 files",
        ),
        ("huge-file", lambda b, o: _sparse(b / "weights.bin", 600 << 20), "weights.bin", "over the"),
        (
            "huge-total",
            lambda b, o: [_sparse(b / f"part{i}", 400 << 20) for i in range(3)],
            "bundle",
            "more than",
        ),
        ("newline-in-name", lambda b, o: (b / "evil\nname").write_text("x"), "evil", "control character"),
        ("undecodable-name", lambda b, o: _bytes_name(b), "name", "not valid UTF-8"),
        ("long-name", lambda b, o: (b / ("n" * 200)).write_text("x"), "...", "longer than 128"),
        # --- contract.yaml ---------------------------------------------------------------------
        (
            "contract-not-utf8",
            lambda b, o: (b / "contract.yaml").write_bytes(b"task: \xff\xfe\n"),
            "contract.yaml",
            "not UTF-8",
        ),
        (
            "contract-too-big",
            lambda b, o: _contract_text(b, lambda t: t + "#" * 70_000 + "\n"),
            "contract.yaml",
            "over the 65536-byte limit",
        ),
        (
            "duplicate-key",
            lambda b, o: _contract_text(b, lambda t: t + "task: other-task\n"),
            "contract.yaml: task",
            "duplicate key",
        ),
        (
            "alias-bomb",
            lambda b, o: _contract_text(b, lambda t: t + _alias_bomb()),
            "contract.yaml",
            "YAML aliases",
        ),
        (
            "deep-yaml",
            lambda b, o: _contract_text(b, lambda t: t + "extra: " + "[" * 40 + "]" * 40 + "\n"),
            "contract.yaml",
            "nests deeper",
        ),
        (
            "long-string",
            lambda b, o: _contract(b, lambda d: d.update(model_name=big)),
            "contract.yaml: model_name",
            "string of 1000 characters",
        ),
        (
            "task-trailing-newline",
            lambda b, o: _contract(b, lambda d: d.update(task="vehicle-detection-2d\n")),
            "contract.yaml: task",
            "lowercase letters",
        ),
        (
            "version-trailing-newline",
            lambda b, o: _contract(b, lambda d: d.update(version="0.1.0\n")),
            "contract.yaml: version",
            "not a semantic version",
        ),
        (
            "long-task",
            lambda b, o: _contract(b, lambda d: d.update(task="t" * 80)),
            "contract.yaml: task",
            "1-64",
        ),
        (
            "nan-normalization",
            lambda b, o: _contract_text(b, lambda t: t.replace("scale: 0.00392156862745098", "scale: .nan")),
            "contract.yaml: input.normalization.scale",
            "finite",
        ),
        (
            "inf-std",
            lambda b, o: _contract(b, lambda d: d["input"]["normalization"].update(std=[float("inf"), 1, 1])),
            "contract.yaml: input.normalization.std",
            "finite",
        ),
        (
            "huge-class-id",
            lambda b, o: _contract(b, lambda d: d["classes"][0].update(id=10**30)),
            "contract.yaml",
            "out of range",
        ),
        (
            "bad-stride",
            lambda b, o: _contract(b, lambda d: d["postprocess"].update(stride=8)),
            "contract.yaml",
            "stride 8 does not fit",
        ),
        (
            "absurd-input",
            lambda b, o: _contract(b, lambda d: d["input"].update(shape=[-1, 3, 100000, 100000])),
            "contract.yaml: input.shape",
            "at most 16384",
        ),
        ("input-too-large", lambda b, o: _huge_input(b), "contract.yaml: input.shape", "over the limit"),
        (
            "model-file-traversal",
            lambda b, o: _contract(b, lambda d: d.update(model_file="../model.pt2")),
            "contract.yaml: model_file",
            "plain file name",
        ),
        (
            "nan-threshold",
            lambda b, o: _contract_text(
                b, lambda t: t.replace("score_threshold: 0.3", "score_threshold: .nan")
            ),
            "contract.yaml: postprocess.score_threshold",
            "finite",
        ),
        (
            "unknown-field",
            lambda b, o: _contract(b, lambda d: d.update(run_this="rm -rf /")),
            "contract.yaml: run_this",
            "Extra inputs",
        ),
        (
            "unknown-format",
            lambda b, o: _contract(b, lambda d: d.update(model_format="pickle")),
            "contract.yaml: model_format",
            "Input should be",
        ),
        # --- lineage.json ----------------------------------------------------------------------
        ("lineage-list", lambda b, o: _lineage_text(b, "[1, 2]"), "lineage.json", "expected an object"),
        (
            "lineage-deep",
            lambda b, o: _lineage_text(b, "[" * 5000 + "]" * 5000),
            "lineage.json",
            "nests deeper",
        ),
        (
            "lineage-nan",
            lambda b, o: _lineage_text(
                b, '{"training_run_id": "r", "dataset_tag": "d", "git_sha": "abcdef0", "loss": NaN}'
            ),
            "lineage.json",
            "NaN",
        ),
        (
            "lineage-sha-newline",
            lambda b, o: _lineage_text(
                b, '{"training_run_id": "r", "dataset_tag": "d", "git_sha": "abcdef0\\n"}'
            ),
            "lineage.json: git_sha",
            "git commit SHA",
        ),
        (
            "lineage-huge-string",
            lambda b, o: _lineage_text(
                b, '{"training_run_id": "' + big + '", "dataset_tag": "d", "git_sha": "abcdef0"}'
            ),
            "lineage.json: training_run_id",
            "string of 1000",
        ),
        # --- the model file --------------------------------------------------------------------
        (
            "pickle-in-sample-inputs",
            lambda b, o: _rewrite_pt2(
                b, {_entry(b, "sample_inputs/model.pt"): _torch_save_zip(_pickle(_Payload(o / PAYLOAD_MARK)))}
            ),
            "sample_inputs/model.pt!archive/data.pkl",
            "would call posix.system",
        ),
        (
            "pickle-as-weight",
            lambda b, o: _rewrite_pt2(
                b, {_entry(b, "weights/weight_0"): _pickle(_Payload(o / PAYLOAD_MARK))}
            ),
            "weights/weight_0",
            "would call posix.system",
        ),
        (
            "opaque-constant",
            lambda b, o: _rewrite_pt2(b, {"model/data/constants/constant_0": _pickle(_Exec())}),
            "constants/constant_0",
            "__builtin__.exec",
        ),
        (
            "truncated-model",
            lambda b, o: (b / "model.pt2").write_bytes((b / "model.pt2").read_bytes()[:2000]),
            "model.pt2",
            "cannot be loaded",
        ),
        (
            "checksum-mismatch",
            lambda b, o: (b / "SHA256SUMS").write_text("0" * 64 + "  model.pt2\n"),
            "model.pt2",
            "sha256 mismatch",
        ),
        ("torchscript-writes-a-file", _torchscript_writer, "", "Read-only file system"),
    ]


def _deep_link(bundle: Path) -> None:
    (bundle / "a/b").mkdir(parents=True)
    (bundle / "a/b/key").symlink_to(Path.home() / ".ssh" / "id_rsa")


def _outside_file(outside: Path) -> Path:
    target = outside / "signing-key.pem"
    target.write_text("-----BEGIN PRIVATE KEY-----\nsecret\n")
    return target


def _bytes_name(bundle: Path) -> None:
    with open(os.path.join(os.fsencode(bundle), b"name\xff"), "wb") as f:
        f.write(b"x")


def _alias_bomb() -> str:
    lines = ["bomb0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"bomb{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def _huge_input(bundle: Path) -> None:
    def edit(d: dict) -> None:
        d["input"].update(shape=[-1, 3, 8192, 8192])
        for o in d["outputs"]:
            o.update(shape=[-1, o["shape"][1], 2048, 2048])

    _contract(bundle, edit)
