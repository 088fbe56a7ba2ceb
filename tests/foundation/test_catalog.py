from pathlib import Path

import dagster as dg
import pytest
import yaml

from adas.catalog import (
    ConfigError,
    UnsupportedTargetError,
    load_catalog,
    require_supported,
)
from adas.cell import Cell, CellError
from adas_assets.partitions import (
    TARGET_PARTITIONS,
    partition_key,
    supported_partition_keys,
)

TARGETS = Path(__file__).resolve().parents[2] / "config" / "targets.yaml"


def _write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "targets.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def _base() -> dict:
    return yaml.safe_load(TARGETS.read_text())


def test_shipped_catalog_has_required_targets() -> None:
    cat = load_catalog()
    assert {"x86-cpu", "t4", "a10g", "a100", "h100", "orin"} <= set(cat.devices)
    assert cat.target("x86-cpu").runtime == "onnxruntime"
    assert all(cat.target(d).runtime == "tensorrt" for d in ("t4", "a10g", "a100", "h100", "orin"))
    assert all(cat.target(d).kubernetes.gpu_count >= 1 for d in ("t4", "a10g", "a100", "h100", "orin"))
    # FP16 on ONNX Runtime CPU would silently run FP32: it must be marked unsupported.
    assert not cat.supports("x86-cpu", "fp16")


def test_partition_keys_match_catalog() -> None:
    cat = load_catalog()
    keys = set(TARGET_PARTITIONS.get_partition_keys())
    assert len(keys) == len(cat.devices) * len(cat.precisions)
    assert "x86-cpu|fp32" in keys and "orin|int8" in keys
    supported = set(supported_partition_keys(cat))
    assert supported == {f"{d}|{p}" for d, p in cat.supported_pairs()}
    assert "x86-cpu|fp16" not in supported and "orin|fp32" not in supported
    assert Cell.parse(partition_key(Cell("t4", "int8"))) == Cell("t4", "int8")
    assert Cell.parse("orin|fp16") == Cell("orin", "fp16")


def test_cell_is_the_one_codec_of_a_target_cell() -> None:
    cell = Cell.parse("x86-cpu|int8")
    assert (cell.device, cell.precision) == ("x86-cpu", "int8")
    assert cell.key == "x86-cpu|int8" == str(partition_key(cell))
    assert cell.target_name == "x86-cpu/int8"
    assert Cell.from_target_name("x86-cpu/int8") == cell == Cell.parse("x86-cpu/int8")
    assert cell.pack_prefix("detector", "1.3.0") == "models/detector/1.3.0/x86-cpu/int8"
    assert cell.path == "device=x86-cpu/precision=int8"
    assert cell.require_supported(load_catalog()).runtime == "onnxruntime"
    with pytest.raises(UnsupportedTargetError, match="x86-cpu/fp16"):
        Cell("x86-cpu", "fp16").require_supported(load_catalog())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x86-cpu", "is not a target cell"),
        ("x86-cpu|fp64", "precision 'fp64'"),
        ("X86|fp32", "device 'X86'"),
        ("a|b|fp32", "precision 'b|fp32'"),
        ("x86-cpu/int8\n", "precision"),
    ],
)
def test_cell_refuses_malformed_keys(text: str, message: str) -> None:
    with pytest.raises(CellError, match=message):
        Cell.parse(text.replace("\\n", "\n"))


def test_registry_target_names_need_a_slash() -> None:
    with pytest.raises(CellError, match="not a deployment target"):
        Cell.from_target_name("x86-cpu|int8")


def test_require_supported_names_the_catalog() -> None:
    with pytest.raises(
        UnsupportedTargetError, match=r"x86-cpu/fp16 is not a supported combination.*targets.yaml"
    ):
        require_supported(load_catalog(), "x86-cpu", "fp16")
    with pytest.raises(KeyError, match="unknown device 'v100'"):
        require_supported(load_catalog(), "v100", "fp32")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["targets"]["t4"].pop("runtime"), r"targets\.t4\.runtime: Field required"),
        (lambda d: d["targets"]["t4"].update(precisions=["fp64"]), r"targets\.t4\.precisions\.0"),
        (lambda d: d["targets"]["t4"]["latency_budget_ms"].update(p95=-1), r"latency_budget_ms\.p95"),
        (lambda d: d["targets"]["t4"]["kubernetes"].update(gpu_count=0), r"targets\.t4: .*gpu_count >= 1"),
        (lambda d: d["targets"].update({"Bad|Name": d["targets"]["t4"]}), r"device name 'Bad\|Name'"),
        (lambda d: d["targets"]["t4"].update(colour="red"), r"targets\.t4\.colour: Extra inputs"),
        (lambda d: d["targets"]["x86-cpu"].pop("isa"), r"targets\.x86-cpu: .*must declare isa: avx2"),
        (lambda d: d["targets"]["x86-cpu"].update(isa="sse4"), r"targets\.x86-cpu\.isa: Input should be"),
        (
            lambda d: d["targets"]["t4"].update(isa="avx2"),
            r"targets\.t4: .*isa is the instruction set of a CPU",
        ),
        (
            lambda d: d.update(precisions=["fp32"]),
            r"targets\.[a-z0-9]+\.precisions uses \['fp16', 'int8'\], not listed",
        ),
    ],
)
def test_invalid_catalog_errors_name_file_and_field(tmp_path: Path, mutate, message: str) -> None:
    data = _base()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=message) as info:
        load_catalog(path)
    assert str(path) in str(info.value)


def test_unparsable_and_missing_catalog(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_catalog(_write(tmp_path, "targets: [unclosed"))
    with pytest.raises(ConfigError, match="file not found"):
        load_catalog(tmp_path / "nope.yaml")


def test_support_matrix_marks_unsupported_cells() -> None:
    md = load_catalog().support_matrix_markdown()
    row = next(line for line in md.splitlines() if line.startswith("| orin "))
    assert "**unsupported**" in row.split("|")[3]  # the fp32 column


def _requested_after_upstream_update(condition: dg.AutomationCondition) -> set[str]:
    @dg.asset
    def upstream() -> None: ...

    @dg.asset(deps=[upstream], partitions_def=TARGET_PARTITIONS, automation_condition=condition)
    def per_target() -> None: ...

    instance = dg.DagsterInstance.ephemeral()
    first = dg.evaluate_automation_conditions(defs=[upstream, per_target], instance=instance)
    dg.materialize([upstream], instance=instance)
    result = dg.evaluate_automation_conditions(
        defs=[upstream, per_target], instance=instance, cursor=first.cursor
    )
    return set(result.get_requested_partitions(per_target.key))


def test_automation_never_requests_unsupported_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    from adas_assets.automation import eager_on_supported_targets

    monkeypatch.setenv("ADAS_AUTOMATION_DEVICES", "all")
    # Plain eager would ask for every cell of the grid, unsupported ones included...
    assert "orin|fp32" in _requested_after_upstream_update(dg.AutomationCondition.eager())
    # ...the catalog-aware condition asks for exactly the supported ones.
    requested = _requested_after_upstream_update(eager_on_supported_targets())
    assert requested == set(supported_partition_keys(load_catalog()))
    assert "x86-cpu|fp16" not in requested and "orin|fp32" not in requested


def test_local_automation_builds_only_cells_this_machine_can(monkeypatch: pytest.MonkeyPatch) -> None:
    from adas_assets.automation import automated_devices, eager_on_supported_targets

    monkeypatch.delenv("ADAS_AUTOMATION_DEVICES", raising=False)
    monkeypatch.delenv("ADAS_ENV", raising=False)
    assert automated_devices() == ["x86-cpu"]
    assert _requested_after_upstream_update(eager_on_supported_targets()) == {"x86-cpu|fp32", "x86-cpu|int8"}
    monkeypatch.setenv("ADAS_ENV", "production")
    assert set(automated_devices()) == set(load_catalog().devices)
    # The VNNI column is automated in production and where a deployment names it, not on a laptop.
    assert load_catalog().target("x86-cpu-vnni").local_automation is False
    monkeypatch.delenv("ADAS_ENV")
    monkeypatch.setenv("ADAS_AUTOMATION_DEVICES", "x86-cpu,x86-cpu-vnni")
    assert automated_devices() == ["x86-cpu", "x86-cpu-vnni"]
    monkeypatch.setenv("ADAS_AUTOMATION_DEVICES", "x86-cpu, v100")
    with pytest.raises(KeyError, match="unknown device 'v100'"):
        automated_devices()
