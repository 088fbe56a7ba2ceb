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
from typing import Final

import numpy as np

from adas.simulation.openscenario.model import CoordinateSystem, EntityDef, RelativeDistanceType
from adas.simulation.openscenario.road import StraightRoad

_BOX_SIGNS: Final[np.ndarray] = np.asarray([[0.5, 0.5], [0.5, -0.5], [-0.5, -0.5], [-0.5, 0.5]])


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

    def corners(self) -> np.ndarray:
        """The bounding box's corners (4 x 2, world frame)."""
        c, s = math.cos(self.h), math.sin(self.h)
        rot = np.asarray([[c, -s], [s, c]])
        local = _BOX_SIGNS * (self.length, self.width) + (self.cx, self.cy)
        return local @ rot.T + (self.x, self.y)


def _extent(corners: np.ndarray, ax: float, ay: float) -> tuple[float, float]:
    proj = corners[:, 0] * ax + corners[:, 1] * ay
    return float(proj.min()), float(proj.max())


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
            return polygon_distance(a.corners(), b.corners())
        return math.hypot(b.x - a.x, b.y - a.y)
    fx, fy, lx, ly = _axes(a, road, cs)
    ax, ay = (fx, fy) if kind == "longitudinal" else (lx, ly)
    if freespace:
        return _gap(_extent(a.corners(), ax, ay), _extent(b.corners(), ax, ay))
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
            return polygon_distance(a.corners(), np.asarray([[px, py]]))
        return math.hypot(px - a.x, py - a.y)
    fx, fy, lx, ly = _axes(a, road, cs)
    ax, ay = (fx, fy) if kind == "longitudinal" else (lx, ly)
    along = px * ax + py * ay
    if freespace:
        return _gap(_extent(a.corners(), ax, ay), (along, along))
    return (px - a.x) * ax + (py - a.y) * ay


def polygon_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Minimum distance between two convex polygons (or a polygon and a point); 0 when they overlap."""
    if len(q) > 2 and boxes_overlap(p, q):
        return 0.0
    if len(q) == 1 and _point_in_convex(q[0], p):
        return 0.0
    return (
        min(_points_to_segments(p, q), _points_to_segments(q, p)) if len(q) > 1 else _points_to_segments(q, p)
    )


def _point_in_convex(pt: np.ndarray, poly: np.ndarray) -> bool:
    edges = np.roll(poly, -1, axis=0) - poly
    rel = pt - poly
    cross = edges[:, 0] * rel[:, 1] - edges[:, 1] * rel[:, 0]
    return bool(np.all(cross >= 0) or np.all(cross <= 0))


def _points_to_segments(points: np.ndarray, poly: np.ndarray) -> float:
    a = poly
    b = np.roll(poly, -1, axis=0)
    ab = b - a  # (E, 2)
    ap = points[:, None, :] - a[None, :, :]  # (P, E, 2)
    denom = np.maximum((ab * ab).sum(axis=1), 1e-12)
    u = np.clip((ap * ab[None]).sum(axis=2) / denom, 0.0, 1.0)
    closest = a[None] + u[..., None] * ab[None]
    return float(np.sqrt(((points[:, None, :] - closest) ** 2).sum(axis=2)).min())


def boxes_overlap(p: np.ndarray, q: np.ndarray) -> bool:
    """Separating-axis test for two convex quadrilaterals (touching counts as no overlap)."""
    for poly in (p, q):
        edges = np.roll(poly, -1, axis=0) - poly
        normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1)
        pp = p @ normals.T
        qq = q @ normals.T
        if np.any(pp.max(axis=0) <= qq.min(axis=0)) or np.any(qq.max(axis=0) <= pp.min(axis=0)):
            return False
    return True


def overlapping(bodies: list[Body], a: Body) -> list[Body]:
    """The bodies whose bounding boxes overlap ``a``'s: a vectorised circle pre-filter, then the SAT test."""
    others = [b for b in bodies if b is not a and b.placed]
    if not others:
        return []
    ca = a.center()
    cb = np.asarray([b.center() for b in others])
    reach = 0.5 * math.hypot(a.length, a.width) + 0.5 * np.hypot(
        [b.length for b in others], [b.width for b in others]
    )
    near = np.hypot(cb[:, 0] - ca[0], cb[:, 1] - ca[1]) < reach
    if not near.any():
        return []
    pa = a.corners()
    return [b for b, n in zip(others, near, strict=True) if n and boxes_overlap(pa, b.corners())]
