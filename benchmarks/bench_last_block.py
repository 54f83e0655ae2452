"""Candidate exact saving, measured, not adopted: the last block on the pooled token only.

    python benchmarks/bench_last_block.py                 # ViT-B-32 (random weights), 1 thread
    python benchmarks/bench_last_block.py --model mini

Only the pooled token's output of the last block reaches the feature (CLS on the image side, EOT
on the causal text side), so that block can run its attention query, output projection and MLP on
that token alone (keys and values still on every token). Exact in real arithmetic; in float32 the
smaller products round differently. This script swaps the towers' ``upper`` for such a version
(open_clip ``ResidualAttentionBlock`` towers with a query token only), times
``explain(side="both")`` with NIB's paper schedule both ways (CPU seconds, median) and prints
the largest differences of raw scores, maps, f(1) and f(0). nibcore does not use it: the maps
are no longer the same bits as the results store's, whose audit holds them to 1e-6.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import nibcore
from nibcore.models import Tower

FULL_UPPER = Tower.upper


def pooled_upper(self: Tower, z: torch.Tensor, layer: int, ids: torch.Tensor | None = None,
                 attention=None) -> torch.Tensor:
    """``Tower.upper`` with the last block computed for the pooled token only."""
    last = self.blocks[self.n_blocks - 1]
    query = None if attention is not None or layer >= self.n_blocks - 1 else \
        self.query_index(ids, z.shape[0])
    if query is None or not hasattr(last, "attention"):
        return FULL_UPPER(self, z, layer, ids, attention)
    self.passes.count_forward(z.shape[0])
    x = self.run_blocks(z, layer, self.n_blocks - 1)
    b, n, _ = x.shape
    rows, query = torch.arange(b, device=x.device), query.to(x.device)
    h = last.ln_1(x)
    mask = self.mask_for(n)
    if mask is not None:  # the query's row of the mask, per pair and head: (B * heads, 1, N)
        mask = mask[query][:, None, :].repeat_interleave(last.attn.num_heads, 0)
    pooled = x[rows, query][:, None] + last.ls_1(
        last.attention(q_x=h[rows, query][:, None], k_x=h, v_x=h, attn_mask=mask))
    pooled = pooled + last.ls_2(last.mlp(last.ln_2(pooled)))
    x = x.clone()
    x[rows, query] = pooled[:, 0]  # the other tokens' outputs are never read by the head
    out = self.head(x, ids)
    self.passes.watch_backward(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nibcore.load_model(args.model, device="cpu")
    pixels = torch.randn(1, 3, *model.image_size, generator=torch.Generator().manual_seed(0))
    texts = ["a photo of a small dog on the grass"]

    def run():
        return nibcore.explain(model, pixels, texts, side="both")

    results, times = {}, {}
    for name, upper in (("full last block", FULL_UPPER), ("pooled token only", pooled_upper)):
        Tower.upper = upper
        try:
            results[name] = run()
            spent = []
            for _ in range(args.repeats):
                start = time.process_time()
                run()
                spent.append(time.process_time() - start)
            times[name] = statistics.median(spent)
        finally:
            Tower.upper = FULL_UPPER
    print(f"# {model.name}, NIB paper schedule, image + text in one call, 1 thread, CPU s")
    for name, t in times.items():
        print(f"{name}: {t:.3f} s")
    print(f"saving: {100 * (1 - times['pooled token only'] / times['full last block']):.1f} %")
    for a, b in zip(*(r for r in results.values())):
        a, b = a[0], b[0]
        print(f"{a.side}: max |Δ raw| {np.abs(a.raw - b.raw).max():.2e} (max |raw| "
              f"{np.abs(a.raw).max():.2e}), max |Δ map| {np.abs(a.scores - b.scores).max():.2e}, "
              f"|Δ f1| {abs(a.f1 - b.f1):.2e}, |Δ f0| {abs(a.f0 - b.f0):.2e}")


if __name__ == "__main__":
    main()
