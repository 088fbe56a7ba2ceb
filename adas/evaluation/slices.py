"""Slice evaluation: COCO metrics per slice of ``slices.yaml``, deltas vs production, parquet.

Values are fractions in [0, 1]; a number that cannot be measured (no ground truth in a slice, a
class absent from it, no production baseline) is ``null`` in the table, never NaN or -1.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from adas.datasets.slices import SliceCatalog
from adas.detector.coco_metrics import coco_metrics

METRICS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR100")
# A change smaller than both bands is reported as unchanged (noise on a few hundred frames).
UNCHANGED_BAND = 0.01  # relative
UNCHANGED_POINTS = 0.005  # absolute (0.5 AP points)


@dataclass(frozen=True)
class SliceSpec:
    name: str
    image_ids: list[int]
    critical: bool = False
    description: str = ""


def catalog_slices(catalog: SliceCatalog, coco: Mapping[str, Any]) -> list[SliceSpec]:
    return [
        SliceSpec(s.name, [int(i) for i in catalog.image_ids(dict(coco), s.name)], s.critical, s.description)
        for s in catalog.slices
    ]


def _defined(v: float | None) -> float | None:
    return None if v is None or v < 0 else float(v)


def slice_metrics(
    gt: Mapping[str, Any], records: Sequence[Mapping[str, Any]], slices: Sequence[SliceSpec]
) -> dict[str, dict[str, Any]]:
    """slice name -> coco_metrics on that slice's images (fractions, -1 where undefined)."""
    return {s.name: coco_metrics(dict(gt), list(records), image_ids=s.image_ids) for s in slices}


def slice_table(
    gt: Mapping[str, Any],
    candidate: Mapping[str, Mapping[str, Any]],
    slices: Sequence[SliceSpec],
    production: Mapping[str, Mapping[str, Any]] | None = None,
) -> pl.DataFrame:
    """One row per slice: candidate metrics, per-class AP, production AP and the deltas.

    ``candidate`` / ``production`` are :func:`slice_metrics` outputs on the same slices.
    """
    class_names = [str(c["name"]) for c in gt["categories"]]
    rows = []
    for s in slices:
        m = candidate[s.name]
        row: dict[str, Any] = {
            "slice": s.name,
            "critical": s.critical,
            "images": int(m["num_images"]),
            "objects": int(m["num_gt"]),
            "detections": int(m["num_detections"]),
        }
        for k in METRICS:
            row[k] = _defined(m[k])
        for c in class_names:
            row[f"AP_{c}"] = _defined(m["per_class_AP"].get(c))
        p = production.get(s.name) if production is not None else None
        prod_ap = _defined(p["AP"]) if p is not None else None
        prod_ap50 = _defined(p["AP50"]) if p is not None else None
        row["production_AP"] = prod_ap
        row["production_AP50"] = prod_ap50
        ap = row["AP"]
        row["delta_AP"] = None if ap is None or prod_ap is None else ap - prod_ap
        row["delta_AP50"] = None if row["AP50"] is None or prod_ap50 is None else row["AP50"] - prod_ap50
        row["relative_delta_AP"] = (
            None if row["delta_AP"] is None or not prod_ap else row["delta_AP"] / prod_ap
        )
        row["status"] = _status(row, p is not None)
        rows.append(row)
    schema: dict[str, Any] = {
        "slice": pl.String,
        "critical": pl.Boolean,
        "images": pl.Int64,
        "objects": pl.Int64,
        "detections": pl.Int64,
        **dict.fromkeys(METRICS, pl.Float64),
        **{f"AP_{c}": pl.Float64 for c in class_names},
        "production_AP": pl.Float64,
        "production_AP50": pl.Float64,
        "delta_AP": pl.Float64,
        "delta_AP50": pl.Float64,
        "relative_delta_AP": pl.Float64,
        "status": pl.String,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def _status(row: Mapping[str, Any], has_baseline: bool) -> str:
    if row["AP"] is None:
        return "no ground truth"
    if not has_baseline:
        return "no baseline"
    rel = row["relative_delta_AP"]
    if rel is None:
        return "baseline undefined" if row["production_AP"] is None else "baseline zero"
    if abs(row["delta_AP"]) < UNCHANGED_POINTS or abs(rel) < UNCHANGED_BAND:
        return "unchanged"
    return "improved" if rel > 0 else "regressed"


def to_parquet_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def pct(v: float | None, digits: int = 1) -> str:
    """A fraction as percent points for people; ``n/a`` for undefined."""
    return "n/a" if v is None or v < 0 else f"{100 * v:.{digits}f}"


def signed_pct(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{100 * v:+.{digits}f}"


def markdown_table(df: pl.DataFrame, limit: int | None = None) -> str:
    """The slice table as markdown (percent points), critical slices in bold."""
    lines = [
        "| slice | critical | images | objects | AP | AP50 | production AP | delta AP (pts) | relative | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in df.head(limit).iter_rows(named=True) if limit else df.iter_rows(named=True):
        name = f"**{r['slice']}**" if r["critical"] else r["slice"]
        rel = r["relative_delta_AP"]
        lines.append(
            f"| {name} | {'yes' if r['critical'] else ''} | {r['images']} | {r['objects']} | {pct(r['AP'])} | "
            f"{pct(r['AP50'])} | {pct(r['production_AP'])} | {signed_pct(r['delta_AP'])} | "
            f"{'n/a' if rel is None else f'{100 * rel:+.1f}%'} | {r['status']} |"
        )
    return "\n".join(lines)
