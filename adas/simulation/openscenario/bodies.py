"""Entities at run time (``Body``) and the geometry the conditions measure on them.

A body's pose is its OpenSCENARIO reference point (x, y, heading) plus its road coordinates
(s, t) on the straight road; its bounding box is ``length`` x ``width`` centred ``(cx, cy)``
ahead/left of the reference point, as the file's ``BoundingBox/Center`` says.

Distances follow the standard's options: ``coordinateSystem`` entity (in the measuring
entity's heading frame) or road / lane (along and across the road), ``relativeDistanceType``
longitudinal, lateral or euclidean, and ``freespace`` (between bounding boxes instead of
between reference points). Longitudinal and lateral distances are signed (positive ahead /
to the left of the measuring entity, or along its driving direction for road coordinates);
the conditions that compare a distance take its magnitude, as esmini does.

Domain code: no dagster import.
"""

from __future__ import annotations

import math

from adas.simulation.openscenario.model import CoordinateSystem, EntityDef, RelativeDistanceType
from adas.simulation.openscenario.road import StraightRoad


class Body:
    """One entity's state; the player owns it (the ego's pose is written by the caller's world)."""

    __slots__ = (
        "category",
        "cx",
        "cy",
        "direction",
        "h",
        "index",
        "is_ego",
        "lat_speed",
        "length",
        "name",
        "object_type",
        "odometer",
        "placed",
        "reach",
        "s",
        "t",
        "v",
        "vx",
        "vy",
        "width",
        "x",
        "y",
    )

    def __init__(self, index: int, spec: EntityDef, is_ego: bool) -> None:
        self.index = index
        self.name = spec.name
        self.object_type = spec.object_type
        self.category = spec.category
        self.length = spec.length
        self.width = spec.width
        self.cx = spec.center_x
        self.cy = spec.center_y
        # radius around the reference point that holds the whole box (a cheap first collision test)
        self.reach = math.hypot(abs(self.cx) + 0.5 * self.length, abs(self.cy) + 0.5 * self.width)
        self.is_ego = is_ego
        self.x = self.y = self.h = self.v = 0.0
        self.vx = self.vy = 0.0  # world-frame velocity (what time to collision closes with)
        self.s = self.t = 0.0
        self.direction = 1  # +1: moves along the road's s, -1: against it
        self.odometer = 0.0
        self.lat_speed = 0.0
        self.placed = False

    def set_pose(self, road: StraightRoad, x: float, y: float, h: float) -> None:
        self.x, self.y, self.h = x, y, h
        self.s, self.t = road.to_road(x, y)
        self.direction = 1 if math.cos(h - road.heading) >= 0.0 else -1

    def center(self) -> tuple[float, float]:
        c, s = math.cos(self.h), math.sin(self.h)
        return self.x + self.cx * c - self.cy * s, self.y + self.cx * s + self.cy * c


def _gap(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Signed gap between intervals: positive when b lies after a, negative before, 0 when they overlap."""
    if b[0] >= a[1]:
        return b[0] - a[1]
    if a[0] >= b[1]:
        return b[1] - a[0]
    return 0.0


def _axes(a: Body, road: StraightRoad, cs: CoordinateSystem) -> tuple[float, float, float, float]:
    """(forward x, forward y, left x, left y) of the measuring frame."""
    if cs == "entity":
        c, s = math.cos(a.h), math.sin(a.h)
    else:  # road / lane: along the road, oriented by the entity's driving direction
        c, s = road.cos_h * a.direction, road.sin_h * a.direction
    return c, s, -s, c


def extent(b: Body, ax: float, ay: float) -> tuple[float, float]:
    """The interval the bounding box covers along the unit axis (ax, ay) (closed form, no corners)."""
    c, s = math.cos(b.h), math.sin(b.h)
    cx, cy = b.x + b.cx * c - b.cy * s, b.y + b.cx * s + b.cy * c
    mid = cx * ax + cy * ay
    half = 0.5 * b.length * abs(c * ax + s * ay) + 0.5 * b.width * abs(-s * ax + c * ay)
    return mid - half, mid + half


def entity_distance(
    a: Body,
    b: Body,
    road: StraightRoad,
    cs: CoordinateSystem,
    kind: RelativeDistanceType,
    freespace: bool,
) -> float:
    """Distance from ``a`` to ``b``: signed for longitudinal / lateral, non-negative for euclidean."""
    if kind in ("euclidianDistance", "cartesianDistance"):
        if freespace:
            return box_distance(a, b)
        return math.hypot(b.x - a.x, b.y - a.y)
    fx, fy, lx, ly = _axes(a, road, cs)
    ax, ay = (fx, fy) if kind == "longitudinal" else (lx, ly)
    if freespace:
        return _gap(extent(a, ax, ay), extent(b, ax, ay))
    return (b.x - a.x) * ax + (b.y - a.y) * ay


def point_distance(
    a: Body,
    px: float,
    py: float,
    road: StraightRoad,
    cs: CoordinateSystem,
    kind: RelativeDistanceType,
    freespace: bool,
) -> float:
    """Distance from ``a`` to the point (px, py), with the same conventions as ``entity_distance``."""
    if kind in ("euclidianDistance", "cartesianDistance"):
        if freespace:
            return _point_box_distance(px, py, a)
        return math.hypot(px - a.x, py - a.y)
    fx, fy, lx, ly = _axes(a, road, cs)
    ax, ay = (fx, fy) if kind == "longitudinal" else (lx, ly)
    along = px * ax + py * ay
    if freespace:
        return _gap(extent(a, ax, ay), (along, along))
    return (px - a.x) * ax + (py - a.y) * ay


def boxes_overlap(a: Body, b: Body) -> bool:
    """Separating-axis test of two oriented bounding boxes (touching is not overlapping)."""
    for h in (a.h, b.h):
        c, s = math.cos(h), math.sin(h)
        for ax, ay in ((c, s), (-s, c)):
            lo_a, hi_a = extent(a, ax, ay)
            lo_b, hi_b = extent(b, ax, ay)
            if hi_a <= lo_b or hi_b <= lo_a:
                return False
    return True


def box_distance(a: Body, b: Body) -> float:
    """Minimum distance between two bounding boxes; 0 when they overlap."""
    if boxes_overlap(a, b):
        return 0.0
    pa, pb = _corner_list(a), _corner_list(b)
    best = math.inf
    for points, poly in ((pa, pb), (pb, pa)):
        for k in range(4):
            q0, q1 = poly[k], poly[(k + 1) % 4]
            for p in points:
                d = _point_segment(p, q0, q1)
                if d < best:
                    best = d
    return best


def _point_box_distance(px: float, py: float, b: Body) -> float:
    c, s = math.cos(b.h), math.sin(b.h)
    cx, cy = b.x + b.cx * c - b.cy * s, b.y + b.cx * s + b.cy * c
    u = (px - cx) * c + (py - cy) * s  # the point in the box's frame
    v = -(px - cx) * s + (py - cy) * c
    du = max(abs(u) - 0.5 * b.length, 0.0)
    dv = max(abs(v) - 0.5 * b.width, 0.0)
    return math.hypot(du, dv)


def _corner_list(b: Body) -> list[tuple[float, float]]:
    c, s = math.cos(b.h), math.sin(b.h)
    out = []
    for fl, fw in ((0.5, 0.5), (0.5, -0.5), (-0.5, -0.5), (-0.5, 0.5)):
        lx, ly = b.cx + fl * b.length, b.cy + fw * b.width
        out.append((b.x + lx * c - ly * s, b.y + lx * s + ly * c))
    return out


def _point_segment(p: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    abx, aby = b[0] - a[0], b[1] - a[1]
    denom = abx * abx + aby * aby
    u = 0.0 if denom <= 0 else min(max(((p[0] - a[0]) * abx + (p[1] - a[1]) * aby) / denom, 0.0), 1.0)
    return math.hypot(p[0] - a[0] - u * abx, p[1] - a[1] - u * aby)


def overlapping(bodies: list[Body], a: Body) -> list[Body]:
    """The bodies whose bounding boxes overlap ``a``'s: a bounding-circle check, then the box test.

    Plain floats, not numpy: at the platform's scale (about ten entities) numpy's per-call overhead
    made this the most expensive part of a step (measured with scripts/benchmark_openscenario.py).
    """
    out = []
    for b in bodies:
        if b is a or not b.placed:
            continue
        if math.hypot(b.x - a.x, b.y - a.y) < a.reach + b.reach and boxes_overlap(a, b):
            out.append(b)
    return out
