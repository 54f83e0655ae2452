"""Command line: ``python -m nibcore explain IMAGE "TEXT" [options]``.

Writes a heatmap overlay PNG (image side) and prints the per-token scores (text side).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from PIL import Image

from . import METHODS, SCHEDULES, explain, load_model


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nibcore",
                                     description="Explain a CLIP image-text match.")
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
    ex.add_argument("--steps", type=int, default=10, help="num_steps (NIB)")
    ex.add_argument("--schedule", default="paper", choices=sorted(SCHEDULES), help="NIB schedule")
    ex.add_argument("--out", type=Path, default=None,
                    help="overlay PNG path (default: <image stem>_<method>.png)")
    ex.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from . import viz  # matplotlib only when needed

    if not args.image.is_file():
        raise SystemExit(f"image file not found: {args.image}")
    image = Image.open(args.image)
    model = load_model(args.model, args.pretrained, args.device)
    params = dict(layer=args.layer, num_steps=args.steps, schedule=args.schedule) \
        if args.method == "nib" else {}
    sides = ["image", "text"] if args.side == "both" else [args.side]
    for side in sides:
        a = explain(model, image, args.text, method=args.method, side=side, **params)
        if side == "image":
            out = args.out or args.image.with_name(f"{args.image.stem}_{args.method}.png")
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


if __name__ == "__main__":
    sys.exit(main())
