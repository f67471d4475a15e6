"""train.py and its engine: optimizer groups, schedule, sampling, scale-aware GSD, DDP, resume,
evaluation.

Runs a micro detector (2 blocks, width 96) on generated 64-px images so that a training step
costs about 0.1 s on one CPU thread; the multi-process runs go through the real launchers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch.utils.data import DataLoader

from helpers.training import CLASSES, TINY, make_dataset, overrides, train_args, write_raster
from scalemae_det.base.geo import gsd_m
from scalemae_det.cli import report_user_errors
from scalemae_det.data.coco import collate
from scalemae_det.engine.data import load_split, train_transform
from scalemae_det.engine.distributed import DistInfo
from scalemae_det.engine.loop import Position, make_scaler, train_epoch
from scalemae_det.engine.optim import build_optimizer, build_scheduler, lr_factor, param_groups
from scalemae_det.engine.options import train_flag
from scalemae_det.engine.resume import newest_valid, step_path
from scalemae_det.engine.run import main, warn_defaulted_gsd
from scalemae_det.engine.sampling import SeededSamples, TrainSampler
from scalemae_det.models.detector import build_detector
from scalemae_det.models.weights import load_detector, read_checkpoint

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def run(cmd: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def log_events(folder: Path, event: str) -> list[dict]:
    lines = (folder / "train_log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


# ---------------------------------------------------------------- optimizer and schedule


def test_layer_decay_groups_and_no_decay_on_norms_biases():
    model = build_detector("vit_tiny_patch16", 2, **TINY)
    rate, depth = 0.75, TINY["depth"]
    groups = param_groups(model, weight_decay=0.1, layer_decay=rate)
    seen = {}
    for g in groups:
        for name in g["names"]:
            seen[name] = (g["lr_scale"], g["weight_decay"])
    assert set(seen) == {n for n, _ in model.named_parameters()}  # each parameter exactly once
    for name, p in model.named_parameters():
        if name.startswith("backbone.trunk.patch_embed."):
            layer = 0
        elif name.startswith("backbone.trunk.blocks."):
            layer = int(name.split(".")[3]) + 1
        else:
            layer = depth + 1
        scale, wd = seen[name]
        assert scale == pytest.approx(rate ** (depth + 1 - layer)), name
        no_decay = name.endswith(".bias") or "norm" in name or p.ndim == 1
        assert wd == (0.0 if no_decay else 0.1), name
    assert seen["backbone.trunk.patch_embed.proj.weight"][0] == pytest.approx(rate**3)
    assert seen["roi_heads.box_predictor.cls_score.weight"] == (1.0, 0.1)
    assert seen["backbone.trunk.blocks.1.norm1.weight"] == (pytest.approx(rate), 0.0)


def test_warmup_then_cosine_or_step():
    total, warm = 100, 10
    assert [lr_factor(s, total, warm, "cosine") for s in (0, 4, 9)] == pytest.approx(
        [0.1, 0.5, 1.0]
    )
    for s in (10, 37, 55, 99):
        assert lr_factor(s, total, warm, "cosine") == pytest.approx(
            0.5 * (1 + math.cos(math.pi * (s - 10) / 90))
        )
    assert [lr_factor(s, total, warm, "step") for s in (10, 88, 89, 96, 97)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01]
    )

    model = build_detector("vit_tiny_patch16", 2, **TINY)
    opt = build_optimizer(model, lr=2e-3, weight_decay=0.1, layer_decay=0.5)
    sched = build_scheduler(opt, total, warm, "cosine")
    for _ in range(30):
        opt.step()
        sched.step()
    for g in opt.param_groups:  # the 31st step's lr: base x layer factor x schedule
        layer_factor = 0.5 ** (TINY["depth"] + 1 - g["layer_id"])
        assert g["lr"] == pytest.approx(2e-3 * layer_factor * lr_factor(30, total, warm, "cosine"))


def test_sampler_shards_the_global_batch_and_resumes_mid_epoch():
    one = TrainSampler(11, batch_size=4, seed=3)
    ranks = [TrainSampler(11, batch_size=2, rank=r, world_size=2, seed=3) for r in range(2)]
    for s in (one, *ranks):
        s.set_epoch(5)
    assert one.steps_per_epoch == 2  # 11 // 4; the incomplete global batch is dropped
    keys = list(one)
    per_rank = [list(s) for s in ranks]
    for step in range(2):  # each global batch is the union of the ranks' batches, seeds included
        assert (
            keys[4 * step : 4 * step + 4]
            == per_rank[0][2 * step : 2 * step + 2] + per_rank[1][2 * step : 2 * step + 2]
        )
    assert len({k[0] for k in keys}) == 8
    one.set_epoch(5, start_step=1)
    assert list(one) == keys[4:]
    one.set_epoch(6)
    assert [k[0] for k in one] != [k[0] for k in keys]  # a new order each epoch


# ---------------------------------------------------------------- scale-aware augmentation


def test_augmented_gsd_reaches_the_positional_embedding(tmp_path, caplog):
    """Each sample's GSD, divided by its jitter scale, is the resolution the trunk embeds at.

    Three native GSDs: a UTM GeoTIFF (0.6 m pixels), a PNG with a `gsd` field, a PNG with
    neither (the default). Each image holds one 24 px square, so the scale s an image was
    resized by is read off its box; the crop (256 px) is larger than any resized image, so the
    box is never cut.
    """
    images = tmp_path / "images"
    images.mkdir()
    pixels = np.full((3, 64, 64), 90, np.uint8)
    pixels[:, 20:44, 20:44] = 230
    utm = rasterio.crs.CRS.from_epsg(32633)
    geo_transform = from_origin(500000, 4200000, 0.6, 0.6)
    write_raster(images / "geo.tif", pixels, "GTiff", utm, geo_transform)
    write_raster(images / "field.png", pixels, "PNG")
    write_raster(images / "plain.png", pixels, "PNG")
    recs = [
        {"id": 1, "file_name": "geo.tif"},
        {"id": 2, "file_name": "field.png", "gsd": 0.8},
        {"id": 3, "file_name": "plain.png"},
    ]
    labels = tmp_path / "labels.json"
    labels.write_text(
        json.dumps(
            {
                "images": [{**r, "width": 64, "height": 64} for r in recs],
                "annotations": [
                    {
                        "id": i,
                        "image_id": i,
                        "category_id": 1,
                        "bbox": [20, 20, 24, 24],
                        "iscrowd": 0,
                    }
                    for i in (1, 2, 3)
                ],
                "categories": [{"id": 1, "name": "square"}],
            }
        )
    )
    native = {1: gsd_m(utm, geo_transform, 64, 64), 2: 0.8, 3: 0.45}

    split = load_split(
        images, labels, transform=train_transform(256, (0.25, 2.0)), default_gsd=0.45
    )
    with caplog.at_level(logging.WARNING):
        warn_defaulted_gsd(split, labels, 0.45)
    assert f"{labels}: 1 of 3 image(s) have neither a georeference nor a 'gsd' field and are " in (
        caplog.text
    )
    assert "taken to be at --gsd 0.45 m" in caplog.text
    model = build_detector("vit_tiny_patch16", 1, **TINY)
    seen_res, seen_targets = [], []
    model.backbone.trunk.register_forward_pre_hook(lambda m, args: seen_res.append(args[1].clone()))
    model.register_forward_pre_hook(
        lambda m, args, kw: seen_targets.append(args[1]), with_kwargs=True
    )
    opt = build_optimizer(model, 1e-4, 0.1, 0.9)
    sampler = TrainSampler(3, batch_size=3, seed=11)
    loader = DataLoader(
        SeededSamples(split.dataset), batch_size=3, sampler=sampler, collate_fn=collate
    )
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    progress = Position()
    for epoch in range(3):
        sampler.set_epoch(epoch)
        train_epoch(
            model,
            loader,
            opt,
            build_scheduler(opt, 10, 0, "cosine"),
            make_scaler("off", info.device),
            progress,
            info,
        )
    scales = []
    for res, targets in zip(seen_res, seen_targets):
        for r, t in zip(res.tolist(), targets):
            (box,) = t["boxes"].tolist()
            s = (box[2] - box[0]) / 24
            scales.append(s)
            assert r == pytest.approx(
                native[t["image_id"]] / s * model.config.res_per_metre, rel=1e-6
            )
    assert len(scales) == 9 and max(scales) / min(scales) > 1.5  # the jitter really rescaled


# ---------------------------------------------------------------- bad input


def test_validation_scores_only_the_models_categories(tmp_path, caplog):
    images, labels = make_dataset(tmp_path, 3)
    doc = json.loads(labels.read_text())
    doc["categories"].append({"id": 7, "name": "extra"})
    doc["annotations"].append(
        {
            "id": 999,
            "image_id": 100,
            "category_id": 7,
            "bbox": [1, 1, 10, 10],
            "area": 100,
            "iscrowd": 0,
        }
    )
    labels.write_text(json.dumps(doc))
    split = load_split(
        images, labels, transform=train_transform(64, None), default_gsd=0.5, class_names=CLASSES
    )
    assert [c["name"] for c in split.coco["categories"]] == list(CLASSES)
    assert {a["category_id"] for a in split.coco["annotations"]} == {1, 2}
    assert (
        len(split.coco["annotations"]) == 9
    )  # three boxes in each of three images; the extra one is not scored
    assert "not scoring 1 category the model does not have: extra" in caplog.text
    own = load_split(
        images, labels, transform=train_transform(64, None), default_gsd=0.5
    )  # the file's own classes
    assert len(own.coco["annotations"]) == 10


def test_label_file_not_json_is_one_line_error(tmp_path):
    images, _ = make_dataset(tmp_path, 1)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = subprocess.run(
        [sys.executable, "train.py", *train_args(images, bad, tmp_path / "ck" / "c.pth")],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "images, extra, needle",
    [
        ("nowhere", [], "nowhere"),
        ("images", ["--amp", "fp8"], "--amp"),
        ("images", ["--batch-size", "0"], "--batch_size"),
        ("images", ["--init_from", "nope.pt"], "nope.pt: no such checkpoint (--init_from)"),
        ("images", ["--init_from", "labels.json"], "labels.json: not a readable PyTorch"),
        ("images", ["--init_from", "x", "--pretrained", "y"], "give one"),
    ],
)
def test_missing_image_dir_and_bad_options_are_one_line_errors(
    tmp_path, capsys, images, extra, needle
):
    _, labels = make_dataset(tmp_path, 1)
    extra = [str(labels) if e == "labels.json" else e for e in extra]
    with pytest.raises(SystemExit) as exc:
        report_user_errors(
            main,
            train_args(tmp_path / images, labels, tmp_path / "c.pth", *extra),
            spell=train_flag,
        )
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_init_from_a_detector_keeps_its_config_and_says_which_classes_it_kept(tmp_path, capsys):
    """train.py --init_from end to end (models/test_transfer.py checks the tensors): the run's
    config is the checkpoint's, the report names the classes kept, new and left, and a --model of
    another config is refused."""
    from scalemae_det.models.detector import build_detector
    from scalemae_det.models.weights import detector_state

    images, labels = make_dataset(tmp_path, 3)  # classes bright, red
    torch.manual_seed(3)
    source = build_detector(
        "vit_tiny_patch16", 2, **{**TINY, "global_blocks": (1,), "nms_thresh": 0.4}
    )
    start = tmp_path / "start.pt"
    torch.save(detector_state(source, ["red", "ship"], 0.5), start)
    save = tmp_path / "run" / "checkpoint.pth"
    args = train_args(images, labels, save, "--init_from", str(start), "--num_epochs", "1")
    args = args[: args.index("--model")] + args[args.index("--model") + 2 :]  # no --model
    report_user_errors(main, args, spell=train_flag)
    err = capsys.readouterr().err
    assert "classes kept by name: red; new (initialised): bright" in err
    assert "classes of the checkpoint not trained on: ship" in err
    model, ckpt = load_detector(save)
    assert ckpt["class_names"] == list(CLASSES)
    assert model.config == source.config, (model.config, source.config)
    with pytest.raises(SystemExit):
        report_user_errors(
            main,
            [*args, "--model", "vit_base_patch16"],
            spell=train_flag,
        )
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: --model vit_base_patch16: the --init_from checkpoint is a ")


# ---------------------------------------------------------------- distributed training and
# evaluation

# Every image has the same box layout and the samplers take every anchor and RoI, so each image
# contributes the same number of samples to torchvision's batch-mean losses and no random
# subsampling happens: then DDP's gradient average is exactly the larger batch's.
TAKE_ALL = {
    "rpn_batch_per_image": 100000,
    "roi_batch_per_image": 100000,
    "rpn_post_nms_top_n": [16, 16],
}


@pytest.fixture(scope="module")
def global_batch(tmp_path_factory):
    """The equal-batch runs' data, their arguments, and one process's run with the global batch
    (2)."""
    root = tmp_path_factory.mktemp("global_batch")
    images, labels = make_dataset(root, 4, fixed_layout=True)

    def args(folder: str, batch: int) -> list[str]:
        return [
            *train_args(images, labels, root / folder / "checkpoint.pth"),
            *overrides(TAKE_ALL),
            "--no_augment",
            "--batch_size",
            str(batch),
            "--num_epochs",
            "2",
            "--clip_grad",
            "1.0",
            "--log_every",
            "1",
        ]

    run([sys.executable, "train.py", *args("single", 2)])
    return root, args


def assert_trained_like_the_global_batch(root: Path, other: str) -> None:
    """`other` logged the same loss and (pre-clipping) gradient norm at every step as the one
    process
    with the global batch, and ended at the same weights: equal gradients, scale included."""
    torch.manual_seed(0)  # train.py seeds with --seed (0) before building the model
    init = build_detector("vit_tiny_patch16", 2, **{**TINY, **TAKE_ALL}).state_dict()
    single = weights(root / "single" / "checkpoint.pth")
    moved = sum(float((single[k] - init[k]).norm() ** 2) for k in init) ** 0.5
    assert moved > 0.05
    reference = log_events(root / "single", "train")
    logged = log_events(root / other, "train")
    assert (
        [r["global_step"] for r in logged] == [r["global_step"] for r in reference] == [1, 2, 3, 4]
    )
    for a, b in zip(logged, reference):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    w = weights(root / other / "checkpoint.pth")
    apart = sum(float((single[k] - w[k]).norm() ** 2) for k in init) ** 0.5
    # Adam turns float noise in near-zero gradients into ~1e-5 relative differences
    assert apart < 1e-3 * moved, (other, apart, moved)


def test_two_process_ddp_and_accumulation_equal_one_process_with_double_batch(global_batch):
    """torchrun, 2 gloo processes x batch 1 == 1 process x batch 2 == 1 process x batch 1 x 2
    accumulated."""
    root, args = global_batch
    run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={free_port()}",
            "train.py",
            *args("ddp", 1),
        ]
    )
    run([sys.executable, "train.py", *args("accum", 1), "--accum_steps", "2"])
    assert log_events(root / "ddp", "start")[0]["world_size"] == 2
    for other in ("ddp", "accum"):
        assert_trained_like_the_global_batch(root, other)


def test_two_torchrun_nodes_equal_one_process_with_the_global_batch(global_batch):
    """Two machines as the README's multi-node command runs them: two torchrun agents (one process
    each) meeting through a c10d rendezvous on 127.0.0.1, against one process with their global
    batch."""
    root, args = global_batch
    port = free_port()
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node_rank={rank}",
                "--nproc_per_node=1",
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint=127.0.0.1:{port}",
                "--rdzv_id=two-nodes",
                "train.py",
                *args("nodes", 1),
            ],
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        logs = [node.communicate(timeout=240)[0] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert log_events(root / "nodes", "start")[0]["world_size"] == 2
    assert_trained_like_the_global_batch(root, "nodes")


def test_seed_command_with_old_launcher_and_distributed_evaluation(tmp_path):
    """The seed's command form; its in-loop 2-rank evaluation equals `scalemae-det evaluate` in one
    process."""
    from typer.testing import CliRunner

    from scalemae_det.cli import app

    images, labels = make_dataset(tmp_path, 6, seed=1)
    folder = tmp_path / "save" / "checkpoints"
    run(
        [
            sys.executable,
            "-m",
            "torch.distributed.launch",
            "--nproc_per_node=2",
            f"--master_port={free_port()}",
            "train.py",
            "--train_image_dir",
            str(images),
            "--train_label_file",
            str(labels),
            "--val_image_dir",
            str(images),
            "--val_label_file",
            str(labels),
            "--batch_size",
            "1",
            "--learning_rate",
            "5e-5",
            "--num_epochs",
            "1",
            "--input_size",
            "64",
            "--save_checkpoint_path",
            str(folder / "checkpoint.pth"),
            "--model",
            "vit_tiny_patch16",
            *overrides({"score_thresh": 0.0, "detections_per_image": 50}),
            "--num_workers",
            "0",
        ]
    )
    assert log_events(folder, "start")[0]["world_size"] == 2
    distributed = json.loads((folder / "eval-epoch001.json").read_text())
    model, ckpt = load_detector(folder / "checkpoint.pth")
    assert ckpt["class_names"] == list(CLASSES) and ckpt["gsd"] == 0.5

    out = tmp_path / "single.json"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(folder / "checkpoint.pth"),
            "--image-dir",
            str(images),
            "--label-file",
            str(labels),
            "--out",
            str(out),
            "--detections",
            str(tmp_path / "dets.json"),
            "--device",
            "cpu",
            "--num-workers",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    single = json.loads(out.read_text())
    dets = json.loads((tmp_path / "dets.json").read_text())
    assert single["num_images"] == 6 and single["num_detections"] == len(dets) > 0
    assert {d["image_id"] for d in dets} == set(range(100, 106))  # both ranks' images
    assert distributed == single


# ---------------------------------------------------------------- kill -9 and resume


def test_sigkill_then_resume_auto_matches_an_uninterrupted_run(tmp_path):
    images, labels = make_dataset(tmp_path, 8, seed=2)

    def args(folder: str, workers: int) -> list[str]:
        return [
            sys.executable,
            "train.py",
            *train_args(images, labels, tmp_path / folder / "checkpoint.pth"),
            "--batch_size",
            "2",
            "--num_epochs",
            "2",
            "--save_every",
            "1",
            "--keep_checkpoints",
            "3",
            "--num_workers",
            str(workers),
            "--seed",
            "7",
        ]

    run(args("straight", 0))

    folder = tmp_path / "killed"
    proc = subprocess.Popen(
        args("killed", 0), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not (folder / "checkpoint-step00000003.pth").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before the kill"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # what a SIGKILL during a write leaves: a truncated temporary file (the rename never happened)
    stale = folder / f".checkpoint-step00000009.pth.tmp{proc.pid}"
    stale.write_bytes((folder / "checkpoint-step00000003.pth").read_bytes()[:5000])
    assert not (folder / "checkpoint.pth").exists()  # killed mid-run
    for path in folder.glob("*.pth"):  # whatever the moment, every checkpoint there is whole
        read_checkpoint(path)

    run([*args("killed", 2), "--resume", "auto"])  # resumed with data workers this time
    assert log_events(folder, "start")[-1]["resumed_from"] is not None
    assert not [
        p for p in folder.iterdir() if p.name.startswith(".")
    ]  # the killed writer's temp files are gone
    straight, resumed = (
        weights(tmp_path / "straight" / "checkpoint.pth"),
        weights(folder / "checkpoint.pth"),
    )
    assert straight.keys() == resumed.keys()
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
    assert len(list(folder.glob("checkpoint-step*.pth"))) == 3


def test_resume_auto_takes_the_newest_checkpoint_that_loads(tmp_path):
    save = tmp_path / "checkpoint.pth"
    for step in (2, 3, 4):
        torch.save(
            {"format": "scalemae-det/1", "train": {"global_step": step}}, step_path(save, step)
        )
        time.sleep(0.01)
    newest = step_path(save, 4)
    newest.write_bytes(
        newest.read_bytes()[:-40]
    )  # truncated: written by something that is not train.py
    torch.save(
        {"format": "scalemae-det/1", "model": {}}, tmp_path / "checkpoint-step00000005.pth"
    )  # no train state
    path, ckpt = newest_valid(save)
    assert path == step_path(save, 3) and ckpt["train"]["global_step"] == 3
    assert newest_valid(tmp_path / "other.pth") is None


def test_anchor_sizes_option_reaches_the_model(tmp_path):
    from scalemae_det.base.errors import UserError
    from scalemae_det.engine.options import parse_args
    from scalemae_det.models.configs import get_config

    images, labels = make_dataset(tmp_path, 1)
    args = parse_args(
        train_args(
            images, labels, tmp_path / "c.pth", "--anchor_sizes", "8", "16", "32", "64", "128"
        )
    )
    model = build_detector(args.model, 2, **args.overrides)
    sizes = [a[0] for a in model.rpn.anchor_generator.sizes]
    assert sizes == [8, 16, 32, 64, 128]
    for name in ("vit_large_patch16", "vit_base_patch16"):  # xView-fit defaults, not COCO's 32-512
        assert get_config(name).anchor_sizes == (16, 32, 64, 128, 256)
    with pytest.raises(UserError, match="--anchor_sizes"):
        parse_args(
            train_args(
                images, labels, tmp_path / "c.pth", "--anchor_sizes", "32", "16", "64", "128", "256"
            )
        )


def test_rel_pos_option_trains_tables_from_zero_sized_for_the_crop(tmp_path):
    from helpers.checkpoints import encoder_state
    from scalemae_det.engine.options import parse_args
    from scalemae_det.engine.run import training_overrides

    images, labels = make_dataset(tmp_path, 2)
    torch.save(
        encoder_state(TINY["embed_dim"], TINY["depth"]), tmp_path / "encoder.pth"
    )  # has no tables
    save = tmp_path / "ck" / "c.pth"
    proc = run(
        [
            sys.executable,
            "train.py",
            *train_args(
                images,
                labels,
                save,
                "--rel_pos",
                "--pretrained",
                str(tmp_path / "encoder.pth"),
                "--num_epochs",
                "1",
                "--batch_size",
                "2",
                "--eval_every",
                "0",
            ),
        ]
    )
    assert f"relative position tables zero-initialised {2 * TINY['depth']}" in proc.stderr
    ckpt = read_checkpoint(save)
    assert (
        ckpt["config"]["rel_pos"] and ckpt["config"]["rel_pos_grid"] == 64 // 16
    )  # the 64 px crop's grid
    window = ckpt["config"]["window_size"]
    for i in range(TINY["depth"]):
        side = 4 if i in TINY["global_blocks"] else window
        for axis in "hw":
            table = ckpt["model"][f"backbone.trunk.blocks.{i}.attn.rel_pos_{axis}"]
            assert (
                table.shape == (2 * side - 1, TINY["embed_dim"] // TINY["num_heads"])
                and table.any()
            )  # learnt
    # the grid of a crop padded to the next multiple of 32, unless given
    assert (
        training_overrides(
            parse_args(train_args(images, labels, save, "--rel_pos", "--input_size", "70"))
        )["rel_pos_grid"]
        == 6
    )
    assert (
        training_overrides(
            parse_args(
                train_args(images, labels, save, "--rel_pos", "--override", "rel_pos_grid=9")
            )
        )["rel_pos_grid"]
        == 9
    )
    assert "rel_pos" not in training_overrides(parse_args(train_args(images, labels, save)))


def test_warmup_in_steps_or_epochs(tmp_path):
    from scalemae_det.base.errors import UserError
    from scalemae_det.engine.options import parse_args, warmup_steps

    images, labels = make_dataset(tmp_path, 1)
    base = train_args(images, labels, tmp_path / "c.pth")
    base = base[: base.index("--warmup_steps")] + base[base.index("--warmup_steps") + 2 :]

    def steps(*extra: str, per_epoch: int = 40) -> int:
        return warmup_steps(parse_args([*base, *extra]).warmup, per_epoch)

    assert steps() == 250  # the default
    assert (
        steps("--warmup", "120")
        == steps("--warmup", "120steps")
        == steps("--warmup_steps", "120")
        == 120
    )
    assert steps("--warmup", "1.5epochs") == steps("--warmup", "1.5ep") == 60
    assert steps("--warmup", "0.5epochs", per_epoch=7) == 4  # rounded to the nearest step
    for bad, needle in (
        (["--warmup", "10", "--warmup_steps", "10"], "give one"),
        (["--warmup", "2.5steps"], "whole"),
        (["--warmup", "ten"], "--warmup ten"),
        (["--warmup_steps", "-1"], "at least 0"),
    ):
        with pytest.raises(UserError, match=needle):
            parse_args([*base, *bad])
