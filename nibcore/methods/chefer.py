"""Chefer et al. (2021) gradient-weighted attention relevance, as the paper adapts it."""

from __future__ import annotations

import torch

from ..base import Method, RawResult, register
from ..checks import check_choice
from ..models import ClipModel
from .common import attention_pass, check_token_pooled, grad_of, query_row

VARIANTS = ("paper", "rollout")


@register
class Chefer(Method):
    """Chefer et al. 2021, "Generic attention-model explainability" (ICCV 2021,
    https://arxiv.org/abs/2103.15679).

    With ``Ā_l = mean_heads clamp(∂logit/∂A_l ⊙ A_l, min=0)`` for the attention probabilities
    ``A_l`` of block ``l`` (target: the pair's logit):

    Args:
        variant: ``"paper"`` (what the paper ran): the last block only, ``Ā_{L-1}``;
            ``"rollout"``: the original method's relevance propagation over all blocks,
            ``R = I; R ← R + Ā_l R`` for ``l = 0 .. L-1``.

    The map is the row of the pooling query: CLS on the image side (over all tokens; CLS itself
    is dropped by the image map), EOT on the text side. Raw scores ``(B, N)``, ``>= 0`` (the
    rollout includes the identity, so the query token's own entry is ``>= 1``).

    Passes per call (any B): 2 forward (other modality's feature, the explained tower with
    explicit attention) and 1 backward (gradients w.r.t. the attention), for both variants.
    """

    name = "chefer"

    def __init__(self, *, variant: str = "paper") -> None:
        check_choice("variant", variant, VARIANTS)
        self.variant = variant

    def attribute(self, model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor,
                  side: str) -> RawResult:
        check_token_pooled(model, side, "chefer", "and Chefer's relevance is the row of CLS, "
                           "which is not the pooled token there")
        tower = model.tower(side)
        rollout = self.variant == "rollout"
        layers = range(tower.n_blocks) if rollout else (-1,)
        run = attention_pass(model, pixels, ids, side, layers=layers)
        grads = grad_of(run.objective, run.probs)
        relevance = [(g * a.detach()).clamp(min=0).mean(dim=1) for g, a in zip(grads, run.probs)]
        if rollout:
            n = relevance[0].shape[-1]
            r = torch.eye(n, dtype=relevance[0].dtype, device=relevance[0].device).expand(
                relevance[0].shape[0], n, n)
            for a in relevance:
                r = r + a @ r
        else:
            r = relevance[-1]
        return RawResult(raw=query_row(r, ids, side),
                         extras={"objective": "logit", "value": run.objective.detach()})
