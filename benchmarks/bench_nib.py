"""NIB's speed: against Captum's IntegratedGradients on the same work, and batched pairs/s.

    python benchmarks/bench_nib.py                      # ViT-B-32 (random weights), CPU, 1 thread
    python benchmarks/bench_nib.py --device cuda --batches 1 2 4 8 16 32 64 128 256

1. One pair per call, per side and for both sides (image + text): ``nibcore.explain`` with the
   paper's defaults (``num_steps`` = 10) against Captum's ``IntegratedGradients`` with
   ``method="riemann_right"``, ``n_steps`` = 10 and a zero baseline on the state entering the
   same block of the split model (the two give the same attributions; ``tests/test_captum.py``).
   Both are timed on the same work: the other modality's feature, the lower blocks, the path.
   Captum is timed on the token ids as a user would pass them (the whole context) and, for a
   like-for-like text side, on the ids cut after EOT as nibcore cuts them. Figures are medians of
   ``--repeats`` rounds after one warm-up run, the contenders taking turns within a round; on the
   CPU they are CPU seconds of this process (robust on a shared machine), on CUDA wall seconds.
   ratio = Captum's time / nibcore's time. Two rows for image + text: "both, per side" is the
   sum of the two rows above (one ``explain`` call per side); "both, one call" times
   ``explain(..., side="both")`` (each tower's lower blocks once, the other side's target feature
   from them; same maps) against the two Captum runs, taking turns in the same rounds.
2. NIB pairs/s with B pairs per call on ``--device``: per side, image + text as one call per
   side, and image + text as one ``side="both"`` call.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

import nibcore
from nibcore.base import cosine, default_layer
from nibcore.inputs import prepare_pairs

CAPTIONS = ["a photo of a small dog on the grass", "two people riding bicycles on a street",
            "a red circle and a blue ring", "a cat"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device):
    """Wall clock on CUDA; on the CPU the process's CPU time, which other programs on a shared
    machine do not inflate (with one torch thread it is the computation's own time)."""
    return time.perf_counter if device.type == "cuda" else time.process_time


def median_times(fns: list, repeats: int, device: torch.device) -> list[float]:
    """Median time of each of ``fns`` over ``repeats`` rounds, after one warm-up call of each;
    the functions take turns within a round, so a slow spell hits all of them alike."""
    now = clock(device)
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            sync(device)
            start = now()
            fn()
            sync(device)
            out.append(now() - start)
    return [statistics.median(t) for t in times]


def captum_ig(model: nibcore.ClipModel, pixels: torch.Tensor, ids: torch.Tensor, side: str,
              num_steps: int) -> torch.Tensor:
    """Integrated gradients with Captum on the split model: the other modality's feature, the
    lower blocks, then ``IntegratedGradients`` on the bottleneck state; raw scores per token."""
    from captum.attr import IntegratedGradients

    tower = model.tower(side)
    layer = default_layer(tower)
    with torch.no_grad():
        if side == "image":
            target, z = model.encode_text(ids), tower.lower(pixels, layer)
        else:
            target, z = model.encode_image(pixels), tower.lower(ids, layer)

    def split_model(state: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        return cosine(tower.upper(state, layer, None if side == "image" else token_ids), target)

    ig = IntegratedGradients(split_model)
    return ig.attribute(z, baselines=torch.zeros_like(z), n_steps=num_steps,
                        method="riemann_right", additional_forward_args=(ids,)).sum(-1)


def images_and_texts(model: nibcore.ClipModel, n: int):
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(n, 3, *model.image_size, generator=g).to(model.device)
    return pixels, [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=None,
                        help="pairs per call for the batched table (default: 1 8 on CPU, "
                        "1 2 4 ... 256 on CUDA)")
    parser.add_argument("--no-captum", action="store_true", help="only the batched table")
    args = parser.parse_args()
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nibcore.load_model(args.model, device=args.device)
    device = model.device
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU {platform.processor() or platform.machine()}, {args.threads} thread(s)"
    kind = "wall" if device.type == "cuda" else "CPU"
    print(f"# NIB on {model.name} (random weights), {where}, torch {torch.__version__}, "
          f"num_steps={args.steps}, median of {args.repeats} after a warm-up, {kind} seconds")

    pixels, texts = images_and_texts(model, 1)
    _, ids = prepare_pairs(model, pixels, texts)
    if not args.no_captum:
        print("\n| side | nibcore s/pair | Captum s/pair | ratio | Captum, ids cut after EOT "
              "| ratio |")
        print("|---|---:|---:|---:|---:|---:|")
        totals = np.zeros(3)
        for side in ("image", "text"):
            ours, theirs, cut = median_times([
                lambda: nibcore.explain(model, pixels, texts, side=side, num_steps=args.steps),
                lambda: captum_ig(model, pixels, ids, side, args.steps),
                lambda: captum_ig(model, pixels, model.trim(ids), side, args.steps)],
                args.repeats, device)
            totals += (ours, theirs, cut)
            print(f"| {side} | {ours:.3f} | {theirs:.3f} | {theirs / ours:.2f} | {cut:.3f} "
                  f"| {cut / ours:.2f} |", flush=True)
        ours, theirs, cut = totals
        print(f"| both, per side | {ours:.3f} | {theirs:.3f} | {theirs / ours:.2f} | {cut:.3f} "
              f"| {cut / ours:.2f} |")
        ours, theirs, cut = median_times([
            lambda: nibcore.explain(model, pixels, texts, side="both", num_steps=args.steps),
            lambda: [captum_ig(model, pixels, ids, s, args.steps) for s in ("image", "text")],
            lambda: [captum_ig(model, pixels, model.trim(ids), s, args.steps)
                     for s in ("image", "text")]], args.repeats, device)
        print(f"| both, one call | {ours:.3f} | {theirs:.3f} | {theirs / ours:.2f} | {cut:.3f} "
              f"| {cut / ours:.2f} |", flush=True)

    batches = args.batches or ([1, 2, 4, 8, 16, 32, 64, 128, 256] if device.type == "cuda"
                               else [1, 8])
    print("\n| pairs per call | image pairs/s | text pairs/s | image + text pairs/s, per side "
          "| image + text pairs/s, one call |")
    print("|---:|---:|---:|---:|---:|")
    for b in batches:
        pixels, texts = images_and_texts(model, b)
        t = median_times([lambda side=side: nibcore.explain(model, pixels, texts, side=side,
                                                             num_steps=args.steps)
                          for side in ("image", "text", "both")], args.repeats, device)
        print(f"| {b} | {b / t[0]:.1f} | {b / t[1]:.1f} | {b / (t[0] + t[1]):.1f} "
              f"| {b / t[2]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
