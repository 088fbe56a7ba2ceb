"""Schema validation of generated scenario files: OpenSCENARIO 1.3 (``.xosc``) and OpenDRIVE 1.7 (``.xodr``).

``.xosc`` files are validated with the XSD that ``asam-qc-openscenarioxml`` ships (the ASAM
OpenSCENARIO 1.3 schema), ``.xodr`` with the OpenDRIVE 1.7 core schema that ``scenariogeneration``
ships; an invalid file raises ``ScenarioValidationError`` naming file, line and schema message.
``quality_issues`` runs the ASAM Quality Checker's OpenSCENARIO XML bundle (``asam-qc-openscenarioxml``,
the checks beyond the XSD: references resolve, names unique per level, operators allowed, ...) on
one ``.xosc``; ``check_quality`` raises on its issues (rule, XPath, message). The bundle runs
in-process through its own ``run_checks`` with ``qc_baselib``'s configuration and result: what
the bundle's CLI (``qc_openscenario -c config.xml``) does, without writing files.

Domain code: no dagster import. lxml and scenariogeneration are imported where used (the code
location loads without them).
"""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass
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


@dataclass(frozen=True)
class QualityIssue:
    """One finding of the ASAM Quality Checker: its rule, where (XPaths) and what."""

    rule_uid: str
    level: str
    description: str
    xpaths: tuple[str, ...]

    def __str__(self) -> str:
        where = ", ".join(self.xpaths) or "(no location)"
        return f"{self.rule_uid} [{self.level}] at {where}: {self.description}"


@cache
def _qc_bundle() -> Any:
    # qc_openscenario.main calls logging.basicConfig(level=INFO) at import: keep the host's
    # root logger as it was (the bundle's per-check INFO lines are not ours to print).
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from qc_openscenario import main
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return main


def quality_issues(path: str | Path) -> list[QualityIssue]:
    """Every issue the ASAM QC OpenSCENARIO XML bundle raises on ``path`` (an ``.xosc``).

    A checker that fails with an exception is an issue too (``level`` "checker error"): a check
    that could not run has not passed. Checkers the bundle skips because they do not apply (a
    ``ParameterValueDistribution`` file has no storyboard) are not issues.
    """
    from qc_baselib import Configuration, Result, StatusType
    from qc_openscenario import constants

    main = _qc_bundle()
    config = Configuration()
    config.set_config_param("InputFile", str(path))
    config.register_checker_bundle(constants.BUNDLE_NAME)
    result = Result()
    result.register_checker_bundle(
        name=constants.BUNDLE_NAME, description="OpenScenario checker bundle",
        version=constants.BUNDLE_VERSION, summary="",
    )
    result.set_result_version(version=constants.BUNDLE_VERSION)
    main.run_checks(config, result)
    issues: list[QualityIssue] = []
    for checker in result.get_checker_results(constants.BUNDLE_NAME):
        if checker.status == StatusType.ERROR:
            issues.append(QualityIssue(checker.checker_id, "checker error", checker.summary, ()))
        for issue in checker.issues:
            xpaths = tuple(x.xpath for loc in issue.locations for x in loc.xml_location)
            details = "; ".join(loc.description for loc in issue.locations if loc.description)
            issues.append(QualityIssue(
                issue.rule_uid, issue.level.name.lower(),
                f"{issue.description}" + (f" ({details})" if details else ""), xpaths,
            ))
    return issues


def check_quality(path: str | Path) -> None:
    """Raise ``ScenarioValidationError`` naming every ASAM QC issue of ``path`` (rule, XPath, message)."""
    issues = quality_issues(path)
    if issues:
        raise ScenarioValidationError(
            f"{Path(path).name} fails the ASAM Quality Checker's OpenSCENARIO checks: "
            + "; ".join(str(i) for i in issues)
        )
