"""The forest plot of a gate: every paired delta with its interval, coloured by its verdict.

One row per delta (overall, per class, safety recall, per slice), the point and its interval
in AP points, a line at zero and, for gated rows, a tick at the tolerance. A reviewer sees at a
glance which deltas are decided and which straddle their tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from adas.evaluation.evidence import DeltaInterval, PairedEvidence
from adas.evaluation.gates import DeltaDecision
from adas.evaluation.plots import png_bytes, pyplot

COLOURS = {"green": "#2e7d32", "amber": "#f9a825", "red": "#c62828", None: "#757575"}


@dataclass(frozen=True)
class ForestRow:
    label: str
    delta: DeltaInterval
    verdict: str | None  # None: reported, not gated
    tolerance_points: float | None


def forest_rows(evidence: PairedEvidence, decisions: Sequence[DeltaDecision] = ()) -> list[ForestRow]:
    """Overall metrics, then per class, then every slice's AP; gated rows carry their verdict."""
    gated = {(d.scope, d.metric): d for d in decisions}

    def row(label: str, scope: str, metric: str, delta: DeltaInterval | None) -> ForestRow | None:
        if delta is None:
            return None
        d = gated.get((scope, metric))
        return ForestRow(label, delta, d.verdict if d else None, d.tolerance_points if d else None)

    rows: list[ForestRow | None] = []
    for key in ("weighted_AP", "AP", "AP50"):
        metric = f"weighted {key.removeprefix('weighted_')}" if key.startswith("weighted") else key
        rows.append(row(f"all: {metric}", "all", metric, evidence.overall.get(key)))
    for key, delta in evidence.overall.items():
        if key.startswith("AP/"):
            rows.append(row(f"class {key.removeprefix('AP/')}: AP", "all", key, delta))
        elif key.startswith("recall/"):
            name = key.removeprefix("recall/")
            rows.append(row(f"class {name}: recall@op", name, key, delta))
    if evidence.calibration is not None:
        name = evidence.calibration_metric.upper().replace("DECE", "D-ECE")
        rows.append(row(f"all: {name} (lower is better)", "all", name, evidence.calibration))
    for name, deltas in evidence.slices.items():
        rows.append(
            row(f"slice {name}: AP (n={evidence.slice_images.get(name, 0)})", name, "AP", deltas.get("AP"))
        )
    return [r for r in rows if r is not None]


def plot_forest(rows: Sequence[ForestRow], title: str, confidence: float = 0.95) -> bytes:
    """PNG of the rows, top to bottom in the given order."""
    plt = pyplot()
    height = max(2.5, 0.32 * len(rows) + 1.2)
    fig, ax = plt.subplots(figsize=(8.0, height))
    for y, r in enumerate(reversed(rows)):
        c = COLOURS.get(r.verdict, COLOURS[None])
        lo, hi, pt = 100 * r.delta.low, 100 * r.delta.high, 100 * r.delta.point
        ax.plot([lo, hi], [y, y], color=c, linewidth=2.2, solid_capstyle="butt")
        ax.plot([pt], [y], marker="o", color=c, markersize=5)
        if r.tolerance_points is not None:
            ax.plot([-r.tolerance_points], [y], marker="|", color="#424242", markersize=12)
    ax.axvline(0.0, color="#9e9e9e", linewidth=1, linestyle="--")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r.label for r in reversed(rows)], fontsize=8)
    ax.set_xlabel(f"candidate - production (points), {100 * confidence:g}% paired bootstrap interval")
    ax.set_title(title, fontsize=10)
    handles = [
        plt.Line2D([], [], color=COLOURS[k], linewidth=2.2, label=label)
        for k, label in (("green", "green"), ("amber", "amber"), ("red", "red"), (None, "not gated"))
    ]
    handles.append(
        plt.Line2D([], [], color="#424242", marker="|", linestyle="", markersize=10, label="-tolerance")
    )
    ax.legend(handles=handles, fontsize=7, loc="lower right", framealpha=0.9)
    ax.grid(axis="x", alpha=0.3)
    return png_bytes(fig)
