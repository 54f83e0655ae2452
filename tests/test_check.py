"""The exercises' self-checks (nibcore.book.check): the reference solution passes, each named
wrong answer fails with a hint, bad input gets one line, and no output shows the expected value."""

import numpy as np
import pytest

import nibcore
from nibcore import explain
from nibcore.book import check, theory
from nibcore.datasets import load_dataset
from nibcore.world import scenes


@pytest.fixture(scope="module")
def mini():
    return nibcore.load_model("mini")


def run(capsys, fn, *args, **kw):
    ok = fn(*args, **kw)
    out = capsys.readouterr().out
    assert out.count("\n") == 1, f"one line, got {out!r}"
    assert out.startswith("right" if ok else "not yet: ")
    return ok, out


def hides(out, *values):
    for v in values:
        for text in {str(v), f"{v:.3f}" if isinstance(v, float) else str(v),
                     f"{v:.2f}" if isinstance(v, float) else str(v)}:
            assert text not in out.removeprefix("not yet: "), f"{out!r} shows {text}"


# --- ex-clip-tokens ------------------------------------------------------------------------------

def test_clip_tokens(capsys, mini):
    want = check.expected_clip_tokens(mini)
    rows, cols = mini.grid
    assert want[0] == rows * cols + 1 and want[1] == 7 * 7 + 1
    assert run(capsys, check.ex_clip_tokens, *want, model=mini)[0]
    wrong = {"patches only, no CLS": (want[0] - 1, want[1] - 1),
             "ViT-B/32 at 32 x 32 patches of 7 px": (want[0], 32 * 32 + 1),
             "mini's grid of 64 px / 4": (17, want[1])}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_clip_tokens, *answer, model=mini)
        assert not ok, name
        hides(out, *want)
    ok, out = run(capsys, check.ex_clip_tokens, "65", 50.0, model=mini)
    assert not ok and "two integers" in out


# --- ex-claims-strict ----------------------------------------------------------------------------

def test_claims_strict(capsys):
    k = check._paper_comparisons()
    assert k == 7                                           # eight methods: seven baselines
    assert run(capsys, check.ex_claims_strict, 0.9 ** k)[0]
    assert run(capsys, check.ex_claims_strict, round(0.9 ** k, 3))[0]
    wrong = {"NIB against itself too": 0.9 ** (k + 1), "one comparison": 0.9,
             "at least one holds": 1 - 0.1 ** k, "a guess": 0.5}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_claims_strict, answer)
        assert not ok, name
        hides(out, 0.9 ** k, round(0.9 ** k, 3))
    assert "one number" in run(capsys, check.ex_claims_strict, "0.48")[1]
    assert "between 0 and 1" in run(capsys, check.ex_claims_strict, 4.8)[1]


# --- ex-narrow-tight -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def narrowing(mini):
    """The chapter's Monte Carlo run, smaller (8 inputs, 16 draws)."""
    held = scenes.heldout(8)
    states = theory.bottleneck_states(mini, held)
    sq_norms = (states ** 2).flatten(1).sum(1).numpy()
    scale = theory.typical_distance(states)
    mc_lambdas = np.linspace(0, 1, 11)
    mc_sigmas = [round(scale * k, 1) for k in (3.0, 1.0, 0.3)]
    mi = theory.mutual_information_grid(states, mc_lambdas, mc_sigmas, 16, seed=0)
    return mi, sq_norms, mc_lambdas, mc_sigmas


def test_narrow_tight(capsys, narrowing):
    mi, sq_norms, mc_lambdas, mc_sigmas = narrowing
    # the reference solution: the solution's recipe, written out
    s = mc_sigmas[1]
    bound = theory.kl_bound(sq_norms, mc_lambdas, s)
    first = next(lam for lam, b, m in zip(mc_lambdas, bound, mi[s]) if lam > 0 and b > 1.1 * m)
    assert run(capsys, check.ex_narrow_tight, first, *narrowing)[0]
    other = theory.kl_bound(sq_norms, mc_lambdas, mc_sigmas[2])
    wrong_sigma = next(lam for lam, b, m in zip(mc_lambdas, other, mi[mc_sigmas[2]])
                       if lam > 0 and b > 1.1 * m)
    wrong = {"the last λ of the grid": float(mc_lambdas[-1]),
             "λ = 0, where both are 0": 0.0,
             "a λ one step later": float(first + (mc_lambdas[1] - mc_lambdas[0]))}
    if wrong_sigma != first:
        wrong["the smallest σ instead of the middle one"] = wrong_sigma
    for name, answer in wrong.items():
        if np.isclose(answer, first):
            continue
        ok, out = run(capsys, check.ex_narrow_tight, answer, *narrowing)
        assert not ok, name
        hides(out, first)
    assert len([a for a in wrong.values() if not np.isclose(a, first)]) >= 2
    assert "one of the λ" in run(capsys, check.ex_narrow_tight, 0.123, *narrowing)[1]
    assert "one number" in run(capsys, check.ex_narrow_tight, [first], *narrowing)[1]


# --- ex-passes-predict ---------------------------------------------------------------------------

def test_passes_predict(capsys, mini):
    pair = load_dataset("scenes")[0]
    # the reference solution: e measured from NIB's default call, then the solution's formulas
    default = explain(mini, pair.image, pair.text)
    steps = nibcore.METHODS["nib"].defaults["num_steps"]
    extra = default.passes["forward_rows"] - 2 - steps
    S, R = 20, 8
    chunks = -(-S // R)
    reference = {"forward": chunks + 3, "backward": chunks,
                 "forward_rows": S + extra + 2, "backward_rows": S}
    assert run(capsys, check.ex_passes_predict, reference, mini, pair.image, pair.text)[0]
    wrong = {"one call per λ step": {**reference, "forward": S + 2, "backward": S},
             "S / R rounded down": {**reference, "forward": S // R + 3, "backward": S // R},
             "no extra λ = 0 row": {**reference, "forward_rows": S + 2},
             "gradient rows include the extra row": {**reference, "backward_rows": S + extra}}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_passes_predict, answer, mini, pair.image, pair.text)
        assert not ok, name
        for k, v in reference.items():
            assert f"= {v}" not in out and f": {v}" not in out
    assert "keys" in run(capsys, check.ex_passes_predict, [1, 2, 3, 4], mini, pair.image,
                         pair.text)[1]
    assert "integer" in run(capsys, check.ex_passes_predict, {**reference, "forward": 6.5},
                            mini, pair.image, pair.text)[1]


# --- ex-abl-map ----------------------------------------------------------------------------------

def test_abl_map(capsys):
    from nibcore.sweeps import PAPER_BLOCKS, paper_layer

    def reference(layer, blocks):
        return max(0, blocks - (PAPER_BLOCKS - layer))

    assert run(capsys, check.ex_abl_map, reference)[0]
    wrong = {"no clamp at 0": lambda layer, blocks: blocks - (PAPER_BLOCKS - layer),
             "relative depth": lambda layer, blocks: layer * blocks // PAPER_BLOCKS,
             "the library's paper_layer": lambda layer, blocks: paper_layer(layer, blocks)
             if layer < blocks else 0,
             "off by one": lambda layer, blocks: max(0, blocks - (PAPER_BLOCKS - layer) - 1)}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_abl_map, answer)
        assert not ok, name
    assert "below 0" in run(capsys, check.ex_abl_map, wrong["no clamp at 0"])[1]
    assert "distance to the top" in run(capsys, check.ex_abl_map, wrong["relative depth"])[1]
    assert "a function" in run(capsys, check.ex_abl_map, 3)[1]
    assert "return an int" in run(capsys, check.ex_abl_map, lambda layer, blocks: "3")[1]
    assert "raised" in run(capsys, check.ex_abl_map, lambda layer: layer)[1]


# --- ex-neg-minmax -------------------------------------------------------------------------------

def test_neg_minmax(capsys):
    assert run(capsys, check.ex_neg_minmax, lambda s: -s.min() / (s.max() - s.min()))[0]
    wrong = {"zero stays zero": lambda s: 0.0,
             "divided by the maximum": lambda s: -s.min() / s.max(),
             "signed": lambda s: s.min() / (s.max() - s.min())}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_neg_minmax, answer)
        assert not ok, name
    assert "one number" in run(capsys, check.ex_neg_minmax, lambda s: [0.1, 0.2])[1]
    assert "a function" in run(capsys, check.ex_neg_minmax, 0.3)[1]


# --- ex-clip-confusions --------------------------------------------------------------------------

def test_clip_confusions(capsys, mini):
    truth, best = check.confusions(mini)
    wrong_colour = sum(b.split()[0] != t.split()[0] for b, t in zip(best, truth))
    wrong_shape = sum(b.split()[1] != t.split()[1] for b, t in zip(best, truth))
    assert wrong_colour + wrong_shape > 0, "the blurred scenes leave nothing to find"
    reference = "colour" if wrong_colour > wrong_shape else "shape" \
        if wrong_shape > wrong_colour else "equal"
    assert run(capsys, check.ex_clip_confusions, reference, model=mini)[0]
    assert run(capsys, check.ex_clip_confusions, reference.upper() + " ", model=mini)[0]
    hints = set()
    for name in {"colour", "shape", "equal"} - {reference}:
        ok, out = run(capsys, check.ex_clip_confusions, name, model=mini)
        assert not ok, name
        hints.add(out)
    assert len(hints) == 1, "the hint is the same whatever the wrong answer (it gives nothing away)"
    assert "one word" in run(capsys, check.ex_clip_confusions, 3, model=mini)[1]
    assert "one word" in run(capsys, check.ex_clip_confusions, "the shapes", model=mini)[1]


# --- ex-passes-nib -------------------------------------------------------------------------------

def make_nib(layer_shift=0, grid="paper", times_z=True, chunk=4, steps=10):
    """NIB from the split model (the exercise's solution), with named ways to get it wrong."""
    import torch

    from nibcore.base import default_layer
    from nibcore.inputs import prepare_pairs

    def my_nib(model, image, text, side):
        pixels, ids = prepare_pairs(model, image, text)
        tower = model.tower(side)
        layer = default_layer(tower) + layer_shift
        with torch.no_grad():
            other = model.encode_text(ids) if side == "image" else model.encode_image(pixels)
            z = tower.lower(pixels if side == "image" else ids, layer)
        k = torch.arange(1, steps + 1.0) if grid == "paper" else torch.arange(0, steps + 0.0)
        lam = k / steps
        total = torch.zeros_like(z[0])
        for part in lam.split(chunk):
            zs = (part[:, None, None] * z).requires_grad_()
            feats = tower.upper(zs, layer, None if side == "image"
                                else ids.expand(len(part), -1))
            f = torch.cosine_similarity(feats, other, dim=-1)
            (g,) = torch.autograd.grad(f.sum(), zs)
            total += g.sum(0)
        grad = total / steps
        return ((z[0] * grad) if times_z else grad).sum(-1).numpy()

    return my_nib


def test_passes_nib(capsys, mini):
    for chunk in (4, 3, 10):             # any chunking is accepted
        assert run(capsys, check.ex_passes_nib, make_nib(chunk=chunk), model=mini)[0], chunk
    wrong = {"gradient alone, no z ⊙ ∂f/∂z": make_nib(times_z=False),
             "one layer lower": make_nib(layer_shift=-1),
             "left Riemann sum, λ_k = (k - 1)/n": make_nib(grid="left"),
             "five steps instead of ten": make_nib(steps=5)}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_passes_nib, answer, model=mini)
        assert not ok, name
    assert "1-D" in run(capsys, check.ex_passes_nib, lambda *a: [[1, 2], [3, 4]], model=mini)[1]
    assert "one score per token" in run(capsys, check.ex_passes_nib, lambda *a: np.zeros(3),
                                        model=mini)[1]
    assert "raised" in run(capsys, check.ex_passes_nib, lambda m, i: 0, model=mini)[1]


# --- ex-metrics-game -----------------------------------------------------------------------------

def test_metrics_game(capsys, mini):
    from nibcore import metrics
    from nibcore.inputs import prepare_images

    scene = scenes.heldout(1, n_objects=2, start=900)[0]
    caption = scene.caption_for([0])
    pixels = prepare_images(mini, [scene.image])
    ids = mini.tokenize([caption])
    scores = explain(mini, scene.image, caption).scores
    # the reference solution: the solution's one call
    ps = check.GAME_POWERS
    ref = metrics.image_confidence(mini, pixels.expand(5, -1, -1, -1), ids.expand(5, -1),
                                   np.stack([scores ** p for p in ps]))
    assert run(capsys, check.ex_metrics_game, list(ref["drop"]), mini, pixels, ids, scores)[0]
    assert np.ptp(ref["drop"]) > 0, "the power changes the Drop (the point of the exercise)"
    wrong = {"p from 4 down to 0.25": ref["drop"][::-1],
             "the map without the power": [ref["drop"][2]] * 5,
             "s1 instead of the Drop": ref["s1"],
             "the Increase": ref["increase"]}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_metrics_game, list(answer), mini, pixels, ids, scores)
        assert not ok, name
        hides(out, *[float(d) for d in ref["drop"]])
    assert "5 numbers" in run(capsys, check.ex_metrics_game, [1, 2], mini, pixels, ids,
                              scores)[1]


# --- ex-main-lab ---------------------------------------------------------------------------------

def lab_means(model, pairs, transform):
    """The lab's solution: mean Drop and Increase of NIB's (transformed) maps on the lab's pairs
    (``pairs``: (pair, NIB's map), computed once)."""
    from nibcore import metrics
    from nibcore.inputs import prepare_images

    rng = np.random.default_rng(0)
    pixels = prepare_images(model, [p.image for p, _ in pairs])
    ids = model.tokenize([p.text for p, _ in pairs])
    maps = np.stack([transform(scores, rng) for _, scores in pairs])
    conf = metrics.image_confidence(model, pixels, ids, maps)
    drops, incrs = conf["drop"], conf["increase"]
    return float(np.mean(drops)), float(np.mean(incrs))


@pytest.fixture(scope="module")
def lab_nib(mini):
    """The lab's 200 pairs and NIB's maps of them (shared by the image-side labs)."""
    data = load_dataset("scenes")
    pairs = [data[i] for i in check.lab_pairs(200)]
    return pairs, [explain(mini, p.image, p.text).scores for p in pairs]


def test_main_lab(capsys, mini, lab_nib):
    n = 200
    pairs = list(zip(*lab_nib))
    ref = lab_means(mini, pairs, lambda s, rng: s)
    assert run(capsys, check.ex_main_lab, *ref, n)[0]
    want = check.expected_main_lab(n)
    wrong = {"the inverted map": lab_means(mini, pairs, lambda s, rng: 1 - s),
             "a random map": lab_means(mini, pairs, lambda s, rng: rng.random(s.shape)
                                       .astype(np.float32)),
             "the Drop as a fraction": (ref[0] / 100, ref[1]),
             "half the pairs": lab_means(mini, pairs[:n // 2], lambda s, rng: s)}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_main_lab, *answer, n)
        assert not ok, name
        hides(out, *want)
    assert "two numbers" in run(capsys, check.ex_main_lab, "1.6", 20.0, n)[1]


# --- ex-text-lab ---------------------------------------------------------------------------------

def test_text_lab(capsys, mini):
    from nibcore import metrics
    from nibcore.inputs import prepare_images

    n = 200
    data = load_dataset("scenes")
    pairs = [data[i] for i in check.lab_pairs(n, side="text")]
    scores = [explain(mini, p.image, p.text, side="text").scores for p in pairs]
    pixels = prepare_images(mini, [p.image for p in pairs])
    ids = mini.tokenize([p.text for p in pairs])
    rng = np.random.default_rng(0)

    def drop(maps, protocol="paper", k=n):
        conf = metrics.text_confidence(mini, pixels[:k], ids[:k], maps[:k], protocol)
        return float(conf["drop"].mean())

    ref = drop(scores)
    assert run(capsys, check.ex_text_lab, ref, n)[0]
    assert run(capsys, check.ex_text_lab, drop(scores, "clean"), n, "clean")[0]
    want = check.expected_text_lab(n)
    wrong = {"the inverted map": drop([1 - s for s in scores]),
             "a random map": drop([rng.random(s.shape) for s in scores]),
             "the clean protocol": drop(scores, "clean"),
             "half the pairs": drop(scores, k=n // 2),
             "a fraction instead of %": ref / 100}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_text_lab, answer, n)
        assert not ok, name
        hides(out, want)
    assert "one number" in run(capsys, check.ex_text_lab, [ref], n)[1]


# --- ex-abl-lab, ex-beta-lab ---------------------------------------------------------------------

def image_drops(model, pairs, maps):
    from nibcore import metrics
    from nibcore.inputs import prepare_images

    conf = metrics.image_confidence(model, prepare_images(model, [p.image for p in pairs]),
                                    model.tokenize([p.text for p in pairs]), np.stack(maps))
    return float(conf["drop"].mean())


@pytest.mark.parametrize("lab", ["abl", "beta"])
def test_store_labs(capsys, mini, lab):
    n = 100
    data = load_dataset("scenes")
    if lab == "abl":
        layer = 2
        params, kw = {"layer": layer}, {"layer": layer}
        file, method, fn, args = "ablation-layers", "nib", check.ex_abl_lab, (layer, n)
        other_kw = {"layer": layer + 1}
    else:
        n = 50                     # M2IB optimises each map: the lab's 50 pairs
        params, kw = {"beta": 0.01, "seed": 0}, {"beta": 0.01, "seed": 0}
        file, method, fn, args = "table5-beta", "m2ib", check.ex_beta_lab, (0.01, 0, n)
        other_kw = None
    pairs = [data[i] for i in check.store_lab_pairs(file, n, method, "image", params)]
    maps = [explain(mini, p.image, p.text, method=method, **kw).scores for p in pairs]
    ref = image_drops(mini, pairs, maps)
    assert run(capsys, fn, ref, *args)[0]
    rng = np.random.default_rng(0)
    want = check.expected_store_lab(file, "img_conf_drop", n, method, "image", params)
    wrong = {"the inverted map": image_drops(mini, pairs, [1 - m for m in maps]),
             "a random map": image_drops(mini, pairs, [rng.random(m.shape).astype(np.float32)
                                                       for m in maps]),
             "a fraction instead of %": ref / 100}
    if other_kw is not None:
        wrong["another layer"] = image_drops(mini, pairs, [
            explain(mini, p.image, p.text, method=method, **other_kw).scores for p in pairs])
    for name, answer in wrong.items():
        ok, out = run(capsys, fn, answer, *args)
        assert not ok, name
        hides(out, want)
    assert "one number" in run(capsys, fn, [ref], *args)[1]


# --- ex-beyond-lab -------------------------------------------------------------------------------

def test_beyond_lab(capsys, mini, lab_nib):
    from nibcore import metrics

    n = 200
    pairs, maps = lab_nib
    rng = np.random.default_rng(0)

    def means(ms, k=n):
        point = [100.0 * metrics.pointing_game(m, p.meta["mask"]) for m, p in zip(ms, pairs)]
        energy = [100.0 * metrics.energy_in_mask(m, p.meta["mask"]) for m, p in zip(ms, pairs)]
        return float(np.mean(point[:k])), float(np.mean(energy[:k]))

    ref = means(maps)
    assert run(capsys, check.ex_beyond_lab, *ref, n)[0]
    wrong = {"the inverted map": means([1 - m for m in maps]),
             "a random map": means([rng.random(m.shape) for m in maps]),
             "fractions instead of %": (ref[0] / 100, ref[1] / 100),
             "half the pairs": means(maps, n // 2)}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_beyond_lab, *answer, n)
        assert not ok, name
    assert "two numbers" in run(capsys, check.ex_beyond_lab, "50", 20.0, n)[1]


# --- ex-metrics-pool -----------------------------------------------------------------------------

def test_metrics_pool(capsys, mini):
    words = check.pooled_words(mini)
    reference = sum(w in shapes for w, shapes in words)
    assert 0 < reference < len(words), "the exercise has something to find both ways"
    assert run(capsys, check.ex_metrics_pool, reference, model=mini)[0]
    colour = sum(w not in shapes for w, shapes in words)
    wrong = {"never": 0, "always": len(words), "the other captions": colour,
             "one off": reference + 1}
    for name, answer in wrong.items():
        if answer == reference:
            continue
        ok, out = run(capsys, check.ex_metrics_pool, answer, model=mini)
        assert not ok, name
        hides(out, reference)
    assert "one integer" in run(capsys, check.ex_metrics_pool, 46.0, model=mini)[1]
    assert "between 0 and" in run(capsys, check.ex_metrics_pool, 51, model=mini)[1]


# --- ex-compl-random -----------------------------------------------------------------------------

def test_compl_random(capsys):
    want = check.expected_compl_random()
    assert run(capsys, check.ex_compl_random, *want)[0]
    others = {(a, b) for a in (True, False) for b in (True, False)} - {want}
    assert len(others) == 3
    hints = set()
    for answer in others:
        ok, out = run(capsys, check.ex_compl_random, *answer)
        assert not ok, answer
        hints.add(out)
    assert len(hints) == 1, "the hint does not say which of the two is wrong"
    assert "two booleans" in run(capsys, check.ex_compl_random, "yes", 1)[1]


# --- ex-preface-one ------------------------------------------------------------------------------

def test_preface_one(capsys, mini):
    from nibcore.book import theory

    scene = scenes.sample(7, n_objects=2)          # the preface's SCENE_SEED
    att = explain(mini, scene.image, scene.caption_for([0]))
    means = theory.mask_means(att.scores, scene.masks)
    reference = scene.objects[int(np.argmax(means))]
    assert run(capsys, check.ex_preface_one, reference, mini, scene)[0]
    assert run(capsys, check.ex_preface_one, reference.upper(), mini, scene)[0]
    other = [o for o in scene.objects if o != reference][0]
    full = explain(mini, scene.image, scene.caption)
    wrong = {"the other object": other, "it does not move": "neither",
             "where the full caption's map peaks, if different":
                 scene.objects[int(np.argmax(theory.mask_means(full.scores, scene.masks)))]}
    for name, answer in wrong.items():
        if answer == reference:
            continue
        ok, out = run(capsys, check.ex_preface_one, answer, mini, scene)
        assert not ok, name
    assert "one of the scene's objects" in run(capsys, check.ex_preface_one, "blue moon", mini,
                                               scene)[1]
    assert "phrase" in run(capsys, check.ex_preface_one, 0, mini, scene)[1]


# --- ex-metrics-lab ------------------------------------------------------------------------------

def test_metrics_lab(capsys, mini, lab_nib):
    """On the lab's first 60 pairs (each curve scores 11 images per pair, four answers: the
    chapter's 200 would take a minute here); the check takes any n the store has."""
    from nibcore import metrics
    from nibcore.inputs import prepare_images

    n = 60
    pairs, maps = lab_nib
    pairs, maps = pairs[:n], maps[:n]
    pixels = prepare_images(mini, [p.image for p in pairs])
    ids = mini.tokenize([p.text for p in pairs])
    rng = np.random.default_rng(0)

    def means(ms, k=n):
        curves = metrics.insertion_deletion(mini, pixels[:k], ids[:k], np.stack(ms[:k]))
        return float(curves["insertion"].mean()), float(curves["deletion"].mean())

    ref = means(maps)
    assert run(capsys, check.ex_metrics_lab, *ref, n)[0]
    wrong = {"the inverted map": means([1 - m for m in maps]),
             "a random map": means([rng.random(m.shape).astype(np.float32) for m in maps]),
             "the two AUCs swapped": ref[::-1],
             "fractions instead of × 100": (ref[0] / 100, ref[1] / 100),
             "half the pairs": means(maps, n // 2)}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_metrics_lab, *answer, n)
        assert not ok, name
        hides(out, *ref)
    assert "two numbers" in run(capsys, check.ex_metrics_lab, "50", 20.0, n)[1]
    assert "an int" in run(capsys, check.ex_metrics_lab, *ref, 2.5)[1]


# --- ex-passes-lab -------------------------------------------------------------------------------

def test_passes_lab(capsys, mini):
    from nibcore import metrics
    from nibcore.inputs import prepare_images

    n, steps = 100, 20
    data = load_dataset("scenes")
    idx = check.store_lab_pairs("ablation-steps", n, "nib", "image", {"num_steps": steps})
    pairs = [data[i] for i in idx]
    atts = [explain(mini, p.image, p.text, num_steps=steps) for p in pairs]
    pixels = prepare_images(mini, [p.image for p in pairs])
    ids = mini.tokenize([p.text for p in pairs])
    rng = np.random.default_rng(0)

    def drop(maps):
        return float(metrics.image_confidence(mini, pixels, ids, np.stack(maps))["drop"].mean())

    def summed(these):
        return {k: sum(a.passes[k] for a in these) for k in check.PASS_KEYS}

    maps = [a.scores for a in atts]
    ref = drop(maps), summed(atts)
    assert run(capsys, check.ex_passes_lab, *ref, steps, n)[0]
    default = [explain(mini, p.image, p.text) for p in pairs]   # num_steps forgotten
    wrong = {"the inverted map": (drop([1 - m for m in maps]), ref[1]),
             "a random map": (drop([rng.random(m.shape).astype(np.float32) for m in maps]),
                              ref[1]),
             "num_steps left at its default": (drop([a.scores for a in default]),
                                               summed(default)),
             "one pair's counts": (ref[0], dict(atts[0].passes)),
             "a fraction instead of %": (ref[0] / 100, ref[1])}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_passes_lab, *answer, steps, n)
        assert not ok, name
        hides(out, ref[0], *ref[1].values())
    assert "one number" in run(capsys, check.ex_passes_lab, [ref[0]], ref[1], steps, n)[1]
    assert "keys" in run(capsys, check.ex_passes_lab, ref[0], [1, 2, 3, 4], steps, n)[1]
    assert "integer" in run(capsys, check.ex_passes_lab, ref[0], {**ref[1], "forward": 1.5},
                            steps, n)[1]


# --- ex-passes-cost ------------------------------------------------------------------------------

def test_passes_cost(capsys, mini):
    pair = load_dataset("scenes")[0]
    L = mini.tower("image").n_blocks

    def costs(backward=2.0, upper_of=lambda layer: (L - layer) / L, single=2, m2ib_shift=0):
        out = []
        for m in ("nib", "m2ib"):
            a = explain(mini, pair.image, pair.text, method=m)
            layer = a.extras["layer"] + (m2ib_shift if m == "m2ib" else 0)
            p, up = a.passes, upper_of(layer)
            out.append((p["forward_rows"] - single) * up + backward * p["backward_rows"] * up
                       + layer / L)
        return out

    ref = costs()                                    # the solution's loop, written out
    assert run(capsys, check.ex_passes_cost, *ref, mini, pair.image, pair.text)[0]
    wrong = {"a backward as cheap as a forward": costs(backward=1.0),
             "every row a full forward": costs(upper_of=lambda layer: 1.0),
             "the single-row calls counted as upper rows": costs(single=0),
             "M2IB one block later, as on ViT-B/32": costs(m2ib_shift=1),
             "NIB and M2IB swapped": ref[::-1]}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_passes_cost, *answer, mini, pair.image, pair.text)
        assert not ok, name
        hides(out, *ref)
    assert "twice" in run(capsys, check.ex_passes_cost, *wrong["a backward as cheap as a "
                                                                "forward"],
                          mini, pair.image, pair.text)[1]
    assert "two numbers" in run(capsys, check.ex_passes_cost, "11", 100.0, mini, pair.image,
                                pair.text)[1]


# --- ex-text-minimum, ex-text-clean --------------------------------------------------------------

@pytest.fixture(scope="module")
def text_probe_rows(mini):
    """The chapter's probes on the 3-word captions (mechanisms.probe_maps), fewer pairs."""
    from nibcore.book import mechanisms

    return mechanisms.probe_maps(mini, load_dataset("scenes"), n=24, seed=0)


def test_text_minimum(capsys, mini, text_probe_rows):
    from nibcore.book import mechanisms

    n = 24
    summary = mechanisms.probe_summary(text_probe_rows)
    row = summary[summary.probe == "nib"].iloc[0]
    reference = float(row["pooled_is_zero"])          # the solution: the summary's row
    assert 0 < reference < 100, "the exercise has something to count"
    assert run(capsys, check.ex_text_minimum, reference, mini, n)[0]
    nib = text_probe_rows[text_probe_rows.probe == "nib"]
    wrong = {"a fraction instead of %": reference / 100,
             "the inverted map's share": float(
                 summary[summary.probe == "nib_inverted"].iloc[0]["pooled_is_zero"]),
             "the random map's share": float(
                 summary[summary.probe == "random"].iloc[0]["pooled_is_zero"]),
             "pairs whose pooled value is not 0": 100.0 - reference,
             "the pooled value's mean, not the share of zeros": 100 * nib.pooled_value.mean()}
    for name, answer in wrong.items():
        if abs(answer - reference) < 1e-9:
            continue
        ok, out = run(capsys, check.ex_text_minimum, answer, mini, n)
        assert not ok, name
        hides(out, reference)
    assert "in %" in run(capsys, check.ex_text_minimum, reference / 100, mini, n)[1]
    assert "one number" in run(capsys, check.ex_text_minimum, "28%", mini, n)[1]
    assert "between 0 and 100" in run(capsys, check.ex_text_minimum, 128.0, mini, n)[1]


def test_text_clean(capsys, mini, text_probe_rows):
    from nibcore import metrics
    from nibcore.book import mechanisms
    from nibcore.evaluation import seeded_subset
    from nibcore.inputs import prepare_images

    n = 24
    data = load_dataset("scenes")

    def probe(protocol):                              # the solution's loop
        pooled, other = [], []
        for i in seeded_subset(len(data), n, 0):
            pair = data[i]
            pixels, ids = prepare_images(mini, [pair.image]), mini.tokenize([pair.text])
            t, k = mechanisms.pooled_position(ids[0], mini.eot_id)
            maps = [np.where(np.arange(t + 2) == 1 + j, 0.0, 1.0) for j in range(t)]
            drops = metrics.text_confidence(mini, pixels.expand(t, -1, -1, -1),
                                            ids.expand(t, -1), maps, protocol)["drop"]
            pooled.append(drops[k])
            other.append(np.delete(drops, k).mean())
        return float(np.mean(pooled)), float(np.mean(other))

    ref = probe("clean")
    assert run(capsys, check.ex_text_clean, *ref, mini, n)[0]
    paper_ = probe("paper")
    summary = mechanisms.probe_summary(text_probe_rows).set_index("probe")
    assert np.isclose(paper_[0], summary.loc["zero_pooled", "drop"])    # the chapter's probes
    wrong = {"the paper protocol": paper_, "the two swapped": ref[::-1],
             "fractions instead of %": (ref[0] / 100, ref[1] / 100),
             "the other tokens summed, not averaged": (ref[0], probe_sum(mini, data, n))}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_text_clean, *answer, mini, n)
        assert not ok, name
        hides(out, *ref)
    assert "paper protocol" in run(capsys, check.ex_text_clean, *paper_, mini, n)[1]
    assert "two numbers" in run(capsys, check.ex_text_clean, [1.0, 2.0], 3.0, mini, n)[1]


def probe_sum(model, data, n):
    """ex-text-clean's "other" Drops summed over the other tokens of a pair, then averaged."""
    from nibcore import metrics
    from nibcore.book import mechanisms
    from nibcore.evaluation import seeded_subset
    from nibcore.inputs import prepare_images

    sums = []
    for i in seeded_subset(len(data), n, 0):
        pair = data[i]
        pixels, ids = prepare_images(model, [pair.image]), model.tokenize([pair.text])
        t, k = mechanisms.pooled_position(ids[0], model.eot_id)
        maps = [np.where(np.arange(t + 2) == 1 + j, 0.0, 1.0) for j in range(t)]
        drops = metrics.text_confidence(model, pixels.expand(t, -1, -1, -1),
                                        ids.expand(t, -1), maps, "clean")["drop"]
        sums.append(np.delete(drops, k).sum())
    return float(np.mean(sums))


# --- ex-gallery-norm -----------------------------------------------------------------------------

def test_gallery_norm(capsys, mini):
    import torch

    from nibcore.base import minmax

    held = [scenes.heldout(1, start=900 + k, n_objects=2 + k % 2)[0] for k in range(4)]
    images, captions = [s.image for s in held], [s.caption for s in held]
    methods = ["nib", "m2ib", "rise", "gradcam", "chefer", "saliency", "mfaba", "fastig"]
    params = {"rise": {"n_masks": 32}}
    text_side = {m: explain(mini, images, captions, method=m, side="text", **params.get(m, {}))
                 for m in methods}
    assert all(len(a.raw) == len(a.tokens) for atts in text_side.values() for a in atts)

    def alone(a):                                    # the solution, written out
        words = torch.as_tensor(np.asarray(a.raw, dtype=np.float64)[1:-1])
        return minmax(words[None], dims=[1])[0].numpy()

    change = {m: np.mean([np.abs(alone(a) - a.scores[1:-1]).mean() for a in text_side[m]])
              for m in methods}
    reference = max(change, key=change.get)
    assert run(capsys, check.ex_gallery_norm, reference, text_side)[0]
    assert run(capsys, check.ex_gallery_norm, reference.upper(), text_side)[0]

    def share(a):
        raw = np.abs(np.asarray(a.raw, dtype=np.float64))
        return raw[1:-1].sum() / raw.sum()

    shares = {m: np.median([share(a) for a in text_side[m]]) for m in methods}
    wrong = {"the method that changes least": min(change, key=change.get),
             "the highest share on the words": max(shares, key=shares.get),
             "the second largest change": sorted(change, key=change.get)[-2]}
    for name, answer in wrong.items():
        if np.isclose(change[answer], change[reference]):
            continue
        ok, out = run(capsys, check.ex_gallery_norm, answer, text_side)
        assert not ok, name
    assert "changes least" in run(capsys, check.ex_gallery_norm, wrong["the method that "
                                                                       "changes least"],
                                  text_side)[1]
    assert "one of" in run(capsys, check.ex_gallery_norm, "lime", text_side)[1]
    assert "name" in run(capsys, check.ex_gallery_norm, 3, text_side)[1]


# --- ex-ib-average, ex-ib-steps ------------------------------------------------------------------

@pytest.fixture(scope="module")
def ib_pair():
    scene = scenes.sample(21, n_objects=2)            # the chapter's SCENE_SEED
    return scene.image, scene.caption_for([0])


def test_ib_average(capsys, mini, ib_pair):
    image, caption = ib_pair
    seeds = [0, 1, 2]
    maps = [explain(mini, image, caption, method="m2ib", seed=s).scores for s in seeds]
    mean = np.mean(maps, axis=0)                      # the solution, written out
    to_mean = max(np.abs(mean - m).max() for m in maps)
    between = theory.spread(maps)["max_pairwise"]
    assert to_mean < between, "the average is the closer one (the exercise's point)"
    assert run(capsys, check.ex_ib_average, to_mean, between, mini, image, caption, seeds)[0]
    wrong = {"the two swapped": (between, to_mean),
             "mean |differences| instead of the largest":
                 (np.mean([np.abs(mean - m).mean() for m in maps]),
                  theory.spread(maps)["mean_pairwise"]),
             "the median map instead of the average":
                 (max(np.abs(np.median(maps, axis=0) - m).max() for m in maps), between),
             "only the first seed's distance to the average": (np.abs(mean - maps[0]).max(),
                                                                between)}
    for name, answer in wrong.items():
        if np.isclose(answer[0], to_mean, rtol=1e-3) and np.isclose(answer[1], between,
                                                                    rtol=1e-3):
            continue
        ok, out = run(capsys, check.ex_ib_average, *answer, mini, image, caption, seeds)
        assert not ok, name
        hides(out, to_mean, between)
    assert "two numbers" in run(capsys, check.ex_ib_average, [to_mean], between, mini, image,
                                caption, seeds)[1]
    assert "not negative" in run(capsys, check.ex_ib_average, -to_mean, between, mini, image,
                                 caption, seeds)[1]


def test_ib_steps(capsys, mini, ib_pair):
    image, caption = ib_pair
    seeds, long_steps = [0, 1], 20                    # fewer than the chapter, same code

    def spread(**kw):
        return theory.spread([explain(mini, image, caption, method="m2ib", seed=s, **kw).scores
                              for s in seeds])

    short, long_ = spread(), spread(num_steps=long_steps)
    shrinks = long_["max_pairwise"] < short["max_pairwise"]
    assert run(capsys, check.ex_ib_steps, long_["max_pairwise"], shrinks, mini, image, caption,
               seeds, long_steps)[0]
    wrong = {"the other yes/no": (long_["max_pairwise"], not shrinks),
             "the 10-step spread (num_steps not passed)": (short["max_pairwise"], shrinks),
             "the mean |difference|": (long_["mean_pairwise"], shrinks)}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_ib_steps, *answer, mini, image, caption, seeds,
                      long_steps)
        assert not ok, name
        hides(out, long_["max_pairwise"])
    assert "10 steps" in run(capsys, check.ex_ib_steps, short["max_pairwise"], shrinks, mini,
                             image, caption, seeds, long_steps)[1]
    assert "a number and a bool" in run(capsys, check.ex_ib_steps, 0.2, "yes", mini, image,
                                        caption, seeds, long_steps)[1]


# --- ex-neg-shape --------------------------------------------------------------------------------

def test_neg_shape(capsys, mini):
    n, seed = 8, 0

    def counts(differ="shape", part=1, first=False):       # the solution, written out
        records = []
        for scene in scenes.heldout(n, n_objects=1, start=500):
            absent = scene.negative(0, differ, seed)
            caption = scenes.caption_of([scene.objects[0], absent])
            att = explain(mini, scene.image, caption, method="nib", side="text")
            words = list(att.tokens)
            present = words.index(scene.objects[0].split()[part])
            gone = (words.index(absent.split()[part]) if first else
                    len(words) - 1 - words[::-1].index(absent.split()[part]))
            records.append((att.raw[present], att.raw[gone]))
        return sum(a < 0 for _, a in records), sum(p > a for p, a in records)

    reference = counts()
    assert run(capsys, check.ex_neg_shape, *reference, mini, n, seed)[0]
    wrong = {"the colour words' counts": counts("colour", 0),
             "the absent colour word of the shape captions": counts("shape", 0),
             "non-negative instead of negative": (n - reference[0], reference[1]),
             "the two counts swapped": reference[::-1]}
    for name, answer in wrong.items():
        if tuple(answer) == tuple(reference):
            continue
        ok, out = run(capsys, check.ex_neg_shape, *answer, mini, n, seed)
        assert not ok, name
    assert sum(tuple(a) != tuple(reference) for a in wrong.values()) >= 2
    assert "two integers" in run(capsys, check.ex_neg_shape, 9.0, 11, mini, n, seed)[1]
    assert "between 0 and" in run(capsys, check.ex_neg_shape, 9, 11, mini, n, seed)[1]


# --- ex-base-rise, ex-base-invariance ------------------------------------------------------------

@pytest.fixture(scope="module")
def base_pair():
    scene = scenes.sample(21, n_objects=2)            # the chapter's first scene
    return scene.image, scene.caption_for([0])


def test_base_rise(capsys, mini, base_pair):
    image, caption = base_pair
    masks = (40, 160)                                 # fewer than the chapter, same code

    def diffs(seeds=(0, 1), reduce=np.max):
        out = []
        for k in masks:
            a, b = (explain(mini, image, caption, method="rise", n_masks=k, seed=s).scores
                    for s in seeds)
            out.append(float(reduce(np.abs(a - b))))
        return out

    ref = diffs()
    assert ref[1] < ref[0], "more masks, less noise (the exercise's point)"
    assert run(capsys, check.ex_base_rise, ref, mini, image, caption, masks)[0]
    wrong = {"the fewest masks last": ref[::-1], "the same seed twice": diffs((0, 0)),
             "the mean |difference|": diffs(reduce=np.mean)}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_base_rise, answer, mini, image, caption, masks)
        assert not ok, name
        hides(out, *ref)
    assert "same seed" in run(capsys, check.ex_base_rise, [0.0, 0.0], mini, image, caption,
                              masks)[1]
    assert "2 numbers" in run(capsys, check.ex_base_rise, [0.1], mini, image, caption,
                              masks)[1]


def test_base_invariance(capsys, mini, base_pair):
    image, caption = base_pair
    methods = ["nib", "m2ib", "rise", "gradcam", "chefer", "saliency", "mfaba", "fastig"]
    params = {"rise": {"n_masks": 40}}
    twin = theory.equivalent_model(mini, seed=0)
    inv = {}                                          # the chapter's cell, written out
    for m in methods:
        p = params.get(m, {})
        a = explain(mini, image, caption, method=m, **p)
        b = explain(twin, image, caption, method=m, **p)
        inv[m] = float(np.abs(a.scores - b.scores).max())
    reference = [m for m, v in inv.items() if v <= 1e-4]
    assert run(capsys, check.ex_base_invariance, reference, mini, image, caption, methods,
               params)[0]
    assert run(capsys, check.ex_base_invariance, set(reference[::-1]), mini, image, caption,
               methods, params)[0]
    wrong = {"none": [], "only NIB": ["nib"],
             "all but the attention methods": [m for m in methods
                                               if m not in ("chefer", "saliency", "fastig")],
             "all but the random ones": [m for m in methods if m not in ("m2ib", "rise")]}
    for name, answer in wrong.items():
        if set(answer) == set(reference):
            continue
        ok, out = run(capsys, check.ex_base_invariance, answer, mini, image, caption, methods,
                      params)
        assert not ok, name
    assert sum(set(a) != set(reference) for a in wrong.values()) >= 2
    assert "list of method names" in run(capsys, check.ex_base_invariance, "nib", mini, image,
                                         caption, methods, params)[1]
    assert "name methods of" in run(capsys, check.ex_base_invariance, ["lime"], mini, image,
                                    caption, methods, params)[1]


# --- ex-compl-lambda0 ----------------------------------------------------------------------------

def test_compl_lambda0(capsys, mini):
    import torch

    scene = scenes.heldout(1, n_objects=2)[0]         # the chapter's first pair
    z, target, _, layer = theory.bottleneck(mini, scene.image, scene.caption)
    tower = mini.image

    def f_at(lam):
        with torch.no_grad():
            return float(torch.cosine_similarity(tower.upper(lam * z, layer), target, dim=-1))

    def gaps(first=1.0, width=True, base=None):       # the solution's loop, written out
        out = np.zeros((2, 3))
        for i, n in enumerate([10, 50]):
            for j, lam0 in enumerate([1e-3, 1e-2, 1e-1]):
                lam = lam0 + (1 - lam0) * torch.arange(first, n + first)[:, None, None] / n
                zs = (lam * z).requires_grad_()
                f = torch.cosine_similarity(tower.upper(zs, layer), target, dim=-1)
                (grad,) = torch.autograd.grad(f.sum(), zs)
                total = float((1 - lam0 if width else 1) * (z[0] * grad.mean(0)).sum())
                diff = f_at(1.0) - f_at(lam0 if base is None else base)
                out[i, j] = abs(total - diff) / abs(diff)
        return out

    ref = gaps()
    assert run(capsys, check.ex_compl_lambda0, ref, mini, scene.image, scene.caption)[0]
    assert run(capsys, check.ex_compl_lambda0, ref.tolist(), mini, scene.image,
               scene.caption)[0]
    wrong = {"f(1) - f(0) instead of f(1) - f(λ0)": gaps(base=0.0),
             "no (1 - λ0) weight": gaps(width=False),
             "the left sum, k = 0..n-1": gaps(first=0.0),
             "the rows swapped": ref[::-1],
             "signed gaps": -ref}
    hints = {}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_compl_lambda0, answer, mini, scene.image, scene.caption)
        assert not ok, name
        hints[name] = out
        hides(out, *ref.ravel().tolist())
    assert "f(1) − f(λ0)" in hints["f(1) - f(0) instead of f(1) - f(λ0)"]
    assert "1 − λ0" in hints["no (1 − λ0) weight".replace("−", "-")]
    assert "right Riemann" in hints["the left sum, k = 0..n-1"]
    assert "2 × 3" in run(capsys, check.ex_compl_lambda0, ref.T, mini, scene.image,
                          scene.caption)[1]
    assert "2 × 3" in run(capsys, check.ex_compl_lambda0, "0.1", mini, scene.image,
                          scene.caption)[1]


# --- ex-claims-own -------------------------------------------------------------------------------

def test_claims_own(capsys, tmp_path):
    import shutil

    import pandas as pd

    from nibcore.book import claims

    sources = claims.load_sources(theory.book_model("mini"), "mini")
    copy = tmp_path / "claims.csv"                    # the solution, written out
    shutil.copy(claims.claims_path(), copy)
    row = {"id": "my-fps-mfaba", "section": "§5.5",
           "quote": "high-speed performance compared to slower methods",
           "paper_value": "2.1995 vs 0.2748", "kind": "speed", "test": "better",
           "subject": "nib", "versus": "mfaba", "metrics": "fps", "datasets": "Flickr8k",
           "stated": "", "stated_as": "", "how": "per-pair seconds of the scoring run",
           "chapter": "results_main"}
    pd.DataFrame([row], columns=claims.COLUMNS).to_csv(copy, mode="a", header=False,
                                                       index=False)
    mine = claims.ledger(claims.load_claims(copy), sources).set_index("id").loc["my-fps-mfaba"]
    assert run(capsys, check.ex_claims_own, row, mine.verdict, sources)[0]
    assert run(capsys, check.ex_claims_own, pd.DataFrame([row]), mine.verdict, sources)[0]
    other_verdicts = [v for v in claims.VERDICTS if v != mine.verdict]
    fastest = {**row, "versus": "*"}                  # "the fastest of all": another verdict
    wrong = {"RISE, the sentence's example, instead of MFABA": ({**row, "versus": "rise"},
                                                                mine.verdict),
             "every dataset": ({**row, "datasets": "all"}, mine.verdict),
             "an unknown test": ({**row, "test": "faster"}, mine.verdict),
             "another verdict": (row, other_verdicts[0]),
             "the verdict of 'fastest of all'": (
                 row, check.own_claim_ledger(fastest, sources)["verdict"])}
    for name, (r, v) in wrong.items():
        if r is row and v == mine.verdict:
            continue
        ok, out = run(capsys, check.ex_claims_own, r, v, sources)
        assert not ok, name
    assert "another claim" in run(capsys, check.ex_claims_own, {**row, "versus": "rise"},
                                  mine.verdict, sources)[1]
    assert "refuses" in run(capsys, check.ex_claims_own, {**row, "test": "faster"},
                            mine.verdict, sources)[1]
    assert "columns" in run(capsys, check.ex_claims_own, {"id": "x"}, mine.verdict,
                            sources)[1]
    assert "one of" in run(capsys, check.ex_claims_own, row, "yes", sources)[1]
    assert "dict" in run(capsys, check.ex_claims_own, "my-fps-mfaba,...", mine.verdict,
                         sources)[1]


# --- ex-use-effects, ex-use-density (faithfulness) -----------------------------------------------

@pytest.fixture(scope="module")
def cue_world(mini):
    """The cue world's two models, and NIB's evaluation rows of the first 6 test objects (each
    with an agreeing and a conflicting cue) on each: the reference comes from the evaluation's
    columns, not from the checks' own code."""
    from nibcore import evaluate
    from nibcore.world.data import cue_pairs

    models = {name: nibcore.load_model(name, device="cpu") for name in ("cue", "cue-control")}
    ds = cue_pairs(12)
    rows = {name: evaluate(m, ds, ["nib"], sides=["image"], n=None, progress=False,
                           text_protocols=()) for name, m in models.items()}
    conflict = {name: df[df["meta_kind"] == "conflict"] for name, df in rows.items()}
    return models, conflict


def test_use_effects(capsys, cue_world):
    from nibcore.world import cues

    models, conflict = cue_world
    n = 6
    want = tuple(float((df["img_s0"] - df["use_s_cue"]).mean())
                 for df in (conflict["cue"], conflict["cue-control"]))
    assert run(capsys, check.ex_use_effects, *want, models, n)[0]
    agree = [cues.test_scene(i, "agree") for i in range(n)]
    caps = [s.caption for s in agree]
    on_agree = tuple(float(np.mean(cues.similarity(models[m], [s.image for s in agree], caps)
                                   - cues.similarity(models[m], [cues.remove(s, "cue")
                                                                 for s in agree], caps)))
                     for m in ("cue", "cue-control"))
    object_out = tuple(float((df["img_s0"] - df["use_s_object"]).mean())
                       for df in (conflict["cue"], conflict["cue-control"]))
    wrong = {"the models swapped": want[::-1], "after minus before": (-want[0], -want[1]),
             "agree scenes": on_agree, "the object painted out": object_out}
    failed = 0
    for name, answer in wrong.items():
        if np.allclose(answer, want, rtol=1e-2):
            continue  # a wrong method that happens to give the right numbers on these models
        ok, out = run(capsys, check.ex_use_effects, *answer, models, n)
        assert not ok, name
        hides(out, *want)
        failed += 1
    assert failed >= 2
    assert "two numbers" in run(capsys, check.ex_use_effects, "0.1", 0.2, models, n)[1]


def test_use_density(capsys, cue_world):
    from nibcore.world import cues

    models, conflict = cue_world
    n = 6
    df = conflict["cue"].sort_values("index")
    area = np.array([cues.test_scene(i, "conflict").cue_mask.mean() for i in range(n)])
    density = float(df["use_density_cue"].mean())
    share = float(np.mean(df["use_density_cue"].to_numpy() * area))
    assert run(capsys, check.ex_use_density, share, density, models["cue"], n)[0]
    wrong = {"the share in %": (100 * share, density), "swapped": (density, share),
             "the object's density": (share, float(df["use_density_object"].mean())),
             "mass without the area": (share, share)}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_use_density, *answer, models["cue"], n)
        assert not ok, name
        hides(out, share, density)
    assert "two numbers" in run(capsys, check.ex_use_density, None, 1.0, models["cue"], n)[1]


# --- ex-use-lab (faithfulness) ------------------------------------------------------------------

def test_use_lab(capsys, cue_world):
    """The reference recomputes NIB's densities on the lab's pairs with metrics.mass_density,
    independently of the store rows the check reads."""
    from nibcore import explain
    from nibcore.datasets import load_dataset
    from nibcore.metrics import energy_in_mask, mass_density

    models, _ = cue_world
    n = 30
    data = load_dataset("cues")
    pairs = [data[i] for i in check.store_lab_pairs("use", n, "nib", "image", {}, "cue")]
    assert len(pairs) == n
    maps = [explain(models["cue"], p.image, p.text, method="nib").scores for p in pairs]

    def means(fn, ms=maps, model_pairs=pairs):
        return tuple(float(np.mean([fn(m, p.meta["regions"][r]) for m, p in zip(ms, model_pairs)]))
                     for r in ("cue", "object"))

    ref = means(mass_density)
    assert run(capsys, check.ex_use_lab, *ref, n)[0]
    control = [explain(models["cue-control"], p.image, p.text, method="nib").scores
               for p in pairs]
    wrong = {"the two regions swapped": ref[::-1],
             "the share of mass, not the density": means(energy_in_mask),
             "the control's maps": means(mass_density, control),
             "the inverted map": means(mass_density, [1 - m for m in maps]),
             "fewer pairs": means(mass_density, maps[:n // 2], pairs[:n // 2])}
    for name, answer in wrong.items():
        ok, out = run(capsys, check.ex_use_lab, *answer, n)
        assert not ok, name
        hides(out, *ref)
    assert "swapped" in run(capsys, check.ex_use_lab, *ref[::-1], n)[1]
    assert "share of mass" in run(capsys, check.ex_use_lab, *means(energy_in_mask), n)[1]
    assert "two numbers" in run(capsys, check.ex_use_lab, None, 1.0, n)[1]
    assert "fewer than" in run(capsys, check.ex_use_lab, *ref, 10 ** 6)[1]
