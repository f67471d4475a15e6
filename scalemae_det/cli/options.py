"""Options shared by several commands, declared once (as rasterio's rio/options.py), and the old
spellings that still work for a release.

The rules every command follows:

1. `-o/--out` names what the command writes: a folder where it writes many files (predict, demo,
   prepare, prepare-xview), a file where it writes one (export, synth-scene, evaluate, score,
   merge);
2. flags are spelled with dashes (`--image-dir`); train.py alone keeps the original ScaleMAE
   training script's underscores;
3. `--crs` takes the same values everywhere: wgs84, native or any CRS rasterio reads
   (runtime.outputs.output_crs);
4. an old spelling is rewritten to the new one before the command parses its flags, with one
   `warning:` line (DEPRECATED below), so scripts keep working for a release.
"""

from __future__ import annotations

import sys

import typer

# command -> {old flag: new flag}; each removed after one release (CHANGES.md lists them)
DEPRECATED = {
    "evaluate": {
        "--output": "--out",
        "--image_dir": "--image-dir",
        "--label_file": "--label-file",
        "--input_size": "--input-size",
        "--batch_size": "--batch-size",
        "--num_workers": "--num-workers",
    },
    "score": {"--output": "--out"},
    "merge": {"--to": "--out"},
}

CRS_HELP = "wgs84 (lon/lat, RFC 7946), native (the scene's own CRS) or a CRS such as EPSG:32633"
MATCH_HELP = "how boxes are matched at seams: ios (intersection over the smaller) or iou"
PROVIDER_HELP = "auto | tensorrt | cuda | cpu"
BANDS_HELP = "1 or 3 band numbers, 1-based, e.g. 4,3,2"


def respell(argv: list[str], warn=None) -> list[str]:
    """`argv` with the deprecated flags of its command rewritten (`--to x` and `--to=x` alike)."""
    warn = warn or (lambda text: print(text, file=sys.stderr))
    command = next((a for a in argv if not a.startswith("-")), None)
    table = DEPRECATED.get(command, {})
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if flag in table:
            warn(f"warning: {command} {flag} is deprecated; use {table[flag]}")
            arg = table[flag] + eq + value
        out.append(arg)
    return out


def out_option(help: str, required: bool = True):
    """The `-o/--out` option (rule 1)."""
    return typer.Option(... if required else None, "-o", "--out", help=help)


def crs_option(default: str = "wgs84"):
    return typer.Option(default, "--crs", help=CRS_HELP)


def match_option():
    return typer.Option("ios", "--match", help=MATCH_HELP)


def provider_option():
    return typer.Option("auto", "--provider", help=PROVIDER_HELP)


def bands_option(default_text: str):
    return typer.Option(None, "--bands", help=BANDS_HELP, show_default=default_text)


def score_threshold_option(default=None, show_default="the model's"):
    return typer.Option(
        default,
        "--score-threshold",
        show_default=show_default,
        help="in [0, 1]; not below the model's, which its graph applies",
    )
