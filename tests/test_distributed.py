"""`python -m nibcore evaluate`: the command, and sharding with torch.distributed (torchrun, gloo).

The sharded run is a real one: two CPU processes started by torchrun on the loopback interface,
compared row for row with a single-process run of the same command.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from nibcore import evaluation as ev
from nibcore.cli import main

ARGS = ["--model", "mini", "--dataset", "scenes", "--methods", "nib", "gradcam",
        "--params", json.dumps({"nib": {"num_steps": 2}}), "--sides", "image", "text",
        "--protocols", "paper", "--batch-size", "2", "--threads", "1", "--no-progress"]


def _rows(path):
    """The rows of a results file without the wall-clock column."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r.pop("seconds")
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """A single-process run of the command (this process, one thread): 5 pairs, 3 batches."""
    out = tmp_path_factory.mktemp("single") / "run.jsonl"
    assert main(["evaluate", *ARGS, "--n", "5", "--out", str(out)]) == 0
    return out


def test_evaluate_command_writes_rows_and_resumes(single, tmp_path, capsys, monkeypatch):
    rows = _rows(single)
    assert len(rows) == 5 * 2 * 2
    assert {(r["method"], r["side"]) for r in rows} == {
        (m, s) for m in ("nib", "gradcam") for s in ("image", "text")}
    # file order: batch by batch, then method, side, pair (what a sharded run reproduces)
    assert [r["batch"] for r in rows[:4]] == [2, 2, 2, 2]
    assert [r["method"] for r in rows[:8]] == ["nib"] * 4 + ["gradcam"] * 4
    assert rows[0]["params"] == json.dumps({"num_steps": 2})
    assert "txt_conf_drop_paper" in rows[2] and "txt_conf_drop_clean" not in rows[2]
    # a re-run with the same file computes nothing and leaves the file as it was
    copy = tmp_path / "run.jsonl"
    copy.write_text(single.read_text())
    monkeypatch.setattr(ev, "_explain", lambda *a, **k: pytest.fail("recomputed a done row"))
    capsys.readouterr()
    assert main(["evaluate", *ARGS, "--n", "5", "--out", str(copy)]) == 0
    assert copy.read_text() == single.read_text()
    assert "20 rows" in capsys.readouterr().out


def test_torchrun_two_processes_merge_to_the_single_process_file(single, tmp_path):
    out = tmp_path / "run.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "nibcore", "evaluate", *ARGS,
           "--pairs", "5", "--out", str(out)]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _rows(out) == _rows(single)  # row for row, every column but the wall clock
    assert ev.part_files(out) == []  # merged, then removed
    assert done.stdout.count("20 rows") == 1  # only rank 0 reports


def test_resume_reads_the_part_files_of_an_interrupted_sharded_run(single, tmp_path,
                                                                   monkeypatch):
    # rank 1 of 2 had finished its batch (pairs 3-4 of the subset), rank 0 had not started
    out = tmp_path / "run.jsonl"
    rows = [json.loads(line) for line in single.read_text().splitlines()]
    ids = list(dict.fromkeys(r["id"] for r in rows))
    part = tmp_path / "run.jsonl.part1-of-2"
    part.write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"] in ids[2:4]))
    real, calls = ev._explain, []
    monkeypatch.setattr(ev, "_explain", lambda *a, **k: calls.append(a[4].shape[0])
                        or real(*a, **k))
    assert main(["evaluate", *ARGS, "--n", "5", "--out", str(out)]) == 0
    # the two other batches ran (pairs 1-2 and 5), 2 methods x 2 sides, each warm-up is 1 pair
    assert sum(calls) == (2 + 1) * 4 + 4
    assert sorted(map(json.dumps, _rows(out))) == sorted(map(json.dumps, _rows(single)))
    assert not part.exists()


def test_distributed_true_needs_a_process_group(tiny):
    with pytest.raises(ValueError, match="not initialised"):
        ev.evaluate(tiny, "scenes", "nib", n=1, distributed=True, progress=False)


@pytest.mark.parametrize("bad, message", [
    (["--params", "{nib"], "not valid JSON"),
    (["--params", '{"nib": 3}'], "must map method names"),
    (["--methods", "nope"], "unknown method"),
    (["--batch-size", "0"], "--batch-size"),
])
def test_evaluate_command_refuses_bad_arguments(bad, message, tmp_path):
    with pytest.raises(SystemExit, match=message):
        main(["evaluate", *ARGS, "--n", "1", *bad, "--out", str(tmp_path / "x.jsonl")])
