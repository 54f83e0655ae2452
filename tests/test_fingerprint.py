"""The ``sweeps`` cache fingerprint covers the model, the method code and the dataset code."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nibcore import sweeps


@pytest.fixture()
def package_copy(tmp_path: Path) -> Path:
    """A copy of the nibcore package folder (sources only)."""
    copy = tmp_path / "nibcore"
    shutil.copytree(sweeps.PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


def test_the_fingerprinted_files_include_methods_and_datasets() -> None:
    names = {p.relative_to(sweeps.PACKAGE_ROOT).as_posix() for p in sweeps.fingerprint_files()}
    assert {"attribution.py", "metrics.py", "evaluation.py", "models/towers.py", "datasets.py",
            "methods/nib.py", "methods/legrad.py", "world/scenes.py", "world/data.py"} <= names
    assert not any(n.startswith("book/") for n in names) and "viz.py" not in names


def test_a_copy_of_the_package_has_the_same_fingerprint(tiny, package_copy: Path) -> None:
    assert sweeps.code_fingerprint(package_copy) == sweeps.code_fingerprint()
    assert sweeps.fingerprint(tiny, root=package_copy) == sweeps.fingerprint(tiny)


@pytest.mark.parametrize("edited", ["world/scenes.py", "datasets.py", "methods/legrad.py",
                                    "metrics.py", "evaluation.py"])
def test_editing_code_that_makes_rows_changes_the_fingerprint(tiny, package_copy: Path,
                                                               edited: str) -> None:
    before = sweeps.fingerprint(tiny, root=package_copy)
    _append(package_copy / edited, "\n# a changed line\n")
    assert sweeps.fingerprint(tiny, root=package_copy) != before
    assert sweeps.fingerprint(tiny, code=False, root=package_copy) == \
        sweeps.fingerprint(tiny, code=False)


def test_editing_the_book_keeps_the_fingerprint(tiny, package_copy: Path) -> None:
    before = sweeps.fingerprint(tiny, root=package_copy)
    _append(package_copy / "book" / "chapters.py", "\n# prose only\n")
    assert sweeps.fingerprint(tiny, root=package_copy) == before


def test_a_half_precision_twin_has_another_fingerprint(tiny) -> None:
    twin = __import__("copy").deepcopy(tiny)
    twin.clip.half()
    assert sweeps.fingerprint(twin, code=False) != sweeps.fingerprint(tiny, code=False)
