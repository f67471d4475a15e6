"""COCO label dicts with detections beside them, drawn at random: objects found (jittered, now
and then of the wrong class), missed, and false alarms.

    random_dataset(rng, n_images, cat_ids) -> (label dict, COCO result dicts)
"""

from __future__ import annotations


def random_dataset(rng, n_images=6, cat_ids=(3, 7, 12)):
    images = [
        {"id": 100 + i, "file_name": f"{i}.png", "width": 400, "height": 300}
        for i in range(n_images)
    ]
    anns, dets = [], []
    for img in images:
        for _ in range(rng.integers(0, 8)):
            w, h = rng.uniform(4, 150, 2)
            x, y = rng.uniform(0, 400 - w), rng.uniform(0, 300 - h)
            cat = int(rng.choice(cat_ids))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img["id"],
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            if rng.uniform() < 0.8:  # a detection near the object, sometimes of the wrong class
                jitter = rng.normal(0, 0.1 * min(w, h), 4)
                dets.append(
                    {
                        "image_id": img["id"],
                        "score": float(rng.uniform()),
                        "category_id": cat if rng.uniform() < 0.85 else int(rng.choice(cat_ids)),
                        "bbox": [x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]],
                    }
                )
        for _ in range(rng.integers(0, 3)):  # false alarms
            dets.append(
                {
                    "image_id": img["id"],
                    "category_id": int(rng.choice(cat_ids)),
                    "bbox": [*rng.uniform(0, 250, 2), *rng.uniform(5, 50, 2)],
                    "score": float(rng.uniform()),
                }
            )
    cats = [{"id": c, "name": f"class{c}"} for c in cat_ids]
    return {"images": images, "annotations": anns, "categories": cats}, dets
