"""The package layout: the library (``nibcore``), the book's code (``nibcore.book``) and the
synthetic world (``nibcore.world``); imports flow one way — the library never imports the other
two (the command line, which composes everything, may)."""

import ast
from pathlib import Path

import nibcore

PACKAGE = Path(nibcore.__file__).resolve().parent
#: library modules allowed to reach the book or the world (application entry points)
ENTRY_POINTS = {"cli.py", "__main__.py"}


def _imports(path: Path) -> set[str]:
    """Absolute module names imported by ``path`` (relative imports resolved)."""
    parts = ("nibcore",) + path.relative_to(PACKAGE).with_suffix("").parts
    package = parts[:-1] if path.name != "__init__.py" else parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
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


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    # the test above can fail: a library file importing the book is flagged
    fake = PACKAGE / "_layout_probe.py"
    fake.write_text("from .book import paper\n")
    try:
        assert "nibcore.book.paper" in _imports(fake)
        assert _layer("nibcore.book.paper") == "book"
    finally:
        fake.unlink()


def test_scenes_load_through_the_registry_without_importing_the_world_first():
    ds = nibcore.datasets.load_dataset("scenes", n=2)
    assert len(ds) == 2 and ds[0].id.startswith("scene-")
