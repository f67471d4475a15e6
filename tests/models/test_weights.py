"""Loading the two published ScaleMAE layouts (the scale-mae release's full MAE checkpoint and
torchgeo's encoder-only `ScaleMAELarge16_Weights`, torchgeo/models/scale_mae.py), scaled down to the
tiny config."""

import argparse
import os
import pathlib

import pytest
import torch

from helpers.checkpoints import DEPTH, D, encoder_state
from scalemae_det import build_detector, load_pretrained
from scalemae_det.base.errors import UserError


def original_release(path, state):
    decoder = {
        "decoder_embed.weight": torch.zeros(8, D),
        "mask_token": torch.zeros(1, 1, 8),
        "mask_token_decoder": torch.zeros(1, 1, 8),
        "pos_emb_projection.weight": torch.zeros(4, 4),
        "fpn.fpn1.0.weight": torch.zeros(2),
        "fcn_high.conv.weight": torch.zeros(2),
        "fcn_low.conv.weight": torch.zeros(2),
        "fcn.conv.weight": torch.zeros(2),
    }
    args = argparse.Namespace(output_dir=pathlib.PosixPath("/tmp/out"), lr=1e-4)
    torch.save({"model": {**state, **decoder}, "args": args, "epoch": 799}, path)


def torchgeo(path, state):
    torch.save({**state, "head.weight": torch.zeros(62, D), "head.bias": torch.zeros(62)}, path)


@pytest.mark.parametrize("writer", [original_release, torchgeo])
def test_published_layouts_load(tmp_path, writer):
    torch.manual_seed(0)
    model = build_detector("vit_tiny_patch16", 2).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model.backbone.trunk(x, 0.3)
    state = encoder_state()
    writer(tmp_path / "w.pth", state)
    report = load_pretrained(model, tmp_path / "w.pth")
    assert report.missing == []
    assert len(report.loaded) == len(state) - 2  # all but cls_token and pos_embed
    assert {"cls_token", "pos_embed"} <= set(report.skipped)
    assert not any(k.startswith("decoder") for k in report.loaded)
    trunk_state = model.backbone.trunk.state_dict()
    for key in report.loaded:
        torch.testing.assert_close(trunk_state[key], state[key])
    with torch.no_grad():
        assert not torch.allclose(before, model.backbone.trunk(x, 0.3))


def test_relative_position_tables_the_encoder_lacks_start_at_zero(tmp_path):
    """ViTDet's way with MAE weights: the trunk with the bias on computes exactly what the encoder
    did."""
    path = tmp_path / "w.pth"
    original_release(path, encoder_state())
    plain = build_detector("vit_tiny_patch16", 2).eval()
    biased = build_detector("vit_tiny_patch16", 2, rel_pos=True).eval()
    tables = {n: p for n, p in biased.backbone.trunk.named_parameters() if "rel_pos" in n}
    with torch.no_grad():
        for p in tables.values():
            p.fill_(0.5)  # whatever they held, loading an encoder without them starts them at zero
    load_pretrained(plain, path)
    report = load_pretrained(biased, path)
    assert (
        report.missing == []
        and sorted(report.zeroed) == sorted(tables)
        and len(tables) == 2 * DEPTH
    )
    assert f"relative position tables zero-initialised {2 * DEPTH}" in str(report)
    assert all(not p.any() for p in tables.values())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(plain.backbone.trunk(x, 0.3), biased.backbone.trunk(x, 0.3))


def test_wrong_model_size_is_refused(tmp_path):
    torch.save(encoder_state(dim=96), tmp_path / "small.pth")
    model = build_detector("vit_tiny_patch16", 2)
    with pytest.raises(UserError, match=r"small\.pth: .*shape \(96"):
        load_pretrained(model, tmp_path / "small.pth")


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = "/tmp/scalemae_det_pickle_ran"


def test_malicious_pickle_refused_without_running(tmp_path):
    pathlib.Path(MARKER).unlink(missing_ok=True)
    torch.save({"model": encoder_state(), "evil": Exploit()}, tmp_path / "evil.pth")
    assert not os.path.exists(MARKER)
    with pytest.raises(UserError, match="evil.pth: refused to load"):
        load_pretrained(build_detector("vit_tiny_patch16", 2), tmp_path / "evil.pth")
    assert not os.path.exists(MARKER)


@pytest.mark.parametrize("content", [b"hello", b"\x89PNG\r\n\x1a\n" + bytes(range(256))])
def test_not_a_checkpoint(tmp_path, content):
    (tmp_path / "junk.pth").write_bytes(content)
    with pytest.raises(UserError, match="junk.pth: not a readable PyTorch checkpoint") as err:
        load_pretrained(build_detector("vit_tiny_patch16", 2), tmp_path / "junk.pth")
    assert "\n" not in str(err.value)
