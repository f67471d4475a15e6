"""Parameter counts and CPU forward time of a detector config on one image.

.venv/bin/python -m bench.bench_model --model vit_large_patch16 --size 800 --threads 2
"""

import argparse
import time

import torch

from scalemae_det import build_detector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_large_patch16")
    ap.add_argument("--size", type=int, default=800)
    ap.add_argument("--classes", type=int, default=60)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = build_detector(args.model, args.classes).eval()
    trunk = sum(p.numel() for p in model.backbone.trunk.parameters())
    total = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: trunk {trunk / 1e6:.1f} M parameters, detector {total / 1e6:.1f} M")
    image = [torch.rand(3, args.size, args.size)]
    times = []
    with torch.inference_mode():
        model(image, gsd=0.3)  # warm-up
        for _ in range(args.repeats):
            start = time.perf_counter()
            model(image, gsd=0.3)
            times.append(time.perf_counter() - start)
    print(
        f"forward {args.size}x{args.size}, {args.threads} threads: best {min(times):.2f} s, "
        f"mean {sum(times) / len(times):.2f} s over {args.repeats}"
    )


if __name__ == "__main__":
    main()
