"""The suite runs with the package read-only (the audit hook of ``conftest.py``)."""

import os

import pytest

from conftest import PROTECTED, protected


@pytest.mark.skipif(os.environ.get("NIB_PACKAGE_WRITABLE") == "1", reason="guard switched off")
def test_writing_into_the_package_fails(tmp_path):
    probe = PROTECTED[0] / "probe.txt"
    with pytest.raises(PermissionError, match="a test wrote to the package"):
        probe.write_text("x")
    with pytest.raises(PermissionError, match="a test wrote to the package"):
        os.rename(PROTECTED[1] / "no-such-file", tmp_path / "x")
    assert not probe.exists()
    (tmp_path / "fine.txt").write_text("tmp paths are writable")
    assert not protected(tmp_path / "fine.txt") and protected(PROTECTED[1] / "results" / "x")
    assert not protected(PROTECTED[0] / "__pycache__" / "x.pyc")
