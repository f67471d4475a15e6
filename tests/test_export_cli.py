"""`scalemae-det export` through the real entry point: bad input is one line, exit 1, nothing written."""

from __future__ import annotations

import sys

import pytest
import torch

import export.parity
from export.parity import Tolerance
from scalemae_det.cli import main


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


@pytest.mark.parametrize("case", ["missing", "not_a_checkpoint", "foreign_dict", "tile", "batch", "parent_is_a_file"])
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path, monkeypatch, capsys, tiny_checkpoint):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    ckpt, out, extra, words = tiny_checkpoint, out_dir / "m.onnx", [], []
    if case == "missing":
        ckpt, words = tmp_path / "nope.pt", ["nope.pt", "no such checkpoint"]
    elif case == "not_a_checkpoint":
        ckpt = tmp_path / "junk.pt"
        ckpt.write_text("not a checkpoint")
        words = ["junk.pt"]
    elif case == "foreign_dict":
        ckpt = tmp_path / "encoder.pt"
        torch.save({"model": {"blocks.0.norm1.weight": torch.ones(3)}}, ckpt)
        words = ["encoder.pt", "not a scalemae-det detector checkpoint"]
    elif case == "tile":
        extra, words = ["--tile", "100"], ["--tile 100", "multiple of 32"]
    elif case == "batch":
        extra, words = ["--batch", "0"], ["--batch 0"]
    else:
        (tmp_path / "file").write_text("")
        out, words = tmp_path / "file" / "m.onnx", ["m.onnx", "does not exist"]
    code, _, err = run_cli(monkeypatch, capsys, ckpt, "--out", out, "--tile", 64, "--batch", 1, *extra)
    assert_one_line_error(code, err, *words)
    assert list(out_dir.iterdir()) == []


def test_failed_parity_exits_nonzero_and_leaves_no_file(tmp_path, monkeypatch, capsys, tiny_checkpoint):
    """A tolerance no export can meet stands in for a broken graph."""
    monkeypatch.setitem(export.parity.TOLERANCES, "float32", Tolerance(box_px=-1.0, score=-1.0))
    out = tmp_path / "m.onnx"
    code, _, err = run_cli(monkeypatch, capsys, tiny_checkpoint, "--out", out, "--tile", 64, "--batch", 1, "--no-simplify")
    assert_one_line_error(code, err, "m.onnx", "parity FAILED", "nothing written")
    assert list(tmp_path.iterdir()) == []


def test_all_formats_write_both_files_and_reports(tmp_path, monkeypatch, capsys, tiny_checkpoint):
    code, _, err = run_cli(monkeypatch, capsys, tiny_checkpoint, "--out", tmp_path / "m.onnx", "--format", "all",
                           "--tile", 64, "--batch", 1, "--no-simplify")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.parity.json", "m.pt", "m.pt.parity.json"]
    assert err.count("parity passed") == 2
