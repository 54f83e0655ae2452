"""Tidy frames, ranks and generated prose for the results chapters: every sentence that states a
number or a verdict is produced here from computed values, so the prose cannot drift from the code.

* :func:`ours_label`, :func:`results_long`, :func:`paper_long`, :func:`beside` — one tidy
  *long* frame per source (``source, method, metric, value`` + setting columns), and one wide
  frame with the paper's rows (``"paper (ImageNet)"``) next to ours.
* :func:`ranks`, :func:`rank_sentences`, :func:`trend_sentences`, :func:`beta_sentences`,
  :func:`gt_agreement_sentence`, :func:`sanity_sentences` — generated sentences.
* :func:`speed` — frames per second per method; :func:`passes_table`,
  :func:`passes_comparison` — Table 8 from counted passes; :func:`protocol_view` — what a text
  protocol feeds the model, position by position.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ..columns import GROUND_TRUTH, labels, lower_is_better, side_of
from ..evaluation import fps
from ..metrics import text_perturbation
from ..models import ClipModel
from ..base import default_layer
from ..sweeps import PAPER_BLOCKS, highest_layer, layer_map
from .paper import (BOOK_ORDER, DISPLAY, GT_METRICS, METRIC_LABELS, PAPER_METRICS, PAPER_ORDER,
                    SHORT_METRICS)

def ours_label(model: ClipModel | str, dataset: str, n: int, seed: int, extra: str = "") -> str:
    """``"ours (mini, scenes, n=12, seed=0)"`` — the label of our rows in every comparison."""
    name = model.name if isinstance(model, ClipModel) else str(model)
    return f"ours ({name}, {dataset}, n={n}, seed={seed}{', ' + extra if extra else ''})"


def paper_label(dataset: str) -> str:
    return f"paper ({dataset})"


def _per_side_means(df: pd.DataFrame, by: Sequence[str], columns: dict[str, str]) -> pd.DataFrame:
    """Means of ``columns`` (our column -> output metric name), each over the rows of the side it
    belongs to (``img_*`` image rows, everything else text rows), grouped by ``by``."""
    parts = []
    for ours, metric in columns.items():
        if ours not in df:
            continue
        rows = df[df["side"] == side_of(ours)] if "side" in df else df
        g = rows.groupby(list(by), sort=False)[ours]
        stats = pd.DataFrame({"value": g.mean(), "sem": g.sem(), "n": g.count()}).reset_index()
        stats["metric"] = metric
        parts.append(stats)
    if not parts:
        return pd.DataFrame(columns=[*by, "metric", "value", "sem", "n"])
    return pd.concat(parts, ignore_index=True)


def results_long(df: pd.DataFrame, source: str, by: Sequence[str] = ("method",),
                 metrics: dict[str, str] | None = None, with_fps: bool = False) -> pd.DataFrame:
    """Our per-sample frame (from :func:`nibcore.evaluate`) as a long frame of means.

    Columns ``source, *by, metric, value, sem, n``. ``metrics``: our column -> metric name;
    default the paper's four (:data:`PAPER_METRICS`, inverted), named as the paper names them.
    ``with_fps``: add ``fps`` (pairs per second, image + text: see :func:`speed`) per method,
    with the source label naming the hardware (``"ours (...) on <hardware>"``).
    """
    metrics = metrics or {v: k for k, v in PAPER_METRICS.items()}
    out = _per_side_means(df, by, metrics)
    out.insert(0, "source", source)
    if with_fps:
        sp = speed(df).reset_index()
        sp = sp.assign(metric="fps", value=sp["fps_both"], sem=np.nan, n=sp["pairs"],
                       source=source + " on " + sp["hardware"])
        out = pd.concat([out, sp[["source", "method", "metric", "value", "sem", "n"]]],
                        ignore_index=True)
    return out


def paper_long(table: pd.DataFrame, by: Sequence[str] = ("method",),
               metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """A paper table (from :func:`paper_table`) as a long frame ``source, *by, metric, value``,
    one source per dataset (``"paper (ImageNet)"``; FPS rows say the paper's hardware is
    unstated). Accepts the tidy Table-2 layout
    (``dataset, metric, method, value``) and the wide layouts of Tables 3–7."""
    if {"metric", "value"} <= set(table.columns):
        long = table[["dataset", *by, "metric", "value"]].copy()
    else:
        cols = [c for c in (metrics or METRIC_LABELS) if c in table.columns]
        long = table.melt(id_vars=["dataset", *by], value_vars=cols, var_name="metric")
    if metrics is not None:
        long = long[long["metric"].isin(list(metrics))]
    long.insert(0, "source", long.pop("dataset").map(paper_label))
    fps = long["metric"] == "fps"
    long.loc[fps, "source"] = long.loc[fps, "source"] + " on unstated hardware"
    return long.reset_index(drop=True)


def beside(*frames: pd.DataFrame, index: Sequence[str] = ("metric", "source"),
           columns: str | Sequence[str] = "method", order: Sequence[str] | None = None
           ) -> pd.DataFrame:
    """Long frames (ours and the paper's) pivoted into one wide frame: by default one row per
    ``(metric, source)`` — the paper's datasets and ours next to each other for every metric —
    and one column per method (in ``order``; default :data:`BOOK_ORDER`, NIB first, so it stays
    in view on narrow pages). Missing cells: NaN."""
    long = pd.concat([f for f in frames if len(f)], ignore_index=True)
    wide = long.pivot_table(index=list(index), columns=columns, values="value", aggfunc="first",
                            sort=False)
    if columns == "method" or columns == ["method"]:
        present = [m for m in (order or BOOK_ORDER) if m in wide.columns]
        wide = wide[present + [c for c in wide.columns if c not in present]]
    if "metric" in index:  # metrics in a fixed order, sources in order of appearance
        metric_order = [m for m in METRIC_LABELS if m in set(long["metric"])] + \
            [m for m in dict.fromkeys(long["metric"]) if m not in METRIC_LABELS]
        sources = list(dict.fromkeys(long["source"])) if "source" in long else []
        wide = wide.reset_index()
        wide["_m"] = wide["metric"].map({m: i for i, m in enumerate(metric_order)})
        if "source" in wide:
            wide["_s"] = wide["source"].map({s: i for i, s in enumerate(sources)})
        wide = wide.sort_values([c for c in ("_m", "_s") if c in wide], kind="stable")
        wide = wide.drop(columns=[c for c in ("_m", "_s") if c in wide]).set_index(list(index))
    wide.columns.name = columns if isinstance(columns, str) else None
    return wide


def display_names(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with method keys and metric names replaced by their display names (for showing
    a table; keep the keys for computing)."""
    out = frame.rename(columns=lambda c: DISPLAY.get(c, c))
    if isinstance(out.index, pd.MultiIndex):
        out.index = pd.MultiIndex.from_tuples(
            [tuple(METRIC_LABELS.get(v, DISPLAY.get(v, v)) if isinstance(v, str) else v
                   for v in t) for t in out.index], names=out.index.names)
    else:
        out = out.rename(index=lambda v: METRIC_LABELS.get(v, DISPLAY.get(v, v))
                         if isinstance(v, str) else v)
    return out


def short_source(source: str, labels: dict[str, str]) -> str:
    """A short name for a source: ``ours:<dataset>`` where it starts with one of our ``labels``
    (dataset -> label), else the paper's dataset (Conceptual Captions as CC)."""
    for name, lab in labels.items():
        if source.startswith(lab):
            return f"ours:{name}"
    return paper_dataset(source).replace("Conceptual Captions", "CC")


def rank_grid(long: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """The rank of each method (rows, in the paper's order) per metric and source (columns
    ``"<short metric>\\n<short source>"``, metric-major, sources in order of appearance)."""
    r = ranks(long)
    r["column"] = r["metric"].map(SHORT_METRICS) + "\n" + r["source"].map(
        lambda s: short_source(s, labels))
    sources = list(dict.fromkeys(r["source"].map(lambda s: short_source(s, labels))))
    present = set(r["column"])
    columns = [f"{SHORT_METRICS[m]}\n{s}" for m in SHORT_METRICS for s in sources
               if f"{SHORT_METRICS[m]}\n{s}" in present]
    grid = r.pivot_table(index="method", columns="column", values="rank")[columns]
    return grid.reindex([m for m in PAPER_ORDER if m in grid.index])


def ranks(long: pd.DataFrame, by: Sequence[str] = ("source", "metric")) -> pd.DataFrame:
    """The long frame with a ``rank`` column: 1 = best among the methods of each ``by`` group
    (low is best for drops, high otherwise; ties share the best rank) and ``of`` (methods with a
    value in the group)."""
    long = long.dropna(subset=["value"]).copy()
    parts = []
    for _, g in long.groupby(list(by), sort=False):
        asc = lower_is_better(str(g["metric"].iloc[0]))
        g = g.assign(rank=g["value"].rank(ascending=asc, method="min").astype(int), of=len(g))
        parts.append(g)
    return pd.concat(parts) if parts else long.assign(rank=[], of=[])


def ordinal(k: int) -> str:
    """1 -> '1st', 2 -> '2nd', 11 -> '11th'."""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def rank_sentences(ours: pd.DataFrame, paper: pd.DataFrame, method: str = "nib",
                   metrics: Iterable[str] | None = None) -> list[str]:
    """One sentence per metric: where ``method`` ranks in our rows and in each of the paper's
    datasets, e.g. "Image Conf. Drop ↓: NIB ranks 3rd of 8 here (ours (...)); the paper ranks it
    1st of 8 on Conceptual Captions, 1st of 8 on ImageNet and 1st of 8 on Flickr8k."
    Computed from the frames, so it is true for whatever numbers a build produced."""
    r_ours, r_paper = ranks(ours), ranks(paper)
    metrics = list(metrics) if metrics is not None else \
        [m for m in METRIC_LABELS if m in set(r_ours["metric"])]
    name = DISPLAY.get(method, method)
    out = []
    for metric in metrics:
        mine = r_ours[(r_ours["metric"] == metric) & (r_ours["method"] == method)]
        theirs = r_paper[(r_paper["metric"] == metric) & (r_paper["method"] == method)]
        if mine.empty:
            continue
        here = "; ".join(f"{ordinal(int(r['rank']))} of {int(r['of'])} in {r['source']}"
                         for _, r in mine.iterrows())
        sentence = f"{METRIC_LABELS.get(metric, metric)}: {name} ranks {here}"
        if not theirs.empty:
            places = [f"{ordinal(int(r['rank']))} of {int(r['of'])} on "
                      f"{paper_dataset(r['source'])}" for _, r in theirs.iterrows()]
            joined = places[0] if len(places) == 1 else \
                ", ".join(places[:-1]) + " and " + places[-1]
            agree = sorted(set(theirs["rank"])) == sorted(set(mine["rank"]))
            sentence += f"; the paper ranks it {joined}" + (" — the same place." if agree and len(
                set(mine["rank"])) == 1 else ".")
        else:
            sentence += "."
        out.append(sentence)
    return out


def paper_dataset(source: str) -> str:
    """``"paper (ImageNet) on unstated hardware"`` -> ``"ImageNet"``."""
    match = re.match(r"paper \((.*?)\)", source)
    return match.group(1) if match else source


def rank_agreement(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation between our order of the methods and the paper's, per metric (rows)
    and paper source (columns), over the methods both have; +1 = the same order. One of our
    sources is expected (the first is used)."""
    out = {}
    mine_src = ours["source"].iloc[0]
    for metric in dict.fromkeys(paper["metric"]):
        a = ours[(ours["metric"] == metric)].set_index("method")["value"]
        if a.empty:
            continue
        for src, part in paper[paper["metric"] == metric].groupby("source", sort=False):
            b = part.set_index("method")["value"]
            common = a.index.intersection(b.index)
            rho = (a[common].rank().corr(b[common].rank()) if len(common) >= 3 else np.nan)
            out.setdefault(metric, {})[paper_dataset(src)] = rho
    frame = pd.DataFrame(out).T
    frame.index.name = "metric"
    frame.attrs["ours"] = mine_src
    return frame


def winners(long: pd.DataFrame) -> pd.DataFrame:
    """Per ``(source, metric)``: the best method(s) and their value."""
    r = ranks(long)
    best = r[r["rank"] == 1]
    return (best.groupby(["source", "metric"], sort=False)
            .agg(best=("method", lambda s: ", ".join(DISPLAY.get(m, m) for m in s)),
                 value=("value", "first")).reset_index())


def speed(df: pd.DataFrame) -> pd.DataFrame:
    """Frames per second per method from :func:`nibcore.evaluate` rows, wide: ``fps_image`` /
    ``fps_text`` (from :func:`nibcore.evaluation.fps`, the one per-side speed table),
    ``fps_both`` = pairs per second when each pair gets both maps
    (``1 / (1/fps_image + 1/fps_text)``), ``pairs``, ``batch`` (pairs per timed call) and the
    ``hardware`` the timings were taken on. The book's published speeds come from a separate
    timed subset instead (:func:`timing_speed`)."""
    per = fps(df).reset_index()
    wide = per.pivot_table(index="method", columns="side", values="fps", sort=False)
    out = pd.DataFrame({"fps_image": wide.get("image"), "fps_text": wide.get("text")})
    out["fps_both"] = 1.0 / (1.0 / out["fps_image"] + 1.0 / out["fps_text"])
    g = per.groupby("method", sort=False)
    out["pairs"] = g["pairs"].max()
    out["batch"] = g["batch"].mean()
    out["hardware"] = g["hardware"].first()
    return out


def sweep_summary(df: pd.DataFrame, param: str, source: str,
                  metrics: dict[str, str] | None = None) -> pd.DataFrame:
    """Long frame of a sweep: means per value of ``param`` (``source, <param>, metric, value,
    sem, n``); ``metrics`` as in :func:`results_long`."""
    return results_long(df, source, by=(param,), metrics=metrics)


def seed_spread(df: pd.DataFrame, param: str, metrics: dict[str, str] | None = None
                ) -> pd.DataFrame:
    """For a sweep run with several method seeds: per ``param`` value and metric, the mean over
    seeds of the per-seed means (``value``), their standard deviation across seeds (``sd_seeds``,
    the method's own randomness on fixed pairs) and the ``seeds`` count."""
    long = results_long(df, "_", by=(param, "method_seed"), metrics=metrics)
    g = long.groupby([param, "metric"], sort=False)["value"]
    return pd.DataFrame({"value": g.mean(), "sd_seeds": g.std(ddof=1),
                         "seeds": g.count()}).reset_index()


def seed_means(df: pd.DataFrame, param: str) -> pd.DataFrame:
    """The rows of a sweep run with several method seeds (a ``method_seed`` column), averaged over
    the seeds of each pair: one row per ``param`` value × method × side × pair — the unit an
    interval resamples (the pairs are a random sample; the seeds are the method's own noise on
    each pair, not further pairs). ``degenerate`` becomes 1 when any seed's map was."""
    keys = [param, "method", "side", "id"]
    numeric = [c for c in df.columns if c not in keys and c != "method_seed"
               and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    out = df.groupby(keys, sort=False)[numeric].mean()
    if "degenerate" in df:
        out["degenerate"] = df.assign(degenerate=df["degenerate"].fillna(0).astype(float)
                                      ).groupby(keys, sort=False)["degenerate"].max()
    return out.reset_index()


def trend(long: pd.DataFrame, x: str, metric: str, source: str | None = None) -> float:
    """Spearman rank correlation of ``metric`` with ``x`` within one source (+1: the metric grows
    with ``x`` monotonically, −1: shrinks); NaN with fewer than 3 points or a constant column."""
    part = long[long["metric"] == metric]
    if source is not None:
        part = part[part["source"] == source]
    part = part.dropna(subset=["value"])
    if len(part) < 3 or part["value"].nunique() < 2 or part[x].nunique() < 2:
        return float("nan")
    return float(part[x].rank().corr(part["value"].rank()))


def describe_trend(rho: float) -> str:
    """Words for a Spearman correlation of a metric with a swept parameter."""
    if not np.isfinite(rho):
        return "shows no measurable trend"
    if rho >= 0.8:
        return f"rises steadily (ρ = {rho:+.2f})"
    if rho >= 0.4:
        return f"tends to rise (ρ = {rho:+.2f})"
    if rho > -0.4:
        return f"shows no clear trend (ρ = {rho:+.2f})"
    if rho > -0.8:
        return f"tends to fall (ρ = {rho:+.2f})"
    return f"falls steadily (ρ = {rho:+.2f})"


def relative_to(long: pd.DataFrame, x: str, ref: Any) -> pd.DataFrame:
    """``long`` with a column ``change``: each ``value`` minus the value at ``x == ref`` of the same
    ``(source, metric)`` (NaN where a source has no row at ``ref``)."""
    base = long[long[x] == ref].set_index(["source", "metric"])["value"]
    return long.assign(change=long["value"] - long.set_index(["source", "metric"]).index.map(base))


def layer_depth(long: pd.DataFrame, mapping: pd.DataFrame,
                paper_blocks: int = PAPER_BLOCKS) -> pd.DataFrame:
    """``long`` (with ``paper_layer``) with a column ``depth``: the relative depth of the block
    actually used — for our rows (source ``ours…``) the mapped block of the metric's tower over
    the tower's depth (``mapping`` from :func:`layer_map`), for the paper's ``layer / 12``."""
    depth = {("image", l): b / mapping.attrs["image_blocks"]
             for l, b in zip(mapping.paper_layer, mapping.image_layer)}
    depth.update({("text", l): b / mapping.attrs["text_blocks"]
                  for l, b in zip(mapping.paper_layer, mapping.text_layer)})
    sides = long["metric"].map(side_of)
    ours = long["source"].str.startswith("ours")
    return long.assign(depth=[depth[(side, l)] if o else l / paper_blocks
                              for side, l, o in zip(sides, long["paper_layer"], ours)])


def layer_words(mapping: pd.DataFrame, layer: int) -> str:
    """Where the paper's ``layer`` lands on each tower, from ``mapping``
    (:func:`nibcore.sweeps.layer_map`, i.e. :func:`nibcore.sweeps.paper_layer`): e.g. ``"block 4
    of 6 on the image tower and block 2 of 4 on the text tower"``."""
    row = mapping.set_index("paper_layer").loc[layer]
    return " and ".join(f"block {int(row[f'{side}_layer'])} of {mapping.attrs[f'{side}_blocks']} "
                        f"on the {side} tower" for side in ("image", "text"))


def _and(items: Sequence[Any]) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def layer_map_sentences(model: ClipModel, mapping: pd.DataFrame, paper_default: int = 9) -> str:
    """Markdown about ``mapping`` (:func:`nibcore.sweeps.layer_map` of ``model``): where the
    paper's default layer lands and whether that is nibcore's default layer on each tower, and,
    per tower, the paper's layers that share a block — which a layer sweep on that tower cannot
    separate (their rows are the same rows, shown once per paper layer)."""
    at_default = layer_map(model, [paper_default])
    same = [side for side in ("image", "text")
            if at_default[f"{side}_layer"].item() == default_layer(model.tower(side))]
    verdict = ("nibcore's default layer on both towers" if len(same) == 2 else
               f"nibcore's default layer on the {same[0]} tower only" if same else
               "nibcore's default layer on neither tower")
    lines = [f"The paper's default layer {paper_default} lands on "
             f"{layer_words(at_default, paper_default)}: {verdict} "
             f"(`nibcore.attribution.default_layer`)."]
    for side in ("image", "text"):
        blocks = mapping.attrs[f"{side}_blocks"]
        groups = mapping.groupby(f"{side}_layer", sort=True)["paper_layer"].apply(list)
        shared = {int(b): ls for b, ls in groups.items() if len(ls) > 1}
        if not shared:
            lines.append(f"On the {side} tower ({blocks} blocks) every paper layer of the sweep "
                         "has a block of its own.")
            continue
        parts = [f"{_and(ls)} {'share ' if i == 0 else ''}block {b}"
                 + (f" (the highest the rule allows, {blocks - b} blocks below the top: "
                    "`nibcore.attribution.MIN_BLOCKS_ABOVE`)" if b == highest_layer(blocks)
                    else "")
                 for i, (b, ls) in enumerate(shared.items())]
        lines.append(f"On the {side} tower ({blocks} blocks) the paper's layers "
                     f"{'; '.join(parts)}. This sweep cannot separate the paper's layers that "
                     "share a block: they are the same rows, shown once per paper layer.")
    return "\n".join(f"* {line}" for line in lines)


def trend_sentences(long: pd.DataFrame, x: str, what: str, metrics: Sequence[str]) -> str:
    """A Markdown bullet per metric: how it moves with ``x`` here (our source, ``ours…``) and in
    each of the paper's sources (``paper…``), and at which ``x`` each source is best."""
    lines = []
    for metric in metrics:
        srcs = list(dict.fromkeys(long[long.metric == metric]["source"]))
        mine = [s for s in srcs if s.startswith("ours")]
        theirs = [s for s in srcs if s.startswith("paper")]
        words = describe_trend(trend(long, x, metric, mine[0]))
        paper_words = "; ".join(
            f"{paper_dataset(s)}: {describe_trend(trend(long, x, metric, s))}" for s in theirs)
        part = long[long.metric == metric].reset_index(drop=True)
        r = ranks(part.assign(method=part[x].values))
        best_ours = r[(r.source == mine[0]) & (r["rank"] == 1)][x].tolist()
        best_paper = {paper_dataset(s): r[(r.source == s) & (r["rank"] == 1)][x].tolist()
                      for s in theirs}
        lines.append(
            f"* **{METRIC_LABELS[metric]}** — here it {words} with {what}, best at "
            f"{best_ours}. In the paper: {paper_words}; best at "
            + ", ".join(f"{v} on {k}" for k, v in best_paper.items()) + ".")
    return "\n".join(lines)


def beta_sentences(spread: pd.DataFrame, ours: pd.DataFrame, paper: pd.DataFrame,
                   metrics: Sequence[str], per_pair: pd.DataFrame | None = None,
                   seed: int = 0) -> str:
    """A Markdown bullet per metric of a β sweep: its trend with β here (``ours``), its range
    over the grid against the median spread across seeds (``spread`` from :func:`seed_spread`),
    and its trend in each of the paper's sources (``paper``). With ``per_pair``
    (:func:`seed_means`), also the change from the smallest to the largest β with its paired
    bootstrap interval over the pairs, and whether it is distinguishable from no change."""
    from ..stats import SAME, fmt, paired

    lines = []
    for metric in metrics:
        s = spread[spread.metric == metric].sort_values("beta")
        rho = trend(ours, "beta", metric)
        paper_words = "; ".join(
            f"{paper_dataset(src)} {describe_trend(trend(paper, 'beta', metric, src))}"
            for src in dict.fromkeys(paper[paper.metric == metric]["source"]))
        total = s["value"].max() - s["value"].min()
        noise = s["sd_seeds"].median()
        versus = (f"{total / noise:.1f} times the median spread across seeds at one β "
                  f"({noise:.3g})" if noise > 0 else "while the seeds agree exactly at most βs")
        change = ""
        if per_pair is not None:
            col = PAPER_METRICS[metric]
            part = per_pair[per_pair["side"] == side_of(col)]
            low, high = part["beta"].min(), part["beta"].max()
            a = part[part["beta"] == high].set_index("id")[col]
            b = part[part["beta"] == low].set_index("id")[col]
            common = a.index.intersection(b.index)
            p = paired(a[common], b[common], seed=seed)  # its verdict: does 0 lie outside?
            change = (f" From β = {low:g} to β = {high:g} the mean changes by "
                      f"{fmt(p.diff, p.low, p.high)} (paired bootstrap over n = {p.n} pairs): "
                      + ("not distinguishable from no change at 95 %." if p.verdict == SAME
                         else "a change at 95 %."))
        lines.append(
            f"* **{METRIC_LABELS[metric]}** — here it {describe_trend(rho)} with β; "
            f"its range over the grid is {total:.3g}, {versus}.{change} "
            f"In the paper: {paper_words}.")
    return "\n".join(lines)


def gt_leaderboard(gt: pd.DataFrame) -> pd.DataFrame:
    """Methods (rows) × ground-truth metrics (columns, :data:`GT_METRICS` order) from the long
    frame ``gt``, plus ``mean rank`` over every scored column (all but ``mask_area``, the chance
    level; higher is better, ties share the best rank), sorted by it."""
    board = gt.pivot_table(index="method", columns="metric", values="value", sort=False)
    board = board[[c for c in GT_METRICS if c in board.columns]]
    scored = [c for c in board.columns if c != "mask_area"]
    board["mean rank"] = board[scored].rank(ascending=False, method="min").mean(axis=1)
    return board.sort_values("mean rank")


def gt_agreement_sentence(conf: pd.DataFrame, board: pd.DataFrame, method: str = "nib") -> str:
    """Markdown: the rank correlation between the order by image Confidence Drop (``conf``, a long
    frame of ``img_conf_drop``) and the orders by pointing game and energy in mask (``board``
    from :func:`gt_leaderboard`), the best method by each, and ``method``'s places."""
    both = conf.set_index("method")["value"].to_frame("img_conf_drop").join(
        board[["pointing", "energy"]])
    rho_point = both["img_conf_drop"].rank().corr(both["pointing"].rank(ascending=False))
    rho_energy = both["img_conf_drop"].rank().corr(both["energy"].rank(ascending=False))
    best_conf = both["img_conf_drop"].idxmin()
    best_point = board["pointing"].idxmax()
    place = {c: ordinal(int(board[c].rank(ascending=False, method="min")[method]))
             for c in ("pointing", "text_gt")}
    return (
        f"The rank correlation between the order by image Confidence Drop (low = good) and the "
        f"order by pointing game (high = good) is ρ = {rho_point:+.2f}, by energy in mask "
        f"ρ = {rho_energy:+.2f} (+1: the two metrics order the methods identically). The best "
        f"method by Confidence Drop is {DISPLAY[best_conf]}, by pointing game "
        f"{DISPLAY[best_point]}; {DISPLAY[method]} ranks {place['pointing']} on pointing and "
        f"{place['text_gt']} on the text ground truth, "
        f"{ordinal(list(board.index).index(method) + 1)} of {len(board)} by mean rank.")


def sanity_sentences(checks: pd.DataFrame, n_blocks: dict[str, int], threshold: float = 0.5,
                     method: str = "nib", seed: int = 0) -> str:
    """A Markdown bullet per side of the model-randomisation test (``checks``: the rows of
    :func:`nibcore.sanity.randomisation_report`), with every block of the tower randomised: which
    methods' maps still correlate above ``threshold`` with the trained model's (the 95 % interval
    over pairs above it), which fall below it (interval below), which the pairs cannot place, and
    ``method``'s ρ — every ρ with its interval and n."""
    from ..stats import interval

    lines = []
    for side, blocks in n_blocks.items():
        part = checks[(checks.side == side) & (checks.kind == "randomised")
                      & (checks.top == blocks)]
        cis = {m: interval(g["spearman"].dropna().to_numpy(), seed=seed)
               for m, g in part.groupby("method", sort=False) if g["spearman"].notna().any()}
        above = sorted((m for m, c in cis.items() if c.low > threshold),
                       key=lambda m: -cis[m].value)
        below = sorted((m for m, c in cis.items() if c.high < threshold),
                       key=lambda m: cis[m].value)
        unsure = [m for m in cis if m not in above and m not in below]

        def names(ms):
            return ", ".join(f"{DISPLAY[m]} (ρ = {cis[m]})" for m in ms)

        n = int(part["id"].nunique())
        words = [f"still above {threshold} — {names(above)}" if above
                 else f"no method's map stays above {threshold}"]
        words.append(f"below it — {names(below)}" if below else "none falls below it")
        if unsure:
            words.append(f"not distinguishable from {threshold} at 95 % — {names(unsure)}")
        own = f" {DISPLAY[method]}: ρ = {cis[method]}." if method in cis else ""
        lines.append(f"* **{side} side**, all {blocks} blocks randomised (n = {n} pairs): "
                     + "; ".join(words) + "." + own)
    return "\n".join(lines)


def protocol_view(model: ClipModel, caption: str, scores: np.ndarray, protocol: str
                  ) -> pd.DataFrame:
    """What a text protocol feeds the model for ``s1``, position by position (for showing).

    ``scores``: the caption's text map over SOT..EOT (``Attribution.scores``). Rows: the
    positions up to the last non-padding one of either input; columns ``token0`` / ``token1``
    (the token at that position in the ``s0`` / ``s1`` input), ``scale1`` (the factor on its
    token embedding in the ``s1`` input), ``pooled`` (the position CLIP's argmax pooling reads:
    the largest id).
    """
    ids = model.tokenize([caption])[0].cpu()
    pert = text_perturbation(ids, scores, protocol)
    last = max(int((pert.ids0 != 0).nonzero().max()), int((pert.ids1 != 0).nonzero().max())) + 1
    decoder = getattr(model.tokenizer, "decoder", {})

    def word(i: int) -> str:
        return decoder.get(i, str(i)).replace("</w>", "") if decoder else str(i)

    rows = []
    for pos in range(last):
        rows.append(dict(position=pos, token0=word(int(pert.ids0[pos])),
                         token1=word(int(pert.ids1[pos])), id1=int(pert.ids1[pos]),
                         scale1=float(pert.scale1[pos]),
                         pooled="s0 and s1" if pos == int(pert.ids0.argmax()) == int(
                             pert.ids1.argmax()) else ("s0" if pos == int(pert.ids0.argmax())
                                                       else ("s1" if pos == int(pert.ids1.argmax())
                                                             else ""))))
    return pd.DataFrame(rows).set_index("position")


def passes_table(df: pd.DataFrame) -> pd.DataFrame:
    """Counted passes per pair from :func:`nibcore.evaluate` rows (taken with ``batch_size=1``
    they are per pair exactly): one row per method × side with ``forward``, ``backward`` (calls)
    and ``forward_rows``, ``backward_rows`` (inputs those calls carried)."""
    cols = {"fwd": "forward", "bwd": "backward", "fwd_rows": "forward_rows",
            "bwd_rows": "backward_rows"}
    per_pair = df.assign(**{v: df[k] / df["batch"] for k, v in cols.items()})
    out = per_pair.groupby(["method", "side"], sort=False)[list(cols.values())].mean()
    return out


def passes_comparison(ours: pd.DataFrame, paper: pd.DataFrame, side: str = "image"
                      ) -> pd.DataFrame:
    """The paper's Table 8 beside our counted passes on one ``side`` (from
    :func:`passes_table`), one row per method in the paper's order, with ``agreement``: which of
    our two ways of counting (``calls``, ``rows``) gives the paper's forward *and* backward numbers
    (``"calls"``, ``"rows"``, ``"calls and rows"`` or ``"neither"``)."""
    mine = ours.xs(side, level="side")
    theirs = paper.set_index("method")[["forward", "backward"]]
    out = theirs.add_prefix("paper ").join(mine, how="outer")
    out = out.reindex([m for m in PAPER_ORDER if m in out.index] +
                      [m for m in out.index if m not in PAPER_ORDER])

    def agreement(r) -> str:
        calls = r["forward"] == r["paper forward"] and r["backward"] == r["paper backward"]
        rows = r["forward_rows"] == r["paper forward"] and r["backward_rows"] == r["paper backward"]
        return {(True, True): "calls and rows", (True, False): "calls",
                (False, True): "rows"}.get((bool(calls), bool(rows)), "neither")

    out["agreement"] = out.apply(agreement, axis=1)
    return out


# --- uncertainty: intervals, paired verdicts, findings ----------------------------------------

#: The main metrics of the results chapters: evaluation column -> label (from the registry).
MAIN_METRICS = labels(["img_conf_drop", "img_conf_incr", "img_deletion", "img_insertion",
                       "img_deletion_rise", "img_insertion_rise", "txt_conf_drop_paper",
                       "txt_conf_incr_paper", "pointing", "energy"])
#: Labels of the ground-truth metrics.
GT_LABELS = labels(GROUND_TRUTH)


def smoke_label(label: str, smoke: bool) -> str:
    """``label`` marked as a smoke run (a tiny live sample whose numbers mean nothing); the
    mark is appended, so a label still starts with ``ours``."""
    return f"{label} — SMOKE RUN, numbers mean nothing" if smoke else label


def cell_intervals(df: pd.DataFrame, metrics: dict[str, str] | Sequence[str],
                   methods: Sequence[str] | None = None, by: Sequence[str] = ("method",),
                   seed: int = 0) -> pd.DataFrame:
    """One row per cell (``by`` values × metric column): ``value`` (the mean), its 95 % interval
    ``low`` / ``high`` (Wilson for 0/100 columns, seeded bootstrap otherwise), ``n`` (pairs) and
    ``degenerate`` (pairs whose map was degenerate on that side: constant or non-finite)."""
    from ..stats import interval

    cols = list(metrics)
    rows = []
    for col in cols:
        side = side_of(col)
        part = df[df["side"] == side] if "side" in df else df
        if col not in part:
            continue
        for key, g in part.groupby(list(by), sort=False):
            key = key if isinstance(key, tuple) else (key,)
            if methods is not None and "method" in by and key[list(by).index("method")] \
                    not in methods:
                continue
            vals = g[col].dropna().to_numpy(dtype=float)
            if len(vals) == 0:
                continue
            iv = interval(vals, seed=seed)
            deg = int(g["degenerate"].fillna(0).sum()) if "degenerate" in g else 0
            rows.append({**dict(zip(by, key)), "metric": col, "side": side, "value": iv.value,
                         "low": iv.low, "high": iv.high, "n": iv.n, "how": iv.how,
                         "degenerate": deg, "missing": int(g[col].isna().sum())})
    return pd.DataFrame(rows)


def interval_table(cells: pd.DataFrame, labels: dict[str, str] | None = None,
                   columns: str = "method", order: Sequence[str] | None = None,
                   counts: bool = True) -> pd.DataFrame:
    """:func:`cell_intervals` as a table of strings ``"45.3 [43.0, 47.6]"`` (rounded to what each
    interval supports), one row per metric and one column per ``columns`` value; with
    ``counts``, rows ``n (image)`` / ``n (text)`` and ``degenerate maps (image)`` /
    ``(text)`` give each cell's pairs and how many of them had a degenerate map."""
    from ..stats import fmt

    labels = labels or {**MAIN_METRICS, **GT_LABELS}
    c = cells.assign(text=[fmt(v, lo, hi) for v, lo, hi in
                           zip(cells["value"], cells["low"], cells["high"])])
    wide = c.pivot_table(index="metric", columns=columns, values="text", aggfunc="first",
                         sort=False)
    if counts:
        for what, name in (("n", "n"), ("degenerate", "degenerate maps")):
            per = c.groupby(["side", columns], sort=False)[what].first().unstack(columns)
            for side in per.index:
                wide.loc[f"{name} ({side})"] = per.loc[side].map(
                    lambda v: "" if pd.isna(v) else str(int(v)))
    order = [m for m in (order or BOOK_ORDER) if m in wide.columns] if columns == "method" \
        else list(wide.columns)
    wide = wide[order + [m for m in wide.columns if m not in order]]
    wide = wide.rename(index=lambda v: labels.get(v, v))
    wide = wide.rename(columns=lambda m: DISPLAY.get(m, m))
    wide.columns.name = None
    return wide.fillna("")


def paired_verdicts(df: pd.DataFrame, metrics: Sequence[str], method: str = "nib",
                    baselines: Sequence[str] | None = None, seed: int = 0) -> pd.DataFrame:
    """``method`` against each baseline, per metric, on the pairs both have (matched by pair id
    on the metric's side): ``diff`` = mean(method − baseline), its paired bootstrap interval
    ``low`` / ``high``, ``n``, Wilcoxon's ``p`` and the ``verdict`` ("better", "worse",
    "not distinguishable at 95 %"; the metric's direction decides which sign is better)."""
    from ..stats import paired

    baselines = [m for m in (baselines or BOOK_ORDER) if m != method and m in set(df["method"])]
    rows = []
    for col in metrics:
        side = side_of(col)
        part = df[(df["side"] == side)] if "side" in df else df
        if col not in part:
            continue
        mine = part[part["method"] == method].set_index("id")[col].dropna()
        for b in baselines:
            theirs = part[part["method"] == b].set_index("id")[col].dropna()
            common = mine.index.intersection(theirs.index)
            if len(common) < 2:
                continue
            r = paired(mine[common].to_numpy(float), theirs[common].to_numpy(float),
                       lower_is_better=lower_is_better(col), seed=seed)
            rows.append(dict(metric=col, side=side, baseline=b, n=r.n, diff=r.diff, low=r.low,
                             high=r.high, p=r.p_wilcoxon, verdict=r.verdict))
    return pd.DataFrame(rows)


def verdict_table(verdicts: pd.DataFrame, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """:func:`paired_verdicts` as strings ``"better: −3.1 [−3.6, −2.6] (n=1000)"``, one row per
    metric, one column per baseline; "not distinguishable at 95 %" is written ``n.d.`` (the
    columns' name says so), which keeps the table within a 1280 px page's column."""
    from ..stats import fmt

    labels = labels or {**MAIN_METRICS, **GT_LABELS}
    short = {"not distinguishable at 95 %": "n.d."}
    v = verdicts.assign(text=[f"{short.get(r.verdict, r.verdict)}: "
                              f"{fmt(r.diff, r.low, r.high, r.n)}"
                              for r in verdicts.itertuples()])
    wide = v.pivot_table(index="metric", columns="baseline", values="text", aggfunc="first",
                         sort=False)
    wide = wide[[b for b in BOOK_ORDER if b in wide.columns]]
    wide = wide.rename(index=lambda m: labels.get(m, m), columns=lambda b: DISPLAY.get(b, b))
    wide.columns.name = "NIB − baseline (n.d.: not distinguishable at 95 %)"
    return wide.fillna("")


def verdict_sentences(verdicts: pd.DataFrame, method: str = "nib",
                      labels: dict[str, str] | None = None) -> list[str]:
    """One sentence per metric, from the paired tests: against which baselines ``method`` is
    better, worse, or not distinguishable at 95 %, with the differences and intervals."""
    from ..stats import SAME, fmt

    labels = labels or {**MAIN_METRICS, **GT_LABELS}
    name = DISPLAY.get(method, method)
    out = []
    for col, g in verdicts.groupby("metric", sort=False):
        parts = []
        for verdict, words in (("better", "better than"), ("worse", "worse than"),
                               (SAME, "not distinguishable at 95 % from")):
            sub = g[g["verdict"] == verdict]
            if len(sub):
                items = [f"{DISPLAY.get(r.baseline, r.baseline)} "
                         f"({fmt(r.diff, r.low, r.high)}, n={r.n})" for r in sub.itertuples()]
                parts.append(f"{words} " + ", ".join(items))
        out.append(f"**{labels.get(col, col)}** — {name} is " + "; ".join(parts) + ".")
    return out


def findings_box(verdicts: pd.DataFrame, cells: pd.DataFrame, method: str = "nib",
                 smoke: bool = False, title: str = "What we found") -> str:
    """HTML of a "what we found" box generated from the paired verdicts and the cell intervals:
    per metric, how many baselines ``method`` beats / loses to / cannot be told apart from at
    95 %, its own value with interval, and the best method by mean. A smoke run says so."""
    from ..stats import fmt

    import html as _html

    name = DISPLAY.get(method, method)
    items = []
    for col, g in verdicts.groupby("metric", sort=False):
        counts = g["verdict"].value_counts()
        mine = cells[(cells["metric"] == col) & (cells["method"] == method)]
        own = (f"{fmt(mine['value'].iloc[0], mine['low'].iloc[0], mine['high'].iloc[0])} "
               f"(n={int(mine['n'].iloc[0])})") if len(mine) else "–"
        allc = cells[cells["metric"] == col]
        best = allc.sort_values("value", ascending=lower_is_better(col)).iloc[0] \
            if len(allc) else None
        best_txt = f"; best mean: {DISPLAY.get(best['method'], best['method'])}" \
            if best is not None else ""
        items.append(
            f"<li><b>{_html.escape({**MAIN_METRICS, **GT_LABELS}.get(col, col))}</b>: {name} "
            f"{_html.escape(own)} — better than {counts.get('better', 0)}, worse than "
            f"{counts.get('worse', 0)}, not distinguishable from "
            f"{counts.get('not distinguishable at 95 %', 0)} of {len(g)} baselines"
            f"{_html.escape(best_txt)}.</li>")
    note = ("<p><b>Smoke run:</b> a tiny live sample; these numbers mean nothing.</p>"
            if smoke else "")
    return (f'<div class="admonition note"><p class="admonition-title">{_html.escape(title)}'
            f"</p>{note}<ul>{''.join(items)}</ul><p>Verdicts: paired bootstrap of the "
            f"difference on the same pairs (95 %); intervals: Wilson (0/100 metrics) or "
            f"bootstrap over pairs.</p></div>")


def cells_long(cells: pd.DataFrame, source: str, names: dict[str, str] | None = None
               ) -> pd.DataFrame:
    """:func:`cell_intervals` as a long frame ``source, method, metric, value, sem, n, low,
    high`` (metric renamed by ``names``, default the paper's names of its four columns); ``sem``
    holds half the width of the 95 % interval, which the bar figures draw."""
    names = names or {v: k for k, v in PAPER_METRICS.items()}
    c = cells[cells["metric"].isin(list(names))]
    return pd.DataFrame({"source": source, "method": c["method"].values,
                         "metric": c["metric"].map(names).values, "value": c["value"].values,
                         "sem": ((c["high"] - c["low"]) / 2).values, "n": c["n"].values,
                         "low": c["low"].values, "high": c["high"].values})


def beside_ci(paper_frame: pd.DataFrame, ours: pd.DataFrame, columns: str = "method"
              ) -> pd.DataFrame:
    """The paper's rows (as printed, no interval: the paper gives none) beside ours as
    ``"value [low, high]"`` strings (``ours`` from :func:`cells_long` or :func:`sweep_ci`), one
    row per ``(metric, source)``, one column per ``columns`` value, display names."""
    from ..stats import fmt

    keep = ["source", columns, "metric", "value"]
    p = paper_frame.assign(value=[f"{v:.4g}" for v in paper_frame["value"]])
    o = ours.assign(value=[fmt(v, lo, hi) for v, lo, hi in
                           zip(ours["value"], ours["low"], ours["high"])])
    wide = beside(p[keep], o[keep], columns=columns)
    if columns != "method":
        wide = wide[sorted(wide.columns)]
    return display_names(wide).fillna("")


def by_metric(paper_frame: pd.DataFrame, ours: pd.DataFrame, labels: dict[str, str],
              order: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """:func:`beside_ci` as one narrow table per metric (keys: the metrics' display names, in
    the book's order): the methods as rows (``order``, default :data:`BOOK_ORDER`), the
    paper's datasets and ours as columns (short names from :func:`short_source`: ``CC``,
    ``ImageNet``, ``ours:<dataset>`` for ``labels`` = dataset -> our label). The paper's values
    as printed, ours as ``"value [low, high]"``; a page at 1280 px shows each table whole."""
    from ..stats import fmt

    keep = ["source", "method", "metric", "value"]
    p = paper_frame.assign(value=[f"{v:.4g}" for v in paper_frame["value"]])
    o = ours.assign(value=[fmt(v, lo, hi) for v, lo, hi in
                           zip(ours["value"], ours["low"], ours["high"])])
    long = pd.concat([f[keep] for f in (p, o) if len(f)], ignore_index=True)
    long["source"] = long["source"].map(lambda s: short_source(s, labels))
    sources = list(dict.fromkeys(long["source"]))
    metrics = [m for m in METRIC_LABELS if m in set(long["metric"])] + \
        [m for m in dict.fromkeys(long["metric"]) if m not in METRIC_LABELS]
    methods = [m for m in (order or BOOK_ORDER) if m in set(long["method"])]
    methods += [m for m in dict.fromkeys(long["method"]) if m not in methods]
    out = {}
    for metric in metrics:
        part = long[long["metric"] == metric]
        wide = part.pivot_table(index="method", columns="source", values="value",
                                aggfunc="first", sort=False)
        wide = wide.reindex(index=[m for m in methods if m in wide.index],
                            columns=[s for s in sources if s in wide.columns])
        wide = wide.rename(index=lambda m: DISPLAY.get(m, m)).fillna("")
        wide.index.name, wide.columns.name = "method", None
        out[METRIC_LABELS.get(metric, metric)] = wide
    return out


def sweep_ci(df: pd.DataFrame, param: str, source: str, seed: int = 0,
             names: dict[str, str] | None = None) -> pd.DataFrame:
    """A sweep's rows as a long frame with intervals: per value of ``param`` and metric (the
    paper's names by default), ``value``, ``low``, ``high``, ``n`` and ``sem`` (half the
    interval's width, for the figures)."""
    names = names or {v: k for k, v in PAPER_METRICS.items()}
    cells = cell_intervals(df, list(names), by=(param,), seed=seed)
    return pd.DataFrame({"source": source, param: cells[param].values,
                         "metric": cells["metric"].map(names).values,
                         "value": cells["value"].values,
                         "sem": ((cells["high"] - cells["low"]) / 2).values,
                         "n": cells["n"].values, "low": cells["low"].values,
                         "high": cells["high"].values})


def agreement_ci(df: pd.DataFrame, paper_frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Spearman's ρ between our ordering of the methods and the paper's, per paper metric and
    dataset, with a bootstrap interval over our pairs (:func:`nibcore.stats.rank_agreement_ci`):
    columns ``metric, paper, rho, low, high, methods``."""
    from ..stats import rank_agreement_ci

    rows = []
    for metric, col in PAPER_METRICS.items():
        part = df[df["side"] == side_of(col)]
        if col not in part:
            continue
        per = {m: g[col].dropna().to_numpy(float) for m, g in part.groupby("method", sort=False)}
        for src, g in paper_frame[paper_frame["metric"] == metric].groupby("source", sort=False):
            ref = dict(zip(g["method"], g["value"]))
            rho, lo, hi = rank_agreement_ci(per, ref, seed=seed)
            rows.append(dict(metric=metric, paper=paper_dataset(src), rho=rho, low=lo, high=hi,
                             methods=len([m for m in per if m in ref])))
    return pd.DataFrame(rows)


def timing_speed(timing: pd.DataFrame) -> pd.DataFrame:
    """Stored timings (``method, side, fps, ...``, from :func:`nibcore.store.timing`) as the
    speed frame the chapters draw: ``fps_image``, ``fps_text``, ``fps_both`` (pairs per second
    with both maps, ``1 / (1/fps_image + 1/fps_text)``), ``pairs``, ``repeats``, ``hardware``."""
    wide = timing.pivot_table(index="method", columns="side", values="fps", sort=False)
    out = pd.DataFrame({"fps_image": wide.get("image"), "fps_text": wide.get("text")})
    out["fps_both"] = 1.0 / (1.0 / out["fps_image"] + 1.0 / out["fps_text"])
    first = timing.groupby("method", sort=False).first()
    out["pairs"] = first["pairs"]
    out["repeats"] = first["repeats"]
    out["hardware"] = first["hardware"] + "; " + first["threads"].astype(str) + " torch threads"
    return out.reindex([m for m in BOOK_ORDER if m in out.index])


# --- the cue world: reliance and the faithfulness leaderboard --------------------------------

def reliance_table(reliance: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Each model's :func:`nibcore.world.cues.reliance` as strings with their 95 % intervals:
    the share of conflict scenes that follow the cue, and the similarity lost when the cue or
    the object is painted out."""
    from ..stats import fmt

    rows = {}
    for name, r in reliance.items():
        share, low, high = r["follows_cue"]
        rows[name] = {"follows the cue (%)": fmt(100 * share, 100 * low, 100 * high),
                      "similarity lost, cue out": fmt(r["drop_cue"].value, r["drop_cue"].low,
                                                      r["drop_cue"].high),
                      "similarity lost, object out": fmt(r["drop_object"].value,
                                                         r["drop_object"].low,
                                                         r["drop_object"].high),
                      "n (each kind)": r["n"]}
    return pd.DataFrame(rows).T


#: The faithfulness leaderboard's columns (:func:`nibcore.faithfulness.leaderboard`) and their
#: printed names.
FAITHFULNESS_COLUMNS = {"point_support": "pointing into the supporting region ↑ (%)",
                        "density_cue": "density in the cue, where it supports (× chance)",
                        "density_object": "density in the object, where it supports (× chance)",
                        "rho": "ρ(density gap, effect gap) ↑"}


def faithfulness_table(board: pd.DataFrame) -> pd.DataFrame:
    """One model's leaderboard as strings ``"mean [low, high]"`` with each cell's n, one row
    per method (display names), one column per :data:`FAITHFULNESS_COLUMNS`."""
    from ..stats import fmt

    out = {}
    for _, r in board.iterrows():
        row = {}
        for col, name in FAITHFULNESS_COLUMNS.items():
            n = r.get(f"{col}_n", r["n"])
            row[name] = ("–" if not np.isfinite(r[col]) else
                         fmt(r[col], r[f"{col}_low"], r[f"{col}_high"]) + f" (n={int(n)})")
        out[DISPLAY.get(r["method"], r["method"])] = row
    return pd.DataFrame(out).T


def faithfulness_sentences(boards: dict[str, pd.DataFrame], verdicts: dict[str, pd.DataFrame],
                           method: str = "nib") -> list[str]:
    """Per model, ``method``'s pointing into the supporting region and its rank, its paired verdicts
    against the other methods, and whether its maps' density gap follows the effect gap
    (generated from the measured values)."""
    from ..stats import fmt

    name = DISPLAY.get(method, method)
    out = []
    for model, board in boards.items():
        b = board.set_index("method")
        if method not in b.index:
            continue
        r = b.loc[method]
        rank = int((b["point_support"] > r["point_support"]).sum()) + 1
        v = verdicts[model]["verdict"].value_counts() if len(verdicts[model]) else pd.Series()
        rho_word = ("follows the measured effects" if r["rho_low"] > 0 else
                    "runs against them" if r["rho_high"] < 0 else
                    "is not distinguishable from no relation at 95 %")
        out.append(
            f"**{model}**: {name} points into the region that supports the caption on "
            f"{fmt(r['point_support'], r['point_support_low'], r['point_support_high'])} % of "
            f"{int(r['point_support_n'])} pairs ({ordinal(rank)} of {len(b)}); against the "
            f"{len(verdicts[model])} other methods it is better than {v.get('better', 0)}, worse "
            f"than {v.get('worse', 0)} and not distinguishable from "
            f"{v.get('not distinguishable at 95 %', 0)}. Its density gap (cue − object) "
            f"{rho_word}: ρ = {fmt(r['rho'], r['rho_low'], r['rho_high'])}.")
    return out


def use_mechanism_sentences(densities: dict[str, pd.DataFrame], ceilings: pd.DataFrame,
                            method: str = "nib", cue_model: str = "cue",
                            control: str = "cue-control") -> list[str]:
    """What ``method``'s maps do in the cue world, generated from the measured values: the cue's
    density where it supports the caption (agreeing scenes) and where it opposes it
    (conflicting scenes) under the cue model and the control
    (:func:`nibcore.faithfulness.kind_densities`), how far its maps can single out any region
    at all and where they peak (``ceilings``: :func:`nibcore.book.mechanisms.map_profile`, one
    row per method with the median ``ceiling`` over ``n`` maps, and optionally ``edge`` and
    ``to_object``).

    Args:
        densities: model name → :func:`~nibcore.faithfulness.kind_densities` of its rows.
        ceilings: per method, ``method``, ``ceiling`` (median) and ``n`` (and ``edge``,
            ``to_object``: where the maximum lies).
        method: the method described.
        cue_model: the model trained to rely on the cue.
        control: the control model.
    """
    from ..stats import fmt

    name = DISPLAY.get(method, method)

    def cell(model: str, kind: str, region: str) -> pd.Series | None:
        d = densities.get(model)
        if d is None:
            return None
        hit = d[(d.method == method) & (d.kind == kind) & (d.region == region)]
        return hit.iloc[0] if len(hit) else None

    def shown(c: pd.Series) -> str:
        return f"{fmt(c.density, c.low, c.high)}× chance (n = {int(c.n)})"

    out = []
    agree, conflict = cell(cue_model, "agree", "cue"), cell(cue_model, "conflict", "cue")
    if agree is not None and conflict is not None:
        if conflict.low > 1:
            sign = (f"it still singles the cue out where the cue argues *against* the caption — "
                    f"a {name} map is not signed, so it shows that the cue matters to the "
                    f"cosine, not in which direction")
        elif conflict.high < 1:
            sign = "it turns away from the cue where the cue argues against the caption"
        else:
            sign = ("where the cue argues against the caption its density is not "
                    "distinguishable from chance")
        out.append(f"On the **{cue_model}** model {name} gives the cue {shown(agree)} on "
                   f"agreeing scenes, where the cue supports the caption, and {shown(conflict)} "
                   f"on conflicting ones, where it opposes it: {sign}.")
        d = densities[cue_model]
        d = d[(d.kind == "conflict") & (d.region == "cue")]
        groups = {"turn away from the opposing cue (interval below 1)": d[d.high < 1],
                  "light it up (interval above 1)": d[d.low > 1],
                  "are not distinguishable from chance there": d[(d.low <= 1) & (d.high >= 1)]}
        parts = [f"{len(g)} {what}" + (f": {', '.join(DISPLAY.get(m, m) for m in g.method)}"
                                       if len(g) else "")
                 for what, g in groups.items()]
        out.append(f"Of the {len(d)} methods on the {cue_model} model's conflicting scenes, "
                   + "; ".join(parts) + ".")
    ctrl = [cell(control, k, "cue") for k in ("agree", "conflict")]
    if all(c is not None for c in ctrl):
        if not all(np.isfinite([c.low, c.high]).all() for c in ctrl):
            verdict = ": too few pairs to tell from chance."
        elif all(c.low <= 1 <= c.high for c in ctrl):
            verdict = ": chance, as a faithful map must."
        else:
            verdict = ": not chance, although the control does not use the cue."
        out.append(f"On the **{control}**, whose cue plays no role, {name} gives the cue "
                   f"{shown(ctrl[0])} (agreeing) and {shown(ctrl[1])} (conflicting){verdict}")
    c = ceilings.set_index("method")
    if method in c.index and len(c) > 1:
        mine = c.loc[method]
        others = c.drop(index=method).sort_values("ceiling", ascending=False)
        rank = int((c["ceiling"] > mine.ceiling).sum()) + 1
        flat = ("flatter than most" if mine.ceiling < others["ceiling"].median() else
                "no flatter than most")
        listed = ", ".join(f"{DISPLAY.get(m, m)} {r.ceiling:.3g}" for m, r in others.iterrows())
        obj = cell(cue_model, "agree", "object")
        obj_words = (f"; on the {cue_model} model's agreeing scenes it gives the object "
                     f"{shown(obj)}" if obj is not None else "")
        out.append(f"Over {int(mine.n)} maps of the {cue_model} model, a {name} map's maximum "
                   f"is {mine.ceiling:.3g}× its mean (median), {ordinal(rank)} of {len(c)} "
                   f"methods ({listed}): {name}'s maps are {flat}. No region can receive more "
                   f"than its map's ceiling, so half of the {name} maps cannot give any region "
                   f"more than {mine.ceiling:.3g}× chance{obj_words}.")
        if {"edge", "to_object"} <= set(c.columns):
            near = ", ".join(f"{DISPLAY.get(m, m)} {r.to_object:.3g}"
                             for m, r in others.sort_values("to_object").iterrows())
            out.append(f"Where a {name} map peaks: a median of {mine.edge:.3g} px from the "
                       f"image's edge and {mine.to_object:.3g} px from the object (over the same "
                       f"{int(mine.n)} maps; distance to the object for the others: {near}).")
    return out


def kind_density_table(densities: dict[str, pd.DataFrame], region: str = "cue") -> pd.DataFrame:
    """The density of ``region`` per method (rows) and model × scene kind (columns), each
    ``value [low, high]`` (:func:`nibcore.faithfulness.kind_densities`; 1 is chance)."""
    from ..stats import fmt

    cols = {}
    for model, d in densities.items():
        d = d[d.region == region]
        for kind, g in d.groupby("kind", sort=True):
            cols[(model, kind)] = {DISPLAY.get(r.method, r.method): fmt(r.density, r.low, r.high)
                                   for r in g.itertuples()}
    table = pd.DataFrame(cols)
    table.columns.names = ["model", "scenes"]
    return table
