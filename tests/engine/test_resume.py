"""Resuming training (scalemae_det.engine.resume) after a kill: the interrupted evaluation runs,
another architecture is refused."""

from __future__ import annotations

import json

import pytest

from helpers.training import train_args
from scalemae_det.cli import report_user_errors
from scalemae_det.engine.options import train_flag
from scalemae_det.engine.run import main as train_main


def test_resume_runs_the_evaluation_a_kill_interrupted_and_refuses_another_architecture(
    world, place, monkeypatch, capsys
):
    import scalemae_det.engine.run as engine_run

    save = place["out"] / "c.pth"
    argv = train_args(
        world["images"],
        world["labels"],
        save,
        "--val_image_dir",
        str(world["images"]),
        "--val_label_file",
        str(world["labels"]),
        "--num_epochs",
        "1",
        "--batch_size",
        "3",
    )
    real = engine_run.evaluate_split

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(engine_run, "evaluate_split", killed)
        with pytest.raises(SystemExit) as exc:
            report_user_errors(train_main, argv, spell=train_flag)
    assert (
        exc.value.code == 130
        and capsys.readouterr().err.strip().splitlines()[-1] == "error: interrupted"
    )
    assert not save.exists() and not (place["out"] / "eval-epoch001.json").exists()
    assert engine_run.evaluate_split is real

    report_user_errors(train_main, [*argv, "--resume", "auto"], spell=train_flag)
    assert json.loads((place["out"] / "eval-epoch001.json").read_text())["num_images"] == 3
    assert [
        e["epoch"]
        for e in map(json.loads, (place["out"] / "train_log.jsonl").read_text().splitlines())
        if e["event"] == "eval"
    ] == [1]
    assert save.exists()

    capsys.readouterr()
    wider = [*argv, "--resume", str(save), "--override", "embed_dim=128"]
    with pytest.raises(SystemExit) as exc:
        report_user_errors(train_main, wider, spell=train_flag)
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "c.pth: weights do not fit" in err[0]
        and "embed_dim 128" in err[0]
        and "shapes differ" in err[0]
    )
