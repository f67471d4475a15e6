"""scalemae-det export: ONNX Runtime and TorchScript against the PyTorch model, the baked-in GSD,
metadata."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import scalemae_det
from helpers import commands
from helpers.onnx import assert_same, run_onnx, split
from helpers.tiny import TINY_BATCH, TINY_CLASSES, TINY_GSD, TINY_TILE
from scalemae_det.base.metadata import INPUT_NAME, ModelMetadata
from scalemae_det.export.parity import BLANK_INDEX, TOLERANCES, compare, validation_tiles
from scalemae_det.export.torchscript_export import load_torchscript
from scalemae_det.models.pos_embed import gsd_sincos_pos_embed
from scalemae_det.models.weights import load_detector
from scalemae_det.runtime.detections import Detections


@pytest.fixture(scope="module")
def tiles() -> np.ndarray:
    """busy, blank, busy: the blank tile has a neighbour on each side."""
    t = validation_tiles(TINY_TILE, TINY_BATCH)
    assert not t[BLANK_INDEX].any() and all(
        t[i].std() > 0.1 for i in range(TINY_BATCH) if i != BLANK_INDEX
    )
    return t


@pytest.fixture(scope="module")
def reference(tiny_checkpoint, tiles) -> list[dict[str, np.ndarray]]:
    """The checkpoint's own PyTorch model, batched, at its training GSD: what every export must
    reproduce."""
    model, _ = load_detector(tiny_checkpoint)
    with torch.no_grad():
        out = model(list(torch.from_numpy(tiles)), gsd=TINY_GSD)
    return [{k: v.numpy() for k, v in d.items()} for d in out]


def test_batch3_matches_pytorch_per_image_and_blank_tile_breaks_nothing(
    tiny_onnx, tiles, reference
):
    got = run_onnx(tiny_onnx.path, tiles, TINY_BATCH)
    counts = [len(d["scores"]) for d in got]
    assert (
        counts[BLANK_INDEX] == 0 and min(c for i, c in enumerate(counts) if i != BLANK_INDEX) >= 5
    )
    assert_same(got, reference)
    assert tiny_onnx.report.passed and tiny_onnx.report.counts_exported == counts


def test_batch1_simplified_matches_pytorch_and_batch3_equals_three_batch1_runs(
    tiny_export, tiny_onnx, tiles, reference
):
    single = tiny_export("onnx", batch=1)
    assert single.simplified  # onnxslim's graph kept parity
    assert_same(run_onnx(single.path, tiles, 1), reference)
    assert_same(run_onnx(tiny_onnx.path, tiles, TINY_BATCH), run_onnx(single.path, tiles, 1))


def test_batch3_on_unseen_random_tiles(tiny_onnx, tiny_checkpoint):
    """Inputs unlike the validation tiles: noise, a white tile, a half-blank tile."""
    rng = np.random.default_rng(7)
    x = rng.random((TINY_BATCH, 3, TINY_TILE, TINY_TILE), dtype=np.float32)
    x[1] = 1.0
    x[2, :, :, : TINY_TILE // 2] = 0
    model, _ = load_detector(tiny_checkpoint)
    with torch.no_grad():
        want = [
            {k: v.numpy() for k, v in d.items()}
            for d in model(list(torch.from_numpy(x)), gsd=TINY_GSD)
        ]
    assert_same(run_onnx(tiny_onnx.path, x, TINY_BATCH), want)


def _ops(graph: onnx.GraphProto):
    for node in graph.node:
        yield node.op_type
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                yield from _ops(sub)


def _constants(model: onnx.ModelProto) -> list[np.ndarray]:
    found = [numpy_helper.to_array(t) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant":
            found += [numpy_helper.to_array(a.t) for a in node.attribute if a.name == "value"]
    return found


def test_gsd_embedding_is_a_constant_per_gsd(tiny_export, tiny_checkpoint):
    _, ckpt = load_detector(tiny_checkpoint)
    cfg, grid = ckpt["config"], TINY_TILE // 16
    embeds = {}
    for gsd in (TINY_GSD, 2.0):
        result = tiny_export("onnx", batch=1, gsd=gsd, validate=False, simplify=False)
        model = onnx.load(str(result.path))
        ops = set(_ops(model.graph))
        assert not {"Sin", "Cos"} & ops and "Add" in ops
        want = gsd_sincos_pos_embed(
            cfg["embed_dim"], (grid, grid), gsd * cfg["res_per_metre"]
        ).numpy()
        matches = [
            c
            for c in _constants(model)
            if c.size == want.size and np.array_equal(c.reshape(want.shape), want)
        ]
        assert len(matches) == 1, f"gsd {gsd}: {len(matches)} constants equal the embedding"
        embeds[gsd] = matches[0].reshape(want.shape)
        assert result.report is None and result.metadata.gsd == gsd
    assert np.abs(embeds[TINY_GSD] - embeds[2.0]).max() > 0.5


def test_metadata_round_trips_and_io_follows_the_contract(tiny_onnx, tiny_checkpoint):
    model = onnx.load(str(tiny_onnx.path))
    meta = ModelMetadata.from_props(
        {p.key: p.value for p in model.metadata_props}, source="tiny.onnx"
    )
    assert meta == tiny_onnx.metadata
    _, ckpt = load_detector(tiny_checkpoint)
    assert meta.source_sha256 == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert (meta.class_names, meta.gsd, meta.tile, meta.batch) == (
        TINY_CLASSES,
        TINY_GSD,
        TINY_TILE,
        TINY_BATCH,
    )
    assert (meta.max_detections, meta.score_threshold) == (
        ckpt["config"]["detections_per_image"],
        ckpt["config"]["score_thresh"],
    )
    assert (meta.scalemae_det_version, meta.opset, meta.precision) == (
        scalemae_det.__version__,
        model.opset_import[0].version,
        "float32",
    )
    b, k = TINY_BATCH, meta.max_detections

    def sig(v):
        t = v.type.tensor_type
        return v.name, t.elem_type, [d.dim_value for d in t.shape.dim]

    F, I = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64  # noqa: E741
    assert [sig(v) for v in model.graph.input] == [(INPUT_NAME, F, [b, 3, TINY_TILE, TINY_TILE])]
    assert [sig(v) for v in model.graph.output] == [
        ("boxes", F, [b, k, 4]),
        ("scores", F, [b, k]),
        ("labels", I, [b, k]),
        ("num_detections", I, [b]),
    ]
    onnx.checker.check_model(model)
    stored = json.loads(tiny_onnx.report_path.read_text())
    assert tiny_onnx.report_path.name == "tiny.onnx.parity.json" and stored["passed"]
    assert stored["counts_exported"] == tiny_onnx.report.counts_exported


def test_torchscript_reloads_and_agrees(tiny_export, tiny_onnx, tiles, reference):
    result = tiny_export("torchscript", batch=1)
    module, meta = load_torchscript(result.path)
    assert meta == result.metadata and (meta.opset, meta.batch) == (0, 1)
    same = {k: v for k, v in vars(tiny_onnx.metadata).items() if k not in ("opset", "batch")}
    assert {k: v for k, v in vars(meta).items() if k not in ("opset", "batch")} == same
    with torch.no_grad(), torch.jit.optimized_execution(False):
        out = [tuple(t.numpy() for t in module(torch.from_numpy(tile[None]))) for tile in tiles]
    assert_same(split(out), reference)
    assert result.report.passed


def test_fp16_runs_in_onnxruntime_cpu_within_its_reported_tolerance(
    tiny_export, tiny_onnx, tiles, reference
):
    """Half precision may reorder near-equal scores, so detections are matched
    (scalemae_det.export.parity.compare) before comparing."""
    result = tiny_export("onnx", batch=1, precision="fp16", simplify=False)
    model = onnx.load(str(result.path))
    assert result.metadata.precision == "float16" and result.report.precision == "float16"
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    tol = TOLERANCES["float16"]
    assert result.report.tolerance == {"box_px": tol.box_px, "score": tol.score}
    got = [
        Detections(d["boxes"], d["scores"], d["labels"]) for d in run_onnx(result.path, tiles, 1)
    ]
    want = [Detections(d["boxes"], d["scores"], d["labels"]) for d in reference]
    ours = compare(
        want,
        got,
        result.metadata.score_threshold,
        result.metadata.max_detections,
        "float16",
        "test",
    )
    assert ours.passed and ours.compared_detections >= 10 and ours.max_score_diff > 0
    assert ours.max_box_diff_px <= tol.box_px and ours.max_score_diff <= tol.score
    float32 = tiny_export(
        "onnx", batch=1, gsd=TINY_GSD, validate=False, simplify=False
    )  # also made by the GSD test
    assert result.size_bytes < 0.9 * float32.size_bytes


def test_interrupted_export_leaves_nothing_and_a_dead_writers_work_folder_goes(
    world, place, monkeypatch, capsys
):
    """Ctrl-C during tracing: exit 130, one line, no model and no work folder; a work folder that
    an export killed with SIGKILL left (its process is gone) is removed by the next export of the
    same output, not others'."""
    import scalemae_det.export.onnx_export as onnx_export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    args = commands.values(world, place)
    with monkeypatch.context() as m:
        m.setattr(onnx_export, "trace_to_onnx", interrupted)
        code, _, err = commands.run(commands.EXPORT, args, monkeypatch, capsys)
    assert (code, err.strip()) == (130, "error: interrupted")
    commands.no_export(place, world)

    dead = 2**22 + 12345  # above the kernel's default pid_max, so no live process has it
    stale, other = place["tmp"] / f".m.onnx.work{dead}", place["tmp"] / f".other.onnx.work{dead}"
    for folder in (stale, other):
        folder.mkdir()
        (folder / "raw.onnx").write_bytes(b"half an export")
    code, _, err = commands.run(f"{commands.EXPORT} --no-validate", args, monkeypatch, capsys)
    assert code == 0, err
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in place["tmp"].iterdir() if "m.onnx" in p.name) == ["m.onnx"]


def test_refine_boxes_is_in_the_graph_and_matches_pytorch(tiny_export, tiny_checkpoint, tiles):
    """`--refine-boxes 1`: the ONNX graph and the TorchScript module reproduce the PyTorch model
    refined once (its own reference, not the export's), differ from the plain graph, and say so
    in their metadata."""
    refined = tiny_export("onnx", refine_boxes=1, simplify=False)
    assert refined.metadata.refine_boxes == 1 and refined.report.passed
    assert ModelMetadata.from_file(refined.path).refine_boxes == 1
    model, _ = load_detector(tiny_checkpoint)
    model.roi_heads.refine_steps = 1
    with torch.no_grad():
        out = model(list(torch.from_numpy(tiles)), gsd=TINY_GSD)
    want = [{k: v.numpy() for k, v in d.items()} for d in out]
    got = run_onnx(refined.path, tiles, TINY_BATCH)
    assert_same(got, want)
    script = tiny_export("torchscript", batch=1, refine_boxes=1)
    module, meta = load_torchscript(script.path)
    assert meta.refine_boxes == 1 and script.report.passed
    with torch.no_grad(), torch.jit.optimized_execution(False):
        scripted = [tuple(t.numpy() for t in module(torch.from_numpy(t1[None]))) for t1 in tiles]
    assert_same(split(scripted), want)
    plain = run_onnx(tiny_export("onnx", simplify=False).path, tiles, TINY_BATCH)
    assert sum(len(d["scores"]) for d in got) > 0
    assert any(
        len(a["boxes"]) != len(b["boxes"]) or not np.allclose(a["boxes"], b["boxes"], atol=0.01)
        for a, b in zip(got, plain)
    )
