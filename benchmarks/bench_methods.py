"""Time per pair of every attribution method (NIB and the paper's seven baselines), both sides.

    python benchmarks/bench_methods.py                      # mini + ViT-B-32, paper defaults
    python benchmarks/bench_methods.py --quick              # RISE image side with fewer masks
    python benchmarks/bench_methods.py --models ViT-B-32 --pairs 3 --threads 2

Models: ``mini`` (the bundled offline CLIP; skipped with a message if ``data/mini-clip.*`` is
missing) and ``ViT-B-32`` (open_clip architecture, random weights — timing does not depend on the
weights). Each pair is explained on its own (one pair per call, as the paper times them) after a
warm-up call of the same method and side; the figure is the median over ``--repeats`` rounds.
The batched columns give pairs/s with B pairs in one call (B in ``--batches``; RISE batches its
masked inputs across pairs too). Inputs are seeded random normalised images and fixed captions;
data loading is not timed. Every method runs with the paper's defaults (RISE: 6000 image / 200
text masks) unless ``--quick`` / ``--rise-masks`` reduce RISE's image masks, in which case the
table also shows the time extrapolated linearly to the paper's mask count (RISE's cost is linear
in the masks).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

import nibcore
from nibcore.models import MINI

CAPTIONS = ["a photo of a red circle and a blue ring", "a dog playing in the grass",
            "two people riding bicycles on a street", "a green ladder next to a white cross"]
ALL_METHODS = ["nib", "m2ib", "rise", "gradcam", "chefer", "saliency", "mfaba", "fastig"]
QUICK_RISE_MASKS = 300


def load(name: str, device: str) -> nibcore.ClipModel | None:
    try:
        return nibcore.load_model(name, device=device)
    except FileNotFoundError as err:
        print(f"[skip] {name}: {err}", file=sys.stderr)
        return None


def inputs(model: nibcore.ClipModel, pairs: int) -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(pairs, 3, *model.image_size, generator=g).to(model.device)
    texts = [CAPTIONS[i % len(CAPTIONS)] for i in range(pairs)]
    return pixels, texts


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(model, method: str, side: str, pixels, texts, params: dict,
          repeats: int) -> tuple[float, dict]:
    """Median seconds per pair, one pair per call, over ``repeats`` rounds of all pairs, after
    one warm-up call of this method and side (lazy initialisation, allocator, caches)."""
    nibcore.explain(model, pixels[0], texts[0], method=method, side=side, **params)
    times, passes = [], None
    for _ in range(repeats):
        for b in range(len(texts)):
            sync(model.device)
            start = time.perf_counter()
            a = nibcore.explain(model, pixels[b], texts[b], method=method, side=side, **params)
            sync(model.device)
            times.append(time.perf_counter() - start)
            passes = a.passes
    return statistics.median(times), passes


def bench_batched(model, method: str, side: str, pixels, texts, params: dict,
                  repeats: int) -> float:
    """Pairs per second with all ``len(texts)`` pairs in one call (median of ``repeats`` calls
    after a warm-up call)."""
    nibcore.explain(model, pixels, texts, method=method, side=side, **params)
    times = []
    for _ in range(repeats):
        sync(model.device)
        start = time.perf_counter()
        nibcore.explain(model, pixels, texts, method=method, side=side, **params)
        sync(model.device)
        times.append(time.perf_counter() - start)
    return len(texts) / statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=[MINI, "ViT-B-32"])
    ap.add_argument("--methods", nargs="+", default=ALL_METHODS, choices=ALL_METHODS)
    ap.add_argument("--sides", nargs="+", default=["image", "text"], choices=["image", "text"])
    ap.add_argument("--pairs", type=int, default=1, help="pairs timed per method and side")
    ap.add_argument("--repeats", type=int, default=3, help="rounds timed (median; >= 3)")
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 8, 32],
                    help="pairs per call for the batched pairs/s table (none: skip it)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true",
                    help=f"RISE image side with {QUICK_RISE_MASKS} masks (time extrapolated)")
    ap.add_argument("--rise-masks", type=int, default=None,
                    help="RISE image-side masks (default: the paper's 6000)")
    args = ap.parse_args(argv)
    if args.pairs < 1 or args.threads < 1 or args.repeats < 3 or min(args.batches, default=1) < 1:
        ap.error("--pairs, --threads and --batches must be >= 1, --repeats >= 3")
    torch.set_num_threads(args.threads)
    rise_masks = args.rise_masks or (QUICK_RISE_MASKS if args.quick else None)

    cpu = platform.processor() or platform.machine()
    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else \
        f"CPU ({cpu}), {args.threads} thread(s)"
    print(f"# nibcore {nibcore.__version__}, torch {torch.__version__}, {where}; "
          f"{args.pairs} pair(s) per row, one pair per call, after warm-up")
    rows = []
    for name in args.models:
        model = load(name, args.device)
        if model is None:
            continue
        pixels, texts = inputs(model, max([args.pairs, *args.batches]))
        for method in args.methods:
            for side in args.sides:
                params, note = {}, ""
                if method == "rise" and side == "image" and rise_masks is not None:
                    params = dict(n_masks=rise_masks)
                seconds, passes = bench(model, method, side, pixels[:args.pairs],
                                        texts[:args.pairs], params, args.repeats)
                rates = [bench_batched(model, method, side, pixels[:b], texts[:b], params,
                                       args.repeats) for b in args.batches]
                if params:
                    full = nibcore.METHODS["rise"].paper_masks["image"]
                    note = (f"{rise_masks} masks; ≈ {seconds * full / rise_masks:.1f} s at "
                            f"{full} (extrapolated)")
                rows.append((model.name, method, side, seconds, passes, note, rates))
                print(f"  {model.name:9s} {method:9s} {side:5s} {seconds:8.3f} s/pair", flush=True)

    print()
    batched = "".join(f" pairs/s at {b} |" for b in args.batches)
    print(f"| model | method | side | s / pair | pairs / s | forward | backward | fwd rows |"
          f"{batched} note |")
    print("|---|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(args.batches) + "---|")
    for name, method, side, seconds, p, note, rates in rows:
        cells = "".join(f" {r:.2f} |" for r in rates)
        print(f"| {name} | {method} | {side} | {seconds:.3f} | {1 / seconds:.2f} "
              f"| {p['forward']} | {p['backward']} | {p['forward_rows']} |{cells} {note} |")


if __name__ == "__main__":
    main()
