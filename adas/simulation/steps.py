"""What the four simulation use-cases share: their cell's checks, their code versions, their outputs.

The use-cases (``replay_metrics``, ``scenario_library``, ``closed_loop_simulation``,
``sim_verdict``) run one target cell each and store what they compute beside the model pack
(``models/<task>/<version>/<device>/<precision>/{replay,scenarios,simulation}/``).

Outputs are stored and read back with :mod:`adas.intake.stored` (``stored_file``, ``read_json``).
Domain code: no dagster import.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from adas.catalog import TargetCatalog
from adas.cell import Cell
from adas.packaging.refs import EngineRef
from adas.simulation.config import SimulationConfig
from adas.simulation.shards import SIM_CODE_VERSION

Section = Literal["replay", "scenarios", "closed_loop", "gate"]


class SimulationInputError(ValueError):
    """An input this simulator cannot run: an engine of another runtime, an unknown sweep."""


def require_simulatable(cell: Cell, catalog: TargetCatalog, *engines: EngineRef) -> None:
    """The catalog offers the cell (else ``UnsupportedTargetError``) and every engine runs here."""
    cell.require_supported(catalog)
    for e in engines:
        if e.runtime != "onnxruntime":
            raise SimulationInputError(
                f"{cell.device}/{cell.precision}: the {e.runtime} engine cannot run in this CPU simulator; "
                "closed-loop perception needs an ONNX Runtime engine here (TensorRT cells need a GPU "
                "simulation worker with the tensorrt runtime)"
            )


@dataclass(frozen=True)
class EnginePair:
    """The candidate's engine and production's for one cell: what replay and the closed loop compare."""

    cell: Cell
    candidate: EngineRef
    production: EngineRef

    def require_simulatable(self, catalog: TargetCatalog) -> None:
        """The catalog offers the cell and both engines run in this simulator."""
        require_simulatable(self.cell, catalog, self.candidate, self.production)

    def identity(self) -> dict[str, str]:
        """The fields that name an output of the pair: its cell, and what it compares."""
        return {
            "device": self.cell.device,
            "precision": self.cell.precision,
            "version": self.candidate.contract.version,
            "production_version": self.production.contract.version,
        }


def code_version(cfg: SimulationConfig | None, section: Section) -> str:
    """A step's code version: the config section it depends on (``None``: the file is invalid)."""
    if cfg is None:
        return "invalid-config"
    parts: dict[str, Any] = {
        "replay": cfg.replay.model_dump(mode="json"),
        "scenarios": {k: v.model_dump(mode="json") for k, v in cfg.categories.items()},
        "closed_loop": cfg.model_dump(mode="json", exclude={"replay", "gate"}),
        "gate": cfg.gate.model_dump(mode="json"),
    }
    blob = json.dumps(parts[section], sort_keys=True, separators=(",", ":"))
    return f"{section}-v{SIM_CODE_VERSION}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def json_bytes(obj: Any) -> bytes:
    """The stored form of a JSON output: indented, sorted keys, a final newline."""
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()
