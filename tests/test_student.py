"""The student edition (nibcore.book.student): solutions and the lecturer's guide are absent on
every path a student can open, and the committed student notebooks follow book/.

The unit tests check the stripping, the committed copies and the scanner on synthetic pages; the
``book`` tests follow every page of the built student edition (``make student``, run by ``make
test`` after the strict build) to its real download and Colab targets, and check the scanner
finds every chapter's solutions in the full edition (so "no leak" is not a blind scanner)."""

import json
from pathlib import Path

import pytest
import yaml

from nibcore.book import student

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO, BRANCH = CONFIG["repository"]["url"], CONFIG["repository"].get("branch", "main")
FULL_HTML = ROOT / "_build" / "html"
STUDENT_HTML = ROOT / "_build" / "student" / "html"


def notebook(*cells):
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def md(text, tags=()):
    return {"cell_type": "markdown", "metadata": {"tags": list(tags)} if tags else {},
            "source": text.splitlines(keepends=True)}


def code(text, tags=()):
    return {"cell_type": "code", "metadata": {"tags": list(tags)}, "outputs": [
        {"output_type": "stream", "name": "stdout", "text": ["the answer is 42\n"]}],
        "execution_count": 1, "source": text.splitlines(keepends=True)}


EXERCISE = """## Exercises

```{exercise} Zero
:label: ex-zero
Show that the information at lambda zero vanishes.
```

```{solution} ex-zero
:class: dropdown
At lambda zero the noisy state is pure noise drawn independently of the input so the
divergence inside the mutual information is zero for every single input.
```

````{solution-start} ex-zero
:class: dropdown
````
A gated solution that keeps talking about secret gated things for quite a while here.
```{code-cell}
print(1)
```
````{solution-end}
````

```{exercise} Next
:label: ex-next
Another question.
```
"""


def test_strip_removes_directives_gated_solutions_and_tagged_cells():
    nb = notebook(md("# Title\n"), md(EXERCISE), code("x = 1\n"),
                  code("# ex-zero: the solution, evaluated\nprint(42)\n", tags=["hide-cell",
                                                                               "solution"]),
                  md("```{solution} ex-next\n:class: dropdown\nOnly a solution.\n```\n"))
    out = student.strip_notebook(nb)
    text = student.dumps(out)
    assert "{solution" not in text and "gated" not in text and "pure noise" not in text
    assert "Show that the information" in text and "Another question." in text
    assert len(out["cells"]) == 3            # the tagged cell and the emptied cell are gone
    assert "Only a solution" not in text and "print(42)" not in text
    assert len(student.solution_texts(nb)) == 4
    assert nb["cells"][3]["metadata"]["tags"] == ["hide-cell", "solution"]  # input untouched


def test_toc_and_config_of_the_student_edition():
    toc = {"root": "book/preface", "parts": [
        {"caption": "A", "chapters": [{"file": "book/clip"}]},
        {"caption": "Teaching", "chapters": [{"file": student.GUIDE}]}]}
    out = student.student_toc(toc)
    assert out["parts"] == [{"caption": "A", "chapters": [{"file": "book/clip"}]}]
    assert student.GUIDE in json.dumps(toc)                  # the full toc is left alone
    config = student.student_config(CONFIG)
    assert config["repository"]["path_to_book"] == student.STUDENT_DIR
    assert config["repository"]["url"] == REPO and "student" in config["title"]
    assert CONFIG["repository"]["path_to_book"] == ""


def test_committed_student_notebooks_are_the_stripped_chapters():
    assert student.stale_student_notebooks(ROOT) == [], \
        "run `python -m nibcore.book.student sync` and commit student/"
    chapters = student.chapter_notebooks(ROOT)
    assert chapters and all(c.stem != Path(student.GUIDE).name for c in chapters)
    for nb in chapters:
        committed = student.student_path(nb, ROOT).read_text()
        assert student.structural_leaks(committed, "notebook") == []


def test_every_chapter_has_solutions_the_scanner_can_recognise():
    prints = student.solution_fingerprints(student.chapter_notebooks(ROOT))
    for nb in student.chapter_notebooks(ROOT):
        texts = student.solution_texts(json.loads(nb.read_text()))
        assert texts, f"{nb.name}: no solution (each chapter ends with exercises)"
        assert len(prints[nb.stem]) >= 10, f"{nb.name}: its solutions have no words of their own"


def test_scanner_follows_download_and_colab_targets(tmp_path):
    nb = notebook(md(EXERCISE))
    chapter = tmp_path / "book" / "zero.ipynb"
    chapter.parent.mkdir(parents=True)
    chapter.write_text(student.dumps(nb))
    prints = student.solution_fingerprints([chapter])
    html_root = tmp_path / "html"
    (html_root / "book").mkdir(parents=True)
    (html_root / "_sources" / "book").mkdir(parents=True)
    repo_path = "nib-book/nib"
    page = html_root / "book" / "zero.html"
    page.write_text(
        '<a href="../_sources/book/zero.ipynb">download</a>'
        f'<a href="https://colab.research.google.com/github/{repo_path}/blob/main/student/book/'
        'zero.ipynb">colab</a><p>Show that the information at lambda zero vanishes.</p>')
    # a clean edition: stripped download and stripped committed notebook
    (html_root / "_sources" / "book" / "zero.ipynb").write_text(
        student.dumps(student.strip_notebook(nb)))
    (tmp_path / "student" / "book").mkdir(parents=True)
    (tmp_path / "student" / "book" / "zero.ipynb").write_text(
        student.dumps(student.strip_notebook(nb)))
    problems, scanned = student.scan_edition(html_root, prints, REPO, "main", root=tmp_path)
    assert problems == [] and scanned == 3
    # named wrong editions: the download keeps the solution; Colab opens the full notebook;
    # the page renders the solution's words
    (html_root / "_sources" / "book" / "zero.ipynb").write_text(student.dumps(nb))
    problems, _ = student.scan_edition(html_root, prints, REPO, "main", root=tmp_path)
    assert any("_sources" in p and "quotes a solution" in p for p in problems)
    (html_root / "_sources" / "book" / "zero.ipynb").write_text(
        student.dumps(student.strip_notebook(nb)))
    page.write_text(page.read_text().replace("/student/book/", "/book/"))
    problems, _ = student.scan_edition(html_root, prints, REPO, "main", root=tmp_path)
    assert any("not a student notebook" in p for p in problems)
    page.write_text('<div class="solution dropdown admonition"><p>At lambda zero the noisy '
                    'state is pure noise drawn independently of the input</p></div>')
    problems, _ = student.scan_edition(html_root, prints, REPO, "main", root=tmp_path)
    assert any('class="solution"' in p for p in problems)
    assert any("quotes a solution of zero" in p for p in problems)


# --- the built editions (make test builds both before `pytest -m book`) ----------------------

@pytest.mark.book
def test_student_edition_has_no_solution_on_any_page_download_or_colab_target():
    assert (STUDENT_HTML / "book").is_dir(), "build it first: make student"
    chapters = student.chapter_notebooks(ROOT)
    prints = student.solution_fingerprints(chapters)
    problems, scanned = student.scan_edition(STUDENT_HTML, prints, REPO, BRANCH)
    assert problems == []
    colab, downloads = set(), set()
    for nb in chapters:
        page = STUDENT_HTML / nb.relative_to(ROOT).with_suffix(".html")
        targets, bad = student.page_targets(page, STUDENT_HTML, REPO, BRANCH)
        assert bad == []
        colab |= {t for t in targets if t.is_relative_to(ROOT / student.STUDENT_DIR)}
        downloads |= {t for t in targets if "_sources" in t.parts}
    # every chapter page has its Colab button on the committed student copy and a download
    assert colab == {student.student_path(nb, ROOT) for nb in chapters}
    assert len(downloads) == len(chapters)
    assert scanned >= 3 * len(chapters)
    assert not (STUDENT_HTML / (student.GUIDE + ".html")).exists()


@pytest.mark.book
def test_the_scanner_finds_every_chapters_solutions_in_the_full_edition():
    assert (FULL_HTML / "book").is_dir(), "build it first: make book"
    prints = student.solution_fingerprints(student.chapter_notebooks(ROOT))
    problems, _ = student.scan_edition(FULL_HTML, prints, REPO, BRANCH)
    quoted = {p.split("quotes a solution of ")[1].split(":")[0]
              for p in problems if "quotes a solution of " in p}
    assert quoted == set(prints)


def test_scanner_flags_quiz_answer_keys_unless_named(tmp_path):
    """A jupyterquiz payload's answer keys ("correct": true) pass the scan only inside a quiz that
    nibcore.book.quiz names — on the page (its script) and in a downloaded notebook (its
    JavaScript output); the same keys without the name are flagged on both paths."""
    from nibcore.book import quiz

    def payload(name):
        qs = [{"question": "q?", "type": "multiple_choice", "answers": [
            {"answer": "a", "correct": True, "feedback": "yes"},
            {"answer": "b", "correct": False, "feedback": "no"}]}]
        if name:
            qs = [{quiz.NAME_KEY: name, **q} for q in qs]
        return f"var questionsAbCdEf={json.dumps(qs)};\n\nif (typeof Question === 'undefined') {{"

    def edition(name):
        html_root = tmp_path / name / "html"
        (html_root / "book").mkdir(parents=True)
        (html_root / "_sources" / "book").mkdir(parents=True)
        js = payload(name if name != "unnamed" else None)
        (html_root / "book" / "zero.html").write_text(
            '<a href="../_sources/book/zero.ipynb">download</a><p>A chapter.</p>'
            f'<script type="application/javascript">{js}</script>')
        out = {"output_type": "display_data", "metadata": {},
               "data": {"application/javascript": js, "text/plain": "<Javascript object>"}}
        nb = notebook(md("# Zero\n"), dict(code("quiz.show('clip')\n"), outputs=[out]))
        (html_root / "_sources" / "book" / "zero.ipynb").write_text(student.dumps(nb))
        return student.scan_edition(html_root, {}, REPO, "main", root=tmp_path)

    problems, scanned = edition("clip")
    assert problems == [] and scanned == 2
    problems, _ = edition("unnamed")
    assert any(p.startswith("book/zero.html: ") and "answer key" in p for p in problems)
    assert any("zero.ipynb" in p and "answer key" in p for p in problems)
    problems, _ = edition("not-a-chapter")
    assert len([p for p in problems if "answer key" in p]) == 2
