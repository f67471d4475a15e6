"""Pixels of a synthetic scene: textured fields, roads, objects with shadows, grain, the collar.

Any window can be rendered on its own; the result never depends on where a window starts, so
scenes are written block by block with bounded memory.
"""

from __future__ import annotations

import math

import numpy as np

from scalemae_det.synthetic.layout import BUILDING, TANK, VEHICLE, Layout, Obj, Road
from scalemae_det.synthetic.noise import hash2, noise2d, unit

CHUNK = 256  # px; roads and objects are looked up per chunk
_F = np.float32
_FIELDS = np.array(
    [
        (150, 140, 95),
        (95, 122, 70),
        (72, 96, 60),
        (140, 115, 90),
        (172, 158, 128),
        (128, 126, 118),
        (112, 130, 80),
    ],
    _F,
).T
_ASPHALT = np.array([72, 72, 76], _F)[:, None, None]
_PAINT = np.array([225, 225, 215], _F)[:, None, None]
_GLASS = np.array([35, 40, 52], _F)[:, None, None]


def render_window(scene: Layout, row: int, col: int, height: int, width: int) -> np.ndarray:
    """The window's pixels as a (3, height, width) uint8 array; 0 in all bands only in the
    collar."""
    out = np.empty((3, height, width), np.uint8)
    for r in range(0, height, CHUNK):
        for c in range(0, width, CHUNK):
            h, w = min(CHUNK, height - r), min(CHUNK, width - c)
            out[:, r : r + h, c : c + w] = _chunk(scene, row + r, col + c, h, w)
    return out


def _cover(sd: np.ndarray, gsd: float) -> np.ndarray:
    """Anti-aliased coverage of a pixel from the signed distance (metres) of its centre to a
    shape."""
    return np.clip(_F(0.5) - sd / _F(gsd), 0, 1)


def _blend(img: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> None:
    img += (colour - img) * alpha[None]


def _chunk(scene: Layout, row: int, col: int, h: int, w: int) -> np.ndarray:
    g = scene.gsd
    rows, cols = np.arange(row, row + h) + 0.5, np.arange(col, col + w) + 0.5
    xs, ys = cols * g, rows * g
    img = _ground(scene, xs, ys)
    X, Y = xs.astype(_F)[None, :], ys.astype(_F)[:, None]
    cx, cy, reach = (col + w / 2) * g, (row + h / 2) * g, CHUNK * g
    for rd in scene.roads:
        if (
            abs((cy - rd.y) * math.cos(rd.angle) - (cx - rd.x) * math.sin(rd.angle))
            < reach + rd.width
        ):
            _road(img, rd, X, Y, g)
    ext = scene.extents_px
    hits = (
        (ext[:, 0] < col + w + 1)
        & (ext[:, 2] > col - 1)
        & (ext[:, 1] < row + h + 1)
        & (ext[:, 3] > row - 1)
    )
    for k in np.flatnonzero(hits):
        x0, y0, x1, y1 = ext[k]
        c0, c1 = max(math.floor(x0) - 1, col) - col, min(math.ceil(x1) + 1, col + w) - col
        r0, r1 = max(math.floor(y0) - 1, row) - row, min(math.ceil(y1) + 1, row + h) - row
        _object(img[:, r0:r1, c0:c1], scene.objects[k], X[:, c0:c1], Y[r0:r1], scene)
    img += (
        unit(hash2(cols.astype(np.int64)[None, :], rows.astype(np.int64)[:, None], scene.seed + 7))
        - 0.5
    ) * 12
    out = np.clip(np.rint(img), 1, 255).astype(np.uint8)
    if scene.collar:
        out[:, scene.nodata(rows[:, None], cols[None, :])] = 0
    return out


def _ground(scene: Layout, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Fields aligned with the first road, with warped borders, crop rows and multi-scale tone."""
    s, a = scene.seed, scene.roads[0].angle
    X, Y = xs.astype(_F)[None, :], ys.astype(_F)[:, None]
    u = X * _F(math.cos(a)) + Y * _F(math.sin(a)) + 15 * noise2d(xs, ys, 60.0, s + 1)
    v = Y * _F(math.cos(a)) - X * _F(math.sin(a)) + 15 * noise2d(xs, ys, 60.0, s + 2)
    field = hash2(np.floor(u / _F(110)), np.floor(v / _F(70)), s + 3)
    colour = _FIELDS[:, (field % np.uint64(_FIELDS.shape[1])).astype(np.intp)]
    rows_of_crop = ((field >> np.uint64(8)) & np.uint64(1)).astype(bool) & (
        np.mod(u, _F(4)) < _F(1.6)
    )
    tone = (
        _F(0.8)
        + _F(0.4) * noise2d(xs, ys, 400.0, s + 4)
        + _F(0.25) * noise2d(xs, ys, 20.0, s + 5)
        + _F(0.15) * noise2d(xs, ys, 3.0, s + 6)
        - _F(0.2)
    ) * np.where(rows_of_crop, _F(0.88), _F(1))
    return colour * tone[None]


def _road(img: np.ndarray, rd: Road, X: np.ndarray, Y: np.ndarray, g: float) -> None:
    """Asphalt with solid edge lines and a dashed centre line."""
    c, s = _F(math.cos(rd.angle)), _F(math.sin(rd.angle))
    px, py = X - _F(rd.x), Y - _F(rd.y)
    d = np.abs(py * c - px * s)
    alpha = _cover(d - _F(rd.width / 2), g)
    if not alpha.any():
        return
    edge = _cover(np.abs(d - _F(rd.width / 2 - 0.7)) - _F(0.1), g)
    centre = _cover(d - _F(0.1), g) * (np.mod(px * c + py * s, _F(9)) < _F(4.5))
    _blend(img, _ASPHALT + (_PAINT - _ASPHALT) * np.maximum(edge, centre)[None], alpha)


def _object(img: np.ndarray, o: Obj, X: np.ndarray, Y: np.ndarray, scene: Layout) -> None:
    """Shadow first (darkening what is under it), then the object itself."""
    g = scene.gsd
    px, py = X - _F(o.x), Y - _F(o.y)
    dx, dy = scene.shadow[0] * o.height, scene.shadow[1] * o.height
    colour = np.array(o.colour, _F)[:, None, None]
    if o.category == TANK:
        r = o.length / 2
        t = np.clip((px * _F(dx) + py * _F(dy)) / _F(dx * dx + dy * dy), 0, 1)
        img *= 1 - _F(0.55) * _cover(np.hypot(px - t * _F(dx), py - t * _F(dy)) - _F(r), g)[None]
        dist = np.hypot(px, py)
        k = 0.15 * r / math.hypot(*scene.shadow)  # the sunlit wall shades the roof inside it
        crescent = np.hypot(px - _F(k * scene.shadow[0]), py - _F(k * scene.shadow[1])) > _F(r)
        shade = np.where(crescent, _F(0.6), _F(1)) * np.where(dist > _F(r - 0.7), _F(0.72), _F(1))
        _blend(img, colour * shade[None], _cover(dist - _F(r), g))
        return
    ca, sa, hl, hw = math.cos(o.angle), math.sin(o.angle), o.length / 2, o.width / 2
    u, v = px * _F(ca) + py * _F(sa), py * _F(ca) - px * _F(sa)
    normals = [(ca, sa), (-ca, -sa), (-sa, ca), (sa, -ca)]
    if dx or dy:
        n = math.hypot(dx, dy)
        normals += [(-dy / n, dx / n), (dy / n, -dx / n)]
    corners = [(ca * a - sa * b, sa * a + ca * b) for a in (-hl, hl) for b in (-hw, hw)]
    shadow_sd = None
    for nx, ny in normals:  # the footprint swept along the shadow: a convex hexagon's half-planes
        reach = max(nx * cx + ny * cy for cx, cy in corners) + max(0.0, nx * dx + ny * dy)
        sd = px * _F(nx) + py * _F(ny) - _F(reach)
        shadow_sd = sd if shadow_sd is None else np.maximum(shadow_sd, sd)
    img *= 1 - _F(0.5) * _cover(shadow_sd, g)[None]
    sd = np.maximum(np.abs(u) - _F(hl), np.abs(v) - _F(hw))
    if o.category == VEHICLE:
        band = ((u > _F(0.2 * hl)) & (u < _F(0.55 * hl))) | (
            (u > _F(-0.8 * hl)) & (u < _F(-0.62 * hl))
        )
        colour = np.where((band & (np.abs(v) < _F(hw - 0.35)))[None], _GLASS, colour)
    elif o.category == BUILDING and o.style:  # gabled: two roof planes and a ridge
        colour = (
            colour
            * np.where(np.abs(v) < _F(0.3), _F(1.2), np.where(v > 0, _F(1.1), _F(0.78)))[None]
        )
    else:  # flat roof with a parapet
        colour = colour * np.where(sd > _F(-0.8), _F(0.8), _F(1))[None]
    _blend(img, colour, _cover(sd, g))
