"""Grad-CAM (Selvaraju et al. 2017) on a transformer block's output, as the paper adapts it."""

from __future__ import annotations

import torch

from ..base import Method, RawResult, register
from ..checks import check_choice, check_layer_param
from ..models import ClipModel
from .common import block_output_layer, objective, split_state

VARIANTS = ("paper", "classic")


@register
class GradCAM(Method):
    """Grad-CAM (Selvaraju et al., ICCV 2017, https://arxiv.org/abs/1610.02391) on the hidden
    state at ``layer`` of the explained tower.

    Target: the pair's logit (logit-scaled cosine with the other modality's constant feature).

    Args:
        layer: index of the block whose *input* is used (the package-wide convention). ``None``:
            the output of block 9 of 12 as the paper (``layer = 10`` on ViT-B/32; scaled to depth
            by ``default_layer(tower) + 1``, kept two blocks below the top: see
            ``block_output_layer``).
        variant: ``"paper"`` (what the paper ran): per token ``ReLU(Σ_c ∂logit/∂z_ic · z_ic)`` —
            the gradient ⊙ activation summed over channels, *not* Grad-CAM's channel-averaged
            weights. ``"classic"``: the textbook Grad-CAM ``ReLU(Σ_c w_c z_ic)`` with
            ``w_c = mean_i ∂logit/∂z_ic`` averaged over the patch tokens (image; the tower's
            ``prefix_tokens`` excluded: CLS on CLIP, none on SigLIP) or the real tokens up to EOT
            (text).

    Raw scores ``(B, N)`` per token, ``>= 0``. Passes per call (any batch size B, one row per
    pair): 3 forward (other modality's feature, ``lower``, ``upper``) and 1 backward.
    """

    name = "gradcam"

    def __init__(self, *, layer: int | None = None, variant: str = "paper") -> None:
        check_layer_param(layer)
        check_choice("variant", variant, VARIANTS)
        self.layer, self.variant = layer, variant

    def attribute(self, model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor,
                  side: str) -> RawResult:
        tower, layer, z, pool_ids, target = split_state(
            model, pixels, ids, side, block_output_layer(model.tower(side), self.layer))
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            value = objective(model, "logit", tower.upper(z, layer, pool_ids), target)
            (grad,) = torch.autograd.grad(value.sum(), z)
        if self.variant == "paper":
            cam = (grad * z.detach()).sum(dim=-1)
        else:
            mask = torch.ones(z.shape[:2], dtype=z.dtype, device=z.device)
            if side == "image":  # average over the patch grid: not CLS (none on SigLIP)
                mask[:, : tower.prefix_tokens] = 0
            else:
                n = model.text_length(ids)
                mask = (torch.arange(z.shape[1], device=z.device)[None] < n[:, None]).to(z.dtype)
            weights = (grad * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True)
            cam = (weights[:, None, :] * z.detach()).sum(dim=-1)
        return RawResult(raw=cam.clamp(min=0),
                         extras={"layer": layer, "objective": "logit", "value": value.detach()})
