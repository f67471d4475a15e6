"""ViTDet's decomposed relative position bias (models/vit.py): zero tables change nothing, non-zero
tables give the attention written out by hand, and the ONNX export of a detector with them keeps
parity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm.layers
import torch

from helpers.onnx import assert_same, run_onnx
from helpers.tiny import TINY_CLASSES, TINY_GSD, TINY_TILE, calibrated_detector
from scalemae_det.export.onnx_export import export_onnx
from scalemae_det.export.options import ExportSpec
from scalemae_det.export.parity import BLANK_INDEX, validation_tiles
from scalemae_det.models.detector import build_detector
from scalemae_det.models.vit import Attention
from scalemae_det.models.weights import detector_state, load_detector

DIM, HEADS = 24, 3


def tables(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if "rel_pos" in name}


def randomise_tables(model: torch.nn.Module, std: float = 0.3) -> None:
    with torch.no_grad():
        for p in tables(model).values():
            p.normal_(0, std)


def resized(table: torch.Tensor, rows: int) -> torch.Tensor:
    """Linear resampling of the table to `rows` entries, sample centres aligned
    (align_corners=False),
    the ends held: a matrix made with numpy's interp (independent of torch's interpolate), applied
    with a matmul so that gradients pass."""
    n = len(table)
    src = (np.arange(rows) + 0.5) * n / rows - 0.5
    weights = np.stack([np.interp(src, np.arange(n), unit) for unit in np.eye(n)], 1)  # (rows, n)
    return torch.from_numpy(weights) @ table


def reference_attention(
    attn: Attention, x: torch.Tensor, table_h: torch.Tensor, table_w: torch.Tensor
) -> torch.Tensor:
    """Attention on a (B, H, W, C) grid in float64, the bias of query (i, j) and key (k, l) being
    q . (Th[i - k] + Tw[j - l]) with each table resampled to 2 * side - 1 offsets: the full, not
    decomposed, table gathered pair by pair."""
    b, h, w, c = x.shape
    d = c // attn.num_heads
    qkv = x.double().reshape(b, h * w, c) @ attn.qkv.weight.double().t() + attn.qkv.bias.double()
    q, k, v = (
        qkv[..., s * c : (s + 1) * c].reshape(b, h * w, attn.num_heads, d).transpose(1, 2)
        for s in range(3)
    )
    rows_h = table_h if len(table_h) == 2 * h - 1 else resized(table_h, 2 * h - 1)
    rows_w = table_w if len(table_w) == 2 * w - 1 else resized(table_w, 2 * w - 1)
    full = torch.zeros(h * w, h * w, d, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            for kk in range(h):
                for ll in range(w):
                    full[i * w + j, kk * w + ll] = rows_h[i - kk + h - 1] + rows_w[j - ll + w - 1]
    logits = q @ k.transpose(-1, -2) / math.sqrt(d) + torch.einsum("bnqd,qkd->bnqk", q, full)
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, h * w, c)
    return (out @ attn.proj.weight.double().t() + attn.proj.bias.double()).reshape(b, h, w, c)


def test_attention_without_tables_is_timms():
    torch.manual_seed(0)
    ours = Attention(DIM, HEADS)
    timms = timm.layers.Attention(DIM, num_heads=HEADS, qkv_bias=True)
    timms.load_state_dict(ours.state_dict())
    x = torch.randn(2, 5, 6, DIM)
    assert torch.equal(ours(x), timms(x.reshape(2, 30, DIM)).reshape(2, 5, 6, DIM))


@pytest.mark.parametrize(
    "grid", [(4, 4), (3, 6)]
)  # tables built for side 4: used as built; resampled per axis
def test_nonzero_tables_give_the_written_out_attention_and_its_gradient(grid):
    torch.manual_seed(0)
    attn = Attention(DIM, HEADS, rel_pos_side=4)
    randomise_tables(attn)
    x = torch.randn(2, *grid, DIM)
    th = attn.rel_pos_h.detach().double().requires_grad_()
    tw = attn.rel_pos_w.detach().double().requires_grad_()
    want = reference_attention(attn, x, th, tw)
    got = attn(x)
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=1e-4)
    with torch.no_grad():
        plain = Attention(DIM, HEADS)
        plain.load_state_dict(attn.state_dict(), strict=False)
        assert (plain(x) - got).abs().max() > 0.05  # the tables matter
    g = torch.randn_like(want)  # the tables learn: their gradients are the written-out attention's
    (got.double() * g).sum().backward()
    (want * g).sum().backward()
    torch.testing.assert_close(attn.rel_pos_h.grad.double(), th.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(attn.rel_pos_w.grad.double(), tw.grad, atol=1e-5, rtol=1e-4)


def test_zero_tables_leave_the_detector_exactly_as_without_them():
    torch.manual_seed(0)
    plain = build_detector("vit_tiny_patch16", 3).eval()
    biased = build_detector("vit_tiny_patch16", 3, rel_pos=True, rel_pos_grid=5).eval()
    missing = biased.load_state_dict(plain.state_dict(), strict=False).missing_keys
    cfg = biased.config
    # windowed blocks' tables span their window, global blocks' the configured grid
    shapes = {name: tuple(p.shape) for name, p in tables(biased).items()}
    assert sorted(missing) == sorted(shapes)
    assert shapes == {
        f"backbone.trunk.blocks.{i}.attn.rel_pos_{a}": (
            2 * (5 if i in cfg.global_blocks else cfg.window_size) - 1,
            64,
        )
        for i in range(cfg.depth)
        for a in "hw"
    }
    assert all(not p.any() for p in tables(biased).values())
    images = [
        torch.rand(3, 128, 160),
        torch.rand(3, 128, 160),
    ]  # an 8 x 10 grid: global tables resampled
    with torch.no_grad():
        a, b = plain(images, gsd=0.5), biased(images, gsd=0.5)
    assert sum(len(d["boxes"]) for d in a) > 0
    for da, db in zip(a, b):
        assert all(torch.equal(da[k], db[k]) for k in ("boxes", "scores", "labels"))
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 50.0, 60.0]]), "labels": torch.tensor([1])}] * 2
    losses = []
    for model in (plain.train(), biased.train()):
        with torch.random.fork_rng():
            torch.manual_seed(1)
            losses.append(model(images, targets, gsd=0.5))
    # Same losses to float32 rounding: with tables the attention runs as an explicit softmax with a
    # (zero) bias instead of the fused kernel, which sums in another order (about 1e-7 apart).
    assert losses[0].keys() == losses[1].keys()
    for k in losses[0]:
        torch.testing.assert_close(losses[0][k], losses[1][k], rtol=1e-5, atol=1e-6)
    randomise_tables(biased)
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        assert (plain.backbone.trunk(x, 0.5) - biased.backbone.trunk(x, 0.5)).abs().max() > 0.05


def test_detector_checkpoint_keeps_the_tables(tmp_path):
    torch.manual_seed(0)
    model = build_detector("vit_tiny_patch16", 3, rel_pos=True, rel_pos_grid=6).eval()
    randomise_tables(model)
    torch.save(detector_state(model, TINY_CLASSES, TINY_GSD), tmp_path / "d.pt")
    loaded, _ = load_detector(tmp_path / "d.pt")
    assert loaded.config.rel_pos and loaded.config.rel_pos_grid == 6
    for name, p in tables(model).items():
        assert torch.equal(tables(loaded)[name], p)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(loaded.backbone.trunk(x, 0.5), model.backbone.trunk(x, 0.5))


def test_onnx_export_with_nonzero_tables_keeps_parity(tmp_path):
    """Tables built for a 6 x 6 grid, exported at tile 128 (8 x 8): the global blocks' resampling is
    traced too."""
    model = calibrated_detector(randomise_tables, rel_pos=True, rel_pos_grid=6)
    assert all(p.abs().max() > 0.5 for p in tables(model).values())
    ckpt = tmp_path / "rel_pos.pt"
    torch.save(detector_state(model, TINY_CLASSES, TINY_GSD), ckpt)
    result = export_onnx(
        ckpt, tmp_path / "rel_pos.onnx", ExportSpec(tile=TINY_TILE, batch=1, simplify=False)
    )
    assert result.report.passed
    tiles = validation_tiles(TINY_TILE, 3)
    with torch.no_grad():
        want = [
            {k: v.numpy() for k, v in d.items()}
            for d in model(list(torch.from_numpy(tiles)), gsd=TINY_GSD)
        ]
        for p in tables(model).values():
            p.zero_()
        without = model(list(torch.from_numpy(tiles)), gsd=TINY_GSD)
    assert len(want[BLANK_INDEX]["scores"]) == 0 and all(
        len(d["scores"]) for i, d in enumerate(want) if i != BLANK_INDEX
    )
    assert any(
        len(w["scores"]) != len(o["scores"])
        or not np.allclose(w["scores"], o["scores"].numpy(), atol=1e-3)
        for w, o in zip(want, without)
    )  # the tables change the detections being compared
    assert_same(run_onnx(result.path, tiles, 1), want)
