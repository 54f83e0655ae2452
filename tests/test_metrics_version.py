"""Versioned metric definitions: a store file's sidecar records ``metrics_version``; a sidecar
without it counts as version 1 (the definitions the current store was generated with); a file
generated under another version is reported by the audit as "regenerate", not as numeric
mismatches, and ``generate`` does not append rows of new definitions to it."""

import json
import subprocess
import sys

import pytest

import nibcore
from nibcore import audit as au
from nibcore import store
from nibcore.metrics import METRICS_VERSION
from nibcore.store import Run, Spec

CHANGED = "metric definitions changed since this file was generated: regenerate"
#: Loose tolerances: these tests are about the version, not about float noise.
TOL = au.Tolerances(rtol={}, raw_rtol=1e-5, map_atol=1e-5, factor=10.0)
QUIET = dict(log=lambda *_: None)


@pytest.fixture(scope="module")
def mini():
    return nibcore.load_model("mini")


@pytest.fixture(scope="module")
def generated(tmp_path_factory, mini):
    spec = Spec("scenes", 1, (Run(("gradcam",), ("image",)),), text_protocols=(), about="test")
    store.SPECS["unit-version"] = spec
    try:
        return store.generate("unit-version", mini, root=tmp_path_factory.mktemp("store"),
                              progress=False)
    finally:
        del store.SPECS["unit-version"]


def _copy(generated, folder, version):
    """A copy of the generated file in ``folder`` whose sidecar says ``version`` (None: the
    field removed, as in a sidecar written before it existed)."""
    folder.mkdir(exist_ok=True)
    path = folder / generated.name
    path.write_text(generated.read_text())
    meta = json.loads(store.meta_file(generated).read_text())
    if version is None:
        meta.pop("metrics_version")
    else:
        meta["metrics_version"] = version
    store.meta_file(path).write_text(json.dumps(meta))
    return path


def test_generate_records_the_code_version(generated):
    assert store.read_meta(generated)["metrics_version"] == METRICS_VERSION
    assert store.metrics_version({}) == 1  # a sidecar without the field: version 1


def test_missing_field_is_version_one_and_audits_as_usual(generated, tmp_path, mini):
    path = _copy(generated, tmp_path / "old", None)
    report = au.audit(path, mini, pairs=1, tolerances=TOL, **QUIET)
    assert (METRICS_VERSION == 1) == report.ok
    if METRICS_VERSION == 1:
        assert report.checked == 1


def test_another_version_asks_for_regeneration_instead_of_mismatches(generated, tmp_path,
                                                                      mini):
    path = _copy(generated, tmp_path / "other", METRICS_VERSION + 1)
    lines = path.read_text().splitlines()  # also a stored value changed: not reported
    row = json.loads(lines[0])
    row["img_s0"] = row["img_s0"] + 0.5
    path.write_text(json.dumps(row) + "\n" + "\n".join(lines[1:]))
    report = au.audit(path, mini, pairs=1, tolerances=TOL, **QUIET)
    assert report.checked == 0 and len(report.mismatches) == 1
    text = str(report.mismatches[0])
    assert text.startswith(f"{path.name}: {CHANGED}") and str(METRICS_VERSION + 1) in text


def test_cli_audit_through_nib_store(generated, tmp_path):
    """``python -m nibcore.store audit`` over a store folder named by NIB_STORE: the file of
    another version is reported as "regenerate", the current one passes."""
    folder = tmp_path / "store"
    other = _copy(generated, folder, METRICS_VERSION + 1)
    current = _copy(generated, tmp_path / "current", METRICS_VERSION)
    current = current.rename(folder / ("mini-current.jsonl"))
    store.meta_file(tmp_path / "current" / generated.name).rename(store.meta_file(current))
    tolerances = store.store_dir() / au.TOLERANCE_FILE
    (folder / au.TOLERANCE_FILE).write_text(tolerances.read_text())
    env = {**__import__("os").environ, store.STORE_ENV: str(folder)}
    run = subprocess.run([sys.executable, "-m", "nibcore.store", "audit", "--pairs", "1"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    failed = [ln for ln in run.stderr.splitlines() if ln.startswith("AUDIT FAILED")]
    assert failed == [f"AUDIT FAILED: {other.name}: {CHANGED} (generated with metrics version "
                      f"{METRICS_VERSION + 1}, the code's is {METRICS_VERSION})"]
    assert f"audit {current.name}: 1 of 1 rows recomputed, all within the tolerances" \
        in run.stdout


def test_generate_refuses_to_continue_a_file_of_other_definitions(generated, tmp_path, mini,
                                                                 monkeypatch):
    path = _copy(generated, tmp_path / "gen", METRICS_VERSION + 1)
    monkeypatch.setitem(store.SPECS, "unit-version", Spec(
        "scenes", 1, (Run(("gradcam",), ("image",)),), text_protocols=(), about="test"))
    with pytest.raises(RuntimeError, match="metric definitions changed since this file was "
                                           "generated"):
        store.generate("unit-version", mini, root=path.parent, progress=False)


def test_a_file_without_metrics_is_not_dated_by_their_version():
    """A randomisation file holds Spearman correlations and top-k overlaps, none of the metric
    definitions: an older version does not ask for its regeneration; an evaluate file does."""
    old = {"metrics_version": METRICS_VERSION - 1}
    assert store.stale_metrics_version({**old, "check": "randomisation"}) is None
    assert store.stale_metrics_version({**old, "check": "evaluate"}) == METRICS_VERSION - 1
    assert store.stale_metrics_version({"check": "evaluate"}) == (
        None if METRICS_VERSION == 1 else 1)
    assert store.stale_metrics_version({"metrics_version": METRICS_VERSION}) is None
