"""Use-case of the ``sim_verdict`` asset: the Sim Gate over the closed-loop runs.

Reads ``runs.json`` of the simulation, applies the criteria of ``config/simulation.yaml``
(``gate.evaluate_gate``: absolute limits, and paired three-valued comparisons with production; a
sequential sweep's rate comparisons at the confidence of its last look) and stores the verdict
beside the runs (``sim_verdict.json``, ``sim_verdict.md``).

Domain code: no dagster import.
"""

from __future__ import annotations

from dataclasses import dataclass

from adas.catalog import TargetCatalog
from adas.cell import Cell
from adas.intake.stored import read_json, stored_file
from adas.simulation.config import SimulationConfig
from adas.simulation.gate import SimVerdict, evaluate_gate
from adas.simulation.metrics import RunRecord
from adas.simulation.refs import SimulationRef, SimVerdictRef
from adas.simulation.steps import json_bytes, require_simulatable
from adas.stats import DEFAULT_CONFIDENCE
from adas.storage import ArtifactStore


@dataclass(frozen=True)
class SimVerdictResult:
    ref: SimVerdictRef
    verdict: SimVerdict


def decide_sim_verdict(
    store: ArtifactStore,
    *,
    cell: Cell,
    catalog: TargetCatalog,
    cfg: SimulationConfig,
    simulation: SimulationRef,
) -> SimVerdictResult:
    """Green, amber or red with rationale, stored beside the simulation's outputs."""
    require_simulatable(cell, catalog)
    records = [
        RunRecord.model_validate({**r, "wall_s": 0.0})
        for r in read_json(store, simulation.files["runs.json"])
    ]
    cand = [r for r in records if r.model == "candidate"]
    prod = [r for r in records if r.model == "production"]
    seq = simulation.sequential
    verdict = evaluate_gate(
        cand,
        prod,
        cfg.gate,
        rate_confidence=seq.final_confidence if seq is not None else DEFAULT_CONFIDENCE,
        sequential=seq,
    )
    body = {
        "device": cell.device,
        "precision": cell.precision,
        "version": simulation.version,
        "production_version": simulation.production_version,
        "sweep": simulation.sweep,
        "verdict": verdict.status,
        **verdict.model_dump(mode="json"),
    }
    prefix = simulation.prefix
    files = {
        "sim_verdict.json": stored_file(store, f"{prefix}/sim_verdict.json", data=json_bytes(body)),
        "sim_verdict.md": stored_file(store, f"{prefix}/sim_verdict.md", data=verdict.rationale.encode()),
    }
    ref = SimVerdictRef(
        device=cell.device,
        precision=cell.precision,
        version=simulation.version,
        production_version=simulation.production_version,
        green=verdict.green,
        verdict=verdict.verdict,
        rationale=verdict.rationale,
        checks=verdict.checks,
        files=files,
        runs=verdict.runs,
        sequential=seq,
    )
    return SimVerdictResult(ref=ref, verdict=verdict)
