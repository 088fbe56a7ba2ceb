"""OpenSCENARIO 1.x files -> ``Scenario`` (typed, parameters resolved), with every element outside
the supported subset reported.

The file is validated against the ASAM XSD the platform ships (``scenario_schema``), parsed with
lxml, and read element by element. The reader marks each element it understands; afterwards
every element it did not mark is reported as a ``Finding`` with its XPath and line (only the
outermost one of an unread subtree), so nothing outside the subset is ever skipped silently.
Values the subset does not cover (a ``followingMode="follow"``, ``selectTriggeringEntities``
true, ...) are findings too, as are invalid values (an unknown entity, an expression that does
not evaluate, a lane the road does not have). A scenario with findings is not executable
(``Scenario.executable``, ``Scenario.reason``); ``load_scenario`` raises only when the file
cannot be opened.

Elements read but without effect in a flat kinematic world (documented in the README table):
``FileHeader``, ``CatalogLocations``, vehicle ``Performance`` / ``Axles`` / ``Properties``, the
z / pitch / roll of positions, ``RoadCondition``, the scene graph file and ``UsedArea``.

Domain code: no dagster import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from lxml import etree

from adas.simulation.openscenario.environment import render_conditions
from adas.simulation.openscenario.expressions import ExpressionError, ParamValue, resolve
from adas.simulation.openscenario.findings import Finding
from adas.simulation.openscenario.model import (
    AbsoluteTargetLane,
    AbsoluteTargetLaneOffset,
    AbsoluteTargetSpeed,
    ActDef,
    ActionDef,
    ActionKind,
    ByEntity,
    CollisionCondition,
    Condition,
    DistanceCondition,
    EntityDef,
    EnvironmentAction,
    EventDef,
    FollowTrajectoryAction,
    InitAction,
    LaneChangeAction,
    LaneOffsetAction,
    LanePosition,
    ManeuverDef,
    ManeuverGroupDef,
    ParameterCondition,
    Position,
    PrivateAction,
    ReachPositionCondition,
    RelativeDistanceCondition,
    RelativeLanePosition,
    RelativeObjectPosition,
    RelativeTargetLane,
    RelativeTargetLaneOffset,
    RelativeTargetSpeed,
    RelativeWorldPosition,
    RoadPosition,
    Scenario,
    SimulationTimeCondition,
    SpeedAction,
    SpeedCondition,
    StoryboardElementStateCondition,
    StoryDef,
    TeleportAction,
    TimeHeadwayCondition,
    TimeToCollisionCondition,
    Timing,
    TransitionDynamics,
    Trigger,
    Vertex,
    WorldPosition,
)
from adas.simulation.openscenario.parameters import PARAMETER_TYPES, declared_value, satisfies
from adas.simulation.openscenario.road import StraightRoad, platform_road, read_opendrive
from adas.simulation.scenario_schema import ScenarioValidationError, validate_file

T = TypeVar("T")
_REQUIRED: Final[Any] = object()
DEFAULT_MAX_LATERAL_ACC: Final[float] = (
    1.0  # LaneOffsetActionDynamics without maxLateralAcc (no standard default)
)
_SHAPES: Final[tuple[str, ...]] = ("step", "linear", "cubic", "sinusoidal")
_DIMENSIONS: Final[tuple[str, ...]] = ("time", "distance", "rate")
_RULES: Final[tuple[str, ...]] = (
    "greaterThan",
    "lessThan",
    "equalTo",
    "greaterOrEqual",
    "lessOrEqual",
    "notEqualTo",
)
_EDGES: Final[tuple[str, ...]] = ("rising", "falling", "risingOrFalling", "none")
_ELEMENT_TYPES: Final[tuple[str, ...]] = ("story", "act", "maneuverGroup", "maneuver", "event", "action")
_STATES: Final[tuple[str, ...]] = (
    "startTransition",
    "endTransition",
    "stopTransition",
    "skipTransition",
    "completeState",
    "runningState",
    "standbyState",
)
_COORDINATE_SYSTEMS: Final[tuple[str, ...]] = ("entity", "lane", "road")
_DISTANCE_TYPES: Final[tuple[str, ...]] = (
    "longitudinal",
    "lateral",
    "euclidianDistance",
    "cartesianDistance",
)
_OBJECT_TYPES: Final[tuple[str, ...]] = ("vehicle", "pedestrian", "miscellaneous")
_NO_EFFECT: Final[tuple[str, ...]] = ("Performance", "Axles", "Properties")


def load_scenario(
    path: str | Path, parameters: Mapping[str, str] | None = None, *, validate: bool = True
) -> Scenario:
    """Read an ``.xosc`` file with parameter overrides; never raises for what the file says, only
    when it cannot be opened: problems are the returned scenario's findings."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no scenario file {path}")
    try:
        if validate:
            validate_file(path)
        doc = etree.parse(str(path))
    except (ScenarioValidationError, etree.XMLSyntaxError) as exc:
        return _empty(path, Finding("/", None, str(exc), "invalid"))
    return _Reader(doc, path, dict(parameters or {})).read()


def _empty(path: Path, finding: Finding) -> Scenario:
    return Scenario(str(path), "", {}, None, (), (), (), None, (finding,))


class _Reader:
    def __init__(self, doc: etree._ElementTree, path: Path, overrides: dict[str, str]) -> None:
        self.doc = doc
        self.path = path
        self.root = doc.getroot()
        self.overrides = overrides
        self.handled: set[etree._Element] = set()
        self.findings: list[Finding] = []
        self.scope: dict[str, ParamValue] = {}
        self.entities: dict[str, EntityDef] = {}
        self.road: StraightRoad | None = None
        self.keys: dict[str, list[tuple[str, tuple[str, ...]]]] = {k: [] for k in _ELEMENT_TYPES}
        self.key_of: dict[str, etree._Element] = {}
        self.el_key: dict[etree._Element, str] = {}
        self.catalog_entities: set[str] = set()  # entities defined outside the subset (already reported)
        self.road_unknown = False  # a road file that could not be read: its ids are not checked

    # -- bookkeeping -----------------------------------------------------------------------------

    def xpath(self, el: etree._Element) -> str:
        return self.doc.getpath(el)

    def finding(self, el: etree._Element, reason: str, kind: Literal["unsupported", "invalid"]) -> None:
        self.findings.append(Finding(self.xpath(el), el.sourceline, reason, kind))  # type: ignore[arg-type]

    def unsupported(self, el: etree._Element, reason: str) -> None:
        self.finding(el, reason, "unsupported")

    def invalid(self, el: etree._Element, reason: str) -> None:
        self.finding(el, reason, "invalid")

    def take(self, el: etree._Element) -> etree._Element:
        self.handled.add(el)
        return el

    def ignore(self, el: etree._Element) -> None:
        """Read, without effect on a flat kinematic world (documented)."""
        for x in el.iter():
            self.handled.add(x)

    def child(self, el: etree._Element, tag: str) -> etree._Element | None:
        c = el.find(tag)
        return self.take(c) if c is not None else None

    def children(self, el: etree._Element, tag: str) -> list[etree._Element]:
        return [self.take(c) for c in el.findall(tag)]

    def attr(
        self, el: etree._Element, name: str, convert: Callable[[ParamValue], T], default: Any = _REQUIRED
    ) -> T:
        raw = el.get(name)
        if raw is None:
            if default is _REQUIRED:
                self.invalid(el, f"attribute {name} is missing")
                return convert("0")
            return default  # type: ignore[no-any-return]
        try:
            return convert(resolve(raw, self.scope))
        except (ExpressionError, ValueError) as exc:
            self.invalid(el, f"attribute {name}={raw!r}: {exc}")
            return convert("0") if convert is not _str else convert("")

    def choice(
        self, el: etree._Element, name: str, allowed: tuple[str, ...], default: Any = _REQUIRED
    ) -> str:
        value = self.attr(el, name, _str, default)
        if value is None or value in allowed:
            return value  # type: ignore[no-any-return]
        self.unsupported(el, f"{name}={value!r} is outside the supported subset ({', '.join(allowed)})")
        return allowed[0]

    def entity_ref(self, el: etree._Element, name: str = "entityRef") -> str:
        ref = self.attr(el, name, _str)
        if ref not in self.entities and ref not in self.catalog_entities:
            self.invalid(el, f"{name}={ref!r} names no entity")
        return ref

    # -- the file --------------------------------------------------------------------------------

    def read(self) -> Scenario:
        root = self.take(self.root)
        for tag in ("ParameterValueDistribution", "Catalog"):
            if root.find(tag) is not None:
                self.unsupported(
                    root, f"a {tag} file, not a scenario (sweeps: distributions.read_distribution)"
                )
                return _empty(self.path, self.findings[-1])
        header = self.child(root, "FileHeader")
        description = header.get("description", "") if header is not None else ""
        if header is not None:
            self.ignore(header)
        decls = self.child(root, "ParameterDeclarations")
        if decls is not None:
            self.declare(decls, overrides=self.overrides)
        unknown = sorted(set(self.overrides) - set(self.scope))
        if unknown:
            self.invalid(root, f"parameter overrides name no declared parameter: {', '.join(unknown)}")
        for tag in ("VariableDeclarations", "MonitorDeclarations"):
            el = root.find(tag)
            if el is not None and len(el) == 0:
                self.take(el)  # empty: nothing to support
        cat = self.child(root, "CatalogLocations")
        if cat is not None:
            self.ignore(cat)  # locations alone do nothing; each CatalogReference is reported
        net = self.child(root, "RoadNetwork")
        if net is not None:
            self.road_network(net)
        ents = self.child(root, "Entities")
        if ents is not None:
            self.read_entities(ents)
        init: tuple[InitAction, ...] = ()
        stories: tuple[StoryDef, ...] = ()
        stop: Trigger | None = None
        board = self.child(root, "Storyboard")
        if board is not None:
            self.index_keys(board)
            init_el = self.child(board, "Init")
            if init_el is not None:
                init = self.read_init(init_el)
            stories = tuple(self.story(s) for s in self.children(board, "Story"))
            stop_el = self.child(board, "StopTrigger")
            stop = self.trigger(stop_el) if stop_el is not None else None
        self.report_unread()
        return Scenario(
            path=str(self.path),
            description=description,
            parameters=dict(self.scope),
            road=self.road,
            entities=tuple(self.entities.values()),
            init=init,
            stories=stories,
            stop=stop,
            findings=tuple(self.findings),
        )

    def report_unread(self) -> None:
        for el in self.root.iter():
            if not isinstance(el.tag, str) or el in self.handled:
                continue
            parent = el.getparent()
            if parent is not None and parent not in self.handled:
                continue  # its unread ancestor is reported
            self.unsupported(el, f"{el.tag} is outside the supported subset")

    # -- parameters ------------------------------------------------------------------------------

    def declare(self, decls: etree._Element, *, overrides: Mapping[str, str] | None = None) -> None:
        for d in self.children(decls, "ParameterDeclaration"):
            # Some 1.0-era writers declare "$name"; references are "$name" either way (esmini accepts both).
            name = d.get("name", "").removeprefix("$")
            ptype = d.get("parameterType", "string")
            if ptype not in PARAMETER_TYPES:
                self.unsupported(d, f"parameterType={ptype!r} is outside the supported subset")
                continue
            raw = overrides[name] if overrides and name in overrides else d.get("value", "")
            try:
                value = declared_value(raw, ptype, name, self.scope)
            except ExpressionError as exc:
                self.invalid(d, str(exc))
                continue
            groups = self.children(d, "ConstraintGroup")
            if groups:
                held = []
                for g in groups:
                    rules = [
                        (c.get("rule", "equalTo"), c.get("value", ""))
                        for c in self.children(g, "ValueConstraint")
                    ]
                    try:
                        held.append(all(satisfies(value, r, v, ptype) for r, v in rules))
                    except (ExpressionError, ValueError) as exc:
                        self.invalid(g, str(exc))
                        held.append(False)
                if not any(held):
                    self.invalid(d, f"parameter {name}={value!r} violates its value constraints")
            self.scope[name] = value

    def scoped(self, el: etree._Element) -> dict[str, ParamValue]:
        """Declare ``el``'s local parameters; returns the outer scope to restore."""
        outer = dict(self.scope)
        decls = self.child(el, "ParameterDeclarations")
        if decls is not None:
            self.declare(decls)
        return outer

    # -- road and entities -----------------------------------------------------------------------

    def road_network(self, net: etree._Element) -> None:
        logic = self.child(net, "LogicFile")
        for tag in ("SceneGraphFile", "UsedArea"):
            el = net.find(tag)
            if el is not None:
                self.ignore(el)
        signals = net.find("TrafficSignals")
        if signals is not None and len(signals) == 0:
            self.take(signals)
        if logic is None:
            self.road = None  # the platform's road (documented)
            return
        filepath = self.attr(logic, "filepath", _str)
        road, findings = read_opendrive((self.path.parent / filepath).resolve())
        self.road = road
        self.road_unknown = road is None  # its road and lane ids cannot be checked
        self.findings.extend(findings)

    def read_entities(self, ents: etree._Element) -> None:
        for obj in self.children(ents, "ScenarioObject"):
            name = self.attr(obj, "name", _str)
            spec = None
            for tag, kind in (
                ("Vehicle", "vehicle"),
                ("Pedestrian", "pedestrian"),
                ("MiscObject", "miscellaneous"),
            ):
                el = self.child(obj, tag)
                if el is not None:
                    spec = self.entity(el, name, kind)
            if spec is None:  # CatalogReference / ExternalObjectReference: reported as unread
                self.catalog_entities.add(name)  # references to it are not findings of their own
                continue
            if name in self.entities:
                self.invalid(obj, f"two entities are named {name!r}")
            self.entities[name] = spec

    def entity(self, el: etree._Element, name: str, kind: str) -> EntityDef:
        outer = self.scoped(el)
        category_attr = {"vehicle": "vehicleCategory", "pedestrian": "pedestrianCategory"}.get(
            kind, "miscObjectCategory"
        )
        category = self.attr(el, category_attr, _str, "")
        for tag in _NO_EFFECT:
            sub = el.find(tag)
            if sub is not None:
                self.ignore(sub)
        box = self.child(el, "BoundingBox")
        length = width = 0.0
        cx = cy = 0.0
        if box is not None:
            center = self.child(box, "Center")
            dims = self.child(box, "Dimensions")
            if center is not None:
                cx, cy = self.attr(center, "x", float), self.attr(center, "y", float)
            if dims is not None:
                length, width = self.attr(dims, "length", float), self.attr(dims, "width", float)
        self.scope = outer
        return EntityDef(name, kind, category, length, width, cx, cy)  # type: ignore[arg-type]

    # -- storyboard ------------------------------------------------------------------------------

    def index_keys(self, board: etree._Element) -> None:
        """Every storyboard element's key, before any condition refers to one (refs may point forward).

        A key is the element's name qualified by its parents' (``Story::Act::Group::Maneuver::Event``).
        Generated files often reuse a name among siblings (the standard asks for unique names): such
        an element gets ``#2``, ``#3`` ... appended to its key, and only a reference to the shared name
        is a finding (it is ambiguous)."""
        levels = (("story", "Story"), ("act", "Act"), ("maneuverGroup", "ManeuverGroup"))
        levels += (("maneuver", "Maneuver"), ("event", "Event"), ("action", "Action"))

        def walk(parent_el: etree._Element, parent_key: str, names: tuple[str, ...], depth: int) -> None:
            if depth == len(levels):
                return
            kind, tag = levels[depth]
            for el in parent_el.findall(tag):
                name = el.get("name", "")
                base = f"{parent_key}::{name}" if parent_key else name
                key, n = base, 1
                while key in self.key_of:
                    n += 1
                    key = f"{base}#{n}"
                self.key_of[key] = el
                self.el_key[el] = key
                self.keys[kind].append((key, (*names, name)))
                walk(el, key, (*names, name), depth + 1)

        walk(board, "", (), 0)

    def resolve_ref(self, el: etree._Element, kind: str, ref: str) -> str:
        tail = tuple(ref.split("::"))
        hits = [key for key, names in self.keys.get(kind, []) if names[-len(tail) :] == tail]
        if len(hits) != 1:
            self.invalid(
                el, f"storyboardElementRef={ref!r} names {len(hits)} {kind} elements (needs exactly one)"
            )
            return ref
        return hits[0]

    def read_init(self, init: etree._Element) -> tuple[InitAction, ...]:
        out: list[InitAction] = []
        actions = self.child(init, "Actions")
        if actions is None:
            return ()
        for g in self.children(actions, "GlobalAction"):
            env = self.global_action(g)
            if env is not None:
                out.append(InitAction(None, env, self.xpath(g)))
        for priv in self.children(actions, "Private"):
            entity = self.entity_ref(priv)
            for pa in self.children(priv, "PrivateAction"):
                action = self.private_action(pa)
                if action is not None:
                    out.append(InitAction(entity, action, self.xpath(pa)))
        return tuple(out)

    def story(self, el: etree._Element) -> StoryDef:
        outer = self.scoped(el)
        name = self.attr(el, "name", _str)
        acts = tuple(self.act(a) for a in self.children(el, "Act"))
        self.scope = outer
        return StoryDef(name, self.el_key[el], acts, self.xpath(el))

    def act(self, el: etree._Element) -> ActDef:
        key = self.el_key[el]
        groups = tuple(self.group(g) for g in self.children(el, "ManeuverGroup"))
        start = self.child(el, "StartTrigger")
        stop = self.child(el, "StopTrigger")
        return ActDef(
            el.get("name", ""),
            key,
            groups,
            self.trigger(start) if start is not None else None,
            self.trigger(stop) if stop is not None else None,
            self.xpath(el),
        )

    def group(self, el: etree._Element) -> ManeuverGroupDef:
        key = self.el_key[el]
        actors_el = self.child(el, "Actors")
        actors: tuple[str, ...] = ()
        if actors_el is not None:
            if self.attr(actors_el, "selectTriggeringEntities", _bool, False):
                self.unsupported(actors_el, "selectTriggeringEntities=true is outside the supported subset")
            actors = tuple(self.entity_ref(r) for r in self.children(actors_el, "EntityRef"))
        count = self.attr(el, "maximumExecutionCount", _int)
        maneuvers = tuple(self.maneuver(m) for m in self.children(el, "Maneuver"))
        return ManeuverGroupDef(el.get("name", ""), key, max(count, 1), actors, maneuvers, self.xpath(el))

    def maneuver(self, el: etree._Element) -> ManeuverDef:
        outer = self.scoped(el)
        key = self.el_key[el]
        events = tuple(self.event(e) for e in self.children(el, "Event"))
        self.scope = outer
        return ManeuverDef(el.get("name", ""), key, events, self.xpath(el))

    def event(self, el: etree._Element) -> EventDef:
        key = self.el_key[el]
        priority = self.choice(el, "priority", ("override", "skip", "parallel", "overwrite"))
        count = self.attr(el, "maximumExecutionCount", _int, 1)
        actions = []
        for a in self.children(el, "Action"):
            action = self.event_action(a)
            if action is not None:
                actions.append(ActionDef(a.get("name", ""), self.el_key[a], action, self.xpath(a)))
        start = self.child(el, "StartTrigger")
        return EventDef(
            el.get("name", ""),
            key,
            priority,  # type: ignore[arg-type]
            max(count, 1),
            tuple(actions),
            self.trigger(start) if start is not None else None,
            self.xpath(el),
        )

    # -- actions ---------------------------------------------------------------------------------

    def event_action(self, el: etree._Element) -> ActionKind | None:
        g = self.child(el, "GlobalAction")
        if g is not None:
            return self.global_action(g)
        pa = self.child(el, "PrivateAction")
        if pa is not None:
            return self.private_action(pa)
        return None  # UserDefinedAction: reported as unread

    def global_action(self, el: etree._Element) -> EnvironmentAction | None:
        ea = self.child(el, "EnvironmentAction")
        if ea is None:
            return None
        env = self.child(ea, "Environment")
        if env is None:
            return None  # a CatalogReference: reported as unread
        return self.environment(env)

    def environment(self, env: etree._Element) -> EnvironmentAction:
        outer = self.scoped(env)
        name = self.attr(env, "name", _str)
        hour = None
        tod = self.child(env, "TimeOfDay")
        if tod is not None:
            stamp = self.attr(tod, "dateTime", _str)
            try:
                when = datetime.fromisoformat(stamp)
                hour = when.hour + when.minute / 60
            except ValueError:
                self.invalid(tod, f"dateTime={stamp!r} is not an ISO 8601 date and time")
            if self.attr(tod, "animation", _bool, False):
                self.unsupported(tod, "animation=true (time passing) is outside the supported subset")
        road_cond = env.find("RoadCondition")
        if road_cond is not None:
            self.ignore(road_cond)
        fog_range = sun_ill = sun_elev = None
        precip_type, precip_int = None, 0.0
        weather = self.child(env, "Weather")
        if weather is not None:  # cloud cover, pressure and temperature have no renderer condition
            fog = self.child(weather, "Fog")
            if fog is not None:
                fog_range = self.attr(fog, "visualRange", float)
                box = fog.find("BoundingBox")
                if box is not None:
                    self.unsupported(box, "a fog bounding box (local fog) is outside the supported subset")
                    self.take(box)
            sun = self.child(weather, "Sun")
            if sun is not None:
                sun_elev = self.attr(sun, "elevation", float, None)
                sun_ill = self.attr(sun, "illuminance", float, None)
                if sun_ill is None:
                    sun_ill = self.attr(sun, "intensity", float, None)
            precip = self.child(weather, "Precipitation")
            if precip is not None:
                precip_type = self.attr(precip, "precipitationType", _str, "dry")
                value = self.attr(precip, "precipitationIntensity", float, None)
                precip_int = value if value is not None else self.attr(precip, "intensity", float, 0.0)
            for tag in ("Wind", "DomeImage"):
                sub = weather.find(tag)
                if sub is not None:
                    self.ignore(sub)
        self.scope = outer
        return EnvironmentAction(
            name,
            render_conditions(
                fog_visual_range=fog_range,
                precipitation_type=precip_type,
                precipitation_intensity=precip_int,
                sun_illuminance=sun_ill,
                sun_elevation=sun_elev,
                hour=hour,
            ),
        )

    def private_action(self, pa: etree._Element) -> PrivateAction | None:
        lon = self.child(pa, "LongitudinalAction")
        if lon is not None:
            sa = self.child(lon, "SpeedAction")
            return self.speed_action(sa) if sa is not None else None
        lat = self.child(pa, "LateralAction")
        if lat is not None:
            lc = self.child(lat, "LaneChangeAction")
            if lc is not None:
                return self.lane_change(lc)
            lo = self.child(lat, "LaneOffsetAction")
            return self.lane_offset(lo) if lo is not None else None
        tp = self.child(pa, "TeleportAction")
        if tp is not None:
            pos = self.position_in(tp)
            return TeleportAction(pos) if pos is not None else None
        routing = self.child(pa, "RoutingAction")
        if routing is not None:
            ft = self.child(routing, "FollowTrajectoryAction")
            return self.follow_trajectory(ft) if ft is not None else None
        return None

    def dynamics(self, el: etree._Element) -> TransitionDynamics:
        following = el.get("followingMode")
        if following is not None and following != "position":
            self.unsupported(el, f"followingMode={following!r}: only 'position' is supported")
        value = self.attr(el, "value", float)
        if value < 0:
            self.invalid(el, f"value={value} is negative")
        return TransitionDynamics(
            self.choice(el, "dynamicsShape", _SHAPES),  # type: ignore[arg-type]
            self.choice(el, "dynamicsDimension", _DIMENSIONS),  # type: ignore[arg-type]
            value,
        )

    def speed_action(self, el: etree._Element) -> SpeedAction | None:
        dyn_el = self.child(el, "SpeedActionDynamics")
        target_el = self.child(el, "SpeedActionTarget")
        if dyn_el is None or target_el is None:
            return None
        dyn = self.dynamics(dyn_el)
        target: AbsoluteTargetSpeed | RelativeTargetSpeed
        if (a := self.child(target_el, "AbsoluteTargetSpeed")) is not None:
            target = AbsoluteTargetSpeed(self.attr(a, "value", float))
        elif (r := self.child(target_el, "RelativeTargetSpeed")) is not None:
            target = RelativeTargetSpeed(
                self.entity_ref(r),
                self.attr(r, "value", float),
                self.choice(r, "speedTargetValueType", ("delta", "factor")),  # type: ignore[arg-type]
                self.attr(r, "continuous", _bool),
            )
        else:
            return None
        return SpeedAction(dyn, target)

    def lane_change(self, el: etree._Element) -> LaneChangeAction | None:
        dyn_el = self.child(el, "LaneChangeActionDynamics")
        target_el = self.child(el, "LaneChangeTarget")
        if dyn_el is None or target_el is None:
            return None
        target: AbsoluteTargetLane | RelativeTargetLane
        if (a := self.child(target_el, "AbsoluteTargetLane")) is not None:
            target = AbsoluteTargetLane(self.lane_id(a, "value"))
        elif (r := self.child(target_el, "RelativeTargetLane")) is not None:
            target = RelativeTargetLane(self.entity_ref(r), self.attr(r, "value", _int))
        else:
            return None
        return LaneChangeAction(self.dynamics(dyn_el), target, self.attr(el, "targetLaneOffset", float, 0.0))

    def lane_offset(self, el: etree._Element) -> LaneOffsetAction | None:
        dyn_el = self.child(el, "LaneOffsetActionDynamics")
        target_el = self.child(el, "LaneOffsetTarget")
        if dyn_el is None or target_el is None:
            return None
        target: AbsoluteTargetLaneOffset | RelativeTargetLaneOffset
        if (a := self.child(target_el, "AbsoluteTargetLaneOffset")) is not None:
            target = AbsoluteTargetLaneOffset(self.attr(a, "value", float))
        elif (r := self.child(target_el, "RelativeTargetLaneOffset")) is not None:
            target = RelativeTargetLaneOffset(self.entity_ref(r), self.attr(r, "value", float))
        else:
            return None
        return LaneOffsetAction(
            self.choice(dyn_el, "dynamicsShape", _SHAPES),  # type: ignore[arg-type]
            self.attr(dyn_el, "maxLateralAcc", float, DEFAULT_MAX_LATERAL_ACC),
            target,
            self.attr(el, "continuous", _bool),
        )

    def follow_trajectory(self, el: etree._Element) -> FollowTrajectoryAction | None:
        offset = self.attr(el, "initialDistanceOffset", float, 0.0)
        mode = self.child(el, "TrajectoryFollowingMode")
        if mode is not None:
            following = self.attr(mode, "followingMode", _str)
            if following != "position":
                self.unsupported(mode, f"followingMode={following!r}: only 'position' is supported")
        traj = self.child(el, "Trajectory")
        ref = self.child(el, "TrajectoryRef")
        if traj is None and ref is not None:
            traj = self.child(ref, "Trajectory")
        timing: Timing | None = None
        time_ref = self.child(el, "TimeReference")
        if time_ref is not None:
            t_el = self.child(time_ref, "Timing")
            if t_el is not None:
                timing = Timing(
                    self.choice(t_el, "domainAbsoluteRelative", ("absolute", "relative")),  # type: ignore[arg-type]
                    self.attr(t_el, "scale", float),
                    self.attr(t_el, "offset", float),
                )
            else:
                self.child(time_ref, "None")
        if timing is not None and offset != 0.0:
            self.unsupported(
                el, "initialDistanceOffset with a Timing reference is outside the supported subset"
            )
        if traj is None:
            return None  # a CatalogReference: reported as unread
        outer = self.scoped(traj)
        name = self.attr(traj, "name", _str)
        if self.attr(traj, "closed", _bool):
            self.unsupported(traj, "a closed trajectory is outside the supported subset")
        shape = self.child(traj, "Shape")
        poly = self.child(shape, "Polyline") if shape is not None else None
        vertices: list[Vertex] = []
        if poly is not None:
            for v in self.children(poly, "Vertex"):
                time = self.attr(v, "time", float, None)
                if timing is not None and time is None:
                    self.invalid(v, "a vertex without time in a timed trajectory")
                pos = self.position_in(v)
                if pos is not None:
                    vertices.append(Vertex(time, pos))
        self.scope = outer
        if len(vertices) < 2:
            return None
        return FollowTrajectoryAction(name, tuple(vertices), timing, offset)

    # -- positions -------------------------------------------------------------------------------

    def lane_id(self, el: etree._Element, name: str) -> int:
        lane = self.attr(el, name, _int)
        road = self.road or platform_road()
        if not self.road_unknown and all(x.lane_id != lane for x in road.lanes):
            self.invalid(el, f"{name}={lane}: road {road.road_id} has no lane {lane}")
        return lane

    def orientation(self, el: etree._Element) -> tuple[float | None, float]:
        """(absolute heading or None, heading relative to the road/lane) from an Orientation child."""
        o = self.child(el, "Orientation")
        if o is None:
            return None, 0.0
        h = self.attr(o, "h", float, 0.0)
        if self.choice(o, "type", ("relative", "absolute"), "absolute") == "absolute":
            return h, 0.0
        return None, h

    def position_in(self, el: etree._Element) -> Position | None:
        pos = self.child(el, "Position")
        return self.position(pos) if pos is not None else None

    def position(self, pos: etree._Element) -> Position | None:
        if (w := self.child(pos, "WorldPosition")) is not None:
            h = self.attr(w, "h", float, None)
            return WorldPosition(self.attr(w, "x", float), self.attr(w, "y", float), h)
        if (lp := self.child(pos, "LanePosition")) is not None:
            road_id = self.attr(lp, "roadId", _str)
            self.check_road(lp, road_id)
            heading, rel = self.orientation(lp)
            return LanePosition(
                road_id,
                self.lane_id(lp, "laneId"),
                self.attr(lp, "s", float),
                self.attr(lp, "offset", float, 0.0),
                heading,
                rel,
            )
        if (rp := self.child(pos, "RoadPosition")) is not None:
            road_id = self.attr(rp, "roadId", _str)
            self.check_road(rp, road_id)
            heading, rel = self.orientation(rp)
            return RoadPosition(road_id, self.attr(rp, "s", float), self.attr(rp, "t", float), heading, rel)
        if (rl := self.child(pos, "RelativeLanePosition")) is not None:
            ds = self.attr(rl, "ds", float, None)
            ds_lane = self.attr(rl, "dsLane", float, None)
            _, rel = self.orientation(rl)
            return RelativeLanePosition(
                self.entity_ref(rl),
                self.attr(rl, "dLane", _int),
                ds if ds is not None else (ds_lane or 0.0),  # on a straight road ds and dsLane agree
                self.attr(rl, "offset", float, 0.0),
                rel,
            )
        if (rw := self.child(pos, "RelativeWorldPosition")) is not None:
            heading, _ = self.orientation(rw)
            return RelativeWorldPosition(
                self.entity_ref(rw), self.attr(rw, "dx", float), self.attr(rw, "dy", float), heading
            )
        if (ro := self.child(pos, "RelativeObjectPosition")) is not None:
            heading, rel = self.orientation(ro)
            return RelativeObjectPosition(
                self.entity_ref(ro),
                self.attr(ro, "dx", float),
                self.attr(ro, "dy", float),
                rel if heading is None else heading,
            )
        return None  # other position types: reported as unread

    def check_road(self, el: etree._Element, road_id: str) -> None:
        road = self.road or platform_road()
        if not self.road_unknown and road_id != road.road_id:
            self.invalid(el, f"roadId={road_id!r}: the road network has road {road.road_id!r} only")

    # -- triggers and conditions ------------------------------------------------------------------

    def trigger(self, el: etree._Element) -> Trigger:
        groups = []
        for g in self.children(el, "ConditionGroup"):
            conds = [c for c in (self.condition(x) for x in self.children(g, "Condition")) if c is not None]
            groups.append(tuple(conds))
        return Trigger(tuple(groups))

    def condition(self, el: etree._Element) -> Condition | None:
        name = self.attr(el, "name", _str)
        edge = self.choice(el, "conditionEdge", _EDGES)
        delay = self.attr(el, "delay", float)
        kind: Any = None
        if (by_value := self.child(el, "ByValueCondition")) is not None:
            kind = self.value_condition(by_value)
        elif (by_entity := self.child(el, "ByEntityCondition")) is not None:
            kind = self.entity_condition(by_entity)
        if kind is None:
            return None
        return Condition(name, edge, max(delay, 0.0), kind, self.xpath(el))  # type: ignore[arg-type]

    def rule(self, el: etree._Element) -> str:
        return self.choice(el, "rule", _RULES)

    def value_condition(self, el: etree._Element) -> Any:
        if (st := self.child(el, "SimulationTimeCondition")) is not None:
            return SimulationTimeCondition(self.attr(st, "value", float), self.rule(st))  # type: ignore[arg-type]
        if (sc := self.child(el, "StoryboardElementStateCondition")) is not None:
            kind = self.choice(sc, "storyboardElementType", _ELEMENT_TYPES)
            ref = self.attr(sc, "storyboardElementRef", _str)
            return StoryboardElementStateCondition(
                kind,  # type: ignore[arg-type]
                self.resolve_ref(sc, kind, ref),
                self.choice(sc, "state", _STATES),  # type: ignore[arg-type]
            )
        if (pc := self.child(el, "ParameterCondition")) is not None:
            name = self.attr(pc, "parameterRef", _str)
            if name not in self.scope:
                self.invalid(pc, f"parameterRef={name!r} names no declared parameter")
            return ParameterCondition(
                name,
                self.attr(pc, "value", _str),
                self.rule(pc),  # type: ignore[arg-type]
                self.scope.get(name, ""),
            )
        return None

    def distance_options(self, el: etree._Element, default_type: str) -> tuple[str, str, bool]:
        """(coordinateSystem, relativeDistanceType, freespace), honouring the deprecated ``alongRoute``."""
        along = self.attr(el, "alongRoute", _bool, False)
        cs = self.choice(el, "coordinateSystem", _COORDINATE_SYSTEMS, "road" if along else "entity")
        kind = self.choice(
            el, "relativeDistanceType", _DISTANCE_TYPES, "longitudinal" if along else default_type
        )
        return cs, kind, self.attr(el, "freespace", _bool, False)

    def entity_condition(self, el: etree._Element) -> ByEntity | None:
        trig = self.child(el, "TriggeringEntities")
        cond = self.child(el, "EntityCondition")
        if trig is None or cond is None:
            return None
        rule = self.choice(trig, "triggeringEntitiesRule", ("any", "all"))
        names = tuple(self.entity_ref(r) for r in self.children(trig, "EntityRef"))
        kind: Any = None
        if (sp := self.child(cond, "SpeedCondition")) is not None:
            direction = sp.get("direction")
            if direction is not None:
                direction = self.choice(sp, "direction", ("longitudinal", "lateral", "vertical"))
            kind = SpeedCondition(self.attr(sp, "value", float), self.rule(sp), direction)  # type: ignore[arg-type]
        elif (rp := self.child(cond, "ReachPositionCondition")) is not None:
            pos = self.position_in(rp)
            kind = ReachPositionCondition(pos, self.attr(rp, "tolerance", float)) if pos else None
        elif (dc := self.child(cond, "DistanceCondition")) is not None:
            pos = self.position_in(dc)
            cs, dt, free = self.distance_options(dc, "euclidianDistance")
            if pos is not None:
                kind = DistanceCondition(pos, self.attr(dc, "value", float), self.rule(dc), free, cs, dt)  # type: ignore[arg-type]
        elif (rd := self.child(cond, "RelativeDistanceCondition")) is not None:
            cs, dt, free = self.distance_options(rd, "euclidianDistance")
            kind = RelativeDistanceCondition(
                self.entity_ref(rd),
                self.attr(rd, "value", float),
                self.rule(rd),
                free,
                cs,
                dt,  # type: ignore[arg-type]
            )
        elif (th := self.child(cond, "TimeHeadwayCondition")) is not None:
            cs, dt, free = self.distance_options(th, "euclidianDistance")
            kind = TimeHeadwayCondition(
                self.entity_ref(th),
                self.attr(th, "value", float),
                self.rule(th),
                free,
                cs,
                dt,  # type: ignore[arg-type]
            )
        elif (tc := self.child(cond, "TimeToCollisionCondition")) is not None:
            target = self.child(tc, "TimeToCollisionConditionTarget")
            cs, dt, free = self.distance_options(tc, "euclidianDistance")
            entity = pos = None
            if target is not None:
                ref = self.child(target, "EntityRef")
                entity = self.entity_ref(ref) if ref is not None else None
                pos = self.position_in(target) if ref is None else None
            if entity is not None or pos is not None:
                kind = TimeToCollisionCondition(
                    entity,
                    pos,
                    self.attr(tc, "value", float),
                    self.rule(tc),
                    free,
                    cs,
                    dt,  # type: ignore[arg-type]
                )
        elif (cc := self.child(cond, "CollisionCondition")) is not None:
            ref = self.child(cc, "EntityRef")
            by_type = self.child(cc, "ByType")
            if ref is not None:
                kind = CollisionCondition(self.entity_ref(ref), None)
            elif by_type is not None:
                kind = CollisionCondition(None, self.choice(by_type, "type", _OBJECT_TYPES))  # type: ignore[arg-type]
        if kind is None:
            return None
        return ByEntity(names, rule, kind)  # type: ignore[arg-type]


def _str(v: ParamValue) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _bool(v: ParamValue) -> bool:
    if isinstance(v, bool):
        return v
    if str(v) in ("true", "false", "1", "0"):
        return str(v) in ("true", "1")
    raise ValueError(f"{v!r} is not a boolean")


def _int(v: ParamValue) -> int:
    number = float(v)
    if not math.isfinite(number) or number != round(number):
        raise ValueError(f"{v!r} is not an integer")
    return int(number)
