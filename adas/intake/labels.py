"""How many class columns (or distinct labels) a model has under a label map: plain Python, no
pydantic, so that the decoders vendored into the Triton postprocess share it with the contract."""

from __future__ import annotations

from collections.abc import Sequence


def label_columns(mode: str, background_offset: int, class_ids: Sequence[int]) -> int:
    """``index``: the background offset plus one column per class; ``category_id``: enough
    columns to index the largest category id."""
    if mode == "category_id":
        return max(class_ids) + 1
    return background_offset + len(class_ids)
