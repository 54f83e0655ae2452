"""Figures: heatmap overlays and coloured tokens. The only module that imports matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image


def _display_image(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
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
    ax.imshow(_display_image(image, scores.shape))
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


# --- helpers for the book's chapters -------------------------------------------------------------

def overlay_row(image: Image.Image | Sequence[Image.Image], maps: Sequence[np.ndarray],
                titles: Sequence[str] | None = None, size: float = 2.6,
                suptitle: str | None = None) -> plt.Figure:
    """A row of heatmaps ``(H, W)`` in [0, 1] over one image (or one image per map), each with
    its colour bar."""
    n = len(maps)
    images = list(image) if isinstance(image, (list, tuple)) else [image] * n
    fig, axes = plt.subplots(1, n, figsize=(size * n + 0.4, size), squeeze=False)
    for k, ax in enumerate(axes[0]):
        overlay(ax, images[k], np.asarray(maps[k]), None if titles is None else titles[k])
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def picture(ax: plt.Axes, image: Image.Image, title: str | None = None,
            size: tuple[int, int] | None = None) -> None:
    """The input picture alone (as the model sees it when ``size`` is given)."""
    ax.imshow(_display_image(image, size) if size else np.asarray(image.convert("RGB")))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def signed_patches(ax: plt.Axes, image: Image.Image, patches: np.ndarray,
                   title: str | None = None, alpha: float = 0.6, colorbar: bool = True) -> None:
    """Signed per-patch scores ``(rows, cols)`` over ``image``: red positive, blue negative,
    white zero; the colour scale is symmetric around 0 (no min-max, signs kept)."""
    patches = np.asarray(patches, dtype=np.float64)
    h, w = image.height, image.width
    ax.imshow(np.asarray(image.convert("RGB")), extent=(0, w, h, 0))
    bound = float(np.abs(patches).max()) or 1.0
    im = ax.imshow(patches, cmap="RdBu_r", vmin=-bound, vmax=bound, alpha=alpha,
                   extent=(0, w, h, 0), interpolation="nearest")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def matrix(ax: plt.Axes, values: np.ndarray, row_labels: Sequence[str],
           col_labels: Sequence[str], title: str | None = None, cmap: str = "viridis",
           fmt: str = "{:.2f}", colorbar: bool = True) -> None:
    """An annotated heatmap of a small matrix (e.g. image–text similarities), with colour bar."""
    values = np.asarray(values)
    im = ax.imshow(values, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    mid = (values.max() + values.min()) / 2
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7,
                color="white" if v < mid else "black")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title, fontsize=9)


def tokens_html(words: Sequence[str], scores: np.ndarray, signed: bool = False,
                label: str | None = None) -> str:
    """Tokens as coloured text (an HTML snippet for ``IPython.display.HTML``).

    ``signed=False``: ``scores`` in [0, 1], white → red. ``signed=True``: raw signed scores,
    blue (negative) → white (0) → red (positive), scaled by the largest |score|.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if signed:
        bound = float(np.abs(scores).max()) or 1.0
        cmap, values = plt.get_cmap("RdBu_r"), 0.5 + 0.5 * scores / bound
    else:
        cmap, values = plt.get_cmap("Reds"), 0.05 + 0.8 * np.clip(scores, 0, 1)
    spans = []
    for word, v, s in zip(words, values, scores):
        r, g, b, _ = cmap(float(v))
        spans.append(
            f'<span title="{s:+.3g}" style="background: rgb({int(255 * r)},{int(255 * g)},'
            f'{int(255 * b)}); padding: 2px 4px; margin: 1px; border-radius: 3px; '
            f'font-family: monospace; color: black">{_escape(word)}</span>')
    head = f"<b>{_escape(label)}</b>&nbsp; " if label else ""
    return f'<div style="line-height: 2">{head}{" ".join(spans)}</div>'


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def token_rows(rows: Sequence[tuple[Sequence[str], np.ndarray, str]], signed: bool = False,
               width: float = 9.0) -> plt.Figure:
    """A figure with one line of coloured tokens per ``(words, scores, label)`` row (the static
    form of :func:`tokens_html`, with a colour bar)."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(width, 0.9 * len(rows) + 0.4),
                             squeeze=False)
    cmap = "RdBu_r" if signed else "Reds"
    for ax, (words, scores, label) in zip(axes[:, 0], rows):
        scores = np.asarray(scores, dtype=np.float64)
        if signed:
            bound = float(np.abs(scores).max()) or 1.0
            shown = 0.5 + 0.5 * scores / bound
        else:
            shown = np.clip(scores, 0, 1)
        _token_line(ax, words, shown, scores, cmap)
        ax.set_title(label, fontsize=9, loc="left")
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(-1 if signed else 0, 1))
    fig.colorbar(mappable, ax=axes[:, 0].tolist(), fraction=0.03, pad=0.02,
                 label="score / max|score|" if signed else "score")
    return fig


def _token_line(ax: plt.Axes, words: Sequence[str], shown: np.ndarray, values: np.ndarray,
                cmap: str) -> None:
    colours = plt.get_cmap(cmap)
    renderer = ax.figure.canvas.get_renderer()
    x = 0.0
    for word, v, s in zip(words, shown, values):
        t = ax.text(x, 0.45, f"{word} {s:+.2g}" if cmap == "RdBu_r" else f"{word} {s:.2f}",
                    ha="left", va="center", fontsize=8, transform=ax.transAxes,
                    bbox=dict(facecolor=colours(float(v)), edgecolor="none",
                              boxstyle="round,pad=0.25"))
        box = t.get_window_extent(renderer=renderer).transformed(ax.transAxes.inverted())
        x = box.x1 + 0.015
    ax.set_axis_off()


def curves(ax: plt.Axes, x: np.ndarray, ys: dict[str, np.ndarray], xlabel: str, ylabel: str,
           title: str | None = None, logx: bool = False, logy: bool = False,
           markers: bool = False) -> None:
    """Several labelled curves on one axis (line plots of the theory chapters)."""
    for label, y in ys.items():
        ax.plot(x, y, marker="o" if markers else None, markersize=3, label=label)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(ys) > 1:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)


def tower_diagram(ax: plt.Axes, n_blocks: int, layer: int, label: str,
                  marker: str = "NIB bottleneck") -> None:
    """A tower as a row of blocks with the bottleneck drawn before block ``layer``."""
    for i in range(n_blocks):
        ax.add_patch(plt.Rectangle((i, 0), 0.8, 1, facecolor="#cfe2f3" if i < layer else "#f4cccc",
                                   edgecolor="black"))
        ax.text(i + 0.4, 0.5, str(i), ha="center", va="center", fontsize=8)
    ax.plot([layer - 0.1, layer - 0.1], [-0.15, 1.2], color="crimson", lw=2.5)
    ax.text(layer - 0.1, 1.3, f"{marker}: λ·z enters block {layer}", color="crimson",
            ha="center", va="bottom", fontsize=8)
    ax.text(-0.2, 0.5, label, ha="right", va="center", fontsize=9)
    ax.set_xlim(-0.3, n_blocks + 0.1)
    ax.set_ylim(-0.2, 1.75)
    ax.set_axis_off()
