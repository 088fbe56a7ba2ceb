"""Heat map of violation types x scenario category, candidate beside production (PNG).

Cells are events per run (counts in the annotation), so categories with different run counts
compare; the colour scale is shared by both panels.

Domain code: no dagster import.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from adas.simulation.metrics import VIOLATION_TYPES, RunRecord, violation_counts


def violation_matrix(
    records: Sequence[RunRecord], categories: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(counts, runs): counts[violation, category] and runs per category."""
    counts = np.zeros((len(VIOLATION_TYPES), len(categories)), dtype=int)
    runs = np.zeros(len(categories), dtype=int)
    index = {c: j for j, c in enumerate(categories)}
    for r in records:
        j = index.get(r.spec.category)
        if j is None:
            continue
        runs[j] += 1
        for i, (_, n) in enumerate(violation_counts(r.metrics).items()):
            counts[i, j] += n
    return counts, runs


def heatmap_png(panels: dict[str, Sequence[RunRecord]], title: str = "") -> bytes:
    """One panel per model (e.g. candidate, production); rows: violation types, columns: categories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = sorted({r.spec.category for recs in panels.values() for r in recs})
    mats = {name: violation_matrix(recs, categories) for name, recs in panels.items()}
    rates = {name: c / np.maximum(r, 1)[None, :] for name, (c, r) in mats.items()}
    vmax = max((float(m.max()) for m in rates.values()), default=0.0) or 1.0
    fig, axes = plt.subplots(
        1, len(panels), figsize=(2.2 + 1.6 * max(len(categories), 1) * len(panels), 3.8), squeeze=False
    )
    im = None
    for k, (ax, (name, (counts, runs))) in enumerate(zip(axes[0], mats.items(), strict=True)):
        rate = rates[name]
        im = ax.imshow(rate, cmap="Reds", vmin=0.0, vmax=vmax, aspect="auto")
        ax.set_xticks(
            range(len(categories)),
            [f"{c}\n({n} runs)" for c, n in zip(categories, runs, strict=True)],
            fontsize=8,
        )
        ax.set_yticks(range(len(VIOLATION_TYPES)), VIOLATION_TYPES if k == 0 else [], fontsize=8)
        ax.set_title(name, fontsize=10)
        for i in range(counts.shape[0]):
            for j in range(counts.shape[1]):
                colour = "white" if rate[i, j] > 0.6 * vmax else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8, color=colour)
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), label="events per run", shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
