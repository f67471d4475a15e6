"""Detections as rows of text: COCO results from xyxy boxes, as dicts or streamed as JSON text.

A COCO result is `{"image_id", "category_id", "bbox": [x, y, width, height], "score"}` (the
"results format" of cocodataset.org/#format-results, what pycocotools' `COCO.loadRes` reads).
Evaluation and the benchmarks want the dicts; the runtime writes scenes with hundreds of thousands
of boxes, where building one dict per box costs more memory and time than the detection itself
(a dict and its json.dumps are about 4x slower than formatting the same numbers into a row
template). So both renderings come from the same float64 columns here, and the text one formats
CHUNK rows at a time from `tolist()`ed columns: Python's `%r` of a float is its shortest
round-trip repr, the same digits `json.dumps` writes, so the file parses to exactly the dicts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import numpy as np

CHUNK = 8192  # rows formatted at a time: bounds the text held in memory whatever the number of rows


def chunks(n: int) -> Iterator[slice]:
    return (slice(start, min(start + CHUNK, n)) for start in range(0, n, CHUNK))


def format_rows(template: str, columns: Sequence[list]) -> list[str]:
    """`template % row` for each row of `columns` (one list per placeholder, all the same
    length)."""
    return [template % row for row in zip(*columns)]


def literal(text: str) -> str:
    """`text` as a JSON string, safe inside a %-template."""
    return json.dumps(text).replace("%", "%%")


def _columns(boxes: np.ndarray, scores: np.ndarray, category_ids: np.ndarray) -> list[list]:
    """category_id, x, y, width, height, score: float64, as python numbers."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return [
        np.asarray(category_ids).astype(np.int64).tolist(),
        *b[:, :2].T.tolist(),
        *(b[:, 2:] - b[:, :2]).T.tolist(),
        np.asarray(scores, np.float64).tolist(),
    ]


def coco_results(
    image_id: int | str, boxes: np.ndarray, scores: np.ndarray, category_ids: np.ndarray
) -> list[dict]:
    """COCO result dicts of one image: `boxes` (N, 4) xyxy pixels, `scores` (N,), `category_ids`
    (N,)."""
    return [
        {"image_id": image_id, "category_id": c, "bbox": [x, y, w, h], "score": s}
        for c, x, y, w, h, s in zip(*_columns(boxes, scores, category_ids))
    ]


def coco_results_json(
    image_id: int | str, boxes: np.ndarray, scores: np.ndarray, category_ids: np.ndarray
) -> Iterator[str]:
    """The JSON array of `coco_results(...)`, in pieces of at most CHUNK records."""
    template = (
        f'{{"image_id": {literal(image_id) if isinstance(image_id, str) else int(image_id)}, '
        '"category_id": %d, "bbox": [%r, %r, %r, %r], "score": %r}'
    )
    yield "["
    for k, part in enumerate(chunks(len(scores))):
        rows = format_rows(template, _columns(boxes[part], scores[part], category_ids[part]))
        yield (", " if k else "") + ", ".join(rows)
    yield "]"
