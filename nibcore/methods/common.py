"""Helpers shared by the baseline attribution methods.

* :func:`tower_inputs` / :func:`block_output_layer` / :func:`check_layer_param`: which tensors go
  into a tower, and the layer conventions (see below);
* :func:`attention_pass`: one forward of a tower with the attention of some blocks made explicit
  (used by Chefer, Saliency Map and FastIG), and :func:`query_row` to read the CLS / EOT row;
* :func:`rise_masks` and small parameter checks.

Layer convention. Every ``layer`` parameter in :mod:`nibcore` is the index of the block whose
*input* is used (NIB's convention: ``tower.lower(x, layer)``). The paper's "layer 9" of NIB is the
input of block 9; M2IB's and Grad-CAM's "layer 9" is the *output* of block index 9, i.e. our
``layer = 10`` on a 12-block tower. :func:`block_output_layer` gives that default for any depth.

Results. Baselines return raw scores only; ``Attribution.f1``/``f0`` stay ``None`` (they are
NIB's path ends). Gradient baselines put the objective they differentiate, evaluated at the
unmodified input, in ``extras["value"]`` and its name in ``extras["objective"]``.

Pass counts (``model.passes``, instrumented): one forward per ``lower``/``upper`` call (a batch
of rows is one call), one backward per gradient through an ``upper`` output. The other
modality's constant feature always costs one forward. Each class docstring states its counts for
the default parameters.

The pooled-token floor (:mod:`nibcore.models`): ``upper`` runs a tower's last block on the pooled
token alone where that is exact, unless attention is recorded. Methods that only read features
(and gradients with respect to inputs or states below the last block) use it on the explained
tower: NIB, M2IB, Grad-CAM, MFABA and RISE. Methods that read the last block's attention for
every query token, its values or every token's output record attention (``attention=``), so
their explained tower runs every block whole: Chefer, Saliency Map, FastIG, Grad-ECLIP and
LeGrad. Every method's other-modality feature (:func:`~nibcore.attribution.other_features`) uses
the floor.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch

from ..base import MIN_BLOCKS_ABOVE, cosine, default_layer, logit, other_features
from ..models import AttentionRecorder, ClipModel, ImageTower, Tower

OBJECTIVES = ("cosine", "logit")


# --- inputs and layers -----------------------------------------------------------------------

def tower_inputs(side: str, pixels: torch.Tensor,
                 ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(inputs, pool_ids)`` of the explained tower: pixels and no ids, or ids and ids."""
    return (pixels, None) if side == "image" else (ids, ids)


def block_output_layer(tower: Tower, layer: int | None) -> int:
    """The split point for methods that use the *output* of a block (M2IB, Grad-CAM).

    ``layer`` given: validated with ``tower.check_layer`` and returned (it is the input of block
    ``layer`` = the output of block ``layer - 1``). ``None``: the output of block
    ``default_layer(tower)`` (9 on a 12-block tower), i.e. ``default_layer(tower) + 1``, but at
    least ``MIN_BLOCKS_ABOVE`` blocks below the top on shallow towers (see :data:`MIN_BLOCKS_ABOVE`:
    a bottleneck entering the last block degenerates to LayerNorm's scale invariance).
    """
    if layer is None:
        return max(0, min(default_layer(tower) + 1, tower.n_blocks - MIN_BLOCKS_ABOVE))
    return tower.check_layer(layer)


class SplitState(NamedTuple):
    """A tower split for a batch: the state ``z`` ``(B, N, D)`` entering block ``layer``
    (computed without grad), the ids to pool with (text side, else None) and the other
    modality's constant feature ``target`` ``(B, E)``."""

    tower: Tower
    layer: int
    z: torch.Tensor
    pool_ids: torch.Tensor | None
    target: torch.Tensor


def split_state(model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor, side: str,
                layer: int) -> SplitState:
    """The tower split every split method shares (NIB, M2IB, Grad-CAM, the theory helpers): the
    other modality's feature (the target) and the state entering block ``layer`` (a resolved
    index: each method applies its own default rule, :func:`default_layer` or
    :func:`block_output_layer`), run without gradients — two forward calls."""
    tower = model.tower(side)
    inputs, pool_ids = tower_inputs(side, pixels, ids)
    target = other_features(model, pixels, ids, side)
    with torch.no_grad():
        z = tower.lower(inputs, layer)
    return SplitState(tower, layer, z, pool_ids, target)


def objective(model: ClipModel, name: str, features: torch.Tensor,
              target: torch.Tensor) -> torch.Tensor:
    """``"cosine"`` or ``"logit"`` (logit-scaled cosine) of features with targets, ``(B,)``."""
    return cosine(features, target) if name == "cosine" else logit(model, features, target)


def generator(device: torch.device, seed: int) -> torch.Generator:
    """A local random generator on ``device`` (never the global RNG)."""
    return torch.Generator(device=device).manual_seed(seed)


# --- attention -------------------------------------------------------------------------------

class AttentionPass(NamedTuple):
    """What :func:`attention_pass` returns.

    ``objective`` ``(B,)``; ``probs``: the recorded attention, one ``(B, heads, N, N)`` per
    recorded block (in block order); ``leaf``: the tensor gradients can be taken against at the
    input (pixels on the image side, the input embedding on the text side)."""

    objective: torch.Tensor
    probs: list[torch.Tensor]
    leaf: torch.Tensor
    recorder: AttentionRecorder | None = None


def attention_pass(model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor, side: str,
                   layers: Sequence[int] = (-1,), score: str = "logit",
                   query_rule: bool = True) -> AttentionPass:
    """Run the explained tower once with the attention of ``layers`` recorded, and the objective.

    ``score``: ``"logit"`` (default: the pair's logit, as the paper's attention baselines) or
    ``"cosine"``, against the other modality's constant feature. Costs two forward calls (the
    other modality's feature, this tower); gradients are left to the caller (one backward).
    Builds the graph under ``torch.enable_grad()``, so it works inside ``torch.no_grad()``.
    Raises a one-line ``ValueError`` when the tower pools no CLS / EOT token (``query_rule``:
    see :func:`check_query_token`).
    """
    tower = model.tower(side)
    inputs, pool_ids = tower_inputs(side, pixels, ids)
    check_query_token(tower, pool_ids, query_rule)
    target = other_features(model, pixels, ids, side)
    recorder = AttentionRecorder(layers=list(layers))
    with torch.enable_grad():
        if side == "image":
            leaf = pixels.detach().clone().requires_grad_(True)
            e = tower.embed(leaf)
        else:
            leaf = tower.embed(inputs).detach().requires_grad_(True)
            e = leaf
        features = tower.from_embedding(e, pool_ids, attention=recorder)
        value = objective(model, score, features, target)
    return AttentionPass(value, recorder.probs, leaf, recorder)


def check_query_token(tower: Tower, ids: torch.Tensor | None, query_rule: bool = False) -> None:
    """A one-line ``ValueError`` when ``tower`` pools no single query token (SigLIP's image tower
    pools with an attention head), or — ``query_rule``: for :func:`query_row`'s CLS / EOT rule —
    when its pooled token is not CLS / EOT (SigLIP's text tower pools the last position)."""
    if tower.query_index(ids, 1) is None:
        raise ValueError(f"this method reads the attention row of the token the {tower.side} "
                         f"tower pools, but this tower pools with an attention head (no CLS "
                         f"token, as SigLIP's image tower): use nib, gradcam, m2ib, rise, mfaba "
                         f"or legrad")
    if query_rule and ((tower.side == "image" and tower.prefix_tokens != 1) or (
            tower.side == "text" and getattr(tower, "pool_type", "argmax") != "argmax")):
        raise ValueError(f"this method reads the CLS / EOT attention row, but this {tower.side} "
                         f"tower pools another token (SigLIP's text tower pools the last "
                         f"position): use nib, gradcam, m2ib, rise, mfaba or gradeclip")


def grad_of(value: torch.Tensor,
            wrt: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """``∂ Σ value / ∂ wrt`` (one backward), also inside ``torch.no_grad()``."""
    with torch.enable_grad():
        return torch.autograd.grad(value.sum(), wrt)


def query_row(x: torch.Tensor, ids: torch.Tensor, side: str) -> torch.Tensor:
    """The row of the pooling query from per-query maps ``x`` ``(B, N, N)``: CLS (row 0) on the
    image side, EOT (the position of the largest id) on the text side. Returns ``(B, N)``."""
    if side == "image":
        return x[:, 0]
    eot = ids.argmax(dim=-1)
    return x[torch.arange(x.shape[0], device=x.device), eot]


# --- RISE masks ------------------------------------------------------------------------------

def rise_grids(n: int, s: int, p: float, gen: torch.Generator,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of ``n`` RISE masks: binary ``(n, s, s)`` grids (1 with probability
    ``p``) and shifts ``(n, 2)`` in [0, 1) (as fractions of a cell)."""
    grids = (torch.rand(n, s, s, generator=gen, device=device) < p).float()
    shifts = torch.rand(n, 2, generator=gen, device=device)
    return grids, shifts


def rise_masks(grids: torch.Tensor, shifts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Masks ``(n, H, W)`` in [0, 1]: each ``(s, s)`` grid bilinearly upsampled to
    ``(s + 1) * cell`` with ``cell = ceil(size / s)``, then cropped to ``size`` at a random shift of
    up to one cell (Petsiuk et al. 2018)."""
    n, s = grids.shape[0], grids.shape[-1]
    h, w = size
    ch, cw = math.ceil(h / s), math.ceil(w / s)
    up = torch.nn.functional.interpolate(grids[:, None], size=((s + 1) * ch, (s + 1) * cw),
                                         mode="bilinear", align_corners=False)[:, 0]
    dy = (shifts[:, 0] * ch).long().clamp(max=ch - 1)
    dx = (shifts[:, 1] * cw).long().clamp(max=cw - 1)
    rows = dy[:, None] + torch.arange(h, device=grids.device)[None]  # (n, H)
    cols = dx[:, None] + torch.arange(w, device=grids.device)[None]  # (n, W)
    idx = torch.arange(n, device=grids.device)[:, None, None]
    return up[idx, rows[:, :, None], cols[:, None, :]].clamp_(0, 1)


def check_token_pooled(model: ClipModel, side: str, method: str, why: str) -> None:
    """A one-line ``ValueError`` naming ``method``, the tower and ``why`` when ``model``'s
    ``side`` tower is an open_clip ViT whose head does not pool the one CLS token: average
    pooling (``pool_type='avg'``, open_clip's CLIPA configs) or no pooling."""
    tower = model.tower(side)
    pool = getattr(tower.visual, "pool_type", "tok") if isinstance(tower, ImageTower) else "tok"
    if pool == "tok":
        return
    how = "averages the patch tokens (pool_type='avg', as open_clip's CLIPA configs)" \
        if pool == "avg" else f"does not pool one token (pool_type={pool!r})"
    raise ValueError(f"{method} cannot explain the {side} tower of {model.name!r}: its head "
                     f"{how}, {why}: use nib, gradcam, m2ib, rise or mfaba")
