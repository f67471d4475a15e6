"""ScaleMAE's GSD-aware 2-D sin-cos positional embedding (Reed et al., "Scale-MAE", ICCV 2023,
arXiv:2212.14532, section 3.1; upstream `get_2d_sincos_pos_embed_with_resolution` in
bair-climate-initiative/scale-mae, mae/util/pos_embed.py).

Patch (row i, column j) sits at x = j * res, y = i * res, so the same ground distance gets the
same phase whatever the pixel size: that is what makes the backbone scale-aware.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gsd_sincos_pos_embed(
    embed_dim: int, grid_size: int | tuple[int, int], res: float | Tensor
) -> Tensor:
    """Embedding (H*W, D) for a float `res`, (N, H*W, D) for a 1-D tensor of per-sample factors.

    `res` is GSD in metres times the model's `res_per_metre`. Computed in float64 and returned as
    float32 whatever autocast says: the phases reach hundreds of radians, where half precision
    (or even float32 arithmetic) loses the low-order digits.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4, got {embed_dim}")
    h, w = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    batched = isinstance(res, Tensor)
    device = res.device if batched else None
    r = (
        res.detach().to(torch.float64).reshape(-1, 1)
        if batched
        else torch.tensor([[float(res)]], dtype=torch.float64)
    )
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64, device=device) / quarter)
    x = torch.arange(w, dtype=torch.float64, device=device) * r  # (N, W)
    y = torch.arange(h, dtype=torch.float64, device=device) * r  # (N, H)
    ax = x[..., None] * omega  # (N, W, D/4)
    ay = y[..., None] * omega  # (N, H, D/4)
    ex = torch.cat([ax.sin(), ax.cos()], dim=-1)[:, None, :, :].expand(-1, h, -1, -1)
    ey = torch.cat([ay.sin(), ay.cos()], dim=-1)[:, :, None, :].expand(-1, -1, w, -1)
    emb = torch.cat([ex, ey], dim=-1).reshape(r.shape[0], h * w, embed_dim).to(torch.float32)
    return emb if batched else emb[0]
