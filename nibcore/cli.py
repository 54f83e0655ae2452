"""The command line: ``nib`` (installed script) = ``python -m nibcore``.

* ``nib explain IMAGE "TEXT" [options]`` writes a heatmap overlay PNG (image side) and prints
  the per-token scores (text side). Method parameters go to the chosen method (``--layer``,
  ``--num-steps``, ``--schedule``, or any parameter as ``--param NAME=VALUE``); a method that
  does not take one refuses it in one line.
* ``python -m nibcore evaluate --dataset scenes --n 100 --methods nib rise --out run.jsonl``
  attributes and scores a dataset (:func:`nibcore.evaluate`), appending rows to ``--out`` as they
  are computed (a re-run resumes), and prints the summary. Under ``torchrun --nproc_per_node=K``
  the batches are sharded over K processes (gloo on CPU, nccl on GPUs, one GPU per process) and
  rank 0 merges the rows into ``--out``.
* ``nib store generate NAME ...`` / ``nib store timing`` / ``nib store audit`` compute, time and
  audit the results store (:mod:`nibcore.store`, :mod:`nibcore.audit`); ``python -m
  nibcore.store ...`` is the same as ``nib store ...`` (sidecars and chapters print it).

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
from typing import Any, Sequence

from . import METHODS, SCHEDULES, explain, load_model
from .checks import check_output_file, describe, open_image, read_json_file
from .store import SPECS

#: Errors :func:`main` reports in one line (``error: ...``, exit status 1) instead of a traceback:
#: the library's one-line errors about files, arguments and memory (see :mod:`nibcore.checks`,
#: :mod:`nibcore.memory`), and what torch or the system raise for them (out of memory, I/O).
REPORTED = (OSError, ValueError, TypeError, MemoryError, RuntimeError)


def parser() -> argparse.ArgumentParser:
    """The whole command line's parser (a test parses every command the repository prints)."""
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
                    help="the method's layer (NIB: bottleneck block, default 3/4 of the depth, "
                    "9 on ViT-B/32); refused by a method without one")
    ex.add_argument("--num-steps", "--steps", dest="num_steps", type=int, default=None,
                    help="the method's num_steps (--steps: deprecated spelling)")
    ex.add_argument("--schedule", default=None, choices=sorted(SCHEDULES),
                    help="the method's schedule (NIB)")
    ex.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="any parameter of the method, VALUE as JSON (a bare word is a string), "
                    "e.g. --param seed=1; repeatable")
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

    st = sub.add_parser("store", help="the results store: generate, time, audit")
    store_sub = st.add_subparsers(dest="store_command", required=True)
    g = store_sub.add_parser("generate", help="compute or continue a store file")
    g.add_argument("names", nargs="+", choices=sorted(SPECS))
    g.add_argument("--model", default="mini")
    g.add_argument("--n", type=int, default=None, help="pairs (default: the spec's)")
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--root", type=Path, default=None, help="folder (default: data/results)")
    t = store_sub.add_parser("timing", help="time every method on a separate subset (FPS)")
    t.add_argument("--model", default="mini")
    t.add_argument("--pairs", type=int, default=2)
    t.add_argument("--repeats", type=int, default=3)
    t.add_argument("--root", type=Path, default=None)
    a = store_sub.add_parser("audit", help="recompute a seeded sample of stored rows")
    a.add_argument("files", nargs="*", type=Path)
    a.add_argument("--pairs", type=int, default=2)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--report", type=Path, default=None,
                   help="write every mismatch and excused flip to this JSON file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (raises ``SystemExit`` with an
    ``error: ...`` line on a reported error, see :data:`REPORTED`).

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    args = parser().parse_args(argv)
    if args.command == "store":
        return _store(args)
    try:
        return _evaluate(args) if args.command == "evaluate" else _explain(args)
    except REPORTED as err:
        if args.traceback:
            raise
        raise SystemExit(f"error: {describe(err, limit=None)}") from None


def method_params(args: argparse.Namespace) -> dict[str, Any]:
    """The method parameters given on the command line, checked against the method's own: one
    it does not take is refused in one line (``--layer`` for RISE, say), never ignored."""
    given = {k: getattr(args, k) for k in ("layer", "num_steps", "schedule")
             if getattr(args, k) is not None}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--param {item!r}: write NAME=VALUE, e.g. --param seed=1")
        try:
            given[name] = json.loads(value)
        except json.JSONDecodeError:
            given[name] = value
    takes = METHODS[args.method].defaults
    refused = [k for k in given if k not in takes]
    if refused:
        flags = ", ".join("--" + k.replace("_", "-") if k in ("layer", "num_steps", "schedule")
                          else f"--param {k}=..." for k in refused)
        raise ValueError(f"method {args.method!r} has no parameter {', '.join(refused)} "
                         f"({flags}); it takes {sorted(takes) or 'none'}")
    return given


def _explain(args: argparse.Namespace) -> int:
    from . import viz  # matplotlib only when needed

    params = method_params(args)
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


def _store(args: argparse.Namespace) -> int:
    """``nib store generate | timing | audit`` (what ``python -m nibcore.store`` runs)."""
    from . import resultfile, store

    if args.store_command == "generate":
        try:
            for name in args.names:
                path = store.generate(name, args.model, args.n, args.root,
                                      progress=not args.no_progress)
                meta = store.read_meta(path)
                print(f"{path}: {meta['rows']} rows, {meta['wall_seconds']:.0f} s in all")
        except resultfile.ResultFileError as err:
            print(f"GENERATE FAILED: {err}", file=sys.stderr)
            return 1
        return 0
    if args.store_command == "timing":
        path = store.generate_timing(args.model, args.root, args.pairs, args.repeats)
        print(f"{path} written")
        return 0
    from .audit import audit_all

    try:
        if args.report is not None:
            check_output_file(args.report, "audit report")
        report = audit_all(args.files, args.pairs, args.seed)
    except (AssertionError, OSError, ValueError, MemoryError) as err:
        print(f"AUDIT FAILED: {describe(err, None)}", file=sys.stderr)
        return 1
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report.to_json(), indent=1) + "\n")
    for m in report.excused:
        print(f"excused (margin within the measured noise): {m}")
    for m in report.mismatches:
        print(f"AUDIT FAILED: {m}", file=sys.stderr)
    print(f"audit: {report.checked} rows recomputed, {len(report.mismatches)} mismatch(es), "
          f"{len(report.excused)} flip(s) excused", file=sys.stderr if report.mismatches
          else sys.stdout)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
