"""An OpenSCENARIO 1.x player for a documented subset of the standard (README: "Playing OpenSCENARIO").

``load_scenario`` reads an ``.xosc`` file (validated against the shipped ASAM XSD) into a typed,
parameter-resolved ``Scenario`` whose ``findings`` name, by XML path, every element outside the
subset (such a scenario is not executable); ``read_distribution`` expands a
``ParameterValueDistribution`` into concrete parameter sets; ``Player`` plays a scenario step by
step on a straight multi-lane road (highway-env's), with the ego left to the caller's world;
``kinematic.play`` runs one in the kinematic world and records it.

Domain code: no dagster import. Nothing here is wired into the Dagster assets or the gate yet.
"""

from adas.simulation.openscenario.distributions import Sweep, read_distribution
from adas.simulation.openscenario.findings import Finding
from adas.simulation.openscenario.kinematic import KinematicEgo, Recording, play
from adas.simulation.openscenario.model import RenderConditions, Scenario
from adas.simulation.openscenario.parser import load_scenario
from adas.simulation.openscenario.player import (
    EgoIntent,
    EgoState,
    EntityPose,
    NotExecutableError,
    Player,
    PlayerError,
)

__all__ = [
    "EgoIntent",
    "EgoState",
    "EntityPose",
    "Finding",
    "KinematicEgo",
    "NotExecutableError",
    "Player",
    "PlayerError",
    "Recording",
    "RenderConditions",
    "Scenario",
    "Sweep",
    "load_scenario",
    "play",
    "read_distribution",
]
