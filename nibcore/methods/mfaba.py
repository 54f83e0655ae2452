"""MFABA (Zhu et al. 2024), as the paper adapts it to CLIP's input embedding."""

from __future__ import annotations

import torch

from ..base import Method, RawResult, other_features, register
from ..checks import check_choice, check_number, check_positive_int
from ..models import ClipModel
from .common import OBJECTIVES, objective, tower_inputs


@register
class MFABA(Method):
    """More Faithful and Accelerated Boundary-based Attribution (Zhu et al., AAAI 2024,
    https://arxiv.org/abs/2312.13630).

    Starting from the input embedding ``e_0 = tower.embed(x)`` (patch embedding + CLS + positions,
    *before* ``ln_pre``; token + positional embedding on the text side), ``num_steps``
    signed-gradient steps *down* the objective,

        ``g_t = ∂f/∂e |_{e_t}``,  ``e_{t+1} = e_t − step_size · sign(g_t)``,

    and the attribution per token is ``−Σ_t Σ_c (e_{t+1} − e_t) ⊙ g_t`` (gradients at the start of
    each step; with the sign update every term is ``step_size · |g_t|``, so raw ``>= 0``).
    Text side: each *position's* embedding is perturbed (a repeated token is perturbed
    independently at each of its positions).

    Args:
        num_steps: signed-gradient steps (10). Deprecated name: ``steps``.
        step_size: size of each step in embedding units (0.01).
        objective: ``None`` = the paper's choice per side (cosine on the image side, the pair's
            logit on the text side), or ``"cosine"`` / ``"logit"``.

    ``extras["path"]``: ``(B, num_steps)`` the objective at ``e_0 .. e_{num_steps-1}`` (it falls
    along the path). Passes per call (any B, one row per pair): ``1 + num_steps`` forward (other
    modality's feature, one per step) and ``num_steps`` backward.
    """

    name = "mfaba"
    renamed = {"steps": "num_steps"}

    def __init__(self, *, num_steps: int = 10, step_size: float = 0.01,
                 objective: str | None = None) -> None:
        check_positive_int("num_steps", num_steps)
        check_number("step_size", step_size, low=0, low_open=True)
        if objective is not None:
            check_choice("objective", objective, OBJECTIVES)
        self.num_steps, self.step_size, self.objective = num_steps, step_size, objective

    def attribute(self, model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor,
                  side: str) -> RawResult:
        tower = model.tower(side)
        inputs, pool_ids = tower_inputs(side, pixels, ids)
        score = self.objective or ("cosine" if side == "image" else "logit")
        target = other_features(model, pixels, ids, side)
        with torch.no_grad():
            e = tower.embed(inputs)
        raw = torch.zeros(e.shape[:2], dtype=e.dtype, device=e.device)
        path = []
        for _ in range(self.num_steps):
            with torch.enable_grad():
                leaf = e.detach().requires_grad_(True)
                value = objective(model, score, tower.from_embedding(leaf, pool_ids), target)
                (grad,) = torch.autograd.grad(value.sum(), leaf)
            path.append(value.detach())
            e_next = e - self.step_size * grad.sign()
            raw -= ((e_next - e) * grad).sum(dim=-1)
            e = e_next
        path = torch.stack(path, dim=1)
        return RawResult(raw=raw, extras={"path": path, "objective": score, "value": path[:, 0]})
