"""The attribution result and :func:`explain`, the entry point every method plugs into.

Every method is a subclass of :class:`nibcore.base.Method` registered with
:func:`nibcore.base.register`; it turns a batch of pairs into *raw* scores (per token, or per
pixel for perturbation methods). Everything after that — image maps, token scores, pass counts —
happens here, once, for all methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .base import METHODS, SIDES, Method, RawResult, image_map, minmax
from .checks import check_choice
from .inputs import prepare_pairs
from .memory import check_call
from .models import ClipModel

# --- the result ------------------------------------------------------------------------------

@dataclass
class Attribution:
    """One explained (image, text) pair.

    ``scores``: image side ``(H, W)`` float32 in [0, 1] at the model's input size; text side
    ``(T,)`` over the real tokens SOT..EOT, min-max normalised over them.
    ``raw``: the signed scores before normalisation/upsampling — per token ``(1 + rows*cols,)``
    with CLS (image) or ``(T,)`` with SOT/EOT (text); per pixel ``(H, W)`` for pixel-level methods.
    ``f1`` / ``f0``: the objective at λ = 1 / λ = 0 where the method defines them (NIB).
    ``passes``: forward/backward passes counted by instrumentation during the call that produced
    this attribution (shared by the ``pairs`` pairs of that call).
    """

    method: str
    side: str
    text: str
    scores: np.ndarray
    raw: np.ndarray
    tokens: list[str]
    params: dict[str, Any]
    passes: dict[str, int]
    pairs: int = 1
    f1: float | None = None
    f0: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def completeness_gap(self) -> float | None:
        """``raw.sum() - (f1 - f0)``: zero when the attributions are complete (Theorem 3)."""
        if self.f1 is None or self.f0 is None:
            return None
        return float(self.raw.astype(np.float64).sum() - (self.f1 - self.f0))

    @property
    def content_scores(self) -> np.ndarray:
        """Text side: the scores without SOT and EOT ``(T - 2,)`` (as displayed / as the paper's
        text metric uses them)."""
        if self.side != "text":
            raise AttributeError("content_scores is defined for text-side attributions")
        return self.scores[1:-1]

    def __repr__(self) -> str:
        gap = self.completeness_gap
        extra = f", gap={gap:+.2e}" if gap is not None else ""
        return (f"Attribution({self.method!r}, side={self.side!r}, text={self.text!r}, "
                f"scores{tuple(self.scores.shape)}{extra})")


# --- explain ---------------------------------------------------------------------------------

def _to_attributions(model: ClipModel, method: Method, side: str, texts: list[str],
                     ids: torch.Tensor, result: RawResult,
                     passes: dict[str, int]) -> list[Attribution]:
    raw = result.raw.detach().float()
    if side == "image":
        if result.pixel_level:
            scores = minmax(raw, dims=(1, 2))
        else:
            scores = image_map(raw, model.grid, model.image_size)
    lengths = model.text_length(ids).tolist()
    out = []
    for b, text in enumerate(texts):
        if side == "image":
            raw_b, score_b = raw[b], scores[b]
        else:
            raw_b = raw[b, : lengths[b]]
            score_b = minmax(raw_b[None], dims=(1,))[0]
        extras = {k: (v[b] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == len(texts)
                      else v) for k, v in result.extras.items()}
        out.append(Attribution(
            method=method.name, side=side, text=text,
            scores=score_b.cpu().numpy().astype(np.float32),
            raw=raw_b.cpu().numpy().astype(np.float32),
            tokens=model.token_strings(ids[b]), params=dict(method.params), passes=dict(passes),
            pairs=len(texts),
            f1=None if result.f1 is None else float(result.f1[b]),
            f0=None if result.f0 is None else float(result.f0[b]),
            extras={k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v
                    for k, v in extras.items()}))
    return out


def explain(model: ClipModel, image, text: str | Sequence[str], method: str = "nib",
            side: str = "image", **params: Any
            ) -> Attribution | list[Attribution] | tuple[Any, Any]:
    """Explain why ``model`` matches ``image`` with ``text``.

    ``image``: a PIL image, a normalised tensor ``(3, H, W)`` / ``(B, 3, H, W)``, or a list;
    ``text``: a string or a list of strings, one per image (each text against its own image).
    ``method``: a name in :data:`METHODS`; ``side``: ``"image"`` (a heatmap) or ``"text"``
    (a score per token); ``params``: the method's parameters (e.g. NIB's ``layer``,
    ``num_steps``, ``schedule``). Returns one :class:`Attribution`, or a list for list input.

    ``side="both"``: both sides of every pair in one call, returned as ``(image, text)`` (each an
    :class:`Attribution`, or a list for list input), the same maps as two calls with
    ``side="image"`` and ``side="text"``; NIB shares the work of the towers between the sides
    (:meth:`Method.attribute_both`). ``passes`` are then those of the whole call.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {sorted(METHODS)}")
    check_choice("side", side, (*SIDES, "both"))
    cls = METHODS[method]
    texts = [text] if isinstance(text, str) else list(text)
    # gradients on for explain's own computation, whatever the caller's grad mode (it is
    # restored on exit): explain works inside `torch.no_grad()` and `torch.inference_mode()`
    with torch.inference_mode(False), torch.enable_grad():
        pixels, ids = prepare_pairs(model, image, text)
        # refuse a call that cannot fit before the method allocates anything (its constructor
        # may: NIB builds its schedule there)
        named = {cls.renamed.get(k, k): v for k, v in params.items()}
        check_call(model, method, {**cls.defaults, **named}, pixels.shape[0], side, ids)
        runner = cls(**params)
        before = model.passes.snapshot()
        try:
            if side == "both":
                results = runner.attribute_both(model, pixels, ids)
            else:
                results = {side: runner.attribute(model, pixels, ids, side)}
        except RuntimeError as err:
            if "Inference tensors" not in str(err):
                raise
            raise RuntimeError(
                "the model's weights were created inside torch.inference_mode() and cannot be "
                "differentiated: load the model outside inference mode (explain itself may be "
                "called inside it)") from None
        passes = model.passes.since(before)
        attributions = {s: _to_attributions(model, runner, s, texts, ids, r, passes)
                        for s, r in results.items()}
    single = isinstance(text, str)
    if side == "both":
        return tuple(attributions[s][0] if single else attributions[s] for s in SIDES)
    return attributions[side][0] if single else attributions[side]
