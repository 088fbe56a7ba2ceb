"""Schema validation of generated scenario files: OpenSCENARIO 1.3 (``.xosc``) and OpenDRIVE 1.7 (``.xodr``).

``.xosc`` files are validated with the XSD that ``asam-qc-openscenarioxml`` ships (the ASAM
OpenSCENARIO 1.3 schema), ``.xodr`` with the OpenDRIVE 1.7 core schema that ``scenariogeneration``
ships; an invalid file raises ``ScenarioValidationError`` naming file, line and schema message.

Domain code: no dagster import. lxml and scenariogeneration are imported where used (the code
location loads without them).
"""

from __future__ import annotations

import importlib.resources
from functools import cache
from pathlib import Path
from typing import Any


class ScenarioValidationError(ValueError):
    """A generated OpenSCENARIO / OpenDRIVE file does not validate against its schema."""


@cache
def xosc_schema_path() -> Path:
    """The ASAM OpenSCENARIO 1.3 XSD as shipped by ``asam-qc-openscenarioxml``."""
    return Path(str(importlib.resources.files("qc_openscenario.schema") / "1.3.0" / "OpenSCENARIO.xsd"))


@cache
def xodr_schema_path() -> Path:
    """The OpenDRIVE 1.7 core XSD shipped with ``scenariogeneration`` (its wheel installs ``schemas/``)."""
    import scenariogeneration

    return Path(scenariogeneration.__file__).resolve().parents[1] / "schemas" / "opendrive_17_core.xsd"


@cache
def _schema(path: str) -> Any:
    from lxml import etree

    return etree.XMLSchema(etree.parse(path))


def validate_file(path: str | Path) -> None:
    """Validate an ``.xosc`` or ``.xodr`` file; raises ``ScenarioValidationError`` naming the errors."""
    from lxml import etree

    path = Path(path)
    schema_path = xosc_schema_path() if path.suffix == ".xosc" else xodr_schema_path()
    try:
        doc = etree.parse(str(path))
    except etree.XMLSyntaxError as exc:
        raise ScenarioValidationError(f"{path.name}: not well-formed XML: {exc}") from exc
    schema = _schema(str(schema_path))
    if not schema.validate(doc):
        errors = [f"line {e.line}: {e.message}" for e in schema.error_log]
        raise ScenarioValidationError(
            f"{path.name} does not validate against {schema_path.parent.name}/{schema_path.name}: "
            + "; ".join(errors[:5])
            + (f" (+{len(errors) - 5} more)" if len(errors) > 5 else "")
        )
