"""Checking and converting user inputs (images, texts) into model tensors, with clear errors."""

from __future__ import annotations

import os
import warnings
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

from .checks import open_image
from .models import ClipModel

ImageLike = Union[Image.Image, torch.Tensor, str, os.PathLike]


def as_list(x, kind: str) -> list:
    """``x`` as a list: a single item becomes ``[x]``; a 4-D tensor stays one item (a batch)."""
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError(f"no {kind} given: the list is empty")
        return list(x)
    return [x]


def _pil_to_tensor(model: ClipModel, image: Image.Image) -> torch.Tensor:
    if image.mode != "RGB":
        warnings.warn(f"image mode {image.mode!r} converted to RGB "
                      f"(alpha dropped, grey replicated to three channels)", stacklevel=4)
        image = image.convert("RGB")
    return model.preprocess(image)


def _check_tensor(model: ClipModel, pixels: torch.Tensor) -> torch.Tensor:
    if not torch.is_floating_point(pixels):
        raise TypeError(
            f"image tensor has dtype {pixels.dtype}; expected a float tensor already normalised "
            f"with the model's mean/std. Pass a PIL image instead to have it preprocessed.")
    if pixels.dim() == 3:
        pixels = pixels[None]
    h, w = model.image_size
    if pixels.dim() != 4 or pixels.shape[1] != 3 or tuple(pixels.shape[2:]) != (h, w):
        raise ValueError(
            f"image tensor has shape {tuple(pixels.shape)}; this model expects (3, {h}, {w}) or "
            f"(B, 3, {h}, {w}). Pass a PIL image to have it resized and normalised.")
    return pixels


def prepare_images(model: ClipModel, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
    """Normalised pixels ``(B, 3, H, W)`` on the model's device.

    Accepts a PIL image (any mode: converted to RGB with a warning), the path of an image file
    (``str`` or ``os.PathLike``; a missing file, a folder or a file PIL cannot read is a one-line
    error, see :func:`nibcore.checks.open_image`), a normalised float tensor ``(3, H, W)`` /
    ``(B, 3, H, W)``, or a list of those.
    """
    batches = []
    for image in as_list(images, "images"):
        if isinstance(image, (str, os.PathLike)):
            image = open_image(image)
        if isinstance(image, Image.Image):
            batches.append(_pil_to_tensor(model, image)[None])
        elif isinstance(image, torch.Tensor):
            batches.append(_check_tensor(model, image))
        elif isinstance(image, np.ndarray):
            raise TypeError("got a numpy array: pass PIL.Image.fromarray(array) for an (H, W, 3) "
                            "uint8 picture, or torch.from_numpy(array) for a normalised float "
                            "(3, H, W) tensor")
        else:
            raise TypeError(f"image must be a PIL image, an image file's path or a torch "
                            f"tensor, got {type(image).__name__}")
    pixels = torch.cat([b.float() for b in batches]).to(model.device)
    if not torch.isfinite(pixels).all():
        raise ValueError("image contains NaN or infinite values")
    return pixels


def prepare_pairs(model: ClipModel, images, texts) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels ``(B, 3, H, W)`` and token ids ``(B, C)`` for B (image, text) pairs."""
    text_list = as_list(texts, "texts")
    pixels = prepare_images(model, images)
    if pixels.shape[0] != len(text_list):
        raise ValueError(f"got {pixels.shape[0]} images but {len(text_list)} texts: "
                         f"each text is explained against its own image, so give as many of each")
    return pixels, model.tokenize(text_list)
