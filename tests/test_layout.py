"""The package layout: the library (``nibcore``), the book's code (``nibcore.book``) and the
synthetic world (``nibcore.world``); imports flow one way — the library never imports the other
two (the command line, which composes everything, may)."""

import ast
from pathlib import Path

import nibcore

PACKAGE = Path(nibcore.__file__).resolve().parent
#: library modules allowed to reach the book or the world (application entry points)
ENTRY_POINTS = {"cli.py", "__main__.py"}


def _imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """Absolute module names imported by ``path`` (relative imports resolved; ``root``: the
    folder of the package ``nibcore`` it belongs to), in functions too."""
    parts = ("nibcore",) + path.relative_to(root).with_suffix("").parts
    package = parts[:-1]
    out = set()
    tree = ast.parse(path.read_text())
    # what runs only as a script (`if __name__ == "__main__":`) is not imported with the module
    tree.body = [n for n in tree.body if not (
        isinstance(n, ast.If) and isinstance(n.test, ast.Compare)
        and isinstance(n.test.left, ast.Name) and n.test.left.id == "__name__")]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ((node.module,) if node.module else ()))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def _layer(module: str) -> str | None:
    if module.startswith("nibcore.book"):
        return "book"
    if module.startswith("nibcore.world"):
        return "world"
    return "library" if module.startswith("nibcore") else None


def test_the_library_never_imports_the_book_or_the_world():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("book", "world") or rel.name in ENTRY_POINTS:
            continue
        bad += [f"{rel}: {m}" for m in _imports(path) if _layer(m) in ("book", "world")]
    assert not bad, bad


def test_the_world_never_imports_the_book():
    bad = [f"{p.relative_to(PACKAGE)}: {m}" for p in sorted((PACKAGE / "world").rglob("*.py"))
           for m in _imports(p) if _layer(m) == "book"]
    assert not bad, bad


def test_the_checker_sees_an_upward_import(tmp_path):
    # the test above can fail: a library file importing the book is flagged (a probe written
    # into a copy's folder, never into the package)
    fake = tmp_path / "nibcore" / "probe.py"
    fake.parent.mkdir()
    fake.write_text("def f():\n    from .book import paper\n")
    assert "nibcore.book.paper" in _imports(fake, fake.parent)
    assert _layer("nibcore.book.paper") == "book"


def test_the_library_never_names_the_book_or_the_world_in_a_string():
    """No import by string (``importlib.import_module("nibcore.world...")``) either: the world's
    scenes reach the library through the ``nibcore.datasets`` entry points."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("book", "world") or rel.name in ENTRY_POINTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    node.value.startswith(("nibcore.world", "nibcore.book"))):
                bad.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not bad, bad


def _module_of(name: str) -> str | None:
    """The nibcore module (a file) an imported name belongs to, or None."""
    parts = name.split(".")
    while parts and parts[0] == "nibcore":
        path = PACKAGE.parent.joinpath(*parts)
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return ".".join(parts)
        parts = parts[:-1]
    return None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph`` (module -> modules it imports), each once."""
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            found.append(path[path.index(node):] + [node])
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, path + [node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return found


def test_no_import_circle():
    """Imports inside functions count: a lazy import is still a circle. A package's
    ``__init__`` re-exporting its own modules is not an edge back."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = ("nibcore",) + (rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        module = ".".join(parts)
        targets = {_module_of(m) for m in _imports(path)} - {None, module}
        # importing a submodule runs its package's __init__ first; that is not this module's
        # dependency on the package, so edges to a parent package are left out
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    assert not _cycles(graph), _cycles(graph)


def test_the_circle_checker_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_scenes_load_through_the_registry_without_importing_the_world_first():
    ds = nibcore.datasets.load_dataset("scenes", n=2)
    assert len(ds) == 2 and ds[0].id.startswith("scene-")
