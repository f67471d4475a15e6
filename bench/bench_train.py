"""Training throughput of train.py (images/s) and peak memory, for 1 and 2 processes.

    .venv/bin/python -m bench.bench_train                # vit_tiny_patch16, 256 px, CPU, 1 and 2
    processes
    .venv/bin/python -m bench.bench_train --model vit_large_patch16 --input_size 800 --device cuda
    \\
        --amp bf16 --grad_checkpointing --procs 1        # the GPU figure

Generates synthetic GeoTIFF chips (`scalemae-det synth-chips`), runs train.py for one epoch
(torchrun for several processes; the CPU cores are split between them unless --threads) and reads
its
JSON-lines log: throughput over the steps after `--warmup`, from the log's timestamps, and the
peak memory (GPU allocated, or the CPU process's max RSS). Prints one line per process count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(data: Path, work: Path, procs: int, args: argparse.Namespace) -> dict:
    save = work / f"p{procs}" / "checkpoint.pth"
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
        if procs > 1
        else [sys.executable]
    )
    cmd = [
        *launcher,
        str(REPO / "train.py"),
        "--train_image_dir",
        str(data),
        "--train_label_file",
        str(data / "labels.json"),
        "--model",
        args.model,
        "--input_size",
        str(args.input_size),
        "--batch_size",
        str(args.batch_size),
        "--num_epochs",
        "1",
        "--num_workers",
        str(args.num_workers),
        "--device",
        args.device,
        "--amp",
        args.amp,
        "--log_every",
        "1",
        "--save_every",
        "0",
        "--save_checkpoint_path",
        str(save),
    ]
    cmd += ["--grad_checkpointing"] if args.grad_checkpointing else []
    threads = args.threads or max(1, (os.cpu_count() or 1) // procs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"train.py failed:\n{proc.stderr[-3000:]}")
    log = [json.loads(line) for line in (save.parent / "train_log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["event"] == "train"]
    timed = train[args.warmup - 1 :]  # from the end of the last warm-up step
    images = (len(timed) - 1) * args.batch_size * procs
    seconds = timed[-1]["time"] - timed[0]["time"]
    return {
        "procs": procs,
        "threads": threads,
        "images_per_s": images / seconds,
        "steps_timed": len(timed) - 1,
        "max_memory_mb": max(r["max_memory_mb"] for r in train),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit_tiny_patch16")
    p.add_argument("--input_size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=2, help="per process")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument(
        "--steps", type=int, default=10, help="timed steps (at least; fewer processes run more)"
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="off")
    p.add_argument("--grad_checkpointing", action="store_true")
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads per process (0: the cores split evenly)",
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "chips"
        count = (
            (args.warmup + args.steps) * args.batch_size * max(args.procs)
        )  # one epoch: at least warmup + steps
        cli = [sys.executable, "-c", "from scalemae_det.cli import main; main()"]
        subprocess.run(
            [
                *cli,
                "synth-chips",
                "--out",
                str(data),
                "--count",
                str(count),
                "--size",
                str(args.input_size),
                "--gsd",
                "0.3",
                "--gsd-max",
                "0.6",
            ],
            check=True,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        print(
            f"train.py throughput: {args.model}, {args.input_size} px, batch "
            f"{args.batch_size}/process, "
            f"{args.device}, amp "
            f"{args.amp}{', grad checkpointing' if args.grad_checkpointing else ''}, "
            f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at start"
        )
        for procs in args.procs:
            r = measure(data, work, procs, args)
            print(
                f"  {procs} process(es) x {r['threads']} thread(s): {r['images_per_s']:.2f} "
                "images/s "
                f"over {r['steps_timed']} steps, peak memory {r['max_memory_mb']:.0f} MB per "
                "process"
            )


if __name__ == "__main__":
    main()
