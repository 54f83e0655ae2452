"""NIB at the pooled-token floor: its speed against the full last block, Captum and the authors'
code, on one CPU thread.

    python benchmarks/bench_floor.py                        # random ViT-B/32, CPU, 1 thread
    python benchmarks/bench_floor.py --official ~/src/NIB   # + the authors' code (local checkout)

nibcore runs a tower's last block on the pooled token alone (CLS / EOT; keys and values over
every token) wherever that is exact (``nibcore.models``). One pair, NIB's paper defaults (the
input of block 9, 10 steps). Each figure is the median over ``--repeats`` rounds after one
warm-up call of each contender, the contenders taking turns within every round (a slow spell of
the machine hits them alike), in CPU seconds of this process (robust on a shared machine). Rows:

1. ``explain(side="both")`` (image + text of the pair in one call) against the same call with the
   full last block, the computation before the floor (the towers' private switch
   ``_pooled_last_block = False``): target ≥ 1.24×.
2. ``explain(side="image")`` against Captum's ``IntegratedGradients`` as a user writes it on the
   split model (``tests/test_captum.py``: ``method="riemann_right"``, the same ``n_steps``, zero
   baseline on the state entering the same block, the other modality's feature and the lower
   blocks included) over the towers' unmodified blocks (full last block): target ≥ 1.15×.
3. ``explain(side="both")`` against Captum on both sides, the token ids as the tokenizer gives
   them (the whole context): target ≥ 1.8×; and, like for like with nibcore's cut, the ids cut
   after EOT (no target).
4. ``--official PATH``: the authors' code (a local checkout of https://github.com/LMBTough/NIB,
   never part of this repository; measured at commit d4d1138): ``salicncy/nib.py``'s ``nib``
   (loaded from its file: the package's ``__init__`` imports every baseline's dependencies) on a
   random Hugging Face ViT-B/32 (``transformers.CLIPModel`` with the default config, the same
   architecture) against ``explain(side="both")``: target ≥ 2.4×. Skipped without
   ``--official``. The authors' code needs transformers 4.x (it imports
   ``transformers.modeling_attn_mask_utils``, gone in 5.x): install one beside, outside the
   venv, e.g. ``pip install --no-deps --target /tmp/oldtf transformers==4.46.3
   tokenizers==0.20.3 huggingface_hub==0.26.5`` and run with ``PYTHONPATH=/tmp/oldtf``.

Then the largest differences between the floor and the full last block (raw scores relative to
their largest magnitude, maps, f(1), f(0)): float noise of another numeric path.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

import nibcore
from bench_nib import captum_ig, median_times
from nibcore.inputs import prepare_pairs
from nibcore.metrics import cpu_name
from nibcore.numerics import FLOAT_NOISE_RTOL

CAPTION = "a photo of a small dog on the grass"
#: the house issue's target against the authors' code, image + text per pair
OFFICIAL_TARGET = 2.4


@contextlib.contextmanager
def full_last_block(model: nibcore.ClipModel):
    """Both towers run their last block on every token (nibcore before the floor)."""
    towers = (model.image, model.text)
    for tower in towers:
        tower._pooled_last_block = False
    try:
        yield
    finally:
        for tower in towers:
            del tower._pooled_last_block


def official_contender(path: Path, ids: torch.Tensor, steps: int):
    """A call of the authors' ``nib`` (image and text maps of one pair) on a random Hugging Face
    ViT-B/32, or the reason it cannot run (a one-line string)."""
    try:
        import importlib.util

        import transformers

        # the module file itself: the package's __init__ imports every baseline and their
        # dependencies (scikit-image, ...), which NIB does not need
        spec = importlib.util.spec_from_file_location("official_nib", path / "salicncy" / "nib.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        official_nib = module.nib
    except Exception as err:  # a missing checkout or an API the installed transformers dropped
        return f"not run: cannot import salicncy/nib.py from {path} ({type(err).__name__}: {err})"
    torch.manual_seed(0)
    hf = transformers.CLIPModel(transformers.CLIPConfig()).eval()
    pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))

    def run() -> None:
        official_nib(hf, [ids], pixels, num_steps=steps, target_layer=9)
        hf.zero_grad(set_to_none=True)  # its backward fills parameter gradients

    try:
        run()
    except Exception as err:
        return f"not run: the authors' nib failed ({type(err).__name__}: {err})"
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32-quickgelu",
                        help="open_clip model name, random weights (default: ViT-B/32)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--official", type=Path, default=None,
                        help="a local checkout of the authors' NIB code (optional)")
    args = parser.parse_args()
    if args.repeats < 1 or args.steps < 1:
        parser.error("--repeats and --steps must be >= 1")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nibcore.load_model(args.model, device="cpu")
    device = model.device
    pixels = torch.randn(1, 3, *model.image_size, generator=torch.Generator().manual_seed(0))
    _, ids = prepare_pairs(model, pixels, [CAPTION])
    steps = args.steps

    print(f"$ {' '.join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}")
    print(f"# torch {torch.__version__}, CPU {cpu_name()}, {torch.get_num_threads()} thread, "
          f"{model.name} (random weights), NIB layer 9 input, num_steps={steps}, one pair; "
          f"median of {args.repeats} rounds after a warm-up, contenders interleaved, CPU seconds")

    def explain(side: str):
        return nibcore.explain(model, pixels, CAPTION, side=side, num_steps=steps)

    def unmodified(fn):
        def run():
            with full_last_block(model):
                return fn()
        return run

    contenders = {
        "floor": lambda: explain("both"),
        "full": unmodified(lambda: explain("both")),
        "image": lambda: explain("image"),
        "captum image": unmodified(lambda: captum_ig(model, pixels, ids, "image", steps)),
        "captum both": unmodified(lambda: [captum_ig(model, pixels, ids, s, steps)
                                           for s in ("image", "text")]),
        "captum both, cut": unmodified(lambda: [captum_ig(model, pixels, model.trim(ids), s,
                                                          steps) for s in ("image", "text")]),
    }
    official = None
    if args.official is not None:
        official = official_contender(args.official, model.trim(ids), steps)
        if callable(official):
            contenders["official"] = official
    times = dict(zip(contenders, median_times(list(contenders.values()), args.repeats, device)))

    rows = [("NIB image + text: floor vs full last block", "floor", "full", 1.24),
            ("image: NIB vs Captum IG (full last block)", "image", "captum image", 1.15),
            ("image + text: NIB vs Captum IG, ids as tokenized", "floor", "captum both", 1.8),
            ("image + text: NIB vs Captum IG, ids cut after EOT", "floor", "captum both, cut",
             None)]
    print("\n| comparison | nibcore s | other s | ratio | target | met |")
    print("|---|---:|---:|---:|---:|---|")
    for label, ours, theirs, target in rows:
        ratio = times[theirs] / times[ours]
        verdict = "—" if target is None else ("met" if ratio >= target else "NOT MET")
        print(f"| {label} | {times[ours]:.3f} | {times[theirs]:.3f} | {ratio:.2f}× "
              f"| {'—' if target is None else f'≥ {target:.2f}×'} | {verdict} |")
    label = "image + text: NIB vs the authors' code (HF ViT-B/32)"
    if official is None:
        print(f"| {label} | — | — | — | ≥ {OFFICIAL_TARGET:.2f}× | skipped: no --official PATH "
              f"given |")
    elif callable(official):
        ratio = times["official"] / times["floor"]
        verdict = "met" if ratio >= OFFICIAL_TARGET else "NOT MET"
        print(f"| {label} | {times['floor']:.3f} | {times['official']:.3f} | {ratio:.2f}× "
              f"| ≥ {OFFICIAL_TARGET:.2f}× | {verdict} |")
    else:
        print(f"| {label} | — | — | — | ≥ {OFFICIAL_TARGET:.2f}× | {official} |")

    floor = contenders["floor"]()
    with full_last_block(model):
        full = contenders["floor"]()
    print("\nfloor vs full last block (the same maps up to float noise):")
    for a, b in zip(floor, full):
        print(f"  {a.side}: max |Δ raw| / max |raw| "
              f"{np.abs(a.raw - b.raw).max() / np.abs(b.raw).max():.1e}, max |Δ map| "
              f"{np.abs(a.scores - b.scores).max():.1e}, |Δ f1| {abs(a.f1 - b.f1):.1e}, "
              f"|Δ f0| {abs(a.f0 - b.f0):.1e} (FLOAT_NOISE_RTOL "
              f"{FLOAT_NOISE_RTOL:.0e})")


if __name__ == "__main__":
    main()
