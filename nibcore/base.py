"""What every attribution method is built from: the objectives (cosine, logit), the default
bottleneck layer, map shaping (min-max, token grid, upsampling), the :class:`Method` base class,
its raw result and the registry :data:`METHODS`.

The layering: this module sits below :mod:`nibcore.methods` (which subclass :class:`Method` and
:func:`register` themselves) and :mod:`nibcore.attribution` (:func:`~nibcore.attribution.explain`,
the entry point that runs a registered method and turns its raw scores into an
:class:`~nibcore.attribution.Attribution`).
"""

from __future__ import annotations

import functools
import inspect
import warnings
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F

from .models import ClipModel, Tower
from .numerics import span_is_noise

SIDES = ("image", "text")

#: Registered attribution methods, name -> class (filled by :func:`register`).
METHODS: dict[str, type["Method"]] = {}


# --- objectives ------------------------------------------------------------------------------

COSINE_EPS = 1e-8
"""Norms below this are clamped to it (as :func:`torch.nn.functional.cosine_similarity`)."""


def cosine(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity ``(B,)`` of ``(B, E)`` features with ``(B, E)`` targets.

    The same operations as ``F.cosine_similarity(features, target, dim=-1)`` (bit-identical
    values and gradients while both norms exceed :data:`COSINE_EPS`), but with the clamp on the
    autograd graph: torch clamps the norms in place without recording it, so below the epsilon
    its gradient is not the derivative of the value it returns, and ``z · ∂f/∂z`` misses f there
    (Euler's identity fails). NIB's completeness schedule integrates through that region on
    models whose LayerNorm biases are zero.
    """
    def unit(x: torch.Tensor) -> torch.Tensor:
        return x / torch.linalg.vector_norm(x, 2, dim=-1, keepdim=True).clamp_min(COSINE_EPS)

    return (unit(features) * unit(target)).sum(dim=-1)


def logit(model: ClipModel, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The logit-scaled cosine ``(B,)``, as CLIP's contrastive head scores a pair."""
    return model.clip.logit_scale.exp() * cosine(features, target)


def other_features(model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor,
                   side: str) -> torch.Tensor:
    """The constant features ``(B, E)`` of the modality *not* being explained (no grad)."""
    with torch.no_grad():
        return model.encode_text(model.trim(ids)) if side == "image" else model.encode_image(pixels)


MIN_BLOCKS_ABOVE = 2
"""Blocks a default bottleneck keeps above it. With one block left, every token but the pooled one
reaches the output only through LayerNorm, which is scale-invariant, so z_j · ∂f/∂z_j ≈ 0 for every
such token wherever λ²·var(z_j) ≫ the LayerNorm's ε — at every node of the paper's schedule
(Euler's theorem for degree-0 homogeneous functions): the attribution degenerates."""


def default_layer(tower: Tower) -> int:
    """The paper's layer 9 of 12, scaled to the tower's depth, ``(3 * n_blocks) // 4``, but never
    closer to the top than :data:`MIN_BLOCKS_ABOVE` blocks (9 on ViT-B/32, 4 of 6 and 2 of 4 on
    the bundled model). Towers of fewer than three blocks use layer 0."""
    return max(0, min((3 * tower.n_blocks) // 4, tower.n_blocks - MIN_BLOCKS_ABOVE))


# --- maps ------------------------------------------------------------------------------------

def minmax(x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Min-max normalise to [0, 1] over ``dims``. An input that is constant up to float noise
    (:func:`nibcore.numerics.span_is_noise`: its range within 1e-4 of its largest magnitude) maps
    to zeros: stretched to [0, 1], rounding noise would look like structure."""
    dims = tuple(dims)
    lo = x.amin(dim=dims, keepdim=True)
    span = x.amax(dim=dims, keepdim=True) - lo
    flat = span_is_noise(span, x.abs().amax(dim=dims, keepdim=True)) | ~torch.isfinite(span)
    return torch.where(flat, torch.zeros_like(x), (x - lo) / torch.where(flat, 1, span))


def token_grid(raw: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch scores ``(B, rows, cols)`` from per-token scores ``(B, P + rows*cols)``: the ``P``
    leading non-patch tokens (CLS on CLIP; none on SigLIP, whose map uses every token) dropped."""
    prefix = raw.shape[1] - grid[0] * grid[1]
    if prefix < 0:
        raise ValueError(f"{raw.shape[1]} token scores cannot fill a {grid[0]}x{grid[1]} grid")
    return raw[:, prefix:].reshape(raw.shape[0], *grid)


def upsample_tokens(raw: torch.Tensor, grid: tuple[int, int],
                    size: tuple[int, int]) -> torch.Tensor:
    """Per-token scores ``(B, 1 + rows*cols)`` as pixels ``(B, H, W)``, signed and unnormalised:
    drop CLS, patch grid, bilinear upsample (``align_corners=False``)."""
    patches = token_grid(raw, grid)[:, None]
    return F.interpolate(patches, size=size, mode="bilinear", align_corners=False)[:, 0]


def image_map(raw: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """The paper's image map ``(B, H, W)`` in [0, 1]: :func:`upsample_tokens`, then per-sample
    min-max. ``raw``: ``(B, 1 + rows*cols)``."""
    return minmax(upsample_tokens(raw, grid, size), dims=(1, 2))


# --- the method ------------------------------------------------------------------------------

@dataclass
class RawResult:
    """What a method returns for a batch of B pairs.

    ``raw``: ``(B, N)`` per token of the explained tower (N = 1 + rows*cols; on the text side
    N is the context length C, or less when the ids were cut with ``model.trim`` — at least the
    longest text's length), or ``(B, H, W)`` per pixel when ``pixel_level``.
    ``f1`` / ``f0``: ``(B,)`` or None. ``extras``: per-pair extra arrays (first dim B) or values.
    """

    raw: torch.Tensor
    f1: torch.Tensor | None = None
    f0: torch.Tensor | None = None
    pixel_level: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


class Method:
    """Base class of attribution methods.

    A method states its parameters as keyword-only, typed arguments of ``__init__`` with
    defaults (documented in the class docstring's ``Args:`` section, with the method's paper),
    validates them there, stores each as an attribute of the same name, and computes in
    :meth:`attribute`. Derived from that signature, in one place (:meth:`__init_subclass__`):

    * :attr:`defaults` — ``{parameter: default}``, read-only;
    * :attr:`params` — ``{parameter: value}`` of an instance (what an :class:`Attribution` records);
    * old names listed in :attr:`renamed` keep working for one release: they are translated to the
      new name with a ``DeprecationWarning``; any other unknown name is a one-line ``TypeError``.
    """

    name: ClassVar[str]
    #: ``{parameter: default}``, derived from the signature of ``__init__`` (do not set by hand)
    defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    #: deprecated parameter name -> current name (accepted with a ``DeprecationWarning``)
    renamed: ClassVar[Mapping[str, str]] = MappingProxyType({})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "defaults" in cls.__dict__ or "validate" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: state parameters as keyword-only arguments of "
                            "__init__ and validate them there (no `defaults` / `validate`)")
        init = cls.__dict__.get("__init__")
        if init is None and cls.__init__ is Method.__init__:
            init = Method.__init__  # a method without parameters
        if init is not None:
            cls.__init__ = _translating(init)  # type: ignore[method-assign]
        cls.defaults = MappingProxyType(_signature_defaults(cls))

    def __init__(self) -> None:
        """A method without parameters."""

    @property
    def params(self) -> dict[str, Any]:
        """The parameter values of this instance, ``{name: value}`` in signature order."""
        return {name: getattr(self, name) for name in self.defaults}

    def attribute(self, model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor,
                  side: str) -> RawResult:
        raise NotImplementedError

    def attribute_both(self, model: ClipModel, pixels: torch.Tensor,
                       ids: torch.Tensor) -> dict[str, RawResult]:
        """Both sides, ``{side: RawResult}`` (``explain(..., side="both")``). By default each
        side on its own; a method that can share work between the sides (NIB) overrides this,
        with the same results as :meth:`attribute` on each side."""
        return {side: self.attribute(model, pixels, ids, side) for side in SIDES}

    @classmethod
    def shares_sides(cls) -> bool:
        """Whether :meth:`attribute_both` saves work over one call per side."""
        return cls.attribute_both is not Method.attribute_both

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


def _signature_defaults(cls: type[Method]) -> dict[str, Any]:
    """``{name: default}`` of the keyword-only parameters of ``cls.__init__``; a ``TypeError`` at
    class creation if the signature breaks the method style (positional parameters, no default)."""
    signature = inspect.signature(inspect.unwrap(cls.__init__))
    out = {}
    for p in list(signature.parameters.values())[1:]:  # skip self
        if p.kind is p.VAR_KEYWORD:
            continue
        if p.kind is not p.KEYWORD_ONLY or p.default is p.empty:
            raise TypeError(f"{cls.__name__}.__init__: parameter {p.name!r} must be keyword-only "
                            "with a default (method style: def __init__(self, *, name=default))")
        out[p.name] = p.default
    return out


def _translate(cls: type[Method], params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with deprecated names replaced by the current ones (``DeprecationWarning``);
    a one-line ``TypeError`` for unknown names or for an old and a new name given together."""
    out = dict(params)
    for old, new in cls.renamed.items():
        if old in out:
            if new in out:
                raise TypeError(f"method {cls.name!r}: give {new!r} only ({old!r} is its "
                                "deprecated name)")
            warnings.warn(f"method {cls.name!r}: parameter {old!r} is renamed {new!r}; the old "
                          "name will be removed in the next release", DeprecationWarning,
                          stacklevel=3)
            out[new] = out.pop(old)
    unknown = set(out) - set(cls.defaults)
    if unknown:
        raise TypeError(f"unknown parameter(s) {sorted(unknown)} for method {cls.name!r}; "
                        f"it takes {sorted(cls.defaults)}")
    return out


def _translating(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a method's ``__init__`` so that it accepts the deprecated names of its class and
    refuses unknown ones in one line (the wrapped signature stays visible to ``inspect``)."""

    @functools.wraps(init)
    def wrapper(self: Method, *args: Any, **params: Any) -> None:
        if args:
            raise TypeError(f"method {type(self).name!r} takes keyword arguments only, got "
                            f"{len(args)} positional")
        init(self, **_translate(type(self), params))

    return wrapper


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to :data:`METHODS` under ``cls.name``."""
    METHODS[cls.name] = cls
    return cls
