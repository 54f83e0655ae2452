"""The student edition: the book with its solutions and the lecturer's guide taken out.

One source, two editions. The full book (``make book``) shows every exercise with its solution
(a ``{solution}`` dropdown, sometimes with a code cell tagged ``solution`` that evaluates it) and
lists the lecturer's guide. The student edition (``make student``) is built from the same
executed notebooks, without re-executing them: :func:`strip_notebook` removes

* every ``{solution}`` directive of a markdown cell (and a gated ``{solution-start}`` …
  ``{solution-end}`` pair), and
* every cell tagged ``solution`` (code that computes an answer, with its outputs),

and the table of contents loses the lecturer's guide (:data:`GUIDE`). The chapters' quizzes
(:mod:`nibcore.book.quiz`) stay: they are self-checks whose answer keys travel in the page's
script, not in its visible text; :func:`answer_key_leaks` allows such keys only inside a quiz
named by that module. Students reach a chapter
three ways — its HTML page, the notebook behind its download button (``_sources``) and the
notebook its Colab button opens. The first two come out of the student build; Colab opens a
notebook stored in the repository, so the stripped *source* notebooks are committed under
``student/`` (mirroring ``book/``) and the student build's ``repository.path_to_book`` points
there (``…/blob/main/student/book/<chapter>.ipynb``). ``tests/test_student.py`` regenerates
them and compares; :func:`leaks` scans any page or notebook for solution text.

``python -m nibcore.book.student sync`` rewrites ``student/`` from ``book/``;
``python -m nibcore.book.student check`` fails while it is stale.
"""

from __future__ import annotations

import copy
import html
import json
import re
import sys
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parents[2]
#: the lecturer's guide: a page of the full edition only (toc entry, without suffix)
GUIDE = "book/lecturer_guide"
#: the folder (at the repository's root) holding the committed student notebooks
STUDENT_DIR = "student"
#: the tag of a cell that belongs to a solution (removed in the student edition)
SOLUTION_TAG = "solution"
#: a solution's text is matched by runs of this many consecutive words
SHINGLE = 8

_FENCE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w-]+)\}")


def source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def split_solutions(text: str) -> tuple[str, list[str]]:
    """(``text`` without its solution directives, the solution directives' texts).

    A solution is a ``{solution}`` directive — from its opening fence to the closing fence of
    the same characters and length — or everything from a ``{solution-start}`` directive to the
    end of the matching ``{solution-end}``. Blank lines left behind are collapsed."""
    lines = text.splitlines(keepends=True)
    kept, solutions, i = [], [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m and m.group("name") in ("solution", "solution-start"):
            fence, start = m.group("fence"), i
            gated = m.group("name") == "solution-start"
            i += 1
            while i < len(lines):
                end = _FENCE.match(lines[i])
                if gated and end and end.group("name") == "solution-end":
                    # skip to that directive's closing fence
                    close = end.group("fence")
                    i += 1
                    while i < len(lines) and lines[i].strip() != close:
                        i += 1
                    break
                if not gated and lines[i].strip() == fence:
                    break
                i += 1
            solutions.append("".join(lines[start:i + 1]))
            i += 1
            # drop the blank lines that separated the solution from what follows
            while i < len(lines) and not lines[i].strip() and (not kept or not kept[-1].strip()):
                i += 1
            continue
        kept.append(lines[i])
        i += 1
    out = re.sub(r"\n{3,}", "\n\n", "".join(kept))
    return out.rstrip("\n") + ("\n" if text.endswith("\n") and out.strip() else ""), solutions


def is_solution_cell(cell: dict) -> bool:
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def strip_notebook(nb: dict) -> dict:
    """A copy of a notebook (executed or not) without its solutions: solution cells dropped,
    solution directives cut out of markdown cells; a markdown cell left empty is dropped."""
    out = copy.deepcopy(nb)
    cells = []
    for cell in out["cells"]:
        if is_solution_cell(cell):
            continue
        if cell["cell_type"] == "markdown":
            text, solutions = split_solutions(source(cell))
            if solutions:
                if not text.strip():
                    continue
                cell["source"] = text.splitlines(keepends=True)
        cells.append(cell)
    out["cells"] = cells
    return out


def solution_texts(nb: dict) -> list[str]:
    """The solutions of a notebook: each solution directive's text and each solution cell's
    source (a cell's outputs are not solution text of their own: they change per build)."""
    texts = []
    for cell in nb["cells"]:
        if is_solution_cell(cell):
            texts.append(source(cell))
        elif cell["cell_type"] == "markdown":
            texts += split_solutions(source(cell))[1]
    return texts


def dumps(nb: dict) -> str:
    """A notebook as the repository stores it (nbformat's indent, UTF-8, final newline)."""
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


# --- the committed student notebooks -----------------------------------------------------------

def chapter_notebooks(root: Path = ROOT) -> list[Path]:
    """The chapters the student edition carries: every notebook of ``book/`` (the build makes
    sure the toc lists each of them) but the lecturer's guide, by name."""
    return [p for p in sorted((root / "book").glob("*.ipynb"))
            if p.relative_to(root).with_suffix("").as_posix() != GUIDE]


def student_path(nb: Path, root: Path = ROOT) -> Path:
    """Where the committed student copy of a chapter lives: ``student/book/<name>.ipynb``."""
    return root / STUDENT_DIR / nb.relative_to(root)


def stale_student_notebooks(root: Path = ROOT, write: bool = False) -> list[str]:
    """The student notebooks that differ from their stripped ``book/`` source (or are missing,
    or have no source any more); with ``write`` they are rewritten (and orphans removed)."""
    stale, expected = [], set()
    for nb in chapter_notebooks(root):
        target = student_path(nb, root)
        expected.add(target)
        text = dumps(strip_notebook(json.loads(nb.read_text())))
        if not target.is_file() or target.read_text() != text:
            stale.append(str(target.relative_to(root)))
            if write:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
    for extra in sorted((root / STUDENT_DIR).rglob("*.ipynb")):
        if extra not in expected:
            stale.append(f"{extra.relative_to(root)} (no chapter of that name)")
            if write:
                extra.unlink()
    return stale


# --- the student build's configuration -----------------------------------------------------------

def student_toc(toc: dict) -> dict:
    """The full toc without the lecturer's guide (a part left empty is dropped)."""
    toc = copy.deepcopy(toc)

    def keep(items):
        out = []
        for item in items or []:
            if re.sub(r"\.(ipynb|md)$", "", item.get("file", "")) == GUIDE:
                continue
            for key in ("chapters", "sections"):
                if key in item:
                    item[key] = keep(item[key])
            if "caption" in item and not item.get("chapters") and "file" not in item:
                continue
            out.append(item)
        return out

    for key in ("parts", "chapters", "sections"):
        if key in toc:
            toc[key] = keep(toc[key])
    return toc


def student_config(config: dict) -> dict:
    """The full ``_config.yml`` for the student edition: its title says so, and the launch
    buttons open the committed student notebooks (``repository.path_to_book = student``)."""
    config = copy.deepcopy(config)
    config["title"] = f"{config['title']} (student edition)"
    config["repository"]["path_to_book"] = STUDENT_DIR
    return config


# --- the leak scan -------------------------------------------------------------------------------

def words(text: str) -> list[str]:
    return re.findall(r"[a-z][a-z0-9]+", text.lower())


def shingles(text: str, k: int = SHINGLE) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i:i + k]) for i in range(len(w) - k + 1)}


def html_text(page: str) -> str:
    """The visible text of an HTML page (scripts and styles dropped, tags removed)."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S | re.I)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def notebook_text(nb: dict, scripts: bool = False) -> str:
    """Every source and every textual output of a notebook (with ``scripts``, its JavaScript
    outputs too)."""
    parts = []
    for cell in nb["cells"]:
        parts.append(source(cell))
        for output in cell.get("outputs", []):
            text = output.get("text")
            if text is not None:
                parts.append("".join(text) if isinstance(text, list) else text)
            for mime, data in output.get("data", {}).items():
                if mime.startswith("text/") or (scripts and mime == "application/javascript"):
                    parts.append("".join(data) if isinstance(data, list) else data)
    return "\n".join(parts)


def solution_fingerprints(notebooks: list[Path]) -> dict[str, set[tuple[str, ...]]]:
    """Per notebook, the word runs that occur in its solutions and nowhere else in the full
    book's text (so a run quoted from the chapter's own prose is not a leak)."""
    nbs = {p.stem: json.loads(p.read_text()) for p in notebooks}
    rest: set[tuple[str, ...]] = set()
    for nb in nbs.values():
        rest |= shingles(notebook_text(strip_notebook(nb)))
    return {name: set().union(*(shingles(t) for t in solution_texts(nb))) - rest
            for name, nb in nbs.items() if solution_texts(nb)}


def leaks(text: str, fingerprints: dict[str, set[tuple[str, ...]]]) -> list[str]:
    """Which notebooks' solutions ``text`` quotes (8 words in a row), with a sample of each."""
    found = shingles(text)
    out = []
    for name, prints in fingerprints.items():
        hit = prints & found
        if hit:
            out.append(f"{name}: {' '.join(sorted(hit)[0])!r} ({len(hit)} runs)")
    return out


def structural_leaks(text: str, kind: str) -> list[str]:
    """Marks of a solution or of the guide in a page (``kind`` ``html``) or a notebook."""
    problems = []
    if kind == "html":
        if re.search(r'class="[^"]*\bsolution\b', text):
            problems.append("a rendered solution (class=\"solution\")")
    else:
        if re.search(r"\{solution(-start|-end)?\}", text):
            problems.append("a {solution} directive")
        if re.search(r'"tags":\s*\[[^\]]*"solution"', text):
            problems.append("a cell tagged 'solution'")
    if "lecturer_guide" in text:
        problems.append("a link to the lecturer's guide")
    return problems


#: a quiz's answer key as jupyterquiz stores it: ``"correct": true`` in a question's JSON
ANSWER_KEY = re.compile(r'"correct"\s*:\s*true')
#: jupyterquiz's question payload in its script: ``var questions<id>=[…]``
_QUIZ_PAYLOAD = re.compile(r"\bvar questions\w*\s*=\s*(?=\[)")


def answer_key_leaks(text: str, quizzes: Iterable[str] | None = None) -> list[str]:
    """Quiz answer keys in a page's source or a notebook's outputs (``scripts=True``) that are
    not part of a named quiz. Keys are exempt by name only: inside a jupyterquiz payload whose
    every question names, under :data:`nibcore.book.quiz.NAME_KEY`, one of ``quizzes`` (default:
    the chapters of :data:`nibcore.book.quiz.QUIZZES`). Any other key — a payload without the
    name, or with another, or a key outside a payload — is a leak."""
    from nibcore.book import quiz

    names = set(quiz.QUIZZES if quizzes is None else quizzes)
    exempt = []
    for m in _QUIZ_PAYLOAD.finditer(text):
        try:
            payload, end = json.JSONDecoder().raw_decode(text, m.end())
        except ValueError:
            continue
        if payload and all(isinstance(q, dict) and q.get(quiz.NAME_KEY) in names
                           for q in payload):
            exempt.append((m.end(), end))
    stray = [k for k in ANSWER_KEY.finditer(text)
             if not any(a <= k.start() < b for a, b in exempt)]
    return [f"{len(stray)} quiz answer key(s) outside a named quiz"] if stray else []


_HREF = re.compile(r'href="([^"#?]+)')


def page_targets(page: Path, html_root: Path, repository: str, branch: str,
                 root: Path = ROOT) -> tuple[list[Path], list[str]]:
    """The files a student reaches from one page besides the page itself: its download
    targets (``_sources/…``, resolved in the built HTML) and its Colab targets (resolved in the
    repository: Colab opens ``<repository>/blob/<branch>/<path>``). Returns (files, problems:
    a target that points elsewhere or does not exist)."""
    text = page.read_text(errors="replace")
    colab = re.compile(r"https://colab\.research\.google\.com/github/"
                       + re.escape(repository.removeprefix("https://github.com/"))
                       + "/blob/" + re.escape(branch) + "/(.+)")
    files, problems = [], []
    for href in sorted(set(_HREF.findall(text))):
        if "colab.research.google.com" in href:
            m = colab.fullmatch(href)
            if m is None:
                problems.append(f"{page.name}: a Colab link outside {repository}@{branch}: {href}")
                continue
            target = root / m.group(1)
            if not m.group(1).startswith(f"{STUDENT_DIR}/"):
                problems.append(f"{page.name}: Colab opens {m.group(1)}, not a student notebook")
            elif not target.is_file():
                problems.append(f"{page.name}: Colab opens {m.group(1)}, which is not in the "
                                "repository (python -m nibcore.book.student sync)")
            else:
                files.append(target)
        elif "_sources/" in href and not href.startswith(("http:", "https:")):
            target = (page.parent / href).resolve()
            if not target.is_relative_to(html_root.resolve()) or not target.is_file():
                problems.append(f"{page.name}: download target {href} missing")
            else:
                files.append(target)
    return files, problems


def scan_edition(html_root: Path, fingerprints: dict[str, set[tuple[str, ...]]],
                 repository: str, branch: str, root: Path = ROOT) -> tuple[list[str], int]:
    """Every page of a built edition, and every download and Colab target it links to, scanned
    for solution text and for the guide. Returns (problems, number of files scanned)."""
    problems, seen = [], set()
    pages = sorted(html_root.rglob("*.html"))
    if (html_root / "book" / f"{Path(GUIDE).name}.html").exists():
        problems.append(f"the lecturer's guide was built ({GUIDE}.html)")
    for page in pages:
        text = page.read_text(errors="replace")
        rel = page.relative_to(html_root)
        problems += [f"{rel}: {p}" for p in structural_leaks(text, "html")]
        problems += [f"{rel}: {p}" for p in answer_key_leaks(text)]
        problems += [f"{rel}: quotes a solution of {p}" for p in leaks(html_text(text),
                                                                         fingerprints)]
        seen.add(page)
        targets, bad = page_targets(page, html_root, repository, branch, root)
        problems += bad
        for target in targets:
            if target in seen:
                continue
            seen.add(target)
            body = target.read_text(errors="replace")
            name = target.relative_to(root) if target.is_relative_to(root) else target
            problems += [f"{name}: {p}" for p in structural_leaks(body, "notebook")]
            try:
                nb = json.loads(body)
            except ValueError:
                problems += [f"{name}: {p}" for p in answer_key_leaks(body)]
            else:
                body = notebook_text(nb)
                problems += [f"{name}: {p}"
                             for p in answer_key_leaks(notebook_text(nb, scripts=True))]
            problems += [f"{name}: quotes a solution of {p}" for p in leaks(body, fingerprints)]
    return problems, len(seen)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sync"]:
        stale = stale_student_notebooks(write=True)
        print(f"{len(stale)} student notebook(s) rewritten" + "".join(f"\n  {s}" for s in stale))
        return 0
    if argv[:1] == ["check"]:
        stale = stale_student_notebooks()
        for s in stale:
            print(f"stale  {s}")
        if stale:
            print("run `python -m nibcore.book.student sync` and commit student/")
        return 1 if stale else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
