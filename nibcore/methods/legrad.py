"""LeGrad (Bousselham et al., ICCV 2025): per-layer gradients w.r.t. the attention maps."""

from __future__ import annotations

import torch

from ..base import Method, RawResult, cosine, other_features, register
from ..checks import check_layer_param
from ..models import AttentionRecorder, ClipModel, Tower
from .common import check_token_pooled


def default_legrad_layer(tower: Tower) -> int:
    """LeGrad's default first block: its code's ``layer_index=-2``, the last two blocks."""
    return max(0, tower.n_blocks - 2)


@register
class LeGrad(Method):
    """LeGrad (Bousselham et al., "LeGrad: An Explainability Method for Vision Transformers via
    Feature Formation Sensitivity", ICCV 2025, https://arxiv.org/abs/2404.03214): image side
    only.

    For each block ``l`` from ``layer`` to the top, the block's output tokens are pooled into an
    image feature ``f_l`` and compared with the (constant) text feature ``t``: ``s_l =
    cos(f_l, t)``. The map is ``Σ_l mean_heads,queries ReLU(∂s_l / ∂A_l)`` — the gradient of each
    layer's similarity with respect to that layer's own attention map ``A_l`` (later layers'
    similarities do not reach it), averaged over heads and query rows; a column per key token.

    * CLS-pooled ViT (CLIP): ``f_l = proj(ln_post(mean of all tokens of block l's output))``
      (LeGrad's code pools intermediate tokens by their mean), ``A_l`` the block's attention.
    * Attention-pooled ViT (SigLIP): ``f_l`` = the model's head (final norm, MAP head,
      projection) on block ``l``'s output, and ``A_l`` the MAP head's attention of its latent
      query over the tokens (LeGrad's SigLIP variant; it skips the final norm, we keep the
      model's head as it is).

    Args:
        layer: first block whose output is used. ``None``: its code's default ``layer_index=-2``,
            the last two blocks.

    Raw scores ``(B, N)`` per token, ``>= 0`` (CLS included on CLIP, dropped by the image map).
    The text side is not defined by LeGrad, nor an open_clip ViT that averages its patch tokens
    (``pool_type='avg'``, the CLIPA configs: a one-token layer feature has no patch token to
    average): a one-line ``ValueError`` each. LeGrad's optional SigLIP
    "correction" (zeroing where an empty prompt's map exceeds 0.8) is not applied.

    Passes per call (any B): 2 forward (the text feature, the image tower with explicit
    attention) and 1 backward (each layer's input is detached from the layers below, so one
    backward of ``Σ_l s_l`` gives every ``∂s_l / ∂A_l``).
    """

    name = "legrad"

    def __init__(self, *, layer: int | None = None) -> None:
        check_layer_param(layer)
        self.layer = layer

    def attribute(self, model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor,
                  side: str) -> RawResult:
        if side != "image":
            raise ValueError("legrad explains the image side only (its paper defines it on a "
                             "vision transformer's attention maps): use side='image'")
        check_token_pooled(model, side, "legrad", "so LeGrad's one mean token per layer leaves "
                           "its head no patch token to average (the map would be all zero)")
        tower = model.image
        start = default_legrad_layer(tower) if self.layer is None \
            else tower.check_layer(self.layer)
        target = other_features(model, pixels, ids, side)
        batch = pixels.shape[0]
        attention_head = tower.query_index(None, batch) is None
        recorder = AttentionRecorder(layers=list(range(start, tower.n_blocks)), isolate=True)
        with torch.enable_grad():
            tower.from_embedding(tower.embed(pixels), None, attention=recorder)
            sims, maps = [], []
            for part, probs in zip(recorder.parts, recorder.probs):
                if attention_head:
                    head = AttentionRecorder(layers=[], head=True)
                    feature = tower.head(part["out"], None, head)
                    maps.append(head.head_probs)
                else:
                    feature = tower.head(part["out"].mean(dim=1, keepdim=True), None)
                    maps.append(probs)
                sims.append(cosine(feature, target))
            objective = torch.stack(sims).sum(dim=0)
            if attention_head:  # the backward stops at the heads' attention, above the blocks
                model.passes.watch_backward(objective)
            grads = torch.autograd.grad(objective.sum(), maps)
        raw = sum(g.clamp(min=0).mean(dim=(1, 2)) for g in grads)
        return RawResult(raw=raw, extras={"layer": start, "objective": "cosine",
                                          "value": torch.stack(sims).detach().T})
