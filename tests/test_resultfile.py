"""Result files (nibcore.resultfile): a cut last line is tolerated and set aside, a malformed line
elsewhere is a one-line error; the store, the evaluation runner and the merge of torchrun part
files all resume through it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import nibcore
from nibcore import cli
from nibcore import evaluation as ev
from nibcore import resultfile as rf
from nibcore import store
from nibcore.resultfile import CutLineWarning, ResultFileError
from nibcore.store import Run, Spec

ROWS = [{"id": f"p{i}", "method": "m", "value": i / 3, "text": "café"} for i in range(4)]
KEY = ("id", "method")


def _write(path: Path, rows, tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")
    return path


def _cut(path: Path, nbytes: int) -> bytes:
    """Cut the file's last line (and its newline) short by ``nbytes`` bytes, as a kill during
    the write would; returns the bytes left of that line."""
    data = path.read_bytes()
    assert data.endswith(b"\n")
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[:-1 - nbytes])
    return data[start:-1 - nbytes]


# --- the module on its own -------------------------------------------------------------------

def test_read_ignores_a_cut_last_line_and_reports_it(tmp_path):
    path = _write(tmp_path / "run.jsonl", ROWS)
    cut = _cut(path, 5)
    before = path.read_bytes()
    with pytest.warns(CutLineWarning, match=r"run\.jsonl: ignored line 4, cut by an interrupted"):
        found = rf.scan(path)
    assert found.rows == ROWS[:3] and found.cut == cut and found.cut_line == 4
    with pytest.warns(CutLineWarning):
        assert rf.read(path) == ROWS[:3]
    assert path.read_bytes() == before  # reading changes nothing
    # a complete last row that only lacks its newline is a row, not a cut line
    _write(path, ROWS[:2], tail=json.dumps(ROWS[2]))
    assert rf.read(path) == ROWS[:3]
    rf.append(path, [ROWS[3]])
    assert rf.read(path) == ROWS and not rf.partial_file(path).exists()
    assert rf.read(tmp_path / "missing.jsonl", missing_ok=True) == []
    with pytest.raises(FileNotFoundError):
        rf.read(tmp_path / "missing.jsonl")


def test_a_cut_multibyte_character_is_a_cut_line(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_bytes(json.dumps(ROWS[0]).encode() + b"\n" + '{"text": "é'.encode()[:-1])
    with pytest.warns(CutLineWarning, match="line 2"):
        assert rf.read(path) == ROWS[:1]


def test_append_sets_a_cut_last_line_aside_first(tmp_path):
    path = _write(tmp_path / "run.jsonl", ROWS[:3])
    cut = _cut(path, 4)
    with pytest.warns(CutLineWarning, match=r"line 3 was cut .* set it aside into "
                                            r"run\.jsonl\.partial and truncated the file"):
        rf.append(path, ROWS[2:])
    assert rf.read(path) == ROWS  # no corrupted line left in the middle
    assert rf.partial_file(path).read_bytes() == cut + b"\n"
    # a second cut is added to the same .partial, one cut line a line
    second = _cut(path, 2)
    with pytest.warns(CutLineWarning):
        rf.append(path, ROWS[3:])
    assert rf.read(path) == ROWS
    assert rf.partial_file(path).read_bytes() == cut + b"\n" + second + b"\n"


@pytest.mark.parametrize("bad, why", [
    ('{"id": "p9", "method": ', "not JSON"),
    ("[1, 2]", "JSON but an array, not an object"),
    ("3.5", "JSON but a number, not an object"),
])
def test_a_malformed_line_in_the_middle_is_a_one_line_error(tmp_path, bad, why):
    path = tmp_path / "run.jsonl"
    _write(path, ROWS[:1], tail=bad + "\n" + json.dumps(ROWS[1]) + "\n")
    with pytest.raises(ResultFileError) as info:
        rf.read(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line 2 is {why}") and "\n" not in message
    assert "repair or delete line 2" in message
    assert isinstance(info.value, ValueError)
    # a bad last line that has its newline was written whole: malformed, not cut
    _write(path, ROWS[:2], tail=bad + "\n")
    with pytest.raises(ResultFileError, match="line 3"):
        rf.read(path)


def test_compact_keeps_the_last_copy_atomically(tmp_path):
    path = _write(tmp_path / "run.jsonl", [*ROWS[:3], {**ROWS[0], "value": -1.0}, ROWS[3]])
    os.chmod(path, 0o644)
    cut = _cut(path, 3)
    with pytest.warns(CutLineWarning, match="set it aside"):
        n = rf.compact(path, KEY, transform=lambda r: {**r, "value": round(r["value"], 2)})
    assert n == 3
    assert [(r["id"], r["value"]) for r in rf.read(path)] == [("p0", -1.0), ("p1", 0.33),
                                                               ("p2", 0.67)]
    assert "café" in path.read_text(encoding="utf-8")  # written as UTF-8, not \u escapes
    assert rf.partial_file(path).read_bytes() == cut + b"\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.jsonl", "run.jsonl.partial"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_merge_tolerates_a_cut_part_and_refuses_a_malformed_one(tmp_path):
    out = _write(tmp_path / "run.jsonl", ROWS[:1])
    part = rf.part_file(out, 1, 2)
    assert part.name == "run.jsonl.part1-of-2"
    _write(part, ROWS[1:3])
    cut = _cut(part, 6)
    other = _write(rf.part_file(out, 0, 2), ROWS[3:])
    assert rf.part_files(out) == [other, part]
    with pytest.warns(CutLineWarning):
        assert rf.merge(out, [ROWS[0], ROWS[3]], KEY) == 2
    assert rf.read(out) == [ROWS[0], ROWS[3], ROWS[1]]  # the row of the cut line is not there
    assert rf.part_files(out) == [] and not part.exists()
    assert rf.partial_file(part).read_bytes() == cut + b"\n"
    assert rf.part_files(out) == []  # a part's .partial is not a part file
    # a malformed middle line of a part stops the merge before anything is written or removed
    before = out.read_bytes()
    _write(part, [ROWS[2]], tail="not json\n" + json.dumps(ROWS[1]) + "\n")
    with pytest.raises(ResultFileError, match=r"run\.jsonl\.part1-of-2: line 2 is not JSON"):
        rf.merge(out, [ROWS[2]], KEY)
    assert out.read_bytes() == before and part.exists()


# --- the evaluation runner: a torchrun part file with a cut last line ------------------------

def _untimed(rows) -> list[str]:
    """The rows without their wall-clock column, as sorted JSON (order aside)."""
    return sorted(json.dumps({k: v for k, v in r.items() if k != "seconds"}) for r in rows)


def test_evaluate_resumes_from_a_part_file_with_a_cut_last_line(tiny, tmp_path):
    kw = dict(methods="gradcam", sides="image", n=3, batch_size=1, progress=False)
    full = ev.evaluate(tiny, "scenes", out=tmp_path / "full.jsonl", **kw)
    rows = rf.read(tmp_path / "full.jsonl")
    # rank 1 of 2 of an interrupted sharded run: its second row cut mid-write
    out = tmp_path / "run.jsonl"
    part = _write(rf.part_file(out, 1, 2), rows[1:])
    cut = _cut(part, 5)
    with pytest.warns(CutLineWarning, match=r"part1-of-2"):
        resumed = ev.evaluate(tiny, "scenes", out=out, **kw)
    pd.testing.assert_frame_equal(resumed.drop(columns="seconds"), full.drop(columns="seconds"))
    assert not part.exists() and rf.partial_file(part).read_bytes() == cut + b"\n"
    assert _untimed(rf.read(out)) == _untimed(rows)
    # a malformed line in the middle of a part file is an error naming it, before any work
    _write(part, [rows[1]], tail="{oops\n" + json.dumps(rows[2]) + "\n")
    with pytest.raises(ResultFileError, match=r"run\.jsonl\.part1-of-2: line 2"):
        ev.evaluate(tiny, "scenes", out=tmp_path / "run.jsonl", **kw)


# --- the results store: resume a cut file, one-line errors from the command ------------------

UNIT = "unit-resultfile"
SPEC = Spec("scenes", 2, (Run(("gradcam",)),), text_protocols=("paper",), about="test")
IGNORED = {"seconds", "hardware", *store.UNAUDITED}


@pytest.fixture(scope="module")
def mini():
    return nibcore.load_model("mini")


@pytest.fixture(scope="module")
def stored(tmp_path_factory, mini):
    """An uninterrupted store file: 2 pairs x Grad-CAM x 2 sides."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(store.SPECS, UNIT, SPEC)
        return store.generate(UNIT, mini, root=tmp_path_factory.mktemp("store"), progress=False)


def _copy(stored: Path, folder: Path) -> Path:
    path = folder / stored.name
    shutil.copy(stored, path)
    shutil.copy(store.meta_file(stored), store.meta_file(path))
    return path


def _audited(rows):
    return [{k: v for k, v in r.items() if k not in IGNORED} for r in rows]


def test_store_generate_resumes_a_file_whose_last_line_was_cut(stored, mini, tmp_path,
                                                              monkeypatch):
    monkeypatch.setitem(store.SPECS, UNIT, SPEC)
    full = store.read_rows(stored)
    assert len(full) == 2 * 2
    path = _copy(stored, tmp_path)
    cut = _cut(path, 7)  # killed while writing the last row
    with pytest.warns(CutLineWarning, match="set it aside"):
        store.generate(UNIT, mini, n=2, root=tmp_path, progress=False)
    resumed = store.read_rows(path)
    assert _audited(resumed) == _audited(full)  # the cut row computed again, nothing else
    assert rf.partial_file(path).read_bytes() == cut + b"\n"
    meta = store.read_meta(path)
    assert meta["rows"] == 4 and len(meta["sessions"]) == 2


def test_store_generate_refuses_a_malformed_middle_line_in_one_line(stored, mini, tmp_path,
                                                                   monkeypatch, capsys):
    monkeypatch.setitem(store.SPECS, UNIT, SPEC)
    path = _copy(stored, tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1][:30] + "\n"
    path.write_text("".join(lines))
    before = path.read_bytes(), store.meta_file(path).read_bytes()
    assert cli.main(["store", "generate", UNIT, "--n", "2", "--root", str(tmp_path),
                     "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"GENERATE FAILED: {path}: line 2 is not JSON") and "\n" not in err
    assert (path.read_bytes(), store.meta_file(path).read_bytes()) == before  # nothing written


def test_store_audit_command_reports_a_malformed_line_in_one_line(stored, tmp_path):
    path = _copy(stored, tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = "{" + lines[2][2:]
    path.write_text("".join(lines))
    done = subprocess.run([sys.executable, "-m", "nibcore.store", "audit", str(path)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert f"{path}: line 3 is not JSON" in done.stderr
