"""Command line.

* ``python -m nibcore explain IMAGE "TEXT" [options]`` writes a heatmap overlay PNG (image side)
  and prints the per-token scores (text side).
* ``python -m nibcore evaluate --dataset scenes --n 100 --methods nib rise --out run.jsonl``
  attributes and scores a dataset (:func:`nibcore.evaluate`), appending rows to ``--out`` as they
  are computed (a re-run resumes), and prints the summary. Under ``torchrun --nproc_per_node=K``
  the batches are sharded over K processes (gloo on CPU, nccl on GPUs, one GPU per process) and
  rank 0 merges the rows into ``--out``.

What a user can get wrong — a missing file or a folder in its place, a file that is not what its
name says, an output that cannot be written, sizes the memory cannot hold, a bad argument — ends
in one line on stderr, ``error: ...``, and exit status 1 (2 for what argparse refuses), with no
traceback; ``--traceback`` shows it. Input files and outputs are checked before the model loads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from . import METHODS, SCHEDULES, explain, load_model
from .checks import check_output_file, describe, open_image, read_json_file

#: Errors :func:`main` reports in one line (``error: ...``, exit status 1) instead of a traceback:
#: the library's one-line errors about files, arguments and memory (see :mod:`nibcore.checks`,
#: :mod:`nibcore.memory`), and what torch or the system raise for them (out of memory, I/O).
REPORTED = (OSError, ValueError, TypeError, MemoryError, RuntimeError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nibcore",
                                     description="Explain a CLIP image-text match.")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("explain", help="attribute an (image, text) pair")
    ex.add_argument("image", type=Path, help="image file (PNG, JPEG, ...)")
    ex.add_argument("text", help="the caption to explain")
    ex.add_argument("--model", default="mini", help="'mini' (bundled, offline) or an open_clip "
                    "model name such as ViT-B-32-quickgelu (default: mini)")
    ex.add_argument("--pretrained", default=None,
                    help="open_clip tag (e.g. openai; needs network) or a local checkpoint path")
    ex.add_argument("--method", default="nib", choices=sorted(METHODS))
    ex.add_argument("--side", default="both", choices=["image", "text", "both"])
    ex.add_argument("--layer", type=int, default=None,
                    help="bottleneck block (default: 3/4 of the depth, 9 on ViT-B/32)")
    ex.add_argument("--num-steps", "--steps", dest="num_steps", type=int, default=10,
                    help="NIB's num_steps (--steps: deprecated spelling)")
    ex.add_argument("--schedule", default="paper", choices=sorted(SCHEDULES), help="NIB schedule")
    ex.add_argument("--out", type=Path, default=None,
                    help="overlay PNG path (default: <image stem>_<method>.png)")
    ex.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")

    ev = sub.add_parser("evaluate", help="attribute and score a dataset (resumable, shardable "
                        "with torchrun)")
    ev.add_argument("--model", default="mini", help="'mini' (bundled, offline) or an open_clip "
                    "model name (default: mini)")
    ev.add_argument("--pretrained", default=None,
                    help="open_clip tag (needs network) or a local checkpoint path")
    ev.add_argument("--dataset", default="scenes",
                    help="dataset name for nibcore.datasets.load_dataset (default: scenes)")
    ev.add_argument("--root", default=None, help="data folder of a downloaded dataset")
    ev.add_argument("--n", "--pairs", dest="n", type=int, default=100,
                    help="pairs: the first N of a permutation seeded by --seed (default 100; "
                    "0 = all); under torchrun write --pairs (torchrun's parser takes --n for an "
                    "abbreviation of its own options)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the pair subset (default 0)")
    ev.add_argument("--methods", nargs="+", default=["nib"], metavar="METHOD",
                    help=f"methods, from {sorted(METHODS)} (default: nib)")
    ev.add_argument("--sides", nargs="+", default=["image", "text"], choices=["image", "text"])
    ev.add_argument("--params", default=None, metavar="JSON",
                    help='method parameters as JSON, e.g. \'{"nib": {"num_steps": 5}}\', or '
                    '@FILE for a JSON file')
    ev.add_argument("--protocols", nargs="+", default=None, metavar="PROTOCOL",
                    help="text-side confidence protocols (default: all)")
    ev.add_argument("--batch-size", type=int, default=8, help="pairs per call (default 8)")
    ev.add_argument("--out", type=Path, required=True, help="results file (JSON Lines)")
    ev.add_argument("--device", default=None,
                    help="cpu or cuda (default: cuda if available; under torchrun, the "
                    "process's LOCAL_RANK GPU)")
    ev.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (raises ``SystemExit`` with an
    ``error: ...`` line on a reported error, see :data:`REPORTED`).

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    args = _parser().parse_args(argv)
    try:
        return _evaluate(args) if args.command == "evaluate" else _explain(args)
    except REPORTED as err:
        if args.traceback:
            raise
        raise SystemExit(f"error: {describe(err, limit=None)}") from None


def _explain(args: argparse.Namespace) -> int:
    from . import viz  # matplotlib only when needed

    image = open_image(args.image)
    out = None
    if args.side != "text":
        try:
            out = check_output_file(
                args.out or args.image.with_name(f"{args.image.stem}_{args.method}.png"),
                "overlay PNG")
        except OSError as err:
            if args.out is not None:
                raise
            raise type(err)(f"{err}; pass --out to write it elsewhere") from None
    model = load_model(args.model, args.pretrained, args.device)
    params = dict(layer=args.layer, num_steps=args.num_steps, schedule=args.schedule) \
        if args.method == "nib" else {}
    sides = ["image", "text"] if args.side == "both" else [args.side]
    for side in sides:
        a = explain(model, image, args.text, method=args.method, side=side, **params)
        if side == "image":
            viz.save_overlay(out, image, a.scores, f"{args.method}: {args.text}")
            print(f"image map written to {out}")
        else:
            print("token scores (text side, min-max over SOT..EOT):")
            for token, score, raw in zip(a.tokens, a.scores, a.raw):
                print(f"  {token:>20s}  {score:5.3f}  (raw {raw:+.4f})")
        if a.completeness_gap is not None:
            print(f"{side}: f(1)={a.f1:.4f} f(0)={a.f0:.4f} sum(raw)={a.raw.sum():.4f} "
                  f"completeness gap={a.completeness_gap:+.4f}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from .evaluation import evaluate, summarise
    from .metrics import TEXT_PROTOCOLS

    if args.params and args.params.startswith("@"):
        params = read_json_file(args.params[1:], "--params file")
    else:
        try:
            params = json.loads(args.params) if args.params else {}
        except json.JSONDecodeError as err:
            raise SystemExit(f"error: --params is not valid JSON ({err}): {args.params!r}")
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise SystemExit('error: --params must map method names to keyword objects, e.g. '
                         '\'{"nib": {"num_steps": 5}}\'')
    if args.n < 0 or args.batch_size < 1 or (args.threads is not None and args.threads < 1):
        raise SystemExit("error: --n must be >= 0, --batch-size and --threads >= 1")
    check_output_file(args.out, "results file")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = args.device
    if world > 1:  # started by torchrun: one process per rank, one GPU per process
        import torch.distributed as dist
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda"):
            device = device if ":" in device else f"cuda:{local}"
            torch.cuda.set_device(torch.device(device))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        model = load_model(args.model, args.pretrained, device)
        df = evaluate(model, args.dataset, args.methods, sides=args.sides,
                      n=args.n or None, seed=args.seed, params=params,
                      text_protocols=args.protocols or TEXT_PROTOCOLS, out=args.out,
                      progress=not args.no_progress, batch_size=args.batch_size,
                      dataset_kw={"root": args.root} if args.root else None)
        if world == 1 or torch.distributed.get_rank() == 0:
            print(f"{len(df)} rows in {args.out}")
            if len(df):
                print(summarise(df, counts=False).round(2).to_string())
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
