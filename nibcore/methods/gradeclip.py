"""Grad-ECLIP (Zhao et al., ICML 2024): gradient-weighted values of the pooled token's attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..base import Method, RawResult, register
from ..checks import check_layer_param
from ..models import ClipModel, Tower
from .common import attention_pass, check_query_token, check_token_pooled, grad_of, tower_inputs


def default_gradeclip_layer(tower: Tower) -> int:
    """The first explained block: the last block on the image side (Grad-ECLIP's choice), the
    top two thirds of the text tower (its code's 8 of 12 text blocks: ``L - (2 * L) // 3``)."""
    if tower.side == "image":
        return tower.n_blocks - 1
    return tower.n_blocks - max(1, (2 * tower.n_blocks) // 3)


def key_mask(tower: Tower, query: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, N)`` bool: the keys Grad-ECLIP's spatial weight is normalised over — the patch tokens
    on the image side (not CLS), the tokens the pooled token sees on the text side (SOT..EOT under
    CLIP's causal mask; every position without one)."""
    pos = torch.arange(n, device=query.device)[None]
    if tower.side == "image":
        return (pos >= tower.prefix_tokens).expand(query.shape[0], n)
    if tower.attn_mask is not None:
        return pos <= query[:, None]
    return torch.ones(query.shape[0], n, dtype=torch.bool, device=query.device)


def masked_minmax(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Min-max of ``x`` ``(B, N)`` over the ``mask`` entries of each row to [0, 1]; 0 elsewhere
    (and on rows whose masked entries are all equal)."""
    lo = torch.where(mask, x, torch.full_like(x, float("inf"))).amin(dim=1, keepdim=True)
    hi = torch.where(mask, x, torch.full_like(x, -float("inf"))).amax(dim=1, keepdim=True)
    span = hi - lo
    out = (x - lo) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(mask & (span > 0), out, torch.zeros_like(out))


@register
class GradECLIP(Method):
    """Grad-ECLIP (Zhao et al., "Gradient-based Visual Explanation for Transformer-based CLIP",
    ICML 2024; code https://github.com/Cyang-Zhao/Grad-Eclip): both sides.

    For each explained block ``l`` with queries ``q``, keys ``k`` and values ``v`` (all heads side
    by side) and the attention output ``o`` before the output projection, at the pooled token's
    row ``p`` (CLS on the image side, EOT — or the last position on SigLIP — on the text side):

    * channel weights ``w_c = ∂ cos(f, t) / ∂ o_pc`` — the gradient of the cosine of the
      explained tower's feature ``f`` with the other modality's constant feature ``t``;
    * the loosened spatial weight ``λ_i = minmax_i cos(q_p, k_i)`` over the keys ``i`` (the patch
      tokens; on the text side the tokens the pooled token sees), in place of the softmax;
    * ``raw_i = ReLU(Σ_l Σ_c w_c · v_ic · λ_i)``.

    Args:
        layer: first explained block (blocks ``layer .. L-1`` are summed). ``None``: the last
            block on the image side, as the paper; on the text side the top two thirds of the
            blocks, as its code (8 of 12: ``layer = 4`` on a 12-block text tower).

    Raw scores ``(B, N)`` per token, ``>= 0``; CLS (image) and keys outside the mask are 0. The
    model's own multi-head attention is used (the official code re-runs the explained blocks with
    one head over the full width, which changes the network's output). Not defined on towers
    that pool with an attention head (SigLIP's image tower) or average their tokens (open_clip's
    ``pool_type='avg'`` ViTs, the CLIPA configs: the CLS row is not the pooled token there): a
    one-line ``ValueError``.

    Passes per call (any B): 2 forward (other modality's feature, the explained tower with
    explicit attention) and 1 backward.
    """

    name = "gradeclip"

    def __init__(self, *, layer: int | None = None) -> None:
        check_layer_param(layer)
        self.layer = layer

    def attribute(self, model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor,
                  side: str) -> RawResult:
        check_token_pooled(model, side, "gradeclip", "and Grad-ECLIP reads the attention row of "
                           "CLS, which is not the pooled token there")
        tower = model.tower(side)
        if side == "text":  # exact for CLIP's causal text tower (trim keeps ids without a mask)
            ids = model.trim(ids)
        _, pool_ids = tower_inputs(side, pixels, ids)
        check_query_token(tower, pool_ids)
        start = default_gradeclip_layer(tower) if self.layer is None \
            else tower.check_layer(self.layer)
        run = attention_pass(model, pixels, ids, side, layers=range(start, tower.n_blocks),
                             score="cosine", query_rule=False)
        parts = run.recorder.parts
        grads = grad_of(run.objective, [p["attended"] for p in parts])
        batch, n = parts[0]["v"].shape[:2]
        rows = torch.arange(batch, device=pixels.device)
        query = tower.query_index(pool_ids, batch).to(pixels.device)
        keys = key_mask(tower, query, n)
        total = torch.zeros(batch, n, dtype=parts[0]["v"].dtype, device=pixels.device)
        for grad, p in zip(grads, parts):
            w = grad[rows, query]  # (B, D)
            q, k, v = (p[name].detach() for name in ("q", "k", "v"))
            lam = masked_minmax(F.cosine_similarity(q[rows, query][:, None], k, dim=-1), keys)
            total = total + (w[:, None, :] * v).sum(dim=-1) * lam
        return RawResult(raw=total.clamp(min=0),
                         extras={"layer": start, "objective": "cosine",
                                 "value": run.objective.detach()})
