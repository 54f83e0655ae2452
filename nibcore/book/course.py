"""The book as a course: reading times, the exercises by kind, and compute times from a build.

* :func:`reading_minutes` — the reading time a chapter states at its top, from its words and
  code lines (``tests/test_course.py`` keeps the stated times within 5 minutes of it);
* :func:`exercises` — every exercise of the book with its kind (proof, conceptual, coding, lab)
  and whether :mod:`nibcore.book.check` has a check for it;
* :func:`compute_seconds` — each chapter's execution time as papermill recorded it in the
  executed notebooks of a build (``metadata.papermill.duration``);
* :func:`store_times` — how long each results-store file took to generate (its sidecar), and
  whether a class can regenerate it live.

``python -m nibcore.book.course [EXECUTED_DIR]`` prints the tables of the lecturer's guide.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from nibcore.book import student

#: words of prose read per minute (technical text with maths), code lines read per minute
WORDS_PER_MINUTE = 150
CODE_LINES_PER_MINUTE = 30

#: the kind of every exercise (label → kind); a new exercise must be classified here
KINDS = {
    # proofs: a derivation the student writes
    "ex-narrow-zero": "proof", "ex-narrow-bound": "proof", "ex-ib-dpi": "proof",
    "ex-compl-euler": "proof", "ex-neg-minmax": "proof", "ex-metrics-chance": "proof",
    # coding: a computation whose answer a check can grade
    "ex-clip-tokens": "coding", "ex-clip-confusions": "coding", "ex-claims-strict": "coding",
    "ex-narrow-tight": "coding", "ex-passes-predict": "coding", "ex-abl-map": "coding",
    "ex-compl-lambda0": "coding", "ex-gallery-norm": "coding", "ex-metrics-game": "coding",
    "ex-metrics-pool": "coding", "ex-text-minimum": "coding", "ex-text-clean": "coding",
    "ex-ib-average": "coding", "ex-ib-steps": "coding", "ex-base-rise": "coding",
    "ex-base-invariance": "coding", "ex-neg-shape": "coding", "ex-preface-one": "coding",
    "ex-compl-random": "coding", "ex-claims-own": "coding", "ex-passes-cost": "coding",
    "ex-passes-nib": "coding", "ex-use-effects": "coding", "ex-use-density": "coding",
    # labs: a sweep over many pairs, compared with the store
    "ex-abl-complete": "lab", "ex-beta-seeds": "lab", "ex-beta-nib": "lab",
    "ex-beyond-dilate": "lab", "ex-beyond-bottom": "lab", "ex-main-n": "lab",
    "ex-main-caption": "lab", "ex-gallery-own": "lab", "ex-main-lab": "lab",
    "ex-text-lab": "lab", "ex-abl-lab": "lab", "ex-beta-lab": "lab", "ex-use-lab": "lab",
    "ex-beyond-lab": "lab", "ex-metrics-lab": "lab", "ex-passes-lab": "lab",
    # conceptual: an argument, an opinion, an exploration without one right number
    "ex-clip-logit": "conceptual", "ex-narrow-per-token": "conceptual",
    "ex-ib-beta": "conceptual", "ex-compl-worth": "conceptual", "ex-neg-signed-m2ib": "conceptual",
    "ex-base-right": "conceptual", "ex-explore-layer": "conceptual",
    "ex-explore-lie": "conceptual", "ex-explore-upload": "conceptual",
    "ex-preface-vitb32": "conceptual",
}

_EXERCISE = re.compile(r"^(`{3,}|:{3,})\{exercise\}\s*([^\n]*)\n:label:\s*(\S+)", re.M)


def _stripped(nb_path: Path) -> dict:
    return student.strip_notebook(json.loads(nb_path.read_text()))


def reading_minutes(nb_path: Path) -> int:
    """Minutes to read a chapter (without its solutions): its prose at
    :data:`WORDS_PER_MINUTE`, its code at :data:`CODE_LINES_PER_MINUTE`, rounded to 5 min
    (at least 5)."""
    nb = _stripped(nb_path)
    prose = " ".join(student.source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    code = sum(len(student.source(c).splitlines()) for c in nb["cells"]
               if c["cell_type"] == "code")
    minutes = len(re.findall(r"\w+", prose)) / WORDS_PER_MINUTE + code / CODE_LINES_PER_MINUTE
    return max(5, int(5 * round(minutes / 5)))


def stated_reading_minutes(nb_path: Path) -> int | None:
    """The reading time a chapter states at its top ("Reading time: about N min")."""
    for cell in json.loads(nb_path.read_text())["cells"][:2]:
        m = re.search(r"Reading time:\*{0,2}\s*about (\d+) min", student.source(cell))
        if m:
            return int(m.group(1))
    return None


def exercises(root: Path = student.ROOT) -> list[dict]:
    """Every exercise of the book: chapter, label, title, kind, and whether it has a check."""
    from nibcore.book import check

    out = []
    for nb_path in student.chapter_notebooks(root):
        for cell in json.loads(nb_path.read_text())["cells"]:
            if cell["cell_type"] != "markdown":
                continue
            for m in _EXERCISE.finditer(student.source(cell)):
                label = m.group(3)
                out.append({"chapter": nb_path.stem, "label": label,
                            "title": m.group(2).strip(), "kind": KINDS.get(label, "?"),
                            "check": hasattr(check, label.replace("-", "_"))})
    return out


def compute_seconds(executed: Path) -> dict[str, float | None]:
    """Each chapter's execution time (s) in a build's executed tree (papermill's record)."""
    out = {}
    for nb_path in sorted((executed / "book").glob("*.ipynb")):
        meta = json.loads(nb_path.read_text()).get("metadata", {}).get("papermill", {})
        out[nb_path.stem] = meta.get("duration")
    return out


#: a store file a class can regenerate during a lesson: at most this many minutes on one core
LIVE_MINUTES = 10


def store_times(model: str = "mini") -> list[dict]:
    """Per file of the results store: its rows, the wall time of the sessions that wrote it (from
    its provenance sidecar, :func:`nibcore.store.read_meta`), the threads they ran on, and
    whether a class can regenerate it live (at most :data:`LIVE_MINUTES` minutes)."""
    from nibcore import store

    out = []
    for name in store.SPECS:
        path = store.store_file(name, model)
        if not path.is_file():
            continue
        meta = store.read_meta(path)
        seconds = sum(s.get("wall_seconds", 0.0) for s in meta.get("sessions", [])) or \
            meta.get("wall_seconds")
        out.append({"name": name, "rows": meta.get("rows"), "minutes": seconds / 60,
                    "threads": meta.get("threads"), "about": meta.get("about", ""),
                    "live": seconds / 60 <= LIVE_MINUTES})
    return out


#: the markers around the generated tables of the lecturer's guide
BEGIN, END = "<!-- begin: python -m nibcore.book.course -->", "<!-- end: generated -->"


def _kinds(label_kinds: list[dict], chapter: str) -> str:
    counts = {}
    for e in label_kinds:
        if e["chapter"] == chapter:
            counts[e["kind"]] = counts.get(e["kind"], 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def render_tables(times: dict[str, float | None]) -> str:
    """The guide's generated tables: per chapter the reading time, the compute time (from
    ``times``, seconds) and its exercises by kind; every exercise with its kind and check; every
    store file with its generation time and whether a class can regenerate it live."""
    found = exercises()
    order = re.findall(r"book/(\w+)", (student.ROOT / "_toc.yml").read_text())
    chapters = sorted(student.chapter_notebooks(),
                      key=lambda p: order.index(p.stem) if p.stem in order else len(order))
    found.sort(key=lambda e: order.index(e["chapter"]) if e["chapter"] in order else len(order))
    lines = [BEGIN, "", "| chapter | reading | compute, 1 CPU core | exercises |",
             "|---|---:|---:|---|"]
    for nb_path in chapters:
        t = times.get(nb_path.stem)
        lines.append(f"| {{doc}}`{nb_path.stem}` | {reading_minutes(nb_path)} min | "
                     f"{'unmeasured' if t is None else f'{t:.0f} s'} | "
                     f"{_kinds(found, nb_path.stem)} |")
    total = {k: sum(e["kind"] == k for e in found) for k in ("proof", "conceptual", "coding",
                                                               "lab")}
    checked = sum(e["check"] for e in found)
    lines += ["", f"{len(found)} exercises: " + ", ".join(f"{n} {k}" for k, n in total.items())
              + f"; {checked} with a self-check.", "",
              "| chapter | exercise | kind | self-check |", "|---|---|---|---|"]
    for e in found:
        fn = e["label"].replace("-", "_")
        lines.append(f"| {e['chapter']} | {e['title']} (`{e['label']}`) | {e['kind']} | "
                     f"{f'`check.{fn}`' if e['check'] else '—'} |")
    lines += ["", "| store file | rows | generation, minutes (threads) | live in class |",
              "|---|---:|---:|---|"]
    for f in store_times():
        lines.append(f"| `{f['name']}` | {f['rows']} | {f['minutes']:.1f} ({f['threads']}) | "
                     f"{'yes' if f['live'] else 'no'} |")
    return "\n".join(lines + ["", END])


def guide_compute_times(text: str) -> dict[str, float | None]:
    """The compute times a guide's chapter table states (seconds; None for "unmeasured")."""
    out = {}
    for m in re.finditer(r"^\| \{doc\}`(\w+)` \| [^|]+\| (unmeasured|(\d+) s) \|", text,
                         re.M):
        out[m.group(1)] = None if m.group(3) is None else float(m.group(3))
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the guide's tables, compute times from EXECUTED_DIR (default _build/executed)."""
    argv = sys.argv[1:] if argv is None else argv
    executed = Path(argv[0]) if argv else student.ROOT / "_build" / "executed"
    print(render_tables(compute_seconds(executed) if executed.is_dir() else {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
