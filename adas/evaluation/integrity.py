"""Dataset integrity and leakage guards over the golden manifests.

* **Schema and value ranges** with Great Expectations (1.x, on pandas: it has no polars
  source): unique ids, required fields present, tags within the closed vocabulary, frame size,
  severity 0-5, boxes inside the frame with positive size, annotations pointing at known images
  and categories. Great Expectations takes ~10 s to import, so it is imported inside
  :func:`validate_schema` only; so is pandas (~1 s), which only Great Expectations needs.
* **Scene leakage**: no scene id in two splits (frames of one drive are near-duplicates).
* **Scenario separation**: scenarios held out of some splits (``config/evaluation.yaml``).
* **Temporal separation**: consecutive golden frames of one scene at least ``min_frame_gap_s``
  apart, and timestamps strictly increasing with the frame index.

Every violation names the offending ids (scene ids, image ids). Domain code: no Dagster import.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from adas.datasets.coco import TAG_VALUES
from adas.evaluation.config import IntegritySettings

MAX_NAMED = 20
# The guards :func:`check_integrity` runs, by name (the ``dataset_integrity`` check names).
INTEGRITY_CHECKS: tuple[str, ...] = (
    "manifest_schema",
    "no_scene_leakage",
    "scenario_separation",
    "temporal_separation",
)


@dataclass
class Violation:
    rule: str
    message: str
    ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _named(ids: Iterable[Any], limit: int = MAX_NAMED) -> str:
    ids = list(ids)
    head = ", ".join(str(i) for i in ids[:limit])
    return head + (f" (+{len(ids) - limit} more)" if len(ids) > limit else "")


# --------------------------------------------------------------------------- GE schema


def manifest_tables(manifests: Mapping[str, Mapping[str, Any]]) -> tuple[Any, Any]:
    """(images, annotations) pandas frames over every split, with a ``split`` column."""
    import pandas as pd

    image_cols = (
        "id",
        "file_name",
        "width",
        "height",
        "scene_id",
        "frame_index",
        "timestamp_s",
        *TAG_VALUES,
        "severity",
    )
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for split, coco in manifests.items():
        sizes = {}
        for im in coco.get("images", []):
            images.append({"split": split, **{c: im.get(c) for c in image_cols}})
            sizes[im.get("id")] = (im.get("width"), im.get("height"))
        for a in coco.get("annotations", []):
            bbox = a.get("bbox") or [None] * 4
            x, y, w, h = (list(bbox) + [None] * 4)[:4]
            fw, fh = sizes.get(a.get("image_id"), (None, None))
            anns.append(
                {
                    "split": split,
                    "id": a.get("id"),
                    "image_id": a.get("image_id"),
                    "category_id": a.get("category_id"),
                    "x": x,
                    "y": y,
                    "w": w,
                    "h": h,
                    # Overflow beyond the frame (<= 0 when the box is inside); NaN when the image is unknown.
                    "right_overflow": None if x is None or w is None or fw is None else x + w - fw,
                    "bottom_overflow": None if y is None or h is None or fh is None else y + h - fh,
                    "iscrowd": a.get("iscrowd", 0),
                }
            )
    img_df = pd.DataFrame(images, columns=["split", *image_cols])
    ann_df = pd.DataFrame(
        anns,
        columns=[
            "split",
            "id",
            "image_id",
            "category_id",
            "x",
            "y",
            "w",
            "h",
            "right_overflow",
            "bottom_overflow",
            "iscrowd",
        ],
    )
    return img_df, ann_df


def _suites(
    frame_hw: Sequence[int] | None, image_ids: list[Any], category_ids: list[Any]
) -> dict[str, list[Any]]:
    import great_expectations as gx

    e = gx.expectations
    images: list[Any] = [
        e.ExpectColumnValuesToBeUnique(column="id"),
        e.ExpectColumnValuesToBeUnique(column="file_name"),
        *[
            e.ExpectColumnValuesToNotBeNull(column=c)
            for c in ("id", "file_name", "scene_id", "frame_index", "timestamp_s", *TAG_VALUES)
        ],
        *[
            e.ExpectColumnValuesToBeInSet(column=tag, value_set=list(values))
            for tag, values in TAG_VALUES.items()
        ],
        e.ExpectColumnValuesToBeBetween(column="severity", min_value=0, max_value=5),
        e.ExpectColumnValuesToBeBetween(column="frame_index", min_value=0),
        e.ExpectColumnValuesToBeBetween(column="timestamp_s", min_value=0),
        e.ExpectColumnValuesToMatchRegex(column="file_name", regex=r"^images/[A-Za-z0-9_./-]+\.(?:png|jpg)$"),
    ]
    if frame_hw is not None:
        h, w = frame_hw
        images += [
            e.ExpectColumnValuesToBeBetween(column="height", min_value=h, max_value=h),
            e.ExpectColumnValuesToBeBetween(column="width", min_value=w, max_value=w),
        ]
    annotations: list[Any] = [
        e.ExpectColumnValuesToBeUnique(column="id"),
        *[
            e.ExpectColumnValuesToNotBeNull(column=c)
            for c in ("id", "image_id", "category_id", "x", "y", "w", "h")
        ],
        e.ExpectColumnValuesToBeInSet(column="image_id", value_set=image_ids),
        e.ExpectColumnValuesToBeInSet(column="category_id", value_set=category_ids),
        e.ExpectColumnValuesToBeBetween(column="w", min_value=0, strict_min=True),
        e.ExpectColumnValuesToBeBetween(column="h", min_value=0, strict_min=True),
        e.ExpectColumnValuesToBeBetween(column="x", min_value=0),
        e.ExpectColumnValuesToBeBetween(column="y", min_value=0),
        e.ExpectColumnValuesToBeBetween(column="right_overflow", max_value=0.5),
        e.ExpectColumnValuesToBeBetween(column="bottom_overflow", max_value=0.5),
        e.ExpectColumnValuesToBeInSet(column="iscrowd", value_set=[0, 1]),
    ]
    return {"images": images, "annotations": annotations}


def validate_schema(
    manifests: Mapping[str, Mapping[str, Any]],
    frame_hw: Sequence[int] | None,
    categories: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Great Expectations over the images and annotations of every split.

    Returns ``{"success", "tables": {name: {"success", "rows", "evaluated", "failures": [...]}}}``;
    each failure names the expectation, the column, how many rows broke it and which ids.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    img_df, ann_df = manifest_tables(manifests)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = ctx.data_sources.add_pandas("golden_manifests")
    image_ids = sorted({int(i) for i in img_df["id"].dropna()}) if len(img_df) else []
    suites = _suites(frame_hw, image_ids, [int(c["id"]) for c in categories])
    tables: dict[str, Any] = {}
    for name, df in (("images", img_df), ("annotations", ann_df)):
        asset = source.add_dataframe_asset(name)
        batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
            batch_parameters={"dataframe": df}
        )
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"golden_{name}", expectations=suites[name]))
        result = batch.validate(suite, result_format="COMPLETE")
        failures = []
        for r in result.results:
            if r.success:
                continue
            kw = r.expectation_config.kwargs
            idx = r.result.get("unexpected_index_list") or []
            rows = df.iloc[[int(i) for i in idx[:MAX_NAMED]]] if len(idx) else df.iloc[[]]
            failures.append(
                {
                    "expectation": r.expectation_config.type,
                    "column": kw.get("column"),
                    "unexpected_count": int(r.result.get("unexpected_count") or 0),
                    "unexpected_values": [
                        _plain(v) for v in (r.result.get("partial_unexpected_list") or [])[:MAX_NAMED]
                    ],
                    "ids": [f"{s}:{i}" for s, i in zip(rows["split"], rows["id"], strict=True)],
                    "exception": (r.exception_info or {}).get("exception_message")
                    if isinstance(r.exception_info, dict)
                    else None,
                }
            )
        tables[name] = {
            "success": bool(result.success),
            "rows": len(df),
            "evaluated": len(result.results),
            "failures": failures,
        }
    return {"success": all(t["success"] for t in tables.values()), "tables": tables}


def _plain(v: Any) -> Any:
    try:
        return v.item()  # numpy scalar
    except AttributeError:
        return v


def schema_violations(schema: Mapping[str, Any]) -> list[Violation]:
    out = []
    for table, t in schema["tables"].items():
        for f in t["failures"]:
            out.append(
                Violation(
                    "schema",
                    f"{table}.{f['column']}: {f['expectation']} failed for {f['unexpected_count']} row(s), "
                    f"e.g. values {f['unexpected_values'][:5]} at {_named(f['ids'], 5)}",
                    list(f["ids"]),
                )
            )
    return out


# --------------------------------------------------------------------------- leakage rules


def scene_leakage(manifests: Mapping[str, Mapping[str, Any]]) -> list[Violation]:
    """One violation per scene id found in more than one split."""
    where: dict[str, set[str]] = {}
    for split, coco in manifests.items():
        for im in coco.get("images", []):
            if im.get("scene_id") is not None:
                where.setdefault(str(im["scene_id"]), set()).add(split)
    leaked = {s: sorted(sp) for s, sp in sorted(where.items()) if len(sp) > 1}
    if not leaked:
        return []
    detail = "; ".join(f"{s} in {', '.join(sp)}" for s, sp in list(leaked.items())[:MAX_NAMED])
    return [
        Violation(
            "scene_leakage",
            f"{len(leaked)} scene id(s) appear in more than one split: {detail}"
            + (f" (+{len(leaked) - MAX_NAMED} more)" if len(leaked) > MAX_NAMED else ""),
            list(leaked),
        )
    ]


def separation_violations(
    manifests: Mapping[str, Mapping[str, Any]], settings: IntegritySettings
) -> list[Violation]:
    out = []
    for rule in settings.separation:
        for split in rule.forbidden_in:
            scenes = sorted(
                {
                    str(im.get("scene_id"))
                    for im in manifests.get(split, {}).get("images", [])
                    if im.get("scenario") == rule.scenario
                }
            )
            if scenes:
                out.append(
                    Violation(
                        "scenario_separation",
                        f"scenario {rule.scenario!r} must not appear in {split} ({rule.reason or 'held out'}); "
                        f"found in scene(s) {_named(scenes)}",
                        scenes,
                    )
                )
    return out


def temporal_violations(
    manifests: Mapping[str, Mapping[str, Any]], settings: IntegritySettings
) -> list[Violation]:
    out = []
    for split, gap in settings.min_frame_gap_s.items():
        by_scene: dict[str, list[Mapping[str, Any]]] = {}
        for im in manifests.get(split, {}).get("images", []):
            by_scene.setdefault(str(im.get("scene_id")), []).append(im)
        close: list[str] = []
        unordered: list[str] = []
        for scene, ims in sorted(by_scene.items()):
            ims = sorted(ims, key=lambda i: i.get("frame_index", 0))
            for a, b in itertools.pairwise(ims):
                dt = float(b.get("timestamp_s", 0)) - float(a.get("timestamp_s", 0))
                if dt <= 0:
                    unordered.append(f"{scene}:{a.get('id')}->{b.get('id')}")
                elif dt < gap:
                    close.append(f"{scene}:{a.get('id')}->{b.get('id')}")
        if close:
            out.append(
                Violation(
                    "temporal_separation",
                    f"{split}: {len(close)} consecutive frame pair(s) closer than {gap:g} s "
                    f"(near-duplicates): {_named(close)}",
                    close,
                )
            )
        if unordered:
            out.append(
                Violation(
                    "temporal_order",
                    f"{split}: timestamps not increasing with frame_index: {_named(unordered)}",
                    unordered,
                )
            )
    return out


def check_integrity(
    manifests: Mapping[str, Mapping[str, Any]],
    settings: IntegritySettings,
    frame_hw: Sequence[int] | None,
    categories: Sequence[Mapping[str, Any]],
    run_schema: bool = True,
) -> dict[str, Any]:
    """Every guard; ``{"schema": ..., "checks": {name: {"passed", "violations"}}, "passed"}``."""
    selected = {s: manifests[s] for s in settings.splits if s in manifests}
    missing = [s for s in settings.splits if s not in manifests]
    schema = validate_schema(selected, frame_hw, categories) if run_schema else None
    checks: dict[str, list[Violation]] = {
        "manifest_schema": schema_violations(schema) if schema else [],
        "no_scene_leakage": scene_leakage(selected) if settings.scene_leakage else [],
        "scenario_separation": separation_violations(selected, settings),
        "temporal_separation": temporal_violations(selected, settings),
    }
    if missing:
        checks["manifest_schema"].append(
            Violation("schema", f"manifest(s) missing for split(s): {', '.join(missing)}", missing)
        )
    return {
        "schema": schema,
        "checks": {k: {"passed": not v, "violations": [x.to_dict() for x in v]} for k, v in checks.items()},
        "passed": all(not v for v in checks.values()),
    }
