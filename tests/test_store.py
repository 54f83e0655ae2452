"""The results store: provenance sidecar, rounding and resumption (nibcore.store); the audit is
tested in test_audit.py."""

import pytest

import nibcore
from nibcore import store
from nibcore.store import Run, Spec


@pytest.fixture(scope="module")
def mini():
    return nibcore.load_model("mini")


@pytest.fixture()
def small(monkeypatch, tmp_path, mini):
    spec = Spec("scenes", 2, (Run(("nib", "gradcam")),), text_protocols=("paper", "m2ib"),
                about="test")
    monkeypatch.setitem(store.SPECS, "unit", spec)
    path = store.generate("unit", mini, root=tmp_path, progress=False)
    return path


def test_generate_writes_rounded_rows_and_provenance(small, mini):
    rows = store.read_rows(small)
    assert len(rows) == 2 * 2 * 2  # pairs x methods x sides
    for r in rows:
        for v in r.values():
            if isinstance(v, float):
                assert v == float(f"{v:.6g}")
        assert "hardware" not in r
    meta = store.read_meta(small)
    for key in ("command", "nibcore_version", "git_commit", "file_sha256", "weights_sha256",
                "params", "torch", "hardware", "threads", "sessions", "wall_seconds"):
        assert key in meta, key
    assert meta["params"]["nib {}"]["num_steps"] == 10
    assert meta["weights_sha256"] == store.weights_sha256(mini)
    assert meta["rows"] == 8 and len(meta["sessions"]) == 1


def test_generate_resumes_without_recomputing(small, mini, tmp_path):
    before = small.read_text()
    store.generate("unit", mini, root=tmp_path, progress=False)
    assert small.read_text() == before
    meta = store.read_meta(small)
    assert len(meta["sessions"]) == 2


def test_round_sig_and_errors(tmp_path):
    assert store.round_sig(1.23456789) == 1.23457
    assert store.round_sig(3) == 3 and store.round_sig("x") == "x"
    with pytest.raises(ValueError, match="unknown store file"):
        store.store_file("nope")
    with pytest.raises(FileNotFoundError, match="sidecar"):
        store.read_meta(tmp_path / "x.jsonl")


def test_timing_warms_up_and_takes_medians(mini, tmp_path):
    frame = store.timing(mini, methods=("nib",), sides=("text",), pairs=1, repeats=3)
    assert frame.shape[0] == 1
    r = frame.iloc[0]
    assert r.repeats == 3 and r.fps == pytest.approx(1 / r.seconds) and r.threads >= 1
    with pytest.raises(ValueError, match="at least 3"):
        store.timing(mini, methods=("nib",), repeats=2)


def test_describe_and_load_many(small, monkeypatch):
    monkeypatch.setattr(store, "store_dir", lambda: small.parent)
    d = store.describe(["unit"])
    assert d.loc[small.name, "rows"] == 8 and d.loc[small.name, "pairs"] == 2
    assert len(store.load_many(["unit"])) == 8
    with pytest.raises(FileNotFoundError, match="python -m nibcore.store generate"):
        store.load("table2-rise-image", model="nomodel")


def test_randomisation_file_resumes_and_audits(monkeypatch, tmp_path, mini):
    spec = Spec("scenes", 3, (Run(("gradcam", "rise"), params={"rise": {"n_masks": 20}}),),
                text_protocols=(), check="randomisation", about="test")
    monkeypatch.setitem(store.SPECS, "unit-rand", spec)
    monkeypatch.setattr(store, "RANDOMISATION_CHUNK", 2)
    path = store.generate("unit-rand", mini, n=1, root=tmp_path, progress=False)
    first = store.read_rows(path)
    # 1 pair x 2 methods x (image: reference + 3 depths, text: reference + 3 depths)
    assert len(first) == 2 * 2 * 4
    path = store.generate("unit-rand", mini, root=tmp_path, progress=False)  # resumes to 3
    rows = store.read_rows(path)
    assert rows[:len(first)] == first and len({r["id"] for r in rows}) == 3
    ref = [r for r in rows if r["kind"] == "other pair"]
    assert all(r["partner"] != r["id"] and r["partner_index"] is not None for r in ref)
    assert store.read_meta(path)["check"] == "randomisation"


def test_the_readme_table_of_the_store_is_the_sidecars():
    """The README's table of the committed store (rows, pairs, wall times) is rendered from the
    sidecars, so it cannot drift from the files; regenerate it with store.readme_table()."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert store.readme_table() in readme, "regenerate: python -c 'from nibcore import store; " \
                                           "print(store.readme_table())'"
