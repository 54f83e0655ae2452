"""The results store: committed evaluation rows with provenance, and the audit that re-derives them.

``data/results/<model>-<name>.jsonl`` holds the rows of :func:`nibcore.evaluate` behind a results
chapter (JSON Lines, floats rounded to 6 significant digits); ``<file>.meta.json`` beside it says
how they were produced: the command, nibcore's version and git commit, the version of the metric
definitions (``metrics_version``, :data:`nibcore.metrics.METRICS_VERSION`; a sidecar without it
was written under version 1), the model's sha256 (file and weights), every method's full
parameters, torch version, hardware, threads, dates and the wall time of every session that wrote
rows. :data:`SPECS` names what each file holds.

Regenerate (resumable: rows are appended as they are computed; re-running continues)::

    OMP_NUM_THREADS=1 python -m nibcore.store generate table2 [--model mini] [--n N]

Timings (frames per second from a separate timed subset: warm-up, median of 3 repeats)::

    OMP_NUM_THREADS=1 python -m nibcore.store timing [--pairs 2] [--repeats 3]

Audit (what the book build runs; :mod:`nibcore.audit` says what it compares and within which
measured tolerances)::

    python -m nibcore.store audit [FILE ...] [--pairs 2] [--seed 0] [--report FILE.json]
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .. import resultfile
from ..downloads import file_digest
from ..base import METHODS
from ..methods import PAPER_LINEUP
from ..metrics import METRICS_VERSION, TEXT_PROTOCOLS, hardware
from ..models import BUNDLED, ClipModel, bundled_file

#: nibcore's method keys in the book's order.
ALL_METHODS = PAPER_LINEUP
#: Columns the audit does not compare: timings and where they were taken, and the cost
#: bookkeeping (pass counts, batch), which a refactor of how a method batches its rows changes
#: without changing a map or a metric. Every metric column is compared.
UNAUDITED = ("seconds", "hardware", "batch", "fwd", "bwd", "fwd_rows", "bwd_rows")
#: Significant digits of stored floats.
DIGITS = 6


@dataclass(frozen=True)
class Run:
    """One :func:`nibcore.evaluate` call of a spec: methods × sides with parameters."""

    methods: tuple[str, ...]
    sides: tuple[str, ...] = ("image", "text")
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    warmup: bool = True


@dataclass(frozen=True)
class Spec:
    """What a store file holds: a dataset, ``n`` pairs (the first ``n`` of a permutation seeded
    by ``seed``) and the runs over them."""

    dataset: str
    n: int
    runs: tuple[Run, ...]
    seed: int = 0
    text_protocols: tuple[str, ...] = TEXT_PROTOCOLS
    about: str = ""
    #: the insertion / deletion protocols scored (``"rise"`` adds RISE's, over the dataset's
    #: class prompts: :func:`nibcore.evaluate`'s ``curve_protocols``)
    curve_protocols: tuple[str, ...] = ("ours",)
    #: what the rows are: ``"evaluate"`` (:func:`nibcore.evaluate` rows) or ``"randomisation"``
    #: (:func:`nibcore.sanity.randomisation_report` rows of one run's methods, both towers)
    check: str = "evaluate"


#: The β values and M2IB noise seeds of the stored Table 5 (the chapter's live run can use the
#: paper's whole grid).
TABLE5_BETAS = (0.01, 0.02, 0.05, 0.1, 0.3, 0.9)
TABLE5_SEEDS = (0, 1, 2, 3, 4)

_NO_RISE = tuple(m for m in ALL_METHODS if m != "rise")
#: the Table 2 files score both insertion/deletion protocols: ours and RISE's (6.2x the cost of
#: ours per image row, about 43 core-minutes over the three files)
BOTH_CURVES = ("ours", "rise")

#: The store's files by name (the file is ``<model>-<name>.jsonl``).
SPECS: dict[str, Spec] = {
    "table2": Spec("scenes", 1000, (Run(_NO_RISE),), curve_protocols=BOTH_CURVES,
                   about="Table 2 and the image ground truth: every method but RISE, both sides"),
    "table2-rise-text": Spec("scenes", 1000, (Run(("rise",), ("text",), warmup=False),),
                             about="Table 2: RISE, text side (200 masks, the paper's)"),
    "table2-rise-image": Spec("scenes", 200, (Run(("rise",), ("image",), warmup=False),),
                              curve_protocols=BOTH_CURVES,
                              about="Table 2: RISE, image side (6000 masks, the paper's) on "
                                    "fewer pairs"),
    "table2-beyond": Spec("scenes", 1000, (Run(("gradeclip",)), Run(("legrad",), ("image",))),
                          curve_protocols=BOTH_CURVES,
                          about="Table 2 beyond the paper: Grad-ECLIP (both sides) and LeGrad "
                                "(image side only) on table2's pairs"),
    "text-gt": Spec("scenes_text", 1000, (Run(ALL_METHODS, ("text",), warmup=False),),
                    text_protocols=("paper",),
                    about="text ground truth: present vs absent phrase, every method"),
    "ablation-steps": Spec("scenes", 300, tuple(
        Run(("nib",), params={"nib": {"num_steps": k}}) for k in (3, 5, 8, 10, 13, 15, 18, 20)),
        text_protocols=("paper",), about="Tables 3/6: NIB's num_steps"),
    # six of the paper's 18 β values, spanning its grid (about a core-hour); each × 5 noise seeds
    "table5-beta": Spec("scenes", 300, tuple(
        Run(("m2ib",), params={"m2ib": {"beta": b, "seed": s}}, warmup=False)
        for b in TABLE5_BETAS for s in TABLE5_SEEDS),
        text_protocols=("paper",), about="Table 5: M2IB's beta, 5 noise seeds per beta"),
    # the model-parameter randomisation check (sanity.py): RISE with 500 masks, the same masks on
    # the trained and the randomised model
    "randomisation": Spec("scenes", 300, (Run(ALL_METHODS, params={"rise": {"n_masks": 500}}),),
                          text_protocols=(), check="randomisation",
                          about="model-parameter randomisation: Spearman rho of each map on the "
                                "trained model and on copies with the top 1, L//2, L blocks "
                                "re-initialised; each pair's 'other pair' row uses the next pair "
                                "of the permutation"),
    # the cue world's ground truth of use (nibcore.faithfulness) for every image-side method, on
    # each of its two models (--model cue, --model cue-control); RISE (6000 masks) on fewer pairs
    "use": Spec("cues", 1000, (Run(_NO_RISE + ("gradeclip", "legrad"), ("image",)),),
                text_protocols=(),
                about="the cue world's ground truth of use: every image-side method but RISE, "
                      "on agreeing and conflicting cues"),
    "use-rise": Spec("cues", 100, (Run(("rise",), ("image",), warmup=False),),
                     text_protocols=(),
                     about="the cue world's ground truth of use: RISE (6000 masks) on fewer "
                           "pairs"),
    # every block of the bundled model's towers (6 image, 4 text); the chapter maps the paper's
    # layers onto them by relative depth
    "ablation-layers": Spec("scenes", 300, tuple(
        [Run(("nib",), ("image",), params={"nib": {"layer": b}}) for b in range(6)]
        + [Run(("nib",), ("text",), params={"nib": {"layer": b}}) for b in range(4)]),
        text_protocols=("paper",), about="Tables 4/7: NIB's layer, every block of each tower"),
}


#: Environment variable naming another store folder (a regenerated or a tampered copy).
STORE_ENV = "NIB_STORE"


def store_dir() -> Path:
    """The store's folder: ``$NIB_STORE`` when set; else ``data/results/`` of the repository
    (clone, editable install), or ``results/`` of the installed package ``nibcore._bundled``
    (``pip install git+...``, whose wheel carries the store). Nothing is created here, so
    reading never writes into an installed package; :func:`generate` creates the folder where
    it writes."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV])
    return bundled_file("mini-clip.json").parent / "results"


def store_file(name: str, model: str = "mini", root: str | Path | None = None) -> Path:
    """The path of a store file: ``<root>/<model>-<name>.jsonl``."""
    if name not in SPECS:
        raise ValueError(f"unknown store file {name!r}; known: {sorted(SPECS)}")
    return Path(root or store_dir()) / f"{model}-{name}.jsonl"


def meta_file(path: str | Path) -> Path:
    """The provenance sidecar of a store file: ``<file>.meta.json``."""
    return Path(str(path) + ".meta.json")


# --- provenance ------------------------------------------------------------------------------

def weights_sha256(model: ClipModel) -> str:
    """sha256 over the model's state dict (names and float32 values, sorted by name)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.clip.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def model_hashes(model: ClipModel) -> dict[str, str | None]:
    """``file_sha256`` (the bundled file, for ``mini``; else None) and ``weights_sha256``."""
    file_hash = file_digest(bundled_file("mini-clip.safetensors")) if model.name == "mini" \
        else None
    return {"file_sha256": file_hash, "weights_sha256": weights_sha256(model)}


def resolved_params(method: str, kw: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every parameter of ``method`` as the code resolves ``kw`` now (defaults filled in)."""
    return json.loads(json.dumps(dict(METHODS[method](**(kw or {})).params), default=str,
                                 sort_keys=True))


def spec_params(spec: Spec) -> dict[str, dict[str, Any]]:
    """``"<method> <kwargs json>"`` -> the resolved parameters, for every run of ``spec``."""
    out = {}
    for run in spec.runs:
        for m in run.methods:
            kw = run.params.get(m, {})
            out[f"{m} {json.dumps(kw, sort_keys=True, default=str)}"] = resolved_params(m, kw)
    return out


def _git(*args: str) -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        return subprocess.run(["git", "--no-optional-locks", *args], cwd=root,
                              capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _command() -> str:
    argv = list(sys.argv)
    run = Path(argv[0]) if argv else Path()
    if run.name == "__main__.py":  # python -m nibcore.store / python -m nibcore
        argv = ["python", "-m", "nibcore.store" if run.parent.name == "store" else "nibcore",
                *argv[1:]]
    elif run.name == "nib":  # the installed command line
        argv = ["nib", *argv[1:]]
    else:
        argv = ["python", *argv]
    env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " \
        if "OMP_NUM_THREADS" in os.environ else ""
    return env + " ".join(argv)


def provenance(model: ClipModel, spec: Spec) -> dict[str, Any]:
    """The provenance of rows computed now for ``spec`` (everything but the timings)."""
    from .. import __version__

    dirty = _git("status", "--porcelain", "--", "nibcore")
    return {
        "command": _command(),
        "nibcore_version": __version__,
        "metrics_version": METRICS_VERSION,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty_nibcore": bool(dirty) if dirty is not None else None,
        "model": model.name, **model_hashes(model),
        "check": spec.check, "dataset": spec.dataset, "n": spec.n, "seed": spec.seed,
        "text_protocols": list(spec.text_protocols),
        "curve_protocols": list(spec.curve_protocols), "about": spec.about,
        "params": spec_params(spec),
        "torch": torch.__version__, "python": platform.python_version(),
        "hardware": hardware(model.device), "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def metrics_version(meta: dict[str, Any]) -> int:
    """The version of the metric definitions a store file was generated with, from its sidecar
    ``meta``: its ``metrics_version``, or 1 when the sidecar predates the field (those files
    were generated with version 1).

    Args:
        meta: the sidecar's contents (:func:`read_meta`).
    """
    return int(meta.get("metrics_version", 1))


def stale_metrics_version(meta: dict[str, Any]) -> int | None:
    """The metric definitions' version a store file was generated with when it is not the
    code's :data:`~nibcore.metrics.METRICS_VERSION` and the file holds metrics; None otherwise.
    A randomisation file (``check == "randomisation"``) holds Spearman correlations and top-k
    overlaps of maps, none of :mod:`nibcore.metrics`' definitions, so their version does not
    date it (the audit re-derives its rows instead).

    Args:
        meta: the sidecar's contents (:func:`read_meta`).
    """
    if meta.get("check", "evaluate") != "evaluate":
        return None
    stored = metrics_version(meta)
    return None if stored == METRICS_VERSION else stored


def read_meta(path: str | Path) -> dict[str, Any]:
    meta = meta_file(path)
    if not meta.is_file():
        raise FileNotFoundError(f"{path}: provenance sidecar {meta.name} is missing")
    return json.loads(meta.read_text())


# --- rows ------------------------------------------------------------------------------------

def round_sig(x: Any, digits: int = DIGITS) -> Any:
    """Floats to ``digits`` significant digits (ints, strings, None, NaN unchanged)."""
    if isinstance(x, float) and math.isfinite(x) and x != 0.0:
        return float(f"{x:.{digits}g}")
    return x


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a store file (one JSON object per line), in file order, read by
    :func:`nibcore.resultfile.read`: a last line cut by an interrupted write is ignored (with a
    :class:`~nibcore.resultfile.CutLineWarning`); any other malformed line raises
    :class:`~nibcore.resultfile.ResultFileError` naming the file and line."""
    return resultfile.read(path)


#: What identifies a row of a randomisation file (:func:`nibcore.evaluation.KEY` for the others).
RANDOMISATION_KEY = ("id", "method", "side", "params", "kind", "top")


def compact(path: str | Path, key: Sequence[str] | None = None) -> int:
    """Rewrite a store file with floats rounded to :data:`DIGITS` significant digits and one copy
    of each row (the last, by ``key``: default :data:`nibcore.evaluation.KEY`), in first-seen
    order, atomically (:func:`nibcore.resultfile.compact`: a cut last line is set aside into
    ``<file>.partial`` first); returns the number of rows."""
    from ..evaluation import KEY

    def rounded(row: dict[str, Any]) -> dict[str, Any]:
        # the hardware is in the sidecar (and timings are not audited)
        return {k: round_sig(v) for k, v in row.items() if k != "hardware"}

    return resultfile.compact(path, tuple(key or KEY), rounded)


def load(name_or_path: str | Path, model: str = "mini") -> "pd.DataFrame":  # noqa: F821
    """The rows of a store file as a frame (``name`` from :data:`SPECS`, or a path)."""
    import pandas as pd

    path = Path(name_or_path)
    if not path.suffix == ".jsonl":
        path = store_file(str(name_or_path), model)
    if not path.is_file():
        raise FileNotFoundError(f"store file {path} not found: generate it with "
                                f"`python -m nibcore.store generate {path.stem.split('-', 1)[-1]}`")
    flag_audit_failures(path)
    return pd.DataFrame(read_rows(path))


#: Environment variable naming the JSON report of the build's audit (``python -m nibcore.store
#: audit --report``); set by ``scripts/build_book.py`` for the chapters it executes.
AUDIT_REPORT_ENV = "NIB_AUDIT_REPORT"


def audit_failures(path: str | Path) -> list[str]:
    """The audit's mismatches of one store file in this build (empty when the build's audit
    passed, or when no audit report is set: see :data:`AUDIT_REPORT_ENV`)."""
    report = os.environ.get(AUDIT_REPORT_ENV)
    if not report or not Path(report).is_file():
        return []
    found = json.loads(Path(report).read_text())
    return [m["text"] for m in found.get("mismatches", []) if m["file"] == Path(path).name]


def flag_audit_failures(path: str | Path) -> None:
    """Show, where a table reads ``path``, every stored value this build's audit could not
    reproduce: the table below rests on them. In a notebook a wrapped Markdown block (the page
    shows it whole), elsewhere printed."""
    failures = audit_failures(path)
    if not failures:
        return
    head = (f"AUDIT WARNING: the results below come from {Path(path).name}, and this build's "
            f"audit could not reproduce {len(failures)} of its stored values within the "
            f"measured tolerances; treat them as unverified:")
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(Markdown(f"**{head}**\n\n" + "\n".join(f"- {f}" for f in failures)))
    else:
        print(head + "\n" + "\n".join(f"  - {f}" for f in failures))


def load_many(names: Sequence[str], model: str = "mini") -> "pd.DataFrame":  # noqa: F821
    """The rows of several store files in one frame (e.g. Table 2's three files); a file that
    is missing is an error naming the command that makes it."""
    import pandas as pd

    return pd.concat([load(n, model) for n in names], ignore_index=True)


def describe(names: Sequence[str], model: str = "mini") -> "pd.DataFrame":  # noqa: F821
    """One row per store file: rows, pairs, methods × sides, wall time, git commit, hardware,
    threads, date and the command — what a chapter prints under its tables."""
    import pandas as pd

    out = []
    for name in names:
        path = store_file(name, model)
        meta = read_meta(path)
        rows = read_rows(path)
        out.append(dict(file=path.name, rows=len(rows),
                        pairs=len({r["id"] for r in rows}),
                        wall_minutes=round(meta["wall_seconds"] / 60, 1),
                        commit=(meta.get("git_commit") or "?")[:10],
                        hardware=meta["hardware"], threads=meta["threads"],
                        finished=meta.get("finished"), command=meta["command"]))
    return pd.DataFrame(out).set_index("file")


def readme_table(models: Sequence[str] | None = None, root: str | Path | None = None) -> str:
    """The README's table of the store, from the sidecars: one row per file present (and each
    model's timings), with what it holds, its rows and pairs, the wall time of the sessions that
    wrote it and the hardware. ``tests/test_store.py`` keeps the README's copy current.

    Args:
        models: the store's model names, in order (default: the bundled models).
        root: the store's folder (default: :func:`store_dir`).
    """
    lines = ["| file | what | rows | pairs | wall time (one process) | hardware |",
             "|---|---|---|---|---|---|"]
    for model in (BUNDLED if models is None else models):
        for name in sorted(SPECS):
            path = store_file(name, model, root)
            if not meta_file(path).is_file():
                continue
            meta, rows = read_meta(path), read_rows(path)
            lines.append(f"| `{path.name}` | {SPECS[name].about} | {len(rows)} | "
                         f"{len({r['id'] for r in rows})} | {meta['wall_seconds'] / 60:.0f} min | "
                         f"{meta['hardware'].split('; ', 1)[-1].split(';')[0]}, "
                         f"{meta['threads']} thread(s) |")
        timing = timing_file(model, root)
        if timing.is_file():
            meta = json.loads(timing.read_text())
            rows = meta["rows"]
            lines.append(f"| `{timing.name}` | FPS: every method × side, warm-up + median of "
                         f"{rows[0]['repeats']} on {rows[0]['pairs']} pairs | {len(rows)} | "
                         f"{rows[0]['pairs']} | {meta['wall_seconds'] / 60:.0f} min | "
                         f"{meta['hardware'].split('; ', 1)[-1].split(';')[0]}, "
                         f"{meta['threads']} thread(s) |")
    return "\n".join(lines)


# --- generation ------------------------------------------------------------------------------

def generate(name: str, model: ClipModel | str = "mini", n: int | None = None,
             root: str | Path | None = None, progress: bool = True) -> Path:
    """Compute (or continue) the store file ``name`` and update its sidecar; returns its path.

    Rows are appended by :func:`nibcore.evaluate` as they are computed (one pair per call), so an
    interrupted run resumes where it stopped (a last line cut by the interruption is set aside
    into ``<file>.partial`` and its row computed again); the sidecar accumulates the wall time of
    every session. ``n`` overrides the spec's pair count (for a smaller file)."""
    from ..evaluation import evaluate
    from ..models import load_model

    spec = SPECS[name] if name in SPECS else None
    if spec is None:
        raise ValueError(f"unknown store file {name!r}; known: {sorted(SPECS)}")
    if n is not None:
        spec = dataclasses.replace(spec, n=int(n))
    if isinstance(model, str):
        model = load_model(model)
    path = store_file(name, model.name, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    prov = provenance(model, spec)
    meta = meta_file(path)
    old = json.loads(meta.read_text()) if meta.is_file() else None
    if old is not None:
        stale = stale_metrics_version(old)
        if stale is not None:
            raise RuntimeError(f"{path}: metric definitions changed since this file was "
                               f"generated (version {stale}, the code's "
                               f"{METRICS_VERSION}): delete the file and its sidecar to "
                               f"regenerate")
        for k in ("file_sha256", "weights_sha256", "params"):
            if old.get(k) != prov[k]:
                raise RuntimeError(f"{path}: stored {k} differs from the current code/model; "
                                   f"delete the file and its sidecar to regenerate from scratch")
    if path.is_file():  # a cut last line is set aside now; a malformed line stops the run here
        resultfile.repair(path)
        resultfile.read(path)
    sessions = list(old.get("sessions", [])) if old else []
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    import signal
    import threading

    def _stop(signum, frame):  # a terminated run still writes its sidecar (finally below)
        raise KeyboardInterrupt(f"signal {signum}")

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if main_thread else None
    try:
        if spec.check == "randomisation":
            _generate_randomisation(model, spec, path, progress)
        else:
            for run in spec.runs:
                evaluate(model, spec.dataset, list(run.methods), sides=list(run.sides),
                         n=spec.n, seed=spec.seed, params=run.params,
                         text_protocols=spec.text_protocols, out=path, progress=progress,
                         batch_size=1, warmup=run.warmup,
                         curve_protocols=spec.curve_protocols)
    finally:
        wall = time.perf_counter() - t0
        key = RANDOMISATION_KEY if spec.check == "randomisation" else None
        rows = compact(path, key) if path.is_file() else 0
        sessions.append({"started": started, "wall_seconds": round(wall, 1), "rows": rows,
                         "command": prov["command"], "git_commit": prov["git_commit"],
                         "hardware": prov["hardware"], "threads": prov["threads"]})
        prov.update(sessions=sessions, rows=rows,
                    wall_seconds=round(sum(s["wall_seconds"] for s in sessions), 1),
                    finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        meta.write_text(json.dumps(prov, indent=1, ensure_ascii=False) + "\n")
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return path


#: Pairs per appended chunk of a randomisation file (what an interruption can lose).
RANDOMISATION_CHUNK = 10


def randomisation_rows(model: ClipModel, run: Run, seed: int, pairs: Sequence, indices:
                       Sequence[int], partners: Sequence, partner_indices: Sequence[int],
                       noise: float | None = None) -> list[dict[str, Any]]:
    """The stored rows of the randomisation check for ``pairs`` (at dataset ``indices``), each
    compared with its partner for the "other pair" reference (``noise``: the audit's, see
    :func:`nibcore.sanity.randomisation_test`; not stored)."""
    from ..evaluation import params_json
    from ..sanity import randomisation_report

    rows, _ = randomisation_report(model, pairs, run.methods, seed=seed, params=run.params,
                                   partners=partners, noise=noise)
    index = {p.id: i for p, i in zip(pairs, indices)}
    index.update({p.id: i for p, i in zip(partners, partner_indices)})
    out = []
    for r in rows.to_dict("records"):
        partner = r["partner"] if isinstance(r["partner"], str) else None  # NaN in the frame
        r.update(index=index[r["id"]], params=params_json(run.params.get(r["method"], {})),
                 partner=partner, partner_index=index[partner] if partner else None)
        out.append(r)
    return out


def _generate_randomisation(model: ClipModel, spec: Spec, path: Path, progress: bool) -> None:
    """Append the randomisation rows of the pairs of ``spec`` not in ``path`` yet, a chunk of
    :data:`RANDOMISATION_CHUNK` pairs at a time. Pair ``k`` of the seeded permutation is compared
    with pair ``k + 1`` for the reference (so a row never depends on ``n``)."""
    from tqdm.auto import tqdm

    from ..datasets import load_dataset
    from ..evaluation import seeded_subset

    (run,) = spec.runs
    dataset = load_dataset(spec.dataset)
    order = seeded_subset(len(dataset), None, spec.seed)
    if spec.n >= len(order):
        raise ValueError(f"{spec.dataset} has {len(order)} pairs; the randomisation check "
                         f"needs n + 1 (each pair's partner), got n = {spec.n}")
    done = {r["id"] for r in resultfile.read(path, missing_ok=True)}
    todo = [k for k in range(spec.n) if dataset[order[k]].id not in done]
    bar = tqdm(total=spec.n, initial=spec.n - len(todo), disable=not progress,
               desc="randomisation", unit="pair")
    for start in range(0, len(todo), RANDOMISATION_CHUNK):
        chunk = todo[start:start + RANDOMISATION_CHUNK]
        rows = randomisation_rows(
            model, run, spec.seed, [dataset[order[k]] for k in chunk], [order[k] for k in chunk],
            [dataset[order[k + 1]] for k in chunk], [order[k + 1] for k in chunk])
        resultfile.append(path, rows)
        bar.update(len(chunk))
    bar.close()


def timing(model: ClipModel, methods: Sequence[str] = ALL_METHODS,
           sides: Sequence[str] = ("image", "text"), pairs: int = 2, repeats: int = 3,
           params: dict[str, dict[str, Any]] | None = None, seed: int = 0,
           dataset: str = "scenes") -> "pd.DataFrame":  # noqa: F821
    """Frames per second from a separate timed subset, not from a scoring run.

    For every method × side: one untimed warm-up call, then ``repeats`` timed calls of
    :func:`nibcore.explain` on each of ``pairs`` pairs (one pair per call; inputs prepared
    beforehand, no scoring); a pair's time is the median of its repeats, ``seconds`` the mean of
    those medians over pairs and ``fps = 1 / seconds``. Rows: ``method, side, pairs, repeats,
    seconds, fps, hardware, threads``."""
    import pandas as pd

    from ..attribution import explain
    from ..datasets import load_dataset
    from ..evaluation import seeded_subset, sync_device
    from ..inputs import prepare_images

    if repeats < 3:
        raise ValueError(f"repeats must be at least 3 (a median of 3 or more), got {repeats}")
    params = params or {}
    ds = load_dataset(dataset)
    chosen = [ds[i] for i in seeded_subset(len(ds), pairs, seed)]
    inputs = [(prepare_images(model, [p.image]), [p.text]) for p in chosen]
    hw, threads = hardware(model.device), torch.get_num_threads()
    rows = []
    for m in methods:
        for side in sides:
            kw = params.get(m, {})
            explain(model, inputs[0][0], inputs[0][1], method=m, side=side, **kw)  # warm-up
            medians = []
            for pixels, texts in inputs:
                times = []
                for _ in range(repeats):
                    sync_device(model)
                    t0 = time.perf_counter()
                    explain(model, pixels, texts, method=m, side=side, **kw)
                    sync_device(model)
                    times.append(time.perf_counter() - t0)
                medians.append(float(np.median(times)))
            sec = float(np.mean(medians))
            rows.append(dict(method=m, side=side, pairs=len(inputs), repeats=repeats,
                             seconds=sec, fps=1.0 / sec, hardware=hw, threads=threads))
    return pd.DataFrame(rows)


def timing_file(model: str = "mini", root: str | Path | None = None) -> Path:
    """``<root>/<model>-fps.json``: the stored timings (:func:`generate_timing`)."""
    return Path(root or store_dir()) / f"{model}-fps.json"


def generate_timing(model: ClipModel | str = "mini", root: str | Path | None = None,
                    pairs: int = 2, repeats: int = 3) -> Path:
    """Run :func:`timing` for every method and side and store it with its provenance."""
    from ..models import load_model

    if isinstance(model, str):
        model = load_model(model)
    t0 = time.perf_counter()
    frame = timing(model, pairs=pairs, repeats=repeats)
    path = timing_file(model.name, root)
    out = {"command": _command(), "git_commit": _git("rev-parse", "HEAD"),
           "model": model.name, **model_hashes(model), "torch": torch.__version__,
           "hardware": hardware(model.device), "threads": torch.get_num_threads(),
           "params": {m: resolved_params(m) for m in ALL_METHODS},
           "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "wall_seconds": round(time.perf_counter() - t0, 1),
           "rows": [{k: round_sig(v) for k, v in r.items()} for r in frame.to_dict("records")]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    return path


def load_timing(model: str = "mini", root: str | Path | None = None
                ) -> tuple["pd.DataFrame", dict[str, Any]]:  # noqa: F821
    """The stored timings as a frame (``method, side, ..., fps``) and their provenance."""
    import pandas as pd

    path = timing_file(model, root)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: make it with `python -m nibcore.store "
                                f"timing --model {model}`")
    meta = json.loads(path.read_text())
    return pd.DataFrame(meta.pop("rows")), meta
