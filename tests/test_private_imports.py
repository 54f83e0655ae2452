"""No nibcore module uses another nibcore module's private (``_name``) names.

Every ``.py`` under ``nibcore/`` is parsed with ``ast``; imports inside functions count too. A
module's own private names and dunder names are fine.
"""
from __future__ import annotations

import ast
from pathlib import Path

import nibcore

PACKAGE = Path(nibcore.__file__).resolve().parent


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute module a ``from ... import`` in ``module`` names."""
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(path: Path, package: Path = PACKAGE) -> list[str]:
    """``'file:line: name'`` for each private name of another nibcore module used in ``path``
    (a file under the ``package`` folder)."""
    module = _module_name(path, package)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    where = path.relative_to(package.parent).as_posix()
    found: list[str] = []
    bound: dict[str, str] = {}  # local name -> the nibcore module or object it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(module, path.name == "__init__.py", node.level, node.module)
            if source.split(".")[0] != "nibcore":
                continue
            for alias in node.names:
                if _private(alias.name) and source != module:
                    found.append(f"{where}:{node.lineno}: from {source} import {alias.name}")
                bound[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "nibcore":
                    bound[alias.asname or "nibcore"] = alias.name if alias.asname else "nibcore"
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in bound
                and bound[node.value.id] != module):
            found.append(f"{where}:{node.lineno}: {bound[node.value.id]}.{node.attr}")
    # dotted access through a plain ``import nibcore.x``: nibcore.x._name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            dotted = _dotted(node.value)
            if dotted and dotted.startswith("nibcore.") and dotted != module and \
                    dotted.split(".")[0] in bound:
                found.append(f"{where}:{node.lineno}: {dotted}.{node.attr}")
    return found


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def test_the_scan_sees_every_kind_of_private_use(tmp_path: Path) -> None:
    package = tmp_path / "nibcore"
    fake = package / "methods" / "chefer.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..models import _hidden\n"
                    "from nibcore import evaluation as ev\n"
                    "import nibcore.store\n"
                    "from ._self import x\n"
                    "def f():\n"
                    "    from .common import _lazy, ok, __version__\n"
                    "    from . import _own\n"
                    "    from .chefer import _mine\n"
                    "    return ev._inner, ev.__name__, nibcore.store._kept, _mine\n",
                    encoding="utf-8")
    uses = private_uses(fake, package)
    assert [u.split(": ", 1)[1] for u in uses] == [
        "from nibcore.models import _hidden", "from nibcore.methods.common import _lazy",
        "from nibcore.methods import _own", "nibcore.evaluation._inner",
        "nibcore.store._kept"]
    assert uses[0].startswith("nibcore/methods/chefer.py:1:")


def test_no_module_imports_another_modules_private_names() -> None:
    found = [use for path in sorted(PACKAGE.rglob("*.py")) for use in private_uses(path)]
    assert not found, "private names used across nibcore modules:\n" + "\n".join(found)
