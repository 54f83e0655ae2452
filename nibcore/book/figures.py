"""The figures of the book's chapters: each takes computed data and draws on given axes or
returns a Figure. Single-attribution drawings (overlay, tokens) come from :mod:`nibcore.viz`."""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from ..viz import display_image, overlay
from .paper import DISPLAY, METRIC_LABELS

# --- page geometry ------------------------------------------------------------------------------

#: the width of the book's text column, in inches at 100 px per inch (about 680 px)
COLUMN_IN = 6.8
#: the resolution of every figure of the book (the PNGs are drawn at this dpi)
DPI = 150
#: matplotlib settings of the book's figures: sharp PNGs, fonts that stay readable once a figure
#: drawn at :data:`DPI` is shown at the column's width
STYLE = {"figure.dpi": DPI, "savefig.dpi": DPI, "font.size": 9, "axes.titlesize": 9,
         "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8}


def style() -> None:
    """Apply :data:`STYLE` (done when this module is imported; call again after a backend
    resets the settings)."""
    mpl.rcParams.update(STYLE)


style()


def panels(n: int, panel_w: float, panel_h: float, max_cols: int | None = None,
           **subplots) -> tuple[plt.Figure, list[plt.Axes]]:
    """A figure of ``n`` panels that fits the column: at most ``max_cols`` per row (default: as
    many as fit at ``panel_w``), each panel at most ``panel_w`` wide; unused axes are hidden.
    Returns the figure and the ``n`` axes in reading order."""
    fit = max(1, int(COLUMN_IN // panel_w))
    cols = max(1, min(n, max_cols or fit, fit if max_cols is None else max_cols))
    rows = math.ceil(n / cols)
    width = min(COLUMN_IN, panel_w * cols)
    height = panel_h * rows * (width / (panel_w * cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False, **subplots)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def findings_html(items: Sequence[tuple[str, str]], title: str = "What we found") -> str:
    """A "what we found" box: one line per ``(verdict, sentence)``, the verdict (e.g.
    ``"reproduced"``, ``"not reproduced"``, ``"holds"``, ``"fails"``, ``"measured"``) in bold and
    coloured. The sentences are written by the chapter from computed values."""
    colours = {"reproduced": "#1a7f37", "holds": "#1a7f37", "not reproduced": "#b42318",
               "fails": "#b42318", "partly": "#9a6700"}
    lines = "".join(
        f'<li><b style="color:{colours.get(v, "#444")}">{_escape(v)}</b> — {_escape(t)}</li>'
        for v, t in items)
    return (f'<div class="admonition tip findings"><p class="admonition-title">'
            f"{_escape(title)}</p><ul>{lines}</ul></div>")


# --- helpers for the book's chapters -------------------------------------------------------------

def overlay_row(image: Image.Image | Sequence[Image.Image], maps: Sequence[np.ndarray],
                titles: Sequence[str] | None = None, size: float = 2.6,
                suptitle: str | None = None,
                outlines: Sequence[tuple[np.ndarray, str]] = ()) -> plt.Figure:
    """A row of heatmaps ``(H, W)`` in [0, 1] over one image (or one image per map), each with
    its colour bar; ``outlines``: ``(mask, colour)`` pairs drawn as contours on every map."""
    n = len(maps)
    images = list(image) if isinstance(image, (list, tuple)) else [image] * n
    fig, axes = panels(n, size + 0.3, size)
    for k, ax in enumerate(axes):
        overlay(ax, images[k], np.asarray(maps[k]), None if titles is None else titles[k])
        for mask, colour in outlines:
            ax.contour(mask, levels=[0.5], colors=colour, linewidths=0.8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def picture(ax: plt.Axes, image: Image.Image, title: str | None = None,
            size: tuple[int, int] | None = None) -> None:
    """The input picture alone (as the model sees it when ``size`` is given)."""
    ax.imshow(display_image(image, size) if size else np.asarray(image.convert("RGB")))
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
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8,
                color=ink(im.cmap(im.norm(v))))
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title, fontsize=9)


def ink(rgba: Sequence[float]) -> str:
    """Black or white, whichever reads better on a cell of colour ``rgba`` (by its relative
    luminance: light cells get black numbers, dark cells white ones)."""
    r, g, b = (float(c) for c in rgba[:3])
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def token_legend(signed: bool = False) -> str:
    """The key of :func:`tokens_html`'s colours, as an HTML snippet: a colour ramp with its
    ends named (blue − / white 0 / red + for ``signed``, white 0 → red 1 otherwise)."""
    if signed:
        stops, ends = "RdBu_r", ("− (against the caption)", "0", "+ (for the caption)")
    else:
        stops, ends = "Reds", ("0", "", "1 (highest score)")
    cmap = plt.get_cmap(stops)
    ramp = ", ".join("rgb({},{},{})".format(*(int(255 * c) for c in cmap(v)[:3]))
                     for v in ((0.0, 0.5, 1.0) if signed else (0.05, 0.45, 0.85)))
    what = ("signed score / max |score|" if signed else "score (scaled to [0, 1])") + \
        "; hover a token for its value"
    return ('<div style="font-size: 0.85em; margin: 0.3em 0">colour key: '
            f'<span style="margin-right: 0.4em">{_escape(ends[0])}</span>'
            f'<span style="display: inline-block; width: 8em; height: 0.9em; '
            f'vertical-align: middle; border: 1px solid #999; '
            f'background: linear-gradient(to right, {ramp})"></span>'
            + (f'<span style="margin: 0 0.4em">{_escape(ends[1])} in the middle,</span>'
               if ends[1] else "")
            + f'<span style="margin-left: 0.4em">{_escape(ends[2])}</span> — {_escape(what)}'
            "</div>")


def maps_colorbar(fig: plt.Figure, axes: Sequence[plt.Axes], cmap: str = "jet",
                  label: str = "attribution (each map scaled to [0, 1])") -> None:
    """One colour bar for a row of maps drawn with ``vmin=0, vmax=1`` (e.g. by
    :func:`nibcore.viz.overlay` with ``colorbar=False``), beside the whole row."""
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    bar = fig.colorbar(mappable, ax=list(axes), fraction=0.02, pad=0.01)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=8)


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
               width: float = COLUMN_IN) -> plt.Figure:
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


# --- figures of the theory chapters --------------------------------------------------------------

def objective_paths(grid: np.ndarray, paths: dict[str, np.ndarray],
                    marks: dict[str, tuple[np.ndarray, str, float]]) -> plt.Figure:
    """One panel per model: ``f(λ)`` on the log-spaced ``grid`` ``(G,)``, with ``f(0)`` as a
    dashed line. Each path is ``(G + 1,)``: ``f(0)`` first, then ``f`` on ``grid``. ``marks`` maps a
    label to ``(lambdas, colour, size)``: a schedule's λ points, drawn as ticks at the bottom."""
    fig, axes = panels(len(paths), COLUMN_IN / 2, 3.2)
    for ax, (name, f) in zip(axes, paths.items()):
        ax.plot(grid, f[1:], marker="o", ms=2.5, label="f(λ)")
        ax.axhline(f[0], color="grey", ls="--", label=f"f(0) = {f[0]:.3f}")
        lo = min(f.min(), 0)
        for label, (lambdas, colour, size) in marks.items():
            ax.plot(lambdas, np.full(len(lambdas), lo), "|", color=colour, ms=size, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("λ (log scale)")
        ax.set_ylabel("f(λ) = cosine")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def completeness_gaps(ax: plt.Axes, summary: pd.DataFrame, title: str | None = None) -> None:
    """Median |relative completeness gap| against the λ points per pair, one log–log curve per
    schedule; ``summary`` as :func:`nibcore.book.theory.completeness_summary` returns it."""
    for schedule, part in summary.reset_index().groupby("schedule"):
        ax.plot(part.evaluations, part.median_abs_relative_gap, marker="o", label=schedule)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("evaluations of f per pair (λ points)")
    ax.set_ylabel("median |Σ A − (f(1) − f(0))| / |f(1) − f(0)|")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend()


def kl_bound_figure(lambdas: np.ndarray, bound: np.ndarray, sigmas: Sequence[float]
                    ) -> plt.Figure:
    """Theorem 1's bound ``(S, L)`` (one row per σ, one column per λ of ``lambdas`` ``(L,)``): left
    the curves over λ (log y), right a heatmap of its log10 over (λ > 0, σ) with a colour bar."""
    fig, axes = plt.subplots(1, 2, figsize=(COLUMN_IN, 3.0))
    curves(axes[0], lambdas, {f"σ = {s:g}": b for s, b in zip(sigmas, bound)}, "λ",
           "bound on I(z̃(λ); x)  [nats]", "Theorem 1's bound", logy=True)
    im = axes[1].imshow(np.log10(bound[:, 1:]), aspect="auto", origin="lower",
                        extent=(lambdas[1], 1, 0, len(sigmas)), cmap="magma")
    axes[1].set_yticks(np.arange(len(sigmas)) + 0.5, [f"{s:g}" for s in sigmas])
    axes[1].set_xlabel("λ")
    axes[1].set_ylabel("σ")
    axes[1].set_title("log10 of the bound", fontsize=10)
    fig.colorbar(im, ax=axes[1])
    fig.tight_layout()
    return fig


def information_vs_bound(ax: plt.Axes, mc_lambdas: np.ndarray, mi: dict[float, np.ndarray],
                         lambdas: np.ndarray, bounds: dict[float, np.ndarray],
                         n_inputs: int) -> None:
    """Per σ: the Monte-Carlo mutual information ``mi[σ]`` ``(len(mc_lambdas),)`` (markers) and the
    bound ``bounds[σ]`` ``(len(lambdas),)`` (dashed, same colour); the ceiling log N in grey."""
    for s, values in mi.items():
        line, = ax.plot(mc_lambdas, values, marker="o", ms=3, label=f"I (Monte Carlo), σ = {s:g}")
        ax.plot(lambdas, bounds[s], ls="--", color=line.get_color(), label=f"bound, σ = {s:g}")
    ceiling = np.log(n_inputs)
    ax.axhline(ceiling, color="grey", lw=1)
    ax.text(0.02, ceiling * 1.05, f"log N = {ceiling:.2f}", fontsize=8)
    ax.set_ylim(0, ceiling * 1.6)
    ax.set_xlabel("λ")
    ax.set_ylabel("nats")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)


def noise_spread(ax: plt.Axes, sigmas: np.ndarray, values: Sequence[np.ndarray],
                 exact: float) -> None:
    """The noisy objective: mean ± std of each draw set ``values[k]`` ``(draws,)`` against
    ``sigmas`` (log x), with the noiseless value ``exact`` as a dashed line."""
    ax.errorbar(sigmas, [v.mean() for v in values], yerr=[v.std() for v in values],
                marker="o", ms=3, capsize=3,
                label=f"f(0.5 z + ε): mean ± std over {len(values[0])} draws")
    ax.axhline(exact, color="crimson", ls="--", label="f(0.5 z), no noise (NIB)")
    ax.set_xscale("log")
    ax.set_xlabel("σ")
    ax.set_ylabel("cosine")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


# --- figures of the results chapters -------------------------------------------------------------

def change_curves(long: pd.DataFrame, x: str, metrics: Sequence[str], xlabel: str,
                  ylabel: str, suptitle: str | None = None, dedupe: bool = False) -> plt.Figure:
    """One panel per metric: each source's ``change`` (see :func:`nibcore.book.reports.relative_to`)
    against column ``x``; ours (source ``ours…``) thick crimson, the paper's thin; a grey zero
    line. ``dedupe``: keep one row per ``x`` value within a source."""

    fig, flat = panels(len(metrics), COLUMN_IN / 2, 2.9)
    for ax, metric in zip(flat, metrics):
        for src, part in long[long.metric == metric].groupby("source", sort=False):
            if dedupe:
                part = part.drop_duplicates(x)
            part = part.sort_values(x)
            ours = src.startswith("ours")
            ax.plot(part[x], part["change"], marker="o", markersize=3, lw=2.5 if ours else 1,
                    color="crimson" if ours else None,
                    label="ours" if ours else src.replace("paper ", "paper: "))
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(METRIC_LABELS[metric], fontsize=9)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    flat[0].set_ylabel(ylabel)
    flat[-1].legend(fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=8)
    fig.tight_layout()
    return fig


def beta_curves(spread: pd.DataFrame, paper: pd.DataFrame, metrics: Sequence[str],
                suptitle: str | None = None) -> plt.Figure:
    """One panel per metric against β (log x): ours as mean ± sd over seeds (crimson error bars,
    ``spread`` from :func:`nibcore.book.reports.seed_spread`, left axis) and each of the paper's
    sources
    (``paper`` long frame with ``beta``) in grey on a twin right axis, with one joint legend."""

    fig, axes = panels(len(metrics), COLUMN_IN / 2, 3.0)
    for ax, metric in zip(axes, metrics):
        s = spread[spread.metric == metric].sort_values("beta")
        ax.errorbar(s["beta"], s["value"], yerr=s["sd_seeds"], color="crimson", marker="o",
                    markersize=3, capsize=2, label="ours (± sd over seeds)")
        ax.set_xscale("log")
        ax.set_xlabel("β")
        ax.set_title(METRIC_LABELS[metric], fontsize=9)
        ax.grid(alpha=0.3)
        twin = ax.twinx()
        for k, (src, part) in enumerate(paper[paper.metric == metric].groupby("source",
                                                                             sort=False)):
            part = part.sort_values("beta")
            twin.plot(part["beta"], part["value"], color=str(0.35 + 0.2 * k), lw=1,
                      ls=["-", "--", ":"][k % 3], label=src.replace("paper ", "paper: "))
        twin.tick_params(labelsize=8, colors="dimgrey")
        twin.set_ylabel("paper (right axis)", color="dimgrey")
        ax.set_ylabel("ours (left axis)", color="crimson")
    h1, l1 = axes[-1].get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    axes[-1].legend(h1 + h2, l1 + l2, fontsize=7, loc="best")
    if suptitle:
        fig.suptitle(suptitle, fontsize=8)
    fig.tight_layout()
    return fig


def method_bars(ax: plt.Axes, values: pd.Series, sem: pd.Series | None = None,
                title: str | None = None, highlight: str = "nib", rotation: float = 60,
                fontsize: float = 7, title_size: float = 8) -> None:
    """One bar per method (``values`` indexed by method keys, in drawing order) with ± ``sem``
    error bars; ``highlight`` crimson, the others blue; x labels are the display names."""

    ax.bar(range(len(values)), values, yerr=sem, capsize=2,
           color=["crimson" if k == highlight else "tab:blue" for k in values.index])
    ax.set_xticks(range(len(values)), [DISPLAY[k] for k in values.index], rotation=rotation,
                  fontsize=fontsize)
    if title:
        ax.set_title(title, fontsize=title_size)
    ax.grid(alpha=0.3, axis="y")


def n_words(ns: pd.Series) -> str:
    """The pairs behind a panel's bars (``ns`` indexed by method keys): ``"n=1000"`` when every
    bar has the same ``n``, else the most common one and the others by method, e.g.
    ``"n=1000 (RISE n=200)"``."""
    ns = ns.dropna().astype(int)
    if ns.empty:
        return "n unknown"
    counts = ns.value_counts()
    common = int(counts[counts == counts.max()].index.max())
    other = ", ".join(f"{DISPLAY.get(m, m)} n={k}" for m, k in ns.items() if k != common)
    return f"n={common}" + (f" ({other})" if other else "")


def results_bars(long: pd.DataFrame, sources: dict[str, str], metrics: Sequence[str],
                 methods: Sequence[str], n: int | None = None) -> plt.Figure:
    """A grid of :func:`method_bars`: one row per dataset (``sources`` maps its display name to
    its source label in ``long``), one column per metric; bars are means ± ``sem``. Each panel's
    title states the pairs behind its bars from ``long``'s ``n`` column (:func:`n_words`: bars
    with a different ``n`` are named); ``n`` is only for frames without that column."""

    fig, flat = panels(len(sources) * len(metrics), COLUMN_IN / 2, 2.9)
    cells = iter(flat)
    for name, source in sources.items():
        part = long[long.source == source]
        for ax, metric in zip(cells, metrics):
            m = part[part.metric == metric].set_index("method").reindex(methods)
            if "n" in m:
                words = n_words(m["n"])
            else:
                words = f"n={n}" if n is not None else "n unknown"
            method_bars(ax, m["value"], m["sem"], f"{METRIC_LABELS[metric]}\n{name}, {words}")
    fig.tight_layout()
    return fig


def speed_plot(ax: plt.Axes, speed: pd.DataFrame, paper_fps: pd.DataFrame,
               sources: dict[str, str], methods: Sequence[str]) -> None:
    """Pairs per second (log y) per method: ours as dots, one series per dataset (``sources`` maps
    its display name to its first-level key in ``speed``, whose ``fps_both`` column is drawn),
    the paper's as crosses, one per column of ``paper_fps`` (``paper FPS, <dataset>``)."""

    for name, source in sources.items():
        sp = speed.loc[source].reindex(methods)
        ax.scatter(range(len(sp)), sp["fps_both"], label=f"ours: {name}", zorder=3)
    for col in paper_fps.columns:
        p = paper_fps[col].reindex(methods)
        ax.scatter(range(len(p)), p, marker="x", label=col.replace("paper FPS, ", "paper: "))
    ax.set_yscale("log")
    ax.set_xticks(range(len(methods)), [DISPLAY[m] for m in methods], rotation=30)
    ax.set_ylabel("pairs per second (image + text)")
    ax.set_title(f"ours on {speed['hardware'].iloc[0]}; the paper's hardware is unstated",
                 fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def as_picture(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised image ``(3, H, W)`` (array or tensor) back to an RGB array ``(H, W, 3)`` in
    [0, 1] for display (``mean`` and ``std`` per channel, as the model normalised it)."""
    x = np.asarray(x, dtype=np.float32)
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    return np.clip(x * std + mean, 0, 1).transpose(1, 2, 0)


def masking_figure(image: Image.Image, maps: np.ndarray, titles: Sequence[str],
                   original: np.ndarray, masked: np.ndarray, conf: dict[str, np.ndarray],
                   mean: Sequence[float], std: Sequence[float]) -> plt.Figure:
    """What the image metrics score, one column per map plus the original: top row each map
    ``maps[k]`` ``(H, W)`` over ``image`` (titles ``titles[k]``), bottom row the model input
    ``original`` ``(3, H, W)`` and each masked input ``masked[k]`` ``(3, H, W)`` (normalised, shown
    with ``mean``/``std`` undone) titled with ``conf``'s ``s0``, ``s1``, ``drop``, ``increase``."""
    n = len(maps)
    fig, axes = plt.subplots(2, n + 1, figsize=(2.0 * (n + 1), 5.0), layout="constrained")
    picture(axes[0, 0], image, "original")
    axes[1, 0].imshow(as_picture(original, mean, std))
    axes[1, 0].set_title(f"s0 = {conf['s0'][0]:.3f}", fontsize=9)
    axes[1, 0].set_axis_off()
    for k in range(n):
        overlay(axes[0, k + 1], image, maps[k], titles[k], colorbar=False)
        axes[1, k + 1].imshow(as_picture(masked[k], mean, std))
        axes[1, k + 1].set_title(f"s1 = {conf['s1'][k]:.3f}\ndrop {conf['drop'][k]:.2f}"
                                 f"{' · incr' if conf['increase'][k] else ''}", fontsize=8)
        axes[1, k + 1].set_axis_off()
    fig.suptitle("top: each method's map; bottom: the image the metric scores (pixels × map)",
                 fontsize=10)
    return fig


#: the bars of :func:`passes_bars`: (column of the table, legend label)
PASS_BARS = (("paper forward", "paper: forward"), ("forward", "ours: forward calls"),
             ("forward_rows", "ours: forward rows"), ("paper backward", "paper: backward"),
             ("backward", "ours: backward calls"), ("backward_rows", "ours: backward rows"))


def passes_bars(ax: plt.Axes, table: pd.DataFrame) -> None:
    """Forward and backward passes per pair, one group of six bars per method (rows of ``table``,
    already display-named; columns as in :data:`PASS_BARS`), on a log scale with 0 drawn at 0.8."""
    x = np.arange(len(table))
    for k, (col, lab) in enumerate(PASS_BARS):
        ax.bar(x + (k - 2.5) * 0.13, table[col].clip(lower=0.8), 0.13, label=lab,
               color=plt.get_cmap("tab20c")(k if k < 3 else k + 1))
    ax.set_yscale("log")
    ax.set_xticks(x, table.index, rotation=20)
    ax.set_ylabel("passes per pair (log; 0 drawn at 0.8)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, axis="y")


def ground_truth_bars(board: pd.DataFrame, gt: pd.DataFrame,
                      specs: Sequence[tuple[str, float, str]]) -> plt.Figure:
    """One :func:`method_bars` panel per ``(metric, chance, title)`` of ``specs``: the methods in
    ``board``'s row order (from :func:`nibcore.book.reports.gt_leaderboard`), error bars the
    ``sem`` of
    the long frame ``gt``, a dashed line at the ``chance`` level (in %)."""
    fig, axes = panels(len(specs), COLUMN_IN / 2, 3.0)
    order = list(board.index)
    for ax, (col, chance, title) in zip(axes, specs):
        sem = gt[gt.metric == col].set_index("method").reindex(order)["sem"]
        method_bars(ax, board[col], sem, title, rotation=45, fontsize=8, title_size=9)
        ax.axhline(chance, color="black", ls="--", lw=1, label="chance")
        ax.set_ylabel("%")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def randomisation_curves(checks: pd.DataFrame, methods: Sequence[str],
                         n_blocks: dict[str, int]) -> plt.Figure:
    """The model-randomisation test, one panel per side of ``n_blocks`` (side -> its depth):
    per method the mean Spearman ρ with the trained model's map against the number of randomised
    top blocks (1 at 0 blocks; ``checks`` rows of kind ``randomised``), and dashed at the same
    colour the ρ between two different pairs' maps (kind ``other pair``), a reference level."""

    fig, axes = panels(len(n_blocks), COLUMN_IN, 3.4)
    colours = dict(zip(methods, plt.get_cmap("tab10").colors))
    for ax, (side, blocks) in zip(axes, n_blocks.items()):
        part = checks[checks.side == side]
        for m in methods:
            rand = part[(part.method == m) & (part.kind == "randomised")].groupby("top")["spearman"]
            ax.plot([0] + list(rand.mean().index), [1.0] + list(rand.mean().values), marker="o",
                    markersize=3, color=colours[m], label=DISPLAY[m], lw=2.5 if m == "nib" else 1.2)
            ref = part[(part.method == m) & (part.kind == "other pair")]["spearman"].mean()
            ax.axhline(ref, color=colours[m], ls="--", lw=0.7)
        ax.set_xlabel(f"randomised top blocks (of {blocks})")
        ax.set_ylabel("Spearman ρ with the trained model's map")
        ax.set_title(f"{side} side", fontsize=10)
        ax.set_ylim(-0.5, 1.05)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


# --- the explorer --------------------------------------------------------------------------------

def explained_pair(image: Image.Image, caption: str, scores: np.ndarray, method: str,
                   patches: np.ndarray | None = None) -> plt.Figure:
    """The explorer's view of one pair: left the picture (titled with ``caption``), right the
    image-side map ``scores`` ``(H, W)`` in [0, 1] over it — or, when ``patches`` ``(rows, cols)``
    is given, the signed per-patch scores (:func:`signed_patches`)."""
    fig, axes = plt.subplots(1, 2, figsize=(COLUMN_IN, 3.0))
    picture(axes[0], image, caption)
    if patches is not None:
        signed_patches(axes[1], image, patches, f"{method}, signed")
    else:
        overlay(axes[1], image, scores, f"{method}, image side")
    fig.tight_layout()
    return fig


def show() -> None:
    """Show the open figures now (inline in a notebook, or in a window); for the modules that do
    not import matplotlib themselves."""
    plt.show()


def cue_world_figure(cue_train: Sequence, control_train: Sequence, tests: Sequence
                     ) -> plt.Figure:
    """The cue world (:mod:`nibcore.world.cues`): training scenes of the cue model and of the
    control (captioned; the object's and the cue's colours under each), and the test kinds of
    one object with the object's (white) and the cue's (black) outline."""
    cols = max(len(cue_train), len(control_train), len(tests))
    fig, axes = plt.subplots(3, cols, figsize=(COLUMN_IN, COLUMN_IN * 3 / cols * 1.15),
                             squeeze=False)
    rows = (("cue model, training", cue_train), ("control, training", control_train),
            ("test", tests))
    for r, (label, scenes) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(scenes):
                ax.set_visible(False)
                continue
            s = scenes[c]
            picture(ax, s.image)
            if r == 2:
                ax.contour(s.object_mask, levels=[0.5], colors="white", linewidths=0.8)
                if s.cue_mask.any():
                    ax.contour(s.cue_mask, levels=[0.5], colors="black", linewidths=0.8)
                ax.set_title(f"{s.kind}: \"{s.caption}\"", fontsize=7)
            else:
                ax.set_title(f"\"{s.caption}\"\nobject {s.object_colour}, cue {s.cue_colour}",
                             fontsize=7)
        axes[r][0].text(-0.15, 0.5, label, rotation=90, va="center", ha="right",
                        transform=axes[r][0].transAxes, fontsize=8)
    fig.tight_layout()
    return fig


def interventions_figure(images: dict[str, Image.Image], cosines: pd.DataFrame,
                         caption: str) -> plt.Figure:
    """One scene and its interventions (``images``: name -> picture), each titled with the
    cosine with ``caption`` under every model (``cosines``: rows = the names, columns = the
    models)."""
    fig, axes = panels(len(images), 1.7, 2.1)
    for ax, (name, image) in zip(axes, images.items()):
        picture(ax, image)
        ax.set_title(name + "\n" + "\n".join(f"{m}: {cosines.loc[name, m]:.3f}"
                                              for m in cosines.columns), fontsize=7)
    fig.suptitle(f"cosine with \"{caption}\"", fontsize=9)
    fig.tight_layout()
    return fig
