#!/usr/bin/env python
"""Execute every chapter of the book with papermill, build it with jupyter-book, check the HTML.

    python scripts/build_book.py [--smoke] [--only NAME ...] [--param KEY=VALUE ...] [--no-html]
                                 [--out DIR]

1. Reads ``_toc.yml``; fails if a notebook under ``book/`` is missing from it (or the toc names a
   file that does not exist). Then audits the committed results store (``data/results/``):
   ``python -m nibcore.store audit`` re-computes a seeded sample of stored rows (at least 2
   pairs per method, side and file) within the tolerances measured across numeric paths
   (:mod:`nibcore.audit`), and collects every value it cannot reproduce, or a changed model
   hash or method parameters (full builds always; with ``--only`` when ``--audit`` is given;
   ``--no-audit`` skips it). With ``--strict`` (``make test``) any mismatch fails the build;
   without it (``make book``, a reader's machine) the book is still built: the failing rows are
   printed and every table that reads a failing file names them on its page.
2. Executes each listed notebook with papermill (kernel ``python3``, working directory ``book/``)
   into ``_build/executed/``, which mirrors the source tree (``_config.yml``, ``_toc.yml``,
   ``references.bib``, ``book/``). ``--smoke`` injects ``SMOKE = True`` into each notebook's
   ``parameters`` cell; ``--param KEY=VALUE`` injects more (values are parsed as Python literals,
   else kept as strings). Any cell error fails the build (all notebooks are still tried).
   Chapters that declare a ``CACHE`` parameter get ``CACHE = <output>/cache`` unless ``--param``
   sets it. ``--out DIR`` puts the executed tree, the cache and the HTML under ``DIR`` instead
   of ``_build`` (a second pass, e.g. the online rehearsal of ``make test``, leaves the main
   build untouched).
3. Runs ``jupyter-book build`` on the executed tree with ``-W --keep-going`` (every Sphinx
   warning, e.g. a broken citation or cross-reference, fails the build); HTML in ``_build/html``.
4. Checks the HTML: every page of the toc exists; no page shows a traceback or an error output;
   every notebook page shows at least one figure.

Prints the execution time of each notebook and the total; exits non-zero on any failure.

``--student`` (``make student``) builds the **student edition** instead, from the executed tree
of the last build (no re-execution): every solution and the lecturer's guide taken out
(:mod:`nibcore.book.student`), the launch buttons opening the committed student notebooks
(``student/book/``); tree in ``_build/student/executed``, HTML in ``_build/student/html``. It
fails while ``student/`` is stale (``python -m nibcore.book.student sync``) or when any page,
download (``_sources``) or Colab target of the edition quotes a solution.
"""

from __future__ import annotations

import argparse
import ast
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
BUILD = ROOT / "_build"
EXECUTED = BUILD / "executed"
HTML = BUILD / "html"
CACHE = BUILD / "cache"
#: jupyter-book's --path-output: the HTML lands in <PATH_OUTPUT>/_build/html
PATH_OUTPUT = ROOT
TREE_FILES = ("_config.yml", "_toc.yml", "references.bib")
#: MathJax is served from the built book (no CDN): the npm package pinned in package.json is
#: installed with ``npm ci`` into node_modules/ and its es5 tree copied into this static folder of
#: the executed tree (``_config.yml`` names it in ``html_static_path``; it is not called
#: ``_static`` because jupyter-book would then load every .js file under it on every page).
MATHJAX_STATIC = "_mathjax_static"
#: the book's own static files (static/ in the repository: the stylesheet), copied into this
#: folder of the executed tree and named in ``_config.yml`` like MathJax's
BOOK_STATIC = "_book_static"
MATHJAX_ENTRY = "tex-mml-chtml.js"
KERNEL = "python3"
#: words that mark a rendered output block as an error
ERROR_WORDS = re.compile(r"Traceback|Error\b|Exception\b")


# --- the table of contents --------------------------------------------------------------------

def toc_entries(toc: dict) -> list[str]:
    """All files named by a jb-book toc (root first), as paths relative to the toc, no suffix."""
    out = [toc["root"]]

    def walk(items):
        for item in items or []:
            if "file" in item:
                out.append(item["file"])
            walk(item.get("sections"))
            walk(item.get("chapters"))

    walk(toc.get("parts"))
    walk(toc.get("chapters"))
    walk(toc.get("sections"))
    return [str(Path(e).with_suffix("")) if Path(e).suffix in (".md", ".ipynb") else e
            for e in out]


def resolve(entry: str, root: Path = ROOT) -> Path | None:
    """The source file of a toc entry (``.ipynb`` or ``.md``), or None when missing."""
    for suffix in (".ipynb", ".md"):
        path = root / f"{entry}{suffix}"
        if path.is_file():
            return path
    return None


def check_toc(root: Path = ROOT) -> tuple[list[Path], list[str]]:
    """The toc's source files in order, and a list of problems (missing files / notebooks)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    problems, files = [], []
    for entry in toc_entries(toc):
        path = resolve(entry, root)
        if path is None:
            problems.append(f"_toc.yml lists {entry!r}, but neither {entry}.ipynb nor {entry}.md "
                            "exists")
        else:
            files.append(path)
    listed = {p.resolve() for p in files}
    for nb in sorted((root / "book").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in nb.parts or "_executed" in nb.parts:
            continue
        if nb.resolve() not in listed:
            problems.append(f"{nb.relative_to(root)} is not listed in _toc.yml")
    return files, problems


# --- MathJax, offline -------------------------------------------------------------------------

def pinned_mathjax(root: Path = ROOT) -> str:
    """The MathJax version that package.json pins (an exact version, no range)."""
    deps = json.loads((root / "package.json").read_text()).get("dependencies", {})
    version = deps.get("mathjax", "")
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise SystemExit(f"package.json must pin mathjax to an exact version, got {version!r}")
    return version


def install_mathjax(root: Path = ROOT) -> Path:
    """The es5 folder of the pinned MathJax, installed with ``npm ci`` when missing or stale."""
    version = pinned_mathjax(root)
    pkg = root / "node_modules" / "mathjax"
    installed = pkg / "package.json"
    if not installed.is_file() or json.loads(installed.read_text())["version"] != version:
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("npm not found: the book serves MathJax from package.json's pinned "
                             "npm package; install Node.js and npm (e.g. apt-get install npm)")
        run = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                             cwd=root, capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"npm ci failed (exit {run.returncode}): "
                             f"{(run.stderr or run.stdout).strip()[-500:]}")
    es5 = pkg / "es5"
    if not (es5 / MATHJAX_ENTRY).is_file():
        raise SystemExit(f"{es5 / MATHJAX_ENTRY} missing after npm ci")
    return es5


def copy_mathjax(es5: Path, dest: Path) -> None:
    """Copy the entry component and everything it loads on demand (fonts, TeX extensions,
    menu, accessibility) into ``dest``; the other combined components are left out."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(es5 / MATHJAX_ENTRY, dest / MATHJAX_ENTRY)
    for sub in sorted(p for p in es5.iterdir() if p.is_dir()):
        shutil.copytree(sub, dest / sub.name)


# --- the repository's address ------------------------------------------------------------------

#: the install cell's line naming the repository (a copy of _config.yml's repository.url)
REPOSITORY_LINE = re.compile(r'^REPOSITORY = "([^"]*)"', re.M)


def repository_url(root: Path = ROOT) -> str:
    """The book's repository: ``repository.url`` of ``_config.yml``, the one place it is set."""
    return yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"]


def sync_repository(notebooks: list[Path], write: bool = False, root: Path = ROOT) -> list[Path]:
    """The notebooks whose install cell names another repository than ``_config.yml`` (Colab
    opens the stored notebook, which cannot read the config, so each carries a copy); with
    ``write`` their ``REPOSITORY = "..."`` line is rewritten from the config."""
    url, stale = repository_url(root), []
    for nb_path in notebooks:
        text = nb_path.read_text()
        nb = json.loads(text)
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        found = REPOSITORY_LINE.search(source)
        if found is None or found.group(1) != url:
            stale.append(nb_path)
            if write and found is not None:
                cell["source"] = REPOSITORY_LINE.sub(f'REPOSITORY = "{url}"', source,
                                                     count=1).splitlines(keepends=True)
                nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return stale


# --- executing ------------------------------------------------------------------------------

def parse_params(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--param needs KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            params[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key] = value
    return params


def prepare_tree(mathjax: bool = True) -> None:
    """Fresh ``_build/executed`` with the config, the toc, the bibliography, MathJax (when
    ``mathjax``) and every non-notebook file of ``book/`` (notebooks are added by
    :func:`execute`, or copied as they are when ``--only`` leaves them out)."""
    if EXECUTED.exists():
        shutil.rmtree(EXECUTED)
    (EXECUTED / "book").mkdir(parents=True)
    for name in TREE_FILES:
        shutil.copy2(ROOT / name, EXECUTED / name)
    shutil.copytree(ROOT / "static", EXECUTED / BOOK_STATIC)
    if mathjax:
        copy_mathjax(install_mathjax(), EXECUTED / MATHJAX_STATIC / "mathjax")
    for path in BOOK.rglob("*"):
        rel = path.relative_to(BOOK)
        if path.is_file() and path.suffix != ".ipynb" and not any(
                part.startswith((".", "_")) for part in rel.parts):
            (EXECUTED / "book" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, EXECUTED / "book" / rel)


def set_output(out: Path) -> None:
    """Execute into ``out/executed``, cache in ``out/cache``, HTML in ``out/_build/html``."""
    global EXECUTED, HTML, CACHE, PATH_OUTPUT
    out = out.resolve()
    EXECUTED, CACHE, PATH_OUTPUT, HTML = out / "executed", out / "cache", out, out / "_build/html"


def declared_parameters(nb: Path) -> set[str]:
    """The names assigned in a notebook's ``parameters`` cell."""
    for cell in json.loads(nb.read_text())["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            return set(re.findall(r"^([A-Za-z_]\w*)\s*=", text, flags=re.M))
    return set()


def execute(nb: Path, params: dict) -> tuple[float, str | None]:
    """Run one notebook into the executed tree; returns (seconds, error message or None)."""
    import papermill

    if "CACHE" in declared_parameters(nb) and "CACHE" not in params:
        params = {**params, "CACHE": str(CACHE)}
    out = EXECUTED / nb.relative_to(ROOT)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    error = None
    try:
        papermill.execute_notebook(str(nb), str(out), parameters=params or None,
                                   kernel_name=KERNEL, cwd=str(nb.parent), progress_bar=False,
                                   log_output=False)
    except papermill.PapermillExecutionError as err:
        error = f"cell {err.exec_count}: {err.ename}: {err.evalue}"
    except Exception as err:  # kernel died, missing parameters cell, ...
        error = f"{type(err).__name__}: {err}"
    return time.perf_counter() - start, error


def stderr_outputs(nb_path: Path) -> list[str]:
    """The stderr stream texts of an executed notebook."""
    nb = json.loads(nb_path.read_text())
    texts = []
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                text = output.get("text", "")
                texts.append("".join(text) if isinstance(text, list) else text)
    return texts


# --- checking the HTML ----------------------------------------------------------------------

def check_page(page: Path, notebook: bool) -> tuple[list[str], list[str]]:
    """(problems, warnings) of one rendered page."""
    name = page.relative_to(ROOT) if page.is_relative_to(ROOT) else page
    if not page.is_file():
        return [f"{name} was not built"], []
    text = page.read_text(errors="replace")
    problems, warnings = [], []
    if "Traceback" in text:
        problems.append(f"{name} shows a traceback")
    if re.search(r'class="[^"]*output_error', text) or 'class="output traceback' in text:
        problems.append(f"{name} shows an error output")
    for block in re.findall(r'class="output stderr[^"]*">(.*?)</div>', text, flags=re.S):
        content = html.unescape(re.sub(r"<[^>]+>", "", block)).strip()
        if ERROR_WORDS.search(content):
            problems.append(f"{name} shows an error on stderr: {content[:200]!r}")
        else:
            warnings.append(f"{name} shows stderr output: {content[:120]!r}")
    if 'class="math' in text:  # maths must come from the book's own MathJax, not a CDN
        if not re.search(rf'<script[^>]+src="[^"]*_static/mathjax/{MATHJAX_ENTRY}', text):
            problems.append(f"{name} shows maths but does not load _static/mathjax/"
                            f"{MATHJAX_ENTRY}")
        if re.search(r'<script[^>]+src="(https?:)?//[^"]*mathjax', text, flags=re.I):
            problems.append(f"{name} loads MathJax from the network")
    if notebook and not re.search(r'<img[^>]+src="[^"]*_images/', text):
        problems.append(f"{name} shows no figure")
    return problems, warnings


# --- main -----------------------------------------------------------------------------------

def audit_store() -> list[str]:
    """Re-derive a seeded sample of the committed results store (``python -m nibcore.store
    audit``: at least 2 pairs per method, side and file, recomputed and compared within the
    tolerances measured across numeric paths; model hash and method parameters checked).

    Every mismatch is printed and written to ``<output>/audit.json``; the kernels of the
    executed chapters get its path (``NIB_AUDIT_REPORT``), so each table that reads a failing
    file says so on its page. Returns the problems (empty when the audit passed)."""
    from nibcore.store import AUDIT_REPORT_ENV

    start = time.perf_counter()
    report = CACHE.parent / "audit.json"
    report.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "nibcore.store", "audit", "--report",
                          str(report)], cwd=ROOT, env=env, capture_output=True, text=True)
    print(run.stdout.strip(), flush=True)
    print(f"results-store audit  {time.perf_counter() - start:7.1f} s", flush=True)
    if report.is_file():
        os.environ[AUDIT_REPORT_ENV] = str(report)
        return [f"results store audit: {m['text']}"
                for m in json.loads(report.read_text())["mismatches"]]
    lines = run.stderr.strip().splitlines() or ["?"]
    return [] if run.returncode == 0 else [f"results store audit failed: {lines[-1]}"]


def build_student() -> int:
    """The student edition from the executed tree of the last build (see the module doc)."""
    from nibcore.book import student

    out = EXECUTED.parent / "student"
    tree, html_dir = out / "executed", out / "html"
    failures = [f"student/ is stale: {s} (python -m nibcore.book.student sync)"
                for s in student.stale_student_notebooks(ROOT)]
    chapters = student.chapter_notebooks(ROOT)
    for nb in chapters:
        executed = EXECUTED / nb.relative_to(ROOT)
        if not executed.is_file() or "papermill" not in json.loads(executed.read_text()).get(
                "metadata", {}):
            failures.append(f"{executed} was not executed: the student edition is built from "
                            "a full build's executed notebooks (make book first)")
    if failures:
        for f in failures:
            print(f"FAIL  {f}")
        return 1
    start = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(EXECUTED, tree, ignore=shutil.ignore_patterns(
        f"{Path(student.GUIDE).name}.*"))
    config = yaml.safe_load((EXECUTED / "_config.yml").read_text())
    (tree / "_config.yml").write_text(yaml.safe_dump(student.student_config(config),
                                                     sort_keys=False, allow_unicode=True))
    toc = yaml.safe_load((EXECUTED / "_toc.yml").read_text())
    (tree / "_toc.yml").write_text(yaml.safe_dump(student.student_toc(toc), sort_keys=False))
    for nb in chapters:
        path = tree / nb.relative_to(ROOT)
        path.write_text(student.dumps(student.strip_notebook(json.loads(path.read_text()))))
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(tree),
           "--path-output", str(out), "-W", "--keep-going", "--quiet"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        print(run.stdout[-6000:])
        print(run.stderr[-6000:])
        failures.append(f"jupyter-book build of the student edition failed (exit "
                        f"{run.returncode})")
    else:
        (out / "_build" / "html").rename(html_dir)
        shutil.rmtree(out / "_build")
        for f in [p for p in check_toc()[0] if p.with_suffix("").relative_to(ROOT).as_posix()
                  != student.GUIDE]:
            page = html_dir / f.relative_to(ROOT).with_suffix(".html")
            failures += check_page(page, notebook=f.suffix == ".ipynb")[0]
        problems, scanned = student.scan_edition(
            html_dir, student.solution_fingerprints(chapters), repository_url(),
            config["repository"].get("branch", "main"))
        failures += problems
        print(f"student edition: {scanned} pages, downloads and Colab targets scanned, "
              f"{len(problems)} leak(s)")
    print(f"student edition  {time.perf_counter() - start:7.1f} s", flush=True)
    for f in failures:
        print(f"FAIL  {f}")
    if failures:
        print(f"student edition FAILED ({len(failures)} problem(s))")
        return 1
    print(f"student edition OK: {html_dir / 'index.html'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="inject SMOKE = True: every chapter shrinks its work")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="execute only this notebook (file name without suffix; the others "
                             "are built without outputs and not checked for figures); repeatable")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="inject a parameter into every notebook, e.g. MODEL=mini")
    parser.add_argument("--no-html", action="store_true",
                        help="execute only; skip jupyter-book and the HTML checks")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write the executed tree, the cache and the HTML under DIR "
                             "(default: _build)")
    parser.add_argument("--no-audit", action="store_true",
                        help="skip the results-store audit (it runs on every full build, and "
                             "with --only only when asked for with --audit)")
    parser.add_argument("--audit", action="store_true",
                        help="run the results-store audit even with --only")
    parser.add_argument("--strict", action="store_true",
                        help="a stored value the audit cannot reproduce fails the build (make "
                             "test); without it (make book) the book is built, the failing rows "
                             "are printed and every table that reads them is marked on its page")
    parser.add_argument("--sync-repository", action="store_true",
                        help="copy _config.yml's repository.url into every chapter's install "
                             "cell, then exit")
    parser.add_argument("--student", action="store_true",
                        help="build the student edition from the last build's executed "
                             "notebooks (no re-execution; no solutions, no lecturer's guide)")
    args = parser.parse_args(argv)
    if args.out is not None:
        set_output(args.out)
    if args.student:
        return build_student()

    files, problems = check_toc()
    chapters = [f for f in files if f.suffix == ".ipynb"]
    if args.sync_repository:
        stale = sync_repository(chapters, write=True)
        print(f"{len(stale)} chapter(s) now install from {repository_url()}")
        return 0
    problems += [f"{nb.relative_to(ROOT)}: the install cell's REPOSITORY is not _config.yml's "
                 f"repository.url (run scripts/build_book.py --sync-repository)"
                 for nb in sync_repository(chapters)]
    if problems:
        for p in problems:
            print(f"FAIL  {p}")
        return 1
    if args.only:
        names = {f.stem for f in files}
        unknown = set(args.only) - names
        if unknown:
            print(f"FAIL  --only {sorted(unknown)}: not in the toc ({sorted(names)})")
            return 1
    params = parse_params(args.param)
    if args.smoke:
        params["SMOKE"] = True

    failures, warnings, times = [], [], {}
    if (args.audit or not args.only) and not args.no_audit:
        (failures if args.strict else warnings).extend(audit_store())
    prepare_tree(mathjax=not args.no_html)
    notebooks = [f for f in files if f.suffix == ".ipynb"]
    if args.only:  # the other chapters are built from their sources, without outputs
        notebooks = [f for f in notebooks if f.stem in args.only]
    for f in files:
        if f.suffix == ".ipynb" and f not in notebooks:
            shutil.copy2(f, EXECUTED / f.relative_to(ROOT))
    mode = "smoke" if args.smoke else "normal"
    print(f"executing {len(notebooks)} notebook(s) ({mode} mode"
          f"{', ' + str(params) if params else ''})", flush=True)
    for nb in notebooks:
        seconds, error = execute(nb, params)
        times[nb.stem] = seconds
        status = "ok  " if error is None else "FAIL"
        print(f"{status}  {nb.relative_to(ROOT)}  {seconds:7.1f} s"
              f"{'  ' + error if error else ''}", flush=True)
        if error:
            failures.append(f"{nb.relative_to(ROOT)}: {error}")
        else:
            for text in stderr_outputs(EXECUTED / nb.relative_to(ROOT)):
                if ERROR_WORDS.search(text):
                    failures.append(f"{nb.relative_to(ROOT)} wrote an error to stderr: "
                                    f"{text.strip()[:200]!r}")
    total = sum(times.values())
    print(f"total execution  {total:7.1f} s ({total / 60:.1f} min)", flush=True)

    if not args.no_html and not failures:
        if HTML.exists():
            shutil.rmtree(HTML)
        start = time.perf_counter()
        cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(EXECUTED),
               "--path-output", str(PATH_OUTPUT), "-W", "--keep-going", "--quiet"]
        run = subprocess.run(cmd, capture_output=True, text=True)
        print(f"jupyter-book build  {time.perf_counter() - start:7.1f} s", flush=True)
        if run.returncode != 0:
            print(run.stdout[-6000:])
            print(run.stderr[-6000:])
            failures.append(f"jupyter-book build failed (exit {run.returncode})")
        if not (HTML / "_static" / "mathjax" / MATHJAX_ENTRY).is_file():
            failures.append(f"_build/html/_static/mathjax/{MATHJAX_ENTRY} was not built")
        for f in files:
            page = HTML / f.relative_to(ROOT).with_suffix(".html")
            if f == files[0] and not page.exists():
                page = HTML / "index.html"
            p, w = check_page(page, notebook=f.suffix == ".ipynb" and f in notebooks)
            failures += p
            warnings += w

    for w in warnings:
        print(f"warn  {w}")
    for f in failures:
        print(f"FAIL  {f}")
    if failures:
        print(f"book build FAILED ({len(failures)} problem(s))")
        return 1
    print(f"book OK: {HTML / 'index.html'}" if not args.no_html else "notebooks OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
