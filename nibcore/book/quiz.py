"""Self-check quizzes: a few multiple-choice and numeric questions per chapter, shown by
jupyterquiz beside the chapter's open (conceptual) exercises.

Each chapter with a conceptual exercise has a function here (its name is the chapter's) that
returns its questions in jupyterquiz's format: a list of dicts, ``type`` ``"multiple_choice"``
(``answers``: text, ``correct``, ``feedback``; exactly one correct) or ``"numeric"``
(``answers``: a correct ``value`` and optionally wrong values or ranges with feedback, then a
``default``). A number a question states or expects is computed here from nibcore (the model's
towers, the default layer, the schedules, the bound of Theorem 1), never typed in.

A chapter's notebook shows its quiz with ``quiz.show("<chapter>")``. jupyterquiz renders a quiz
as an HTML container and a script that draws the questions and checks the answers in the browser:
in the built book (the script is part of the cell's output, which Jupyter Book writes into the
page) and in a running notebook (Jupyter, Colab), with no kernel round trip. The answer keys
travel in that script — a quiz is a self-check, not a hidden solution: they are not in the page's
visible text, and the student edition's leak scan exempts them by name (every question carries
``"quiz": "<chapter>"`` under :data:`NAME_KEY`; :func:`nibcore.book.student.answer_key_leaks`).
"""

from __future__ import annotations

import random
import types
from typing import Callable

#: the key naming the quiz a question belongs to (the chapter); the leak scan exempts answer keys
#: only inside payloads whose every question names a quiz of :data:`QUIZZES`
NAME_KEY = "quiz"
#: jupyterquiz's rendering options used by :func:`show` (questions in the book's order; answers
#: shuffled by the browser on every load, so the position of the right one says nothing)
OPTIONS = {"shuffle_questions": False, "shuffle_answers": True, "max_width": 680}


def mc(question: str, answers: list[tuple[str, bool, str]]) -> dict:
    """A multiple-choice question: ``answers`` as (text, correct, feedback)."""
    return {"question": question, "type": "multiple_choice",
            "answers": [{"answer": a, "correct": bool(c), "feedback": f} for a, c, f in answers]}


def numeric(question: str, value: float | int, feedback: str,
            wrong: list[tuple[float | int, str]] = (), precision: int | None = None,
            hint: str = "Not quite — try again.") -> dict:
    """A numeric question whose answer is ``value`` (compared to ``precision`` significant
    digits when given), with feedback for the ``wrong`` values a reader is likely to type."""
    answers = [{"type": "value", "value": _number(value), "correct": True,
                "feedback": feedback}]
    answers += [{"type": "value", "value": _number(v), "correct": False, "feedback": f}
                for v, f in wrong]
    answers.append({"type": "default", "feedback": hint})
    q = {"question": question, "type": "numeric", "answers": answers}
    if precision is not None:
        q["precision"] = int(precision)
    return q


def _number(v) -> float | int:
    """A JSON number (numpy scalars become Python ones)."""
    return int(v) if float(v).is_integer() and not isinstance(v, float) else float(v)


def _mini():
    import nibcore

    return nibcore.load_model("mini")


def _layer(n_blocks: int) -> int:
    """nibcore's default bottleneck layer for a tower of ``n_blocks`` blocks."""
    from nibcore.base import default_layer

    return default_layer(types.SimpleNamespace(n_blocks=n_blocks))


# --- the chapters ------------------------------------------------------------------------------

def preface() -> list[dict]:
    blocks = _mini().image.n_blocks
    return [
        mc("Which quantity does NIB explain?", [
            ("The cosine between CLIP's image feature and its text feature", True,
             "Right: the match score, without CLIP's logit scale."),
            ("The probability of the caption among a batch of captions (softmax)", False,
             "No: NIB differentiates the plain cosine of the two features."),
            ("The information each token lets through a learned noisy mask", False,
             "That is M2IB's map (information_bottleneck chapter), not NIB's."),
            ("The class label the image tower predicts", False,
             "CLIP's towers predict no label; they produce two vectors in one space."),
        ]),
        mc("What does NIB's single number λ do?", [
            ("It scales the hidden state of one tower at one layer; NIB integrates the gradient "
             "of the score as λ goes from 0 to 1", True, "Right: narrowing from open to closed."),
            ("It is a learned weight per token and channel, optimised by gradient descent", False,
             "That is M2IB's bottleneck; NIB has one scalar and no optimisation."),
            ("It sets the variance of the noise added to the state", False,
             "NIB drops the noise altogether (narrowing chapter)."),
            ("It trades the score against the information kept, like β", False,
             "NIB has no trade-off parameter."),
        ]),
        mc("Why does the book run on a small bundled model instead of CLIP ViT-B/32?", [
            ("It needs no download, and its synthetic scenes come with exact object masks to "
             "check a map against", True, "Right: offline, and with ground truth."),
            ("NIB only works on small models", False,
             "The code paths are the same for ViT-B/32; in Colab every chapter can run on it."),
            ("ViT-B/32 has no CLS token", False, "It has one; the mini model too."),
            ("The paper's numbers were computed on the mini model", False,
             "The paper used ViT-B/32; the book labels the paper's numbers as the paper's."),
        ]),
        numeric("How many transformer blocks does the bundled mini model's image tower have?",
                blocks, "Right.", hint="See the preface's paragraph on the offline model."),
    ]


def clip() -> list[dict]:
    n_text = _mini().text.n_blocks
    layer, naive = _layer(n_text), (3 * n_text) // 4
    return [
        mc("Which token's final state does CLIP's text tower take as the caption's feature?", [
            ("The end-of-text (EOT) token", True, "Right."),
            ("The start-of-text (SOT) token", False, "SOT opens the caption; look at the end."),
            ("The mean over all tokens", False, "CLIP pools one token, not a mean."),
            ("The CLS token", False, "CLS is the image tower's pooled token."),
        ]),
        numeric(f"The mini model's text tower has {n_text} blocks. Before which block (0-based) "
                "does NIB's default bottleneck sit?", layer,
                "Right: three quarters up, but at least two blocks below the top.",
                wrong=[(naive, "That is (3L)//4 alone; nibcore keeps at least two blocks above "
                               "the bottleneck.")] if naive != layer else []),
        mc("SigLIP's image tower has no CLS token. What does that change for an image map?", [
            ("The map is made from all patch tokens; methods that read CLS's attention row "
             "refuse", True, "Right."),
            ("NIB cannot run on it", False,
             "NIB scales the tokens entering a block, whatever the head pools."),
            ("The map gets one more token to drop", False, "There is no CLS to drop."),
            ("The cosine is replaced by a softmax", False,
             "SigLIP's loss is a sigmoid with a bias; NIB still explains the cosine."),
        ]),
        mc("SigLIP scores a pair as σ(t·cos + b). Do t and b change NIB's normalised maps?", [
            ("No: NIB explains the cosine itself", True, "Right."),
            ("Yes: both scale the gradients", False,
             "NIB differentiates the cosine, which contains neither t nor b."),
            ("Only b, because it shifts the score", False, "b is not part of the cosine."),
            ("Only t, because it multiplies the score", False, "t is not part of the cosine."),
        ]),
    ]


def information_bottleneck() -> list[dict]:
    import inspect

    from nibcore.methods.m2ib import M2IB

    steps = inspect.signature(M2IB.__init__).parameters["num_steps"].default
    return [
        mc("In the bottleneck objective I(z̃, Y) − β·I(z̃, x), what does a larger β do?", [
            ("It penalises information about the input more, so the bottleneck closes on more "
             "tokens", True, "Right."),
            ("It rewards information about the task more", False,
             "β weighs the second term, the information about the input."),
            ("It adds more noise draws per step", False, "β is a weight, not a sample size."),
            ("Nothing: the map does not depend on β", False,
             "The chapter shows the map moving with β."),
        ]),
        mc("M2IB's map is the KL capacity, an analytic function of the final α. Where does its "
           "randomness come from?", [
            ("The noise draws that steer the Adam steps", True, "Right."),
            ("Noise added to the map after the optimisation", False,
             "No noise enters the map directly."),
            ("Dropout in CLIP", False,
             "The seed acts through the noise draws of the optimisation, nothing else."),
            ("Random crops of the image", False, "The image is the same in every run."),
        ]),
        mc("Why can M2IB's map not show features that speak against a match?", [
            ("Its importance is a KL divergence, which is never negative", True, "Right."),
            ("It is normalised to [0, 1]", False,
             "Normalisation hides signs, but M2IB has none to begin with."),
            ("It uses too few Adam steps", False, "More steps do not make a KL negative."),
            ("It explains the text side only", False, "M2IB has a bottleneck in each tower."),
        ]),
        numeric("How many Adam steps does M2IB take per explanation, as the NIB paper ran it "
                "(nibcore's default)?", steps, "Right.",
                hint="See the section 'M2IB on one pair'."),
    ]


def narrowing() -> list[dict]:
    from nibcore.book import theory

    sq_norm, lam, sigma = 50.0, 0.6, 2.0
    bound = float(theory.kl_bound(sq_norm, lam, sigma))
    return [
        mc("What does the proof of Theorem 1 show to grow strictly with λ?", [
            ("The bound B(λ, σ) = E[λ²‖z‖²] / 2σ² on the mutual information", True,
             "Right: the paper's 'sup' is this bound."),
            ("The mutual information I(z̃(λ); x) itself, strictly", False,
             "The proof orders the bound; the information lies below it."),
            ("The noise variance σ²", False, "σ is fixed in Theorem 1."),
            ("The attribution of every token", False, "Theorem 1 says nothing about tokens."),
        ]),
        numeric(f"A state with ‖z‖² = {sq_norm:g} at λ = {lam:g} and σ = {sigma:g}: what is the "
                "bound λ²‖z‖² / 2σ² of Theorem 1, in nats?", bound, "Right.",
                wrong=[(bound * sigma, "Divide by 2σ², with σ squared.")],
                precision=3),
        mc("As σ → 0 with 0 < λ₁ < λ₂ and N distinct inputs, what happens to I(z̃(λ); x)?", [
            ("Both tend to log N, so the strict ordering of Eq. (8) does not survive", True,
             "Right: only the closed bottleneck λ = 0 stays apart."),
            ("Both tend to 0", False, "An open bottleneck lets the inputs be told apart."),
            ("The gap between them grows to infinity", False,
             "That is the gap between the bounds, not the information."),
            ("I(λ₁) stays strictly below I(λ₂)", False,
             "The chapter's σ → 0 table shows them meeting at log N."),
        ]),
        mc("With the noise dropped, what does NIB compute?", [
            ("Integrated gradients of the score with respect to the layer state, from a zero "
             "baseline along a straight line", True, "Right."),
            ("The KL divergence of each token's noisy state", False, "There is no noise left."),
            ("The gradient of the score at λ = 1 only", False,
             "NIB integrates the gradient over λ in [0, 1]."),
            ("An optimised mask over tokens", False, "Nothing is optimised."),
        ]),
    ]


def completeness() -> list[dict]:
    from nibcore import SCHEDULES
    from nibcore.base import MIN_BLOCKS_ABOVE

    n = 5
    evaluations = len(SCHEDULES["completeness"](n)[0])
    return [
        mc("Theorem 3 (attributions add up to f(1) − f(0)) rests on", [
            ("the chain rule and the fundamental theorem of calculus", True, "Right."),
            ("the data-processing inequality", False, "That orders informations (Theorem 2)."),
            ("the scale invariance of the LayerNorm", False,
             "Scale invariance is what makes the integral hard to compute, not the theorem."),
            ("the Gaussian noise of the bottleneck", False, "There is no noise on NIB's path."),
        ]),
        mc("Why do the paper's λ = k/n steps not add up to f(1) − f(0) on a model with "
           "LayerNorms?", [
            ("They never evaluate λ below 1/n, where f changes abruptly", True, "Right."),
            ("They evaluate λ = 0 twice", False, "λ = 0 is never evaluated."),
            ("Their weights do not sum to 1", False, "n weights of 1/n sum to 1."),
            ("The gradients are random", False, "NIB is deterministic."),
        ]),
        numeric(f"How many evaluations does the 'completeness' schedule make with num_steps = {n} "
                "(on a trained model, no extra decades)?", evaluations,
                "Right: n nodes on each of 8 decades.",
                wrong=[(n, "That is the paper's schedule; this one covers decades of λ.")]),
        numeric("How many blocks does nibcore's default layer keep, at least, above the "
                "bottleneck?", MIN_BLOCKS_ABOVE,
                "Right: with one block above, every token but the pooled one gets (almost) zero.",
                wrong=[(1, "With one block above, NIB degenerates: see the last-block "
                           "proposition.")]),
    ]


def negative_properties() -> list[dict]:
    from scipy.stats import binomtest

    k, n = 10, 12
    p = float(binomtest(k, n, 0.5, alternative="greater").pvalue)
    return [
        mc("A token has NIB score A(z_i) < 0. What does that mean?", [
            ("Shrinking that token along the path raises the score: it speaks against the "
             "match", True, "Right."),
            ("The token carries no information", False, "That would be a score near 0."),
            ("The computation failed", False, "Negative scores are NIB's negative properties."),
            ("The token is padding", False,
             "Padding cannot affect the score at all (completeness chapter)."),
        ]),
        mc("What does min-max normalisation to [0, 1] do to a signed map?", [
            ("It hides the sign: the most negative patch becomes 0", True, "Right."),
            ("It keeps negative patches below zero", False, "Everything lands in [0, 1]."),
            ("It sets every negative patch to 0.5", False, "Only the scale changes."),
            ("Nothing; signs are kept as colours", False,
             "The signed maps of this chapter use a separate, symmetric colour scale."),
        ]),
        numeric(f"The absent object's colour word scores negative in {k} of {n} scenes. What is "
                "the one-sided binomial p-value against a coin flip (50 %)? (3 significant "
                "digits)", p, "Right.", precision=3,
                hint="P(at least k of n heads) for a fair coin: scipy.stats.binomtest(k, n, 0.5, "
                     "alternative='greater')."),
    ]


def baselines() -> list[dict]:
    from nibcore.book import paper

    n_baselines = len([m for m in paper.PAPER_ORDER if m != "nib"])
    return [
        numeric("Against how many baselines does the paper compare NIB?", n_baselines, "Right."),
        mc("Which of these methods is random by construction?", [
            ("RISE", True, "Right: it averages over random masks."),
            ("Grad-CAM", False, "One gradient at one layer: deterministic."),
            ("Chefer et al.", False, "Attention times gradient: deterministic."),
            ("FastIG", False, "One pass, no sampling."),
        ]),
        mc("Why can Grad-CAM show only positive evidence?", [
            ("It rectifies the weighted activations with a ReLU", True, "Right."),
            ("It uses the last block's attention", False,
             "Grad-CAM uses a middle block's activations."),
            ("Its gradients are squared", False, "It multiplies gradient and activation."),
            ("It is a black-box method", False, "It needs gradients and activations."),
        ]),
        mc("Which method needs a transformer's attention to run?", [
            ("Chefer et al.", True, "Right: the last block's attention, weighted by its "
                                    "gradient."),
            ("RISE", False, "RISE only needs scores of masked images."),
            ("NIB", False, "NIB needs a block's input and a gradient."),
            ("M2IB", False, "M2IB puts a bottleneck on a block's output."),
        ]),
    ]


def explore() -> list[dict]:
    model = _mini()
    from nibcore.base import default_layer

    n, layer = model.image.n_blocks, default_layer(model.image)
    return [
        numeric(f"Before which block (0-based) of the mini model's {n}-block image tower does "
                "NIB's default bottleneck sit — the layer to compare the others with?", layer,
                "Right: three quarters up, as the paper's 9 of 12.",
                wrong=[(n - 1, "That is the last block, the degenerate choice.")]),
        mc("With NIB's bottleneck at the input of the last block, the normalised map shows", [
            ("no information: every patch's score is zero up to the LayerNorm's ε, whatever the "
             "picture shows", True, "Right: see the last-block proposition."),
            ("the sharpest map of all layers", False,
             "The last block is degenerate for NIB."),
            ("the same map as at layer 0", False, "Different layers give different maps."),
            ("an error", False, "NIB runs; its map just carries no information."),
        ]),
        mc("Why can a [0, 1] map look confident even when the caption names an object that is "
           "not in the picture?", [
            ("Min-max normalisation divides by the map's own range: the top patch reaches 1 "
             "even when every raw score is small", True,
             "Right: compare the raw scores and f(1) with the scene's own caption."),
            ("The model always finds the named object", False,
             "A caption that does not match scores lower."),
            ("NIB ignores the caption", False, "The caption's feature is part of f."),
            ("Absent objects get the highest scores", False,
             "Nothing guarantees that; the negative_properties chapter measures it."),
        ]),
    ]


#: chapter -> its quiz (every chapter with a conceptual exercise has one)
QUIZZES: dict[str, Callable[[], list[dict]]] = {
    f.__name__: f for f in (preface, clip, information_bottleneck, narrowing, completeness,
                            negative_properties, baselines, explore)}


def questions(chapter: str) -> list[dict]:
    """The chapter's questions in jupyterquiz's format, each named by :data:`NAME_KEY`."""
    if chapter not in QUIZZES:
        raise ValueError(f"no quiz for {chapter!r}; chapters: {', '.join(QUIZZES)}")
    return [{NAME_KEY: chapter, **q} for q in QUIZZES[chapter]()]


def show(chapter: str) -> None:
    """Display the chapter's quiz (jupyterquiz; HTML and a script, in a notebook or the book).

    jupyterquiz names its container with Python's global ``random``; the state is saved, seeded
    from the chapter and restored, so the output is the same on every run and the chapter's own
    random draws are not disturbed."""
    from jupyterquiz import display_quiz

    qs = questions(chapter)
    state = random.getstate()
    random.seed(f"nibcore.book.quiz:{chapter}")
    try:
        display_quiz(qs, **OPTIONS)
    finally:
        random.setstate(state)
