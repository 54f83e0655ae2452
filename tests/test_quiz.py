"""The chapters' quizzes (nibcore.book.quiz): every chapter with a conceptual exercise shows one
before its exercises, every question is well formed for jupyterquiz, every number a question
states or expects is the one nibcore computes, the rendered quiz keeps its keys out of the
page's visible text, and the student edition's leak scan exempts them by name only."""

import json
import random
import re
from pathlib import Path

import pytest

from nibcore.book import course, quiz, student

ROOT = Path(__file__).resolve().parents[1]
FULL_HTML = ROOT / "_build" / "html"
STUDENT_HTML = ROOT / "_build" / "student" / "html"


def well_formed(questions: list[dict]) -> list[str]:
    """What jupyterquiz (2.9) needs of a question list, and what the book adds: 2–4 questions;
    a multiple-choice question with distinct answers, each with feedback, exactly one correct; a
    numeric question with one correct value (a JSON number), wrong values that differ from it at
    the question's precision, and a default last."""
    problems = []
    if not 2 <= len(questions) <= 4:
        problems.append(f"{len(questions)} questions (2 to 4)")
    for i, q in enumerate(questions):
        where = f"question {i + 1}"
        if not (isinstance(q.get("question"), str) and q["question"].strip()):
            problems.append(f"{where}: no question text")
        answers = q.get("answers")
        if not isinstance(answers, list) or not answers:
            problems.append(f"{where}: no answers")
            continue
        if q.get("type") == "multiple_choice":
            texts = [a.get("answer") for a in answers]
            if len(answers) < 3 or len(set(texts)) != len(texts) or not all(texts):
                problems.append(f"{where}: needs 3+ distinct answers")
            if [a.get("correct") for a in answers].count(True) != 1:
                problems.append(f"{where}: not exactly one correct answer")
            if not all(isinstance(a.get("correct"), bool) and a.get("feedback") for a in answers):
                problems.append(f"{where}: an answer without a boolean 'correct' or feedback")
        elif q.get("type") == "numeric":
            values = [a for a in answers if a.get("type") == "value"]
            right = [a for a in values if a.get("correct") is True]
            numbers = all(isinstance(a.get("value"), (int, float))
                          and not isinstance(a.get("value"), bool) for a in values)
            if len(right) != 1 or not numbers:
                problems.append(f"{where}: needs one correct numeric value")
                continue
            digits = q.get("precision")
            if digits is not None and not (isinstance(digits, int) and digits > 0):
                problems.append(f"{where}: precision must be a positive int")

            def shown(v):
                return float(f"{v:.{digits}g}") if digits else v

            if any(shown(a["value"]) == shown(right[0]["value"]) for a in values
                   if a is not right[0]):
                problems.append(f"{where}: a wrong value equals the right one")
            if answers[-1].get("type") != "default" or any(
                    a.get("type") not in ("value", "default") for a in answers):
                problems.append(f"{where}: answers must be values, then one default")
        else:
            problems.append(f"{where}: unknown type {q.get('type')!r}")
    return problems


def numeric_answers(chapter: str) -> list[tuple[str, float]]:
    """(question text, its correct value) of every numeric question of a chapter's quiz."""
    return [(q["question"], next(a["value"] for a in q["answers"] if a.get("correct") is True))
            for q in quiz.questions(chapter) if q["type"] == "numeric"]


def test_the_well_formedness_check_can_fail():
    good = quiz.mc("q?", [("a", True, "yes"), ("b", False, "no"), ("c", False, "no")])
    assert well_formed([good, good]) == []
    two = quiz.mc("q?", [("a", True, "yes"), ("b", True, "no"), ("c", False, "no")])
    none = quiz.mc("q?", [("a", False, "no"), ("b", False, "no"), ("c", False, "no")])
    assert any("exactly one" in p for p in well_formed([good, two]))
    assert any("exactly one" in p for p in well_formed([good, none]))
    assert well_formed([good]) == ["1 questions (2 to 4)"]
    num = quiz.numeric("n?", 2.25, "right", wrong=[(2.2500001, "no")], precision=3)
    assert any("equals the right one" in p for p in well_formed([good, num]))
    assert well_formed([good, quiz.numeric("n?", 2, "right", wrong=[(3, "no")])]) == []


@pytest.mark.parametrize("chapter", sorted(quiz.QUIZZES))
def test_every_quiz_is_well_formed_named_and_serialisable(chapter):
    qs = quiz.questions(chapter)
    assert well_formed(qs) == []
    assert all(q[quiz.NAME_KEY] == chapter for q in qs)
    assert json.loads(json.dumps(qs)) == qs          # what display_quiz embeds, unchanged


def test_every_chapter_with_a_conceptual_exercise_shows_its_quiz_before_its_exercises():
    conceptual = {e["chapter"] for e in course.exercises(ROOT) if e["kind"] == "conceptual"}
    assert conceptual and conceptual == set(quiz.QUIZZES)
    for nb_path in student.chapter_notebooks(ROOT):
        cells = json.loads(nb_path.read_text())["cells"]
        calls = [i for i, c in enumerate(cells)
                 if re.search(r"quiz\.show\(", student.source(c))]
        if nb_path.stem not in conceptual:
            assert calls == [], f"{nb_path.stem}: a quiz without a conceptual exercise"
            continue
        assert len(calls) == 1, f"{nb_path.stem}: one quiz cell"
        cell = cells[calls[0]]
        assert cell["cell_type"] == "code" and not student.is_solution_cell(cell)
        assert f'quiz.show("{nb_path.stem}")' in student.source(cell)
        exercises = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
                     and student.source(c).startswith("## Exercises")]
        assert exercises and calls[0] < exercises[0], f"{nb_path.stem}: quiz before exercises"
        # the student edition (and so Colab) keeps it
        committed = student.student_path(nb_path, ROOT).read_text()
        assert f'quiz.show(\\"{nb_path.stem}\\")' in committed


def test_unknown_chapter_is_refused():
    with pytest.raises(ValueError, match="no quiz for"):
        quiz.questions("results_main")


# --- the numbers are nibcore's ----------------------------------------------------------------

def _only(chapter, pattern):
    found = [(q, v) for q, v in numeric_answers(chapter) if re.search(pattern, q)]
    assert len(found) == 1, (chapter, pattern, numeric_answers(chapter))
    return found[0]


def test_numbers_equal_what_nibcore_computes():
    import inspect

    from scipy.stats import binomtest

    import nibcore
    from nibcore.base import MIN_BLOCKS_ABOVE, default_layer
    from nibcore.book import paper, theory
    from nibcore.methods.m2ib import M2IB

    mini = nibcore.load_model("mini")
    assert _only("preface", r"blocks")[1] == mini.image.n_blocks

    q, v = _only("clip", r"text tower")
    assert int(re.search(r"has (\d+) blocks", q).group(1)) == mini.text.n_blocks
    assert v == default_layer(mini.text)

    assert _only("information_bottleneck", r"Adam")[1] == \
        inspect.signature(M2IB.__init__).parameters["num_steps"].default == M2IB().num_steps

    q, v = _only("narrowing", r"bound")
    sq, lam, sigma = map(float, re.search(r"‖z‖² = ([\d.]+) at λ = ([\d.]+) and σ = ([\d.]+)",
                                          q).groups())
    assert v == pytest.approx(float(theory.kl_bound(sq, lam, sigma)), rel=1e-12)
    assert v == pytest.approx(lam ** 2 * sq / (2 * sigma ** 2))   # the formula of the text

    q, v = _only("completeness", r"evaluations")
    n = int(re.search(r"num_steps = (\d+)", q).group(1))
    assert v == len(nibcore.SCHEDULES["completeness"](n)[0]) == 8 * n   # "8n evaluations"
    assert _only("completeness", r"blocks")[1] == MIN_BLOCKS_ABOVE

    q, v = _only("negative_properties", r"p-value")
    k, n = map(int, re.search(r"in (\d+) of (\d+) scenes", q).groups())
    assert v == pytest.approx(binomtest(k, n, 0.5, alternative="greater").pvalue, rel=1e-12)

    baselines = [m for m in paper.PAPER_ORDER if m != "nib"]
    assert _only("baselines", r"baselines")[1] == len(baselines) == 7   # "seven methods"

    q, v = _only("explore", r"image tower")
    assert int(re.search(r"(\d+)-block", q).group(1)) == mini.image.n_blocks
    assert v == default_layer(mini.image)


def test_numeric_questions_state_no_answer_and_no_wrong_number_is_right():
    for chapter in quiz.QUIZZES:
        for q in quiz.questions(chapter):
            if q["type"] != "numeric":
                continue
            values = [a["value"] for a in q["answers"] if a.get("type") == "value"]
            right = next(a["value"] for a in q["answers"] if a.get("correct") is True)
            assert values.count(right) == 1
            stated = {float(x) for x in re.findall(r"\d+(?:\.\d+)?", q["question"])}
            assert float(right) not in stated, \
                f"{chapter}: the question states its own answer: {q['question']}"


# --- rendering and the leak scan --------------------------------------------------------------

def render(chapter: str, monkeypatch) -> tuple[str, list]:
    """What show() displays, as Jupyter Book writes it into a page: the HTML output, then the
    JavaScript output inside a script tag (myst-nb's rendering of application/javascript)."""
    import jupyterquiz.dynamic.display as jq_display

    shown = []
    monkeypatch.setattr(jq_display, "display", lambda obj: shown.append(obj))
    quiz.show(chapter)
    assert [type(o).__name__ for o in shown] == ["HTML", "Javascript"]
    page = (f"<html><body><p>chapter text</p><div class='output'>{shown[0].data}</div>"
            f'<script type="application/javascript">{shown[1].data}</script></body></html>')
    return page, shown


@pytest.mark.parametrize("chapter", sorted(quiz.QUIZZES))
def test_rendered_quiz_keeps_its_keys_out_of_the_visible_text(chapter, monkeypatch):
    page, _ = render(chapter, monkeypatch)
    qs = quiz.questions(chapter)
    # the keys ship in the script (the quiz needs them) ...
    assert len(student.ANSWER_KEY.findall(page)) == len(qs)
    # ... but the page's visible text shows neither a question nor a feedback nor a key
    visible = student.html_text(page)
    assert "correct" not in visible
    for q in qs:
        assert q["question"] not in visible
        assert not any(a.get("feedback") and a["feedback"] in visible for a in q["answers"])
    # and the scan exempts them, by the quiz's name
    assert student.answer_key_leaks(page) == []


def test_leak_scan_exempts_answer_keys_by_name_only(monkeypatch):
    page, _ = render("clip", monkeypatch)
    name = f'"{quiz.NAME_KEY}": "clip"'
    assert name in page
    assert student.answer_key_leaks(page) == []
    # the same keys under another name, or none, or with the quiz not among the known ones
    assert student.answer_key_leaks(page.replace(name, f'"{quiz.NAME_KEY}": "mine"'))
    assert student.answer_key_leaks(page.replace(name + ", ", ""))
    assert student.answer_key_leaks(page, quizzes=["narrowing"])
    # a key outside the payload (e.g. a hidden span) is a leak even beside a named quiz
    assert student.answer_key_leaks(page + '<span hidden>{"correct": true}</span>')


def test_show_is_deterministic_and_leaves_the_global_random_state_alone(monkeypatch):
    random.seed(123)
    before = random.getstate()
    _, first = render("narrowing", monkeypatch)
    assert random.getstate() == before
    _, second = render("narrowing", monkeypatch)
    assert first[0].data == second[0].data and first[1].data == second[1].data


# --- the built editions -----------------------------------------------------------------------

@pytest.mark.book
@pytest.mark.parametrize("html_root", [FULL_HTML, STUDENT_HTML], ids=["full", "student"])
def test_built_pages_carry_their_named_quiz(html_root):
    assert (html_root / "book").is_dir(), "build it first: make book / make student"
    for chapter in quiz.QUIZZES:
        page = (html_root / "book" / f"{chapter}.html").read_text()
        payloads = re.findall(r"var questions\w*=(\[.*?\]);\n", page, flags=re.S)
        assert len(payloads) == 1, f"{chapter}: one quiz"
        assert json.loads(payloads[0]) == quiz.questions(chapter)
        assert student.answer_key_leaks(page) == []
