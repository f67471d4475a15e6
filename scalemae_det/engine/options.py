"""train.py's command line.

Every option is accepted with underscores (the spelling of the public ScaleMAE-Det training script,
timothygao8710/ScaleDet train.py, whose commands users already have) and with dashes; errors name
them with underscores (`train_flag`). Unknown arguments are an error, except the old launcher's
`--local-rank`/`--local_rank`, which is declared. Values are checked here, with the checks every
command uses (`scalemae_det.base.checks`), so that a bad one fails before any process group forms
or any image is read.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from scalemae_det.base import checks
from scalemae_det.base.errors import InputError, MissingPathError
from scalemae_det.data.transforms import AugmentConfig
from scalemae_det.engine.loop import AMP_CHOICES

SCHEDULES = ("cosine", "step")
DEFAULT_MODEL = "vit_large_patch16"


def train_flag(param: str) -> str:
    """train.py's spelling of a parameter in messages: --learning_rate."""
    return f"--{param}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line through UserError instead of usage + exit 2
        raise InputError(f"train.py: {message} (see --help)")


def _add(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    spellings = dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}"])
    parser.add_argument(*spellings, dest=name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="train.py",
        description="Fine-tune the ScaleMAE ViTDet detector on a COCO-format dataset. "
        "Run with python, torchrun or python -m torch.distributed.launch; --batch_size is per "
        "process.",
    )
    data = p.add_argument_group("data")
    _add(data, "train_image_dir", type=Path, required=True)
    _add(
        data,
        "train_label_file",
        type=Path,
        required=True,
        help="COCO JSON; class names and count come from it",
    )
    _add(data, "val_image_dir", type=Path)
    _add(data, "val_label_file", type=Path)
    _add(
        data,
        "input_size",
        type=int,
        default=800,
        help="square training crop and validation size, px",
    )
    _add(
        data,
        "scale_range",
        type=float,
        nargs=2,
        default=(0.1, 2.0),
        metavar=("LO", "HI"),
        help="large-scale jitter: resize factors relative to native pixels",
    )
    _add(
        data,
        "photometric",
        type=float,
        default=AugmentConfig.photometric,
        help="brightness, contrast and saturation jitter: each scaled by 1 +- this at most",
    )
    _add(
        data,
        "band_gain",
        type=float,
        default=AugmentConfig.band_gain,
        help="colour-balance jitter: each band scaled by its own 1 +- this at most (0: off)",
    )
    _add(data, "no_augment", action="store_true", help="train without augmentation (as evaluated)")
    _add(
        data,
        "min_visible_px",
        type=float,
        default=2.0,
        help="keep a box cut by the training crop when this many px of its width and height are "
        "left",
    )
    _add(
        data,
        "gsd",
        type=float,
        default=0.3,
        help="GSD in metres for images with neither a georeference nor a 'gsd' record field",
    )
    _add(
        data,
        "bands",
        metavar="B[,G,R]",
        help="1 or 3 band numbers, 1-based, e.g. 4,3,2 (default: RGB by "
        "colour interpretation, else the first three)",
    )
    _add(data, "num_workers", type=int, default=4)

    model = p.add_argument_group("model")
    _add(
        model,
        "model",
        help=f"config name (default {DEFAULT_MODEL}; with --init_from, the checkpoint's)",
    )
    _add(model, "pretrained", type=Path, help="ScaleMAE encoder weights (the trunk)")
    _add(
        model,
        "init_from",
        type=Path,
        help="a trained detector checkpoint (train.py's, the bundled model) to start from: every "
        "layer but the class rows, which are kept for classes of the same name",
    )
    _add(
        model,
        "override",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change a model config field, e.g. depth=2 (JSON value); repeatable",
    )
    _add(
        model,
        "grad_checkpointing",
        action="store_true",
        help="recompute block activations in backward",
    )
    _add(
        model,
        "anchor_sizes",
        type=int,
        nargs=5,
        metavar="PX",
        help="RPN anchor side per level p2..p6, px (default: the config's, 16 32 64 128 256)",
    )
    _add(
        model,
        "rel_pos",
        action="store_true",
        help="add ViTDet's relative position bias, zero-initialised (global blocks' tables sized "
        "for --input_size)",
    )

    opt = p.add_argument_group("optimisation")
    _add(opt, "batch_size", type=int, default=1, help="images per process per step")
    _add(opt, "learning_rate", type=float, default=1e-4)
    _add(opt, "num_epochs", type=int, default=40)
    _add(opt, "schedule", default="cosine", help=" or ".join(SCHEDULES))
    _add(
        opt,
        "warmup",
        metavar="N[steps|epochs]",
        help="linear warmup length: optimizer steps (250, 250steps) or epochs (1epochs, 0.5ep) "
        "[default: 250 steps]",
    )
    _add(opt, "warmup_steps", type=int, help="the same in steps (the older spelling)")
    _add(opt, "weight_decay", type=float, default=0.1)
    _add(
        opt,
        "layer_decay",
        type=float,
        help="layer-wise lr decay rate (default: the model config's)",
    )
    _add(opt, "clip_grad", type=float, default=0.0, help="max gradient norm; 0 turns clipping off")
    _add(
        opt,
        "ema",
        type=float,
        default=0.0,
        metavar="DECAY",
        help="keep an exponential moving average of the weights with this decay (e.g. 0.998) and "
        "evaluate and save it as the model; 0 turns it off",
    )
    _add(
        opt,
        "amp",
        default="auto",
        help=f"{', '.join(AMP_CHOICES)}; auto: bf16 on a GPU that has it, else off",
    )
    _add(opt, "accum_steps", type=int, default=1, help="micro-batches per optimizer step")
    _add(opt, "seed", type=int, default=0)
    _add(opt, "deterministic", action="store_true", help="deterministic kernels (slower)")

    run = p.add_argument_group("checkpoints, evaluation, logging")
    _add(
        run,
        "save_checkpoint_path",
        type=Path,
        default=Path("checkpoints/checkpoint.pth"),
        help="final checkpoint; step checkpoints and the JSON-lines log go beside it",
    )
    _add(
        run,
        "save_every",
        type=int,
        default=1000,
        help="optimizer steps between checkpoints (0: epoch ends only)",
    )
    _add(run, "keep_checkpoints", type=int, default=3, help="newest step checkpoints kept (0: all)")
    _add(
        run,
        "eval_every",
        type=int,
        default=1,
        help="epochs between evaluations (0: only after the last)",
    )
    _add(run, "log_every", type=int, default=20, help="optimizer steps between log lines")
    _add(
        run,
        "resume",
        nargs="?",
        const="auto",
        help="a checkpoint, or auto (the default when given bare): "
        "the newest valid one beside --save_checkpoint_path",
    )
    _add(run, "device", default="auto", help="auto, cpu, cuda or cuda:N")
    _add(run, "local_rank", type=int, help=argparse.SUPPRESS)  # set by torch.distributed.launch
    return p


def parse_overrides(items: list[str]) -> dict:
    """['depth=2', 'global_blocks=[1]'] -> {'depth': 2, 'global_blocks': [1]}; bare words stay
    strings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--override {item}: expected FIELD=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
        if isinstance(out[key], list):
            out[key] = tuple(out[key])
    return out


DEFAULT_WARMUP_STEPS = 250
_WARMUP = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(steps?|epochs?|ep)?")


def parse_warmup(text: str | None, steps: int | None) -> tuple[float, str]:
    """`--warmup` (or the older `--warmup_steps`) -> (length, "steps" or "epochs")."""
    if text is not None and steps is not None:
        raise InputError("--warmup and --warmup_steps say the same thing; give one")
    if text is None:
        return float(DEFAULT_WARMUP_STEPS if steps is None else steps), "steps"  # range: check_args
    match = _WARMUP.fullmatch(text.strip().lower())
    if not match:
        raise InputError(
            f"--warmup {text}: expected a number of steps (250, 250steps) or epochs (1epochs, "
            "0.5ep)"
        )
    value, unit = float(match[1]), "epochs" if (match[2] or "s").startswith("e") else "steps"
    if unit == "steps" and not value.is_integer():
        raise InputError(f"--warmup {text}: a number of steps must be whole")
    return value, unit


def warmup_steps(warmup: tuple[float, str], steps_per_epoch: int) -> int:
    """Optimizer steps of warmup for `parse_warmup`'s value, epochs rounded to the nearest step."""
    value, unit = warmup
    return round(value * steps_per_epoch) if unit == "epochs" else int(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    check_args(args)
    args.log_every = max(args.log_every, 1)
    args.overrides = parse_overrides(args.override)
    if args.grad_checkpointing:
        args.overrides["grad_checkpointing"] = True
    if args.anchor_sizes:
        if not all(
            0 < a < b for a, b in zip(args.anchor_sizes, [*args.anchor_sizes[1:], float("inf")])
        ):
            raise InputError(
                f"--anchor_sizes {' '.join(map(str, args.anchor_sizes))}: need 5 increasing "
                "positive sizes"
            )
        args.overrides["anchor_sizes"] = tuple(args.anchor_sizes)
    if args.rel_pos:
        args.overrides["rel_pos"] = True
    return args


def check_args(args: argparse.Namespace) -> None:
    """Every value and the output path, before any work (NaN and infinity are refused
    everywhere)."""
    for name in ("batch_size", "num_epochs", "accum_steps", "input_size"):
        checks.number(name, getattr(args, name), lo=1, integer=True)
    for name in ("learning_rate", "gsd", "min_visible_px"):
        checks.number(name, getattr(args, name), lo=0, lo_open=True)
    for name in (
        "warmup_steps",
        "save_every",
        "eval_every",
        "seed",
        "num_workers",
        "keep_checkpoints",
        "log_every",
    ):
        checks.number(name, getattr(args, name), lo=0, integer=True)
    for name in ("weight_decay", "clip_grad"):
        checks.number(name, getattr(args, name), lo=0)
    checks.number("ema", args.ema, lo=0, hi=1, hi_open=True)
    for name in ("photometric", "band_gain"):  # a factor 1 - 1 = 0 would blank the image
        checks.number(name, getattr(args, name), lo=0, hi=1, hi_open=True)
    checks.number("layer_decay", args.layer_decay, lo=0, hi=1, lo_open=True)
    lo, hi = args.scale_range
    checks.number("scale_range", lo, lo=0, lo_open=True)
    checks.number("scale_range", hi, lo=lo)
    checks.choice("amp", args.amp, AMP_CHOICES)
    checks.choice("schedule", args.schedule, SCHEDULES)
    args.warmup = parse_warmup(args.warmup, args.warmup_steps)
    args.bands = checks.bands("bands", args.bands)
    if args.init_from is not None:
        if args.pretrained is not None:
            raise InputError(
                "--init_from and --pretrained both give the trunk's weights: give one (a trained "
                "detector's trunk is already ScaleMAE's, fine-tuned)"
            )
        if not args.init_from.is_file():
            raise MissingPathError(f"{args.init_from}: no such checkpoint (--init_from)")
    elif args.model is None:
        args.model = DEFAULT_MODEL
    if (args.val_image_dir is None) != (args.val_label_file is None):
        raise InputError("--val_image_dir and --val_label_file go together")
    checks.output_file(args.save_checkpoint_path, "save_checkpoint_path", new_folder=True)
