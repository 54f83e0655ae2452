"""The built wheel carries everything a user needs: the library, the book and world packages, the
bundled model and the paper's tables, found through the installed package (not the clone)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import importlib, json, sys
from pathlib import Path
import nibcore
import nibcore.book.paper
import nibcore.world.scenes
packages = {name: importlib.import_module(name).__file__ for name in sys.argv[1:]}
from nibcore.book.paper import paper_table, paper_table_path
from nibcore.models import bundled_file
model = nibcore.load_model("mini", device="cpu")
table = paper_table(8)
print(json.dumps(dict(
    nibcore=str(Path(nibcore.__file__).resolve()),
    book=str(Path(nibcore.book.paper.__file__).resolve()),
    world=str(Path(nibcore.world.scenes.__file__).resolve()),
    weights=str(bundled_file("mini-clip.safetensors").resolve()),
    table=str(paper_table_path("table8_passes").resolve()),
    packages={k: str(Path(v).resolve()) for k, v in packages.items()},
    grid=list(model.grid), methods=sorted(nibcore.METHODS), rows=len(table),
    nib_forward=int(table.loc[table.method == "nib", "forward"].item()))))
"""


def test_wheel_installs_and_loads_mini_and_a_paper_table(tmp_path):
    # build from a copy, so concurrent runs never share build/ or *.egg-info in the checkout
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results")
    shutil.copytree(ROOT / "nibcore", src / "nibcore", ignore=ignore)
    shutil.copytree(ROOT / "data", src / "data", ignore=ignore)
    dist, site = tmp_path / "dist", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(dist),
                          str(src)], check=True, cwd=tmp_path)
    (wheel,) = dist.glob("nibcore-*.whl")
    subprocess.run(pip + ["install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   cwd=tmp_path)
    shutil.rmtree(src)  # nothing of the sources is left to fall back on
    # -S: no site processing, so the checkout's editable-install finder (a .pth hook) is not
    # loaded; the dependencies come from this environment's site-packages, nibcore from `site`
    deps = sysconfig.get_paths()["purelib"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), deps]), "OMP_NUM_THREADS": "1"}
    packages = sorted(".".join(p.parent.relative_to(ROOT).parts)
                      for p in (ROOT / "nibcore").rglob("__init__.py"))
    assert {"nibcore", "nibcore.book", "nibcore.world", "nibcore.methods"} <= set(packages)
    out = subprocess.run([sys.executable, "-S", "-c", CHECK, *packages], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    site = site.resolve()
    for key in ("nibcore", "book", "world", "weights", "table"):
        assert Path(found[key]).is_relative_to(site), (key, found[key])
    assert Path(found["weights"]).parent.name == "_bundled"
    assert set(found["packages"]) == set(packages)  # every sub-package of the source is shipped
    for name, file in found["packages"].items():
        assert Path(file).is_relative_to(site), (name, file)
    assert found["grid"] == [8, 8] and found["rows"] == 8 and found["nib_forward"] == 12
    assert {"nib", "m2ib", "rise"} <= set(found["methods"])
