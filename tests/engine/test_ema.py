"""train.py --ema (scalemae_det.engine.ema): the average against a reference computed from the step
checkpoints, its exact resume, and its bad values."""

from __future__ import annotations

import pytest
import torch

from helpers.training import make_dataset, train_args
from scalemae_det.cli import report_user_errors
from scalemae_det.engine.ema import ema_rate
from scalemae_det.engine.options import train_flag
from scalemae_det.engine.resume import step_path
from scalemae_det.engine.run import main as train_main
from scalemae_det.models.weights import read_checkpoint

DECAY = 0.9


def train(images, labels, save, *extra):
    # two epochs of three steps, a checkpoint after every step, all kept
    schedule = "--batch_size 2 --num_epochs 2 --save_every 1 --keep_checkpoints 0 --seed 3"
    argv = train_args(images, labels, save, *schedule.split(), *extra)
    report_user_errors(train_main, argv, spell=train_flag)


def test_the_saved_model_is_the_tensorflow_style_average_of_the_trained_weights(tmp_path):
    images, labels = make_dataset(tmp_path, 6, seed=1)
    save = tmp_path / "ema" / "checkpoint.pth"
    train(images, labels, save, "--ema", str(DECAY))
    steps = [read_checkpoint(step_path(save, t)) for t in range(1, 7)]
    # rule 2 by hand, in float64, from the trained weights each step checkpoint records; the
    # average before step 1 (rule 1) is the seed's initial weights, which a run without --ema
    # stopped before its first step has too
    first = steps[0]["train"]["weights"]
    avg = None
    for t, ckpt in enumerate(steps, 1):
        assert ckpt["train"]["ema_updates"] == t
        trained = ckpt["train"]["weights"]
        if avg is None:
            d = ema_rate(DECAY, 1)
            # avg_1 = d * w_0 + (1 - d) * w_1, so w_0 = (avg_1 - (1 - d) w_1) / d
            w0 = {
                k: (ckpt["model"][k].double() - (1 - d) * v.double()) / d
                for k, v in first.items()
                if v.is_floating_point()
            }
            avg = w0
        d = ema_rate(DECAY, t)
        avg = {k: d * a + (1 - d) * trained[k].double() for k, a in avg.items()}
        for k, a in avg.items():
            torch.testing.assert_close(ckpt["model"][k].double(), a, rtol=1e-5, atol=1e-6)
    assert ema_rate(DECAY, 1) == pytest.approx(2 / 11) and ema_rate(DECAY, 1000) == DECAY
    final = read_checkpoint(save)
    for k, v in final["model"].items():
        assert torch.equal(v, steps[-1]["model"][k]), k
    # the average is not the trained weights: the check above could fail
    moved = [
        k
        for k, v in final["model"].items()
        if v.is_floating_point() and not torch.equal(v, final["train"]["weights"][k])
    ]
    assert len(moved) > len(final["model"]) // 2


def test_averaging_leaves_the_training_itself_unchanged(tmp_path):
    """The weights trained with --ema are, bit for bit, those trained without it."""
    images, labels = make_dataset(tmp_path, 6, seed=1)
    plain, averaged = tmp_path / "plain" / "c.pth", tmp_path / "ema" / "c.pth"
    train(images, labels, plain)
    train(images, labels, averaged, "--ema", str(DECAY))
    a, b = read_checkpoint(plain), read_checkpoint(averaged)
    assert "weights" not in a["train"] and "ema_updates" not in a["train"]
    for k, v in a["model"].items():
        assert torch.equal(v, b["train"]["weights"][k]), k


def test_resume_continues_the_same_average_and_refuses_another_decay(tmp_path, capsys):
    images, labels = make_dataset(tmp_path, 6, seed=1)
    straight = tmp_path / "straight" / "checkpoint.pth"
    train(images, labels, straight, "--ema", str(DECAY))
    cut = tmp_path / "cut" / "checkpoint.pth"
    train(images, labels, cut, "--ema", str(DECAY))
    for t in (4, 5, 6):
        step_path(cut, t).unlink()
    cut.unlink()
    train(images, labels, cut, "--ema", str(DECAY), "--resume", str(step_path(cut, 3)))
    a, b = read_checkpoint(straight), read_checkpoint(cut)
    for part in ("model", "weights"):
        x, y = (a["model"], b["model"]) if part == "model" else (a["train"][part], b["train"][part])
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), (part, k)
    assert b["train"]["ema_updates"] == 6

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        train(images, labels, cut, "--resume", str(step_path(cut, 3)))  # --ema left out
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 1 and len(err) == 1
    assert "trained with --ema 0.9, now --ema 0" in err[0] and "step00000003.pth" in err[0]


@pytest.mark.parametrize("value", ["1", "-0.1", "nan", "1.5"])
def test_bad_ema_is_one_error_line_before_any_work(tmp_path, capsys, value):
    images, labels = make_dataset(tmp_path, 2, seed=1)
    save = tmp_path / "out" / "checkpoint.pth"
    with pytest.raises(SystemExit) as exc:
        train(images, labels, save, "--ema", value)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code != 0 and len(err) == 1
    assert err[0].startswith("error:") and "--ema" in err[0]
    assert not save.parent.exists() or not any(save.parent.iterdir())
