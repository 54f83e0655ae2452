"""The results store's audit (nibcore.audit): every mismatch collected, tolerances measured across
numeric paths, yes/no outcomes judged through their margins, tampering still caught."""

import json
import subprocess
import sys

import numpy as np
import pytest

import nibcore
from nibcore import audit as au
from nibcore import store
from nibcore.numerics import FLOAT_NOISE_RTOL
from nibcore.store import Run, Spec

#: Tolerances of these tests: the audit's bound (2e-4) on every column and a small map noise,
#: so a 1e-3 relative change and a flip with a clear margin must fail.
TOL = au.Tolerances(rtol={c: 2e-5 for c in ("img_s0", "img_s1", "txt_s0_paper", "txt_s1_paper",
                                             "txt_s0_m2ib", "txt_s1_m2ib")},
                    raw_rtol=1e-5, map_atol=1e-5, factor=10.0, default_rtol=au.MAX_RTOL)
QUIET = dict(log=lambda *_: None)


@pytest.fixture(scope="module")
def mini():
    return nibcore.load_model("mini")


@pytest.fixture(scope="module")
def generated(tmp_path_factory, mini):
    spec = Spec("scenes", 2, (Run(("nib", "gradcam")),), text_protocols=("paper", "m2ib"),
                about="test")
    store.SPECS["unit-audit"] = spec
    try:
        return store.generate("unit-audit", mini, root=tmp_path_factory.mktemp("store"),
                              progress=False)
    finally:
        del store.SPECS["unit-audit"]


@pytest.fixture()
def small(generated, tmp_path):
    """A fresh copy of the generated file (and its sidecar) for a test to tamper with."""
    path = tmp_path / generated.name
    path.write_text(generated.read_text())
    store.meta_file(path).write_text(store.meta_file(generated).read_text())
    return path


def _rewrite(path, line, change):
    lines = path.read_text().splitlines()
    row = json.loads(lines[line - 1])
    change(row)
    lines[line - 1] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    return row


def test_audit_passes_on_a_fresh_file(small, mini):
    report = au.audit(small, mini, pairs=2, tolerances=TOL, **QUIET)
    assert report.ok and report.checked == 8 and not report.excused


def test_every_changed_value_is_reported_not_only_the_first(small, mini):
    """A 1e-3 relative change of every non-zero metric of two rows: each one is named. (A
    Confidence Drop is audited through s0 and s1: a change of it below their noise cannot be
    told from noise, and is only required to fail above it.)"""
    changed = {}
    for line in (2, 4):
        def bump(row, line=line):
            for col, v in row.items():
                if (isinstance(v, float) and v != 0 and col not in store.UNAUDITED
                        and col not in ("index",)):
                    new = float(f"{v * (1 + 1e-3):.6g}")
                    if "_conf_drop" not in col or abs(new - v) > au.drop_allowed(col, row, TOL):
                        changed[(line, col)] = new
            row.update({c: v for (k, c), v in changed.items() if k == line})
        _rewrite(small, line, bump)
    report = au.audit(small, mini, pairs=2, tolerances=TOL, **QUIET)
    found = {(m.line, m.column) for m in report.mismatches}
    assert set(changed) <= found, set(changed) - found
    assert len(changed) >= 10 and not report.excused
    assert all(small.name in str(m) and "stored but" in str(m) for m in report.mismatches)


def test_a_flipped_outcome_with_a_clear_margin_fails(small, mini):
    rows = store.read_rows(small)
    line = next(i + 1 for i, r in enumerate(rows) if r["side"] == "image"
                and abs(r["img_s1"] - r["img_s0"]) > 1e-3 and r["degenerate"] == 0)
    _rewrite(small, line, lambda r: r.update(img_conf_incr=100.0 - r["img_conf_incr"],
                                             pointing=100.0 - r["pointing"]))
    report = au.audit(small, mini, pairs=2, tolerances=TOL, **QUIET)
    assert {("img_conf_incr", line), ("pointing", line)} <= {
        (m.column, m.line) for m in report.mismatches}


def test_a_flip_within_the_noise_is_excused_and_counted(small, mini):
    """The same flips, judged with a map noise and s-tolerance larger than their margins."""
    rows = store.read_rows(small)
    line = next(i + 1 for i, r in enumerate(rows) if r["side"] == "image"
                and r["degenerate"] == 0)
    _rewrite(small, line, lambda r: r.update(img_conf_incr=100.0 - r["img_conf_incr"],
                                             pointing=100.0 - r["pointing"]))
    loose = au.Tolerances(rtol={"img_s0": 2.0, "img_s1": 2.0}, raw_rtol=2.0, map_atol=2.0,
                          factor=10.0)
    report = au.audit(small, mini, pairs=2, tolerances=loose, **QUIET)
    assert report.ok
    assert {("img_conf_incr", line), ("pointing", line)} <= {
        (m.column, m.line) for m in report.excused}


def test_changed_params_or_model_fail_the_whole_file(small, mini):
    meta_path = store.meta_file(small)
    meta = json.loads(meta_path.read_text())
    meta["params"]["nib {}"]["num_steps"] = 11
    meta_path.write_text(json.dumps(meta))
    report = au.audit(small, mini, tolerances=TOL, **QUIET)
    assert any("nib parameters changed" in str(m) for m in report.mismatches)
    meta["params"]["nib {}"]["num_steps"] = 10
    meta["weights_sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    report = au.audit(small, mini, tolerances=TOL, **QUIET)
    assert any("weights_sha256" in str(m) for m in report.mismatches)


def test_cli_prints_every_mismatch_and_writes_the_report(small, tmp_path):
    for line in (2, 5):
        _rewrite(small, line, lambda r: r.update(
            {c: r[c] * 1.001 for c in ("img_s0", "txt_s0_paper") if c in r}))
    report = tmp_path / "audit.json"
    run = subprocess.run([sys.executable, "-m", "nibcore.store", "audit", str(small),
                          "--report", str(report)], capture_output=True, text=True)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    failed = [ln for ln in run.stderr.splitlines() if ln.startswith("AUDIT FAILED")]
    assert len(failed) == 2 and {"line 2", "line 5"} <= {f.split(" (")[0].split(": ")[-1]
                                                          for f in failed}
    found = json.loads(report.read_text())
    assert len(found["mismatches"]) == 2 and found["checked"] == 8


def test_store_load_names_the_failing_rows_of_its_table(small, monkeypatch, capsys):
    report = {"mismatches": [{"file": small.name, "text": f"{small.name}: line 3 (x): ..."},
                             {"file": "other.jsonl", "text": "other.jsonl: line 1"}]}
    path = small.parent / "audit.json"
    path.write_text(json.dumps(report))
    monkeypatch.setenv(store.AUDIT_REPORT_ENV, str(path))
    assert len(store.load(small)) == 8
    out = capsys.readouterr().out
    assert "AUDIT WARNING" in out and f"{small.name}: line 3" in out and "other" not in out
    monkeypatch.delenv(store.AUDIT_REPORT_ENV)
    store.load(small)
    assert capsys.readouterr().out == ""


def test_randomisation_file_audits_within_tolerance_and_catches_a_change(monkeypatch, tmp_path,
                                                                        mini):
    spec = Spec("scenes", 2, (Run(("gradcam", "rise"), params={"rise": {"n_masks": 20}}),),
                text_protocols=(), check="randomisation", about="test")
    monkeypatch.setitem(store.SPECS, "unit-rand", spec)
    path = store.generate("unit-rand", mini, n=1, root=tmp_path, progress=False)
    report = au.audit(path, mini, pairs=1, tolerances=TOL, **QUIET)
    assert report.ok and report.checked == 16
    lines = path.read_text().splitlines()
    k = next(k for k, ln in enumerate(lines) if json.loads(ln)["kind"] == "randomised"
             and abs(json.loads(ln)["spearman"]) > 0.1)
    _rewrite(path, k + 1, lambda r: r.update(spearman=r["spearman"] * 1.001))
    report = au.audit(path, mini, pairs=1, tolerances=TOL, **QUIET)
    assert [m.line for m in report.mismatches] == [k + 1]
    assert "spearman" in str(report.mismatches[0])


def test_audit_sample_covers_every_group():
    rows = [dict(method=m, side=s, params="{}", id=i) for m in ("a", "b") for s in ("image",
            "text") for i in range(10)]
    sample = au.audit_sample(rows, pairs=2, seed=0)
    assert len(sample) == 8 and au.audit_sample(rows, pairs=2, seed=0) == sample
    assert len({(rows[i]["method"], rows[i]["side"]) for i in sample}) == 4


def test_quantum_and_the_drop_through_s0_s1():
    assert au.quantum(0.100001) == pytest.approx(1e-6) and au.quantum(43.6) == pytest.approx(1e-4)
    assert au.quantum(0.0) == 0.0
    row = dict(img_s0=0.3, img_s1=0.29999, img_conf_drop=0.001)
    # a drop of 0.001 moving by 5e-5 is 5 % relative, but within the noise of s0 and s1
    assert au.compare("img_conf_drop", 0.001, 0.00105, row, TOL) is None
    assert au.compare("img_conf_drop", 0.001, 0.02, row, TOL) is not None
    # a stored value never needs to be closer than its own rounding step
    assert au.compare("energy", 12.3457, 12.34565, {}, au.Tolerances({}, 0, 0, 1, 0.0)) is None
    assert au.compare("pointing", 100.0, 0.0, {}, TOL) == "the outcome differs"


def test_margins_of_the_thresholded_values():
    scores = np.zeros((8, 8))
    scores[0, 0], scores[7, 7] = 1.0, 1.0 - 1e-7
    mask = np.zeros((8, 8), bool)
    mask[7, 7] = True
    assert au.pointing_gap(scores, mask) == pytest.approx(1e-7)
    # ten steps over 64 pixels: the boundary between pixel ranks 5 and 6 holds a 1e-7 gap
    ramp = np.linspace(1, 0, 64)
    ramp[6] = ramp[5] - 1e-7  # the first step shows rint(6.4) = 6 pixels
    assert au.curve_boundary_gap(ramp.reshape(8, 8)) == pytest.approx(1e-7, rel=1e-3)
    assert au.curve_boundary_gap(np.zeros((8, 8))) == float("inf")  # degenerate: fixed order
    assert au.median_gap(np.array([0, 0.2, 0.5, 0.5 + 1e-7, 0.9, 1])) == pytest.approx(5e-8)


def test_committed_tolerances_are_measured_and_bounded():
    """tolerances.json comes from scripts/measure_tolerances.py: several numeric paths, no
    tolerance above the audit's bound, and the constant-map threshold (and the tests' noise
    bound) at least five times the raw maps' measured spread."""
    data = json.loads((store.store_dir() / au.TOLERANCE_FILE).read_text())
    assert len(data["configs"]) >= 3 and data["rows"] > 100
    assert all(0 <= v <= au.MAX_RTOL for v in data["rtol"].values())
    for col, spread in data["spread"].items():
        assert data["rtol"][col] == pytest.approx(min(spread * data["factor"], au.MAX_RTOL))
    assert 5 * data["raw_spread"] <= FLOAT_NOISE_RTOL
    tol = au.Tolerances.load()
    assert tol.raw_rtol == pytest.approx(data["raw_spread"] * data["factor"])
    assert tol.map_atol == pytest.approx(data["map_spread"] * data["factor"])


def test_rank_swap_bound_covers_swaps_of_near_ties():
    from nibcore.sanity import rank_correlation, rank_swap_bound

    rng = np.random.default_rng(0)
    a = rng.random(200)
    b = a + rng.normal(0, 0.3, 200)
    near = np.sort(a)
    a2 = a.copy()  # swap the order of every neighbouring pair closer than 1e-3
    order = np.argsort(a)
    for i in range(0, 199, 2):
        if near[i + 1] - near[i] < 1e-3:
            a2[order[i]], a2[order[i + 1]] = a[order[i + 1]], a[order[i]]
    moved = abs(rank_correlation(a2, b) - rank_correlation(a, b))
    assert moved > 0 and moved <= rank_swap_bound(a, b, 1e-3)
    assert rank_swap_bound(a, b, 0.0) == 0.0
