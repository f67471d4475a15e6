"""train.py: put the pieces together (data, model, optimizer, resume, epochs, checkpoints,
evaluation)."""

from __future__ import annotations

import logging
import math
import os
import resource
import time
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from scalemae_det.base.atomic import remove_stale_temps
from scalemae_det.base.errors import InputError, ParameterError
from scalemae_det.data.coco import collate
from scalemae_det.data.transforms import EvalTransform
from scalemae_det.engine import resume
from scalemae_det.engine.data import DataSplit, load_split, train_transform
from scalemae_det.engine.distributed import (
    DistInfo,
    broadcast_object,
    gather_to_main,
    init_distributed,
    mean_over_ranks,
    shutdown,
)
from scalemae_det.engine.ema import WeightAverage
from scalemae_det.engine.evaluator import evaluate_split
from scalemae_det.engine.jsonlog import JsonLines
from scalemae_det.engine.loop import Position, StepStats, make_scaler, resolve_amp, train_epoch
from scalemae_det.engine.optim import build_optimizer, build_scheduler
from scalemae_det.engine.options import parse_args, warmup_steps
from scalemae_det.engine.progressbar import progress_bar
from scalemae_det.engine.sampling import SeededSamples, TrainSampler, derived_seed
from scalemae_det.metrics.report import print_metrics, write_results
from scalemae_det.models import transfer
from scalemae_det.models.configs import DetectorConfig, get_config
from scalemae_det.models.detector import SIZE_DIVISIBLE, ScaleMAEDetector
from scalemae_det.models.weights import (
    check_weights,
    config_from_dict,
    describe,
    detector_state,
    load_pretrained,
    read_detector_checkpoint,
)

LOG_NAME = "train_log.jsonl"
log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    info = init_distributed(args.device, args.local_rank)
    try:
        train(args, info)
    finally:
        shutdown()


def set_determinism(enabled: bool) -> None:
    torch.backends.cudnn.benchmark = not enabled
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: torchvision's RoIAlign backward has no deterministic CUDA kernel
        torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class Run:
    """Everything one training run holds: what a checkpoint captures, and what step callbacks
    need."""

    args: Namespace  # as given: nothing here rewrites the user's options
    info: DistInfo
    amp: str  # --amp resolved for the device (auto -> bf16 or off)
    model: torch.nn.Module  # DDP-wrapped when distributed, once restored
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    sampler: TrainSampler
    train: DataSplit
    gsd: float  # the training images' median GSD, metres: the checkpoint's
    steps_per_epoch: int
    global_batch: int
    log: JsonLines
    ema: WeightAverage | None = None  # --ema: the average a checkpoint saves as the model
    progress: Position = field(default_factory=Position)

    @property
    def save_path(self) -> Path:
        return self.args.save_checkpoint_path

    def state(self) -> dict[str, Any]:
        """The checkpoint dict (on rank 0; every rank must call this, it gathers the RNG states)."""
        rngs = gather_to_main(resume.rng_state(self.info.device), self.info)
        if not self.info.is_main:
            return {}
        train_state = {
            "epoch": self.progress.epoch,
            "step_in_epoch": self.progress.step_in_epoch,
            "global_step": self.progress.global_step,
            "eval_pending": self.progress.eval_pending,
            "global_batch": self.global_batch,
            "world_size": self.info.world_size,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rngs,
        }
        if self.ema is not None:  # engine/ema.py rule 3
            train_state["weights"] = getattr(self.model, "module", self.model).state_dict()
            train_state["ema_updates"] = self.ema.updates
        return detector_state(
            self.model if self.ema is None else self.ema.module,
            self.train.class_names,
            self.gsd,
            train=train_state,
            category_ids=list(self.train.category_ids),
            input_size=self.args.input_size,  # the export's default tile
            args=plain_args(self.args),
        )

    def save(self, path: Path) -> None:
        state = self.state()
        if self.info.is_main:
            resume.save(path, state)
            resume.prune(self.save_path, self.args.keep_checkpoints)
            self.log.write(
                {"event": "checkpoint", "path": str(path), "global_step": self.progress.global_step}
            )


def plain_args(args: Namespace) -> dict[str, Any]:
    """The options as JSON-like values (weights_only checkpoints load no Path objects)."""

    def plain(v):
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    return {k: plain(v) for k, v in vars(args).items()}


def train(args: Namespace, info: DistInfo) -> None:
    console = Console(stderr=True, quiet=not info.is_main)
    set_determinism(args.deterministic)
    train_split, val_split, gsd = load_data(args)
    resume_path = find_resume(args, info)
    if resume_path and args.init_from:
        console.print(
            f"{resume_path}: resuming the run; --init_from {args.init_from} gave its first weights",
            highlight=False,
        )
    starts = (None, None) if resume_path else (args.pretrained, args.init_from)
    run = build_run(args, info, train_split, gsd, *starts, console)
    if resume_path:
        run.progress = restore(resume_path, run, console)
    else:
        torch.manual_seed(derived_seed(args.seed, info.rank))  # per-rank randomness from here on
    if info.distributed:
        run.model = DistributedDataParallel(
            run.model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )
    announce(run, resume_path, console)
    fit(run, val_split, console)


def load_data(args: Namespace) -> tuple[DataSplit, DataSplit | None, float]:
    """The training split (refused when it has nothing to learn from), the validation split, and the
    training images' median GSD (read here, so that an unreadable image fails before training)."""
    common = {"default_gsd": args.gsd, "bands": args.bands}
    train_split = load_split(
        args.train_image_dir,
        args.train_label_file,
        **common,
        transform=train_transform(
            args.input_size,
            None if args.no_augment else args.scale_range,
            args.min_visible_px,
            args.photometric,
            args.band_gain,
        ),
    )
    if not any(len(rec.boxes) for rec in train_split.dataset.records):
        raise InputError(
            f"{args.train_label_file}: {len(train_split.dataset)} image(s) but not one usable "
            "annotation: "
            "nothing to learn from"
        )
    gsd = train_split.dataset.median_gsd()
    warn_defaulted_gsd(train_split, args.train_label_file, args.gsd)
    val_split = (
        load_split(
            args.val_image_dir,
            args.val_label_file,
            transform=EvalTransform(args.input_size),
            class_names=train_split.class_names,
            **common,
        )
        if args.val_image_dir
        else None
    )
    if val_split is not None:
        warn_defaulted_gsd(val_split, args.val_label_file, args.gsd)
    return train_split, val_split, gsd


def warn_defaulted_gsd(split: DataSplit, label_file: Path, default: float) -> None:
    """One line saying how many images took --gsd: a wrong scale trains the GSD embedding on it."""
    n = split.dataset.defaulted_gsd()
    if n:
        log.warning(
            f"warning: {label_file}: {n} of {len(split.dataset)} image(s) have neither a "
            f"georeference nor a 'gsd' field and are taken to be at --gsd {default:g} m"
        )


def build_run(
    args: Namespace,
    info: DistInfo,
    train_split: DataSplit,
    gsd: float,
    pretrained: Path | None,
    init_from: Path | None,
    console: Console,
) -> Run:
    """Model, optimizer, sampler, schedule and scaler, built in the order that fixes the initial
    weights."""
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = build_model(args, train_split.class_names, pretrained, init_from, console)
    model = model.to(info.device)
    layer_decay = args.layer_decay if args.layer_decay is not None else model.config.layer_decay
    optimizer = build_optimizer(model, args.learning_rate, args.weight_decay, layer_decay)
    sampler = TrainSampler(
        len(train_split.dataset),
        args.batch_size,
        info.rank,
        info.world_size,
        args.seed,
        step_multiple=args.accum_steps,
    )
    steps_per_epoch = sampler.steps_per_epoch // args.accum_steps
    global_batch = args.batch_size * info.world_size * args.accum_steps
    if steps_per_epoch == 0:
        raise InputError(
            f"{args.train_label_file}: {len(train_split.dataset)} usable images, fewer than one "
            f"global batch of {global_batch} (batch size x processes x accumulation)"
        )
    scheduler = build_scheduler(
        optimizer,
        steps_per_epoch * args.num_epochs,
        warmup_steps(args.warmup, steps_per_epoch),
        args.schedule,
    )
    amp = resolve_amp(args.amp, info.device)
    log = JsonLines(args.save_checkpoint_path.parent / LOG_NAME, info.is_main)
    return Run(
        args,
        info,
        amp,
        model,
        optimizer,
        scheduler,
        make_scaler(amp, info.device),
        sampler,
        train_split,
        gsd,
        steps_per_epoch,
        global_batch,
        log,
        WeightAverage(model, args.ema) if args.ema else None,
    )


def announce(run: Run, resume_path: Path | None, console: Console) -> None:
    """The start event in the log and the one-line summary on the console (rank 0)."""
    if not run.info.is_main:
        return
    run.log.write(
        {
            "event": "start",
            "world_size": run.info.world_size,
            "global_batch": run.global_batch,
            "steps_per_epoch": run.steps_per_epoch,
            "resumed_from": str(resume_path) if resume_path else None,
            "args": plain_args(run.args),
        }
    )
    console.print(
        f"training {model_name(run.model)} on {len(run.train.dataset)} images "
        f"({len(run.train.class_names)} classes), {run.info.world_size} process(es) on "
        f"{run.info.device}, "
        f"global batch {run.global_batch}, {run.steps_per_epoch} steps/epoch, amp {run.amp}"
        + ("" if run.ema is None else f", saving the weights' average (--ema {run.args.ema:g})")
    )


def train_loader(run: Run) -> DataLoader:
    args = run.args
    return DataLoader(
        SeededSamples(run.train.dataset),
        batch_size=args.batch_size,
        sampler=run.sampler,
        num_workers=args.num_workers,
        collate_fn=collate,
        pin_memory=run.info.device.type == "cuda",
        persistent_workers=False,
        generator=torch.Generator().manual_seed(args.seed),
    )  # keeps the global RNG out of it


def fit(run: Run, val_split: DataSplit | None, console: Console) -> None:
    """The epochs from where the run stands, each complete only with its evaluation, then the final
    save."""
    args, progress, loader = run.args, run.progress, train_loader(run)
    if (
        progress.eval_pending and val_split
    ):  # stopped during an epoch's evaluation: that epoch is not done yet
        evaluate_epoch(run, val_split, console)
    progress.eval_pending = False
    for epoch in range(progress.epoch, args.num_epochs):
        run.sampler.set_epoch(epoch, progress.step_in_epoch * args.accum_steps)
        with progress_bar(
            f"epoch {epoch + 1}/{args.num_epochs}", run.steps_per_epoch, run.info.is_main
        ) as advance:
            advance(progress.step_in_epoch)
            train_one_epoch(run, loader, advance)
        last = epoch + 1 == args.num_epochs
        # the epoch's checkpoint says whether its evaluation is still to run, so that a run stopped
        # during the evaluation runs it when resumed instead of counting the epoch as done
        progress.epoch, progress.step_in_epoch = epoch + 1, 0
        progress.eval_pending = bool(val_split) and (
            last or bool(args.eval_every and (epoch + 1) % args.eval_every == 0)
        )
        run.save(resume.step_path(run.save_path, progress.global_step))
        if progress.eval_pending:
            evaluate_epoch(run, val_split, console)
            progress.eval_pending = False
    run.save(run.save_path)
    if run.info.is_main:
        console.print(f"saved {run.save_path}")


def train_one_epoch(run: Run, loader: DataLoader, advance) -> None:
    args = run.args
    try:
        train_epoch(
            run.model,
            loader,
            run.optimizer,
            run.scheduler,
            run.scaler,
            run.progress,
            run.info,
            amp=run.amp,
            accum_steps=args.accum_steps,
            clip_grad=args.clip_grad,
            on_step=step_callback(run, advance),
        )
    except FloatingPointError as exc:
        raise ParameterError(
            "learning_rate",
            f"training diverged, {exc}: lower the learning rate, or clip "
            f"gradients with `clip_grad` (now {args.clip_grad:g})",
            value=args.learning_rate,
        ) from None


def model_name(model: torch.nn.Module) -> str:
    return getattr(model, "module", model).config.name


def find_resume(args: Namespace, info: DistInfo) -> Path | None:
    """The checkpoint to resume from, decided on rank 0 (which also clears dead writers' temporary
    files)."""
    path = None
    if info.is_main:
        folder = args.save_checkpoint_path.parent
        if folder.is_dir():
            remove_stale_temps(folder)
        if args.resume == "auto":
            found = resume.newest_valid(args.save_checkpoint_path)
            path = str(found[0]) if found else None
        elif args.resume:
            path = args.resume
    path = broadcast_object(path, info)
    return Path(path) if path else None


def build_model(
    args: Namespace,
    class_names: list[str],
    pretrained: Path | None,
    init_from: Path | None,
    console: Console,
) -> torch.nn.Module:
    """The model to train: --model's config (or --init_from's, also when resuming) with
    --override, then ScaleMAE weights (`pretrained`) or a trained detector's (`init_from`); neither
    when resuming."""
    num_classes = len(class_names)
    start = read_detector_checkpoint(args.init_from) if args.init_from else None
    if start is not None:
        name = start["config"].get("name")
        if args.model not in (None, name):
            raise InputError(
                f"--model {args.model}: the --init_from checkpoint is a {name}; leave --model "
                "out (the config is the checkpoint's)"
            )
        args.model = name
    try:
        base = get_config(args.model) if start is None else config_from_dict(start["config"])
        model = ScaleMAEDetector(base.with_overrides(**training_overrides(args, base)), num_classes)
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(
            f"--model {args.model} {' '.join('--override ' + o for o in args.override)}: "
            f"{exc.args[0] if exc.args else exc}"
        ) from None
    if pretrained:
        report = load_pretrained(model, pretrained)
        console.print(f"{pretrained}: {report}")
    if init_from is not None:
        report = transfer.init_from(model, start, class_names, init_from)
        for line in report.lines():
            console.print(f"{init_from}: {line}", highlight=False, soft_wrap=True)
    return model


def training_overrides(args: Namespace, base: DetectorConfig | None = None) -> dict:
    """--override and the options that set config fields; with the relative position bias on, the
    global blocks' tables fit the training crop's grid (as ViTDet's fit its 1024 px input) unless
    --override rel_pos_grid=N says otherwise."""
    overrides = dict(args.overrides)
    if overrides.get("rel_pos") and "rel_pos_grid" not in overrides:
        base = base or get_config(args.model)
        patch = base.with_overrides(**overrides).patch_size
        overrides["rel_pos_grid"] = (
            math.ceil(args.input_size / SIZE_DIVISIBLE) * SIZE_DIVISIBLE // patch
        )
    return overrides


def restore(path: Path, run: Run, console: Console) -> Position:
    """Load a training checkpoint into the run (model, optimizer, schedule, scaler, data order,
    RNG);
    returns where training stopped."""
    ckpt = resume.load_resumable(path)
    state = ckpt["train"]
    position = Position(
        state["epoch"],
        state["step_in_epoch"],
        state["global_step"],
        state.get("eval_pending", False),
    )
    if state["global_batch"] != run.global_batch and position.step_in_epoch:
        raise InputError(
            f"{path}: stopped mid-epoch with a global batch of {state['global_batch']}, now "
            f"{run.global_batch}; resume with the same batch size, processes and accumulation"
        )
    model, info = run.model, run.info
    check_weights(
        path,
        ckpt["model"],
        model,
        describe(model.config, model.num_classes) + " (from --model and --override)",
    )
    trained_ema = float(ckpt.get("args", {}).get("ema") or 0.0)
    if trained_ema != run.args.ema:
        raise InputError(
            f"{path}: trained with --ema {trained_ema:g}, now --ema {run.args.ema:g}; resume "
            "with the same --ema (the average could not continue)"
        )
    if run.ema is None:
        model.load_state_dict(ckpt["model"])
    else:  # engine/ema.py rule 3
        model.load_state_dict(state["weights"])
        run.ema.load(ckpt["model"], state["ema_updates"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.sampler.seed = state["sampler"]["seed"]  # the run's data order, whatever --seed says now
    if len(state["rng"]) == info.world_size:
        resume.set_rng_state(state["rng"][info.rank], info.device)
    else:
        torch.manual_seed(derived_seed(state["sampler"]["seed"], info.rank, position.global_step))
    console.print(
        f"resuming from {path}: epoch {position.epoch + 1}, step {position.step_in_epoch}"
    )
    return position


def step_callback(run: Run, advance):
    """After each optimizer step: progress bar, log line every --log_every steps, checkpoint every
    --save_every."""
    args, info, steps_per_epoch = run.args, run.info, run.steps_per_epoch
    window = {"images": 0, "seconds": 0.0}

    def on_step(p: Position, stats: StepStats) -> None:
        if run.ema is not None:
            run.ema.update(run.model)
        window["images"] += stats.images
        window["seconds"] += stats.seconds
        lr = stats.lr
        if p.global_step % args.log_every == 0 or p.step_in_epoch == steps_per_epoch:
            losses = mean_over_ranks(stats.losses, info)
            ips = window["images"] * info.world_size / max(window["seconds"], 1e-9)
            run.log.write(
                {
                    "event": "train",
                    "epoch": p.epoch,
                    "step": p.step_in_epoch,
                    "global_step": p.global_step,
                    "loss": sum(losses.values()),
                    **losses,
                    "lr": lr,
                    "grad_norm": stats.grad_norm,
                    "images_per_s": ips,
                    "max_memory_mb": max_memory_mb(info.device),
                }
            )
            window.update(images=0, seconds=0.0)
        advance(1, f"loss {sum(stats.losses.values()):.3f}  lr {lr:.2e}")
        if (
            args.save_every
            and p.global_step % args.save_every == 0
            and p.step_in_epoch < steps_per_epoch
        ):
            run.save(resume.step_path(run.save_path, p.global_step))

    return on_step


def max_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def evaluate_epoch(run: Run, val: DataSplit, console: Console) -> None:
    args, info = run.args, run.info
    start = time.perf_counter()
    result = evaluate_split(
        run.model if run.ema is None else run.ema.module,
        val,
        info,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        amp=run.amp,
    )
    if result is None:
        return
    metrics, _ = result
    epoch = run.progress.epoch
    write_results(args.save_checkpoint_path.parent / f"eval-epoch{epoch:03d}.json", metrics)
    summary = {k: v for k, v in metrics.items() if k != "per_class"}
    run.log.write(
        {
            "event": "eval",
            "epoch": epoch,
            "global_step": run.progress.global_step,
            "seconds": time.perf_counter() - start,
            **summary,
        }
    )
    print_metrics(metrics, console)
