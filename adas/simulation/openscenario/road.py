"""The road the player drives on: one straight multi-lane OpenDRIVE road, like highway-env's.

The platform's road (``scenarios._write_xodr``) is one straight road, id 0, starting at the
origin with heading 0, with four right-hand lanes (ids -1..-4) of 4 m: highway-env's
``straight_road_network`` (lanes 0..3 at y = 0, 4, 8, 12 m, ``StraightLane.DEFAULT_WIDTH``).
``read_opendrive`` accepts exactly that family: one road whose plan view is collinear ``line``
geometries and whose lanes have constant widths (several lane sections only if they are
identical). Curves, junctions, several roads, lane offsets and width polynomials are reported as
findings naming their XML path. Elevation, super-elevation, road marks, objects and signals do
not move anything in a flat kinematic world and are read as having no effect.

Frames: OpenSCENARIO's world frame (x, y, y to the left, heading counter-clockwise) and the
road frame (s along the reference line, t to its left). ``to_highway`` maps a pose to
highway-env's frame (x along the road, y to the right, lane i centred at y = i * width), which
the later closed-loop increment uses to place actors in highway-env.

Domain code: no dagster import.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from lxml import etree

from adas.simulation.openscenario.findings import Finding

PLATFORM_LANE_WIDTH_M: Final[float] = 4.0  # highway-env StraightLane.DEFAULT_WIDTH
PLATFORM_LANES: Final[int] = 4
PLATFORM_ROAD_LENGTH_M: Final[float] = 2000.0
_COLLINEAR_TOL: Final[float] = 1e-6


@dataclass(frozen=True, slots=True)
class Lane:
    lane_id: int
    t_min: float  # lateral bounds in the road frame (t to the left of the reference line)
    t_max: float
    lane_type: str

    @property
    def center(self) -> float:
        return 0.5 * (self.t_min + self.t_max)

    @property
    def width(self) -> float:
        return self.t_max - self.t_min

    @property
    def direction(self) -> int:
        """+1 where traffic drives along s (right lanes, right-hand traffic), -1 against it."""
        return 1 if self.lane_id < 0 else -1


@dataclass(frozen=True, slots=True)
class StraightRoad:
    road_id: str
    x0: float
    y0: float
    heading: float
    length: float
    lanes: tuple[Lane, ...]  # ascending t (rightmost lane first)
    source: str
    cos_h: float = field(init=False, repr=False)
    sin_h: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cos_h", math.cos(self.heading))  # read on every step: computed once
        object.__setattr__(self, "sin_h", math.sin(self.heading))

    def to_road(self, x: float, y: float) -> tuple[float, float]:
        dx, dy = x - self.x0, y - self.y0
        c, s = self.cos_h, self.sin_h
        return dx * c + dy * s, -dx * s + dy * c

    def to_world(self, s_coord: float, t: float) -> tuple[float, float]:
        c, s = self.cos_h, self.sin_h
        return self.x0 + s_coord * c - t * s, self.y0 + s_coord * s + t * c

    def lane(self, lane_id: int) -> Lane:
        for lane in self.lanes:
            if lane.lane_id == lane_id:
                return lane
        raise KeyError(f"road {self.road_id} has no lane {lane_id} (lanes {[x.lane_id for x in self.lanes]})")

    def lane_at(self, t: float) -> Lane | None:
        """The lane containing lateral position ``t``; the nearest lane when off the road's edge."""
        if not self.lanes:
            return None
        for lane in self.lanes:
            if lane.t_min <= t < lane.t_max:
                return lane
        return self.lanes[0] if t < self.lanes[0].t_min else self.lanes[-1]

    def shifted_lane(self, lane_id: int, d_lane: int) -> Lane | None:
        """The lane ``d_lane`` lanes to the left of ``lane_id`` in its driving direction."""
        lane = self.lane(lane_id)
        k = self.lanes.index(lane) + d_lane * lane.direction
        return self.lanes[k] if 0 <= k < len(self.lanes) else None

    def lane_heading(self, lane_id: int) -> float:
        return self.heading if self.lane(lane_id).direction > 0 else self.heading + math.pi

    # -- highway-env ---------------------------------------------------------------------------

    def highway_lane_index(self, lane_id: int) -> int:
        """highway-env's lane index (0 = leftmost) of a right-hand lane."""
        right = [lane for lane in reversed(self.lanes) if lane.lane_id < 0]
        if any(lane.lane_id > 0 for lane in self.lanes):
            raise ValueError(f"road {self.road_id} has left lanes: highway-env's road has right lanes only")
        return [lane.lane_id for lane in right].index(lane_id)

    def to_highway(self, x: float, y: float, h: float) -> tuple[float, float, float]:
        """(x, y, heading) in highway-env's frame: x along the road, y to the right, lane i at i * width."""
        if any(lane.lane_id > 0 for lane in self.lanes):
            raise ValueError(f"road {self.road_id} has left lanes: highway-env's road has right lanes only")
        s_coord, t = self.to_road(x, y)
        top = max(lane.t_max for lane in self.lanes)
        first = max(self.lanes, key=lambda lane: lane.t_max)
        return s_coord, top - t - first.width / 2, -(h - self.heading)

    def from_highway(self, x: float, y: float, h: float) -> tuple[float, float, float]:
        """The inverse of ``to_highway``: (x, y, heading) in the OpenSCENARIO world frame."""
        top = max(lane.t_max for lane in self.lanes)
        first = max(self.lanes, key=lambda lane: lane.t_max)
        wx, wy = self.to_world(x, top - y - first.width / 2)
        return wx, wy, self.heading - h


def platform_road() -> StraightRoad:
    """The platform's road when a scenario names none: what ``scenarios._write_xodr`` writes."""
    w = PLATFORM_LANE_WIDTH_M
    lanes = tuple(Lane(-k, -k * w, -(k - 1) * w, "driving") for k in range(PLATFORM_LANES, 0, -1))
    return StraightRoad("0", 0.0, 0.0, 0.0, PLATFORM_ROAD_LENGTH_M, lanes, "platform default")


def read_opendrive(path: Path) -> tuple[StraightRoad | None, list[Finding]]:
    """The straight road of an OpenDRIVE file, or None with findings naming what is outside the subset."""
    findings: list[Finding] = []
    try:
        doc = etree.parse(str(path))
    except (OSError, etree.XMLSyntaxError) as exc:
        return None, [Finding(str(path), None, f"cannot read the OpenDRIVE file: {exc}", "invalid")]
    root = doc.getroot()

    def find(
        el: etree._Element, reason: str, kind: Literal["unsupported", "invalid"] = "unsupported"
    ) -> None:
        findings.append(Finding(f"{path.name}:{doc.getpath(el)}", el.sourceline, reason, kind))

    roads = root.findall("road")
    for j in root.findall("junction"):
        find(j, "junctions are outside the supported subset (one straight road)")
    if len(roads) != 1:
        find(root, f"{len(roads)} roads: the supported subset is one straight road")
        return None, findings
    road = roads[0]
    geoms = road.findall("planView/geometry")
    if not geoms:
        find(road, "the road has no plan view geometry", "invalid")
        return None, findings
    first = geoms[0]
    x0, y0, hdg = (float(first.get(k, "0")) for k in ("x", "y", "hdg"))
    s0 = float(first.get("s", "0"))
    for g in geoms:
        kinds = [c.tag for c in g if isinstance(c.tag, str)]
        if kinds != ["line"]:
            find(
                g,
                f"plan view geometry {'/'.join(kinds) or '(none)'}: only straight 'line' geometries are supported",
            )
            continue
        gs, gx, gy, gh = (float(g.get(k, "0")) for k in ("s", "x", "y", "hdg"))
        ex, ey = x0 + (gs - s0) * math.cos(hdg), y0 + (gs - s0) * math.sin(hdg)
        if abs(math.remainder(gh - hdg, 2 * math.pi)) > _COLLINEAR_TOL or math.hypot(gx - ex, gy - ey) > 1e-3:
            find(g, "plan view geometries are not collinear: only one straight line is supported")
    for off in road.findall("lanes/laneOffset"):
        if any(float(off.get(k, "0")) != 0.0 for k in ("a", "b", "c", "d")):
            find(off, "laneOffset is outside the supported subset")
    sections = road.findall("lanes/laneSection")
    if not sections:
        find(road, "the road has no lane section", "invalid")
        return None, findings
    layouts = [_section_lanes(sec, find) for sec in sections]
    if any(layout != layouts[0] for layout in layouts[1:]):
        find(sections[1], "lane sections differ along the road: only one constant lane layout is supported")
    if findings:
        return None, findings
    return (
        StraightRoad(
            road_id=road.get("id", "0"),
            x0=x0,
            y0=y0,
            heading=hdg,
            length=float(road.get("length", "0")),
            lanes=layouts[0],
            source=path.name,
        ),
        findings,
    )


def _section_lanes(sec: etree._Element, find: Callable[..., None]) -> tuple[Lane, ...]:
    lanes: list[Lane] = []
    for side, sign in (("left", 1), ("right", -1)):
        edge = 0.0
        side_lanes = sorted(sec.findall(f"{side}/lane"), key=lambda el: abs(int(el.get("id", "0"))))
        for el in side_lanes:
            widths = el.findall("width")
            if not widths:
                find(el, "lane without a width", "invalid")
                continue
            for w in widths:
                if any(float(w.get(k, "0")) != 0.0 for k in ("b", "c", "d")):
                    find(w, "lane width varies along the road: only constant widths are supported")
            width = float(widths[0].get("a", "0"))
            if any(float(w.get("a", "0")) != width for w in widths[1:]):
                find(widths[1], "lane width changes along the road: only constant widths are supported")
            inner, outer = edge, edge + width
            edge = outer
            lo, hi = (inner, outer) if sign > 0 else (-outer, -inner)
            lanes.append(Lane(int(el.get("id", "0")), lo, hi, el.get("type", "driving")))
    return tuple(sorted(lanes, key=lambda lane: lane.t_min))
