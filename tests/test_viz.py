"""nibcore.viz (the chapters' figures) and nibcore.explorer: smoke tests on tiny synthetic data,
drawn on the Agg backend; each asserts what was drawn (lines, images, bars, texts, colour bars)."""

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from nibcore.book import explorer, figures  # noqa: E402

METRICS = ["img_conf_drop", "text_conf_drop"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def image():
    rng = np.random.RandomState(0)
    return Image.fromarray((rng.rand(32, 32, 3) * 255).astype("uint8"))


def _colorbars(fig):
    return sum(ax.get_label() == "<colorbar>" for ax in fig.axes)


def _bars(ax):
    return len(ax.patches)


# --- theory chapters ---------------------------------------------------------------------------

def test_objective_paths():
    grid = np.logspace(-3, 0, 4)
    paths = {"a": np.linspace(0, 1, 5), "b": np.linspace(1, 0, 5)}
    fig = figures.objective_paths(grid, paths, {"paper": (np.array([0.1, 1.0]), "tab:orange", 12),
                                            "other": (np.array([0.5]), "tab:green", 8)})
    assert len(fig.axes) == 2
    assert all(len(ax.lines) == 4 for ax in fig.axes)          # f, f(0), two schedules
    assert fig.axes[0].get_legend() is not None and fig.axes[1].get_legend() is None


def test_completeness_gaps():
    summary = pd.DataFrame(dict(schedule=["a", "a", "b"], num_steps=[5, 10, 5],
                                evaluations=[5, 10, 40],
                                median_abs_relative_gap=[0.5, 0.4, 0.01])
                           ).set_index(["schedule", "num_steps"])
    fig, ax = plt.subplots()
    figures.completeness_gaps(ax, summary, "t")
    assert len(ax.lines) == 2 and ax.get_xscale() == "log" and ax.get_title() == "t"


def test_kl_bound_figure():
    lambdas = np.linspace(0, 1, 5)
    bound = np.array([[0, 1, 2, 3, 4], [0, 2, 4, 6, 8]], dtype=float)
    fig = figures.kl_bound_figure(lambdas, bound, [0.5, 1.0])
    assert len(fig.axes[0].lines) == 2 and len(fig.axes[1].images) == 1
    assert _colorbars(fig) == 1


def test_information_vs_bound():
    fig, ax = plt.subplots()
    figures.information_vs_bound(ax, np.array([0, 0.5, 1]), {1.0: np.array([0, 0.3, 0.6])},
                             np.linspace(0, 1, 5), {1.0: np.linspace(0, 2, 5)}, n_inputs=4)
    assert len(ax.lines) == 3                                   # MC, bound, log N
    assert any("log N" in t.get_text() for t in ax.texts)


def test_noise_spread():
    fig, ax = plt.subplots()
    values = [np.array([0.1, 0.2, 0.3]), np.array([0.0, 0.5, 1.0])]
    figures.noise_spread(ax, np.array([0.01, 1.0]), values, 0.2)
    assert len(ax.containers) == 1                              # the error bars
    assert any("3 draws" in t.get_text() for t in ax.get_legend().get_texts())


# --- results chapters --------------------------------------------------------------------------

def test_change_curves():
    long = pd.DataFrame(dict(source=["ours (x)"] * 3 + ["paper (X)"] * 3,
                             metric="img_conf_drop", x=[1, 2, 2, 1, 2, 3], change=1.0))
    fig = figures.change_curves(long, "x", ["img_conf_drop"], "x", "change", "label")
    assert [len(line.get_xdata()) for line in fig.axes[0].lines[:2]] == [3, 3]
    fig = figures.change_curves(long, "x", ["img_conf_drop"], "x", "change", dedupe=True)
    assert [len(line.get_xdata()) for line in fig.axes[0].lines[:2]] == [2, 3]


def test_beta_curves():
    spread = pd.DataFrame(dict(beta=[0.1, 1.0] * 2, metric=np.repeat(METRICS, 2),
                               value=[1.0, 2, 3, 4], sd_seeds=0.1))
    paper = pd.DataFrame(dict(source="paper (X)", beta=[0.1, 1.0] * 2,
                              metric=np.repeat(METRICS, 2), value=[5.0, 6, 7, 8]))
    fig = figures.beta_curves(spread, paper, METRICS, "label")
    assert len(fig.axes) == 4                                    # two panels and their twins
    assert len(fig.axes[1].get_legend().get_texts()) == 2        # ours + the paper's source


def test_method_bars():
    fig, ax = plt.subplots()
    figures.method_bars(ax, pd.Series([1.0, 2.0, 3.0], index=["nib", "rise", "gradcam"]),
                    pd.Series([0.1, 0.1, 0.1], index=["nib", "rise", "gradcam"]), "t")
    assert _bars(ax) == 3
    assert ax.patches[0].get_facecolor() != ax.patches[1].get_facecolor()   # NIB highlighted
    assert [t.get_text() for t in ax.get_xticklabels()] == ["NIB", "RISE", "Grad-CAM"]


def test_results_bars():
    long = pd.DataFrame(dict(source="ours (x)", metric=np.repeat(METRICS, 2),
                             method=["nib", "rise"] * 2, value=1.0, sem=0.1))
    fig = figures.results_bars(long, {"scenes": "ours (x)"}, METRICS, ["nib", "rise"], n=2)
    assert len(fig.axes) == 2 and all(_bars(ax) == 2 for ax in fig.axes)
    assert "scenes, n=2" in fig.axes[0].get_title()


def test_speed_plot():
    idx = pd.MultiIndex.from_product([["ours (x)"], ["nib", "rise"]])
    speed = pd.DataFrame(dict(fps_both=[10.0, 1.0], hardware="cpu"), index=idx)
    paper_fps = pd.DataFrame({"paper FPS, X": [5.0, 0.5]}, index=["nib", "rise"])
    fig, ax = plt.subplots()
    figures.speed_plot(ax, speed, paper_fps, {"scenes": "ours (x)"}, ["nib", "rise"])
    assert len(ax.collections) == 2 and "cpu" in ax.get_title()


def test_as_picture_undoes_normalisation():
    rgb = np.random.RandomState(0).rand(3, 4, 5).astype(np.float32)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.3, 0.4]
    x = (rgb - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    out = figures.as_picture(x, mean, std)
    assert out.shape == (4, 5, 3)
    np.testing.assert_allclose(out, rgb.transpose(1, 2, 0), atol=1e-5)


def test_masking_figure(image):
    maps = np.random.RandomState(1).rand(2, 8, 8)
    conf = dict(s0=np.array([0.5, 0.5]), s1=np.array([0.4, 0.6]), drop=np.array([0.2, 0.0]),
                increase=np.array([False, True]))
    fig = figures.masking_figure(image, maps, ["A", "B"], np.zeros((3, 8, 8)),
                                 np.zeros((2, 3, 8, 8)), conf, [0.5] * 3, [0.2] * 3)
    assert len(fig.axes) == 6 and _colorbars(fig) == 0
    assert sum(len(ax.images) for ax in fig.axes) == 1 + 2 * 2 + 3   # picture, overlays, inputs
    assert "incr" in fig.axes[5].get_title()


def test_passes_bars():
    table = pd.DataFrame({col: [1.0, 0.0] for col, _ in figures.PASS_BARS}, index=["NIB", "RISE"])
    fig, ax = plt.subplots()
    figures.passes_bars(ax, table)
    assert _bars(ax) == 2 * len(figures.PASS_BARS) and ax.get_yscale() == "log"


def test_ground_truth_bars():
    board = pd.DataFrame(dict(pointing=[50.0, 20.0], text_gt=[90.0, 60.0]), index=["nib", "rise"])
    gt = pd.DataFrame(dict(method=["nib", "rise"] * 2, metric=np.repeat(["pointing", "text_gt"], 2),
                           value=1.0, sem=0.5))
    fig = figures.ground_truth_bars(board, gt, [("pointing", 25.0, "p"), ("text_gt", 50.0, "t")])
    assert len(fig.axes) == 2 and all(_bars(ax) == 2 for ax in fig.axes)
    assert fig.axes[0].get_legend() is not None and fig.axes[1].get_legend() is None


def test_randomisation_curves():
    rows = [dict(side=side, method=m, kind="randomised", top=top, spearman=0.5)
            for side in ("image", "text") for m in ("nib", "rise") for top in (1, 2)]
    rows += [dict(side=side, method=m, kind="other pair", top=0, spearman=0.0)
             for side in ("image", "text") for m in ("nib", "rise")]
    fig = figures.randomisation_curves(pd.DataFrame(rows), ["nib", "rise"], {"image": 2, "text": 2})
    assert len(fig.axes) == 2
    assert all(len(ax.lines) == 4 for ax in fig.axes)             # a curve + a reference each
    assert list(fig.axes[0].lines[0].get_xdata()) == [0, 1, 2]


def test_explained_pair(image):
    fig = figures.explained_pair(image, "a caption", np.random.RandomState(0).rand(8, 8), "nib")
    assert _colorbars(fig) == 1 and fig.axes[1].get_title() == "nib, image side"
    fig = figures.explained_pair(image, "a caption", np.zeros((8, 8)), "nib",
                             patches=np.array([[1.0, -1.0], [0.5, 0.0]]))
    assert fig.axes[1].get_title() == "nib, signed"


# --- the explorer ------------------------------------------------------------------------------

def test_explorer_explain_pair_and_show(tiny, picture, monkeypatch):
    import IPython.display

    img, txt = explorer.explain_pair(tiny, picture, "a red circle", "nib", layer=1, num_steps=3)
    assert img.side == "image" and txt.side == "text"
    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    explorer.show(tiny, picture, "a red circle", signed=True)
    assert len(shown) == 1 and "nib, text side:" in shown[0].data    # the token HTML
    assert plt.gcf().axes[1].get_title() == "nib, signed"


def test_uploaded_image(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    item = {"content": buffer.getvalue()}
    assert explorer.uploaded_image(()) is None
    assert explorer.uploaded_image((item,)).size == image.size        # ipywidgets 8
    assert explorer.uploaded_image({"a.png": item}).mode == "RGB"     # ipywidgets 7


def test_explorer_widget(tiny, monkeypatch):
    pytest.importorskip("ipywidgets")
    import IPython.display

    box = explorer.explorer(tiny, seed=3)
    seed_box, caption_box = box.children[0].children[0], box.children[1]
    before = caption_box.value
    seed_box.value = 4                                               # a new scene's caption
    assert caption_box.value != before or before == ""
    assert box.children[3].children[0].max == tiny.image.n_blocks - 1
    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    box.children[4].click()                                          # "explain"
    assert len(shown) == 1 and caption_box.value.split()[0] in shown[0].data


def test_book_figures_fit_the_column_at_150_dpi():
    import matplotlib as mpl

    from nibcore.book import figures

    assert mpl.rcParams["figure.dpi"] >= 150 and mpl.rcParams["savefig.dpi"] >= 150
    for n, w in [(1, 3.0), (5, 2.6), (8, 1.6), (12, 3.4)]:
        fig, axes = figures.panels(n, w, 2.0)
        width = fig.get_size_inches()[0]
        assert len(axes) == n and all(ax.get_visible() for ax in axes)
        assert width <= figures.COLUMN_IN + 1e-9
        assert sum(ax.get_visible() for ax in fig.axes) == n
        plt.close(fig)
    fig = figures.overlay_row(Image.new("RGB", (16, 16)), [np.zeros((16, 16))] * 5,
                              [f"m{k}" for k in range(5)], size=2.3)
    assert fig.get_size_inches()[0] <= figures.COLUMN_IN + 1e-9
    plt.close(fig)


def test_findings_html_escapes_and_marks_verdicts():
    from nibcore.book import figures

    html = figures.findings_html([("reproduced", "gap < 1e-3 & <b>"), ("fails", "x")])
    assert html.count("<li>") == 2 and "&lt;b&gt;" in html and "&amp;" in html
    assert "What we found" in html and "#b42318" in html and "#1a7f37" in html
