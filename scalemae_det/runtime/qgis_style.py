"""A QGIS layer style inside a GeoPackage, so the detections open in QGIS coloured by class.

Where QGIS looks: a GeoPackage keeps the styles of its layers in a table `layer_styles` of the same
file. On loading a layer QGIS applies the row of that table whose `f_table_schema` is '' (empty, not
NULL), `f_table_name` the layer and `f_geometry_column` its geometry column, the one marked
`useAsDefault` first, else the newest `update_time` (QGIS src/core/providers/ogr/qgsogrutils.cpp,
QgsOgrUtils::loadStoredStyle). QGIS makes the table through GDAL (QgsOgrUtils::saveStyle there: a
layer without geometry named layer_styles, FID column `id`, the fields f_table_catalog,
f_table_schema, f_table_name, f_geometry_column, styleName, styleQML, styleSLD, useAsDefault
(boolean), description, owner, ui, update_time), and GDAL registers such a layer in gpkg_contents as
an `attributes` table. It is written the same way here, through pyogrio (GDAL), with those fields;
nothing goes in gpkg_extensions, since QGIS adds nothing there and an attributes table is core
GeoPackage (OGC 12-128r18, clause 2.4).

What the style (QML, QGIS's XML layer style format) holds:
1. a categorized renderer on the `label` field, one category per class, in class id order;
2. each category's symbol an outline only (a simple fill of style "no", a 0.6 mm outline) in the
   class's colour of the preview (runtime/preview.py, class_colour): quicklook and layer agree;
3. the attribute form: a drag-and-drop form with label and score first, then the other fields in a
   "source" group, none of them editable, and the layer's display expression (the title of a
   feature in Identify results and the form) the label and the score to two decimals.
"""

from __future__ import annotations

import datetime
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np

from scalemae_det.runtime.preview import class_colour
from scalemae_det.runtime.vector import FIELDS, LAYER, pyogrio

STYLES_TABLE = "layer_styles"
STYLE_NAME = "scalemae-det classes"
QGIS_VERSION = "3.28.0-Firenze"  # the QML dialect written (read by QGIS 3.x)
OUTLINE_MM = 0.6
FIRST_FIELDS = ("label", "score")  # at the top of the attribute form
ALIASES = {"label": "Class", "score": "Score", "class_id": "Class id", "scene": "Scene"}
DISPLAY_EXPRESSION = '"label" || \' \' || format_number("score", 2)'
# The columns of QGIS's layer_styles table, in QGIS's order (QgsOgrUtils::saveStyle)
STYLE_COLUMNS = (
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
)


def _options(parent: ET.Element, values: dict[str, str]) -> None:
    """A symbol layer's properties, both as QGIS >= 3.26 writes them (an Option map) and as older
    QGIS 3 releases read them (`prop` elements)."""
    options = ET.SubElement(parent, "Option", type="Map")
    for key, value in values.items():
        ET.SubElement(options, "Option", name=key, type="QString", value=value)
    for key, value in values.items():
        ET.SubElement(parent, "prop", k=key, v=value)


def _symbol(parent: ET.Element, name: str, rgb: np.ndarray) -> None:
    colour = ",".join(str(int(c)) for c in rgb)
    symbol = ET.SubElement(
        parent,
        "symbol",
        type="fill",
        name=name,
        alpha="1",
        clip_to_extent="1",
        force_rhr="0",
    )
    layer = ET.SubElement(symbol, "layer", {"class": "SimpleFill"}, enabled="1", locked="0")
    layer.set("pass", "0")
    _options(
        layer,
        {
            "color": f"{colour},0",
            "style": "no",
            "outline_color": f"{colour},255",
            "outline_style": "solid",
            "outline_width": str(OUTLINE_MM),
            "outline_width_unit": "MM",
            "joinstyle": "miter",
        },
    )


def _form(root: ET.Element) -> None:
    index = {name: k + 1 for k, name in enumerate(FIELDS)}  # QGIS shows a GeoPackage's fid first
    aliases = ET.SubElement(root, "aliases")
    for name in FIELDS:
        ET.SubElement(
            aliases, "alias", field=name, index=str(index[name]), name=ALIASES.get(name, "")
        )
    ET.SubElement(root, "editorlayout").text = "tablayout"
    form = ET.SubElement(root, "attributeEditorForm")
    for name in FIRST_FIELDS:
        ET.SubElement(
            form, "attributeEditorField", name=name, index=str(index[name]), showLabel="1"
        )
    group = ET.SubElement(
        form,
        "attributeEditorContainer",
        name="source",
        groupBox="1",
        columnCount="1",
        showLabel="1",
        visibilityExpressionEnabled="0",
        visibilityExpression="",
    )
    for name in FIELDS:
        if name not in FIRST_FIELDS:
            ET.SubElement(
                group, "attributeEditorField", name=name, index=str(index[name]), showLabel="1"
            )
    editable = ET.SubElement(root, "editable")
    for name in FIELDS:
        ET.SubElement(editable, "field", name=name, editable="0")
    ET.SubElement(root, "previewExpression").text = DISPLAY_EXPRESSION


def style_qml(class_names: Sequence[str]) -> str:
    """The QML document of the layer style (see the module doc) for classes 1..len(class_names)."""
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="Symbology|Fields|Forms")
    renderer = ET.SubElement(
        root,
        "renderer-v2",
        type="categorizedSymbol",
        attr="label",
        symbollevels="0",
        enableorderby="0",
        forceraster="0",
    )
    categories = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for k, name in enumerate(class_names):
        ET.SubElement(categories, "category", symbol=str(k), value=name, label=name, render="true")
        _symbol(symbols, str(k), class_colour(k + 1))
    _form(root)
    ET.SubElement(root, "layerGeometryType").text = "2"  # polygons
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n"


def write_style(path: str | os.PathLike, class_names: Sequence[str], layer: str = LAYER) -> None:
    """Add the default QGIS style of `layer` to the GeoPackage `path` (a `layer_styles` table as
    QGIS writes it, see the module doc). The caller writes `path` atomically around this."""
    module = pyogrio()
    geometry_column = module.read_info(str(path), layer=layer).get("geometry_name") or "geom"
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    row = {
        "f_table_catalog": "",
        "f_table_schema": "",
        "f_table_name": layer,
        "f_geometry_column": geometry_column,
        "styleName": STYLE_NAME,
        "styleQML": style_qml(class_names),
        "styleSLD": "",
        "useAsDefault": True,
        "description": "detections by class: outlines in the preview's colours",
        "owner": "",
        "ui": None,
        "update_time": np.datetime64(now, "ms"),
    }
    values = []
    for name in STYLE_COLUMNS:
        value = row[name]
        if isinstance(value, bool):
            values.append(np.array([value]))
        elif isinstance(value, np.datetime64):
            values.append(np.array([value]))
        else:
            column = np.empty(1, object)
            column[0] = value
            values.append(column)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        module.raw.write(
            str(path),
            None,
            values,
            list(STYLE_COLUMNS),
            layer=STYLES_TABLE,
            driver="GPKG",
            geometry_type=None,
            layer_options={"FID": "id"},
        )
