"""The parsed scenario: typed, parameter-resolved dataclasses for the supported OpenSCENARIO subset.

Every value is already resolved (parameter references and expressions evaluated, defaults
applied), so the player never looks at XML. Each storyboard element and condition keeps the XML
path it was read from (``path``) so what the player reports can be traced back to the file.

Domain code: no dagster import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from adas.simulation.openscenario.findings import Finding
from adas.simulation.openscenario.road import StraightRoad

Shape = Literal["step", "linear", "cubic", "sinusoidal"]
Dimension = Literal["time", "distance", "rate"]
Rule = Literal["greaterThan", "lessThan", "equalTo", "greaterOrEqual", "lessOrEqual", "notEqualTo"]
Edge = Literal["rising", "falling", "risingOrFalling", "none"]
Priority = Literal["override", "skip", "parallel"]
CoordinateSystem = Literal["entity", "lane", "road", "trajectory"]
RelativeDistanceType = Literal["longitudinal", "lateral", "euclidianDistance", "cartesianDistance"]
ElementType = Literal["story", "act", "maneuverGroup", "maneuver", "event", "action"]
ElementState = Literal[
    "startTransition",
    "endTransition",
    "stopTransition",
    "skipTransition",
    "completeState",
    "runningState",
    "standbyState",
]


# -- positions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorldPosition:
    x: float
    y: float
    h: float | None  # None: along the road at that point


@dataclass(frozen=True, slots=True)
class LanePosition:
    road_id: str
    lane_id: int
    s: float
    offset: float
    heading: float | None  # absolute heading, if an absolute Orientation is given
    relative_heading: float  # added to the lane's driving direction (relative Orientation)


@dataclass(frozen=True, slots=True)
class RelativeLanePosition:
    entity: str
    d_lane: int  # lanes to the left of the reference entity's lane (its driving direction)
    ds: float  # along the reference lane's driving direction
    offset: float  # lateral offset from the target lane's centre, positive to the left
    relative_heading: float


@dataclass(frozen=True, slots=True)
class RoadPosition:
    road_id: str
    s: float
    t: float  # to the left of the road's reference line
    heading: float | None  # absolute heading, if an absolute Orientation is given
    relative_heading: float  # added to the road's direction (relative Orientation)


@dataclass(frozen=True, slots=True)
class RelativeWorldPosition:
    entity: str
    dx: float
    dy: float
    h: float | None


@dataclass(frozen=True, slots=True)
class RelativeObjectPosition:
    entity: str
    dx: float  # in the reference entity's frame (forward)
    dy: float  # in the reference entity's frame (left)
    relative_heading: float


Position = (
    WorldPosition
    | LanePosition
    | RoadPosition
    | RelativeLanePosition
    | RelativeWorldPosition
    | RelativeObjectPosition
)


# -- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransitionDynamics:
    shape: Shape
    dimension: Dimension
    value: float  # seconds (time), metres (distance), or unit per second (rate)


@dataclass(frozen=True, slots=True)
class AbsoluteTargetSpeed:
    value: float


@dataclass(frozen=True, slots=True)
class RelativeTargetSpeed:
    entity: str
    value: float
    value_type: Literal["delta", "factor"]
    continuous: bool


@dataclass(frozen=True, slots=True)
class SpeedAction:
    dynamics: TransitionDynamics
    target: AbsoluteTargetSpeed | RelativeTargetSpeed


@dataclass(frozen=True, slots=True)
class AbsoluteTargetLane:
    lane_id: int


@dataclass(frozen=True, slots=True)
class RelativeTargetLane:
    entity: str
    value: int  # lanes to the left of the reference entity's lane


@dataclass(frozen=True, slots=True)
class LaneChangeAction:
    dynamics: TransitionDynamics
    target: AbsoluteTargetLane | RelativeTargetLane
    target_lane_offset: float


@dataclass(frozen=True, slots=True)
class AbsoluteTargetLaneOffset:
    value: float


@dataclass(frozen=True, slots=True)
class RelativeTargetLaneOffset:
    entity: str
    value: float


@dataclass(frozen=True, slots=True)
class LaneOffsetAction:
    shape: Shape
    max_lateral_acc: float
    target: AbsoluteTargetLaneOffset | RelativeTargetLaneOffset
    continuous: bool


@dataclass(frozen=True, slots=True)
class Vertex:
    time: float | None
    position: Position


@dataclass(frozen=True, slots=True)
class Timing:
    domain: Literal["absolute", "relative"]
    scale: float
    offset: float


@dataclass(frozen=True, slots=True)
class FollowTrajectoryAction:
    trajectory_name: str
    vertices: tuple[Vertex, ...]
    timing: Timing | None  # None: follow the path at the entity's own speed
    initial_distance_offset: float


@dataclass(frozen=True, slots=True)
class TeleportAction:
    position: Position


@dataclass(frozen=True, slots=True)
class RenderConditions:
    """The renderer's conditions (``adas.datasets.weather.apply_weather``) an Environment maps to."""

    weather: Literal["clear", "fog", "rain", "snow"]
    lighting: Literal["day", "night", "glare"]
    severity: int


@dataclass(frozen=True, slots=True)
class EnvironmentAction:
    name: str
    conditions: RenderConditions


PrivateAction = SpeedAction | LaneChangeAction | LaneOffsetAction | FollowTrajectoryAction | TeleportAction
ActionKind = PrivateAction | EnvironmentAction


# -- conditions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimulationTimeCondition:
    value: float
    rule: Rule


@dataclass(frozen=True, slots=True)
class StoryboardElementStateCondition:
    element_type: ElementType
    element: str  # the referenced element's unique key (see storyboard element ``key``)
    state: ElementState


@dataclass(frozen=True, slots=True)
class ParameterCondition:
    parameter: str
    value: str
    rule: Rule
    current: bool | int | float | str  # parameters are constant while a scenario plays


@dataclass(frozen=True, slots=True)
class ReachPositionCondition:
    position: Position
    tolerance: float


@dataclass(frozen=True, slots=True)
class DistanceCondition:
    position: Position
    value: float
    rule: Rule
    freespace: bool
    coordinate_system: CoordinateSystem
    distance_type: RelativeDistanceType


@dataclass(frozen=True, slots=True)
class RelativeDistanceCondition:
    entity: str
    value: float
    rule: Rule
    freespace: bool
    coordinate_system: CoordinateSystem
    distance_type: RelativeDistanceType


@dataclass(frozen=True, slots=True)
class TimeHeadwayCondition:
    entity: str
    value: float
    rule: Rule
    freespace: bool
    coordinate_system: CoordinateSystem
    distance_type: RelativeDistanceType


@dataclass(frozen=True, slots=True)
class TimeToCollisionCondition:
    target_entity: str | None
    target_position: Position | None
    value: float
    rule: Rule
    freespace: bool
    coordinate_system: CoordinateSystem
    distance_type: RelativeDistanceType


@dataclass(frozen=True, slots=True)
class SpeedCondition:
    value: float
    rule: Rule
    direction: Literal["longitudinal", "lateral", "vertical"] | None  # None: the speed's magnitude


@dataclass(frozen=True, slots=True)
class CollisionCondition:
    entity: str | None
    object_type: Literal["vehicle", "pedestrian", "miscellaneous"] | None


EntityConditionKind = (
    ReachPositionCondition
    | DistanceCondition
    | RelativeDistanceCondition
    | TimeHeadwayCondition
    | TimeToCollisionCondition
    | SpeedCondition
    | CollisionCondition
)
ValueConditionKind = SimulationTimeCondition | StoryboardElementStateCondition | ParameterCondition


@dataclass(frozen=True, slots=True)
class ByEntity:
    triggering: tuple[str, ...]
    rule: Literal["any", "all"]
    condition: EntityConditionKind


@dataclass(frozen=True, slots=True)
class Condition:
    name: str
    edge: Edge
    delay: float
    kind: ByEntity | ValueConditionKind
    path: str


@dataclass(frozen=True, slots=True)
class Trigger:
    """OR over condition groups, AND within a group; an empty trigger has the standard's default
    (a start trigger without groups is true, a stop trigger false)."""

    groups: tuple[tuple[Condition, ...], ...]


# -- storyboard --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActionDef:
    name: str
    key: str
    action: ActionKind
    path: str


@dataclass(frozen=True, slots=True)
class EventDef:
    name: str
    key: str
    priority: Priority
    maximum_execution_count: int
    actions: tuple[ActionDef, ...]
    start: Trigger | None
    path: str


@dataclass(frozen=True, slots=True)
class ManeuverDef:
    name: str
    key: str
    events: tuple[EventDef, ...]
    path: str


@dataclass(frozen=True, slots=True)
class ManeuverGroupDef:
    name: str
    key: str
    maximum_execution_count: int
    actors: tuple[str, ...]
    maneuvers: tuple[ManeuverDef, ...]
    path: str


@dataclass(frozen=True, slots=True)
class ActDef:
    name: str
    key: str
    groups: tuple[ManeuverGroupDef, ...]
    start: Trigger | None
    stop: Trigger | None
    path: str


@dataclass(frozen=True, slots=True)
class StoryDef:
    name: str
    key: str
    acts: tuple[ActDef, ...]
    path: str


@dataclass(frozen=True, slots=True)
class InitAction:
    entity: str | None  # None for a global action
    action: ActionKind
    path: str


@dataclass(frozen=True, slots=True)
class EntityDef:
    name: str
    object_type: Literal["vehicle", "pedestrian", "miscellaneous"]
    category: str
    length: float
    width: float
    center_x: float  # bounding-box centre in the entity's frame (forward), from its reference point
    center_y: float


@dataclass(frozen=True, slots=True)
class Scenario:
    """A parsed scenario. ``executable`` is False when any finding was made; ``reason`` says why."""

    path: str
    description: str
    parameters: dict[str, bool | int | float | str]
    road: StraightRoad | None
    entities: tuple[EntityDef, ...]
    init: tuple[InitAction, ...]
    stories: tuple[StoryDef, ...]
    stop: Trigger | None
    findings: tuple[Finding, ...] = field(default=())

    @property
    def executable(self) -> bool:
        return not self.findings

    @property
    def reason(self) -> str:
        return "; ".join(str(f) for f in self.findings)
