"""Scenes where they live: COGs over HTTP (a range server on 127.0.0.1 that counts its bytes) and S3
(moto's S3 API server), STAC items, an area of interest, and the faults of a network.

Every server is started by a fixture on an ephemeral port of 127.0.0.1 and stopped after; each test
gets its own HTTP server (its own port), so GDAL's process-wide cache of remote files never serves
one test the bytes another fetched. The scenes hold the stand-in's bright squares
(scalemae_det.synthetic.standin), so the reference for a remote run is the same scene read from its
local file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp_transform

from helpers.cli import NO_TORCH, REPO
from helpers.servers import Fault, RangeServer, S3Server, write_cog
from scalemae_det.base.errors import UserError
from scalemae_det.base.remote import gdal_path, is_url, scrub, shown, url_name
from scalemae_det.runtime import Detector
from scalemae_det.runtime.inputs import expand_scenes
from scalemae_det.synthetic.standin import build_model, scene_with_squares

SIDE = 768
CORNERS = [(10 + 60 * i, 10 + 60 * j) for i in range(13) for j in range(13) if (i + j) % 3 == 0]
SECRET = "s3cr3t-Value-that-must-never-show"
# short network limits so the fault tests take seconds (GDAL reads them from the environment)
FAST = {
    "GDAL_HTTP_MAX_RETRY": "2",
    "GDAL_HTTP_RETRY_DELAY": "0.1",
    "GDAL_HTTP_LOW_SPEED_TIME": "1",
    "GDAL_HTTP_CONNECTTIMEOUT": "2",
}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("model") / "standin.onnx")


@pytest.fixture(scope="module")
def detector(model) -> Detector:
    return Detector(model, "cpu")


@pytest.fixture(scope="module")
def cog(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cog")
    plain = scene_with_squares(folder / "plain.tif", SIDE, SIDE, CORNERS, blue={1, 4, 9})
    return write_cog(plain, folder / "scene.tif")


@pytest.fixture
def served(tmp_path, cog):
    """A range server of its own over a folder holding the COG."""
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(cog, root / "scene.tif")
    with RangeServer(root) as server:
        yield server


@pytest.fixture
def fast_network(monkeypatch):
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)


def _same(a, b):
    np.testing.assert_array_equal(a.detections.boxes, b.detections.boxes)
    np.testing.assert_array_equal(a.detections.scores, b.detections.scores)
    np.testing.assert_array_equal(a.detections.labels, b.detections.labels)


def cli(*args, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NO_TORCH, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **FAST, **(env or {})},
    )


def _everything_written(out: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())


# ---------------------------------------------------------------- names and paths


def test_urls_map_to_gdal_paths_and_are_shown_without_credentials(monkeypatch):
    assert is_url("https://h/a.tif") and is_url("s3://b/k.tif") and not is_url("/data/a.tif")
    assert gdal_path("s3://bucket/a/b.tif") == "/vsis3/bucket/a/b.tif"
    assert gdal_path("gs://bucket/b.tif") == "/vsigs/bucket/b.tif"
    assert gdal_path("az://container/b.tif") == "/vsiaz/container/b.tif"
    assert gdal_path("https://h:8/a.tif?sig=x") == "/vsicurl/https://h:8/a.tif?sig=x"
    assert shown("https://user:pw@h:8/a/b.tif?sig=abc#f") == "https://h:8/a/b.tif"
    assert shown("/vsicurl/https://h/a.tif?token=t") == "https://h/a.tif"
    assert url_name("https://h/a/b%20c.tif?x=1") == "b c.tif"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    text = scrub(f"failed on https://u:p@h/x.tif?X-Amz-Signature=zz: key {SECRET}")
    assert SECRET not in text and "zz" not in text and "u:p" not in text
    assert "https://h/x.tif" in text


def test_urls_are_scenes_named_by_their_file_name():
    scenes, problems = expand_scenes(
        ["https://h/a/one.tif?sig=1", "s3://b/two.tif", "https://h/dir/", "https://h/*.tif"]
    )
    assert [(s.name, s.stem, str(s)) for s in scenes] == [
        ("one.tif", "one", "https://h/a/one.tif"),
        ("two.tif", "two", "s3://b/two.tif"),
    ]
    assert len(problems) == 2 and "names no file" in problems[0] and "patterns" in problems[1]


# ---------------------------------------------------------------- HTTP


def test_detections_from_the_url_are_those_of_the_local_file(detector, cog, served):
    local = detector.detect_scene(cog)
    remote = detector.detect_scene(served.url("scene.tif"))
    assert len(local.detections) >= len(CORNERS) // 2
    _same(remote, local)
    assert remote.name == "scene.tif"
    assert served.sent_bytes("scene.tif") > 0


def _quadrant_aoi(path: Path, cog: Path) -> Path:
    """The upper-left quarter of the scene as an RFC 7946 GeoJSON polygon (lon/lat)."""
    with rasterio.open(cog) as ds:
        cols = [0, SIDE / 2, SIDE / 2, 0, 0]
        rows = [0, 0, SIDE / 2, SIDE / 2, 0]
        xs, ys = ds.transform * (np.array(cols), np.array(rows))
        lons, lats = warp_transform(ds.crs, "EPSG:4326", list(xs), list(ys))
    ring = [[x, y] for x, y in zip(lons, lats)][::-1]  # counter-clockwise
    feature = {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


# GDAL fetches more at once when reads follow each other, up to 2 MB at its default 16 KB chunk
# (https://gdal.org/en/stable/user/virtual_file_systems.html, /vsicurl/): on this 2.5 MB scene that
# read-ahead alone spans the file (docs/remote.md measures it). A 4 KB chunk keeps it small beside
# this file as 2 MB is beside a scene of tens of MB (bench/bench_remote.py measures one at GDAL's
# defaults). GDAL reads the chunk size once per process: a fresh CLI process here.
SMALL_CHUNKS = {"CPL_VSIL_CURL_CHUNK_SIZE": "4096"}


def test_an_area_of_a_quarter_reads_at_most_half_the_bytes(model, detector, cog, served, tmp_path):
    aoi = _quadrant_aoi(tmp_path / "quarter.geojson", cog)
    full = detector.detect_scene(cog)
    out = tmp_path / "out"
    url = served.url("scene.tif")
    run = cli("predict", url, "--model", model, "--out", out, "--aoi", aoi, env=SMALL_CHUNKS)
    assert run.returncode == 0, run.stderr
    sent, size = served.sent_bytes("scene.tif"), cog.stat().st_size
    assert sent <= 0.5 * size, f"{sent} of {size} bytes sent for a quarter of the scene"
    features = json.loads((out / "scene.geojson").read_text())["features"]
    b = full.detections.boxes
    inside = ((b[:, 0] + b[:, 2]) / 2 < SIDE / 2) & ((b[:, 1] + b[:, 3]) / 2 < SIDE / 2)
    assert inside.sum() >= 5
    got = sorted(tuple(f["properties"]["pixel_bbox"]) for f in features)
    np.testing.assert_allclose(got, sorted(map(tuple, b[inside].tolist())), atol=1e-3)
    # the tiles not read are those whose window misses the quarter (rectangles, by hand)
    meeting = [t for t in full.scene.tiles if t.col <= SIDE / 2 and t.row <= SIDE / 2]
    records = [
        json.loads(x) for x in next((out / "records").glob("*.jsonl")).read_text().splitlines()
    ]
    (scene,) = [r for r in records if r["kind"] == "scene"]
    assert scene["tiles_outside_area"] == len(full.scene.tiles) - len(meeting)
    assert f"{len(full.scene.tiles) - len(meeting)} outside the area" in run.stderr


def test_the_area_applies_to_local_scenes_and_one_it_misses_is_skipped(
    model, detector, cog, tmp_path
):
    from scalemae_det.runtime.aoi import read_area

    area = read_area(_quadrant_aoi(tmp_path / "quarter.geojson", cog))
    full, part = detector.detect_scene(cog), detector.detect_scene(cog, area=area)
    b = full.detections.boxes
    inside = ((b[:, 0] + b[:, 2]) / 2 < SIDE / 2) & ((b[:, 1] + b[:, 3]) / 2 < SIDE / 2)
    np.testing.assert_array_equal(part.detections.boxes, b[inside])
    far = tmp_path / "far.tif"  # the same pixels 100 km east: the quarter misses it
    with rasterio.open(cog) as ds:
        moved = rasterio.Affine.translation(100_000, 0) * ds.transform
        profile = {**ds.profile, "driver": "GTiff", "transform": moved}
        with rasterio.open(far, "w", **profile) as dst:
            dst.write(ds.read())
    missed = detector.detect_scene(far, area=area)
    assert missed.scene.outside_area and missed.tiles_run == 0
    assert missed.tiles_outside == len(full.scene.tiles)
    out = tmp_path / "out"  # through predict: skipped, said and recorded, no output written
    run = cli("predict", far, "--model", model, "--out", out, "--aoi", tmp_path / "quarter.geojson")
    assert run.returncode == 0, run.stderr
    assert "far.tif: skipped, outside the area of interest" in run.stderr
    assert not (out / "far.geojson").exists()
    records = [
        json.loads(x) for x in next((out / "records").glob("*.jsonl")).read_text().splitlines()
    ]
    (scene,) = [r for r in records if r["kind"] == "scene"]
    assert scene["status"] == "skipped" and scene["tiles_outside_area"] == len(full.scene.tiles)


def test_faults_give_one_line_each_the_others_go_on_and_a_rerun_completes(model, cog, tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    names = ["ok", "missing", "flaky", "dropped", "silent"]
    for name in names:
        if name != "missing":
            shutil.copy(cog, root / f"{name}.tif")
    out = tmp_path / "out"
    with RangeServer(root) as server:
        server.fault("flaky.tif", Fault("status", 500, times=1))  # retried by GDAL
        server.fault("dropped.tif", Fault("drop", after=1, times=99))  # header read, then drops
        server.fault("silent.tif", Fault("hang", after=1, times=99))  # header read, then silence
        urls = [server.url(f"{n}.tif") for n in names]
        first = cli("predict", *urls, "--model", model, "--out", out, "--provider", "cpu")
        assert first.returncode == 1, first.stderr
        errors = [line for line in first.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 3, first.stderr
        assert any("missing.tif" in e and "not found (HTTP 404)" in e for e in errors)
        assert any("dropped.tif" in e and "rerun" in e for e in errors)
        assert any("silent.tif" in e for e in errors)
        assert "Traceback" not in first.stderr
        assert {p.name for p in out.glob("*.geojson")} == {"ok.geojson", "flaky.geojson"}
        # the server behaves again (the file that was missing is there): the rerun does the rest
        server._faults.clear()
        shutil.copy(cog, root / "missing.tif")
        second = cli("predict", *urls, "--model", model, "--out", out, "--provider", "cpu")
    assert second.returncode == 0, second.stderr
    assert second.stderr.count(": skipped, ") == 2
    assert {p.stem for p in out.glob("*.geojson")} == set(names)
    local = json.loads((out / "ok.geojson").read_text())["features"]
    for name in names:
        features = json.loads((out / f"{name}.geojson").read_text())["features"]
        assert [f["geometry"] for f in features] == [f["geometry"] for f in local]


def test_a_server_that_is_down_is_one_line(detector, fast_network):
    with pytest.raises(UserError, match="cannot connect to the server"):
        detector.detect_scene("http://127.0.0.1:9/scene.tif")


def test_a_server_that_stops_answering_fails_in_bounded_time(detector, served, fast_network):
    import time

    served.fault("scene.tif", Fault("hang", times=99))  # not even the first request answered
    began = time.perf_counter()
    with pytest.raises(UserError, match="did not answer in time|network read failed") as caught:
        detector.detect_scene(served.url("scene.tif"))
    took = time.perf_counter() - began
    # GDAL_HTTP_LOW_SPEED_TIME of 1 s per try, MAX_RETRY 2 after the first, 0.1 s doubling delays
    assert took < 3 * 1 + 0.7 + 3, f"{took:.1f} s"
    assert "\n" not in str(caught.value) and "127.0.0.1" in str(caught.value)


def test_malformed_urls_are_one_line_each_before_any_request(model, tmp_path):
    bad = ["http://127.0.0.1:99999/a.tif", "https://[::1/b.tif", "https:///c.tif", "s3:///d.tif"]
    run = cli("predict", *bad, "--model", model, "--out", tmp_path / "out", timeout=60)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(bad), run.stderr
    for url, line in zip(bad, errors):
        assert url in line


def test_two_urls_with_one_file_name_are_refused_up_front(model, tmp_path):
    out = tmp_path / "out"
    run = cli(
        "predict",
        "https://a.example/x/scene.tif",
        "https://b.example/y/scene.tif",
        "--model",
        model,
        "--out",
        out,
    )
    assert run.returncode == 1
    assert "would both write" in run.stderr and "Traceback" not in run.stderr
    assert not out.exists() or not any(out.iterdir())


def test_signed_url_tokens_reach_no_output_record_or_log(model, cog, served, tmp_path):
    out = tmp_path / "out"
    url = served.url("scene.tif") + f"?token={SECRET}"
    run = cli("predict", url, "--model", model, "--out", out, "--format", "coco")
    assert run.returncode == 0, run.stderr
    assert (out / "scene.json").exists()
    assert SECRET not in run.stderr + run.stdout + _everything_written(out)
    record = next((out / "records").glob("*.jsonl")).read_text()
    assert served.url("scene.tif") in record  # the path, without its query string


# ---------------------------------------------------------------- S3


@pytest.fixture(scope="module")
def s3(cog):
    with S3Server() as server:
        url = server.put("scenes", "a/scene.tif", cog)
        key, secret = server.require_auth()
        yield server, url, key, secret


def test_s3_detections_are_those_of_the_local_file(detector, cog, s3, monkeypatch):
    server, url, key, secret = s3
    for name, value in server.env(key, secret).items():
        monkeypatch.setenv(name, value)
    _same(detector.detect_scene(url), detector.detect_scene(cog))


def test_wrong_s3_credentials_are_one_clear_line_without_the_secret(model, s3, tmp_path):
    server, url, key, _ = s3
    out = tmp_path / "out"
    run = cli(
        "predict",
        url,
        "--model",
        model,
        "--out",
        out,
        env=server.env(key, SECRET),  # the right key id, a wrong secret
    )
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "access denied (HTTP 403)" in errors[0], run.stderr
    assert "s3://scenes/a/scene.tif" in errors[0]
    assert SECRET not in run.stderr + run.stdout + _everything_written(out)
    record = [
        json.loads(x) for x in next((out / "records").glob("*.jsonl")).read_text().splitlines()
    ]
    assert [r["status"] for r in record if r["kind"] == "scene"] == ["failed"]


# ---------------------------------------------------------------- STAC


def _item(item_id: str, assets: dict, gsd: float | None = None) -> dict:
    properties = {"datetime": "2024-05-01T10:00:00Z", **({"gsd": gsd} if gsd else {})}
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "geometry": None,
        "properties": properties,
        "links": [],
        "assets": assets,
    }


COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def test_stac_items_expand_to_their_asset_named_by_item_id(detector, cog, served, tmp_path):
    (served.root / "thumb.png").write_bytes(b"png")
    collection = {
        "type": "FeatureCollection",
        "features": [
            _item("item-a.v1", {"visual": {"href": "scene.tif", "type": COG_TYPE}}, gsd=1.0),
            _item(
                "item-b",
                {
                    "thumbnail": {"href": "thumb.png", "type": "image/png", "roles": ["thumbnail"]},
                    "red": {"href": "scene.tif", "type": COG_TYPE, "roles": ["data"]},
                },
                gsd=3.0,
            ),
            _item("item-c", {"thumbnail": {"href": "thumb.png", "type": "image/png"}}),
        ],
    }
    (served.root / "search.json").write_text(json.dumps(collection))
    scenes, problems = expand_scenes([served.url("search.json")])
    assert [(s.stem, s.path) for s in scenes] == [
        ("item-a.v1", served.url("scene.tif")),
        ("item-b", served.url("scene.tif")),
    ]
    assert len(problems) == 1 and "item-c" in problems[0] and "thumbnail" in problems[0]
    assert "'red'" in scenes[1].notes[0]
    result = detector.detect_scene(scenes[1])
    assert any("states a GSD of 3 m" in n for n in result.notes)  # the raster's is 1 m
    assert not any("GSD" in n for n in detector.detect_scene(scenes[0]).notes)
    _same(result, detector.detect_scene(cog))
    named, problems = expand_scenes([served.url("search.json")], stac_asset="red")
    assert [s.stem for s in named] == ["item-b"] and len(problems) == 2
    assert "no asset 'red'" in problems[0]


def test_a_stac_item_file_names_the_output(model, cog, tmp_path):
    item = tmp_path / "item.json"
    shutil.copy(cog, tmp_path / "asset.tif")
    item.write_text(
        json.dumps(_item("S2B_31UFU_20240501_0_L2A", {"visual": {"href": "./asset.tif"}}))
    )
    out = tmp_path / "out"
    run = cli("predict", item, "--model", model, "--out", out)
    assert run.returncode == 0, run.stderr
    features = json.loads((out / "S2B_31UFU_20240501_0_L2A.geojson").read_text())["features"]
    assert features and features[0]["properties"]["scene"] == "S2B_31UFU_20240501_0_L2A.tif"


# ---------------------------------------------------------------- other places scenes are taken


def test_calibration_tiles_from_a_url_are_those_of_the_local_file(detector, cog, served):
    from scalemae_det.export.calibration import read_tiles

    meta = detector.metadata
    local = read_tiles([cog], meta, 8, 4)
    remote = read_tiles([served.url("scene.tif") + f"?token={SECRET}"], meta, 8, 4)
    np.testing.assert_array_equal(remote.calibration, local.calibration)
    np.testing.assert_array_equal(remote.held_out, local.held_out)
    assert remote.scenes == [served.url("scene.tif")]  # recorded in the model: no token


def test_prepare_chips_a_url_image_as_its_local_file(cog, served, tmp_path):
    from helpers import labelled
    from scalemae_det.data.chipping import ChipConfig
    from scalemae_det.data.prepare import prepare

    objects = [("square", (10 + 60 * i, 10, 40 + 60 * i, 40)) for i in range(0, 12, 3)]
    labels = labelled.voc(tmp_path / "scene.xml", "scene.tif", SIDE, SIDE, objects)
    cfg = ChipConfig(chip=256, overlap=0.0)
    runs = {}
    for key, image in (("local", cog), ("url", served.url("scene.tif"))):
        out = tmp_path / key
        runs[key] = prepare([image], labels, out, cfg=cfg, progress=False, val_fraction=0.0)
        runs[key]["files"] = {
            p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*")) if p.is_file()
        }
    local, url = runs["local"], runs["url"]
    assert served.sent_bytes("scene.tif") > 0, (local, url)
    assert url["files"].keys() == local["files"].keys()
    assert local["boxes"]["train"] == len(objects) and local["chips"]["train"] == 9
    assert {**local, "files": None} == {**url, "files": None}
    for name, path in local["files"].items():
        if name.endswith(".tif"):
            with rasterio.open(path) as a, rasterio.open(url["files"][name]) as b:
                np.testing.assert_array_equal(a.read(), b.read())
        elif name.endswith(".json"):
            assert json.loads(path.read_text()) == json.loads(url["files"][name].read_text())
