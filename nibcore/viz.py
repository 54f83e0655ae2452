"""Figures for a single attribution: a heatmap overlay and coloured tokens (the only library
module that imports matplotlib; the book's chapter figures are in :mod:`nibcore.book.figures`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image


def display_image(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """The picture as the model saw it: resized (short side) and centre-cropped to ``size``."""
    h, w = size
    scale = max(h / image.height, w / image.width)
    resized = image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)),
                                          Image.BICUBIC)
    left, top = (resized.width - w) // 2, (resized.height - h) // 2
    return np.asarray(resized.crop((left, top, left + w, top + h)))


def overlay(ax: plt.Axes, image: Image.Image, scores: np.ndarray, title: str | None = None,
            alpha: float = 0.5, colorbar: bool = True) -> None:
    """Draw ``scores`` ``(H, W)`` in [0, 1] as a heatmap over ``image`` on ``ax``."""
    ax.imshow(display_image(image, scores.shape))
    im = ax.imshow(scores, cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def tokens(ax: plt.Axes, words: Sequence[str], scores: np.ndarray, title: str | None = None,
           cmap: str = "Reds") -> None:
    """Draw ``words`` as text on boxes coloured by ``scores`` ``(T,)`` in [0, 1]."""
    colours = plt.get_cmap(cmap)
    x = 0.0
    for word, s in zip(words, scores):
        t = ax.text(x, 0.5, f"{word}\n{s:.2f}", ha="left", va="center", fontsize=9,
                    bbox=dict(facecolor=colours(0.15 + 0.85 * float(s)), edgecolor="none",
                              boxstyle="round,pad=0.3"), transform=ax.transAxes)
        ax.figure.canvas.draw()
        box = t.get_window_extent().transformed(ax.transAxes.inverted())
        x = box.x1 + 0.02
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def save_overlay(path: str | Path, image: Image.Image, scores: np.ndarray,
                 title: str | None = None) -> Path:
    """Write a PNG of the heatmap ``scores`` ``(H, W)`` over ``image``."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    overlay(ax, image, scores, title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
