"""`scalemae-det export` through the real entry point: bad input is one line, exit 1, nothing
written."""

from __future__ import annotations

import sys

import onnx
import pytest
import torch

import scalemae_det.export.parity
from scalemae_det.base.metadata import ModelMetadata
from scalemae_det.cli import main
from scalemae_det.export.parity import Tolerance


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["scalemae-det", "export", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *words):
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(w in lines[0] for w in words), lines[0]


def _junk(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_text("not a checkpoint")
    return path


def _encoder(tmp_path):
    path = tmp_path / "encoder.pt"
    torch.save({"model": {"blocks.0.norm1.weight": torch.ones(3)}}, path)
    return path


def _under_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "m.onnx"


# case: (checkpoint (None: the tiny one), output (None: out/m.onnx), extra arguments, words of the
# error line)
BAD = {
    "missing": (lambda tmp: tmp / "nope.pt", None, [], ["nope.pt", "no such checkpoint"]),
    "not_a_checkpoint": (_junk, None, [], ["junk.pt", "not a readable PyTorch checkpoint"]),
    "foreign_dict": (_encoder, None, [], ["encoder.pt", "not a scalemae-det detector checkpoint"]),
    "tile": (None, None, ["--tile", "100"], ["--tile 100", "multiple of 32"]),
    "batch": (None, None, ["--batch", "0"], ["--batch 0", "at least 1"]),
    "parent_is_a_file": (None, _under_a_file, [], ["m.onnx", "is a file, not a folder"]),
    "deepness_batch": (
        None,
        None,
        ["--format", "deepness", "--batch", "2"],
        ["--batch 2", "batch 1"],
    ),
    "deepness_not_onnx": (
        None,
        lambda tmp: tmp / "out" / "m.pt",
        ["--format", "deepness"],
        ["--out", "m.pt", ".onnx suffix"],
    ),
    "overlap_not_deepness": (None, None, ["--overlap", "0.25"], ["--overlap", "--format deepness"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_writes_nothing(
    case, tmp_path, monkeypatch, capsys, tiny_checkpoint
):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    make_ckpt, make_out, extra, words = BAD[case]
    ckpt = make_ckpt(tmp_path) if make_ckpt else tiny_checkpoint
    out = make_out(tmp_path) if make_out else out_dir / "m.onnx"
    code, _, err = run_cli(
        monkeypatch, capsys, ckpt, "--out", out, "--tile", 64, "--batch", 1, *extra
    )
    assert_one_line_error(code, err, *words)
    assert list(out_dir.iterdir()) == []


def test_failed_parity_exits_nonzero_and_leaves_no_file(
    tmp_path, monkeypatch, capsys, tiny_checkpoint
):
    """A tolerance no export can meet stands in for a broken graph."""
    monkeypatch.setitem(
        scalemae_det.export.parity.TOLERANCES, "float32", Tolerance(box_px=-1.0, score=-1.0)
    )
    out = tmp_path / "m.onnx"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        tiny_checkpoint,
        "--out",
        out,
        "--tile",
        64,
        "--batch",
        1,
        "--no-simplify",
    )
    assert_one_line_error(code, err, "m.onnx", "parity FAILED", "nothing written")
    assert list(tmp_path.iterdir()) == []


def test_all_formats_write_both_files_with_metadata(tmp_path, monkeypatch, capsys, tiny_checkpoint):
    """The glue only (parity is covered in test_export): both files, each reloadable with its
    metadata."""
    from scalemae_det.base.metadata import ModelMetadata
    from scalemae_det.export.torchscript_export import load_torchscript

    code, _, err = run_cli(
        monkeypatch,
        capsys,
        tiny_checkpoint,
        "--out",
        tmp_path / "m",
        "--format",
        "all",
        "--tile",
        64,
        "--batch",
        2,
        "--gsd",
        0.3,
        "--no-validate",
    )
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.pt"]
    onnx_meta = ModelMetadata.from_props(
        {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    )
    _, ts_meta = load_torchscript(tmp_path / "m.pt")
    assert (
        (onnx_meta.tile, onnx_meta.batch, onnx_meta.gsd)
        == (ts_meta.tile, ts_meta.batch, ts_meta.gsd)
        == (64, 2, 0.3)
    )
    assert err.count("not validated") == 2


def test_a_gsd_outside_the_trained_scales_is_warned(tmp_path, monkeypatch, capsys, tiny_checkpoint):
    """Trained on 0.1 m images enlarged 1.6-2.5x, the model saw 0.04-0.0625 m: exporting at the
    recorded 0.1 m says so and names the middle of the range; 0.05 m, inside it, is quiet."""
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    args = {**(ckpt.get("args") or {}), "scale_range": [1.6, 2.5]}
    trained = tmp_path / "enlarged.pt"
    torch.save({**ckpt, "gsd": 0.1, "input_size": 100, "args": args}, trained)
    out = tmp_path / "m.onnx"
    base = ("--out", out, "--no-validate", "--batch", "1")
    code, _, err = run_cli(monkeypatch, capsys, trained, *base)
    warned = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert code == 0 and len(warned) == 1, err
    assert "--gsd 0.1 m is outside the 0.04-0.0625 m" in warned[0]
    assert "about 0.05 m" in warned[0]
    out.unlink()
    code, _, err = run_cli(monkeypatch, capsys, trained, *base, "--gsd", "0.05")
    assert code == 0 and "warning" not in err, err
    assert ModelMetadata.from_file(out).gsd == 0.05


def test_tile_defaults_to_the_training_size_and_a_far_tile_is_warned(
    tmp_path, monkeypatch, capsys, tiny_checkpoint
):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    trained = tmp_path / "trained_at_100.pt"
    torch.save({**ckpt, "input_size": 100}, trained)  # train.py's --input_size 100
    out = tmp_path / "m.onnx"
    code, _, err = run_cli(
        monkeypatch, capsys, trained, "--out", out, "--no-validate", "--batch", "1"
    )
    assert code == 0 and "warning" not in err, err
    # 100 rounded up to the tile's multiple of 32
    assert onnx.load(out).graph.input[0].type.tensor_type.shape.dim[2].dim_value == 128
    code, _, err = run_cli(
        monkeypatch, capsys, trained, "--out", out, "--no-validate", "--batch", "1", "--tile", "288"
    )
    warned = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert code == 0 and len(warned) == 1, err
    assert "--tile 288 is 2.25x the 128 px the model was trained on" in warned[0]
    out.unlink()
    code, _, err = run_cli(
        monkeypatch, capsys, tiny_checkpoint, "--out", out, "--no-validate", "--batch", "1"
    )
    warned = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert code == 0 and len(warned) == 1 and "exporting at --tile 800" in warned[0], err
