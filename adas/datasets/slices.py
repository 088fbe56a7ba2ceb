"""Evaluation slices: named subsets of images selected by their tags (config/slices.yaml).

A slice is ``where: {tag: [allowed values]}``; an image belongs to it when, for every tag listed,
its value is one of the allowed ones (an empty ``where`` selects everything). Tags and values are
the closed vocabulary of :data:`adas.datasets.coco.TAG_VALUES`, so a typo fails at load
time instead of silently producing an empty slice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adas.config_errors import load_yaml_model
from adas.datasets.coco import TAG_VALUES, CocoDataset, image_tags

DEFAULT_SLICES_PATH = Path(__file__).resolve().parents[2] / "config" / "slices.yaml"


class SliceDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_]*$")
    where: dict[str, list[str]] = Field(default_factory=dict)
    critical: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _known_tags(self) -> SliceDef:
        # Validated after the fields so the message can name the slice, not only its list index.
        for tag, values in self.where.items():
            if tag not in TAG_VALUES:
                raise ValueError(
                    f"slice {self.name!r}: unknown tag {tag!r} in 'where' (allowed tags: {', '.join(TAG_VALUES)})"
                )
            if not values:
                raise ValueError(f"slice {self.name!r}: tag {tag!r} lists no values")
            bad = [v for v in values if v not in TAG_VALUES[tag]]
            if bad:
                raise ValueError(
                    f"slice {self.name!r}: unknown value(s) {bad} for tag {tag!r} "
                    f"(allowed: {', '.join(TAG_VALUES[tag])})"
                )
        return self

    def matches(self, tags: dict[str, str]) -> bool:
        return all(tags.get(tag) in values for tag, values in self.where.items())


class SliceCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    slices: list[SliceDef] = Field(min_length=1)

    @field_validator("slices")
    @classmethod
    def _unique_names(cls, slices: list[SliceDef]) -> list[SliceDef]:
        seen: set[str] = set()
        for s in slices:
            if s.name in seen:
                raise ValueError(f"duplicate slice name {s.name!r}")
            seen.add(s.name)
        return slices

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.slices]

    @property
    def critical(self) -> list[str]:
        return [s.name for s in self.slices if s.critical]

    def get(self, name: str) -> SliceDef:
        for s in self.slices:
            if s.name == name:
                return s
        raise KeyError(f"unknown slice {name!r}; known: {', '.join(self.names)}")

    def slices_for(self, image: dict[str, Any]) -> list[str]:
        """Names of the slices an image entry belongs to, in catalog order."""
        tags = image_tags(image)
        return [s.name for s in self.slices if s.matches(tags)]

    def image_ids(self, coco: CocoDataset | dict[str, Any], slice_name: str) -> list[int]:
        """Ids of the images of ``coco`` in the slice, in manifest order."""
        s = self.get(slice_name)
        return [img["id"] for img in coco["images"] if s.matches(image_tags(img))]

    def counts(self, coco: CocoDataset | dict[str, Any]) -> dict[str, int]:
        """Number of images per slice."""
        out = dict.fromkeys(self.names, 0)
        for img in coco["images"]:
            for name in self.slices_for(img):
                out[name] += 1
        return out


def load_slices(path: Path | str = DEFAULT_SLICES_PATH) -> SliceCatalog:
    """Load and validate a slices file; raises ConfigError naming the file, slice and field."""
    return load_yaml_model(Path(path), SliceCatalog)
