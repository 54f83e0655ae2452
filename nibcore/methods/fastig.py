"""FastIG (Hesse et al. 2021), as the paper adapts it to attention."""

from __future__ import annotations

import torch

from ..base import Method, RawResult, register
from ..models import ClipModel
from .common import attention_pass, grad_of, query_row


@register
class FastIG(Method):
    """Fast Integrated Gradients (Hesse et al., NeurIPS 2021, https://arxiv.org/abs/2111.07668):
    gradient × input in one backward (exact IG for nonnegatively homogeneous functions), applied
    as the paper does to the last block's attention.

    Raw per token ``(B, N)``: ``mean_heads ∂logit/∂A ⊙ A`` for the attention probabilities ``A``
    of the last block, the CLS row (image) / EOT row (text); signed (negatives kept). Target: the
    pair's logit.

    Args:
        (none)

    Passes per call (any B): 2 forward (other modality's feature, the explained tower) and
    1 backward.
    """

    name = "fastig"

    def attribute(self, model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor,
                  side: str) -> RawResult:
        run = attention_pass(model, pixels, ids, side)
        (grad,) = grad_of(run.objective, run.probs[-1])
        raw = query_row((grad * run.probs[-1].detach()).mean(dim=1), ids, side)
        return RawResult(raw=raw, extras={"objective": "logit", "value": run.objective.detach()})
