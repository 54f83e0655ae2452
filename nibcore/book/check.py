"""Self-checks for the book's coding exercises: ``from nibcore.book import check``.

Each check takes the student's answer (and, where the answer depends on the chapter's run, the
chapter's own variables), recomputes the expected value — from the model, the library or the
chapter's outputs, never from a typed number — and prints one line: ``right``, or ``not yet:``
with a hint. The line never contains the expected value. Input of the wrong kind (a string for a
number, a list of the wrong length) gets a one-line hint of what to pass. Every check returns
True or False as well, so a notebook or a grader can count them.

``tests/test_check.py`` runs each check on the reference solution (it must pass) and on at least
two named wrong answers (each must fail), and makes sure no output shows the expected value.

Checks (exercise label → function):

* ``ex-preface-one`` → :func:`ex_preface_one`
* ``ex-clip-tokens`` → :func:`ex_clip_tokens`
* ``ex-clip-confusions`` → :func:`ex_clip_confusions`
* ``ex-claims-own`` → :func:`ex_claims_own` (the claim row and its verdict)
* ``ex-claims-strict`` → :func:`ex_claims_strict`
* ``ex-ib-average`` → :func:`ex_ib_average`
* ``ex-ib-steps`` → :func:`ex_ib_steps`
* ``ex-narrow-tight`` → :func:`ex_narrow_tight`
* ``ex-compl-lambda0`` → :func:`ex_compl_lambda0`
* ``ex-compl-random`` → :func:`ex_compl_random`
* ``ex-base-rise`` → :func:`ex_base_rise`
* ``ex-base-invariance`` → :func:`ex_base_invariance`
* ``ex-passes-predict`` → :func:`ex_passes_predict`
* ``ex-passes-nib`` → :func:`ex_passes_nib` (NIB implemented from the split model)
* ``ex-passes-cost`` → :func:`ex_passes_cost`
* ``ex-abl-map`` → :func:`ex_abl_map`
* ``ex-metrics-game`` → :func:`ex_metrics_game`
* ``ex-metrics-pool`` → :func:`ex_metrics_pool`
* ``ex-metrics-lab`` → :func:`ex_metrics_lab` (a lab: NIB's insertion and deletion AUCs)
* ``ex-passes-lab`` → :func:`ex_passes_lab` (a lab: NIB's Drop and counted passes at one
  ``num_steps``, ``ablation-steps``)
* ``ex-main-lab`` → :func:`ex_main_lab` (a lab: the student's means against the store's)
* ``ex-text-lab`` → :func:`ex_text_lab` (a lab: the text side, the paper's protocol)
* ``ex-text-minimum`` → :func:`ex_text_minimum`
* ``ex-text-clean`` → :func:`ex_text_clean`
* ``ex-beyond-lab`` → :func:`ex_beyond_lab` (a lab: NIB's pointing game and energy in mask)
* ``ex-abl-lab`` → :func:`ex_abl_lab` (a lab: NIB at one layer, ``ablation-layers``)
* ``ex-beta-lab`` → :func:`ex_beta_lab` (a lab: M2IB at one β and seed, ``table5-beta``)
* ``ex-neg-minmax`` → :func:`ex_neg_minmax`
* ``ex-neg-shape`` → :func:`ex_neg_shape`
* ``ex-gallery-norm`` → :func:`ex_gallery_norm`
* ``ex-use-effects`` → :func:`ex_use_effects`
* ``ex-use-density`` → :func:`ex_use_density`
* ``ex-use-lab`` → :func:`ex_use_lab`
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from numbers import Integral, Real

import numpy as np

#: relative tolerance of a numeric answer
RTOL = 1e-3


def _say(ok: bool, hint: str) -> bool:
    print("right" if ok else f"not yet: {hint}")
    return ok


def _bad(hint: str) -> bool:
    """Input of the wrong kind: one line saying what to pass."""
    print(f"not yet: {hint}")
    return False


def _is_number(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(float(x))


def _is_int(x) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _lab_size_hint(n, pairs, what: str) -> str | None:
    """The hint for a lab's ``n`` that is not a positive int, or exceeds the store's pairs
    (``pairs(n)``: the lab's pairs; ``what``: how the hint names them); None when it is fine."""
    if not _is_int(n) or n < 1:
        return "n is the number of pairs you evaluated (an int)"
    if len(pairs(n)) < n:
        return f"the store has fewer than {n} {what}"
    return None


def _close(a: float, b: float, rtol: float = RTOL) -> bool:
    return abs(float(a) - float(b)) <= rtol * max(abs(float(b)), 1e-12)


# --- preface.ipynb ------------------------------------------------------------------------------

def expected_preface_one(model, scene) -> str:
    """The object whose mask holds the higher mean of NIB's [0, 1] map when the caption names
    only the scene's first object (``scene.caption_for([0])``)."""
    from nibcore import explain
    from nibcore.book import theory

    att = explain(model, scene.image, scene.caption_for([0]))
    return scene.objects[int(np.argmax(theory.mask_means(att.scores, scene.masks)))]


def ex_preface_one(obj, model, scene) -> bool:
    """``ex-preface-one``: which object (its phrase, e.g. ``"red circle"``) the map moves to
    with a caption naming only the first object — the one whose mask holds the higher mean of
    the map (``"neither"`` if it does not move). Pass the chapter's ``model`` and ``scene``
    after your answer."""
    if not isinstance(obj, str):
        return _bad('answer with the object\'s phrase, e.g. "red circle" (scene.objects)')
    if obj.strip().lower() not in [o.lower() for o in scene.objects] + ["neither"]:
        return _bad(f"answer with one of the scene's objects ({', '.join(scene.objects)}) or "
                    '"neither"')
    if obj.strip().lower() == expected_preface_one(model, scene).lower():
        return _say(True, "")
    return _say(False, "judge by numbers, not by eye: theory.mask_means(a.scores, scene.masks) "
                       "gives the map's mean inside each object")


# --- clip.ipynb --------------------------------------------------------------------------------

def _tokens(image_size: int, patch_size: int) -> int:
    """Tokens of a ViT image tower: the patch grid plus CLS."""
    return (image_size // patch_size) ** 2 + 1


def expected_clip_tokens(model=None) -> tuple[int, int]:
    """(tokens of the mini model's image tower, of ViT-B/32 at 224 px): the mini model's patch
    grid, and ViT-B/32's from open_clip's configuration (no weights needed)."""
    import open_clip

    import nibcore

    model = nibcore.load_model("mini") if model is None else model
    rows, cols = model.grid
    vit = open_clip.get_model_config("ViT-B-32-quickgelu")["vision_cfg"]
    return rows * cols + 1, _tokens(vit["image_size"], vit["patch_size"])


def ex_clip_tokens(mini, vitb32, model=None) -> bool:
    """``ex-clip-tokens``: the number of tokens the image tower processes, for the mini model
    and for ViT-B/32 at 224 pixels (two integers)."""
    if not (_is_int(mini) and _is_int(vitb32)):
        return _bad("pass two integers: check.ex_clip_tokens(mini_tokens, vitb32_tokens)")
    want_mini, want_vit = expected_clip_tokens(model)
    if (mini, vitb32) == (want_mini, want_vit):
        return _say(True, "")
    if (mini + 1, vitb32 + 1) == (want_mini, want_vit):
        return _say(False, "the patches are right; which token does the tower add to them?")
    if mini != want_mini and vitb32 == want_vit:
        return _say(False, "ViT-B/32 is right; the mini model's patch grid is `model.grid`")
    if mini == want_mini:
        return _say(False, "the mini model is right; ViT-B/32 cuts 224 px into 32 px patches")
    return _say(False, "count the patches (image size / patch size, squared), then the CLS token")


def confusions(model=None, n_scenes: int = 60, radius: float = 1.0):
    """The exercise's zero-shot run: ``n_scenes`` held-out single-object scenes, blurred with a
    Gaussian of ``radius`` pixels, matched against the 30 one-phrase captions. Returns
    (truth, best): the true and the predicted phrase of each scene."""
    from PIL import ImageFilter

    import nibcore
    from nibcore.book import theory
    from nibcore.world import scenes

    model = nibcore.load_model("mini") if model is None else model
    held = scenes.heldout(n_scenes, n_objects=1)
    phrases = scenes.phrases()
    captions = [scenes.caption_of([p]) for p in phrases]
    blurred = [s.image.filter(ImageFilter.GaussianBlur(radius)) for s in held]
    sims = theory.similarity_matrix(model, blurred, captions)
    return [s.objects[0] for s in held], [phrases[i] for i in sims.argmax(axis=1)]


def expected_confusions(model=None, n_scenes: int = 60, radius: float = 1.0) -> str:
    """Which attribute the blurred run gets wrong more often: "colour", "shape" or "equal"."""
    truth, best = confusions(model, n_scenes, radius)
    colour = sum(b.split()[0] != t.split()[0] for b, t in zip(best, truth))
    shape = sum(b.split()[1] != t.split()[1] for b, t in zip(best, truth))
    return "colour" if colour > shape else "shape" if shape > colour else "equal"


def ex_clip_confusions(answer, model=None, n_scenes: int = 60, radius: float = 1.0) -> bool:
    """``ex-clip-confusions``: which attribute the model confuses more often on the blurred
    scenes — ``"colour"``, ``"shape"`` or ``"equal"``."""
    if not isinstance(answer, str) or answer.strip().lower() not in ("colour", "color", "shape",
                                                                     "equal"):
        return _bad('answer with one word: "colour", "shape" or "equal"')
    answer = {"color": "colour"}.get(answer.strip().lower(), answer.strip().lower())
    want = expected_confusions(model, n_scenes, radius)
    if answer == want:
        return _say(True, "")
    return _say(False, "count the scenes whose predicted phrase has the wrong colour word, and "
                       "those with the wrong shape word, separately")


# --- claims.ipynb ------------------------------------------------------------------------------

def _paper_comparisons() -> int:
    """How many paired comparisons "best of the paper's methods" needs: one per baseline."""
    from nibcore.book.paper import PAPER_METHODS

    return len(set(PAPER_METHODS.values())) - 1


def ex_claims_strict(probability, p_each: float = 0.9) -> bool:
    """``ex-claims-strict``: the probability that a "best of eight" claim is reproduced when
    each of its paired comparisons is, independently, with probability ``p_each``."""
    if not _is_number(probability):
        return _bad("pass one number between 0 and 1: check.ex_claims_strict(p)")
    if not 0 <= probability <= 1:
        return _bad("a probability lies between 0 and 1")
    k = _paper_comparisons()
    if _close(probability, p_each ** k):
        return _say(True, "")
    if _close(probability, p_each ** (k + 1)):
        return _say(False, "NIB is not compared with itself: how many baselines are there?")
    if _close(probability, p_each):
        return _say(False, "that is one comparison; the claim needs all of them to go its way")
    if _close(probability, 1 - (1 - p_each) ** k):
        return _say(False, "that is the chance that at least one comparison holds, not all")
    return _say(False, "independent events that must all happen: multiply their probabilities")


# --- information_bottleneck.ipynb ---------------------------------------------------------------

def seed_maps(model, image, text, seeds, **params) -> list[np.ndarray]:
    """M2IB's [0, 1] image maps of one pair, one per noise seed (``params``: e.g.
    ``num_steps``)."""
    from nibcore.book import theory

    return [np.asarray(a.scores, dtype=np.float64)
            for a in theory.explain_over(model, image, text, "m2ib", "seed", list(seeds),
                                         **params)]


def expected_ib_average(model, image, text, seeds) -> tuple[float, float]:
    """(the largest |average − single-seed map| over the seeds and pixels, the largest
    |difference| between two single-seed maps) of M2IB's maps over ``seeds``."""
    from nibcore.book import theory

    maps = seed_maps(model, image, text, seeds)
    mean = np.mean(maps, axis=0)
    return (float(max(np.abs(mean - m).max() for m in maps)),
            float(theory.spread(maps)["max_pairwise"]))


def ex_ib_average(to_mean, between, model, image, text, seeds) -> bool:
    """``ex-ib-average``: for M2IB's maps of the chapter's pair over ``seeds``, the largest
    |difference| between the seeds' average and a single-seed map (over seeds and pixels), and
    the largest |difference| between two single-seed maps. Pass the chapter's ``model``,
    ``scene.image``, ``caption`` and ``SEEDS`` after your two numbers."""
    if not (_is_number(to_mean) and _is_number(between)):
        return _bad("pass two numbers: check.ex_ib_average(to_mean, between, model, "
                    "scene.image, caption, SEEDS)")
    if min(float(to_mean), float(between)) < 0:
        return _bad("a largest |difference| is not negative")
    want = expected_ib_average(model, image, text, seeds)
    got = (float(to_mean), float(between))
    ok = [_close(g, w) for g, w in zip(got, want)]
    if all(ok):
        return _say(True, "")
    if all(_close(g, w) for g, w in zip(got[::-1], want)):
        return _say(False, "the two are swapped: the distance to the average first")
    which = "to the average" if not ok[0] else "between two seeds"
    return _say(False, f"the largest |difference| {which} is off: the maximum over every seed "
                       "(or pair of seeds) and every pixel, not a mean")


def ex_ib_steps(spread_long, shrinks, model, image, text, seeds,
                long_steps: int = 50) -> bool:
    """``ex-ib-steps``: the largest |difference| between two seeds' M2IB maps with
    ``num_steps=long_steps`` (``theory.spread(...)["max_pairwise"]``), and whether it is smaller
    than with M2IB's default 10 steps (a bool). Pass the chapter's ``model``, ``scene.image``,
    ``caption``, ``SEEDS`` and ``LONG_STEPS`` after your answers."""
    from nibcore.book import theory

    if not (_is_number(spread_long) and isinstance(shrinks, bool)):
        return _bad("pass a number and a bool: check.ex_ib_steps(spread50, shrinks, model, "
                    "scene.image, caption, SEEDS, LONG_STEPS)")
    if not _is_int(long_steps) or long_steps < 1:
        return _bad("long_steps is the number of Adam steps (an int), LONG_STEPS")
    long_ = theory.spread(seed_maps(model, image, text, seeds, num_steps=long_steps))
    short = theory.spread(seed_maps(model, image, text, seeds))
    want_shrinks = long_["max_pairwise"] < short["max_pairwise"]
    ok_value = _close(spread_long, long_["max_pairwise"])
    if ok_value and shrinks == want_shrinks:
        return _say(True, "")
    if not ok_value:
        if _close(spread_long, short["max_pairwise"]):
            return _say(False, "that is the spread with 10 steps: pass num_steps to every run")
        if _close(spread_long, long_["mean_pairwise"]):
            return _say(False, "that is the mean |difference|; the exercise compares the "
                               "largest one")
        return _say(False, "rerun every seed with num_steps=LONG_STEPS and take "
                           "theory.spread(maps)['max_pairwise']")
    return _say(False, "your spread is right: compare it with the 10-step spread again")


#: the claim of ``ex-claims-own``: column → value (the other columns are free text)
OWN_CLAIM = {"kind": "speed", "test": "better", "subject": "nib", "versus": "mfaba",
             "metrics": "fps", "datasets": "Flickr8k"}


def _claim_row(row) -> dict | None:
    """The student's row as a dict of strings: a mapping, a pandas Series or a one-row
    DataFrame; None for anything else."""
    import pandas as pd

    if isinstance(row, pd.DataFrame):
        if len(row) != 1:
            return None
        row = row.iloc[0]
    if isinstance(row, pd.Series):
        row = row.to_dict()
    if not isinstance(row, Mapping):
        return None
    return {str(k): "" if v is None else str(v) for k, v in row.items()}


def own_claim_ledger(row: Mapping, sources):
    """The ledger row (:func:`nibcore.book.claims.ledger`) of one claim row: written to a
    one-row CSV and read back with :func:`nibcore.book.claims.load_claims` (which refuses a
    malformed row with a ValueError)."""
    import tempfile
    from pathlib import Path

    import pandas as pd

    from nibcore.book import claims

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "claims.csv"
        pd.DataFrame([row], columns=list(claims.COLUMNS)).to_csv(path, index=False)
        frame = claims.load_claims(path)
    return claims.ledger(frame, sources).iloc[0]


def ex_claims_own(row, verdict, sources) -> bool:
    """``ex-claims-own`` (its checkable part): your claim row — NIB faster than MFABA on
    Flickr8k, test ``better``, metric ``fps`` — is well formed (every column of
    ``claims.COLUMNS``, accepted by ``claims.load_claims``) and states that claim, and your
    verdict is the one ``claims.ledger`` computes for it. Pass the chapter's ``sources``."""
    from nibcore.book import claims

    got = _claim_row(row)
    if got is None:
        return _bad("pass the row as a dict (or a one-row DataFrame) with the columns of "
                    "claims.COLUMNS, then the verdict and sources")
    missing = [c for c in claims.COLUMNS if c not in got]
    if missing or len(got) != len(claims.COLUMNS):
        return _bad(f"the row needs exactly the columns of claims.COLUMNS (missing: "
                    f"{', '.join(missing) or 'none'}; extra: "
                    f"{', '.join(sorted(set(got) - set(claims.COLUMNS))) or 'none'})")
    if not isinstance(verdict, str):
        return _bad('the verdict is a string, e.g. "not distinguishable" (claims.VERDICTS)')
    if verdict.strip() not in claims.VERDICTS:
        return _bad(f"the verdict is one of: {'; '.join(claims.VERDICTS)}")
    try:
        ledger_row = own_claim_ledger(got, sources)
    except ValueError as err:
        return _say(False, f"load_claims refuses the row: {str(err).split(': ', 1)[-1]}")
    off = [c for c, v in OWN_CLAIM.items() if got[c].strip() != v]
    if off:
        return _say(False, f"the row is well formed but states another claim: check "
                           f"{', '.join(off)} (NIB faster than MFABA on Flickr8k, test "
                           "better, metric fps)")
    if verdict.strip() == ledger_row["verdict"]:
        return _say(True, "")
    return _say(False, "the row is right; the verdict is not the ledger's: run "
                       "claims.ledger(claims.load_claims(path), sources) and read its "
                       "'verdict' column")


# --- narrowing.ipynb ---------------------------------------------------------------------------

def expected_narrow_tight(mi: Mapping, sq_norms, mc_lambdas, mc_sigmas,
                          factor: float = 1.1) -> float | None:
    """The first λ > 0 of the Monte Carlo grid at which Theorem 1's bound exceeds the Monte
    Carlo estimate of I by 10 %, for the middle σ (``mc_sigmas[1]``); None if it never does."""
    from nibcore.book import theory

    sigma = mc_sigmas[len(mc_sigmas) // 2]
    lams = np.asarray(mc_lambdas, dtype=float)
    bound = theory.kl_bound(sq_norms, lams, sigma)
    info = np.asarray(mi[sigma], dtype=float)
    over = (lams > 0) & (bound > factor * info)
    return float(lams[np.argmax(over)]) if over.any() else None


def ex_narrow_tight(lam, mi: Mapping, sq_norms, mc_lambdas, mc_sigmas) -> bool:
    """``ex-narrow-tight``: the λ (one of ``mc_lambdas``) at which the bound first exceeds the
    Monte Carlo estimate by 10 % for the middle σ. Pass the chapter's ``mi``, ``sq_norms``,
    ``mc_lambdas`` and ``mc_sigmas`` after your answer."""
    if not _is_number(lam):
        return _bad("pass one number, a λ of mc_lambdas: check.ex_narrow_tight(lam, mi, "
                    "sq_norms, mc_lambdas, mc_sigmas)")
    want = expected_narrow_tight(mi, sq_norms, mc_lambdas, mc_sigmas)
    if want is None:
        return _say(False, "on this run the bound never exceeds the estimate by 10 %: raise "
                           "N_INPUTS or MC_DRAWS")
    if _close(lam, want, 1e-6):
        return _say(True, "")
    if not np.isclose(np.asarray(mc_lambdas, dtype=float), float(lam)).any():
        return _bad("answer with one of the λ of mc_lambdas (the Monte Carlo grid)")
    at_all = expected_narrow_tight(mi, sq_norms, mc_lambdas, mc_sigmas, factor=1.0)
    if at_all is not None and _close(lam, at_all, 1e-6):
        return _say(False, "that is where the bound first exceeds the estimate at all; ask "
                           "for 10 % more")
    if float(lam) > want:
        return _say(False, "too late: compare the bound with 1.1 × mi[s] at every λ, from "
                           "the smallest")
    return _say(False, "too early: is it the middle σ, mc_sigmas[1]? at λ = 0 both are 0")


# --- completeness.ipynb -----------------------------------------------------------------------

#: "complete": the median |relative gap| below this (the chapter's verdict on Theorem 3)
COMPLETE_RTOL = 1e-2


def expected_compl_random(seed: int = 0, n_pairs: int = 2, num_steps: int = 10
                          ) -> tuple[bool, bool]:
    """(is the completeness schedule complete, is the paper's) on ``theory.random_twin(seed)``:
    the median |relative gap| of :func:`nibcore.book.theory.completeness_table` on the first
    ``n_pairs`` held-out two-object pairs below :data:`COMPLETE_RTOL`."""
    from nibcore.book import theory
    from nibcore.world import scenes

    twin = theory.random_twin(seed)
    pairs = [(s.image, s.caption) for s in scenes.heldout(n_pairs, n_objects=2)]
    summary = theory.completeness_summary(theory.completeness_table(
        twin, pairs, num_steps=[num_steps]))
    gap = summary["median_abs_relative_gap"]
    return (bool(gap.loc[("completeness", num_steps)] < COMPLETE_RTOL),
            bool(gap.loc[("paper", num_steps)] < COMPLETE_RTOL))


def ex_compl_random(completeness_complete, paper_complete) -> bool:
    """``ex-compl-random``: on the untrained twin (``theory.random_twin(0)``), is the
    ``"completeness"`` schedule still complete, and is the paper's? Two booleans."""
    if not (isinstance(completeness_complete, bool) and isinstance(paper_complete, bool)):
        return _bad("pass two booleans: check.ex_compl_random(completeness_complete, "
                    "paper_complete)")
    want = expected_compl_random()
    got = (completeness_complete, paper_complete)
    if got == want:
        return _say(True, "")
    return _say(False, "run theory.completeness_table on the twin (both schedules) and compare "
                       "each median |relative gap| with 1 %")


# --- baselines.ipynb -------------------------------------------------------------------------

#: the masks of ``ex-base-rise``
RISE_MASKS = (250, 1000, 4000)


def rise_differences(model, image, text, masks=RISE_MASKS) -> list[float]:
    """The largest |difference| between RISE's [0, 1] maps with seeds 0 and 1, per number of
    masks (:func:`nibcore.book.theory.property_evidence`'s ``max_diff_two_runs``)."""
    from nibcore.book import theory

    return [float(theory.property_evidence(model, image, text, ["rise"],
                                           method_params={"rise": {"n_masks": int(k)}})
                  .max_diff_two_runs.iloc[0]) for k in masks]


def ex_base_rise(diffs, model, image, text, masks=RISE_MASKS) -> bool:
    """``ex-base-rise``: the largest |difference| between two RISE runs (seeds 0 and 1) of the
    chapter's pair, one per number of ``masks`` (in that order). Pass the chapter's ``model``,
    the scene's image and the caption after your numbers."""
    got = _as_scores(diffs)
    if got is None or got.size != len(masks) or not np.all(np.isfinite(got)):
        return _bad(f"pass {len(masks)} numbers, one per number of masks "
                    f"({', '.join(str(k) for k in masks)}), in that order")
    if (got < 0).any():
        return _bad("a largest |difference| is not negative")
    want = np.asarray(rise_differences(model, image, text, masks))
    tol = 1e-3 * max(np.abs(want).max(), 1e-6)
    if np.abs(got - want).max() <= tol:
        return _say(True, "")
    if np.abs(got[::-1] - want).max() <= tol:
        return _say(False, "the right values in the wrong order: the fewest masks first")
    if np.all(got == 0):
        return _say(False, "two runs with the same seed are identical: compare seeds 0 and 1")
    return _say(False, "for each number of masks, run RISE with seed=0 and seed=1 "
                       "(n_masks=k) and take the largest |difference| of the two [0, 1] maps")


#: a map that changes by more than this between equivalent models is not invariant (the chapter)
INVARIANCE_ATOL = 1e-4


def invariance_changes(model, image, text, methods, method_params=None, seed: int = 0
                       ) -> dict[str, float]:
    """Per method: the largest |difference| of its [0, 1] maps of one pair on ``model`` and on
    :func:`nibcore.book.theory.equivalent_model` (``seed``)."""
    from nibcore import explain
    from nibcore.book import theory

    method_params = method_params or {}
    twin = theory.equivalent_model(model, seed=seed)
    out = {}
    for m in methods:
        p = method_params.get(m, {})
        a = explain(model, image, text, method=m, **p)
        b = explain(twin, image, text, method=m, **p)
        out[m] = float(np.abs(a.scores - b.scores).max())
    return out


def ex_base_invariance(invariant, model, image, text, methods, method_params=None) -> bool:
    """``ex-base-invariance``: which of ``methods`` are implementation invariant under
    ``theory.equivalent_model(model, seed=0)`` on the chapter's pair — their maps change by at
    most :data:`INVARIANCE_ATOL` (a list of method names, any order). Pass the chapter's
    ``model``, the scene's image, the caption, ``METHOD_ORDER`` and ``PARAMS``."""
    if not (isinstance(invariant, (list, tuple, set, frozenset))
            and all(isinstance(m, str) for m in invariant)):
        return _bad('pass a list of method names, e.g. ["nib", "rise"] (possibly empty)')
    names = {m.strip().lower() for m in invariant}
    if not names <= set(methods):
        return _bad(f"name methods of {', '.join(methods)}")
    changes = invariance_changes(model, image, text, methods, method_params)
    want = {m for m, v in changes.items() if v <= INVARIANCE_ATOL}
    if names == want:
        return _say(True, "")
    if names < want:
        return _say(False, "some of the methods you left out keep their map: measure each "
                           "method's largest |map difference| on the two models, do not "
                           "judge by how it works")
    return _say(False, "some of the methods you named change their map by more than 1e-4")


# --- completeness.ipynb (ex-compl-lambda0) -----------------------------------------------------

#: the baselines λ0 and the numbers of uniform steps of ``ex-compl-lambda0``
LAMBDA0S = (1e-3, 1e-2, 1e-1)
LAMBDA0_STEPS = (10, 50)


def lambda0_gaps(model, image, text, lambda0s=LAMBDA0S, steps=LAMBDA0_STEPS,
                 width: bool = True, left: bool = False, from_zero: bool = False) -> np.ndarray:
    """``(len(steps), len(lambda0s))``: the relative gap |Σ − (f(1) − f(λ0))| / |f(1) − f(λ0)|
    of NIB's sum on [λ0, 1] with a uniform right Riemann sum of n steps, λ_k = λ0 + k(1 − λ0)/n,
    weights (1 − λ0)/n, at the image side's default layer. The other arguments give the named
    mistakes: no (1 − λ0) factor, the left sum (k = 0..n−1), f(0) instead of f(λ0)."""
    import torch

    from nibcore.book import theory

    z, target, _, layer = theory.bottleneck(model, image, text)
    tower = model.tower("image")

    def f_at(lams):
        with torch.no_grad():
            rows = torch.as_tensor(lams, dtype=z.dtype)[:, None, None] * z
            return [float(v) for v in torch.cosine_similarity(tower.upper(rows, layer),
                                                              target, dim=-1)]

    out = np.zeros((len(steps), len(lambda0s)))
    for i, n in enumerate(steps):
        for j, lam0 in enumerate(lambda0s):
            k = torch.arange(0.0 if left else 1.0, n + (0.0 if left else 1.0))
            lam = lam0 + (1 - lam0) * k[:, None, None] / n
            zs = (lam * z).requires_grad_()
            f = torch.cosine_similarity(tower.upper(zs, layer), target, dim=-1)
            (grad,) = torch.autograd.grad(f.sum(), zs)
            total = float((1 - lam0 if width else 1.0) * (z[0] * grad.mean(0)).sum())
            f0, f1 = f_at([0.0 if from_zero else lam0, 1.0])
            out[i, j] = abs(total - (f1 - f0)) / abs(f1 - f0)
    return out


def ex_compl_lambda0(gaps, model, image, text) -> bool:
    """``ex-compl-lambda0``: the relative gaps of :func:`lambda0_gaps` on the chapter's pair —
    one row per number of steps (:data:`LAMBDA0_STEPS`), one column per λ0
    (:data:`LAMBDA0S`). Pass the chapter's ``model``, ``scene.image`` and ``scene.caption``."""
    shape = (len(LAMBDA0_STEPS), len(LAMBDA0S))
    try:
        got = np.asarray(gaps, dtype=np.float64)
    except (TypeError, ValueError):
        got = None
    if got is None or got.shape != shape or not np.all(np.isfinite(got)):
        return _bad(f"pass a {shape[0]} × {shape[1]} array of numbers: one row per n "
                    f"({', '.join(map(str, LAMBDA0_STEPS))}), one column per λ0 "
                    f"({', '.join(f'{v:g}' for v in LAMBDA0S)})")
    if (got < 0).any():
        return _say(False, "a gap's size is not negative: take |Σ − (f(1) − f(λ0))|")
    want = lambda0_gaps(model, image, text)
    tol = 1e-3 * np.abs(want).max()
    if np.abs(got - want).max() <= tol:
        return _say(True, "")
    if np.abs(got[::-1] - want).max() <= tol:
        return _say(False, "the rows are swapped: one row per n, in the order given")
    for kw, hint in ((dict(from_zero=True), "compare with f(1) − f(λ0), not f(1) − f(0): the "
                                            "path starts at λ0"),
                     (dict(width=False), "the interval [λ0, 1] has width 1 − λ0: weight each "
                                         "step (1 − λ0)/n"),
                     (dict(left=True), "the paper's sum is a right Riemann sum: λ_k = λ0 + "
                                       "k(1 − λ0)/n for k = 1..n")):
        if np.abs(got - lambda0_gaps(model, image, text, **kw)).max() <= tol:
            return _say(False, hint)
    return _say(False, "per n and λ0: Σ over tokens and channels of (1 − λ0)·z ⊙ mean_k "
                       "∂f/∂z(λ_k z), against f(1) − f(λ0), relative to the latter")


# --- results_passes.ipynb ----------------------------------------------------------------------

PASS_KEYS = ("forward", "backward", "forward_rows", "backward_rows")


def ex_passes_predict(prediction, model, image, text, num_steps: int = 20,
                      rows_per_call: int = 8) -> bool:
    """``ex-passes-predict``: NIB's four counts for ``num_steps=20, rows_per_call=8`` on the
    image side, as a dict with keys forward, backward, forward_rows, backward_rows; checked
    against what ``explain(...).passes`` counts on ``model``, ``image``, ``text``."""
    if not isinstance(prediction, Mapping) or set(prediction) != set(PASS_KEYS):
        return _bad(f"pass a dict with the keys {', '.join(PASS_KEYS)}")
    if not all(_is_int(v) for v in prediction.values()):
        return _bad("each count is an integer")
    from nibcore import explain

    counted = explain(model, image, text, num_steps=num_steps,
                      rows_per_call=rows_per_call).passes
    wrong = [k for k in PASS_KEYS if prediction[k] != counted[k]]
    if not wrong:
        return _say(True, "")
    hints = {
        "forward": "forward calls: the chunks with gradients, then the calls without one "
                   "(λ = 0's rows, the other modality's feature, the lower blocks)",
        "backward": "backward calls: one per chunk of rows_per_call scaled copies (round up)",
        "forward_rows": "forward rows: the scaled copies, NIB's extra rows without a gradient "
                        "(e, measured above) and the two single-row calls",
        "backward_rows": "backward rows: only the scaled copies carry a gradient",
    }
    return _say(False, f"{', '.join(wrong)} off — {hints[wrong[0]]}")


def full_pass_cost(passes: Mapping, layer: int, n_blocks: int, backward_factor: float = 2.0,
                   single_rows: int = 2) -> float:
    """A method's image-side cost per pair in full forwards of the image tower: each row through
    the upper blocks (``forward_rows`` minus the ``single_rows`` single-row calls) costs
    ``(L - layer) / L``, each backward row ``backward_factor`` times that, and the lower blocks
    once ``layer / L``; the other modality's feature is left out."""
    upper = (n_blocks - layer) / n_blocks
    return ((passes["forward_rows"] - single_rows) * upper
            + backward_factor * passes["backward_rows"] * upper + layer / n_blocks)


def expected_passes_cost(model, image, text) -> tuple[float, float]:
    """(NIB's, M2IB's) :func:`full_pass_cost` at their default parameters: the counts of
    ``explain(...).passes``, the layer of ``explain(...).extras["layer"]``."""
    from nibcore import explain

    n_blocks = model.tower("image").n_blocks
    out = []
    for method in ("nib", "m2ib"):
        att = explain(model, image, text, method=method)
        out.append(full_pass_cost(att.passes, int(att.extras["layer"]), n_blocks))
    return out[0], out[1]


def ex_passes_cost(nib_cost, m2ib_cost, model, image, text) -> bool:
    """``ex-passes-cost``: NIB's and M2IB's image-side cost per pair in full-forward equivalents
    of the image tower (:func:`full_pass_cost`), at their default parameters, on ``model``,
    ``image``, ``text``."""
    if not (_is_number(nib_cost) and _is_number(m2ib_cost)):
        return _bad("pass two numbers: check.ex_passes_cost(nib_cost, m2ib_cost, model, "
                    "pair.image, pair.text)")
    want = expected_passes_cost(model, image, text)
    got = (float(nib_cost), float(m2ib_cost))
    ok = [_close(g, w) for g, w in zip(got, want)]
    if all(ok):
        return _say(True, "")
    from nibcore import explain

    n_blocks = model.tower("image").n_blocks
    atts = [explain(model, image, text, method=m) for m in ("nib", "m2ib")]

    def matches(**kw):
        return all(_close(g, full_pass_cost(a.passes, kw.get("layer", int(a.extras["layer"]))
                                            + kw.get("shift", 0) * (a.method == "m2ib"),
                                            kw.get("blocks", n_blocks),
                                            kw.get("backward_factor", 2.0),
                                            kw.get("single_rows", 2)))
                   for g, a, o in zip(got, atts, ok) if not o)

    if matches(backward_factor=1.0):
        return _say(False, "a backward row costs about twice a forward row")
    if matches(layer=0):
        return _say(False, "a row through the upper blocks costs only (L - layer)/L of a full "
                           "forward")
    if matches(single_rows=0):
        return _say(False, "two of the forward rows are single-row calls that do not go "
                           "through the upper blocks")
    if matches(shift=1):
        return _say(False, "read M2IB's bottleneck from explain(..., method='m2ib')"
                           ".extras['layer'] on this model")
    which = "NIB" if not ok[0] else "M2IB"
    return _say(False, f"{which} is off: its rows through the upper blocks (forward_rows - 2) "
                       "and backward rows at (L - layer)/L each, a backward twice a forward, "
                       "plus layer/L for the lower blocks")


def _as_scores(x) -> np.ndarray | None:
    try:
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    arr = arr.squeeze()
    return arr if arr.ndim == 1 else None


def ex_passes_nib(my_nib: Callable, model=None, pairs: int = 2) -> bool:
    """``ex-passes-nib``: your ``my_nib(model, image, text, side)``, NIB's raw score per token
    from the split model, against ``explain(model, image, text, side=side).raw`` on ``pairs``
    held-out pairs and both sides, within the noise measured across numeric paths (the audit's
    ``raw_rtol`` × the largest score, :class:`nibcore.audit.Tolerances`). Any chunking of the
    scaled copies is accepted; on the text side the padding after EOT may be left out or kept
    (its scores must then be 0)."""
    if not callable(my_nib):
        return _bad("pass a function: check.ex_passes_nib(my_nib), my_nib(model, image, text, "
                    "side) -> one score per token")
    import nibcore
    from nibcore import explain
    from nibcore.audit import Tolerances
    from nibcore.datasets import load_dataset

    model = nibcore.load_model("mini") if model is None else model
    rtol = Tolerances.load().raw_rtol
    data = load_dataset("scenes")
    for k in range(pairs):
        pair = data[k]
        for side in ("image", "text"):
            ref = np.asarray(explain(model, pair.image, pair.text, side=side).raw,
                             dtype=np.float64)
            try:
                got = my_nib(model, pair.image, pair.text, side)
            except Exception as err:  # noqa: BLE001 - the student's function may fail any way
                return _bad(f"my_nib(model, image, text, {side!r}) raised "
                            f"{type(err).__name__}: {err}")
            got = _as_scores(got)
            if got is None:
                return _bad("my_nib must return one score per token: a 1-D array (or tensor)")
            if side == "text" and got.size > ref.size:
                if np.abs(got[ref.size:]).max() > rtol * np.abs(ref).max():
                    return _say(False, "the text side: tokens after EOT cannot change the "
                                       "pooled feature, so their scores must be 0")
                got = got[:ref.size]
            if got.size != ref.size:
                return _bad(f"{side} side: one score per token of the tower's input (CLS or SOT "
                            "first), as explain(...).raw")
            scale = np.abs(ref).max()
            if np.abs(got - ref).max() <= rtol * scale:
                continue
            if np.corrcoef(got, ref)[0, 1] > 0.999 and not np.isclose(got.sum(), ref.sum(),
                                                                      rtol=1e-3):
                return _say(False, f"{side} side: the right shape of map, the wrong size: is "
                                   "every λ step weighted 1/n?")
            return _say(False, f"{side} side: not explain()'s scores — check the layer "
                               "(default_layer(tower)), the schedule (λ_k = k/n, k = 1..n) and "
                               "the product z ⊙ ∂f/∂z summed over channels")
    return _say(True, "")


def expected_passes_lab(num_steps: int = 20, n: int = 100) -> tuple[float, dict]:
    """The store's mean image Confidence Drop of NIB at ``num_steps`` over the lab's pairs
    (``store_lab_pairs("ablation-steps", n, "nib", "image", {"num_steps": num_steps})``) and
    its counted passes summed over them (keys :data:`PASS_KEYS`)."""
    params = {"num_steps": int(num_steps)}
    rows = _store_rows("ablation-steps", "nib", "image", params)
    rows = rows[rows["index"].isin(store_lab_pairs("ablation-steps", n, "nib", "image",
                                                   params))]
    sums = {k: int(rows[c].sum()) for k, c in zip(PASS_KEYS, ("fwd", "bwd", "fwd_rows",
                                                              "bwd_rows"))}
    return float(rows.img_conf_drop.mean()), sums


def ex_passes_lab(drop_mean, passes, num_steps: int = 20, n: int = 100) -> bool:
    """``ex-passes-lab``: NIB with ``num_steps`` on the ``n`` pairs of
    ``check.store_lab_pairs("ablation-steps", n, "nib", "image", {"num_steps": num_steps})``:
    your mean image Confidence Drop (in %) and your counted passes summed over the pairs (a
    dict with the keys forward, backward, forward_rows, backward_rows: the sums of
    ``explain(...).passes``, one pair per call), against the store's rows of the same pairs:
    the Drop within :data:`LAB_ATOL` points, every count exactly."""
    if not _is_number(drop_mean):
        return _bad("pass one number and a dict: check.ex_passes_lab(drop_mean, passes, "
                    "num_steps, n)")
    if not isinstance(passes, Mapping) or set(passes) != set(PASS_KEYS):
        return _bad(f"passes is a dict with the keys {', '.join(PASS_KEYS)}")
    if not all(_is_int(v) for v in passes.values()):
        return _bad("each count is an integer (a sum over the pairs)")
    if not _is_int(num_steps):
        return _bad("num_steps is an int")
    params = {"num_steps": int(num_steps)}
    hint = _lab_size_hint(n, lambda k: store_lab_pairs("ablation-steps", k, "nib", "image",
                                                       params), "such pairs")
    if hint:
        return _bad(hint)
    want_drop, want_passes = expected_passes_lab(num_steps, n)
    ok_drop = abs(float(drop_mean) - want_drop) <= LAB_ATOL
    wrong = [k for k in PASS_KEYS if passes[k] != want_passes[k]]
    if ok_drop and not wrong:
        return _say(True, "")
    if wrong:
        if all(passes[k] * n == want_passes[k] for k in PASS_KEYS):
            return _say(False, "those are one pair's counts: sum them over the n pairs")
        return _say(False, f"{', '.join(wrong)} off: sum explain(..., num_steps=num_steps)"
                           ".passes over the pairs, one pair per call")
    if 0 <= float(drop_mean) <= 1 and want_drop > 1:
        return _say(False, "the store states the Drop in %, not as a fraction")
    return _say(False, "your Drop is not the store's: those pairs, explain(..., "
                       "num_steps=num_steps).scores as it is, metrics.image_confidence")


# --- results_ablations.ipynb ------------------------------------------------------------------

def _from_top(layer: int, blocks: int, paper_blocks: int) -> int:
    return max(0, blocks - (paper_blocks - layer))


def ex_abl_map(from_top: Callable[[int, int], int]) -> bool:
    """``ex-abl-map``: your mapping ``from_top(layer, blocks)`` of the paper's ``layer`` (of 12)
    to a block of a ``blocks``-block tower, "as many blocks from the top", clamped at 0. Tried
    on every paper layer and tower depths 1..24 against the definition."""
    from nibcore.sweeps import PAPER_BLOCKS

    if not callable(from_top):
        return _bad("pass a function: check.ex_abl_map(from_top), from_top(layer, blocks)")
    cases = [(layer, blocks) for blocks in range(1, 25) for layer in range(PAPER_BLOCKS + 1)]
    try:
        got = [from_top(layer, blocks) for layer, blocks in cases]
    except Exception as err:  # noqa: BLE001 - the student's function may fail any way
        return _bad(f"from_top(layer, blocks) raised {type(err).__name__}: {err}")
    if not all(_is_int(g) for g in got):
        return _bad("from_top must return an int (a block index)")
    bad = [(c, g) for c, g in zip(cases, got) if g != _from_top(*c, PAPER_BLOCKS)]
    if not bad:
        return _say(True, "")
    if any(g < 0 for _, g in bad):
        return _say(False, "a block index below 0: clamp at 0 on shallow towers")
    if all(g == _from_top(layer, blocks, PAPER_BLOCKS)
           for (layer, blocks), g in zip(cases, got) if blocks == PAPER_BLOCKS):
        return _say(False, "right on a 12-block tower only: keep the *distance to the top*, "
                           "not the relative depth")
    return _say(False, "on a 12-block tower every layer must map to itself; on an L-block "
                       "tower, to as many blocks below the top as in the paper")


# --- results_metrics.ipynb -------------------------------------------------------------------

GAME_POWERS = (0.25, 0.5, 1.0, 2.0, 4.0)


def expected_metrics_game(model, pixels, ids, scores, powers=GAME_POWERS) -> dict:
    """Image Confidence Drop and Increase of the map ``scores`` raised to each power, on the
    running example (``pixels``, ``ids``), by :func:`nibcore.metrics.image_confidence`."""
    from nibcore import metrics

    scores = np.asarray(scores, dtype=np.float32)
    maps = np.stack([scores ** p for p in powers])
    n = len(powers)
    return metrics.image_confidence(model, pixels.expand(n, -1, -1, -1), ids.expand(n, -1),
                                    maps)


def ex_metrics_game(drops, model, pixels, ids, scores) -> bool:
    """``ex-metrics-game``: the image Confidence Drop of NIB's map of the running example raised
    to p = 0.25, 0.5, 1, 2, 4 (five numbers, in that order). Pass the chapter's ``model``,
    ``pixels``, ``ids`` and ``atts["nib"].scores`` after your answer."""
    got = _as_scores(drops)
    if got is None or got.size != len(GAME_POWERS) or not np.all(np.isfinite(got)):
        return _bad(f"pass {len(GAME_POWERS)} numbers, the Drops for p = "
                    f"{', '.join(f'{p:g}' for p in GAME_POWERS)} in that order")
    conf = expected_metrics_game(model, pixels, ids, scores)
    want = np.asarray(conf["drop"], dtype=np.float64)
    tol = 1e-3 * max(np.abs(want).max(), 1e-6)
    if np.abs(got - want).max() <= tol:
        return _say(True, "")
    if np.abs(got[::-1] - want).max() <= tol:
        return _say(False, "the right values in the wrong order: p = 0.25 first")
    if np.ptp(got) <= tol:
        return _say(False, "all five are the same: raise the map to the power p before masking")
    if np.abs(got - np.asarray(conf["s1"])).max() <= tol:
        return _say(False, "those are the masked image's cosines (s1); the Drop compares them "
                           "with s0")
    return _say(False, "mask the image with map ** p (metrics.image_confidence, one row per p) "
                       "and read its 'drop'")


def pooled_words(model=None, n: int = 50) -> list[tuple[str, set[str]]]:
    """For the captions of ``scenes.heldout(n)``: the word the ``paper`` text protocol pools at
    (:func:`nibcore.book.reports.protocol_view`) and the shape words of the scene's objects."""
    import nibcore
    from nibcore.book import reports
    from nibcore.world import scenes

    model = nibcore.load_model("mini") if model is None else model
    out = []
    for scene in scenes.heldout(n):
        tokens = model.token_strings(model.tokenize([scene.caption])[0])
        view = reports.protocol_view(model, scene.caption, np.linspace(0, 1, len(tokens)),
                                     "paper")
        pooled = view[view.pooled.isin(["s1", "s0 and s1"])].token1.iloc[0]
        out.append((pooled, {o.split()[1] for o in scene.objects}))
    return out


def ex_metrics_pool(count, model=None, n: int = 50) -> bool:
    """``ex-metrics-pool``: of the captions of ``scenes.heldout(n)``, how many does the paper
    protocol pool at a shape word of one of the scene's objects (an integer)."""
    if not _is_int(count):
        return _bad("pass one integer: check.ex_metrics_pool(count)")
    if not 0 <= count <= n:
        return _bad(f"a count of captions lies between 0 and {n}")
    words = pooled_words(model, n)
    want = sum(w in shapes for w, shapes in words)
    if count == want:
        return _say(True, "")
    return _say(False, "for each caption, read the row whose `pooled` column is not empty in "
                       "reports.protocol_view(model, caption, scores, 'paper'), and compare its "
                       "token with the objects' shape words")


def ex_metrics_lab(insertion_mean, deletion_mean, n: int = 200, method: str = "nib") -> bool:
    """``ex-metrics-lab``: your mean image Insertion and Deletion AUC (× 100, the ``"ours"``
    protocol of :func:`nibcore.metrics.insertion_deletion`) of ``method``'s [0, 1] maps over
    the ``n`` pairs of :func:`lab_pairs`, against the store's ``table2`` rows of the same pairs
    (each within :data:`LAB_ATOL` points)."""
    if not (_is_number(insertion_mean) and _is_number(deletion_mean)):
        return _bad("pass two numbers: check.ex_metrics_lab(insertion_mean, deletion_mean, n)")
    hint = _lab_size_hint(n, lambda k: lab_pairs(k, method), f"pairs of {method!r}")
    if hint:
        return _bad(hint)
    rows = lab_rows(n, method)
    want_ins, want_del = float(rows.img_insertion.mean()), float(rows.img_deletion.mean())
    ok_ins = abs(float(insertion_mean) - want_ins) <= LAB_ATOL
    ok_del = abs(float(deletion_mean) - want_del) <= LAB_ATOL
    if ok_ins and ok_del:
        return _say(True, "")
    if max(abs(float(insertion_mean)), abs(float(deletion_mean))) <= 1 < want_ins:
        return _say(False, "the store states the AUCs × 100: multiply by 100")
    if abs(float(insertion_mean) - want_del) <= LAB_ATOL and \
            abs(float(deletion_mean) - want_ins) <= LAB_ATOL:
        return _say(False, "your Insertion is the store's Deletion and the other way round: "
                           "are the two swapped, or is the map inverted?")
    which = "Deletion" if ok_ins else "Insertion"
    return _say(False, f"your {which} AUC is not the store's: the pairs of check.lab_pairs(n), "
                       "the [0, 1] map explain(...).scores as it is, "
                       "metrics.insertion_deletion with its default steps")


# --- results_main.ipynb -------------------------------------------------------------------------

#: the lab's agreement: means of per-pair percentages, in percentage points (the store keeps
#: 6 significant digits; recomputing on another numeric path moves a Drop by ~1e-4 of 100·s0)
LAB_ATOL = 0.01


def lab_pairs(n: int = 200, method: str = "nib", side: str = "image") -> list[int]:
    """The dataset indices of the lab's pairs: the ``n`` smallest indices of the results store's
    ``table2`` rows of ``method`` on ``side`` (``load_dataset("scenes")[i]`` is the pair;
    :func:`store_lab_pairs` of ``table2``, whose methods run with their default parameters)."""
    return store_lab_pairs("table2", n, method, side, {})


def lab_rows(n: int = 200, method: str = "nib", side: str = "image"):
    """The results store's ``table2`` rows of the lab's pairs (:func:`lab_pairs`)."""
    rows = _store_rows("table2", method, side, {})
    return rows[rows["index"].isin(lab_pairs(n, method, side))]


def expected_main_lab(n: int = 200, method: str = "nib") -> tuple[float, float]:
    """The store's mean image Confidence Drop and Increase over :func:`lab_pairs`."""
    rows = lab_rows(n, method)
    return float(rows.img_conf_drop.mean()), float(rows.img_conf_incr.mean())


def ex_main_lab(drop_mean, increase_mean, n: int = 200, method: str = "nib") -> bool:
    """``ex-main-lab``: your mean image Confidence Drop and Increase (in %, as in Table 2) of
    ``method`` over the ``n`` pairs of :func:`lab_pairs`, against the committed store's rows of
    the same pairs (agreement within :data:`LAB_ATOL` percentage points)."""
    if not (_is_number(drop_mean) and _is_number(increase_mean)):
        return _bad("pass two numbers: check.ex_main_lab(drop_mean, increase_mean, n)")
    hint = _lab_size_hint(n, lambda k: lab_pairs(k, method), f"pairs of {method!r}")
    if hint:
        return _bad(hint)
    want_drop, want_incr = expected_main_lab(n, method)
    ok_drop = abs(float(drop_mean) - want_drop) <= LAB_ATOL
    ok_incr = abs(float(increase_mean) - want_incr) <= LAB_ATOL
    if ok_drop and ok_incr:
        return _say(True, "")
    if 0 <= float(drop_mean) <= 1 and want_drop > 1:
        return _say(False, "Table 2 states the Drop in %: multiply by 100")
    which = "Drop" if not ok_drop else "Increase"
    return _say(False, f"your {which} does not reproduce the store's: the pairs of "
                       "check.lab_pairs(n), NIB's default parameters, the map "
                       "explain(...).scores as it is, metrics.image_confidence")


# --- results_text.ipynb -------------------------------------------------------------------------

def expected_text_lab(n: int = 200, protocol: str = "paper", method: str = "nib") -> float:
    """The store's mean text Confidence Drop under ``protocol`` over the lab's text pairs."""
    rows = lab_rows(n, method, side="text")
    return float(rows[f"txt_conf_drop_{protocol}"].mean())


def ex_text_lab(drop_mean, n: int = 200, protocol: str = "paper", method: str = "nib") -> bool:
    """``ex-text-lab``: your mean text Confidence Drop (in %) of ``method`` under ``protocol``
    over the ``n`` pairs of ``lab_pairs(n, side="text")``, against the committed store's rows of
    the same pairs (within :data:`LAB_ATOL` percentage points)."""
    if not _is_number(drop_mean):
        return _bad("pass one number: check.ex_text_lab(drop_mean, n)")
    if not _is_int(n) or n < 1:
        return _bad("n is the number of pairs you evaluated (an int)")
    if protocol not in ("paper", "m2ib", "clean"):
        return _bad('protocol is one of "paper", "m2ib", "clean"')
    if len(lab_pairs(n, method, side="text")) < n:
        return _bad(f"the store has fewer than {n} text pairs of {method!r}")
    want = expected_text_lab(n, protocol, method)
    if abs(float(drop_mean) - want) <= LAB_ATOL:
        return _say(True, "")
    if 0 <= float(drop_mean) <= 1 and want > 1:
        return _say(False, "Table 2 states the Drop in %: multiply by 100")
    return _say(False, "not the store's: the pairs of check.lab_pairs(n, side='text'), NIB's "
                       "text map explain(..., side='text').scores over SOT..EOT, and "
                       f"metrics.text_confidence(..., protocol={protocol!r})")


def text_probes(model, n: int = 60, seed: int = 0, protocol: str = "paper",
                dataset: str = "scenes") -> list[dict]:
    """Per pair of the text probes' pairs (the first ``n`` of the evaluation's seeded subset of
    ``dataset``, as :func:`nibcore.book.mechanisms.probe_maps`): NIB's text map value at the
    pooled token (the content token with the largest id) and, under ``protocol``, the Drop of
    the map that zeroes the pooled token and the mean Drop over the maps that zero one other
    content token (None when there is none)."""
    import torch

    from nibcore import explain
    from nibcore.book.mechanisms import pooled_position
    from nibcore.datasets import load_dataset
    from nibcore.evaluation import seeded_subset
    from nibcore.inputs import prepare_images
    from nibcore.metrics import text_confidence

    data = load_dataset(dataset)
    pairs = [data[i] for i in seeded_subset(len(data), n, seed)]
    pixels = prepare_images(model, [p.image for p in pairs])
    ids = model.tokenize([p.text for p in pairs])
    atts = explain(model, pixels, [p.text for p in pairs], side="text")
    with torch.no_grad():
        feats = model.encode_image(pixels)
    out = []
    for b, att in enumerate(atts):
        t, k = pooled_position(ids[b], model.eot_id)
        maps = []
        for j in range(t):
            z = np.ones(t + 2)
            z[1 + j] = 0.0
            maps.append(z)
        drops = text_confidence(model, pixels[b:b + 1].expand(t, -1, -1, -1),
                                ids[b:b + 1].expand(t, -1), maps, protocol,
                                feats[b:b + 1].expand(t, -1))["drop"]
        others = [float(d) for j, d in enumerate(drops) if j != k]
        out.append(dict(pooled_value=float(np.nan_to_num(att.scores[1 + k])),
                        zero_pooled=float(drops[k]),
                        zero_other=float(np.mean(others)) if others else None))
    return out


def ex_text_minimum(share, model, n: int = 60, seed: int = 0) -> bool:
    """``ex-text-minimum``: the share (in %) of the probes' 3-word pairs (``n``, ``seed``: the
    chapter's ``n_live`` and ``SEED``) whose NIB text map is exactly 0 at the pooled token,
    recomputed with :func:`text_probes`."""
    if not _is_number(share):
        return _bad("pass one number, a share in %: check.ex_text_minimum(share, model, n_live)")
    if not 0 <= float(share) <= 100:
        return _bad("a share in % lies between 0 and 100")
    rows = text_probes(model, n, seed)
    zero = [r["pooled_value"] == 0 for r in rows]
    want = 100.0 * float(np.mean(zero))
    if abs(float(share) - want) <= 1e-6 * 100:
        return _say(True, "")
    if want > 1 and abs(float(share) * 100 - want) <= 1e-4 * 100:
        return _say(False, "a share in %, not a fraction")
    return _say(False, "count the pairs whose NIB map is 0 at the pooled token (the content "
                       "token with the largest id: probe_maps' pooled_value on the 'nib' rows), "
                       "not at SOT or EOT, over the 3-word captions")


def ex_text_clean(pooled_drop, other_drop, model, n: int = 60, seed: int = 0) -> bool:
    """``ex-text-clean``: under the ``"clean"`` protocol, on the probes' 3-word pairs (``n``,
    ``seed``), the mean text Confidence Drop (in %) of the map that zeroes the pooled token, and
    of the maps that zero one other content token (the mean over those tokens per pair, then over
    the pairs), recomputed with :func:`text_probes`."""
    if not (_is_number(pooled_drop) and _is_number(other_drop)):
        return _bad("pass two numbers: check.ex_text_clean(pooled_drop, other_drop, model, "
                    "n_live)")
    rows = text_probes(model, n, seed, "clean")
    want = (float(np.mean([r["zero_pooled"] for r in rows])),
            float(np.mean([r["zero_other"] for r in rows if r["zero_other"] is not None])))
    got = (float(pooled_drop), float(other_drop))
    tol = 1e-3 * max(abs(want[0]), abs(want[1]), 1e-6)
    ok = [abs(g - w) <= tol for g, w in zip(got, want)]
    if all(ok):
        return _say(True, "")
    if all(abs(g - w) <= tol for g, w in zip(got[::-1], want)):
        return _say(False, "the two are swapped: the pooled token first")
    paper = text_probes(model, n, seed, "paper")
    if abs(got[0] - float(np.mean([r["zero_pooled"] for r in paper]))) <= tol:
        return _say(False, 'that is the paper protocol: pass "clean" to '
                           "metrics.text_confidence")
    if max(got) <= 1 < max(want):
        return _say(False, "the Drop is in %, not a fraction")
    which = "pooled token's" if not ok[0] else "other tokens'"
    return _say(False, f"the {which} Drop is off: one map per content token, 1 everywhere but 0 "
                       'there, through metrics.text_confidence(..., "clean"); average the other '
                       "tokens per pair, then over the pairs")


# --- results_ablations.ipynb, results_beta.ipynb: labs on other store files -------------------

def _store_rows(file: str, method: str, side: str, params: dict, model: str = "mini"):
    import json as _json

    from nibcore import store

    df = store.load(file, model)
    rows = df[(df.method == method) & (df.side == side)]
    keep = rows.params.map(lambda p: _json.loads(p) == params)
    return rows[keep]


def store_lab_pairs(file: str, n: int, method: str, side: str, params: dict,
                    model: str = "mini") -> list[int]:
    """The dataset indices of a lab's pairs: the ``n`` smallest indices of the store file's
    rows (of ``model``) of ``method`` on ``side`` with exactly these ``params``."""
    return sorted(int(i) for i in _store_rows(file, method, side, params, model)["index"])[:n]


def expected_store_lab(file: str, column: str, n: int, method: str, side: str,
                       params: dict, model: str = "mini") -> float:
    """The store's mean of ``column`` over :func:`store_lab_pairs`."""
    rows = _store_rows(file, method, side, params, model)
    rows = rows[rows["index"].isin(store_lab_pairs(file, n, method, side, params, model))]
    return float(rows[column].mean())


def _store_lab(mean, n, file, column, method, side, params, call: str, hint: str) -> bool:
    if not _is_number(mean):
        return _bad(f"pass one number: {call}")
    hint = _lab_size_hint(n, lambda k: store_lab_pairs(file, k, method, side, params),
                          "such pairs")
    if hint:
        return _bad(hint)
    want = expected_store_lab(file, column, n, method, side, params)
    if abs(float(mean) - want) <= LAB_ATOL:
        return _say(True, "")
    if 0 <= float(mean) <= 1 and want > 1:
        return _say(False, "the store states the Drop in %: multiply by 100")
    return _say(False, hint)


def ex_abl_lab(drop_mean, layer: int, n: int = 100) -> bool:
    """``ex-abl-lab``: your mean image Confidence Drop (in %) of NIB at ``layer`` (a block of the
    bundled model's image tower) over ``check.store_lab_pairs("ablation-layers", n, "nib",
    "image", {"layer": layer})``, against the store's rows of the same pairs."""
    if not _is_int(layer):
        return _bad("layer is a block index (an int)")
    return _store_lab(drop_mean, n, "ablation-layers", "img_conf_drop", "nib", "image",
                      {"layer": int(layer)}, "check.ex_abl_lab(drop_mean, layer, n)",
                      "not the store's: those pairs, explain(..., layer=layer) with the other "
                      "parameters at their defaults, metrics.image_confidence")


def ex_beta_lab(drop_mean, beta: float = 0.01, seed: int = 0, n: int = 50) -> bool:
    """``ex-beta-lab``: your mean image Confidence Drop (in %) of M2IB at ``beta`` and noise
    ``seed`` over ``check.store_lab_pairs("table5-beta", n, "m2ib", "image", {"beta": beta,
    "seed": seed})``, against the store's rows of the same pairs."""
    if not (_is_number(beta) and _is_int(seed)):
        return _bad("beta is a number, seed an int")
    return _store_lab(drop_mean, n, "table5-beta", "img_conf_drop", "m2ib", "image",
                      {"beta": float(beta), "seed": int(seed)},
                      "check.ex_beta_lab(drop_mean, beta, seed, n)",
                      "not the store's: those pairs, explain(..., method='m2ib', beta=beta, "
                      "seed=seed), metrics.image_confidence")


# --- results_beyond.ipynb ---------------------------------------------------------------------

def ex_beyond_lab(pointing_mean, energy_mean, n: int = 200, method: str = "nib") -> bool:
    """``ex-beyond-lab``: your pointing-game hit rate and energy in mask (both in %) of
    ``method``'s [0, 1] image maps over :func:`lab_pairs`, against the store's rows of the same
    pairs. The energy must agree within :data:`LAB_ATOL` points; the pointing game within one
    pair (a maximum at an exact tie may land on the other side of a mask's edge on another
    numeric path)."""
    if not (_is_number(pointing_mean) and _is_number(energy_mean)):
        return _bad("pass two numbers: check.ex_beyond_lab(pointing_mean, energy_mean, n)")
    hint = _lab_size_hint(n, lambda k: lab_pairs(k, method), f"pairs of {method!r}")
    if hint:
        return _bad(hint)
    rows = lab_rows(n, method)
    ok_point = abs(float(pointing_mean) - rows.pointing.mean()) <= 100 / n + LAB_ATOL
    ok_energy = abs(float(energy_mean) - rows.energy.mean()) <= LAB_ATOL
    if ok_point and ok_energy:
        return _say(True, "")
    if max(float(pointing_mean), float(energy_mean)) <= 1:
        return _say(False, "the store states both in %: multiply by 100")
    which = "energy in mask" if ok_point else "pointing game"
    return _say(False, f"your {which} is not the store's: the pairs of check.lab_pairs(n), "
                       "the [0, 1] map explain(...).scores, the pair's mask pair.meta['mask'], "
                       "metrics.pointing_game and metrics.energy_in_mask")


# --- gallery.ipynb ---------------------------------------------------------------------------

def words_alone(att) -> np.ndarray:
    """A text attribution's words (SOT and EOT left out) min-max normalised on their own
    (:func:`nibcore.base.minmax`, whose rule maps a span at float noise to zeros)."""
    import torch

    from nibcore.base import minmax

    words = torch.as_tensor(np.asarray(att.raw, dtype=np.float64)[1:-1])
    return minmax(words[None], dims=[1])[0].numpy()


def norm_changes(text_side: Mapping) -> dict[str, float]:
    """Per method of the gallery's ``text_side`` (method → its attributions, one per scene):
    the mean over scenes of the mean |change| of the words' [0, 1] values when they are
    normalised on their own (:func:`words_alone`) instead of over all tokens (``scores``)."""
    return {m: float(np.mean([np.abs(words_alone(a)
                                     - np.asarray(a.scores, dtype=np.float64)[1:-1]).mean()
                              for a in atts]))
            for m, atts in text_side.items()}


def ex_gallery_norm(method, text_side: Mapping) -> bool:
    """``ex-gallery-norm``: the method whose words change most when normalised on their own
    (the mean |change| of :func:`norm_changes`). Pass the chapter's ``text_side`` after your
    answer."""
    if not isinstance(method, str):
        return _bad('answer with a method\'s name, e.g. "saliency" (the keys of text_side)')
    if method.strip().lower() not in text_side:
        return _bad(f"answer with one of {', '.join(text_side)}")
    changes = norm_changes(text_side)
    top = max(changes.values())
    if changes[method.strip().lower()] >= top * (1 - RTOL):
        return _say(True, "")
    if changes[method.strip().lower()] <= min(changes.values()) * (1 + RTOL) + 1e-12:
        return _say(False, "that method changes least: its words already span most of [0, 1]")
    return _say(False, "per method, compare the words normalised on their own with a.scores"
                       "[1:-1], the mean |difference| over words and scenes, and take the "
                       "largest")


# --- negative_properties.ipynb -----------------------------------------------------------------

def absent_word_scores(model, n_scenes: int = 12, seed: int = 0, differ: str = "shape",
                       start: int = 500) -> list[tuple[float, float]]:
    """The chapter's text-side summary with an absent object that differs by ``differ``
    (``"colour"`` or ``"shape"``): per held-out one-object scene (``n_scenes`` from ``start``),
    NIB's signed score of the present object's word and of the absent object's word of that
    kind (the word's last occurrence in the caption)."""
    from nibcore import explain
    from nibcore.world import scenes

    part = {"colour": 0, "shape": 1}[differ]
    out = []
    for scene in scenes.heldout(n_scenes, n_objects=1, start=start):
        absent = scene.negative(0, differ, seed)
        caption = scenes.caption_of([scene.objects[0], absent])
        att = explain(model, scene.image, caption, method="nib", side="text")
        words = list(att.tokens)
        present = words.index(scene.objects[0].split()[part])
        gone = len(words) - 1 - words[::-1].index(absent.split()[part])
        out.append((float(att.raw[present]), float(att.raw[gone])))
    return out


def ex_neg_shape(k_negative, k_order, model, n_scenes: int = 12, seed: int = 0) -> bool:
    """``ex-neg-shape``: with an absent object that differs in shape only
    (``scene.negative(0, "shape", seed)``), in how many of the ``n_scenes`` scenes the absent
    shape word's signed NIB score is negative, and in how many the present shape word scores
    above it (two counts). Pass the chapter's ``model``, ``N_SCENES`` and ``NEGATIVE_SEED``."""
    if not (_is_int(k_negative) and _is_int(k_order)):
        return _bad("pass two integers: check.ex_neg_shape(k_negative, k_order, model, "
                    "N_SCENES, NEGATIVE_SEED)")
    if not (0 <= k_negative <= n_scenes and 0 <= k_order <= n_scenes):
        return _bad(f"a count of scenes lies between 0 and {n_scenes}")
    rows = absent_word_scores(model, n_scenes, seed, "shape")
    want = (sum(a < 0 for _, a in rows), sum(p > a for p, a in rows))
    if (k_negative, k_order) == want:
        return _say(True, "")
    colour = absent_word_scores(model, n_scenes, seed, "colour")
    if (k_negative, k_order) == (sum(a < 0 for _, a in colour),
                                 sum(p > a for p, a in colour)) != want:
        return _say(False, 'those are the colour words\' counts: scene.negative(0, "shape", '
                           "seed), and index the shape words")
    which = "negative" if k_negative != want[0] else "present above absent"
    return _say(False, f"the {which} count is off: the absent object's shape word is "
                       "absent.split()[1] (its last occurrence in the caption), the present "
                       "one scene.shapes[0]; compare their signed raw scores")


def ex_neg_minmax(zero_value: Callable, trials: int = 200, seed: int = 0) -> bool:
    """``ex-neg-minmax``: your function ``zero_value(scores)`` giving the value that min-max
    normalisation (:func:`nibcore.attribution.minmax`'s rule: ``(s - min) / (max - min)``)
    gives a patch whose signed score is 0, for a signed 1-D array ``scores`` with both signs.
    Checked against normalising a map that has a zero patch."""
    if not callable(zero_value):
        return _bad("pass a function: check.ex_neg_minmax(zero_value), zero_value(scores)")
    import torch

    from nibcore.base import minmax

    rng = np.random.default_rng(seed)
    for _ in range(trials):
        scores = rng.normal(size=int(rng.integers(3, 50))) * rng.uniform(0.01, 10)
        scores[0] = 0.0
        if scores.min() >= 0 or scores.max() <= 0:
            continue
        want = float(minmax(torch.from_numpy(scores)[None], dims=[1])[0, 0])
        try:
            got = zero_value(scores.copy())
        except Exception as err:  # noqa: BLE001 - the student's function may fail any way
            return _bad(f"zero_value(scores) raised {type(err).__name__}: {err}")
        if not _is_number(got) and not (np.ndim(got) == 0 and _is_number(float(got))):
            return _bad("zero_value must return one number")
        if not _close(float(got), want, 1e-6):
            if float(got) == 0:
                return _say(False, "0 is where the most negative patch goes, not a zero one")
            if float(got) < 0:
                return _say(False, "a min-max normalised value is never below 0")
            return _say(False, "normalise 0 the way every score is: subtract the minimum, "
                               "divide by the range")
    return _say(True, "")


# --- faithfulness.ipynb ------------------------------------------------------------------------

#: the conflict scenes of the faithfulness chapter's exercises
USE_SCENES = 20


def expected_use_effects(models: Mapping, n: int = USE_SCENES) -> tuple[float, float]:
    """The mean cosine with the caption lost when the cue is painted out, over the first ``n``
    conflict scenes, for the cue model and for the control (``models``: name -> model)."""
    from nibcore.world import cues

    scenes_ = [cues.test_scene(i, "conflict") for i in range(n)]
    captions = [s.caption for s in scenes_]
    out = []
    for name in ("cue", "cue-control"):
        base = cues.similarity(models[name], [s.image for s in scenes_], captions)
        out.append(float(np.mean(base - cues.similarity(
            models[name], [cues.remove(s, "cue") for s in scenes_], captions))))
    return out[0], out[1]


def ex_use_effects(cue_mean, control_mean, models: Mapping, n: int = USE_SCENES) -> bool:
    """``ex-use-effects``: the mean effect of painting the cue out (the cosine *lost*: before
    minus after) on the first ``n`` conflict scenes, for the cue model and for the control.
    Pass the chapter's ``models`` after your two numbers."""
    if not (_is_number(cue_mean) and _is_number(control_mean)):
        return _bad("pass two numbers: the cue model's mean effect, then the control's")
    want = expected_use_effects(models, n)
    got = (float(cue_mean), float(control_mean))
    if _close(got[0], want[0], 1e-2) and _close(got[1], want[1], 1e-2):
        return _say(True, "")
    if _close(got[0], want[1], 1e-2) and _close(got[1], want[0], 1e-2):
        return _say(False, "the two models are swapped: the cue model first")
    if _close(-got[0], want[0], 1e-2) and _close(-got[1], want[1], 1e-2):
        return _say(False, "the sign: the effect is the cosine lost, before minus after")
    return _say(False, "paint out the cue (cues.remove(scene, 'cue')) on the conflict scenes "
                    "cues.test_scene(i, 'conflict'), i < n, and average s0 - s over them")


def expected_use_density(model, n: int = USE_SCENES) -> tuple[float, float]:
    """The means, over the first ``n`` conflict scenes, of NIB's share of positive mass in the
    cue (``metrics.energy_in_mask``, in [0, 1]) and of its density there
    (``metrics.mass_density``)."""
    from nibcore import explain, metrics
    from nibcore.world import cues

    shares, densities = [], []
    for i in range(n):
        s = cues.test_scene(i, "conflict")
        scores = explain(model, s.image, s.caption).scores
        shares.append(metrics.energy_in_mask(scores, s.cue_mask))
        densities.append(metrics.mass_density(scores, s.cue_mask))
    return float(np.mean(shares)), float(np.mean(densities))


def ex_use_density(share_mean, density_mean, model, n: int = USE_SCENES) -> bool:
    """``ex-use-density``: NIB's mean share of positive mass in the cue (in [0, 1]) and its
    mean density there (mass per unit of the cue's area) on the first ``n`` conflict scenes
    with the cue model. Pass the chapter's ``models["cue"]`` after your two numbers."""
    if not (_is_number(share_mean) and _is_number(density_mean)):
        return _bad("pass two numbers: the mean share of mass in the cue, then the mean density")
    share, density = expected_use_density(model, n)
    got = (float(share_mean), float(density_mean))
    if _close(got[0], share, 1e-2) and _close(got[1], density, 1e-2):
        return _say(True, "")
    if _close(got[0], 100 * share, 1e-2):
        return _say(False, "the share as a fraction in [0, 1], not in %")
    if _close(got[0], density, 1e-2) and _close(got[1], share, 1e-2):
        return _say(False, "the two numbers are swapped: the share first")
    return _say(False, "explain each conflict scene with NIB on the cue model; the share is "
                    "metrics.energy_in_mask(map, scene.cue_mask), the density "
                    "metrics.mass_density(map, scene.cue_mask)")


def ex_use_lab(density_cue_mean, density_object_mean, n: int = 100, model: str = "cue",
               method: str = "nib") -> bool:
    """``ex-use-lab``: your mean density (``metrics.mass_density``) of ``method``'s [0, 1] maps
    in the cue and in the object, over the pairs ``check.store_lab_pairs("use", n, method,
    "image", {}, model)`` of the cue world (``load_dataset("cues")[i]``; the regions are
    ``pair.meta["regions"]``), against the store's ``use`` rows of ``model`` (relative
    agreement :data:`RTOL`)."""
    if not (_is_number(density_cue_mean) and _is_number(density_object_mean)):
        return _bad("pass two numbers: check.ex_use_lab(density_cue_mean, density_object_mean, "
                    "n)")
    hint = _lab_size_hint(n, lambda k: store_lab_pairs("use", k, method, "image", {}, model),
                          f"cue-world pairs of {method!r} ({model})")
    if hint:
        return _bad(hint)
    want = [expected_store_lab("use", f"use_density_{r}", n, method, "image", {}, model)
            for r in ("cue", "object")]
    got = (float(density_cue_mean), float(density_object_mean))
    if _close(got[0], want[0]) and _close(got[1], want[1]):
        return _say(True, "")
    if _close(got[0], want[1]) and _close(got[1], want[0]):
        return _say(False, "the two numbers are swapped: the cue first, then the object")
    if max(got) <= 1 < max(want):
        return _say(False, "that looks like the share of mass (metrics.energy_in_mask): the "
                           "density divides it by the region's share of the image "
                           "(metrics.mass_density)")
    return _say(False, f"not the store's: the pairs of check.store_lab_pairs('use', n, "
                       f"{method!r}, 'image', {{}}, {model!r}), the model load_model({model!r}), "
                       f"{method}'s default parameters, and metrics.mass_density(map, "
                       f"pair.meta['regions'][region])")
