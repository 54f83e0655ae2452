"""pyproject.toml declares exactly the third-party packages nibcore imports.

Every ``.py`` under ``nibcore/`` is parsed with ``ast`` (imports inside functions count): each
third-party top-level module it imports maps to a dependency declared in ``dependencies`` or an
extra, and each declared dependency is imported somewhere. No ``unittest.mock`` in shipped code.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import nibcore

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

PACKAGE = Path(nibcore.__file__).resolve().parent
PYPROJECT = PACKAGE.parent / "pyproject.toml"

#: Distributions whose import name is not their normalised distribution name.
IMPORT_NAMES = {"open_clip_torch": "open_clip", "pillow": "PIL", "scikit_learn": "sklearn",
                "ipython": "IPython", "pyyaml": "yaml", "opencv_python": "cv2"}


def _normalised(distribution: str) -> str:
    return re.sub(r"[-_.]+", "_", distribution).lower()


def import_name(requirement: str) -> str:
    """The top-level module of a requirement string (``"open_clip_torch>=2.24"``)."""
    dist = _normalised(re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0))
    return IMPORT_NAMES.get(dist, dist)


def declared() -> dict[str, str]:
    """Import name -> where pyproject.toml declares it (``dependencies`` or ``extra <name>``)."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    found = {import_name(r): "dependencies" for r in project.get("dependencies", [])}
    for extra, requirements in project.get("optional-dependencies", {}).items():
        for r in requirements:
            found.setdefault(import_name(r), f"extra {extra}")
    return found


def imported(package: Path = PACKAGE) -> dict[str, list[str]]:
    """Third-party top-level module -> ``'file:line'`` of each import of it under ``package``."""
    found: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != package.name:
                    found.setdefault(top, []).append(f"{where}:{node.lineno}")
    return found


def test_the_import_names_of_requirements() -> None:
    assert import_name("open_clip_torch>=2.24") == "open_clip"
    assert import_name("Pillow") == "PIL" and import_name("scikit-learn==1.0") == "sklearn"
    assert import_name("huggingface-hub") == "huggingface_hub"
    assert import_name("transformers>=4.40 ; python_version >= '3.10'") == "transformers"


def test_the_scan_sees_lazy_and_from_imports(tmp_path: Path) -> None:
    package = tmp_path / "nibcore"
    package.mkdir()
    (package / "a.py").write_text("import os, numpy as np\nfrom . import b\nfrom nibcore import c\n"
                                  "def f():\n    from PIL.Image import open\n    import yaml.x\n",
                                  encoding="utf-8")
    assert imported(package) == {"numpy": ["nibcore/a.py:1"], "PIL": ["nibcore/a.py:5"],
                                 "yaml": ["nibcore/a.py:6"]}


def test_every_imported_package_is_declared() -> None:
    known = declared()
    missing = {name: places for name, places in imported().items() if name not in known}
    assert not missing, "imported by nibcore but not declared in pyproject.toml:\n" + "\n".join(
        f"{name}: {', '.join(places)}" for name, places in sorted(missing.items()))


def test_every_declared_dependency_is_imported() -> None:
    used = imported()
    unused = {name: where for name, where in declared().items() if name not in used}
    assert not unused, "declared in pyproject.toml but never imported by nibcore:\n" + "\n".join(
        f"{name} ({where})" for name, where in sorted(unused.items()))


def test_no_unittest_mock_in_shipped_code() -> None:
    uses: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [f"{node.module}.{a.name}" for a in node.names]
                     if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(n == "unittest.mock" or n.startswith("unittest.mock.") for n in names):
                uses.append(f"{path.relative_to(PACKAGE.parent).as_posix()}:{node.lineno}")
    assert not uses, "unittest.mock in shipped code: " + ", ".join(uses)


# --- requirements.txt: every pin is needed -----------------------------------------------------

REQUIREMENTS = PACKAGE.parent / "requirements.txt"


def _pins() -> list[str]:
    """The distributions requirements.txt pins whose markers hold on this machine."""
    from packaging.requirements import Requirement

    out = []
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate():
                out.append(_normalised(req.name))
    return out


def _requires(name: str, extras: frozenset[str] = frozenset()) -> set[tuple[str, frozenset]]:
    """``(distribution, extras it is asked for with)`` the installed distribution ``name``
    requires on this machine, with its ``extras`` (torch asks for ``cuda-toolkit[cudart, ...]``)."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    try:
        found = requires(name) or []
    except PackageNotFoundError:
        return set()
    out = set()
    for line in found:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({"extra": e})
                                     for e in ("", *sorted(extras))):
            out.add((_normalised(req.name), frozenset(req.extras)))
    return out


def _top_level_pins() -> list[str]:
    """The pins above "Everything else" in requirements.txt: what the project asks for itself
    (the library, the book's tools, the tests, lint, the build); the rest is their closure."""
    head = REQUIREMENTS.read_text(encoding="utf-8").split("# Everything else", 1)[0]
    return [_normalised(line.split("=")[0].split(";")[0].strip()) for line in head.splitlines()
            if line.strip() and not line.startswith("#")]


def test_every_pin_is_needed() -> None:
    """Each distribution requirements.txt pins (for this machine) is one the project asks for at
    the top of the file or one those require, transitively: no orphan like scikit-learn was."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    declared_deps = [*project["dependencies"],
                     *(r for rs in project["optional-dependencies"].values() for r in rs)]
    roots = _top_level_pins() + [_normalised(re.match(r"[A-Za-z0-9._-]+", r).group(0))
                                 for r in declared_deps]
    needed, seen, todo = set(), set(), [(name, frozenset()) for name in roots]
    while todo:
        item = todo.pop()
        if item not in seen:
            seen.add(item)
            needed.add(item[0])
            todo.extend(_requires(*item))
    orphans = sorted(set(_pins()) - needed)
    assert not orphans, f"pinned in requirements.txt but needed by nothing: {orphans}"
    assert {"open_clip_torch", "jupyter_book", "pytest"} <= needed
