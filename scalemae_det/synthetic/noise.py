"""Hash-based value noise of global coordinates.

Every value is a pure function of a pixel's global position, computed with the same elementwise
operations wherever a block starts, so a scene rendered block by block is byte-identical to the
scene rendered whole.
"""

from __future__ import annotations

import numpy as np

_MASK = np.uint64(0xFFFFFFFF)


def hash2(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    """32-bit hash (as uint64) of integer lattice coordinates, broadcast together."""
    h = (
        np.asarray(i, np.int64).astype(np.uint64) * np.uint64(0x9E3779B1)
        + np.asarray(j, np.int64).astype(np.uint64) * np.uint64(0x85EBCA77)
        + np.uint64((seed * 0xC2B2AE3D) & 0xFFFFFFFF)
    ) & _MASK
    for shift, mult in ((15, 0x2C1B3C6D), (12, 0x297A2D39), (15, 0x9E3779B1)):
        h ^= h >> np.uint64(shift)
        h = (h * np.uint64(mult)) & _MASK
    return h ^ (h >> np.uint64(16))


def unit(h: np.ndarray) -> np.ndarray:
    """Hash to float32 in [0, 1)."""
    return ((h & np.uint64(0xFFFFFF)).astype(np.float32)) * np.float32(1 / 2**24)


def _lattice(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer cell of each coordinate and its smoothstep weight towards the next one."""
    i = np.floor(g)
    f = g - i
    return i.astype(np.int64), (f * f * (3 - 2 * f)).astype(np.float32)


def noise2d(xs: np.ndarray, ys: np.ndarray, cell: float, seed: int) -> np.ndarray:
    """Value noise in [0, 1) of shape (len(ys), len(xs)) for increasing coordinates xs, ys.

    Interpolated along x for each lattice row first and then along y, which costs a few
    operations per pixel whatever the cell size.
    """
    ix, fx = _lattice(xs / cell)
    iy, fy = _lattice(ys / cell)
    lat = unit(
        hash2(np.arange(ix[0], ix[-1] + 2)[None, :], np.arange(iy[0], iy[-1] + 2)[:, None], seed)
    )
    ix, iy = ix - ix[0], iy - iy[0]
    rows = lat[:, ix] * (1 - fx) + lat[:, ix + 1] * fx
    return rows[iy] * (1 - fy)[:, None] + rows[iy + 1] * fy[:, None]


def noise1d(t: np.ndarray, seed: int) -> np.ndarray:
    """Value noise in [-1, 1) along t (in lattice units), any shape."""
    i, f = _lattice(np.asarray(t, np.float64))
    a, b = unit(hash2(i, 0, seed)), unit(hash2(i + 1, 0, seed))
    return 2 * (a * (1 - f) + b * f) - 1
