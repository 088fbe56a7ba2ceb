"""Parse a bundle's ``contract.yaml`` and ``lineage.json`` as untrusted text.

Beyond syntax, refuse what a careless or hostile file can do to a parser: bytes that are not
UTF-8, duplicate keys (YAML keeps the last one silently), alias bombs, nesting deep enough to
exhaust the stack, and strings long enough to bloat every report they are copied into.
"""

import json
import math
from typing import Any

import yaml

from adas.intake.files import BundleRejected, IntakeLimits


def _text(data: bytes, file: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleRejected(file, f"is not UTF-8 text (invalid byte at offset {exc.start})") from exc


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, counts aliases and bounds nesting."""

    limits: IntakeLimits
    file: str

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > self.limits.max_yaml_aliases:
                raise BundleRejected(self.file, f"uses more than {self.limits.max_yaml_aliases} YAML aliases")
        self._depth += 1
        if self._depth > self.limits.max_nesting:
            mark = self.peek_event().start_mark
            raise BundleRejected(
                self.file, f"nests deeper than {self.limits.max_nesting} levels (line {mark.line + 1})"
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                raise BundleRejected(
                    self.file, f"line {key_node.start_mark.line + 1}: a key must be a scalar"
                )
            if key in seen:
                raise BundleRejected(
                    f"{self.file}: {key}",
                    f"duplicate key (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(data: bytes, file: str, limits: IntakeLimits) -> Any:
    text = _text(data, file)
    loader_cls = type("_Loader", (_StrictLoader,), {"limits": limits, "file": file})
    loader = loader_cls(text)
    try:
        value = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BundleRejected(file, f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    finally:
        loader.dispose()
    check_values(value, file, limits)
    return value


def parse_json(data: bytes, file: str, limits: IntakeLimits) -> Any:
    text = _text(data, file)
    depth = 0
    for ch in text:  # json's parser recurses: refuse deep nesting before it runs
        if ch in "[{":
            depth += 1
            if depth > limits.max_nesting:
                raise BundleRejected(file, f"nests deeper than {limits.max_nesting} levels")
        elif ch in "]}":
            depth -= 1
    try:
        value = json.loads(text, parse_constant=lambda name: _no_constant(name, file))
    except json.JSONDecodeError as exc:
        raise BundleRejected(file, f"not valid JSON at line {exc.lineno}: {exc.msg}") from exc
    check_values(value, file, limits)
    return value


def _no_constant(name: str, file: str) -> float:
    raise BundleRejected(file, f"holds {name}, which is not a number JSON allows")


def check_values(value: Any, file: str, limits: IntakeLimits, path: str = "") -> None:
    """Bounded strings and finite numbers everywhere in a parsed document."""
    where = f"{file}: {path}" if path else file
    if isinstance(value, str):
        if len(value) > limits.max_string_length:
            raise BundleRejected(
                where, f"a string of {len(value)} characters (limit {limits.max_string_length})"
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise BundleRejected(where, f"{value} is not a finite number")
    elif isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > 2**53:
            raise BundleRejected(where, f"{value} is out of range")
    elif isinstance(value, dict):
        for k, v in value.items():
            check_values(k, file, limits, path)
            check_values(v, file, limits, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_values(v, file, limits, f"{path}[{i}]")
