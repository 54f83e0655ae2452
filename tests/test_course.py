"""The book as a course (nibcore.book.course): every chapter states its objectives, prerequisites
and a reading time close to the one computed from its text; every exercise has a kind; the
checks named in the exercises exist; the lecturer's guide is in the full toc only."""

import json
import re
from pathlib import Path

import pytest
import yaml

from nibcore.book import check, course, student

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = student.chapter_notebooks(ROOT)


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_opens_with_objectives_prerequisites_and_reading_time(nb):
    cells = json.loads(nb.read_text())["cells"]
    top = "".join(cells[0]["source"])
    assert top.startswith("# "), "the first cell starts with the title"
    head = top[:top.index("\n## ")] if "\n## " in top else top
    assert "Learning objectives" in head.split("\n\n", 3)[1], "objectives right after the title"
    assert "**Prerequisites:**" in head
    stated = course.stated_reading_minutes(nb)
    assert stated is not None, "no 'Reading time: about N min'"
    assert abs(stated - course.reading_minutes(nb)) <= 5, \
        f"states {stated} min, its text reads in about {course.reading_minutes(nb)}"


def test_every_exercise_has_a_kind_and_every_kind_an_exercise():
    found = course.exercises(ROOT)
    labels = [e["label"] for e in found]
    assert len(labels) == len(set(labels)), "exercise labels are unique"
    assert [e["label"] for e in found if e["kind"] == "?"] == [], \
        "classify new exercises in course.KINDS"
    assert set(course.KINDS) == set(labels), "course.KINDS names an exercise that is gone"
    kinds = {e["kind"] for e in found}
    assert kinds == {"proof", "conceptual", "coding", "lab"}


def test_the_new_proof_exercises_exist_with_solutions():
    found = {e["label"]: e for e in course.exercises(ROOT)}
    for label in ("ex-narrow-bound", "ex-ib-dpi", "ex-compl-euler"):
        assert found[label]["kind"] == "proof"
    for nb in CHAPTERS:
        texts = "\n".join(student.solution_texts(json.loads(nb.read_text())))
        for label in ("ex-narrow-bound", "ex-ib-dpi", "ex-compl-euler"):
            if found[label]["chapter"] == nb.stem:
                assert f"{{solution}} {label}" in texts


def test_every_check_an_exercise_names_exists_and_every_check_is_named():
    named = set()
    for nb in CHAPTERS:
        for cell in json.loads(nb.read_text())["cells"]:
            named |= set(re.findall(r"check\.(ex_\w+)\(", "".join(cell["source"])))
    assert named, "no exercise names a check"
    assert all(callable(getattr(check, n, None)) for n in named), named
    defined = {n for n in dir(check) if n.startswith("ex_")}
    assert defined == named, f"checks no exercise mentions: {defined - named}"
    for e in course.exercises(ROOT):
        assert e["check"] == (e["label"].replace("-", "_") in defined)


def test_guide_is_in_the_full_toc_and_not_in_the_student_toc():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert student.GUIDE in json.dumps(toc)
    assert (ROOT / f"{student.GUIDE}.md").is_file()
    assert student.GUIDE not in json.dumps(student.student_toc(toc))


def test_compute_seconds_reads_papermill_durations(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "a.ipynb").write_text(json.dumps(
        {"cells": [], "metadata": {"papermill": {"duration": 12.5}}}))
    (tmp_path / "book" / "b.ipynb").write_text(json.dumps({"cells": [], "metadata": {}}))
    assert course.compute_seconds(tmp_path) == {"a": 12.5, "b": None}


def test_guide_tables_are_current():
    text = (ROOT / f"{student.GUIDE}.md").read_text()
    assert course.BEGIN in text and course.END in text
    stated = text[text.index(course.BEGIN):text.index(course.END) + len(course.END)]
    times = course.guide_compute_times(stated)
    assert set(times) == {p.stem for p in CHAPTERS}
    assert stated == course.render_tables(times), \
        "regenerate: python -m nibcore.book.course _build/executed"
