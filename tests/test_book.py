"""Light checks of the book's sources (the build itself is scripts/build_book.py)."""

import ast
import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

from nibcore.models import BUNDLED

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
    assert f'REPOSITORY = "{CONFIG["repository"]["url"]}"' in install, \
        "the install cell must use the repository URL of _config.yml"
    assert 'f"git+{REPOSITORY}"' in install and "except ImportError" in install, \
        "the install cell installs from REPOSITORY and says how to install when the import fails"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    text = source(params[0])
    assert re.search(r"^SMOKE = False", text, re.M), "parameters define SMOKE = False"
    named = re.search(r'^MODELS? = (.+?)\s*(#|$)', text, re.M)
    assert named, "parameters name the model (MODEL) or models (MODELS)"
    models = ast.literal_eval(named.group(1))
    models = [models] if isinstance(models, str) else models
    assert models and set(models) <= set(BUNDLED), \
        "parameters default to bundled models (the book runs offline)"


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
    assert config["html_static_path"] == [build_book.BOOK_STATIC, build_book.MATHJAX_STATIC]
    assert config["html_css_files"] == ["book.css"] and (ROOT / "static" / "book.css").is_file()
    # the HTML check refuses a page whose maths would come from a CDN
    page = tmp_path / "page.html"
    page.write_text('<span class="math notranslate">x</span>'
                    '<script defer src="https://cdn.example/mathjax@3/es5/tex-mml-chtml.js">')
    problems, _ = build_book.check_page(page, notebook=False)
    assert any("does not load _static/mathjax" in p for p in problems)
    assert any("MathJax from the network" in p for p in problems)
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


#: chapters whose code cells keep to 88 columns (they render without a horizontal scroll bar)
NARROW_CODE = ("preface", "clip", "information_bottleneck", "narrowing", "completeness",
               "negative_properties", "baselines", "explore", "gallery")


@pytest.mark.parametrize("nb", [n for n in NOTEBOOKS if n.stem in NARROW_CODE],
                         ids=lambda p: p.stem)
def test_code_cells_fit_88_columns_and_chapter_states_objectives(nb):
    code = [c for c in cells(nb) if c["cell_type"] == "code"]
    for cell in code[1:]:  # the first is the hidden Colab install cell (shared mechanics)
        if cell["cell_type"] == "code":
            for line in source(cell).splitlines():
                assert len(line) <= 88, f"{nb.name}: code line of {len(line)} columns: {line!r}"
    first = source(cells(nb)[0])
    assert "Learning objectives" in first, f"{nb.name}: no learning objectives at the top"


def test_repository_url_is_copied_from_the_config_only(tmp_path):
    nb = NOTEBOOKS[0]
    (tmp_path / "book").mkdir()
    copy = tmp_path / "book" / nb.name
    copy.write_text(nb.read_text())
    config = (ROOT / "_config.yml").read_text()
    url = CONFIG["repository"]["url"]
    (tmp_path / "_config.yml").write_text(config.replace(url, "https://github.com/someone/else"))
    assert build_book.sync_repository([copy], root=tmp_path) == [copy]
    build_book.sync_repository([copy], write=True, root=tmp_path)
    assert build_book.sync_repository([copy], root=tmp_path) == []
    install = source([c for c in cells(copy) if c["cell_type"] == "code"][0])
    assert 'REPOSITORY = "https://github.com/someone/else"' in install
    others = [source(c) for c in cells(copy) if "REPOSITORY" not in source(c)]
    assert others == [source(c) for c in cells(nb) if "REPOSITORY" not in source(c)]


def test_readme_names_no_repository_address_but_the_config():
    readme = (ROOT / "README.md").read_text()
    assert CONFIG["repository"]["url"] not in readme
    assert "repository.url" in readme and "--sync-repository" in readme


def test_the_config_is_the_only_file_with_the_address():
    url = CONFIG["repository"]["url"]
    holders = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
               if p.is_file() and p.suffix in (".py", ".md", ".yml", ".toml", ".cfg", ".txt")
               and not any(part.startswith(".") or part in ("_build", "node_modules")
                           for part in p.relative_to(ROOT).parts)
               and url in p.read_text(errors="replace")]
    assert holders == ["_config.yml"], holders
