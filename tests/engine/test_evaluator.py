"""`scalemae-det evaluate` (scalemae_det.engine.evaluator): where its metrics go by default, and
null (not -1) for what COCOeval cannot define."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import commands


def test_evaluate_writes_its_default_beside_the_user_not_the_checkpoint_and_null_for_undefined(
    world, place, monkeypatch, capsys
):
    models = place["tmp"] / "package"
    models.mkdir()
    ckpt = models / "bundled.pth"
    ckpt.write_bytes(Path(world["ckpt"]).read_bytes())
    monkeypatch.chdir(place["dir"])
    args = {**commands.values(world, place), "ckpt": str(ckpt)}
    code, _, err = commands.run(commands.EVALUATE, args, monkeypatch, capsys)
    assert code == 0, err
    assert [p.name for p in models.iterdir()] == ["bundled.pth"]
    metrics = json.loads((place["dir"] / "bundled.eval.json").read_text())
    # the 64-px images hold no large object: COCOeval has no APl, which JSON says as null (not -1)
    assert metrics["APl"] is None and all(
        v is None or v >= 0 for k, v in metrics.items() if k.startswith("AP")
    )
    monkeypatch.setenv("COLUMNS", "200")  # one line per option in rich's help
    help_code, help_out, _ = commands.run("evaluate --help", args, monkeypatch, capsys)
    assert (
        help_code == 0 and "CHECKPOINT_NAME.eval.json" in help_out and "current folder" in help_out
    )
