"""Stand-ins for the released ScaleMAE encoder weights (keys and shapes of scale-mae
mae/models_vit.py)."""

from __future__ import annotations

import torch

D, DEPTH = 192, 4  # vit_tiny_patch16


def encoder_state(dim: int = D, depth: int = DEPTH) -> dict[str, torch.Tensor]:
    """The released encoder's keys and shapes (scale-mae mae/models_vit.py), at width `dim` and
    depth `depth`."""
    g = torch.Generator().manual_seed(1)
    shapes = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, 197, dim),
        "patch_embed.proj.weight": (dim, 3, 16, 16),
        "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        shapes |= {
            b + "norm1.weight": (dim,),
            b + "norm1.bias": (dim,),
            b + "attn.qkv.weight": (3 * dim, dim),
            b + "attn.qkv.bias": (3 * dim,),
            b + "attn.proj.weight": (dim, dim),
            b + "attn.proj.bias": (dim,),
            b + "norm2.weight": (dim,),
            b + "norm2.bias": (dim,),
            b + "mlp.fc1.weight": (4 * dim, dim),
            b + "mlp.fc1.bias": (4 * dim,),
            b + "mlp.fc2.weight": (dim, 4 * dim),
            b + "mlp.fc2.bias": (dim,),
        }
    return {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}
