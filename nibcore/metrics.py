"""The paper's evaluation metrics, as its code computes them, plus our ground-truth metrics.

All *confidences* are cosine similarities of projected (un-normalised) CLIP features: no logit
scale, no softmax. Every function here returns **per-sample** values; averaging over samples is
done by :func:`nibcore.evaluation.summarise`.

Image side (:func:`image_confidence`)
    perturbed = normalised pixels × map (map in [0, 1] at the model's input size, broadcast over
    RGB: a soft mask; a zero in normalised space is the dataset-mean colour). ``s0`` / ``s1`` =
    cosine of the original / perturbed image's feature with the full caption's feature.
    Drop = ``max(0, s0 − s1) · 100`` (absolute, not relative); Increase = ``100 · [s1 > s0]``.

Text side (:func:`text_confidence`), three named protocols (see :data:`TEXT_PROTOCOLS`):

``"paper"``
    SOT and EOT are removed from the ids and from the map (no re-normalisation of the map); the
    remaining content ids are re-padded with zeros to the context length. In a (virtual) copy of
    the token-embedding table, the row of each remaining token id is multiplied by that token's
    map value; a token id occurring twice has its row scaled once per occurrence (by the product of
    its map values), and *every* position holding that id reads the scaled row — exactly what
    scaling rows of a table copy does. ``s0`` / ``s1`` = cosine with the image feature of the
    stripped ids under the original / scaled table. **Quirk, reproduced on purpose:** without EOT,
    CLIP's argmax pooling picks the position of the largest remaining token id, i.e. a content
    token, not an end-of-text summary. We build the scaled embedding by gathering rows and
    multiplying by the per-id factor rather than copying the 49408-row table: the numbers are the
    same and the caller's model is never modified.
``"m2ib"``
    M2IB's own protocol, as its evaluation script computes it: SOT and EOT are removed from the
    ids and from the map first (as in ``"paper"``, so pooling lands on the largest remaining id
    for ``s0`` and ``s1`` alike); the content-token map is binarised with a **strict** inequality
    against its median (50th percentile, linear interpolation): keep = score > median, so a
    constant map keeps nothing; the stripped ids are multiplied by that 0/1 mask (dropped ids
    become id 0). ``s0`` on the stripped ids, ``s1`` on the masked ones.
``"clean"``
    Ours (not the paper's, not M2IB's): SOT/EOT are kept, so pooling stays at EOT; the
    embedding *at each content position* is scaled by that position's map value (repeated ids
    are scaled independently), SOT, EOT and padding stay at 1. ``s0`` on the original ids.

Insertion / deletion (:func:`insertion_deletion`, Petsiuk et al. 2018), image side, two named
protocols (see :data:`CURVE_PROTOCOLS`):

``"ours"`` (the default)
    Pixels are ranked by the map (highest first). Deletion replaces the top ``k/K`` of them by the
    baseline (0 in normalised space: the dataset-mean colour), insertion starts from the baseline
    image and restores them, for ``k = 0..K`` (``K = 10``); the score of each image is the cosine
    of its feature with the caption's. The area under each curve (trapezoid over the fraction
    ``k/K`` in [0, 1]) × 100: deletion low = good, insertion high = good.
``"rise"``
    The RISE authors' ``CausalMetric`` (:func:`rise_insertion_deletion`): ``step`` pixels per
    step (default one image row, ``W``), so ``ceil(H·W / step) + 1`` images per curve (65 at
    64 × 64); deletion replaces pixels by 0 (normalised space), insertion starts from a Gaussian
    blur of the image (:func:`rise_blur`: ``gkern(klen=11, nsig=5)``, zero padding) and copies
    the original pixels in; the score is the softmax probability, over a set of class prompts,
    of the class the model predicts on the original image; AUC = ``(Σ a − a₀/2 − a_last/2) /
    (len(a) − 1)`` × 100.

Ties, in both protocols and the pointing game, do not depend on where a pixel sits (version 2;
version 1 took tied pixels in row-major order, which moved single-map AUCs of maps with large
zero regions by up to 17 points and decided pointing verdicts by raster position): the pixels of
one value form a group that a curve changes together, each pixel by the share of the group
that is due (:func:`changed_share`); the pointing game credits the share of the maximal pixels
inside the mask. Both are deterministic, unchanged for a mirrored or rotated map and mask, and
equal on average to breaking the ties at random. RISE's own code leaves ties to ``argsort``.

Ground truth (synthetic scenes, :mod:`nibcore.world.scenes`)
    :func:`pointing_game` (is the map's maximum inside the named object's mask: the share of
    the maximal pixels that are),
    :func:`energy_in_mask` (share of the positive map mass inside the mask) and
    :func:`text_ground_truth` (do the words naming a present object outscore those naming an
    absent one).

Degenerate maps (:func:`degenerate_map`, :func:`degenerate_text`): a map with no spread beyond
float noise (constant up to rounding, e.g. a Grad-CAM whose ReLU left nothing, or RISE with masks
that hide nothing; :func:`nibcore.numerics.span_is_noise`) or with a non-finite value. Every
metric has a defined value for them, so no pair is silently dropped from a mean:

* Confidence Drop / Increase: computed as for any map (the mask is the constant map itself);
  non-finite values of the mask count as 0 (:func:`finite_map`: the pixel is hidden);
* pointing game: a miss (0); energy in mask: the mask's area share (the chance level), likewise
  for the raw positive part when the raw map has no positive mass or a non-finite value;
* insertion / deletion (both protocols): every pixel one tie, so each point changes the same
  share of every pixel (the expected mask of a random order: chance);
* text protocols: as for any map (``"m2ib"`` keeps no token), non-finite token scores counting
  as 0 (:func:`finite_map`); text ground truth: a miss (the margin is 0) when a score of the map
  is non-finite.

Every function here applies these rules itself to the map it is given, NaN and ±inf included, so
a caller passes the method's map as it is (replacing non-finite values by 0 *before* calling
:func:`pointing_game` or :func:`energy_in_mask` would turn a degenerate map into a scored one).
The runner counts them per row (``degenerate``, ``degenerate_raw``), so tables report per cell how
many pairs were degenerate. :data:`METRICS_VERSION` numbers these definitions.

Speed: :func:`hardware` names the machine; frames-per-second are computed from the runner's
timings by :func:`nibcore.evaluation.fps`.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .base import cosine, upsample_tokens
from .columns import TEXT_PROTOCOLS
from .models import ClipModel, text_lengths
from .numerics import span_is_noise

#: Steps K of the insertion / deletion curves (K + 1 images per curve).
CURVE_STEPS = 10
#: The version of this module's metric definitions. A results-store file records the version it
#: was generated with (``metrics_version`` in its sidecar; a sidecar without the field was
#: generated with version 1), and the audit asks for regeneration instead of comparing values
#: when it differs from this one. Raise it with any change here that changes a stored value; a
#: new, separately named option (a protocol, a column) leaves it as it is. Version 2: ties
#: independent of raster order (see the module docstring).
METRICS_VERSION = 2
#: The insertion / deletion protocols, see the module docstring; ``"ours"`` is the default.
CURVE_PROTOCOLS = ("ours", "rise")
#: RISE's Gaussian kernel for the insertion substrate, ``gkern(klen, nsig)``: (klen, nsig).
RISE_BLUR = (11, 5.0)


def _flat(values: np.ndarray) -> bool:
    """No spread beyond float noise (:func:`nibcore.numerics.span_is_noise`)."""
    return bool(span_is_noise(values.max() - values.min(), np.abs(values).max()))


def degenerate_map(scores: np.ndarray) -> bool:
    """A map the metrics cannot rank pixels by: non-finite values, or no spread beyond float
    noise (constant up to rounding)."""
    scores = np.asarray(scores, dtype=np.float64)
    return bool(not np.isfinite(scores).all() or _flat(scores))


def degenerate_text(scores: np.ndarray) -> bool:
    """A text map over SOT..EOT whose content tokens (SOT/EOT dropped) cannot be told apart:
    non-finite, or equal up to float noise (also when there is at most one content token)."""
    scores = np.asarray(scores, dtype=np.float64)
    content = scores[1:-1]
    return bool(not np.isfinite(scores).all() or content.size < 2 or _flat(content))


def finite_map(values: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``values`` with NaN and ±inf replaced by 0, of the same type (the rule of the
    perturbation metrics for a non-finite map value: the pixel or token is hidden). A finite
    input comes back unchanged, bit for bit."""
    if isinstance(values, torch.Tensor):
        return torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    return np.nan_to_num(np.asarray(values), nan=0.0, posinf=0.0, neginf=0.0)


def drop_increase(s0: torch.Tensor | np.ndarray, s1: torch.Tensor | np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Confidence Drop ``max(0, s0 − s1)·100`` and Increase ``100·[s1 > s0]``, per sample."""
    s0 = np.asarray(s0, dtype=np.float64)
    s1 = np.asarray(s1, dtype=np.float64)
    return np.maximum(0.0, s0 - s1) * 100.0, (s1 > s0).astype(np.float64) * 100.0


# --- image side ------------------------------------------------------------------------------

def perturb_image(pixels: torch.Tensor, maps: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Normalised pixels ``(B, 3, H, W)`` × maps ``(B, H, W)`` (broadcast over RGB); a
    non-finite map value counts as 0 (:func:`finite_map`)."""
    maps = torch.as_tensor(np.asarray(maps) if not isinstance(maps, torch.Tensor) else maps)
    maps = finite_map(maps.to(pixels.device, pixels.dtype))
    if maps.dim() == 2:
        maps = maps[None]
    if maps.shape[0] != pixels.shape[0] or tuple(maps.shape[1:]) != tuple(pixels.shape[2:]):
        raise ValueError(f"maps of shape {tuple(maps.shape)} do not match pixels "
                         f"{tuple(pixels.shape)}: expected (B, H, W) at the model's input size")
    return pixels * maps[:, None]


@torch.no_grad()
def image_confidence(model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor,
                     maps: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """Image-side Confidence Drop / Increase for a batch.

    ``pixels`` ``(B, 3, H, W)`` normalised; ``ids`` ``(B, C)`` the full captions; ``maps``
    ``(B, H, W)`` in [0, 1]. Returns per-sample arrays ``s0``, ``s1``, ``drop``, ``increase``.
    """
    text = model.encode_text(ids)
    s0 = cosine(model.encode_image(pixels), text)
    s1 = cosine(model.encode_image(perturb_image(pixels, maps)), text)
    s0, s1 = s0.double().cpu().numpy(), s1.double().cpu().numpy()
    drop, incr = drop_increase(s0, s1)
    return dict(s0=s0, s1=s1, drop=drop, increase=incr)


def changed_share(scores: np.ndarray, counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """For a curve that changes the ``counts[k]`` most salient pixels at point ``k``: the share
    of each pixel changed at each point, ``(len(counts), H·W)`` in [0, 1].

    Ties do not depend on where a pixel sits: the pixels of one value form a group, changed
    together in proportion — when ``c`` of its ``g`` places are due, each of them is changed by
    ``c / g``: the expected mask over every order of the tied pixels, deterministic, and the
    same for a map mirrored or rotated together with its image. A map without ties gives 0 or 1
    everywhere (the plain ranking). A degenerate map (:func:`degenerate_map`: flat up to float
    noise, or non-finite) is one group: every point changes the same share of every pixel.

    Args:
        scores: the map ``(H, W)``.
        counts: pixels due at each point of the curve, nondecreasing, in 0..H·W.
    """
    scores = np.asarray(scores, dtype=np.float64)
    flat = np.zeros(scores.size) if degenerate_map(scores) else scores.ravel()
    _, group, size = np.unique(-flat, return_inverse=True, return_counts=True)
    start = (np.cumsum(size) - size)[group]  # pixels strictly more salient than each pixel
    due = np.asarray(counts, dtype=np.float64)[:, None]
    return np.clip((due - start[None]) / size[group][None], 0.0, 1.0)


def curve_inputs(pixels: torch.Tensor, scores: np.ndarray, steps: int = CURVE_STEPS
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The deletion and insertion images of one pair, each ``(steps + 1, 3, H, W)``.

    ``pixels`` ``(3, H, W)`` normalised; ``scores`` ``(H, W)``. Image ``k`` of the deletion curve
    has its ``round(k / steps · H·W)`` most salient pixels set to 0 (the dataset-mean colour),
    image ``k`` of the insertion curve has only those pixels and 0 elsewhere; tied pixels are
    changed together, each by its share (:func:`changed_share`)."""
    h, w = pixels.shape[-2:]
    if tuple(np.shape(scores)) != (h, w):
        raise ValueError(f"map of shape {tuple(np.shape(scores))} does not match the image's "
                         f"{(h, w)}: expected the map at the model's input size")
    counts = np.rint(np.arange(steps + 1) / steps * h * w).astype(int)
    shown = torch.from_numpy(changed_share(scores, counts)).to(pixels.device, pixels.dtype)
    shown = shown.reshape(steps + 1, 1, h, w)
    return pixels[None] * (1 - shown), pixels[None] * shown


def _batch_maps(maps: torch.Tensor | np.ndarray, n_images: int) -> np.ndarray:
    """``maps`` as an array ``(B, H, W)`` (a single ``(H, W)`` map gets a batch axis), one per
    image."""
    maps = np.asarray(maps.detach().cpu() if isinstance(maps, torch.Tensor) else maps)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.shape[0] != n_images:
        raise ValueError(f"{maps.shape[0]} maps for {n_images} images")
    return maps


@torch.no_grad()
def insertion_deletion(model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor,
                       maps: torch.Tensor | np.ndarray, steps: int = CURVE_STEPS,
                       rows_per_call: int = 256,
                       text_features: torch.Tensor | None = None, protocol: str = "ours",
                       class_features: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Insertion and deletion AUC (Petsiuk et al. 2018) × 100 per pair, image side.

    Args:
        model: the CLIP model.
        pixels: normalised images ``(B, 3, H, W)``.
        ids: the captions ``(B, C)`` (``"ours"`` scores each image against its caption).
        maps: the maps ``(B, H, W)`` at the model's input size.
        steps: ``"ours"``: steps K of each curve (K + 1 images); not used by ``"rise"``, whose
            step is one image row.
        rows_per_call: images per call of the image tower.
        text_features: ``"ours"``: the captions' features, when already computed.
        protocol: ``"ours"`` (the default) or ``"rise"`` (:func:`rise_insertion_deletion`), see
            the module docstring.
        class_features: ``"rise"`` only, required: the dataset's class prompts, the classes of
            the softmax: their text features ``(K, D)`` (float, :func:`class_text_features`)
            or their token ids ``(K, C)`` (integer, ``model.tokenize(prompts)``).

    Returns:
        ``insertion``, ``deletion`` (AUC × 100 per pair) and the curves ``insertion_curve``,
        ``deletion_curve`` ``(B, points)``; ``"ours"``: the cosine curves over ``steps + 1``
        images, AUC by the trapezoid over [0, 1]; ``"rise"``: see
        :func:`rise_insertion_deletion` (also ``top_class``).
    """
    if protocol not in CURVE_PROTOCOLS:
        raise ValueError(f"unknown insertion/deletion protocol {protocol!r}; "
                         f"choose one of {list(CURVE_PROTOCOLS)}")
    if protocol == "rise":
        if class_features is None:
            raise ValueError('protocol="rise" needs class_features: the text features of the '
                             'dataset\'s class prompts (class_text_features)')
        if not torch.is_floating_point(class_features):
            class_features = model.encode_text(class_features.to(model.device))
        return rise_insertion_deletion(clip_class_logits(model, class_features), pixels, maps,
                                       rows_per_call=rows_per_call)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    maps = _batch_maps(maps, pixels.shape[0])
    if text_features is None:
        text_features = model.encode_text(ids)
    rows, owner = [], []
    for b in range(pixels.shape[0]):
        deletion, insertion = curve_inputs(pixels[b], maps[b], steps)
        rows += [deletion, insertion]
        owner.append(b)
    stack = torch.cat(rows)
    target = torch.cat([text_features[b:b + 1].expand(2 * (steps + 1), -1) for b in owner])
    scores = torch.cat([cosine(model.encode_image(stack[i:i + rows_per_call]),
                               target[i:i + rows_per_call])
                        for i in range(0, stack.shape[0], rows_per_call)])
    curves = scores.double().cpu().numpy().reshape(pixels.shape[0], 2, steps + 1)
    x = np.linspace(0.0, 1.0, steps + 1)
    auc = 100.0 * ((curves[..., 1:] + curves[..., :-1]) / 2 * np.diff(x)).sum(axis=-1)
    return dict(deletion=auc[:, 0], insertion=auc[:, 1], deletion_curve=curves[:, 0],
                insertion_curve=curves[:, 1])


# --- insertion / deletion as the RISE authors compute it -----------------------------------------

def rise_kernel(klen: int = RISE_BLUR[0], nsig: float = RISE_BLUR[1]) -> np.ndarray:
    """RISE's blur kernel ``gkern(klen, nsig)``, ``(klen, klen)``: a unit impulse at the centre of
    a ``klen × klen`` grid smoothed by :func:`scipy.ndimage.gaussian_filter` with standard
    deviation ``nsig`` (its defaults: reflecting boundary, truncated at 4 σ). With ``nsig`` large
    beside ``klen`` (5 beside 11) the reflections flatten the kernel; it sums to 1.

    Args:
        klen: side of the kernel (odd, so the impulse has a centre).
        nsig: the Gaussian's standard deviation, in pixels.
    """
    from scipy.ndimage import gaussian_filter

    if isinstance(klen, bool) or not isinstance(klen, int) or klen < 1 or klen % 2 == 0:
        raise ValueError(f"klen must be a positive odd int, got {klen!r}")
    if not nsig > 0:
        raise ValueError(f"nsig must be positive, got {nsig!r}")
    impulse = np.zeros((klen, klen))
    impulse[klen // 2, klen // 2] = 1.0
    return gaussian_filter(impulse, nsig)


def rise_blur(pixels: torch.Tensor, klen: int = RISE_BLUR[0], nsig: float = RISE_BLUR[1]
              ) -> torch.Tensor:
    """RISE's insertion substrate: each channel of ``pixels`` ``(B, C, H, W)`` (normalised)
    convolved with :func:`rise_kernel` (float32 kernel, zero padding ``klen // 2``, so the
    border darkens towards 0, the dataset-mean colour).

    Args:
        pixels: normalised images ``(B, C, H, W)``.
        klen: side of the kernel.
        nsig: the Gaussian's standard deviation.
    """
    kernel = torch.from_numpy(rise_kernel(klen, nsig).astype(np.float32))
    kernel = kernel.to(pixels.device, pixels.dtype)
    channels = pixels.shape[1]
    weight = kernel[None, None].expand(channels, 1, klen, klen)
    return F.conv2d(pixels, weight, padding=klen // 2, groups=channels)


def rise_counts(n_pixels: int, step: int) -> np.ndarray:
    """Pixels changed after each step of a RISE curve: ``min(k · step, n_pixels)`` for
    ``k = 0 .. ceil(n_pixels / step)`` (the last step may change fewer than ``step``).

    Args:
        n_pixels: pixels of the image, ``H · W``.
        step: pixels changed per step.
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be a positive int, got {step!r}")
    n_steps = -(-n_pixels // int(step))
    return np.minimum(np.arange(n_steps + 1) * int(step), n_pixels)


def rise_auc(curve: np.ndarray) -> np.ndarray:
    """RISE's ``auc``: ``(Σ a − a₀/2 − a_last/2) / (len(a) − 1)`` over the last axis, the
    trapezoid over [0, 1] with the curve's points equally spaced (also a last step that changes
    fewer pixels counts as a whole step).

    Args:
        curve: scores ``(..., points)``, at least two points.
    """
    curve = np.asarray(curve, dtype=np.float64)
    if curve.shape[-1] < 2:
        raise ValueError(f"a curve needs at least 2 points, got {curve.shape[-1]}")
    return (curve.sum(axis=-1) - curve[..., 0] / 2 - curve[..., -1] / 2) / (curve.shape[-1] - 1)


def rise_curve_inputs(pixels: torch.Tensor, substrate: torch.Tensor, share: np.ndarray
                      ) -> torch.Tensor:
    """The images of one RISE curve that starts from ``pixels`` and ends at ``substrate``:
    image ``k`` holds ``substrate`` where ``share[k]`` is 1, ``pixels`` where it is 0 (copied
    values) and the blend ``pixels + share · (substrate − pixels)`` for a tied group partly due
    (:func:`changed_share`), ``(len(share), C, H, W)``.

    Deletion: ``pixels`` the image, ``substrate`` zeros; insertion: ``pixels`` the blurred
    image, ``substrate`` the image.

    Args:
        pixels: the curve's first image ``(C, H, W)``.
        substrate: its last image ``(C, H, W)``.
        share: each pixel's changed share at each point ``(K, H·W)`` (:func:`changed_share`).
    """
    h, w = pixels.shape[-2:]
    share = torch.as_tensor(share, device=pixels.device).reshape(len(share), 1, h, w)
    blend = pixels[None] + share.to(pixels.dtype) * (substrate - pixels)[None]
    return torch.where(share == 1, substrate[None], torch.where(share == 0, pixels[None], blend))


def clip_class_logits(model: ClipModel, class_features: torch.Tensor,
                      logit_scale: float | None = None):
    """A classifier for :func:`rise_insertion_deletion`: images ``(N, 3, H, W)`` -> logits
    ``(N, K)`` = ``logit_scale`` × cosine of each image's feature with each class prompt's.

    Args:
        model: the CLIP model.
        class_features: text features ``(K, D)`` of the class prompts
            (:func:`class_text_features`).
        logit_scale: the softmax temperature's inverse; None: the model's own
            (``exp(clip.logit_scale)``, 100 for OpenAI's CLIP), else 100.
    """
    if class_features.dim() != 2 or class_features.shape[0] < 2:
        raise ValueError(f"class_features must be (K, D) with K >= 2 classes, got "
                         f"{tuple(class_features.shape)}")
    if logit_scale is None:
        own = getattr(model.clip, "logit_scale", None)
        logit_scale = float(own.exp()) if isinstance(own, torch.Tensor) else 100.0
    classes = F.normalize(class_features.float(), dim=-1)

    def logits(images: torch.Tensor) -> torch.Tensor:
        feats = F.normalize(model.encode_image(images).float(), dim=-1)
        return logit_scale * feats @ classes.to(feats.device).T

    return logits


@torch.no_grad()
def class_text_features(model: ClipModel, prompts: Sequence[str]) -> torch.Tensor:
    """The text features ``(K, D)`` of a dataset's class prompts (e.g. the scenes' 30
    ``"a <colour> <shape>"`` prompts, Tiny-ImageNet's 200 ``"a photo of a <class>"``).

    Args:
        model: the CLIP model.
        prompts: one prompt per class, at least two.
    """
    if isinstance(prompts, str) or len(prompts) < 2:
        raise ValueError(f"prompts must be a sequence of at least 2 class prompts, got "
                         f"{prompts!r}")
    return model.encode_text(model.tokenize(list(prompts)))


def _class_probabilities(logits, images: torch.Tensor, rows_per_call: int) -> torch.Tensor:
    """Softmax (float64) of ``logits(images)`` over the classes, ``rows_per_call`` at a time."""
    out = [torch.softmax(logits(images[i:i + rows_per_call]).double(), dim=-1)
           for i in range(0, images.shape[0], rows_per_call)]
    return torch.cat(out)


@torch.no_grad()
def rise_insertion_deletion(logits, pixels: torch.Tensor, maps: torch.Tensor | np.ndarray,
                            step: int | None = None, rows_per_call: int = 256,
                            klen: int = RISE_BLUR[0], nsig: float = RISE_BLUR[1]
                            ) -> dict[str, np.ndarray]:
    """Insertion and deletion as the RISE authors' ``CausalMetric`` computes them, per pair.

    For each image the class ``c`` is the classifier's top class on the original image. Pixels
    are taken in the map's order, ``step`` per step, tied pixels together in proportion
    (:func:`changed_share`; a degenerate map is one tie). Deletion: from the image towards
    zeros; insertion: from
    :func:`rise_blur` of the image towards the image. Each curve scores every image by the
    softmax probability of ``c``; AUC by :func:`rise_auc`. ``2 · (ceil(H·W / step) + 1)``
    classifier rows per pair.

    Args:
        logits: classifier, images ``(N, 3, H, W)`` -> logits ``(N, K)`` (e.g.
            :func:`clip_class_logits`); the softmax is taken here, in float64.
        pixels: normalised images ``(B, 3, H, W)``.
        maps: the maps ``(B, H, W)`` at the images' size.
        step: pixels changed per step; None: one image row (``W``), as the authors' examples.
        rows_per_call: images per call of ``logits``.
        klen: side of the blur kernel (RISE: 11).
        nsig: its standard deviation (RISE: 5).

    Returns:
        ``insertion``, ``deletion``: AUC × 100 per pair; ``insertion_curve``,
        ``deletion_curve``: the probabilities ``(B, points)``; ``top_class`` ``(B,)``.
    """
    maps = _batch_maps(maps, pixels.shape[0])
    h, w = pixels.shape[-2:]
    if tuple(maps.shape[1:]) != (h, w):
        raise ValueError(f"maps of shape {tuple(maps.shape[1:])} do not match the images' "
                         f"{(h, w)}: expected the maps at the images' size")
    if isinstance(rows_per_call, bool) or not isinstance(rows_per_call, int) or rows_per_call < 1:
        raise ValueError(f"rows_per_call must be a positive int, got {rows_per_call!r}")
    counts = rise_counts(h * w, w if step is None else step)
    blurred = rise_blur(pixels, klen, nsig)
    curves, tops = [], []
    for b in range(pixels.shape[0]):
        share = changed_share(maps[b], counts)
        deletion = rise_curve_inputs(pixels[b], torch.zeros_like(pixels[b]), share)
        insertion = rise_curve_inputs(blurred[b], pixels[b], share)
        probs = _class_probabilities(logits, torch.cat([deletion, insertion]), rows_per_call)
        top = int(torch.argmax(probs[0]))  # deletion's first image is the original
        curves.append(probs[:, top].cpu().numpy().reshape(2, len(counts)))
        tops.append(top)
    curves = np.stack(curves)
    auc = 100.0 * rise_auc(curves)
    return dict(deletion=auc[:, 0], insertion=auc[:, 1], deletion_curve=curves[:, 0],
                insertion_curve=curves[:, 1], top_class=np.asarray(tops))


# --- text side -------------------------------------------------------------------------------

@dataclass
class TextPerturbation:
    """The two text inputs a text protocol compares, for one caption.

    The input embedding of a row is ``token_embedding[ids] * scale[:, None] + positional``
    (``scale`` 1 everywhere reproduces ``model.text.embed(ids)``); its feature is pooled with
    ``ids`` (argmax pooling). ``ids0``/``scale0`` give ``s0``, ``ids1``/``scale1`` give ``s1``.
    All tensors ``(C,)``.
    """

    protocol: str
    ids0: torch.Tensor
    scale0: torch.Tensor
    ids1: torch.Tensor
    scale1: torch.Tensor


def _content(ids: torch.Tensor, scores: Sequence[float] | np.ndarray,
             eot_id: int | None = None) -> tuple[int, torch.Tensor]:
    """Number of real tokens T and the content-token scores ``(T - 2,)`` (SOT/EOT dropped;
    non-finite scores count as 0, :func:`finite_map`)."""
    n = int(text_lengths(ids[None], eot_id)[0])
    scores = torch.as_tensor(finite_map(np.asarray(scores, dtype=np.float64)))
    if scores.shape != (n,):
        raise ValueError(f"text map has {tuple(scores.shape)} scores but the caption has {n} "
                         f"real tokens SOT..EOT: pass Attribution.scores of that caption")
    return n, scores[1:-1]


def text_perturbation(ids: torch.Tensor, scores: Sequence[float] | np.ndarray,
                      protocol: str, eot_id: int | None = None) -> TextPerturbation:
    """Build the inputs of a text protocol for one caption.

    ``ids`` ``(C,)`` the tokenised caption (SOT .. EOT, zero padding); ``scores`` ``(T,)`` the
    text map over SOT..EOT (``Attribution.scores``, in [0, 1]; a non-finite score counts as 0);
    ``eot_id``: the tokenizer's end-of-text id (``ClipModel.eot_id``; None: the last token before
    the zero padding).
    """
    if protocol not in TEXT_PROTOCOLS:
        raise ValueError(f"unknown text protocol {protocol!r}; "
                         f"choose one of {list(TEXT_PROTOCOLS)}")
    ids = ids.detach().cpu().long()
    c = ids.shape[0]
    n, content = _content(ids, scores, eot_id)
    ones = torch.ones(c, dtype=torch.float64)
    if protocol == "paper":
        stripped = torch.zeros(c, dtype=torch.long)
        stripped[: n - 2] = ids[1: n - 1]
        factor: dict[int, float] = {}
        for tok, value in zip(stripped[: n - 2].tolist(), content.tolist()):
            factor[tok] = factor.get(tok, 1.0) * value  # a table row scaled once per occurrence
        scale = torch.tensor([factor.get(t, 1.0) for t in stripped.tolist()], dtype=torch.float64)
        return TextPerturbation(protocol, stripped, ones, stripped, scale)
    if protocol == "m2ib":
        stripped = torch.zeros(c, dtype=torch.long)
        stripped[: n - 2] = ids[1: n - 1]
        if n > 2:
            keep = content > float(np.percentile(content.numpy(), 50))
        else:
            keep = torch.zeros(0, dtype=torch.bool)
        dropped = stripped.clone()
        dropped[: n - 2] = torch.where(keep, stripped[: n - 2], 0)
        return TextPerturbation(protocol, stripped, ones, dropped, ones)
    scale = ones.clone()
    scale[1: n - 1] = content
    return TextPerturbation(protocol, ids, ones, ids, scale)


def scaled_text_embedding(model: ClipModel, ids: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``token_embedding[ids] * scale[..., None] + positional``: ``(B, C, D)`` from ``(B, C)``.

    Computed on the side from the embedding weights; the model is not modified.
    """
    weight = model.text.token_embedding.weight
    pos = model.text.positional_embedding
    e = weight[ids.to(weight.device)] * scale.to(weight.device, weight.dtype)[..., None]
    return e + pos.to(e.dtype)


@torch.no_grad()
def text_confidence(model: ClipModel, pixels: torch.Tensor, ids: torch.Tensor,
                    scores: Sequence[np.ndarray], protocol: str = "paper",
                    image_features: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Text-side Confidence Drop / Increase for a batch under ``protocol``.

    ``pixels`` ``(B, 3, H, W)``; ``ids`` ``(B, C)``; ``scores``: B text maps over SOT..EOT.
    Each caption is compared with its own image. Returns per-sample ``s0``, ``s1``, ``drop``,
    ``increase``.
    """
    if image_features is None:
        image_features = model.encode_image(pixels)
    perts = [text_perturbation(ids[b], scores[b], protocol, model.eot_id)
             for b in range(ids.shape[0])]
    dev = model.device
    out = {}
    for which in ("0", "1"):
        row_ids = torch.stack([getattr(p, "ids" + which) for p in perts]).to(dev)
        row_scale = torch.stack([getattr(p, "scale" + which) for p in perts])
        e = scaled_text_embedding(model, row_ids, row_scale)
        feats = model.text.from_embedding(e, row_ids)
        out["s" + which] = cosine(feats, image_features).double().cpu().numpy()
    out["drop"], out["increase"] = drop_increase(out["s0"], out["s1"])
    return out


# --- ground truth ----------------------------------------------------------------------------

def fit_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``mask`` resized (nearest) to ``shape`` when it is not already that size.

    Valid for square images, which the model's preprocessing only resizes (no crop)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape == tuple(shape):
        return mask
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.interpolate(t, size=tuple(shape), mode="nearest")[0, 0].numpy() > 0.5


def pointing_game(scores: np.ndarray, mask: np.ndarray) -> float:
    """The share of the map's maximal pixels that lie inside ``mask`` ``(H, W)``, in [0, 1]:
    1 when the maximum is inside (the usual hit), 0 when outside, and for a maximum shared by
    several pixels the fraction of them inside — deterministic, the same for a map mirrored or
    rotated with its mask, and on average what a random choice among the tied pixels scores.
    A degenerate map points nowhere: 0. The mask is resized (nearest) to the map's size if
    needed.
    """
    scores = np.asarray(scores, dtype=np.float64)
    mask = fit_mask(mask, scores.shape)
    if degenerate_map(scores):
        return 0.0
    top = scores == scores.max()
    return float(mask[top].sum() / top.sum())


def energy_in_mask(scores: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's positive mass inside ``mask``: ``Σ_mask max(m, 0) / Σ max(m, 0)``.

    With the [0, 1] maps methods return (``Attribution.scores``) every value counts, relative to
    the map's minimum (min-max shifts the minimum to 0); with a signed raw map only the positive
    part counts. A map with no positive mass (or a non-finite value) scores the mask's area share,
    the chance level a uniform map gets (see "Degenerate maps" in the module docstring).
    """
    scores = np.asarray(scores, dtype=np.float64)
    mask = fit_mask(mask, scores.shape)
    pos = np.maximum(scores, 0.0)
    total = pos.sum()
    if not np.isfinite(scores).all() or not total > 0:
        return float(mask.mean())
    return float(pos[mask].sum() / total)


def mass_density(scores: np.ndarray, mask: np.ndarray) -> float:
    """The map's positive mass inside ``mask`` per unit of the mask's area:
    :func:`energy_in_mask` / the mask's area share. 1 is chance (a uniform map, and a degenerate
    one); a small region holding all of the mass of an image scores ``1 / area``, so a small
    glyph and a large object can be compared although the glyph can only hold little mass.

    Args:
        scores: the map ``(H, W)``.
        mask: the region ``(H, W)`` (resized, nearest, to the map's size), not empty.
    """
    area = float(fit_mask(mask, np.shape(scores)).mean())
    if not area > 0:
        raise ValueError("mass_density needs a non-empty region")
    return energy_in_mask(scores, mask) / area


def no_positive_mass(scores: np.ndarray) -> bool:
    """Does :func:`energy_in_mask` fall back to chance for this map?"""
    scores = np.asarray(scores, dtype=np.float64)
    return bool(not np.isfinite(scores).all() or not np.maximum(scores, 0.0).sum() > 0)


def raw_pixel_map(raw: np.ndarray, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """A signed raw attribution at pixel resolution ``(H, W)``, not normalised.

    Per-token ``raw`` ``(1 + rows*cols,)`` (CLS first): drop CLS, grid, bilinear upsample as the
    [0, 1] maps are made, but without min-max; per-pixel ``raw`` ``(H, W)`` is returned as is.
    """
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim == 2:
        return raw
    return upsample_tokens(torch.from_numpy(raw)[None], grid, tuple(size))[0].numpy()


def phrase_positions(model: ClipModel, caption: str, phrase: str) -> list[int]:
    """Positions (in the SOT..EOT indexing of ``Attribution.scores``) of the tokens of the first
    whole-word occurrence of ``phrase`` in ``caption``.

    Uses that CLIP's tokenizer encodes word by word: the tokens of the words before the phrase
    are those of the prefix alone.
    """
    encode = getattr(model.tokenizer, "encode", None)
    if encode is None:
        raise TypeError("phrase_positions needs a tokenizer with encode() (open_clip's CLIP BPE)")
    match = re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", caption)
    if match is None:
        raise ValueError(f"phrase {phrase!r} does not occur in caption {caption!r}")
    start = 1 + len(encode(caption[: match.start()]))
    n = len(encode(phrase))
    full = encode(caption)
    if full[start - 1: start - 1 + n] != encode(phrase):
        raise ValueError(f"could not align the tokens of {phrase!r} in {caption!r}")
    return list(range(start, start + n))


def text_ground_truth(scores: np.ndarray, present: Sequence[int], absent: Sequence[int]
                      ) -> tuple[bool, float]:
    """Do the tokens naming the present object outscore those naming the absent one?

    ``scores``: the text map over SOT..EOT; ``present`` / ``absent``: token positions (see
    :func:`phrase_positions`). Compares the *mean* score of each group (groups may differ in
    token count); returns ``(hit, margin)`` with ``margin = mean(present) − mean(absent)``.
    Invariant to min-max normalisation, so raw and [0, 1] maps give the same hit. A map with a
    non-finite score is degenerate (:func:`degenerate_text`): a miss with margin 0.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        return False, 0.0
    margin = float(scores[list(present)].mean() - scores[list(absent)].mean())
    return bool(margin > 0), margin


# --- hardware --------------------------------------------------------------------------------

def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def hardware(device: torch.device | str | None = None) -> str:
    """The machine a timing was taken on: torch version, device name / CPU model, threads."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU {cpu_name()}"
    return (f"torch {torch.__version__}; {name}; {torch.get_num_threads()} threads "
            f"({os.cpu_count()} cores)")
