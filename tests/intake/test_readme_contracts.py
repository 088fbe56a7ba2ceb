"""Every worked example in the README's "Bring your own detector" section is a valid contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from adas.intake.contract import Contract

README = Path(__file__).resolve().parents[2] / "README.md"


def _examples() -> dict[str, dict]:
    section = README.read_text().split("## Bring your own detector", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n# byod: (\S+)\n(.*?)```", section, flags=re.S)
    return {name: yaml.safe_load(body) for name, body in blocks}


EXAMPLES = _examples()


def test_the_section_has_a_worked_example_per_kind() -> None:
    kinds = {e["postprocess"]["kind"] for name, e in EXAMPLES.items() if name != "common"}
    assert kinds == {"dense", "queries", "detections", "ragged"}
    assert len(EXAMPLES) >= 7


@pytest.mark.parametrize("name", [n for n in EXAMPLES if n != "common"])
def test_each_example_is_a_valid_contract(name: str) -> None:
    contract = Contract.model_validate({**EXAMPLES["common"], **EXAMPLES[name]})
    assert (
        contract.model_format == "onnx" and contract.postprocess.kind == EXAMPLES[name]["postprocess"]["kind"]
    )
