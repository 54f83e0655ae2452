"""RISE (Petsiuk et al. 2018): randomised input sampling, as the paper runs it on CLIP."""

from __future__ import annotations

import torch

from ..base import Method, RawResult, cosine, other_features, register
from ..checks import check_number, check_positive_int, check_seed
from ..models import ClipModel
from .common import generator, rise_grids, rise_masks


@register
class RISE(Method):
    """Randomised Input Sampling for Explanation (Petsiuk et al., BMVC 2018,
    https://arxiv.org/abs/1806.07421).

    ``n_masks`` random masks: binary ``mask_grid × mask_grid`` cells, each 1 with probability
    ``p``, bilinearly upsampled and cropped at a random shift (see :func:`.common.rise_masks`).
    Masks are generated in memory, chunk by chunk, from ``seed`` with a local generator on the
    inputs' device (reproducible; nothing cached to disk); every pair of a batch gets the same
    masks.

    * Image side: the masked image ``pixels × mask`` (a zero in normalised space is the dataset
      mean colour) is scored by the cosine of its feature with the text feature; the map is
      ``Σ_k score_k · mask_k / (n_masks · p)`` **per pixel** (``(B, H, W)``, ``pixel_level``).
    * Text side: masks of the ``(context × channels)`` token-embedding matrix (token embedding
      only; positions are kept), scored by the cosine of the text feature with the image
      feature; raw per token ``= Σ_channels mean_k(score_k · mask_k) / p`` ``(B, C)``.

    Args:
        n_masks: number of masks; ``None`` = the paper's 6000 (image) / 200 (text).
        mask_grid: cells per side of a mask before upsampling (8; not the model's patch grid).
            Deprecated name: ``grid``.
        p: probability that a cell is kept (0.1).
        seed: seed of the masks.
        rows_per_call: masked inputs per forward call (memory knob only; 100). Deprecated name:
            ``batch_size``.

    Passes per call with B pairs: ``1 + ceil(B · n_masks / rows_per_call)`` forward (the other
    modality's feature, then the masked inputs), 0 backward.
    """

    name = "rise"
    renamed = {"grid": "mask_grid", "batch_size": "rows_per_call"}
    paper_masks = {"image": 6000, "text": 200}

    def __init__(self, *, n_masks: int | None = None, mask_grid: int = 8, p: float = 0.1,
                 seed: int = 0, rows_per_call: int = 100) -> None:
        if n_masks is not None:
            check_positive_int("n_masks", n_masks)
        check_positive_int("mask_grid", mask_grid)
        check_number("p", p, low=0, high=1, low_open=True)
        check_seed(seed)
        check_positive_int("rows_per_call", rows_per_call)
        self.n_masks, self.mask_grid, self.p = n_masks, mask_grid, p
        self.seed, self.rows_per_call = seed, rows_per_call

    def attribute(self, model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor,
                  side: str) -> RawResult:
        tower = model.tower(side)
        n = self.n_masks or self.paper_masks[side]
        s, p, rows = self.mask_grid, self.p, self.rows_per_call
        device = pixels.device if side == "image" else ids.device
        grids, shifts = rise_grids(n, s, p, generator(device, self.seed), device)
        target = other_features(model, pixels, ids, side)
        batch = pixels.shape[0] if side == "image" else ids.shape[0]
        with torch.no_grad():
            if side == "image":
                base, size = pixels, tuple(pixels.shape[-2:])
            else:
                e = tower.embed(ids)
                # token part only: the positional embedding is what embed adds to the table rows
                tokens = tower.token_embedding(ids)
                positions = e - tokens
                base, size = tokens, tuple(tokens.shape[-2:])
            acc = torch.zeros(batch, *size, dtype=base.dtype, device=device)
            # rows = (pair, mask) pairs, flattened pair-major; chunks of `rows` per forward
            total = batch * n
            for start in range(0, total, rows):
                idx = torch.arange(start, min(start + rows, total), device=device)
                pair, k = idx // n, idx % n
                masks = rise_masks(grids[k], shifts[k], size)
                if side == "image":
                    feats = model.encode_image(base[pair] * masks[:, None])
                else:
                    masked = positions[pair] + tokens[pair] * masks
                    feats = tower.from_embedding(masked, ids[pair])
                score = cosine(feats, target[pair])
                acc.index_add_(0, pair, score[:, None, None] * masks)
        if side == "image":
            return RawResult(raw=acc / (n * p), pixel_level=True, extras={"n_masks": n})
        return RawResult(raw=(acc / n).sum(dim=-1) / p, extras={"n_masks": n})
