"""Many machines: sharded predict (K/N, Slurm arrays, Kubernetes Indexed Jobs), run records, the
job's state, and `merge` into one GeoPackage with the duplicates of overlapping scenes removed.

The shards run as users run them, in subprocesses (one killed with SIGKILL and rerun); the scenes
hold bright squares that the ONNX stand-in (scalemae_det/synthetic/standin.py) finds exactly, so
every expected box is known; the merged layer is read back with pyogrio and checked against
rasterio's reprojection of each square's true outline.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from helpers.cli import NO_TORCH, REPO, numbered_scenes
from scalemae_det.base.errors import UserError, dashed_flag
from scalemae_det.runtime.records import job_state
from scalemae_det.runtime.shards import parse_shard, shard_of
from scalemae_det.synthetic.standin import SIZE, build_model, scene_with_squares

needs_pyogrio = pytest.mark.skipif(
    find_spec("pyogrio") is None, reason="GeoPackage needs the gis extra (pyogrio)"
)


def cli(*args) -> list[str]:
    return [sys.executable, "-c", NO_TORCH, *map(str, args)]


def run(*args, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli(*args),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("model") / "standin.onnx")


# ---------------------------------------------------------------- which shard runs what


@pytest.mark.parametrize(
    "env, count, expected",
    [
        (
            {
                "SLURM_ARRAY_TASK_ID": "0",
                "SLURM_ARRAY_TASK_MIN": "0",
                "SLURM_ARRAY_TASK_MAX": "9",
                "SLURM_ARRAY_TASK_COUNT": "10",
            },
            None,
            (1, 10),
        ),  # --array=0-9
        (
            {
                "SLURM_ARRAY_TASK_ID": "10",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_MAX": "10",
                "SLURM_ARRAY_TASK_COUNT": "10",
            },
            None,
            (10, 10),
        ),  # --array=1-10
        (
            {
                "SLURM_ARRAY_TASK_ID": "9",
                "SLURM_ARRAY_TASK_MIN": "5",
                "SLURM_ARRAY_TASK_MAX": "11",
                "SLURM_ARRAY_TASK_STEP": "2",
                "SLURM_ARRAY_TASK_COUNT": "4",
            },
            None,
            (3, 4),
        ),  # --array=5-11:2
        ({"JOB_COMPLETION_INDEX": "0"}, 4, (1, 4)),
        ({"JOB_COMPLETION_INDEX": "3", "SCALEMAE_DET_SHARD_COUNT": "4"}, None, (4, 4)),
    ],
)
def test_shard_auto_reads_the_schedulers_index(env, count, expected):
    shard = parse_shard("auto", count, env)
    assert (shard.index, shard.count) == expected


@pytest.mark.parametrize(
    "text, count, env, problem",
    [
        (
            "auto",
            None,
            {
                "SLURM_ARRAY_TASK_ID": "4",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_MAX": "9",
                "SLURM_ARRAY_TASK_COUNT": "3",
            },
            "not evenly spaced",
        ),  # --array=1,4,9
        ("auto", None, {"JOB_COMPLETION_INDEX": "2"}, "give --shard-count N"),
        ("auto", 2, {"JOB_COMPLETION_INDEX": "2"}, "shard 3 is outside 1..2"),
        ("auto", None, {}, "neither SLURM_ARRAY_TASK_ID"),
        ("0/3", None, {}, "shard 0 is outside 1..3"),
        ("2-3", None, {}, "expected K/N"),
        ("1/3", 3, {}, "--shard-count 3: goes with --shard auto"),
    ],
)
def test_bad_shard_options_are_one_line_errors(text, count, env, problem):
    """The library names parameters (shard_count); the CLI spells them as its flags."""
    with pytest.raises(UserError) as caught:
        parse_shard(text, count, env)
    assert problem in caught.value.render(dashed_flag)
    assert "--shard" not in str(caught.value)


def test_the_split_depends_on_each_scene_name_only():
    names = [f"scene_{i:04d}.tif" for i in range(3000)]
    first = {n: shard_of(n, 8) for n in names}
    assert first == {n: shard_of(Path("/elsewhere/mount") / n, 8) for n in reversed(names)}
    sizes = np.bincount(list(first.values()), minlength=9)[1:]
    assert (
        sizes.min() > 0.8 * 3000 / 8 and sizes.max() < 1.2 * 3000 / 8
    )  # within binomial spread of even


# ---------------------------------------------------------------- three shards, one killed


def test_three_shards_one_killed_and_rerun_cover_every_scene_once(tmp_path, model):
    scenes = numbered_scenes(tmp_path / "scenes", 7, 1400)  # ~0.6 s a scene: time to kill part-way
    out = tmp_path / "out"
    by_shard = {s: [k for k in range(7) if shard_of(f"s{k}.tif", 3) == s] for s in (1, 2, 3)}
    victim = max(by_shard, key=lambda s: len(by_shard[s]))
    others = [s for s in (1, 2, 3) if s != victim]
    assert len(by_shard[victim]) >= 2, by_shard
    # every shard gets the scenes its own way: the folder, or the files in reverse order
    how = {
        victim: (
            [scenes],
            {
                "SLURM_ARRAY_TASK_ID": str(victim),
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_MAX": "3",
                "SLURM_ARRAY_TASK_COUNT": "3",
            },
            ["--shard", "auto"],
        ),
        others[0]: (sorted(scenes.glob("*.tif"), reverse=True), {}, ["--shard", f"{others[0]}/3"]),
        others[1]: (
            [scenes],
            {"JOB_COMPLETION_INDEX": str(others[1] - 1)},
            ["--shard", "auto", "--shard-count", 3],
        ),
    }

    def args(s):
        inputs, env, shard = how[s]
        return ["predict", *inputs, "--model", model, "--out", out, *shard], env

    # the victim and a second shard run at the same time into one OUT; the victim is killed part-way
    a, env_a = args(victim)
    proc = subprocess.Popen(
        cli(*a),
        cwd=REPO,
        env={**os.environ, **env_a},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    b, env_b = args(others[0])
    second = subprocess.Popen(
        cli(*b),
        cwd=REPO,
        env={**os.environ, **env_b},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    victims = {f"s{k}.geojson" for k in by_shard[victim]}

    def recorded_ok(shard: str) -> set[str]:
        """Scenes an attempt of `shard` recorded as finished (its output renamed into place just
        before)."""
        found = set()
        for path in (out / "records").glob("shard-*.jsonl"):
            lines = []
            for line in path.read_text().splitlines():
                try:
                    lines.append(json.loads(line))
                except ValueError:  # the line being written
                    pass
            if lines and lines[0].get("shard") == shard:
                found |= {
                    r["scene"]
                    for r in lines
                    if r.get("kind") == "scene" and r.get("status") == "ok"
                }
        return found

    deadline = time.monotonic() + 60
    while not recorded_ok(f"{victim}/3") and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert second.wait(timeout=120) == 0, second.stderr.read()
    first = victims & {p.name for p in out.glob("*.geojson")}
    finished = recorded_ok(
        f"{victim}/3"
    )  # may lack the last of `first` when the kill fell between rename and record
    assert 1 <= len(finished) <= len(first) < len(victims), (
        "the shard should have been killed part-way"
    )
    state = job_state(out)
    assert len(state.done) == len(finished) + len(by_shard[others[0]]) and state.left > 0
    assert [a.start["shard"] for a in state.open_attempts] == [f"{victim}/3"]
    assert run("status", out).returncode == 3

    again = run(*a, env=env_a)
    assert again.returncode == 0, again.stderr
    third_args, env_c = args(others[1])
    third = run(*third_args, env=env_c)
    assert third.returncode == 0, third.stderr

    records = [
        json.loads(line)
        for p in sorted((out / "records").glob("*.jsonl"))
        for line in p.read_text().splitlines()
    ]
    starts = [r for r in records if r["kind"] == "start"]
    assert sorted(r["shard"] for r in starts) == sorted(["1/3", "2/3", "3/3", f"{victim}/3"])
    assert (
        len({r["job_key"] for r in starts}) == 1
    )  # every shard saw the same job, whatever the order
    ok = [r["scene"] for r in records if r["kind"] == "scene" and r["status"] == "ok"]
    # each scene run to the end exactly once: recorded ok, or written by the killed attempt just
    # before the kill
    unrecorded = {n.replace(".geojson", ".tif") for n in first} - finished
    assert len(unrecorded) <= 1 and sorted([*ok, *unrecorded]) == [f"s{k}.tif" for k in range(7)]
    skipped = sorted(
        r["scene"] for r in records if r["kind"] == "scene" and r["status"] == "skipped"
    )
    assert skipped == sorted(
        n.replace(".geojson", ".tif") for n in first
    )  # the rerun skips what was done
    for r in records:
        if r["kind"] == "scene" and r["status"] == "ok":
            assert r["detections"] == int(r["scene"][1]) + 1 and r["tiles"] > 0 and r["seconds"] > 0
            assert r["provider"] == "CPUExecutionProvider" and len(r["model_sha256"]) == 64
    for k in range(7):
        assert len(json.loads((out / f"s{k}.geojson").read_text())["features"]) == k + 1

    status = run("status", out)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.splitlines() == ["7 scenes in 3 shards: 7 done, 0 failed, 0 left"]


def test_failed_scenes_are_reported_with_their_reason(tmp_path, model):
    scene_with_squares(tmp_path / "good.tif", 100, 80, [(10, 10)])
    (tmp_path / "bad.tif").write_text("not a raster")
    done = run(
        "predict",
        tmp_path / "good.tif",
        tmp_path / "bad.tif",
        "--model",
        model,
        "--out",
        tmp_path / "out",
    )
    assert done.returncode == 1
    status = run("status", tmp_path / "out")
    assert status.returncode == 3
    lines = status.stdout.splitlines()
    assert lines[0] == "2 scenes in 1 shard: 1 done, 1 failed, 0 left"
    assert lines[1].startswith("failed: bad.tif: ") and "not a readable raster" in lines[1]
    empty = run("status", tmp_path)
    assert (
        empty.returncode == 1
        and empty.stderr.startswith("error: ")
        and "no run records" in empty.stderr
    )


# ---------------------------------------------------------------- merge across overlapping scenes


def _polygons(path: Path) -> tuple[np.ndarray, dict]:
    """Bounds (N, 4) of the Polygon features in a layer, decoded from pyogrio's WKB, and the
    fields."""
    import pyogrio

    meta, _, geometry, values = pyogrio.raw.read(path)
    bounds = []
    for wkb in geometry:
        order, kind, rings, points = struct.unpack("<BIII", wkb[:13])
        assert (order, kind, rings, points) == (1, 3, 1, 5)
        xy = np.frombuffer(wkb[13:], "<f8").reshape(5, 2)
        bounds.append([*xy.min(0), *xy.max(0)])
    return np.asarray(bounds).reshape(-1, 4), {
        "crs": meta["crs"],
        **dict(zip(meta["fields"], values)),
    }


def _predict_and_merge(tmp_path: Path, model: Path, match: str) -> tuple[str, np.ndarray, dict]:
    """predict a.tif and b.tif (8 squares each, 5 of them one object seen by both), then merge into
    EPSG:3857: merge's report line and the merged layer's bounds and fields."""
    out = tmp_path / "out"
    done = run(
        "predict",
        tmp_path / "a.tif",
        tmp_path / "b.tif",
        "--model",
        model,
        "--out",
        out,
        "--format",
        "gpkg",
    )
    assert done.returncode == 0, done.stderr
    assert [len(_polygons(out / f"{n}.gpkg")[0]) for n in "ab"] == [8, 8]
    merged = tmp_path / "all.gpkg"
    result = run("merge", out, "-o", merged, "--crs", "EPSG:3857", "--match", match)
    assert result.returncode == 0, result.stderr
    assert "16 detections, 5 duplicates removed, 11 written" in result.stderr
    bounds, fields = _polygons(merged)
    assert fields["crs"] == "EPSG:3857"
    return result.stderr, bounds, fields


@needs_pyogrio
@pytest.mark.parametrize("match", ["ios", "iou"])
def test_overlapping_scenes_merge_into_one_geopackage_each_object_once(tmp_path, model, match):
    """Scenes A (x 0-600 m) and B (x 300-900 m) share 300 m; squares lie in A only, in B only, in
    the
    overlap (seen whole by both) and across A's east edge (a part in A, whole in B)."""
    x0, y0 = 500_000.0, 4_000_000.0
    squares = [
        (40, 50),
        (150, 200),
        (250, 120),  # A only
        (320, 30),
        (400, 140),
        (470, 230),
        (555, 90),  # both, whole
        (594, 180),  # cut by A's east edge at 600
        (640, 60),
        (760, 170),
        (860, 250),
    ]  # B only
    blue = {1, 4, 9}
    for name, left in (("a", 0), ("b", 300)):
        inside = [
            (i, (x - left, y)) for i, (x, y) in enumerate(squares) if left <= x and x - left < 600
        ]
        scene_with_squares(
            tmp_path / f"{name}.tif",
            600,
            300,
            [c for _, c in inside],
            blue={k for k, (i, _) in enumerate(inside) if i in blue},
            transform=from_origin(x0 + left, y0, 1.0, 1.0),
        )
    bounds, fields = _predict_and_merge(tmp_path, model, match)[1:]
    assert len(bounds) == len(squares)
    # the reference: each square's true outline in UTM, reprojected by rasterio
    for i, (x, y) in enumerate(squares):
        xs, ys = warp_transform(
            "EPSG:32631",
            "EPSG:3857",
            [x0 + x, x0 + x + SIZE] * 2,
            [y0 - y, y0 - y, y0 - y - SIZE, y0 - y - SIZE],
        )
        ref = np.array([min(xs), min(ys), max(xs), max(ys)])
        hits = np.flatnonzero(np.all(np.abs(bounds - ref) < 1e-3, axis=1))
        assert len(hits) == 1, (i, (x, y), hits)  # once, and whole (the cut square comes from B)
        k = hits[0]
        assert fields["class_id"][k] == (2 if i in blue else 1)
        assert fields["label"][k] == ("blue thing" if i in blue else "red thing")
        seen_whole_by = (
            "a.tif" if x + SIZE <= 300 else "b.tif" if x + SIZE > 600 else None
        )  # else by both
        assert seen_whole_by in (None, fields["scene"][k])


def _square(transform, crs, col, row, to="EPSG:3857") -> np.ndarray:
    """Bounds in `to` of the SIZE-pixel square with upper-left corner (col, row) of a grid, by
    rasterio."""
    xs, ys = transform @ (
        np.array([col, col + SIZE, col + SIZE, col]),
        np.array([row, row, row + SIZE, row + SIZE]),
    )
    xs, ys = warp_transform(crs, to, xs, ys)
    return np.array([min(xs), min(ys), max(xs), max(ys)])


@needs_pyogrio
@pytest.mark.parametrize("match", ["ios", "iou"])
def test_scenes_in_neighbouring_utm_zones_merge_each_object_once(tmp_path, model, match):
    """Scene A (EPSG:32633) ends at 18 deg E, the zone's east edge; scene B (EPSG:32634, grid
    rotated
    ~3.5 deg against A's there) starts 300 m west of it. Squares lie in A only, in B only, in the
    overlap (drawn in B at the ground position of A's, found by rasterio; one dimmer in A, so B's
    box
    must win) and across A's east edge (a part in A, whole in B)."""
    lat = 36.0
    (ex,), (ny,) = warp_transform("EPSG:4326", "EPSG:32633", [18.0], [lat])
    a_grid = from_origin(round(ex) - 600, round(ny) + 150, 1.0, 1.0)
    (bx,), (by,) = warp_transform(
        "EPSG:32633", "EPSG:32634", *([v] for v in a_grid @ (300, 0))
    )  # on A's (300, 0)
    b_grid = from_origin(round(bx), round(by), 1.0, 1.0)
    a_only = [(40, 50), (150, 200), (250, 120)]
    both = [(340, 40), (420, 150), (490, 250), (560, 100)]
    cut = [(594, 180)]  # 6 of its 12 columns in A, whole in B
    b_only = [(360, 60), (460, 170), (560, 250)]  # B's pixels: east of A's edge at ~300
    a_squares = a_only + both + cut

    def to_b(col, row):
        xs, ys = warp_transform(
            "EPSG:32633",
            "EPSG:32634",
            *a_grid @ (np.array([col, col + SIZE]), np.array([row, row + SIZE])),
        )
        return ~b_grid @ (np.array(xs), np.array(ys))

    in_b = []  # A's squares as B sees them: the upper-left corner on the nearest pixel
    for col, row in a_squares:
        cols, rows = to_b(col, row)
        inside = cols.min() > 5 and rows.min() > 5 and cols.max() < 595 and rows.max() < 295
        outside = cols.max() < 0 or rows.max() < 0 or cols.min() > 600 or rows.min() > 300
        assert inside != outside and inside == ((col, row) not in a_only), (col, row, cols, rows)
        if inside:
            in_b.append((round(cols[0]), round(rows[0])))
    for col, row in b_only:  # wholly east of A
        xs, ys = warp_transform(
            "EPSG:32634",
            "EPSG:32633",
            *b_grid @ (np.array([col, col]), np.array([row, row + SIZE])),
        )
        assert (~a_grid @ (np.array(xs), np.array(ys)))[0].min() > 610
    blue_a, blue_b = {1, 4, 7}, {len(in_b) + 1}  # blue: one of each group
    scene_with_squares(
        tmp_path / "a.tif", 600, 300, a_squares, blue=blue_a, crs="EPSG:32633", transform=a_grid
    )
    dim = both[
        2
    ]  # red, and dimmer in A: B's view scores higher and must win in both scenes' decisions
    with rasterio.open(tmp_path / "a.tif", "r+") as ds:
        window = Window(dim[0], dim[1], SIZE, SIZE)
        ds.write(
            np.broadcast_to(np.array([190, 170, 130], np.uint8)[:, None, None], (3, SIZE, SIZE)),
            window=window,
        )
    scene_with_squares(
        tmp_path / "b.tif",
        600,
        300,
        in_b + b_only,
        crs="EPSG:32634",
        transform=b_grid,
        blue={k - len(a_only) for k in blue_a if k >= len(a_only)} | blue_b,
    )  # in_b: a_squares[3:]
    report, bounds, fields = _predict_and_merge(tmp_path, model, match)
    assert "compared in EPSG:3263" in report  # one of the two zones, whichever holds the centre
    assert len(bounds) == 11
    # the reference: each square's outline in its own grid, reprojected by rasterio; a square seen
    # by both scenes is drawn in B on the nearest pixel to A's, and B's grid is rotated: within 2 m
    tolerance = 2.0 / np.cos(np.radians(lat))  # metres on the ground in EPSG:3857's units there
    expected = [
        (
            _square(a_grid, "EPSG:32633", col, row),
            k in blue_a,
            "a.tif"
            if k < len(a_only)
            else "b.tif"
            if (col, row) in cut or (col, row) == dim
            else None,
        )
        for k, (col, row) in enumerate(a_squares)
    ]
    expected += [
        (_square(b_grid, "EPSG:32634", col, row), len(in_b) + k in blue_b, "b.tif")
        for k, (col, row) in enumerate(b_only)
    ]
    found = []
    for ref, blue, source in expected:
        hits = np.flatnonzero(np.all(np.abs(bounds - ref) < tolerance, axis=1))
        assert len(hits) == 1, (ref, bounds, hits)  # once, and whole (the cut square comes from B)
        k = hits[0]
        found.append(k)
        assert fields["class_id"][k] == (2 if blue else 1)
        assert source in (None, fields["scene"][k])  # None: equal scores in both, either may stay
    assert sorted(found) == list(range(11))


@needs_pyogrio
def test_merge_refuses_bad_options_before_writing(tmp_path, model):
    scene_with_squares(tmp_path / "a.tif", 100, 80, [(10, 10)])
    out = tmp_path / "out"
    assert run("predict", tmp_path / "a.tif", "--model", model, "--out", out).returncode == 0
    for args, problem in (
        (["--out", tmp_path / "x.shp"], "expected a .gpkg"),
        (["--out", tmp_path / "x.gpkg", "--crs", "EPSG:99999999"], "not a CRS"),
        (["--out", tmp_path / "x.gpkg", "--match", "giou"], "--match"),
        (["--out", tmp_path / "nowhere" / "x.gpkg"], "nowhere does not exist"),
    ):
        done = run("merge", out, *args)
        assert (
            done.returncode == 1 and done.stderr.startswith("error: ") and problem in done.stderr
        ), done.stderr
        assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "out"]
    fgb = tmp_path / "all.fgb"
    done = run("merge", out, "--to", fgb)  # the old spelling, for a release
    assert done.returncode == 0, done.stderr
    assert "warning: merge --to is deprecated; use --out" in done.stderr
    bounds, fields = _polygons(fgb)
    assert fields["crs"] == "EPSG:4326" and len(bounds) == 1
