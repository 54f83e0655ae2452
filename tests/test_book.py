"""Light checks of the book's sources (the build itself is scripts/build_book.py)."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("build_book", ROOT / "scripts" / "build_book.py")
build_book = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_book)

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
FILES, PROBLEMS = build_book.check_toc(ROOT)
NOTEBOOKS = [f for f in FILES if f.suffix == ".ipynb"]


def cells(nb_path: Path) -> list[dict]:
    return json.loads(nb_path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_toc_lists_every_notebook_and_every_entry_exists():
    assert PROBLEMS == []
    assert NOTEBOOKS, "the toc lists no notebook"


def test_config_mechanics():
    assert CONFIG["execute"]["execute_notebooks"] == "off"
    assert CONFIG["repository"]["url"].startswith("https://github.com/")
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert (ROOT / CONFIG["bibtex_bibfiles"][0]).is_file()
    extensions = CONFIG["sphinx"]["extra_extensions"]
    assert {"sphinx_proof", "sphinx_exercise", "sphinx_togglebutton"} <= set(extensions)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(nb):
    for cell in cells(nb):
        if cell["cell_type"] == "code":
            assert cell.get("outputs", []) == [], f"{nb.name}: a code cell has outputs"
            assert cell.get("execution_count") is None


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_layout(nb):
    code = [c for c in cells(nb) if c["cell_type"] == "code"]
    install = source(code[0])
    assert '"google.colab" in sys.modules' in install, "first code cell: the Colab install"
    assert f"git+{CONFIG['repository']['url']}" in install, \
        "the install cell must use the repository URL of _config.yml"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    text = source(params[0])
    assert re.search(r"^SMOKE = False", text, re.M), "parameters define SMOKE = False"
    assert re.search(r'^MODEL = "mini"', text, re.M), "parameters default to the bundled model"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_ends_with_exercises_and_hidden_solutions(nb):
    markdown = "\n".join(source(c) for c in cells(nb) if c["cell_type"] == "markdown")
    exercises = re.findall(r"```\{exercise\}", markdown)
    solutions = re.findall(r"```\{solution\}[^\n]*\n:class: dropdown", markdown)
    assert 2 <= len(exercises) <= 4, f"{nb.name}: {len(exercises)} exercises"
    assert len(solutions) == len(exercises), f"{nb.name}: every solution hidden (dropdown)"


def test_citations_exist_in_the_bibliography():
    keys = set(re.findall(r"@\w+\{([^,]+),", (ROOT / "references.bib").read_text()))
    for nb in NOTEBOOKS:
        text = "\n".join(source(c) for c in cells(nb) if c["cell_type"] == "markdown")
        for group in re.findall(r"\{cite:[pt]\}`([^`]+)`", text):
            for key in group.split(","):
                assert key.strip() in keys, f"{nb.name} cites unknown key {key!r}"


def test_toc_entries_parse():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    entries = build_book.toc_entries(toc)
    assert entries[0] == toc["root"] and len(entries) == len(set(entries))


def test_mathjax_is_pinned_and_served_by_the_book(tmp_path):
    version = build_book.pinned_mathjax(ROOT)
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/mathjax"]["version"] == version
    config = CONFIG["sphinx"]["config"]
    assert not config["mathjax_path"].startswith(("http:", "https:", "//"))
    assert config["mathjax_path"] == f"mathjax/{build_book.MATHJAX_ENTRY}"
    assert config["html_static_path"] == [build_book.MATHJAX_STATIC]
    # the HTML check refuses a page whose maths would come from a CDN
    page = tmp_path / "page.html"
    page.write_text('<span class="math notranslate">x</span>'
                    '<script defer src="https://cdn.example/mathjax@3/es5/tex-mml-chtml.js">')
    problems, _ = build_book.check_page(page, notebook=False)
    assert any("does not load _static/mathjax" in p for p in problems)
    assert any("from the network" in p for p in problems)
    page.write_text('<span class="math notranslate">x</span>'
                    f'<script defer src="../_static/mathjax/{build_book.MATHJAX_ENTRY}?v=1">')
    assert build_book.check_page(page, notebook=False)[0] == []


def test_copy_mathjax_keeps_the_entry_and_what_it_loads(tmp_path):
    es5 = tmp_path / "es5"
    (es5 / "output" / "chtml" / "fonts" / "woff-v2").mkdir(parents=True)
    (es5 / "output" / "chtml" / "fonts" / "woff-v2" / "MathJax_Main-Regular.woff").write_text("f")
    (es5 / build_book.MATHJAX_ENTRY).write_text("entry")
    (es5 / "tex-svg.js").write_text("another combined component")
    build_book.copy_mathjax(es5, tmp_path / "out")
    copied = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
              if p.is_file()}
    assert copied == {build_book.MATHJAX_ENTRY,
                      "output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff"}
