"""Saliency Map (Simonyan et al. 2013), as the paper adapts it to attention."""

from __future__ import annotations

import torch

from ..base import Method, RawResult, register
from ..checks import check_choice
from ..models import ClipModel
from .common import attention_pass, grad_of, query_row

VARIANTS = ("paper", "pixels")


@register
class Saliency(Method):
    """Gradient magnitude of the pair's logit (Simonyan et al. 2013,
    https://arxiv.org/abs/1312.6034).

    Args:
        variant: ``"paper"`` (what the paper ran): ``mean_heads |∂logit/∂A|`` for the attention
            probabilities ``A`` of the last block, the CLS row (image) / EOT row (text): raw
            ``(B, N)`` per token. ``"pixels"``: the textbook saliency map,
            ``max_RGB |∂logit/∂pixels|`` per pixel on the image side (``(B, H, W)``,
            ``pixel_level``); on the text side ``max_channels |∂logit/∂e|`` per token of the
            input embedding ``e`` (``(B, C)``).

    Raw scores ``>= 0``. Passes per call (any B): 2 forward (other modality's feature, the
    explained tower) and 1 backward, for both variants.
    """

    name = "saliency"

    def __init__(self, *, variant: str = "paper") -> None:
        check_choice("variant", variant, VARIANTS)
        self.variant = variant

    def attribute(self, model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor,
                  side: str) -> RawResult:
        run = attention_pass(model, pixels, ids, side)
        extras = {"objective": "logit", "value": run.objective.detach()}
        if self.variant == "pixels":
            (grad,) = grad_of(run.objective, run.leaf)
            if side == "image":
                return RawResult(raw=grad.abs().amax(dim=1), pixel_level=True, extras=extras)
            return RawResult(raw=grad.abs().amax(dim=-1), extras=extras)
        (grad,) = grad_of(run.objective, run.probs[-1])
        return RawResult(raw=query_row(grad.abs().mean(dim=1), ids, side), extras=extras)
