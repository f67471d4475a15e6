"""The QGIS style inside predict's and merge's GeoPackages, read back as QGIS reads it.

References: sqlite3 (the table as stored), pyogrio/GDAL (the table as an OGR layer, which is how
QGIS opens it: QgsOgrUtils::loadStoredStyle in QGIS src/core/providers/ogr/qgsogrutils.cpp),
ElementTree for the QML, and the preview's palette for the colours.
"""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from rasterio.transform import from_origin

from scalemae_det.runtime.job import SceneOptions, predict_job
from scalemae_det.runtime.job_layer import merge_job
from scalemae_det.runtime.preview import PALETTE
from scalemae_det.synthetic.standin import CLASSES, build_model, scene_with_squares

pyogrio = pytest.importorskip("pyogrio", reason="GeoPackages need the gis extra (pyogrio)")

# QGIS's layer_styles columns (QgsOgrUtils::saveStyle), after the FID column `id`
QGIS_COLUMNS = [
    "f_table_catalog",
    "f_table_schema",
    "f_table_name",
    "f_geometry_column",
    "styleName",
    "styleQML",
    "styleSLD",
    "useAsDefault",
    "description",
    "owner",
    "ui",
    "update_time",
]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """predict of two overlapping scenes (red and blue squares) as GeoPackages, then merge."""
    root = tmp_path_factory.mktemp("style")
    model = build_model(root / "standin.onnx")
    corners = [(10, 10), (60, 30), (100, 80), (20, 100)]
    for name, x0 in (("a", 500_000), ("b", 500_080)):
        scene_with_squares(
            root / f"{name}.tif",
            140,
            140,
            corners,
            blue={1, 3},
            transform=from_origin(x0, 4_000_000, 1.0, 1.0),
        )
    options = SceneOptions(0.2, None, None, "auto", "resample", "ios", "gpkg", "wgs84", False)
    failed = predict_job([str(root / "a.tif"), str(root / "b.tif")], model, root / "out", options)
    assert failed == 0
    merge_job(root / "out", root / "merged.gpkg")
    return {"predict": root / "out" / "a.gpkg", "merge": root / "merged.gpkg"}


@pytest.mark.parametrize("writer", ["predict", "merge"])
def test_layer_styles_is_the_table_qgis_reads(outputs, writer):
    path = outputs[writer]
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(layer_styles)")]
        registered = db.execute(
            "SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'"
        ).fetchall()
        (geometry_column,) = db.execute(
            "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = 'detections'"
        ).fetchone()
        rows = db.execute(
            "SELECT f_table_schema, f_table_name, f_geometry_column, styleName, useAsDefault "
            "FROM layer_styles"
        ).fetchall()
    assert columns == ["id", *QGIS_COLUMNS] and registered == [("attributes",)]
    assert len(rows) == 1
    schema, table, geometry, name, default = rows[0]
    assert (schema, table, geometry, default) == ("", "detections", geometry_column, 1) and name
    # GDAL (QGIS's reader) sees it as a layer without geometry, beside the detections
    layers = dict(pyogrio.list_layers(path))
    assert layers["layer_styles"] is None and layers["detections"] == "Polygon"
    meta, _, _, values = pyogrio.raw.read(path, layer="layer_styles", read_geometry=False)
    fields = dict(zip(meta["fields"], values))
    assert fields["f_table_name"][0] == "detections" and bool(fields["useAsDefault"][0])


@pytest.mark.parametrize("writer", ["predict", "merge"])
def test_qml_has_one_outline_category_per_class_in_the_preview_colours(outputs, writer):
    path = outputs[writer]
    with sqlite3.connect(path) as db:
        (qml,) = db.execute("SELECT styleQML FROM layer_styles").fetchone()
    root = ET.fromstring(qml.split("\n", 1)[1])  # past the DOCTYPE line
    assert root.tag == "qgis"
    renderer = root.find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "label"
    categories = renderer.findall("categories/category")
    assert [c.get("value") for c in categories] == CLASSES
    symbols = {s.get("name"): s for s in renderer.findall("symbols/symbol")}
    for k, category in enumerate(categories):
        layer = symbols[category.get("symbol")].find("layer")
        props = {o.get("name"): o.get("value") for o in layer.findall("Option/Option")}
        assert layer.get("class") == "SimpleFill" and props["style"] == "no"  # outline only
        rgb = [int(v) for v in props["outline_color"].split(",")[:3]]
        assert rgb == PALETTE[k].tolist()
    # every feature of the layer falls in a category (its label is a class name)
    labels = pyogrio.raw.read(path, layer="detections", columns=["label"], read_geometry=False)
    assert len(labels[3][0]) and set(labels[3][0]) <= set(CLASSES)
    assert len(set(labels[3][0])) == 2  # both classes present, so both colours are used
    # the attribute form: label and score first; the display expression shows both
    form = [e.get("name") for e in root.find("attributeEditorForm")]
    assert form[:2] == ["label", "score"]
    assert root.findtext("editorlayout") == "tablayout"
    preview = root.findtext("previewExpression")
    assert '"label"' in preview and '"score"' in preview
    assert np.all([f.get("editable") == "0" for f in root.findall("editable/field")])
