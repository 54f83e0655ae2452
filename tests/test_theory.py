"""Tests of nibcore.theory: the computations behind the theory chapters."""

import numpy as np
import pandas as pd
import pytest
import torch

from noise import assert_paths_close
from nibcore import explain
from nibcore.book import theory


def test_kl_bound_matches_closed_form_and_is_monotone():
    sq = np.array([2.0, 4.0])
    lam = np.linspace(0, 1, 11)
    b = theory.kl_bound(sq, lam, 2.0)
    np.testing.assert_allclose(b, 0.5 * lam ** 2 * 3.0 / 4.0)
    assert b[0] == 0 and np.all(np.diff(b) > 0)
    grid = theory.kl_bound(sq, lam[None, :], np.array([1.0, 2.0])[:, None])
    assert grid.shape == (2, 11) and np.all(grid[0] >= grid[1])
    with pytest.raises(ValueError):
        theory.kl_bound(sq, lam, 0.0)


def test_mutual_information_bounds():
    rng = np.random.default_rng(0)
    states = rng.normal(size=(6, 20))
    assert theory.mutual_information(states, 0.0, 1.0) == 0.0
    far = theory.mutual_information(states * 100, 1.0, 1.0, draws=32)
    assert far == pytest.approx(np.log(6), abs=1e-3)          # inputs fully distinguishable
    near = theory.mutual_information(states, 0.01, 10.0, draws=64)
    sq = (states ** 2).sum(1)
    assert -0.01 <= near < 0.05 and near <= theory.kl_bound(sq, 0.01, 10.0) + 0.01
    vals = [theory.mutual_information(states, lam, 1.0, draws=64) for lam in (0.1, 0.5, 1.0)]
    assert vals[0] < vals[1] < vals[2] <= np.log(6) + 1e-6
    # seeded: the same call gives the same estimate
    assert theory.mutual_information(states, 0.5, 1.0, seed=3) == \
        theory.mutual_information(states, 0.5, 1.0, seed=3)


def test_objective_path_matches_nib_endpoints(tiny, picture):
    a = explain(tiny, picture, "a red circle")
    f = theory.objective_path(tiny, picture, "a red circle", [0.0, 1.0])
    assert f[1] == pytest.approx(a.f1, abs=1e-5)
    assert f[0] == pytest.approx(a.f0, abs=1e-5)
    f_text = theory.objective_path(tiny, picture, "a red circle", [1.0], side="text")
    assert f_text[0] == pytest.approx(a.f1, abs=1e-4)      # the same pair's cosine
    f64 = theory.objective_path(tiny, picture, "a red circle", [0.5], dtype=torch.float64)
    assert f64[0] == pytest.approx(theory.objective_path(tiny, picture, "a red circle", [0.5])[0],
                                   abs=1e-4)


def test_completeness_table(tiny, picture):
    table = theory.completeness_table(tiny, [(picture, "a red circle")] * 2,
                                      num_steps=(2, 4))
    assert len(table) == 2 * 2 * 2
    assert set(table.columns) >= {"schedule", "num_steps", "sum", "f1_minus_f0", "gap"}
    np.testing.assert_allclose(table["gap"], table["sum"] - table["f1_minus_f0"])
    assert (table[table.schedule == "completeness"].evaluations == [16, 16, 32, 32]).all()


def test_equivalent_model_same_function_different_weights(tiny, picture):
    twin = theory.equivalent_model(tiny, seed=0)
    assert theory.parameter_distance(tiny, twin) > 0.1
    for side in ("image", "text"):
        a = explain(tiny, picture, "a red circle", side=side)
        b = explain(twin, picture, "a red circle", side=side)
        assert a.f1 == pytest.approx(b.f1, abs=1e-5)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)
    # the original is untouched
    assert_paths_close(explain(tiny, picture, "a red circle").f1, a.f1)


def test_full_context_attribution_zero_on_padding(tiny, picture):
    full = theory.full_context_attribution(tiny, picture, "a red circle")
    n = int(tiny.text_length(tiny.tokenize(["a red circle"]))[0])
    assert full.shape == (tiny.context_length,)
    assert np.abs(full[n:]).max() == 0
    assert np.abs(full[:n]).max() > 0
    a = explain(tiny, picture, "a red circle", side="text")
    np.testing.assert_allclose(full[:n], a.raw, atol=1e-5)


def test_sweep_spread_and_mask_means(tiny, picture):
    runs = theory.explain_over(tiny, picture, "a red circle", "nib", "num_steps", [2, 3])
    assert [a.params["num_steps"] for a in runs] == [2, 3]
    s = theory.spread([np.zeros((2, 2)), np.ones((2, 2)), np.ones((2, 2))])
    assert s["max_pairwise"] == 1.0 and s["std"].shape == (2, 2)
    assert s["mean_pairwise"] == pytest.approx(2 / 3)
    values = np.arange(16, dtype=float).reshape(4, 4)
    masks = np.zeros((2, 8, 8), bool)
    masks[0, :4, :4] = True          # top-left quarter at double resolution
    means = theory.mask_means(values, masks)
    assert means[0] == pytest.approx(values[:2, :2].mean()) and np.isnan(means[1])


def test_noisy_objective_spread_vanishes(tiny, picture):
    exact = theory.objective_path(tiny, picture, "a red circle", [0.5])[0]
    small = theory.noisy_objective(tiny, picture, "a red circle", 0.5, 1e-6, draws=4)
    large = theory.noisy_objective(tiny, picture, "a red circle", 0.5, 1.0, draws=4)
    assert np.abs(small - exact).max() < 1e-4
    assert large.std() > small.std()


def test_property_evidence_flags_random_methods(tiny, picture):
    table = theory.property_evidence(tiny, picture, "a red circle", ["nib", "m2ib"],
                                     method_params={"m2ib": {"num_steps": 2, "n_samples": 2}})
    row = table.set_index("method")
    assert bool(row.loc["nib", "deterministic"]) and not row.loc["nib", "takes_seed"]
    assert row.loc["m2ib", "takes_seed"] and row.loc["m2ib", "max_diff_two_runs"] > 0
    assert row.loc["nib", "forward"] >= 2


# --- helpers of the theory chapters ------------------------------------------------------------

def test_mutual_information_grid_matches_pointwise():
    states = np.random.RandomState(0).randn(5, 3, 4)
    grid = theory.mutual_information_grid(states, [0.0, 0.5, 1.0], [0.5, 2.0], draws=8, seed=1)
    assert list(grid) == [0.5, 2.0] and grid[0.5].shape == (3,)
    assert grid[2.0][0] == 0.0
    assert grid[0.5][2] == pytest.approx(theory.mutual_information(states, 1.0, 0.5, 8, seed=1))


def test_bottleneck_states_stacks_pairs(tiny, picture):
    class Scene:
        image, caption = picture, "a red circle"

    states = theory.bottleneck_states(tiny, [Scene(), Scene()])
    z = theory.bottleneck(tiny, picture, "a red circle")[0]
    assert states.shape == (2, *z.shape[1:])
    torch.testing.assert_close(states[1:], z)


def test_completeness_summary():
    table = pd.DataFrame(dict(pair=[0, 1, 0, 1], schedule=["a", "a", "b", "b"],
                              num_steps=[5, 5, 5, 5], evaluations=[5, 5, 40, 40],
                              sum=[1.0, 3.0, 2.0, 2.0], f1_minus_f0=[2.0, 2.0, 2.0, 2.0],
                              relative_gap=[-0.5, 0.3, 0.0, -0.1], seconds=[1.0, 1.0, 2.0, 2.0]))
    s = theory.completeness_summary(table)
    assert list(s.columns) == list(theory.COMPLETENESS_COLUMNS)
    assert s.loc[("a", 5), "median_abs_relative_gap"] == pytest.approx(0.4)
    assert s.loc[("b", 5), "evaluations"] == 40 and s.loc[("a", 5), "mean_sum"] == 2.0


def test_flat_below():
    grid = np.array([1e-3, 1e-2, 1e-1, 1.0])
    path = np.array([0.0, 0.0, 0.005, 0.5, 1.0])     # f(0), then f on grid
    assert theory.flat_below(path, grid) == 1e-1      # 0.005 is within 1% of |f(1) − f(0)|
    assert theory.flat_below(path, grid, rel=0.001) == 1e-2


def test_token_mass_by_layer_pins_the_last_block_degeneracy(tiny, picture):
    pairs = [(picture, "a red circle and a blue ring"), (picture, "a green square")]
    mass = theory.token_mass_by_layer(tiny, pairs, side="text")
    assert sorted(mass.layer.unique()) == list(range(tiny.text.n_blocks))
    assert (mass.content_share + mass.pooled_share <= 1 + 1e-9).all()
    last = mass[mass.blocks_above == 1]
    lower = mass[mass.blocks_above >= 2]
    assert (last.content_max_over_pooled < 1e-2).all()         # degenerate: content ≈ 0
    assert (last.content_share < 1e-2).all()
    assert (lower.content_max_over_pooled > 5e-2).all()        # not degenerate lower down
    assert ((mass.content_share >= 0) & (mass.content_share <= 1)).all()
    image = theory.token_mass_by_layer(tiny, pairs[:1], side="image", layers=[3])
    assert image.content_max_over_pooled.iloc[0] < 1e-2        # the image tower likewise
    summary = theory.token_mass_summary(pd.concat([mass, image]))
    assert summary.loc[("text", 3), "pairs"] == 2 and summary.loc[("image", 3), "pairs"] == 1


def test_schedule_agreement(tiny):
    from nibcore.world import scenes

    held = scenes.heldout(2, n_objects=2)
    agree = theory.schedule_agreement(tiny, held, paper_steps=4, completeness_steps=2)
    assert list(agree.scene) == [s.seed for s in held]
    assert agree.correlation.between(-1, 1).all()
    assert (agree.same_top_object == (agree.top_paper == agree.top_completeness)).all()
    assert agree.cls_share_paper.between(0, 1).all()
    one = explain(tiny, held[0].image, held[0].caption, schedule="paper", num_steps=4)
    assert agree.relative_gap_paper.iloc[0] == pytest.approx(
        one.completeness_gap / abs(one.f1 - one.f0), rel=1e-4, abs=1e-6)


def test_information_vs_sigma_tends_to_log_b_as_sigma_shrinks():
    rng = np.random.default_rng(1)
    states = rng.normal(size=(5, 12))
    scale = theory.typical_distance(states)
    d = np.linalg.norm(states[:, None] - states[None], axis=-1)
    assert scale == pytest.approx(np.median(d[np.triu_indices(5, 1)]))
    table = theory.information_vs_sigma(states, [0.0, 0.5, 1.0], [100 * scale, scale / 100],
                                        draws=32)
    assert list(table.columns) == ["λ=0", "λ=0.5", "λ=1", "log B"]
    assert (table["λ=0"] == 0).all()
    wide, narrow = table.iloc[0], table.iloc[1]
    assert wide["λ=0.5"] < 0.05 and wide["λ=0.5"] <= wide["λ=1"] + 1e-3   # noisy: ordered
    assert narrow["λ=0.5"] == pytest.approx(np.log(5), abs=1e-3)          # σ → 0: log B for
    assert narrow["λ=1"] == pytest.approx(np.log(5), abs=1e-3)            # every λ > 0


def test_noisy_attribution_tends_to_nib_as_sigma_vanishes(tiny, picture):
    nib = explain(tiny, picture, "a red circle", num_steps=5).raw
    exact = theory.noisy_attribution(tiny, picture, "a red circle", 0.0, draws=2, num_steps=5)
    assert_paths_close(exact, nib)
    errors = [np.abs(theory.noisy_attribution(tiny, picture, "a red circle", s, draws=4,
                                              num_steps=5) - nib).max() for s in (1.0, 1e-3)]
    assert errors[1] < 1e-3 < errors[0]
    again = theory.noisy_attribution(tiny, picture, "a red circle", 1.0, draws=4, num_steps=5)
    assert np.abs(again - nib).max() == errors[0]                          # seeded
