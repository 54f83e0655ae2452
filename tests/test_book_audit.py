"""A reader's `make book` still gets a book when the audit fails; `make test` (strict) fails.

One value of a copy of the store is changed by 1e-3 relative (a row the audit recomputes), and
the chapter that reads that file is built from the copy (``NIB_STORE``): the HTML exists and the
page names the row; the strict build exits non-zero. Marked ``book`` (it executes a chapter and
builds HTML): ``make test`` runs it beside the book build, not among the unit tests."""

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nibcore import audit as au
from nibcore import store

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = "results_ablations"  # reads ablation-steps and ablation-layers
FILES = ("mini-ablation-steps.jsonl", "mini-ablation-layers.jsonl")

pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def tampered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    for name in FILES:
        for f in (name, name + ".meta.json"):
            shutil.copy2(store.store_dir() / f, folder / f)
    shutil.copy2(store.store_dir() / au.TOLERANCE_FILE, folder / au.TOLERANCE_FILE)
    path = folder / FILES[0]
    lines = path.read_text().splitlines()
    line = au.audit_sample([json.loads(x) for x in lines])[0] + 1
    row = json.loads(lines[line - 1])
    col = next(c for c in ("img_s0", "txt_s0_paper") if c in row)
    row[col] = float(f"{row[col] * (1 + 1e-3):.6g}")
    lines[line - 1] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    return folder, f"{FILES[0]}: line {line} ({row['id']}, nib, {row['side']}): {col}"


def _build(folder: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, store.STORE_ENV: str(folder), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "build_book.py"), "--only",
                           CHAPTER, "--audit", "--out", str(out), *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def test_reader_build_writes_the_book_and_names_the_row(tampered, tmp_path):
    folder, named = tampered
    run = _build(folder, tmp_path / "out")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert named in run.stdout  # printed by the build
    page = tmp_path / "out" / "_build" / "html" / "book" / f"{CHAPTER}.html"
    text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))  # the words a reader sees
    assert "AUDIT WARNING" in text and named in text


def test_strict_build_fails(tampered, tmp_path):
    folder, named = tampered
    run = _build(folder, tmp_path / "out", "--strict", "--no-html")
    assert run.returncode != 0
    assert f"FAIL  results store audit: {named}" in run.stdout
