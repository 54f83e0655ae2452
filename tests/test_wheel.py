"""The built wheel carries everything a user needs: the library, the book and world packages, the
bundled model, the paper's tables and the results store, found through the installed package (not
the clone); the chapters that read the store run from the wheel alone and write nothing into it."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: the most the wheel may weigh (bytes): `pip install git+<repo>` on Colab builds and installs it
WHEEL_LIMIT = 60 * 2**20

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


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from a copy of the sources (the results store included) and the folder
    it is installed into with ``pip install --no-deps --target``."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    # build from a copy, so concurrent runs never share build/ or *.egg-info in the checkout
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.tmp")
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
    return wheel, site.resolve()


def _deps() -> list[str]:
    """This environment's site-packages (the dependencies), without processing its .pth files
    (the checkout's editable-install finder is one)."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def test_wheel_installs_and_loads_mini_and_a_paper_table(installed, tmp_path):
    _, site = installed
    # -S: no site processing, so the checkout's editable-install finder (a .pth hook) is not
    # loaded; the dependencies come from this environment's site-packages, nibcore from `site`
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *_deps()]),
           "OMP_NUM_THREADS": "1"}
    packages = sorted(".".join(p.parent.relative_to(ROOT).parts)
                      for p in (ROOT / "nibcore").rglob("__init__.py"))
    assert {"nibcore", "nibcore.book", "nibcore.world", "nibcore.methods"} <= set(packages)
    out = subprocess.run([sys.executable, "-S", "-c", CHECK, *packages], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("nibcore", "book", "world", "weights", "table"):
        assert Path(found[key]).is_relative_to(site), (key, found[key])
    assert Path(found["weights"]).parent.name == "_bundled"
    assert set(found["packages"]) == set(packages)  # every sub-package of the source is shipped
    for name, file in found["packages"].items():
        assert Path(file).is_relative_to(site), (name, file)
    assert found["grid"] == [8, 8] and found["rows"] == 8 and found["nib_forward"] == 12
    assert {"nib", "m2ib", "rise"} <= set(found["methods"])


# --- the chapters that read the results store, run from the wheel --------------------------------

def _imports_store(tree: ast.AST, package: str | None = None) -> bool:
    """Whether code imports ``nibcore.store`` (``from nibcore import store``, ``import
    nibcore.store``, ``from nibcore.store import ...``, ``nibcore.store.<name>``, or relatively
    inside the package ``package``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if any(a.name == "nibcore.store" or a.name.startswith("nibcore.store.")
                   for a in node.names):
                return True
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level and package is not None:  # relative, inside nibcore
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            if module == "nibcore.store" or module.startswith("nibcore.store."):
                return True
            if module == "nibcore" and any(a.name == "store" for a in node.names):
                return True
        elif isinstance(node, ast.Attribute) and node.attr == "store" \
                and isinstance(node.value, ast.Name) and node.value.id == "nibcore":
            return True
    return False


#: The store's reading functions: a module of nibcore that calls one reads the store (one that
#: only imports a helper from it, e.g. ``sweeps`` its file hash, does not).
STORE_READERS = ("load", "load_many", "describe", "load_timing", "read_rows")


def _calls_store_reader(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in STORE_READERS \
                and isinstance(node.value, ast.Name) and node.value.id == "store":
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("store") \
                and any(a.name in STORE_READERS for a in node.names):
            return True
    return False


def _reading_functions(tree: ast.Module) -> set[str]:
    """The module's top-level functions that call a store reader, directly or through another
    such function of the same module."""
    funcs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    reads = {name for name, f in funcs.items() if _calls_store_reader(f)}
    grew = True
    while grew:
        grew = False
        for name, f in funcs.items():
            called = {n.func.id for n in ast.walk(f)
                      if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            if name not in reads and called & reads:
                reads.add(name)
                grew = True
    return reads


def store_modules(root: Path = ROOT) -> dict[str, set[str]]:
    """``nibcore.store`` and the modules of nibcore that import it and call its reading
    functions, each with the functions that read it (a chapter calling one of them reads the
    store through it; a chapter using only the module's other functions does not); package
    ``__init__`` files, which re-export, aside."""
    found = {"nibcore.store": set(STORE_READERS)}
    for path in sorted((root / "nibcore").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            continue
        tree = ast.parse(path.read_text())
        if _imports_store(tree, ".".join(parts[:-1])) and _calls_store_reader(tree):
            found[".".join(parts)] = _reading_functions(tree)
    return found


def _code(nb: Path) -> str:
    """The code cells of a notebook, IPython magics and shell lines left out."""
    cells = json.loads(nb.read_text())["cells"]
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
               for c in cells if c["cell_type"] == "code"]
    return "\n".join(line for s in sources for line in s.splitlines()
                     if not line.lstrip().startswith(("%", "!")))


def reads_store(nb: Path, modules: dict[str, set[str]]) -> bool:
    """Whether a chapter's code uses the results store: it imports ``nibcore.store``, or it calls
    a function of a nibcore module that reads it (``modules``, from :func:`store_modules`) —
    ``mod.f(...)`` with ``mod`` bound by its import, or ``f(...)`` imported by name."""
    tree = ast.parse(_code(nb))
    if _imports_store(tree):
        return True
    bound: dict[str, str] = {}   # local name -> module
    named: set[str] = set()      # reading functions imported by name
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in modules and a.asname:
                    bound[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in modules:
                    bound[a.asname or a.name] = full
                elif node.module in modules and a.name in modules[node.module]:
                    named.add(a.asname or a.name)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
                and f.value.id in bound and f.attr in modules[bound[f.value.id]]:
            return True
        if isinstance(f, ast.Name) and f.id in named:
            return True
    return False


def store_chapters(root: Path = ROOT) -> list[Path]:
    modules = store_modules(root)
    return [nb for nb in sorted((root / "book").glob("*.ipynb")) if reads_store(nb, modules)]


def test_store_chapters_are_found():
    assert _imports_store(ast.parse("from nibcore import sweeps, store as s"))
    assert _imports_store(ast.parse("import nibcore\nnibcore.store.load('table2')"))
    assert _imports_store(ast.parse("from ..store import load"), "nibcore.book")
    assert _imports_store(ast.parse("from . import store"), "nibcore")
    assert not _imports_store(ast.parse("from . import store"), "nibcore.book")
    assert not _imports_store(ast.parse("from nibcore import sweeps\nstore = 1"))
    assert _calls_store_reader(ast.parse("from nibcore import store\nstore.load('x')"))
    assert not _calls_store_reader(ast.parse("from .store import weights_sha256"))
    modules = store_modules()
    assert "nibcore.book.claims" in modules and "nibcore.sweeps" not in modules, modules
    assert "load_sources" in modules["nibcore.book.claims"]
    names = [nb.stem for nb in store_chapters()]
    assert names and "results_main" in names and "results_passes" not in names, names
    # a chapter that imports a store-reading module but calls none of its reading functions
    # (clip: the self-checks module, for a check that reads no store file) does not read it
    assert "clip" not in names, names


#: The first cell run in each chapter: an audit hook recording every file of the installed tree
#: opened for reading, and everything opened for writing, created, renamed or removed there.
HOOK = """\
import os as _os, sys as _sys
_NIB_SITE = {sites!r}
_nib_reads, _nib_writes = set(), set()
_NIB_WRITE = _os.O_WRONLY | _os.O_RDWR | _os.O_CREAT | _os.O_APPEND | _os.O_TRUNC
_NIB_CHANGE = ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink", "os.link",
               "os.truncate", "os.chmod", "os.utime", "shutil.rmtree", "shutil.move")


def _nib_audit(event, args):
    try:
        if event == "open":
            paths, mode, flags = args[:1], args[1], args[2]
            write = any(c in mode for c in "wax+") if isinstance(mode, str) \\
                else bool((flags or 0) & _NIB_WRITE)
        elif event in _NIB_CHANGE:
            paths, write = args[:2] if event in ("os.rename", "os.link", "shutil.move") \\
                else args[:1], True
        else:
            return
        for p in paths:
            if isinstance(p, (str, bytes, _os.PathLike)):
                p = _os.path.abspath(_os.fsdecode(p))
                if p.startswith(_NIB_SITE):
                    (_nib_writes if write else _nib_reads).add(p)
    except Exception:
        pass


_sys.addaudithook(_nib_audit)
"""

#: The last cell: where every nibcore module came from, the import machinery, and the files.
REPORT = """\
import json as _json
from nibcore import store as _store
_mods = {n: [getattr(m, "__file__", None), *list(getattr(m, "__path__", []))]
         for n, m in list(_sys.modules.items()) if n == "nibcore" or n.startswith("nibcore.")}
print("NIB-WHEEL-CHECK " + _json.dumps(dict(
    modules=_mods, store_dir=str(_store.store_dir()), path=_sys.path,
    finders=[repr(f) for f in _sys.meta_path], reads=sorted(_nib_reads),
    writes=sorted(_nib_writes))))
"""


def listing(folder: Path) -> dict[str, tuple]:
    """Every file and folder under ``folder`` with its size and modification time."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(folder))] = (p.is_dir(), st.st_size if p.is_file() else None,
                                           st.st_mtime_ns)
    return out


def outputs(nb: dict) -> list[tuple[str, str]]:
    """(kind, text) of every output of an executed notebook: stream name or output type."""
    out = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            if o["output_type"] == "stream":
                text = o["text"]
                out.append((o["name"], "".join(text) if isinstance(text, list) else text))
            elif o["output_type"] == "error":
                out.append(("error", f"{o['ename']}: {o['evalue']}"))
            else:
                text = o.get("data", {}).get("text/plain", "")
                out.append((o["output_type"], "".join(text) if isinstance(text, list) else text))
    return out


@pytest.mark.book  # executes chapters: make test runs it beside the book build
def test_store_chapters_run_from_the_wheel(installed, tmp_path, monkeypatch):
    """Every chapter that reads the results store, with its default parameters, executed by
    papermill in a kernel that sees only the installed wheel (no site processing, so not the
    checkout's editable install), from a working folder outside the checkout: it runs, reads the
    store from the installed package, and writes nothing into the installed tree.

    The build's smoke flag is not used: a smoke run (``SMOKE = True``) computes live and never
    reads the store."""
    import nbformat
    import papermill

    wheel, site = installed
    assert wheel.stat().st_size < WHEEL_LIMIT, f"{wheel.name}: {wheel.stat().st_size} bytes"
    results = site / "nibcore" / "_bundled" / "results"
    shipped = sorted(p.name for p in (ROOT / "data" / "results").iterdir()
                     if p.name.endswith((".jsonl", ".json")))
    assert shipped and sorted(p.name for p in results.iterdir()) == shipped

    chapters = store_chapters()
    assert chapters and "results_main" in [nb.stem for nb in chapters]
    # a kernel of this interpreter with -S (no .pth files: the editable finder of the checkout
    # is never installed), the wheel first on its path, then this environment's dependencies
    kernels = tmp_path / "jupyter" / "kernels" / "nib-wheel"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps(dict(
        argv=[sys.executable, "-S", "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f",
              "{connection_file}"],
        display_name="nibcore from the wheel", language="python",
        env={"PYTHONPATH": os.pathsep.join([str(site), *_deps()]), "PYTHONSAFEPATH": "1",
             "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "1"})))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # the reader's working folder (Colab: /content), outside the checkout
    work, executed = tmp_path / "work", tmp_path / "executed"
    work.mkdir()
    executed.mkdir()
    assert not work.is_relative_to(ROOT)

    before = listing(site)
    times, failures = {}, []
    for nb_path in chapters:
        nb = nbformat.read(nb_path, as_version=4)
        nb.cells.insert(0, nbformat.v4.new_code_cell(HOOK.format(
            sites=tuple(dict.fromkeys([str(site) + os.sep, os.path.abspath(site) + os.sep])))))
        nb.cells.append(nbformat.v4.new_code_cell(REPORT))
        source, out = tmp_path / nb_path.name, executed / nb_path.name
        nbformat.write(nb, source)
        start = time.perf_counter()
        try:
            papermill.execute_notebook(str(source), str(out), kernel_name="nib-wheel",
                                       cwd=str(work), progress_bar=False, log_output=False,
                                       start_timeout=180, execution_timeout=900)
        except papermill.PapermillExecutionError as err:
            failures.append(f"{nb_path.name}: cell {err.exec_count}: {err.ename}: {err.evalue}")
            continue
        finally:
            times[nb_path.stem] = round(time.perf_counter() - start, 1)
        texts = outputs(json.loads(out.read_text()))
        check = [t for _, t in texts if t.startswith("NIB-WHEEL-CHECK ")]
        assert len(check) == 1, (nb_path.name, texts[-3:])
        found = json.loads(check[0].split(" ", 1)[1])
        for name, places in found["modules"].items():  # every nibcore module from the wheel
            for place in filter(None, places):
                assert Path(place).resolve().is_relative_to(site), (nb_path.name, name, place)
        assert "nibcore.store" in found["modules"], nb_path.name
        assert not any("editable" in f.lower() for f in found["finders"]), found["finders"]
        assert str(ROOT) not in found["path"], found["path"]
        assert Path(found["store_dir"]) == results, found["store_dir"]
        read = [p for p in found["reads"] if Path(p).parent == results]
        assert any(p.endswith(".jsonl") for p in read), (nb_path.name, found["reads"])
        assert not found["writes"], (nb_path.name, found["writes"])
        for kind, text in texts:
            assert "not in the store" not in text, (nb_path.name, text[:300])
            if kind == "stderr" and re.search(r"Traceback|Error\b|Exception\b", text):
                failures.append(f"{nb_path.name} wrote an error to stderr: {text[:300]!r}")
    print(f"store chapters from the wheel ({wheel.stat().st_size / 2**20:.1f} MiB): {times}")
    assert not failures, failures
    after = listing(site)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the chapters changed the installed package: {changed[:20]}"
