"""Trunk, window attention, pyramid and heads of the detector."""

import pytest
import torch

from scalemae_det import build_detector
from scalemae_det.models.pyramid import SimpleFeaturePyramid
from scalemae_det.models.vit import Block, window_partition, window_unpartition


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_window_zero_equals_global_attention():
    block = Block(32, 4, 4.0, 0.0, window_size=0).eval()
    x = torch.randn(2, 6, 6, 32)
    whole = Block(32, 4, 4.0, 0.0, window_size=6).eval()  # one window covering the grid = global
    whole.load_state_dict(block.state_dict())
    torch.testing.assert_close(block(x), whole(x))
    split = Block(32, 4, 4.0, 0.0, window_size=3).eval()
    split.load_state_dict(block.state_dict())
    assert not torch.allclose(block(x), split(x), atol=1e-4)  # windows really restrict attention


def test_window_padding_is_cropped_back():
    x = torch.randn(2, 5, 7, 8)
    windows, padded = window_partition(x, 4)
    assert padded == (8, 8) and windows.shape == (2 * 4, 4, 4, 8)
    torch.testing.assert_close(window_unpartition(windows, 4, padded, (5, 7)), x)
    # a windowed block on an odd grid: each output equals attention within its own padded window
    block = Block(8, 2, 2.0, 0.0, window_size=4).eval()
    out = block(x)
    assert out.shape == x.shape
    y = block.norm1(x)
    padded_y = torch.nn.functional.pad(y, (0, 0, 0, 1, 0, 3))  # (2, 8, 8, 8)
    win = padded_y[:, 4:8, 0:4]
    attn = block.attn(win)[:, :1]  # row 4 of the grid, columns 0..3
    mid = x[:, 4:5, 0:4] + attn
    expected = mid + block.mlp(block.norm2(mid))
    torch.testing.assert_close(out[:, 4:5, 0:4], expected, atol=1e-5, rtol=1e-5)


def test_trunk_non_square_and_mixed_gsd_batch():
    model = build_detector("vit_tiny_patch16", 2).eval()
    trunk = model.backbone.trunk
    x = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        both = trunk(x, torch.tensor([0.3, 1.5]))
        first = trunk(x[:1], 0.3)
        second = trunk(x[1:], 1.5)
        other = trunk(x[:1], 1.5)
    assert both.shape == (2, 192, 6, 10)
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[1:], second, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(first, other, atol=1e-3)  # the GSD reaches the features


def test_pyramid_strides_and_channels():
    pyramid = SimpleFeaturePyramid(96, 256).eval()
    x = torch.randn(1, 96, 8, 12)  # the stride-16 map of a 128 x 192 image
    levels = pyramid(x)
    assert list(levels) == ["p2", "p3", "p4", "p5", "p6"]
    for (name, feat), stride in zip(levels.items(), (4, 8, 16, 32, 64)):
        assert feat.shape == (1, 256, -(-128 // stride), -(-192 // stride)), name


def test_every_roi_is_pooled_from_a_real_level():
    """The public ScaleMAE-Det code ordered levels coarse to fine, so RoIs pooled to zeros."""
    model = build_detector("vit_tiny_patch16", 2, rpn_post_nms_top_n=(500, 300)).eval()
    pooled = []
    model.roi_heads.box_roi_pool.register_forward_hook(lambda m, i, o: pooled.append(o))
    with torch.no_grad():
        model([torch.rand(3, 256, 256), torch.rand(3, 192, 224)], gsd=[0.5, 0.3])
    feats = pooled[0]
    assert feats.shape[0] > 100
    assert bool((feats.flatten(1).abs().sum(1) > 0).all())
    pool = model.roi_heads.box_roi_pool
    assert pool.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    # RoIs of every size class land on the level the FPN rule names (k0=4 at 224 px)
    boxes = torch.tensor([[0, 0, 30, 30], [0, 0, 120, 120], [0, 0, 224, 224], [0, 0, 500, 500.0]])
    assert pool.levels(boxes).tolist() == [0, 1, 2, 3]


def test_aligned_pooler_equals_torchvision_levels_and_roi_align():
    """Against torchvision's MultiScaleRoIAlign (its scales and FPN level of each RoI) and
    torchvision's roi_align with aligned=True, RoI by RoI."""
    from torchvision.ops import MultiScaleRoIAlign, roi_align

    from scalemae_det.models.detector import AlignedMultiScaleRoIAlign

    names = ["p2", "p3", "p4", "p5"]
    feats = {n: torch.randn(2, 8, 256 // s, 320 // s) for n, s in zip(names, (4, 8, 16, 32))}
    shapes = [(256, 320), (240, 300)]
    boxes = [  # sides about 20, 145 and 230 px: levels 2, 3 and 4 of the FPN rule
        torch.tensor([[3.0, 4, 20, 30], [10, 8, 250, 230]]),
        torch.tensor([[0.0, 0, 150, 140]]),
    ]
    ours = AlignedMultiScaleRoIAlign(names, 7, 2)
    got = ours(feats, boxes, shapes)
    theirs = MultiScaleRoIAlign(names, 7, 2)
    theirs(feats, boxes, shapes)  # sets its scales and level mapper
    assert ours.scales == theirs.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    big = torch.tensor([[0, 0, 30, 30], [0, 0, 120, 120], [0, 0, 224, 224], [0, 0, 500, 500.0]])
    for b in (torch.cat(boxes), big):
        assert ours.levels(b).tolist() == theirs.map_levels([b]).tolist()
    levels = theirs.map_levels(boxes).tolist()
    assert levels == [0, 2, 1]
    rows = [(i, b) for i, bs in enumerate(boxes) for b in bs]
    for k, ((image, box), level) in enumerate(zip(rows, levels)):
        want = roi_align(
            feats[names[level]][image : image + 1],
            [box[None]],
            7,
            theirs.scales[level],
            2,
            aligned=True,
        )
        torch.testing.assert_close(got[k : k + 1], want)


def test_detector_outputs_and_losses():
    model = build_detector("vit_tiny_patch16", 3)
    images = [torch.rand(3, 128, 128), torch.rand(3, 128, 96)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20, 60, 50]]), "labels": torch.tensor([3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    losses = model(images, targets, gsd=0.5)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model(images, gsd=torch.tensor([0.5, 0.25]))
    assert [o["boxes"].shape[1] for o in out] == [4, 4]
    for o, (h, w) in zip(out, [(128, 128), (128, 96)]):  # boxes in the input's own pixels
        if len(o["boxes"]):
            assert o["boxes"][:, 2].max() <= w and o["boxes"][:, 3].max() <= h
            assert o["labels"].min() >= 1 and o["labels"].max() <= 3
    with pytest.raises(ValueError, match="GSD values"):
        model(images, gsd=[0.5, 0.5, 0.5])


def test_configs_and_overrides():
    model = build_detector("vit_tiny_patch16", 1, window_size=0, res_per_metre=2.0)
    assert all(b.window_size == 0 for b in model.backbone.trunk.blocks)
    assert model.config.res_per_metre == 2.0
    torch.testing.assert_close(
        model.res_factors(0.3, 2, torch.device("cpu")),
        torch.tensor([0.6, 0.6], dtype=torch.float64),
    )
    with pytest.raises(ValueError, match="unknown config"):
        build_detector("vit_tiny_patch16", 1, not_a_field=1)
    with pytest.raises(KeyError, match="vit_large_patch16"):
        build_detector("vit_huge", 1)


def _far_edge_matches(
    reference: torch.Tensor, other: torch.Tensor, size: int
) -> tuple[int, float, float]:
    """Boxes of `reference` reaching the last 12% of a size x size image, each against its best-IoU
    box
    of `other`: (how many, lowest IoU, largest coordinate difference in px)."""
    from scalemae_det.metrics.xview_ap import box_iou

    far = reference[(reference[:, 2] > 0.88 * size) | (reference[:, 3] > 0.88 * size)]
    iou = torch.from_numpy(box_iou(far.double().numpy(), other.double().numpy()))
    best = iou.argmax(1)
    diff = (far.double() - other[best].double()).abs().max(1).values
    return len(far), float(iou.max(1).values.min()), float(diff.max())


def test_bf16_autocast_gives_float32_boxes():
    """Under bf16 autocast only the backbone is reduced: proposals and detections stay float32.

    Without that, torchvision decodes deltas in bf16 and coordinates past 512 px are multiples of 4.
    The same random detector, 1024 px input, compared on the boxes near the far edges.
    """
    torch.manual_seed(0)  # a random detector: fixed, so the far-edge boxes exist every run
    model = build_detector("vit_tiny_patch16", 2).eval()
    image = torch.rand(3, 1024, 1024)
    proposals = {}
    model.rpn.register_forward_hook(lambda m, i, o: proposals.__setitem__("boxes", o[0][0]))

    def run(amp: bool):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model([image], gsd=0.3)[0]
        return out["boxes"], proposals["boxes"]

    (_, props32), (boxes16, props16) = run(False), run(True)
    assert boxes16.dtype == props16.dtype == torch.float32
    # bf16 keeps 8 significant bits: a coordinate in [512, 1024) decoded in bf16 is a multiple of 4.
    # The bf16 run's own far coordinates must not be (float32 decoding gives any value).
    for boxes in (props16, boxes16):
        far = boxes[:, 2:][boxes[:, 2:] > 512]
        assert len(far) >= 10
        assert float((far % 4 != 0).double().mean()) > 0.9
    n, _, _ = _far_edge_matches(props32, props16, 1024)
    assert n >= 10  # the float32 run reaches the far edges too


def test_box_losses_are_torchvisions_at_its_beta_and_l1_at_beta_zero():
    """beta 1/9 reproduces torchvision's own RPN and RoI losses exactly (same samples, same seed);
    the default beta 0 (ViTDet) is the plain L1 of the sampled deltas."""
    from torchvision.models.detection.roi_heads import RoIHeads
    from torchvision.models.detection.rpn import RegionProposalNetwork

    images = [torch.rand(3, 128, 128), torch.rand(3, 96, 128)]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20, 60, 50], [70, 70, 90, 84]]),
            "labels": torch.tensor([1, 2]),
        },
        {"boxes": torch.tensor([[5.0, 5, 40, 30]]), "labels": torch.tensor([2])},
    ]

    def losses(model):
        torch.manual_seed(5)
        return model(images, targets, gsd=0.5)

    model = build_detector("vit_tiny_patch16", 2, box_loss_beta=1 / 9)
    ours = losses(model)
    model.rpn.__class__, model.roi_heads.__class__ = RegionProposalNetwork, RoIHeads
    stock = losses(model)
    assert set(ours) == set(stock)
    for name in ours:
        torch.testing.assert_close(ours[name], stock[name], rtol=1e-6, atol=0)

    model = build_detector("vit_tiny_patch16", 2)
    assert model.config.box_loss_beta == 0.0
    seen = {}
    heads = model.roi_heads
    sample = heads.select_training_samples
    heads.select_training_samples = lambda p, t: seen.setdefault("samples", sample(p, t))
    heads.box_predictor.register_forward_hook(lambda m, i, o: seen.__setitem__("deltas", o[1]))
    l1 = losses(model)["loss_box_reg"]
    _, _, labels, regression_targets = seen["samples"]
    labels, regression_targets = torch.cat(labels), torch.cat(regression_targets)
    pos = labels > 0
    assert 0 < int(pos.sum()) < len(labels)
    deltas = seen["deltas"].reshape(len(labels), -1, 4)[pos, labels[pos]]
    torch.testing.assert_close(l1, (deltas - regression_targets[pos]).abs().sum() / len(labels))


def test_box_reg_loss_weight_scales_the_box_heads_regression_alone():
    """The weight multiplies the RoI head's box loss and nothing else: same samples (same seed),
    the other three losses are equal and loss_box_reg is the weight times the unweighted one."""
    images = [torch.rand(3, 128, 128)]
    targets = [{"boxes": torch.tensor([[10.0, 20, 60, 50], [70, 70, 90, 84]]),
                "labels": torch.tensor([1, 1])}]  # fmt: skip

    def losses(**overrides):
        torch.manual_seed(0)
        model = build_detector("vit_tiny_patch16", 1, **overrides)
        torch.manual_seed(5)
        return model(images, targets, gsd=0.5)

    plain, weighted = losses(), losses(box_reg_loss_weight=2.5)
    assert float(plain["loss_box_reg"]) > 0
    torch.testing.assert_close(weighted["loss_box_reg"], 2.5 * plain["loss_box_reg"])
    for name in ("loss_objectness", "loss_rpn_box_reg", "loss_classifier"):
        torch.testing.assert_close(weighted[name], plain[name], rtol=0, atol=0)
    with pytest.raises(ValueError, match="box_reg_loss_weight must be positive"):
        build_detector("vit_tiny_patch16", 1, box_reg_loss_weight=0)


def _refine_setup(steps: int):
    """A tiny detector whose box head shifts every box right by a tenth of its width (dx 1.0 at
    torchvision's box-coder weight 10, other deltas 0), random class scores, no NMS, no threshold;
    its features on a random 192 px image; six proposals away from the borders."""
    model = build_detector("vit_tiny_patch16", 1).eval()
    heads = model.roi_heads
    heads.refine_steps, heads.score_thresh, heads.nms_thresh = steps, 0.0, 1.0
    bbox_pred = heads.box_predictor.bbox_pred
    torch.nn.init.zeros_(bbox_pred.weight)
    torch.nn.init.zeros_(bbox_pred.bias)
    with torch.no_grad():
        bbox_pred.bias[4] = 1.0  # class 1's dx
        heads.box_predictor.cls_score.weight.normal_(0, 0.05)
    with torch.no_grad():
        features = model.backbone(torch.rand(1, 3, 192, 192), 0.3 * model.config.res_per_metre)
    corners = torch.tensor(
        [[20.0, 30.0], [60.0, 40.0], [100.0, 90.0], [30, 120], [80, 20], [50, 60]]
    )
    sizes = torch.tensor([[24.0, 20.0], [16, 30], [40, 36], [20, 20], [28, 18], [32, 32]])
    proposals = torch.cat([corners, corners + sizes], dim=1)
    return model, features, proposals


@pytest.mark.parametrize("steps", [1, 2])
def test_refined_boxes_move_once_per_pass_and_scores_average_the_passes(steps):
    """L1RoIHeads.refined, rules 1-4, against boxes placed by hand: after the first pass and each
    of `steps` more a box has moved right by a tenth of its width (steps + 1 times in all), and its
    score is the mean of the class-1 probabilities the head gives at each position it visited."""
    model, features, proposals = _refine_setup(steps)
    heads, shapes = model.roi_heads, [(192, 192)]
    width = proposals[:, 2] - proposals[:, 0]
    shift = torch.zeros_like(proposals)
    visited, probs = [], []
    for k in range(steps + 1):
        shift[:, 0] = shift[:, 2] = k * 0.1 * width
        visited.append(proposals + shift)
    with torch.no_grad():
        for boxes in visited:
            logits, _ = heads.box_predictor(
                heads.box_head(heads.box_roi_pool(features, [boxes], shapes))
            )
            probs.append(torch.softmax(logits, -1)[:, 1])
        (det,) = heads.refined(features, [proposals], shapes)
    shift[:, 0] = shift[:, 2] = (steps + 1) * 0.1 * width
    expected_boxes, expected_scores = proposals + shift, torch.stack(probs).mean(0)
    order = torch.argsort(det["boxes"][:, 0] * 1000 + det["boxes"][:, 1])
    want = torch.argsort(expected_boxes[:, 0] * 1000 + expected_boxes[:, 1])
    torch.testing.assert_close(det["boxes"][order], expected_boxes[want], atol=1e-3, rtol=0)
    torch.testing.assert_close(det["scores"][order], expected_scores[want], atol=1e-5, rtol=1e-4)
    assert bool((det["labels"] == 1).all())
    assert not torch.allclose(probs[0], probs[-1], atol=1e-4)  # the passes saw different boxes


def test_refined_with_still_boxes_is_torchvision_inference():
    """A head that moves no box sees the same boxes every pass, so refinement changes nothing:
    `refine_steps` 2 gives torchvision's own RoIHeads inference (refine_steps 0) box for box."""
    model, features, proposals = _refine_setup(0)
    heads = model.roi_heads
    torch.nn.init.zeros_(heads.box_predictor.bbox_pred.bias)
    with torch.no_grad():
        (plain,), _ = heads(features, [proposals], [(192, 192)])
        heads.refine_steps = 2
        (refined,), _ = heads(features, [proposals], [(192, 192)])
    assert len(plain["boxes"]) == len(proposals)
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(refined[key], plain[key], atol=1e-5, rtol=1e-5)


def test_training_passes_score_the_heads_own_moved_boxes():
    """L1RoIHeads.training_losses, rules 1-3, against a reference computed by hand: with a head
    that shifts every box right by a tenth of its width, the second pass's boxes are the first
    pass's samples shifted and clipped, labelled by IoU >= 0.5 with the ground truth, with
    torchvision's box encoding (weights 10, 10, 5, 5) as targets; each loss is the mean of the
    two passes', and the first pass's is the loss of the model trained without the extra pass."""
    from torchvision.ops import box_iou

    images = [torch.rand(3, 128, 128)]
    truth = torch.tensor([[10.0, 20, 60, 50], [70, 70, 90, 84], [96, 30, 127, 70]])
    targets = [{"boxes": truth, "labels": torch.tensor([1, 1, 1])}]

    def run(steps):
        torch.manual_seed(0)
        model = build_detector("vit_tiny_patch16", 1, train_refine_steps=steps)
        bbox_pred = model.roi_heads.box_predictor.bbox_pred
        torch.nn.init.zeros_(bbox_pred.weight)
        with torch.no_grad():
            bbox_pred.bias.zero_()
            bbox_pred.bias[4] = 1.0  # class 1's dx: a tenth of the width at weight 10
        heads, seen = model.roi_heads, {}
        sample = heads.select_training_samples
        heads.select_training_samples = lambda p, t: seen.setdefault("samples", sample(p, t))
        heads.box_roi_pool.register_forward_hook(
            lambda m, i, o: None if "features" in seen else seen.update(features=i[0])
        )
        torch.manual_seed(5)
        return model, model(images, targets, gsd=0.5), seen

    _, one, _ = run(0)
    model, two, seen = run(1)
    heads = model.roi_heads
    boxes = seen["samples"][0][0]
    w = boxes[:, 2] - boxes[:, 0]
    moved = boxes + torch.stack([w, torch.zeros_like(w), w, torch.zeros_like(w)], 1) * 0.1
    moved = torch.stack([moved[:, 0].clamp(0, 128), moved[:, 1].clamp(0, 128),
                         moved[:, 2].clamp(0, 128), moved[:, 3].clamp(0, 128)], 1)  # fmt: skip
    moved = moved[((moved[:, 2] - moved[:, 0]) >= 1e-2) & ((moved[:, 3] - moved[:, 1]) >= 1e-2)]
    iou, match = box_iou(moved, truth).max(1)
    labels = (iou >= 0.5).long()
    assert 0 < int(labels.sum()) < len(labels)
    gt = truth[match]
    pw, ph = moved[:, 2] - moved[:, 0], moved[:, 3] - moved[:, 1]
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    targets_by_hand = torch.stack([
        10 * ((gt[:, 0] + gw / 2) - (moved[:, 0] + pw / 2)) / pw,
        10 * ((gt[:, 1] + gh / 2) - (moved[:, 1] + ph / 2)) / ph,
        5 * torch.log(gw / pw), 5 * torch.log(gh / ph)], 1)  # fmt: skip
    with torch.no_grad():
        pooled = heads.box_roi_pool(seen["features"], [moved], [(128, 128)])
        logits, deltas = heads.box_predictor(heads.box_head(pooled))
    pos = labels > 0
    cls = torch.nn.functional.cross_entropy(logits, labels)
    box = (deltas.reshape(len(labels), -1, 4)[pos, 1] - targets_by_hand[pos]).abs().sum()
    box = box / len(labels)
    torch.testing.assert_close(two["loss_classifier"], (one["loss_classifier"] + cls) / 2)
    torch.testing.assert_close(two["loss_box_reg"], (one["loss_box_reg"] + box) / 2)
    for name in ("loss_objectness", "loss_rpn_box_reg"):
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=0)


def test_training_passes_take_images_without_objects_and_check_their_count():
    """A tile with no ground truth trains with the extra pass (every box background, no box
    loss), gradients reach the box head from both passes' losses, and the count is bounded."""
    model = build_detector("vit_tiny_patch16", 1, train_refine_steps=2)
    targets = [
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": torch.tensor([[10.0, 20, 60, 50]]), "labels": torch.tensor([1])},
    ]
    losses = model([torch.rand(3, 96, 96), torch.rand(3, 96, 96)], targets, gsd=0.5)
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    sum(losses.values()).backward()
    assert float(model.roi_heads.box_head[0][0].weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="train_refine_steps must be 0-3"):
        build_detector("vit_tiny_patch16", 1, train_refine_steps=4)
