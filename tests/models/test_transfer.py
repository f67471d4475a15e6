"""models.transfer (train.py --init_from): what a trained detector gives a model for other classes,
checked tensor by tensor against the checkpoint and against a fresh model built under the same
seed."""

from __future__ import annotations

import pytest
import torch

from helpers.training import TINY
from scalemae_det.base.errors import InputError
from scalemae_det.models.detector import ScaleMAEDetector, build_detector
from scalemae_det.models.transfer import PREDICTOR, init_from
from scalemae_det.models.weights import config_from_dict, detector_state

OLD = ["a", "b", "c"]
NEW = ["c", "x", "a"]  # c and a kept (moved), x new, b dropped


@pytest.fixture(scope="module")
def trained() -> dict:
    """A detector checkpoint whose every tensor differs from any fresh initialisation."""
    torch.manual_seed(1)
    model = build_detector("vit_tiny_patch16", len(OLD), **TINY)
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.add_(torch.randn_like(p))
    return detector_state(model, OLD, 0.3)


def _fresh(ckpt: dict, names: list[str], seed: int, **overrides) -> ScaleMAEDetector:
    torch.manual_seed(seed)
    cfg = config_from_dict(ckpt["config"]).with_overrides(**overrides)
    return ScaleMAEDetector(cfg, len(names))


def test_every_shared_tensor_is_copied_bit_for_bit_and_class_rows_follow_names(trained):
    model = _fresh(trained, NEW, seed=5)
    fresh = _fresh(trained, NEW, seed=5).state_dict()  # what a new run would start from
    report = init_from(model, trained, NEW, "x.pt")
    got, theirs = model.state_dict(), trained["model"]
    shared = [k for k in got if not k.startswith(PREDICTOR)]
    assert len(shared) == len(report.copied) > 50
    for key in shared:
        assert torch.equal(got[key], theirs[key]), key
    # background row 0, then each new class k from the checkpoint's row of its name, or fresh
    source = {0: 0, 1: 3, 3: 1}  # new row -> old row (c was 3rd, a 1st); x (row 2) is new
    for key, per in (
        ("roi_heads.box_predictor.cls_score.weight", 1),
        ("roi_heads.box_predictor.cls_score.bias", 1),
        ("roi_heads.box_predictor.bbox_pred.weight", 4),
        ("roi_heads.box_predictor.bbox_pred.bias", 4),
    ):
        assert got[key].shape[0] == (len(NEW) + 1) * per
        for new in range(len(NEW) + 1):
            rows = got[key][new * per : (new + 1) * per]
            if new in source:
                old = source[new]
                assert torch.equal(rows, theirs[key][old * per : (old + 1) * per]), (key, new)
            else:
                assert torch.equal(rows, fresh[key][new * per : (new + 1) * per]), (key, new)
                assert not torch.equal(rows, theirs[key][2 * per : 3 * per])  # not b's row
    assert report.kept_classes == ("c", "a") and report.new_classes == ("x",)
    assert report.dropped_classes == ("b",) and report.not_fitting == ()
    text = "\n".join(report.lines())
    assert "classes kept by name: c, a; new (initialised): x" in text
    assert "classes of the checkpoint not trained on: b" in text


def test_tensors_an_override_reshapes_are_left_at_their_initialisation_and_listed(trained):
    model = _fresh(trained, NEW, seed=5, box_head_fc=48)  # another box head width
    fresh = _fresh(trained, NEW, seed=5, box_head_fc=48).state_dict()
    report = init_from(model, trained, NEW, "x.pt")
    got = model.state_dict()
    reshaped = {k for k, v in trained["model"].items() if v.shape != got[k].shape}
    assert reshaped and reshaped <= set(report.not_fitting)
    for key in report.not_fitting:  # the predictor's input width changed too: all of it is new
        assert torch.equal(got[key], fresh[key]), key
    assert any(k.startswith(PREDICTOR) for k in report.not_fitting)
    assert report.kept_classes == () and report.new_classes == tuple(NEW)
    for key in report.copied:
        assert torch.equal(got[key], trained["model"][key]), key
    assert "did not fit and were initialised" in "\n".join(report.lines())


def test_a_checkpoint_of_another_model_size_is_one_error(trained):
    torch.manual_seed(0)
    wider = build_detector("vit_tiny_patch16", 3, **{**TINY, "embed_dim": 64})
    with pytest.raises(InputError, match=r"x.pt: no trunk weight fits this model"):
        init_from(wider, trained, NEW, "x.pt")
