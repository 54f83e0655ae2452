"""MFABA (Zhu et al. 2024), as the paper adapts it to CLIP's input embedding."""

from __future__ import annotations

import torch

from ..attribution import (Method, RawResult, check_choice, check_positive_int, other_features,
                           register)
from ..models import ClipModel
from .common import OBJECTIVES, check_number, objective, tower_inputs


@register
class MFABA(Method):
    """More Faithful and Accelerated Boundary-based Attribution.

    Starting from the input embedding ``z_0 = tower.embed(x)`` (patch embedding + CLS +
    positions, *before* ``ln_pre``; token + positional embedding on the text side), ``steps``
    signed-gradient steps *down* the objective,

        ``g_t = ∂f/∂z |_{z_t}``,  ``z_{t+1} = z_t − step_size · sign(g_t)``,

    and the attribution per token is ``−Σ_t Σ_c (z_{t+1} − z_t) ⊙ g_t`` (gradients at the start of
    each step; with the sign update every term is ``step_size · |g_t|``, so raw ``>= 0``).

    ``objective``: ``None`` = the paper's choice per side (cosine on the image side, the pair's
    logit on the text side), or ``"cosine"`` / ``"logit"``. ``steps`` (10), ``step_size`` (0.01).
    Text side: each *position's* embedding is perturbed (a repeated token is perturbed
    independently at each of its positions).

    ``extras["path"]``: ``(B, steps)`` the objective at ``z_0 .. z_{steps-1}`` (it falls along the
    path). Passes per call (any B, one row per pair): **1 + steps forward** (other modality's
    feature, one per step) and **steps backward** — 11 / 10 for the defaults.
    """

    name = "mfaba"
    defaults = dict(steps=10, step_size=0.01, objective=None)

    def validate(self) -> None:
        check_positive_int("steps", self.params["steps"])
        check_number("step_size", self.params["step_size"], low=0, low_open=True)
        if self.params["objective"] is not None:
            check_choice("objective", self.params["objective"], OBJECTIVES)

    def attribute(self, model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor,
                  side: str) -> RawResult:
        tower = model.tower(side)
        inputs, pool_ids = tower_inputs(side, pixels, ids)
        score = self.params["objective"] or ("cosine" if side == "image" else "logit")
        target = other_features(model, pixels, ids, side)
        with torch.no_grad():
            z = tower.embed(inputs)
        raw = torch.zeros(z.shape[:2], dtype=z.dtype, device=z.device)
        path = []
        for _ in range(self.params["steps"]):
            with torch.enable_grad():
                leaf = z.detach().requires_grad_(True)
                value = objective(model, score, tower.from_embedding(leaf, pool_ids), target)
                (grad,) = torch.autograd.grad(value.sum(), leaf)
            path.append(value.detach())
            z_next = z - self.params["step_size"] * grad.sign()
            raw -= ((z_next - z) * grad).sum(dim=-1)
            z = z_next
        path = torch.stack(path, dim=1)
        return RawResult(raw=raw, extras={"path": path, "objective": score, "value": path[:, 0]})
