"""The tiny detector really learns: bright rectangles on noise, a few hundred CPU steps."""

import numpy as np
import torch

from scalemae_det import build_detector
from scalemae_det.metrics.coco_ap import detections_to_coco, evaluate_detections

SIZE = 128


def rectangles(n: int, seed: int):
    """Images with 1-3 rectangles: class 1 bright, class 2 dark-red, 14-44 px sides, on noise."""
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(n):
        img = rng.uniform(0.2, 0.45, (3, SIZE, SIZE)).astype(np.float32)
        boxes, labels = [], []
        for _ in range(rng.integers(1, 4)):
            w, h = rng.integers(14, 45, 2)
            x, y = rng.integers(0, SIZE - w), rng.integers(0, SIZE - h)
            label = int(rng.integers(1, 3))
            img[:, y : y + h, x : x + w] = (
                [[[0.95]], [[0.95]], [[0.9]]] if label == 1 else [[[0.7]], [[0.05]], [[0.05]]]
            )
            boxes.append([x, y, x + w, y + h])
            labels.append(label)
        images.append(torch.from_numpy(img))
        targets.append(
            {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}
        )
    return images, targets


def coco_map50(model, images, targets) -> float:
    """AP@0.5 with the project's evaluator (itself checked against pycocotools in
    metrics/test_coco_ap.py)."""
    gt = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 1, "name": "bright"}, {"id": 2, "name": "red"}],
    }
    model.eval()
    with torch.no_grad():
        outputs = model(images, gsd=0.5)
    for i, t in enumerate(targets):
        gt["images"].append({"id": i, "width": SIZE, "height": SIZE})
        for b, lab in zip(t["boxes"].tolist(), t["labels"].tolist()):
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": i,
                    "category_id": lab,
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "iscrowd": 0,
                }
            )
    dets = detections_to_coco(outputs, [{"image_id": i} for i in range(len(targets))], [1, 2])
    return evaluate_detections(gt, dets)["AP50"] if dets else 0.0


def test_tiny_detector_learns_rectangles():
    torch.manual_seed(0)
    torch.set_num_threads(1)  # oversubscribed threads are 4x slower on a shared 2-core box
    model = build_detector("vit_tiny_patch16", 2)
    train_x, train_y = rectangles(64, seed=1)
    test_x, test_y = rectangles(16, seed=2)
    before = coco_map50(model, test_x, test_y)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05)
    losses = []
    for step in range(150):
        idx = [(4 * step + k) % len(train_x) for k in range(4)]
        model.train()
        loss = sum(model([train_x[i] for i in idx], [train_y[i] for i in idx], gsd=0.5).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = coco_map50(model, test_x, test_y)
    print(
        f"loss {np.mean(losses[:20]):.3f} -> {np.mean(losses[-20:]):.3f}; mAP@0.5 {before:.3f} -> "
        f"{after:.3f}"
    )
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:20])
    assert before < 0.05
    assert after > 0.6
