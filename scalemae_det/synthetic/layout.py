"""Where things are in a synthetic scene, decided before any pixel is drawn.

Sizes are in metres so an object's size in pixels follows the GSD. The layout holds only roads,
objects and the collar's edges (O(objects) memory), so a scene of any size can then be rendered
block by block. Positions are metres from the scene's upper-left corner, y pointing down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from scalemae_det.synthetic.noise import noise1d

CLASS_NAMES = ("vehicle", "building", "storage_tank")  # COCO category id = index + 1
VEHICLE, BUILDING, TANK = 1, 2, 3
SPACING_M = 2.0  # clear ground between any two objects (shadows included)

_VEHICLE_COLOURS = ((235, 235, 232), (190, 193, 197), (185, 40, 35), (45, 80, 160), (225, 190, 40))
_ROOF_COLOURS = ((178, 175, 168), (170, 90, 62), (105, 105, 112), (115, 128, 145), (196, 182, 155))


@dataclass(frozen=True)
class Road:
    x: float  # a point on the centre line
    y: float
    angle: float  # direction of the road, radians from +x towards +y
    width: float


@dataclass(frozen=True)
class Obj:
    category: int
    x: float  # centre
    y: float
    length: float  # tanks: diameter in both
    width: float
    angle: float  # of the length axis
    height: float  # casts the shadow
    colour: tuple[float, float, float]
    style: int  # buildings: 0 flat roof, 1 gabled

    def bbox_m(self) -> tuple[float, float, float, float]:
        """Tight box of the footprint (no shadow): x0, y0, x1, y1."""
        if self.category == TANK:
            r = self.length / 2
            return self.x - r, self.y - r, self.x + r, self.y + r
        c, s = abs(math.cos(self.angle)), abs(math.sin(self.angle))
        hx = (self.length * c + self.width * s) / 2
        hy = (self.length * s + self.width * c) / 2
        return self.x - hx, self.y - hy, self.x + hx, self.y + hy


@dataclass(frozen=True)
class CollarEdge:
    side: str  # left, right, top or bottom
    start: float  # nodata width in px at the side's first pixel
    end: float  # ... and at its last
    wobble: float  # px amplitude of the irregularity

    def widths(self, t: np.ndarray, extent: int, seed: int) -> np.ndarray:
        """Nodata width in px at pixel-centre positions t along the side."""
        cell = max(16.0, extent / 16)
        ramp = self.start + (self.end - self.start) * (t / extent)
        return ramp + self.wobble * noise1d(t / cell, seed + "lrtb".index(self.side[0]))


@dataclass(frozen=True)
class Layout:
    width: int  # px
    height: int
    gsd: float  # metres per pixel
    seed: int
    shadow: tuple[float, float]  # shadow offset per metre of height, away from the sun
    roads: tuple[Road, ...]
    objects: tuple[Obj, ...]
    collar: tuple[CollarEdge, ...] = ()

    @cached_property
    def extents_px(self) -> np.ndarray:
        """(N, 4) pixel boxes that hold each object and its shadow, to find what a block shows."""
        return (
            np.array([_extent_m(o, self.shadow) for o in self.objects], float).reshape(-1, 4)
            / self.gsd
        )

    def nodata(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Collar mask for pixel-centre coordinates rows (H, 1) and cols (1, W)."""
        mask = np.zeros(np.broadcast_shapes(rows.shape, cols.shape), bool)
        for e in self.collar:
            vertical = e.side in ("left", "right")
            along, across = (rows, cols) if vertical else (cols, rows)
            n_along, n_across = (self.height, self.width) if vertical else (self.width, self.height)
            dist = n_across - across if e.side in ("right", "bottom") else across
            mask |= dist < e.widths(along, n_along, self.seed)
        return mask


def _extent_m(o: Obj, shadow: tuple[float, float]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = o.bbox_m()
    dx, dy = shadow[0] * o.height, shadow[1] * o.height
    return x0 + min(dx, 0), y0 + min(dy, 0), x1 + max(dx, 0), y1 + max(dy, 0)


class _Placer:
    """Accepts objects that keep clear of the others, the roads, the edges and the collar."""

    def __init__(self, scene: Layout):
        self.scene, self.cell, self.grid, self.reach = scene, 50.0, {}, 0.0
        self.placed: list[Obj] = []

    def add(self, o: Obj, avoid_roads: bool = True) -> bool:
        s, sp = self.scene, SPACING_M
        x0, y0, x1, y1 = box = _extent_m(o, s.shadow)
        if x0 < s.gsd or y0 < s.gsd or x1 > (s.width - 1) * s.gsd or y1 > (s.height - 1) * s.gsd:
            return False
        if s.collar:
            rows = np.arange(math.floor(y0 / s.gsd) - 2, math.ceil(y1 / s.gsd) + 3) + 0.5
            cols = np.arange(math.floor(x0 / s.gsd) - 2, math.ceil(x1 / s.gsd) + 3) + 0.5
            if s.nodata(rows[:, None], cols[None, :]).any():
                return False
        cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        for rd in s.roads if avoid_roads else ():
            nx, ny = -math.sin(rd.angle), math.cos(rd.angle)
            if (
                abs((cx - rd.x) * nx + (cy - rd.y) * ny)
                < rd.width / 2 + hx * abs(nx) + hy * abs(ny) + sp
            ):
                return False
        reach = max(hx, hy) + self.reach + sp
        for i in range(int((cx - reach) // self.cell), int((cx + reach) // self.cell) + 1):
            for j in range(int((cy - reach) // self.cell), int((cy + reach) // self.cell) + 1):
                for b in self.grid.get((i, j), ()):
                    if x0 < b[2] + sp and b[0] < x1 + sp and y0 < b[3] + sp and b[1] < y1 + sp:
                        return False
        self.grid.setdefault((int(cx // self.cell), int(cy // self.cell)), []).append(box)
        self.reach = max(self.reach, hx, hy)
        self.placed.append(o)
        return True


def _colour(rng: np.random.Generator, palette) -> tuple[float, float, float]:
    base = np.array(palette[rng.integers(len(palette))], float)
    return tuple((base * rng.uniform(0.9, 1.08)).clip(0, 255).tolist())


def make_scene(
    width: int, height: int, gsd: float = 0.5, seed: int = 0, nodata_collar: bool = False
) -> Layout:
    """Roads on a loose street grid, vehicles along them, tank clusters and buildings in between."""
    rng = np.random.default_rng([seed, 1])
    w_m, h_m = width * gsd, height * gsd
    area_km2 = w_m * h_m / 1e6
    sun = rng.uniform(0, 2 * math.pi)
    shadow = tuple(rng.uniform(0.5, 0.9) * np.array([math.cos(sun), math.sin(sun)]))
    grid = rng.uniform(0, math.pi)
    roads = []
    for _ in range(1 + int((w_m + h_m) / 600)):
        angle = (
            grid + rng.integers(2) * math.pi / 2 + rng.normal(0, 0.05)
            if rng.random() < 0.75
            else rng.uniform(0, math.pi)
        )
        roads.append(
            Road(
                rng.uniform(0.15, 0.85) * w_m,
                rng.uniform(0.15, 0.85) * h_m,
                angle,
                rng.uniform(8, 14),
            )
        )
    collar = ()
    if nodata_collar:
        sides = ["left", "right"] + [s for s in ("top", "bottom") if rng.random() < 0.4]
        collar = tuple(
            CollarEdge(
                s,
                *(rng.uniform(0.02, 0.12, 2) * (width if s in ("left", "right") else height)),
                0.006 * min(width, height),
            )
            for s in sides
        )
    placer = _Placer(Layout(width, height, gsd, seed, shadow, tuple(roads), (), collar))

    reach = math.hypot(w_m, h_m)  # vehicles drive in the lanes; those off the scene are dropped
    for rd in roads:
        for _ in range(rng.poisson(2 * reach / 25 * rng.uniform(0.4, 1.0))):
            t, lane = rng.uniform(-reach, reach), rng.choice([-1, 1]) * rd.width / 4
            x = rd.x + t * math.cos(rd.angle) - lane * math.sin(rd.angle)
            y = rd.y + t * math.sin(rd.angle) + lane * math.cos(rd.angle)
            placer.add(
                Obj(
                    VEHICLE,
                    x,
                    y,
                    rng.uniform(7, 9),
                    rng.uniform(3, 3.5),
                    rd.angle + (math.pi if lane < 0 else 0),
                    rng.uniform(1.5, 2.5),
                    _colour(rng, _VEHICLE_COLOURS),
                    0,
                ),
                avoid_roads=False,
            )
    for _ in range(rng.poisson(160 * area_km2)):  # tank farms: a few similar tanks in a row
        d, a = rng.uniform(8, 25), rng.uniform(0, math.pi)
        x, y = rng.uniform(0, w_m), rng.uniform(0, h_m)
        grey = rng.uniform(205, 240)
        for k in range(rng.integers(1, 5)):
            dk = d * rng.uniform(0.9, 1.1)
            placer.add(
                Obj(
                    TANK,
                    x + k * (d + 4) * math.cos(a),
                    y + k * (d + 4) * math.sin(a),
                    dk,
                    dk,
                    0.0,
                    dk * rng.uniform(0.4, 0.8),
                    (grey, grey, grey - 6),
                    0,
                )
            )
    for _ in range(rng.poisson(600 * area_km2)):
        length = math.exp(rng.uniform(math.log(11), math.log(40)))
        angle = (
            grid + rng.integers(4) * math.pi / 2 + rng.normal(0, 0.08)
            if rng.random() < 0.6
            else rng.uniform(0, math.pi)
        )
        placer.add(
            Obj(
                BUILDING,
                rng.uniform(0, w_m),
                rng.uniform(0, h_m),
                length,
                rng.uniform(10, min(length, 24)),
                angle,
                rng.uniform(3, 15),
                _colour(rng, _ROOF_COLOURS),
                int(rng.integers(2)),
            )
        )
    return Layout(width, height, gsd, seed, shadow, tuple(roads), tuple(placer.placed), collar)
