"""Scoring detections of whole scenes: `scalemae-det score` and `scalemae-det evaluate
--scene-level`.

xView is scored on whole scenes (the official scorer takes one prediction file per scene,
DIUx-xView/xView1_baseline scoring/score.py). Chips overlap, so scoring chip by chip counts an
object in an overlap up to four times and cuts the ones on chip edges into pieces; and a
deployment runs `predict` on scenes, merging tiles at their seams. So the frame here is scene
pixels: ground truth and detections are brought into it, then scored by
`metrics.coco_ap.evaluate_detections` (COCO AP by pycocotools, the xView AP), plus the count of
duplicate detections (a second detection of an object already found), which is what a seam merge
that failed leaves behind.

- Ground truth: COCO JSON in scene pixels (image `file_name` = the scene's file name), what
  `prepare-xview` writes as `<split>_scenes.json`; or GeoJSON polygons in any CRS (the `crs`
  member, else WGS84 as RFC 7946 says), mapped to each scene's pixels through the scene raster's
  own georeference; or xView's own GeoJSON, whose `bounds_imcoords` are scene pixels already.
- Detections: `predict`'s GeoJSON (its `pixel_bbox` and `scene` properties: exact scene pixels,
  whatever CRS the polygons are in), or COCO results as `predict` writes them (image id = the
  scene's stem as a number, or its file name; category ids those of the COCO ground truth).
- Chips: `stitch_chips` moves chip detections to scene pixels by the chip records' `scene`, `x0`
  and `y0` and merges them with the runtime's own seam join (`runtime.seams`), so scene-level
  evaluation scores what `predict` would report.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from scalemae_det.base.errors import InputError, PathError
from scalemae_det.base.metadata import DEFAULT_OVERLAP
from scalemae_det.base.pixels import raster_errors
from scalemae_det.base.rows import coco_results
from scalemae_det.data.labels import coco_annotation, read_coco_json
from scalemae_det.metrics.coco_ap import evaluate_detections
from scalemae_det.metrics.xview_ap import ClassMatches, greedy_matches, xyxy
from scalemae_det.runtime.seams import join_seams
from scalemae_det.runtime.tiling import TRUNCATION_MARGIN, Tile, plan

log = logging.getLogger(__name__)

CLASS_PROPERTIES = (
    "label",
    "class",
    "category",
    "name",
)  # a truth feature's class, the first present
WGS84 = "EPSG:4326"


# --- reading --------------------------------------------------------------------------------------


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PathError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a JSON file: {exc}") from None


def _is_feature_collection(doc) -> bool:
    return (
        isinstance(doc, dict)
        and doc.get("type") == "FeatureCollection"
        and isinstance(doc.get("features"), list)
    )


def read_truth(path: str | os.PathLike, scenes: Sequence[str | os.PathLike] = ()) -> dict:
    """Ground truth as COCO in scene pixels, one image per scene (see the module doc).

    `scenes`: the scene rasters, needed only to map GeoJSON polygons in map coordinates to pixels.
    """
    path = Path(path)
    doc = _read_json(path)
    if _is_feature_collection(doc):
        return _geojson_truth(doc, path, [Path(s) for s in scenes])
    coco = read_coco_json(path)
    for img in coco["images"]:
        if not isinstance(img, dict) or not isinstance(img.get("file_name"), str):
            raise InputError(f"{path}: every image record needs a file_name (the scene's)")
    return coco


def _feature_class(props: dict) -> str | None:
    for key in CLASS_PROPERTIES:
        if props.get(key) not in (None, ""):
            return str(props[key])
    if "type_id" in props:  # xView's labels
        from scalemae_det.data.readers.xview import XVIEW_CLASSES

        return XVIEW_CLASSES.get(int(props["type_id"]), str(props["type_id"]))
    return None


def _geojson_truth(doc: dict, path: Path, scenes: list[Path]) -> dict:
    """COCO truth from GeoJSON: xView pixel bounds per image_id, or polygons reprojected into each
    scene."""
    pixel_boxes: dict[str, list[tuple[str, list[float]]]] = defaultdict(list)
    polygons: list[tuple[str, np.ndarray]] = []
    for feature in doc["features"]:
        props = (feature or {}).get("properties") or {}
        name = _feature_class(props)
        if name is None:
            raise InputError(
                f"{path}: a feature without a class ({', '.join(CLASS_PROPERTIES)} or type_id)"
            )
        if "bounds_imcoords" in props and "image_id" in props:
            try:
                box = [float(v) for v in str(props["bounds_imcoords"]).split(",")]
            except ValueError:
                box = []
            if len(box) == 4 and box[2] > box[0] and box[3] > box[1]:
                pixel_boxes[Path(str(props["image_id"])).name].append((name, box))
            continue
        coords = _exterior_coordinates(feature.get("geometry"))
        if coords is None:
            raise InputError(f"{path}: a feature whose geometry is not a Polygon or MultiPolygon")
        polygons.append((name, coords))
    if polygons and not scenes:
        raise InputError(
            f"{path}: polygons in map coordinates need the scene rasters to map them to pixels "
            "(give the scenes)"
        )
    per_scene = dict(pixel_boxes)
    sizes: dict[str, tuple[int, int]] = {}
    if polygons:
        per_scene.update(_polygons_in_scenes(polygons, _crs_of(doc, path), scenes, sizes))
    for name in pixel_boxes:
        if name not in sizes:  # not read already for the polygons
            sizes[name] = _raster_size(name, scenes)
    categories = sorted({cls for boxes in per_scene.values() for cls, _ in boxes})
    cat_id = {name: k for k, name in enumerate(categories, 1)}
    images, annotations = [], []
    for k, scene in enumerate(sorted(per_scene), 1):
        w, h = sizes[scene]
        images.append({"id": k, "file_name": scene, "width": w, "height": h})
        for cls, (x0, y0, x1, y1) in per_scene[scene]:
            annotations.append(
                coco_annotation(len(annotations) + 1, k, cat_id[cls], (x0, y0, x1, y1))
            )
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cat_id[n], "name": n} for n in categories],
    }


def _exterior_coordinates(geometry) -> np.ndarray | None:
    """(N, 2) exterior-ring coordinates of a Polygon or MultiPolygon (holes do not change a bounding
    box)."""
    if not isinstance(geometry, dict):
        return None
    if geometry.get("type") == "Polygon":
        rings = [geometry["coordinates"][0]]
    elif geometry.get("type") == "MultiPolygon":
        rings = [poly[0] for poly in geometry["coordinates"]]
    else:
        return None
    return np.asarray([pt[:2] for ring in rings for pt in ring], dtype=np.float64)


def _crs_of(doc: dict, path: Path):
    from rasterio.crs import CRS

    name = ((doc.get("crs") or {}).get("properties") or {}).get("name") or WGS84
    try:
        return CRS.from_user_input(name.replace("urn:ogc:def:crs:EPSG::", "EPSG:"))
    except Exception:  # rasterio raises its own CRSError, or ValueError, for names it cannot read
        raise InputError(f"{path}: unknown crs {name!r}") from None


def _raster_size(name: str, scenes: list[Path]) -> tuple[int, int]:
    """A scene's pixel size from its raster, when given, else unknown (0, 0: pycocotools needs
    none)."""
    import rasterio

    for scene in scenes:
        if scene.name == name:
            with raster_errors(scene), rasterio.open(scene) as ds:
                return ds.width, ds.height
    return 0, 0


def _polygons_in_scenes(
    polygons: list[tuple[str, np.ndarray]],
    crs,
    scenes: list[Path],
    sizes: dict[str, tuple[int, int]],
) -> dict[str, list[tuple[str, list[float]]]]:
    """Each polygon's pixel bounding box, clipped, in every scene it overlaps."""
    import rasterio
    from rasterio.warp import transform as warp

    counts = np.array([len(c) for _, c in polygons])
    coords = np.concatenate([c for _, c in polygons])
    owner = np.repeat(np.arange(len(polygons)), counts)
    out: dict[str, list[tuple[str, list[float]]]] = {}
    for scene in scenes:
        with raster_errors(scene), rasterio.open(scene) as ds:
            scene_crs, transform, w, h = ds.crs, ds.transform, ds.width, ds.height
        if scene_crs is None:
            raise InputError(
                f"{scene}: no georeference, so polygons in map coordinates cannot be placed in it"
            )
        xs, ys = (np.asarray(v) for v in warp(crs, scene_crs, coords[:, 0], coords[:, 1]))
        cols, rows = ~transform * (xs, ys)
        boxes = []
        for k, (cls, _) in enumerate(polygons):
            c, r = cols[owner == k], rows[owner == k]
            x0, y0, x1, y1 = max(c.min(), 0), max(r.min(), 0), min(c.max(), w), min(r.max(), h)
            if x1 > x0 and y1 > y0:
                boxes.append((cls, [float(x0), float(y0), float(x1), float(y1)]))
        sizes[scene.name] = (w, h)
        out[scene.name] = boxes
    return out


def results_for_truth(paths: Iterable[str | os.PathLike], truth: dict) -> list[dict]:
    """COCO results in the truth's image and category ids, from predict's files in any format
    (read by runtime.outputs.read_detections): scenes by file name or stem, classes by name; COCO
    results, which carry ids only, by image id (or its name) and category id.

    Detections of a scene or class the truth does not have cannot be scored: they are left out with
    a warning naming them.
    """
    from scalemae_det.runtime.outputs import read_detections

    by_name = {}
    for img in truth["images"]:
        by_name[img["file_name"]] = img["id"]
        by_name.setdefault(Path(img["file_name"]).stem, img["id"])
    ids = {img["id"] for img in truth["images"]}
    cat_by_name = {str(c.get("name", c["id"])): c["id"] for c in truth["categories"]}
    cat_ids = set(cat_by_name.values())
    out, unknown_scenes, unknown_classes = [], Counter(), Counter()
    for path in paths:
        found = read_detections(path)
        for k in range(len(found)):
            scene = found.scenes[k]
            if found.labels is None:  # COCO results
                image = scene if scene in ids else by_name.get(str(scene))
                cat = int(found.class_ids[k])
                known = cat in cat_ids
                label = str(cat)
            else:
                image = by_name.get(str(scene), by_name.get(Path(str(scene)).stem))
                label = found.labels[k]
                cat, known = cat_by_name.get(label), label in cat_by_name
            if image is None:
                unknown_scenes[str(scene)] += 1
            elif not known:
                unknown_classes[label] += 1
            else:
                x0, y0, x1, y1 = found.boxes[k].tolist()
                out.append(
                    {
                        "image_id": image,
                        "category_id": cat,
                        "score": float(found.scores[k]),
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                    }
                )
    for what, counts in (("scene", unknown_scenes), ("class", unknown_classes)):
        if counts:
            shown = ", ".join(f"{k} ({n})" for k, n in counts.most_common(10))
            log.warning(
                f"warning: {sum(counts.values())} detection(s) of a {what} the truth does not "
                "have, "
                f"not scored: {shown}"
            )
    return out


# --- chips to scenes ------------------------------------------------------------------------------


def chip_records(label_file: dict, path: str | os.PathLike) -> dict[int, dict]:
    """Chip image id -> its record, each with `scene`, `x0`, `y0`, `width`, `height` (prepare-xview
    writes them)."""
    records = {}
    for img in label_file["images"]:
        if not all(isinstance(img.get(k), int | str) for k in ("scene", "x0", "y0")):
            raise InputError(
                f"{path}: image {img.get('id')} has no scene, x0 and y0 (as prepare-xview writes); "
                "scene-level evaluation needs them"
            )
        records[img["id"]] = img
    return records


def stitch_chips(
    detections: Sequence[dict],
    chips: dict[int, dict],
    scene_truth: dict,
    *,
    match: str = "ios",
    match_threshold: float = 0.5,
) -> list[dict]:
    """Chip detections (COCO results in chip pixels) -> merged detections in scene pixels and scene
    image ids.

    Each chip is a tile of its scene: boxes near an inner chip edge are marked truncated as the
    runtime marks them (`TRUNCATION_MARGIN`), and `runtime.seams.join_seams` resolves the overlaps.
    """
    scene_of = {img["file_name"]: img for img in scene_truth["images"]}
    by_chip: dict[int, list[dict]] = defaultdict(list)
    for det in detections:
        by_chip[det["image_id"]].append(det)
    parts: dict[str, list[tuple[np.ndarray, ...]]] = defaultdict(list)
    for chip_id, dets in by_chip.items():
        chip = chips[chip_id]
        scene = scene_of.get(chip["scene"])
        if scene is None:
            raise InputError(
                f"scene {chip['scene']} of chip {chip.get('file_name')} is not in the scene labels"
            )
        x0, y0, w, h = int(chip["x0"]), int(chip["y0"]), int(chip["width"]), int(chip["height"])
        tile = Tile(
            chip_id,
            x0,
            y0,
            w,
            h,
            w,
            h,
            (x0 > 0, y0 > 0, x0 + w < scene["width"], y0 + h < scene["height"]),
        )
        boxes = np.asarray([xyxy(d["bbox"]) for d in dets], np.float64)
        parts[chip["scene"]].append(
            (
                tile.to_scene(boxes),
                tile.truncated(boxes, TRUNCATION_MARGIN),
                np.asarray([d["score"] for d in dets]),
                np.asarray([d["category_id"] for d in dets]),
                np.full(len(dets), chip_id),
            )
        )
    out = []
    for name, chunks in parts.items():
        boxes, truncated, scores, labels, tile_ids = (np.concatenate(c) for c in zip(*chunks))
        keep = join_seams(boxes, scores, labels, tile_ids, truncated, match, match_threshold)
        out += coco_results(scene_of[name]["id"], boxes[keep], scores[keep], labels[keep])
    return out


# --- scoring --------------------------------------------------------------------------------------


def duplicates(
    truth: dict,
    matches: dict[int, ClassMatches],
    tile: int | None = None,
    overlap: float = DEFAULT_OVERLAP,
) -> dict:
    """Second detections of an object already found (IoU >= threshold with a claimed box), from the
    detections' `greedy_matches` against `truth`.

    With `tile` (scene pixels) and `overlap` as predict ran, also how many of them are of objects
    that an inner tile edge of predict's tiling (`runtime.tiling.plan`) passes through: the ones a
    seam merge should have caught.
    """
    sizes = {img["id"]: (img.get("width", 0), img.get("height", 0)) for img in truth["images"]}
    total = at_seams = 0
    seams: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for m in matches.values():
        dup = m.duplicate
        total += int(dup.sum())
        if tile is None:
            continue
        for k in np.flatnonzero(dup).tolist():
            image, index = m.best[k]
            if image not in seams:
                seams[image] = _inner_edges(*sizes[image], tile, overlap)
            x0, y0, x1, y1 = m.gt_boxes[image][index]
            xs, ys = seams[image]
            at_seams += bool(((xs > x0) & (xs < x1)).any() or ((ys > y0) & (ys < y1)).any())
    out = {"duplicates": total}
    if tile is not None:
        out["seam_duplicates"] = at_seams
    return out


def _inner_edges(
    width: int, height: int, tile: int, overlap: float
) -> tuple[np.ndarray, np.ndarray]:
    """x and y positions of the tile edges inside a scene (the scene's own edges left out)."""
    tiles = plan(width, height, tile, tile, overlap)
    xs = {t.col for t in tiles} | {t.col + t.width for t in tiles}
    ys = {t.row for t in tiles} | {t.row + t.height for t in tiles}
    return (
        np.asarray(sorted(xs - {0, width}), np.float64),
        np.asarray(sorted(ys - {0, height}), np.float64),
    )


def score_scenes(
    truth: dict,
    detections: Sequence[dict],
    *,
    iou_threshold: float = 0.5,
    xview_counting: str = "corrected",
    ignore_category_ids: Sequence[int] = (),
    tile: int | None = None,
    overlap: float = DEFAULT_OVERLAP,
) -> dict:
    """`evaluate_detections` of scene detections (every detection of a scene counted: no per-image
    cap)
    with `duplicates` (and `seam_duplicates` given the tiling) added."""
    kept = [d for d in detections if d["score"] > 0]  # as evaluate_detections keeps them
    max_dets = max([100, *Counter(d["image_id"] for d in kept).values()])
    matches = greedy_matches(
        truth, kept, iou_threshold
    )  # once, for the xView AP and the duplicates
    metrics = evaluate_detections(
        truth,
        kept,
        iou_threshold=iou_threshold,
        max_dets=max_dets,
        xview_counting=xview_counting,
        ignore_category_ids=ignore_category_ids,
        matches=matches,
    )
    return {**metrics, **duplicates(truth, matches, tile, overlap)}
