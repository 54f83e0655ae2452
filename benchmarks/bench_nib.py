"""NIB speed on CPU: pairs per second and the ratio to the floor.

The floor is the time of the passes NIB cannot avoid for one pair: one forward of the lower
blocks (no grad) plus ``num_steps`` forward/backward passes of the upper blocks with gradients
for the bottleneck state only, run one step at a time, plus the other modality's feature.

    python benchmarks/bench_nib.py [--model ViT-B-32] [--threads 1] [--pairs 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from PIL import Image

import nibcore
from nibcore.attribution import cosine, default_layer


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def floor(model: nibcore.ClipModel, pixels: torch.Tensor, ids: torch.Tensor, side: str,
          num_steps: int) -> None:
    """The unavoidable passes for one pair, one λ step at a time."""
    tower = model.tower(side)
    layer = default_layer(tower)
    ids = model.trim(ids)  # no padding work on the text side, for NIB or the floor
    with torch.no_grad():
        target = model.encode_text(ids) if side == "image" else model.encode_image(pixels)
        z = tower.lower(pixels if side == "image" else ids, layer)
    for i in range(1, num_steps + 1):
        scaled = (i / num_steps * z).requires_grad_(True)
        f = cosine(tower.upper(scaled, layer, None if side == "image" else ids), target)
        torch.autograd.grad(f.sum(), scaled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=8, help="pairs in the batched measurement")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nibcore.load_model(args.model, device="cpu")
    rng = np.random.RandomState(0)
    images = [Image.fromarray((rng.rand(256, 256, 3) * 255).astype("uint8"))
              for _ in range(args.pairs)]
    texts = [f"a photo of a small dog number {i}" for i in range(args.pairs)]
    pixels, ids = nibcore.inputs.prepare_pairs(model, images[:1], texts[:1])

    print(f"# NIB on {model.name} (random weights), CPU {platform.processor() or platform.machine()}"
          f", torch {torch.__version__}, {args.threads} thread(s), num_steps={args.steps}")
    print(f"{'side':6s} {'floor s/pair':>13s} {'NIB s/pair':>11s} {'ratio':>6s} "
          f"{'batched s/pair':>15s} {'pairs/s (1)':>12s} {'pairs/s (batched)':>18s}")
    totals = {"single": 0.0, "batched": 0.0}
    for side in ("image", "text"):
        t_floor = best_time(lambda: floor(model, pixels, ids, side, args.steps), args.repeats)
        t_one = best_time(lambda: nibcore.explain(model, images[0], texts[0], side=side,
                                                  num_steps=args.steps), args.repeats)
        t_many = best_time(lambda: nibcore.explain(model, images, texts, side=side,
                                                   num_steps=args.steps), args.repeats)
        t_many /= args.pairs
        totals["single"] += t_one
        totals["batched"] += t_many
        print(f"{side:6s} {t_floor:13.3f} {t_one:11.3f} {t_one / t_floor:6.2f} {t_many:15.3f} "
              f"{1 / t_one:12.2f} {1 / t_many:18.2f}")
    print(f"{'both':6s} {'':13s} {totals['single']:11.3f} {'':6s} {totals['batched']:15.3f} "
          f"{1 / totals['single']:12.2f} {1 / totals['batched']:18.2f}")
    print("reference: the official implementation, one pair, 1 thread on this kind of CPU: "
          "image 1.1-1.5 s + text 0.35-0.39 s (from the issue)")


if __name__ == "__main__":
    main()
