"""The paper's tables (nibcore.book.paper), the layer rule and sweeps (nibcore.sweeps), frames
and generated sentences (nibcore.book.reports)."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from nibcore import sweeps
from nibcore.book import chapters, paper, reports
from nibcore.datasets import Pair, PairDataset
from nibcore.models import bundled_file


@pytest.fixture(scope="module")
def pairs_ds():
    rng = np.random.RandomState(3)
    images = [Image.fromarray((rng.rand(32, 32, 3) * 255).astype("uint8")) for _ in range(4)]
    texts = ["a red circle", "a blue ring and a dog", "two green grids", "a white cross"]
    return PairDataset("toy", 4, lambda i: Pair(images[i], texts[i], f"toy-{i}"))


# --- the paper's tables ----------------------------------------------------------------------

def test_paper_tables_are_bundled():
    """The paper's tables ship with the package: their absence is a failure, not a skip."""
    for name in ("table2_main_results", "table3_num_steps", "table8_passes"):
        assert bundled_file(f"paper_tables/{name}.csv").is_file(), name


def test_paper_table8_methods_are_nibcore_keys():
    t8 = paper.paper_table(8)
    assert list(t8["method"]) == ["nib", "rise", "gradcam", "chefer", "saliency", "mfaba",
                                  "m2ib", "fastig"]
    assert "Chefer" in set(t8["paper_method"])
    assert t8.loc[t8.method == "nib", "forward"].item() == 12
    assert t8["backward"].dtype.kind in "iu"


def test_paper_table3_numeric_and_long():
    t3 = paper.paper_table("table3_num_steps")
    assert t3["img_conf_drop"].dtype.kind == "f"
    long = reports.paper_long(t3, by=("num_steps",))
    assert set(long["source"]) == {"paper (Conceptual Captions)", "paper (ImageNet)",
                                   "paper (Flickr8k)"}
    assert set(long["metric"]) == {"img_conf_drop", "img_conf_incr", "text_conf_drop",
                                   "text_conf_incr"}
    assert len(long) == 12 * 4


def test_paper_table_missing_says_where(monkeypatch):
    with pytest.raises(FileNotFoundError, match="data/paper_tables"):
        paper.paper_table("table99_nothing")


# --- layers ----------------------------------------------------------------------------------

class _Tower:  # a stand-in tower: default_layer reads only n_blocks
    def __init__(self, n_blocks: int) -> None:
        self.n_blocks = n_blocks


@pytest.mark.parametrize("n_blocks", range(1, 25))
def test_papers_nine_lands_on_default_layer_never_in_the_top_blocks(n_blocks):
    """The one layer rule: the paper's default 9 is nibcore's default layer on every depth, and
    no paper layer lands closer to the top than MIN_BLOCKS_ABOVE (where a tower has room)."""
    from nibcore.base import MIN_BLOCKS_ABOVE, default_layer

    assert sweeps.paper_layer(9, n_blocks) == default_layer(_Tower(n_blocks))
    top = max(0, n_blocks - MIN_BLOCKS_ABOVE)
    assert sweeps.highest_layer(n_blocks) == top
    mapped = [sweeps.paper_layer(l, n_blocks) for l in range(sweeps.PAPER_BLOCKS)]
    assert all(0 <= b <= top for b in mapped)
    assert mapped == sorted(mapped)  # deeper in the paper, never shallower here


def test_paper_layer_identity_on_twelve_blocks_below_the_clamp():
    assert [sweeps.paper_layer(l, 12) for l in range(12)] == [*range(11), 10]


def test_paper_layer_on_the_mini_towers():
    # mini: 6-block image tower, 4-block text tower; relative depth rounded down, then clamped
    layers = (2, 3, 4, 5, 6, 7, 8, 9)
    assert [sweeps.paper_layer(l, 6) for l in layers] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert [sweeps.paper_layer(l, 4) for l in layers] == [0, 1, 1, 1, 2, 2, 2, 2]
    # the text tower cannot separate the paper's 6 … 9 (nor 3 … 5)
    assert sweeps.shared_blocks(layers, 4) == {1: [3, 4, 5], 2: [6, 7, 8, 9]}
    assert sweeps.shared_blocks([3, 6, 9], 12) == {}


def test_paper_layer_validates():
    assert sweeps.paper_layer(0, 6) == 0
    assert sweeps.paper_layer(np.int64(9), 6) == 4
    for bad in (-1, 12, 2.0, True):
        with pytest.raises(ValueError):
            sweeps.paper_layer(bad, 6)
    with pytest.raises(ValueError):
        sweeps.paper_layer(3, 0)


def test_layer_map(tiny):
    m = sweeps.layer_map(tiny, [3, 6, 9])
    assert list(m.columns) == ["paper_layer", "relative_depth", "image_layer", "text_layer"]
    assert list(m["image_layer"]) == [1, 2, 2]  # tiny: 4 blocks per tower, 9 kept below the top
    assert list(m["text_layer"]) == [1, 2, 2]
    assert m.attrs["image_blocks"] == 4


def test_layer_words_and_sentences(tiny):
    mapping = sweeps.layer_map(tiny, [3, 6, 9])  # tiny: 4 blocks per tower
    assert reports.layer_words(mapping, 9) == ("block 2 of 4 on the image tower and block 2 of 4 "
                                               "on the text tower")
    text = reports.layer_map_sentences(tiny, mapping)
    assert "nibcore's default layer on both towers" in text
    assert text.count("the paper's layers 6 and 9 share block 2 (the highest the rule allows") == 2
    assert "cannot separate" in text
    apart = reports.layer_map_sentences(tiny, sweeps.layer_map(tiny, [3, 6]))
    assert apart.count("every paper layer of the sweep has a block of its own") == 2


def test_results_bars_state_each_bars_n():
    from nibcore.book import figures

    long = pd.DataFrame(dict(source="ours (x)", metric="img_conf_drop", method=["nib", "rise"],
                             value=1.0, sem=0.1, n=[1000, 200]))
    fig = figures.results_bars(long, {"scenes": "ours (x)"}, ["img_conf_drop"], ["nib", "rise"])
    assert fig.axes[0].get_title().endswith("scenes, n=1000 (RISE n=200)")
    assert figures.n_words(pd.Series({"nib": 5, "rise": 5})) == "n=5"


# --- frames, ranks, sentences ----------------------------------------------------------------

def _fake_results():
    rows = []
    for method, drop, incr, sec in (("nib", 1.0, 60.0, 0.1), ("m2ib", 2.0, 40.0, 0.5),
                                    ("gradcam", 3.0, 50.0, 0.05)):
        for i in range(2):
            rows.append(dict(method=method, side="image", id=f"p{i}", img_conf_drop=drop + i,
                             img_conf_incr=incr, seconds=sec, batch=1, hardware="cpu X",
                             fwd=2, bwd=1, fwd_rows=3, bwd_rows=2))
            rows.append(dict(method=method, side="text", id=f"p{i}", txt_conf_drop_paper=drop,
                             txt_conf_incr_paper=incr, seconds=sec, batch=1, hardware="cpu X",
                             fwd=2, bwd=1, fwd_rows=3, bwd_rows=2))
    return pd.DataFrame(rows)


def _fake_paper():
    return pd.DataFrame(dict(dataset=["ImageNet"] * 3 + ["Flickr8k"] * 3,
                             metric=["img_conf_drop"] * 6,
                             method=["nib", "m2ib", "gradcam"] * 2,
                             value=[0.9, 1.1, 2.5, 1.4, 1.3, 5.0]))


def test_results_long_means_per_side():
    long = reports.results_long(_fake_results(), "ours (x)")
    nib = long[(long.method == "nib")].set_index("metric")["value"]
    assert nib["img_conf_drop"] == pytest.approx(1.5)
    assert nib["text_conf_drop"] == pytest.approx(1.0)
    assert set(long["n"]) == {2}
    assert (long["source"] == "ours (x)").all()


def test_beside_puts_paper_and_ours_in_one_frame():
    ours = reports.results_long(_fake_results(), "ours (x)", with_fps=True)
    paper = reports.paper_long(_fake_paper())
    wide = reports.beside(paper, ours)
    assert list(wide.columns) == ["nib", "m2ib", "gradcam"]  # the book's order: NIB first
    assert wide.loc[("img_conf_drop", "paper (ImageNet)"), "nib"] == 0.9
    assert wide.loc[("img_conf_drop", "ours (x)"), "nib"] == pytest.approx(1.5)
    # metrics in a fixed order; fps last; per metric the paper's sources first
    assert wide.index.get_level_values(0)[0] == "img_conf_drop"
    assert wide.index.get_level_values(0)[-1] == "fps"
    assert list(wide.loc["img_conf_drop"].index) == ["paper (ImageNet)", "paper (Flickr8k)",
                                                     "ours (x)"]
    shown = reports.display_names(wide)
    assert "NIB" in shown.columns and "Image Conf. Drop ↓" in shown.index.get_level_values(0)


def test_ranks_respect_direction_and_ties():
    long = pd.DataFrame(dict(source="s", metric=["img_conf_drop"] * 3 + ["img_conf_incr"] * 3,
                             method=["a", "b", "c"] * 2, value=[1.0, 1.0, 3.0, 10, 30, 20]))
    r = reports.ranks(long).set_index(["metric", "method"])["rank"]
    assert r[("img_conf_drop", "a")] == 1 and r[("img_conf_drop", "b")] == 1
    assert r[("img_conf_drop", "c")] == 3
    assert r[("img_conf_incr", "b")] == 1 and r[("img_conf_incr", "a")] == 3


def test_rank_sentences_are_generated_from_the_frames():
    ours = reports.results_long(_fake_results(), "ours (x)")
    paper = reports.paper_long(_fake_paper())
    s = reports.rank_sentences(ours, paper, "nib", metrics=["img_conf_drop"])
    assert s == ["Image Conf. Drop ↓: NIB ranks 1st of 3 in ours (x); the paper ranks it 1st of 3 "
                 "on ImageNet and 2nd of 3 on Flickr8k."]
    s = reports.rank_sentences(ours, paper, "gradcam", metrics=["img_conf_drop"])
    assert "3rd of 3 in ours (x)" in s[0] and s[0].endswith("— the same place.")


def test_ordinal():
    assert [reports.ordinal(k) for k in (1, 2, 3, 4, 11, 12, 13, 21, 22)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd"]


def test_winners():
    w = reports.winners(reports.paper_long(_fake_paper()))
    assert list(w["best"]) == ["NIB", "M2IB"]


def test_speed_and_passes():
    sp = reports.speed(_fake_results())
    assert sp.loc["nib", "fps_image"] == pytest.approx(10.0)
    assert sp.loc["nib", "fps_both"] == pytest.approx(5.0)
    assert sp.loc["gradcam", "hardware"] == "cpu X"
    p = reports.passes_table(_fake_results())
    assert p.loc[("nib", "image"), "forward"] == 2


def test_trend_words():
    long = pd.DataFrame(dict(source="s", metric="m", x=[1, 2, 3, 4], value=[1.0, 2, 3, 5]))
    assert reports.trend(long, "x", "m") == pytest.approx(1.0)
    assert "rises steadily" in reports.describe_trend(1.0)
    assert "falls" in reports.describe_trend(-0.9)
    assert "no measurable trend" in reports.describe_trend(float("nan"))
    assert np.isnan(reports.trend(long.head(2), "x", "m"))


# --- caching and sweeps (on the tiny random CLIP) --------------------------------------------

def test_cache_file_names_model_and_code(tiny, tmp_path):
    path = sweeps.cache_file(tiny, "t2", root=tmp_path)
    assert path.parent.is_dir() and path.name == "t2.jsonl"
    assert path.parent.name.startswith("tiny-")
    twin = __import__("copy").deepcopy(tiny)
    with torch.no_grad():
        next(twin.clip.parameters()).add_(1.0)
    assert sweeps.fingerprint(twin) != sweeps.fingerprint(tiny)


def test_sweep_and_summary(tiny, pairs_ds, tmp_path):
    out = tmp_path / "sweep.jsonl"
    df = sweeps.sweep(tiny, pairs_ds, "nib", "num_steps", [1, 3], n=2, seed=0, out=out)
    assert set(df["num_steps"]) == {1, 3}
    assert len(df) == 2 * 2 * 2  # values × pairs × sides
    long = reports.sweep_summary(df, "num_steps", "ours")
    assert set(long["metric"]) == {"img_conf_drop", "img_conf_incr", "text_conf_drop",
                                   "text_conf_incr"}
    again = sweeps.sweep(tiny, pairs_ds, "nib", "num_steps", [1, 3], n=2, seed=0, out=out)
    pd.testing.assert_series_equal(df["img_conf_drop"], again["img_conf_drop"])


def test_sweep_with_method_seeds(tiny, pairs_ds):
    df = sweeps.sweep(tiny, pairs_ds, "m2ib", "beta", [0.1], n=2, sides=["image"],
                      base={"num_steps": 2, "n_samples": 2}, seeds=[0, 1])
    assert set(df["method_seed"]) == {0, 1}
    spread = reports.seed_spread(df, "beta")
    row = spread[spread.metric == "img_conf_drop"].iloc[0]
    assert row["seeds"] == 2 and np.isfinite(row["sd_seeds"])
    per_pair = reports.seed_means(df, "beta")  # one row per pair: the seeds averaged
    assert len(per_pair) == 2 and "method_seed" not in per_pair
    expected = df.groupby("id")["img_conf_drop"].mean()
    assert np.allclose(per_pair.set_index("id")["img_conf_drop"], expected.loc[per_pair["id"]])
    ci = reports.sweep_ci(per_pair, "beta", "ours")
    assert (ci[ci.metric == "img_conf_drop"]["n"] == 2).all()


def test_layer_sweep_maps_each_tower(tiny, pairs_ds):
    df = sweeps.layer_sweep(tiny, pairs_ds, [3, 6, 9], n=1, base={"num_steps": 2})
    img = df[df.side == "image"].set_index("paper_layer")["layer"]
    assert img.to_dict() == {3: 1, 6: 2, 9: 2}  # 6 and 9 share block 2: its rows, twice
    assert (df.groupby(["side", "paper_layer"]).size() == 1).all()
    assert set(df["side"]) == {"image", "text"}


# --- chapter glue ------------------------------------------------------------------------------

def test_book_params_and_description():
    assert chapters.book_params() == {}
    assert chapters.book_params(smoke=True) == chapters.SMOKE_PARAMS
    assert chapters.book_params(smoke=True) is not chapters.SMOKE_PARAMS
    assert chapters.book_params(rise_masks=500) == {"rise": {"n_masks": 500}}
    assert chapters.book_params(True, rise_masks=50)["rise"] == {"n_masks": 50}
    assert "paper's defaults" in chapters.describe_params({})
    smoke = chapters.describe_params(chapters.book_params(True))
    assert "RISE with n_masks=16" in smoke and "M2IB with num_steps=2, n_samples=2" in smoke


def test_evaluate_cached_one_pair_per_call_and_reuse(tiny, pairs_ds, tmp_path, monkeypatch):
    from nibcore import evaluation as runner

    monkeypatch.setattr(runner, "load_dataset", lambda name, **kw: pairs_ds)
    df = sweeps.evaluate_cached(tiny, "toy", ["gradcam", "rise"], n=2, seed=1,
                                params={"rise": {"n_masks": 20}, "nib": {"num_steps": 2}},
                                cache=tmp_path, text_protocols=("paper",))
    assert list(dict.fromkeys(df["method"])) == ["gradcam", "rise"]
    assert (df["batch"] == 1).all()
    files = list(tmp_path.rglob("toy.jsonl"))
    assert len(files) == 1
    again = sweeps.evaluate_cached(tiny, "toy", ["gradcam", "rise"], n=2, seed=1,
                                   params={"rise": {"n_masks": 20}}, cache=tmp_path,
                                   text_protocols=("paper",))
    pd.testing.assert_series_equal(df["seconds"], again["seconds"])  # read back, not re-run
    p = reports.passes_table(df)
    assert p.loc[("rise", "image"), "forward_rows"] == 21


def test_passes_comparison_agreement():
    ours = pd.DataFrame(dict(method=["nib", "rise"], side="image", forward=[3.0, 301.0],
                             backward=[1.0, 0.0], forward_rows=[12.0, 6001.0],
                             backward_rows=[10.0, 0.0])).set_index(["method", "side"])
    paper = pd.DataFrame(dict(method=["nib", "rise"], forward=[12, 301], backward=[10, 0]))
    cmp = reports.passes_comparison(ours, paper)
    assert list(cmp.index) == ["rise", "nib"]  # the paper's order
    assert cmp.loc["nib", "agreement"] == "rows"
    assert cmp.loc["rise", "agreement"] == "calls"


def test_rank_agreement():
    ours = pd.DataFrame(dict(source="ours", metric="img_conf_drop", method=["a", "b", "c"],
                             value=[1.0, 2.0, 3.0]))
    paper = pd.DataFrame(dict(source=["paper (X)"] * 3 + ["paper (Y)"] * 3,
                              metric="img_conf_drop", method=["a", "b", "c"] * 2,
                              value=[0.1, 0.2, 0.3, 0.3, 0.2, 0.1]))
    agree = reports.rank_agreement(ours, paper)
    assert agree.loc["img_conf_drop", "X"] == pytest.approx(1.0)
    assert agree.loc["img_conf_drop", "Y"] == pytest.approx(-1.0)


def test_protocol_view_shows_the_paper_quirks(tiny):
    caption = "a red circle and a blue ring"
    ids = tiny.tokenize([caption])[0]
    n = int(tiny.text_length(ids[None])[0])
    scores = np.linspace(0.1, 1.0, n)
    paper = reports.protocol_view(tiny, caption, scores, "paper")
    assert paper["token1"].iloc[0] == "a"  # SOT removed
    a_rows = paper[paper["token1"] == "a"]
    assert len(a_rows) == 2 and a_rows["scale1"].nunique() == 1  # one scaled row, both positions
    assert a_rows["scale1"].iloc[0] == pytest.approx(scores[1] * scores[5])
    assert (paper["pooled"] != "").sum() == 1
    assert "end_of_text" not in " ".join(paper["token1"])
    clean = reports.protocol_view(tiny, caption, scores, "clean")
    assert clean.loc[clean["pooled"] != "", "token1"].item() == "<end_of_text>"
    m2ib = reports.protocol_view(tiny, caption, scores, "m2ib")
    assert (m2ib["id1"] == 0).sum() >= 1


# --- helpers of the results chapters -------------------------------------------------------------

def _sweep_long():
    """Two sources sweeping ``x`` over 1, 2, 3 on one metric (lower is better)."""
    return pd.DataFrame(dict(source=["ours (x)"] * 3 + ["paper (ImageNet)"] * 3,
                             metric="img_conf_drop", x=[1, 2, 3] * 2,
                             value=[3.0, 2.0, 1.0, 1.0, 2.0, 3.0]))


def test_relative_to():
    out = reports.relative_to(_sweep_long(), "x", 2)
    assert out["change"].tolist() == [1.0, 0.0, -1.0, -1.0, 0.0, 1.0]
    assert np.isnan(reports.relative_to(_sweep_long(), "x", 9)["change"]).all()


def test_layer_depth():
    mapping = pd.DataFrame(dict(paper_layer=[6, 9], image_layer=[3, 4], text_layer=[2, 2]))
    mapping.attrs.update(image_blocks=6, text_blocks=4)
    long = pd.DataFrame(dict(source=["ours (x)", "ours (x)", "paper (X)"],
                             metric=["img_conf_drop", "text_conf_drop", "img_conf_drop"],
                             paper_layer=[9, 9, 6], value=1.0))
    assert reports.layer_depth(long, mapping)["depth"].tolist() == [4 / 6, 2 / 4, 6 / 12]


def test_trend_sentences():
    s = reports.trend_sentences(_sweep_long(), "x", "the knob", ["img_conf_drop"])
    assert s == ("* **Image Conf. Drop ↓** — here it falls steadily (ρ = -1.00) with the knob, "
                 "best at [3]. In the paper: ImageNet: rises steadily (ρ = +1.00); best at [1] "
                 "on ImageNet.")


def test_beta_sentences():
    spread = pd.DataFrame(dict(beta=[0.1, 1.0, 10.0], metric="img_conf_drop",
                               value=[1.0, 2.0, 3.0], sd_seeds=[0.5, 0.5, 0.5]))
    ours = spread.assign(source="ours (x)")
    paper = pd.DataFrame(dict(source="paper (ImageNet)", metric="img_conf_drop",
                              beta=[0.1, 1.0, 10.0], value=[3.0, 2.0, 1.0]))
    s = reports.beta_sentences(spread, ours, paper, ["img_conf_drop"])
    assert "rises steadily (ρ = +1.00) with β" in s
    assert "its range over the grid is 2, 4.0 times the median spread" in s
    assert s.endswith("In the paper: ImageNet falls steadily (ρ = -1.00).")
    still = reports.beta_sentences(spread.assign(sd_seeds=0.0), ours, paper, ["img_conf_drop"])
    assert "while the seeds agree exactly" in still
    # with the per-pair rows: the change from the smallest to the largest β, paired
    rng = np.random.default_rng(0)
    base = rng.normal(size=30)
    per_pair = pd.DataFrame(dict(
        beta=np.repeat([0.1, 1.0, 10.0], 30), side="image", id=np.tile(np.arange(30), 3),
        img_conf_drop=np.concatenate([base, base + 0.5, base + 1.0 + 0.01 * rng.normal(size=30)])))
    s = reports.beta_sentences(spread, ours, paper, ["img_conf_drop"], per_pair)
    assert "From β = 0.1 to β = 10 the mean changes by 1.00" in s
    assert "(paired bootstrap over n = 30 pairs): a change at 95 %." in s
    flat = per_pair.assign(img_conf_drop=np.tile(base, 3) + 0.01 * rng.normal(size=90))
    s = reports.beta_sentences(spread, ours, paper, ["img_conf_drop"], flat)
    assert "not distinguishable from no change at 95 %" in s


def test_short_source_and_rank_grid():
    labels = {"scenes": "ours (mini, scenes"}
    assert reports.short_source("ours (mini, scenes, n=2)", labels) == "ours:scenes"
    assert reports.short_source("paper (Conceptual Captions)", labels) == "CC"
    long = pd.DataFrame(dict(
        source=["ours (mini, scenes, n=2)"] * 2 + ["paper (ImageNet)"] * 2,
        metric=["img_conf_drop"] * 4, method=["nib", "m2ib"] * 2, value=[1.0, 2.0, 2.0, 1.0]))
    grid = reports.rank_grid(long, labels)
    assert list(grid.index) == ["m2ib", "nib"]                      # the paper's order
    assert list(grid.columns) == ["img drop\nours:scenes", "img drop\nImageNet"]
    assert grid.loc["nib"].tolist() == [1.0, 2.0]


def test_book_datasets_and_names():
    assert chapters.book_datasets("mini") == ["scenes"]
    assert set(chapters.book_datasets("ViT-B-32")) <= set(paper.DATASET_NAMES)


def _board():
    gt = pd.DataFrame(dict(
        source="s", method=["nib", "rise", "gradcam"] * 4,
        metric=["pointing"] * 3 + ["energy"] * 3 + ["mask_area"] * 3 + ["text_gt"] * 3,
        value=[50.0, 80.0, 20.0, 30.0, 40.0, 10.0, 25.0, 25.0, 25.0, 90.0, 60.0, 70.0]))
    return gt, reports.gt_leaderboard(gt)


def test_gt_leaderboard():
    _, board = _board()
    assert list(board.columns) == ["pointing", "energy", "mask_area", "text_gt", "mean rank"]
    assert board["mean rank"].to_dict() == pytest.approx({"rise": 5 / 3, "nib": 5 / 3,
                                                          "gradcam": 8 / 3})
    assert list(board.index) == ["nib", "rise", "gradcam"]      # a tie keeps the input order


def test_gt_agreement_sentence():
    _, board = _board()
    conf = pd.DataFrame(dict(method=["nib", "rise", "gradcam"], metric="img_conf_drop",
                             value=[0.2, 0.1, 0.3]))
    s = reports.gt_agreement_sentence(conf, board)
    assert "is ρ = +1.00, by energy in mask ρ = +1.00" in s
    assert "by Confidence Drop is RISE, by pointing game RISE" in s
    assert s.endswith("NIB ranks 2nd on pointing and 1st on the text ground truth, 1st of 3 by "
                      "mean rank.")


def test_sanity_sentences():
    rows = []
    for k in range(40):  # 40 pairs; NIB stays near 0.8, Grad-CAM falls, SM hovers at 0.5
        for m, v in (("nib", 0.8), ("gradcam", 0.1), ("saliency", 0.5)):
            for side, blocks in (("image", 6), ("text", 4)):
                rho = v if side == "image" else 0.2
                rows.append(dict(id=f"p{k}", method=m, side=side, kind="randomised", top=blocks,
                                 spearman=rho + 0.05 * ((k % 5) - 2)))
    s = reports.sanity_sentences(pd.DataFrame(rows), {"image": 6, "text": 4}).split("\n")
    assert s[0].startswith("* **image side**, all 6 blocks randomised (n = 40 pairs): still "
                           "above 0.5 — NIB (ρ = 0.800 [")
    assert "below it — Grad-CAM (ρ = 0.100 [" in s[0]
    assert "not distinguishable from 0.5 at 95 % — SM (ρ = 0.500 [" in s[0]
    assert s[1].startswith("* **text side**, all 4 blocks randomised (n = 40 pairs): no method's "
                           "map stays above 0.5; below it — ")
