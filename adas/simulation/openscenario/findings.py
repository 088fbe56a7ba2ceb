"""What makes a scenario not executable: an element outside the supported subset, or an invalid value.

Shared by the OpenSCENARIO and OpenDRIVE readers. Domain code: no dagster import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason a scenario cannot be played, located by the XML path of the element in its file."""

    path: str
    line: int | None
    reason: str
    kind: Literal["unsupported", "invalid"] = "unsupported"

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.path}: {self.reason}"
