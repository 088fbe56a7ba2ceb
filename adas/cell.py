"""A target cell: one device x precision combination of the catalog.

The one place that parses and formats the forms a cell takes: the Dagster partition key
(``x86-cpu|int8``: Dagster joins dimension values in alphabetical order of dimension name), the
registry's deployment target (``x86-cpu/int8``), the model pack's prefix
(``models/<task>/<version>/x86-cpu/int8``) and the stored-value path (``device=x86-cpu/precision=int8``).
Nothing else splits or joins these strings.
"""

import re
from dataclasses import dataclass
from typing import Literal, get_args

from adas.catalog import Target, TargetCatalog, require_supported

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
DEVICE_DIMENSION = "device"
PRECISION_DIMENSION = "precision"
_DEVICE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class CellError(ValueError):
    """A string that is not a target cell in the form expected."""


@dataclass(frozen=True, order=True)
class Cell:
    device: str
    precision: str

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise CellError(f"device {self.device!r} must be lowercase letters, digits and '-'")
        if self.precision not in PRECISIONS:
            raise CellError(f"precision {self.precision!r} is not one of {list(PRECISIONS)}")

    @classmethod
    def parse(cls, key: object) -> "Cell":
        """From a partition key (``x86-cpu|int8``), a Dagster ``MultiPartitionKey`` (whose str
        is the same form) or a deployment target (``x86-cpu/int8``)."""
        text = str(key)
        for sep in ("|", "/"):
            device, found, precision = text.partition(sep)
            if found and sep not in precision:
                return cls(device, precision)
        raise CellError(f"{text!r} is not a target cell: expected 'device|precision' or 'device/precision'")

    @classmethod
    def from_target_name(cls, name: str) -> "Cell":
        """From the registry's ``device/precision`` form only."""
        device, found, precision = str(name).partition("/")
        if not found:
            raise CellError(f"{name!r} is not a deployment target (device/precision, e.g. 'orin/int8')")
        try:
            return cls(device, precision)
        except CellError as exc:
            raise CellError(
                f"{name!r} is not a deployment target (device/precision, e.g. 'orin/int8'): {exc}"
            ) from None

    @property
    def key(self) -> str:
        """The partition key, as Dagster writes a two-dimensional key."""
        return f"{self.device}|{self.precision}"

    @property
    def target_name(self) -> str:
        """The registry's deployment target: ``device/precision``."""
        return f"{self.device}/{self.precision}"

    @property
    def path(self) -> str:
        """A folder path naming both dimensions: ``device=<d>/precision=<p>``."""
        return f"{DEVICE_DIMENSION}={self.device}/{PRECISION_DIMENSION}={self.precision}"

    @property
    def dimensions(self) -> dict[str, str]:
        return {DEVICE_DIMENSION: self.device, PRECISION_DIMENSION: self.precision}

    def pack_prefix(self, task: str, version: str) -> str:
        """``models/<task>/<version>/<device>/<precision>``: one model pack per cell."""
        return f"models/{task}/{version}/{self.device}/{self.precision}"

    def target(self, catalog: TargetCatalog) -> Target:
        """The catalog's target of this cell's device (a KeyError names the catalog's devices)."""
        return catalog.target(self.device)

    def require_supported(self, catalog: TargetCatalog) -> Target:
        """The target, or UnsupportedTargetError when the catalog does not offer this precision."""
        return require_supported(catalog, self.device, self.precision)

    def __str__(self) -> str:
        return self.key


def supported_cells(catalog: TargetCatalog) -> list[Cell]:
    return [Cell(d, p) for d, p in catalog.supported_pairs()]
