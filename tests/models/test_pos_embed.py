"""The GSD positional embedding against the Scale-MAE paper's formula (arXiv:2212.14532, section
3.1),
written out independently here."""

import math

import numpy as np
import pytest
import torch

from scalemae_det import gsd_sincos_pos_embed


def reference(dim: int, h: int, w: int, r: float) -> np.ndarray:
    """The formula, literally: patch (i, j) at x = j*r, y = i*r; [sin(xw), cos(xw), sin(yw),
    cos(yw)]."""
    q = dim // 4
    out = np.zeros((h * w, dim))
    for i in range(h):
        for j in range(w):
            x, y = j * r, i * r
            for k in range(q):
                wk = 10000 ** (-k / q)
                out[i * w + j, k] = math.sin(x * wk)
                out[i * w + j, q + k] = math.cos(x * wk)
                out[i * w + j, 2 * q + k] = math.sin(y * wk)
                out[i * w + j, 3 * q + k] = math.cos(y * wk)
    return out


@pytest.mark.parametrize("grid", [7, (4, 9), (11, 3)])
@pytest.mark.parametrize("res", [0.3, 1.0, 2.5, 7.0])
def test_matches_formula(grid, res):
    h, w = (grid, grid) if isinstance(grid, int) else grid
    got = gsd_sincos_pos_embed(32, grid, res)
    assert got.dtype == torch.float32 and got.shape == (h * w, 32)
    np.testing.assert_allclose(got.numpy(), reference(32, h, w, res), atol=1e-6, rtol=0)


def test_batched_equals_per_sample():
    res = torch.tensor([0.3, 1.2, 0.6])
    got = gsd_sincos_pos_embed(64, (5, 6), res)
    assert got.shape == (3, 30, 64)
    for n, r in enumerate(res.tolist()):
        torch.testing.assert_close(got[n], gsd_sincos_pos_embed(64, (5, 6), r), atol=1e-6, rtol=0)
    assert not torch.allclose(got[0], got[1])


def test_float32_under_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = gsd_sincos_pos_embed(32, 4, torch.tensor([0.5]))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got[0].numpy(), reference(32, 4, 4, 0.5), atol=1e-6, rtol=0)
