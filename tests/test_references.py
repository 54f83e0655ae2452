"""Structural claims of the book hold against the real package.

* Every dotted reference a chapter makes — an attribute chain in its code cells, or a
  ``module.attr`` / ``nibcore.x.y`` inside a Markdown code span (in its Markdown cells, and in
  the Markdown its code cells display) — resolves by import and ``getattr``; a failure names
  the notebook, the cell and the reference.
* The pass counts a solution states are pinned against ``explain(...).passes``.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import pkgutil
import re
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import pytest

import nibcore

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))

#: Endings that make a dotted word a file name, not a reference (``_config.yml``).
FILE_ENDINGS = {"py", "ipynb", "md", "yml", "yaml", "json", "jsonl", "csv", "toml", "txt",
                "safetensors", "png", "html", "bib", "cfg", "partial", "gz", "zip"}

_DOTTED = re.compile(r"(?<![\w./\-])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)")


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _cells(nb: Path) -> list[dict]:
    return json.loads(nb.read_text())["cells"]


def _python(source: str) -> str:
    """A code cell without IPython's magics and shell escapes."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                     for line in source.splitlines())


def _nibcore_modules() -> dict[str, str]:
    """Each nibcore module by its last name (``sweeps`` -> ``nibcore.sweeps``)."""
    names = {}
    for info in pkgutil.walk_packages(nibcore.__path__, "nibcore."):
        if "._" not in info.name:
            names.setdefault(info.name.rsplit(".", 1)[1], info.name)
    return names


NIBCORE_MODULES = _nibcore_modules()


def _member_names() -> set[str]:
    """Every attribute an instance of a nibcore class has: the class's members, declared fields
    and the ``self.<name> =`` of its source. Prose names instances it never assigns
    (``a.scores``, ``tower.blocks``); a dotted word whose first name is no module is taken for
    such an instance only when its attribute is one of these."""
    names: set[str] = set()
    for module_name in NIBCORE_MODULES.values():
        module = importlib.import_module(module_name)
        for obj in vars(module).values():
            if isinstance(obj, type) and obj.__module__ == module_name:
                names |= set(dir(obj))
                for k in obj.__mro__:
                    names |= set(getattr(k, "__annotations__", {}))
        source = Path(module.__file__).read_text()
        names |= set(re.findall(r"\bself\.(\w+)\s*(?::[^=\n]+)?=", source))
    return names


MEMBERS = _member_names()


def _has(obj: Any, name: str) -> bool:
    """``getattr`` succeeds, or ``name`` is a field a class declares (dataclass fields and
    annotations without a class-level default are only set on instances)."""
    if hasattr(obj, name):
        return True
    if isinstance(obj, type):
        if dataclasses.is_dataclass(obj) and name in {f.name for f in dataclasses.fields(obj)}:
            return True
        return any(name in getattr(k, "__annotations__", {}) for k in obj.__mro__)
    return False


def _resolve(obj: Any, parts: list[str]) -> str | None:
    """``None`` when ``obj.parts[0].parts[1]…`` exists, else the first missing part. Modules'
    missing attributes are tried as submodules (``nibcore.book`` before it is imported)."""
    for part in parts:
        if not _has(obj, part):
            if isinstance(obj, ModuleType):
                try:
                    obj = importlib.import_module(f"{obj.__name__}.{part}")
                    continue
                except ImportError:
                    pass
            return part
        obj = getattr(obj, part) if hasattr(obj, part) else None
        if obj is None:  # a declared field: nothing further to resolve on the class
            return None
    return None


class Notebook:
    """What a chapter's code cells import and assign."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cells = _cells(path)
        self.imports: dict[str, Any] = {}
        self.import_errors: list[tuple[int, str]] = []
        self.assigned: set[str] = set()
        self.trees: dict[int, ast.Module] = {}
        for i, cell in enumerate(self.cells):
            if cell["cell_type"] == "code":
                self.trees[i] = tree = ast.parse(_python(_source(cell)))
                self._collect(i, tree)

    def _collect(self, i: int, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    root = alias.name.split(".")[0]
                    try:
                        module = importlib.import_module(alias.name)
                    except ImportError:
                        self.import_errors.append((i, alias.name))
                        continue
                    self.imports[alias.asname or root] = (
                        module if alias.asname else importlib.import_module(root))
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                try:
                    module = importlib.import_module(node.module)
                except ImportError:
                    self.import_errors.append((i, node.module))
                    continue
                for alias in node.names:
                    if _resolve(module, [alias.name]) is not None:
                        self.import_errors.append((i, f"{node.module}.{alias.name}"))
                        continue
                    obj = (getattr(module, alias.name) if hasattr(module, alias.name) else
                           importlib.import_module(f"{node.module}.{alias.name}"))
                    self.imports[alias.asname or alias.name] = obj
            elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                self.assigned.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                self.assigned.add(node.name)
            elif isinstance(node, ast.arg):
                self.assigned.add(node.arg)

    def root(self, name: str) -> tuple[bool, Any]:
        """``(known, object)`` for the first name of a reference: an import the notebook does
        not rebind, ``nibcore`` and its modules by their last name, nibcore's top-level names,
        any importable module; ``(True, None)`` for the notebook's own variables (not
        resolvable without running it); ``(False, None)`` for a name that is none of these."""
        if name in self.imports and name not in self.assigned:
            return True, self.imports[name]
        if name == "nibcore":
            return True, nibcore
        if name in NIBCORE_MODULES and name not in self.assigned:
            return True, importlib.import_module(NIBCORE_MODULES[name])
        if hasattr(nibcore, name) and name not in self.assigned:
            return True, getattr(nibcore, name)
        if name in self.assigned or name in self.imports:
            return True, None
        try:
            return True, importlib.import_module(name)
        except ImportError:
            return False, None


def _chains(tree: ast.Module) -> Iterator[str]:
    """Every maximal ``name.attr.attr`` chain read in ``tree``."""
    inner = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            inner.add(id(node.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner \
                and isinstance(node.ctx, ast.Load):
            parts, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                parts.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name):
                yield ".".join([value.id, *reversed(parts)])


def _strings(tree: ast.Module) -> Iterator[str]:
    """The text of every string literal (f-strings with their fields as ``{}``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            yield "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def _prose(markdown: str) -> str:
    """Markdown without its code blocks (```python … ```); the contents of MyST directives
    (```{exercise} … ```) are kept — they are prose."""
    kept, in_code, depth = [], False, 0
    for line in markdown.splitlines():
        fence = line.strip().startswith("```")
        info = line.strip()[3:].strip()
        if in_code:
            in_code = not fence
        elif fence and info.startswith("{"):
            depth += 1
        elif fence and info:
            in_code = True
        elif fence and depth:
            depth -= 1
        else:
            kept.append(line)
    return "\n".join(kept)


def _code_spans(markdown: str) -> Iterator[str]:
    """The contents of the code spans of ``markdown``, MyST roles ({doc}`x`) left out."""
    text = re.sub(r"\{[\w:.-]+\}`[^`]*`", "", _prose(markdown))
    for m in re.finditer(r"(`+)(.+?)\1", text, flags=re.S):
        yield m.group(2)


def _span_references(span: str) -> Iterator[str]:
    for m in _DOTTED.finditer(span):
        if m.group(1).rsplit(".", 1)[1].lower() not in FILE_ENDINGS:
            yield m.group(1)


def prose_bindings(cells: list[dict]) -> set[str]:
    """Names the chapter's prose tells the reader to bind in a code span of its own: an import
    (`` `from PIL import ImageFilter` ``, `` `import scipy` ``) or an assignment
    (`` `z = states[0].numpy()` ``); a prose reference may use them."""
    names: set[str] = set()
    for cell in cells:
        if cell["cell_type"] != "markdown":
            continue
        for span in _code_spans(_source(cell)):
            for m in re.finditer(r"\bfrom\s+[\w.]+\s+import\s+([\w, ]+)", span):
                names |= {n.strip() for n in m.group(1).split(",") if n.strip()}
            names |= {m.group(1).split(".")[0]
                      for m in re.finditer(r"(?:^|;)\s*import\s+([\w.]+)", span)}
            names |= {m.group(1) for m in re.finditer(r"(?:^|;)\s*([A-Za-z_]\w*)\s*=(?!=)",
                                                       span)}
    return names


def unresolved(path: Path) -> list[str]:
    """``"<notebook> cell <i>: <reference> (…)"`` for every reference that does not resolve."""
    nb = Notebook(path)
    bound_in_prose = prose_bindings(nb.cells)
    problems = [f"{path.name} cell {i}: import {name}" for i, name in nb.import_errors]
    for i, cell in enumerate(nb.cells):
        refs: list[tuple[str, bool]] = []  # (reference, from a code span)
        if cell["cell_type"] == "code":
            refs += [(r, False) for r in _chains(nb.trees[i])]
            refs += [(r, True) for s in _strings(nb.trees[i]) for span in _code_spans(s)
                     for r in _span_references(span)]
        elif cell["cell_type"] == "markdown":
            refs += [(r, True) for span in _code_spans(_source(cell))
                     for r in _span_references(span)]
        for ref, in_span in dict.fromkeys(refs):
            first, *rest = ref.split(".")
            known, obj = nb.root(first)
            if not known:  # code names only what it imports or assigns; prose can misname
                if in_span and rest[0] not in MEMBERS and first not in bound_in_prose:
                    problems.append(f"{path.name} cell {i}: `{ref}` — no module, import or "
                                    f"variable of the chapter is called {first!r}, and no "
                                    f"nibcore object has a {rest[0]!r}")
                continue
            if obj is None:
                continue
            missing = _resolve(obj, rest)
            if missing is not None:
                problems.append(f"{path.name} cell {i}: `{ref}` — {first} has no {missing!r}")
    return problems


def test_the_book_has_notebooks():
    assert len(NOTEBOOKS) >= 10


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_reference_resolves(nb):
    problems = unresolved(nb)
    assert not problems, "references that do not resolve:\n" + "\n".join(problems)


def test_the_checker_catches_a_missing_module_and_attribute(tmp_path):
    cells = [{"cell_type": "code", "source": "from nibcore import sweeps\nsweeps.no_such\n"},
             {"cell_type": "markdown",
              "source": "Run `tables.sweep(...)`, `sweeps.paper_layer` and "
                        "`nibcore.attribution.nothing`; see {doc}`x.y` and `_config.yml`.\n"
                        "```python\nignored.inside_code\n```\n"},
             {"cell_type": "code", "source": 'display(Markdown(f"`{x}` and `reports.nope`"))'}]
    path = tmp_path / "toy.ipynb"
    path.write_text(json.dumps({"cells": cells}))
    problems = unresolved(path)
    assert len(problems) == 4, problems
    assert "toy.ipynb cell 0: `sweeps.no_such`" in problems[0]
    assert "cell 1: `tables.sweep`" in problems[1] and "'tables'" in problems[1]
    assert "cell 1: `nibcore.attribution.nothing`" in problems[2]
    assert "cell 2: `reports.nope`" in problems[3]


# --- pass counts stated in solutions ---------------------------------------------------------

def _exercise(nb: Path, label: str) -> str:
    text = "\n".join(_source(c) for c in _cells(nb) if c["cell_type"] == "markdown")
    m = re.search(r"```\{exercise\}[^\n]*\n:label: " + re.escape(label) + r"\n(.*?)```", text,
                  flags=re.S)
    assert m, f"{nb.name}: no exercise {label}"
    return m.group(1)


def test_ex_passes_predict_counts_are_explains_passes():
    """The solution of ex-passes-predict (results_passes): with s λ steps in chunks of r rows
    and e rows without a gradient, forward ⌈s/r⌉ + 3 calls carrying s + e + 2 rows, backward
    ⌈s/r⌉ calls carrying s rows — at the exercise's num_steps = 20, rows_per_call = 8:
    6 / 3 calls, 23 / 20 rows. Pinned against ``explain(...).passes`` on the bundled model."""
    from nibcore import explain
    from nibcore.book import theory
    from nibcore.datasets import load_dataset

    nb = ROOT / "book" / "results_passes.ipynb"
    text = _exercise(nb, "ex-passes-predict")
    steps = int(re.search(r"num_steps=(\d+)", text).group(1))
    rows = int(re.search(r"rows_per_call=(\d+)", text).group(1))
    assert (steps, rows) == (20, 8), "the exercise changed: update the counts pinned here"
    model = theory.book_model("mini", None)
    pair = load_dataset("scenes")[0]
    default = explain(model, pair.image, pair.text).passes
    extra = default["forward_rows"] - 2 - nibcore.METHODS["nib"].defaults["num_steps"]
    assert extra == 1  # λ = 0: the e the solution reads from the chapter's measured sentence
    stated = {"forward": 6, "backward": 3, "forward_rows": 23, "backward_rows": 20}
    for side in ("image", "text"):
        counted = explain(model, pair.image, pair.text, side=side, num_steps=steps,
                          rows_per_call=rows).passes
        assert {k: counted[k] for k in stated} == stated, side
    # the solution's formula, at the exercise's numbers, gives the stated counts
    chunks = -(-steps // rows)
    assert stated == {"forward": chunks + 3, "backward": chunks,
                      "forward_rows": steps + extra + 2, "backward_rows": steps}
    # and the chapter's cell computes the same formula (its numbers are generated from it)
    cell = next(_source(c) for c in _cells(nb)
                if c["cell_type"] == "code" and "ex-passes-predict" in _source(c))
    assert f"S, R = {steps}, {rows}" in cell and "explain(model, pair.image, pair.text" in cell


def test_prose_bindings_are_imports_and_assignments_in_code_spans():
    cells = [{"cell_type": "markdown", "source": "Blur it (`from PIL import ImageFilter`), set "
              "`z = states[0].numpy()` and `rng = np.random.default_rng(0)`; `import scipy`; "
              "compare `a == b`."}]
    assert prose_bindings(cells) == {"ImageFilter", "z", "rng", "scipy"}

