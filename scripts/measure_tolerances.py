"""Measure how far the results store's audit sample moves across numeric paths, and write the
audit's tolerances (``data/results/tolerances.json``) and their table.

Every path one machine can reach is a separate process with other environment settings: the
ATen kernels' instruction set (``ATEN_CPU_CAPABILITY``), MKL's (``MKL_ENABLE_INSTRUCTIONS``,
``MKL_CBWR``), oneDNN's (``ONEDNN_MAX_CPU_ISA``) and the thread count. Each process recomputes the
audit sample of every store file (``nibcore.audit.recompute``, what the audit runs) and dumps the
unrounded values and the maps. Then, per metric column, the **spread** is the largest difference
between two paths on one row, relative to the value (to 1 for correlations and margins); the
tolerance is ``spread × FACTOR``, at most ``nibcore.audit.MAX_RTOL``. The noise of a [0, 1] map
value (the margins of the yes/no outcomes are compared with it) is the largest difference of one
map between two paths, × FACTOR.

    python scripts/measure_tolerances.py [--configs native-2t,aten-default,...] [--pairs 2]

The table it prints (Markdown) is the README's "Tolerances" table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: Safety margin on every measured spread: paths this machine cannot reach (other CPUs, ARM
#: without MKL) are assumed to land within ten times the spread of those it can.
FACTOR = 10.0
#: The numeric paths: name → environment settings.
CONFIGS: dict[str, dict[str, str]] = {
    "native-2t": {"OMP_NUM_THREADS": "2"},
    "native-1t": {"OMP_NUM_THREADS": "1"},
    "aten-default": {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1"},
    "mkl-sse4_2": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "OMP_NUM_THREADS": "1"},
    "mkl-cbwr-compatible": {"MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1"},
    "onednn-sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1"},
    "minimal": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1"},
}
#: Yes/no columns: counted as flips, not as spread.
OUTCOMES = ("pointing", "text_gt", "text_gt_word", "degenerate", "degenerate_raw")


def worker(dump: Path, pairs: int, seed: int) -> None:
    """Recompute the audit sample of every store file in this process's numeric path."""
    import torch

    from nibcore.audit import recompute
    from nibcore.models import load_model
    from nibcore.store import read_meta, read_rows, store_dir

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    rows, maps = [], {}
    models = {}
    for path in sorted(Path(store_dir()).glob("*.jsonl")):
        meta = read_meta(path)
        if meta["model"] not in models:
            models[meta["model"]] = load_model(meta["model"])
        for rec in recompute(path, models[meta["model"]], meta, read_rows(path), pairs, seed):
            key = f"{path.name}:{rec.line}"
            new = {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool)
                       else v) for k, v in rec.new.items()}
            rows.append(dict(key=key, file=path.name, method=rec.stored.get("method"),
                             side=rec.stored.get("side"), new=new))
            if rec.att is not None:
                maps[key + ":scores"] = np.asarray(rec.att.scores, dtype=np.float64)
                maps[key + ":raw"] = np.asarray(rec.att.raw, dtype=np.float64)
    np.savez_compressed(dump.with_suffix(".npz"), **maps)
    dump.write_text(json.dumps(dict(capability=torch.backends.cpu.get_cpu_capability(),
                                    threads=torch.get_num_threads(), rows=rows,
                                    sample=dict(pairs=pairs, seed=seed))))


def run_configs(names: list[str], work: Path, pairs: int, seed: int, jobs: int
                ) -> dict[str, dict]:
    """Run a worker per numeric path (``jobs`` at a time), or reuse its dump in ``work`` when
    one with the same sample is there (an interrupted measurement resumes)."""
    def env_of(name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR",
                            "ONEDNN_MAX_CPU_ISA")}
        return {**env, **CONFIGS[name]}

    def done(name: str) -> bool:
        dump = work / f"{name}.json"
        if not (dump.is_file() and dump.with_suffix(".npz").is_file()):
            return False
        sample = json.loads(dump.read_text()).get("sample")
        return sample == dict(pairs=pairs, seed=seed)

    todo = [n for n in names if not done(n)]
    running: list[tuple[str, subprocess.Popen, float]] = []
    while todo or running:
        while todo and len(running) < jobs:
            name = todo.pop(0)
            cmd = [sys.executable, __file__, "--worker", str(work / f"{name}.json"), "--pairs",
                   str(pairs), "--seed", str(seed)]
            running.append((name, subprocess.Popen(cmd, env=env_of(name), cwd=ROOT),
                            time.perf_counter()))
        time.sleep(2)
        for item in list(running):
            name, proc, start = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                raise SystemExit(f"the worker of {name} failed (exit {proc.returncode})")
            print(f"{name:22s} {time.perf_counter() - start:6.0f} s", flush=True)
    out = {}
    for name in names:
        dump = work / f"{name}.json"
        data = json.loads(dump.read_text())
        data["maps"] = dict(np.load(dump.with_suffix(".npz")))
        out[name] = data
        print(f"{name:22s} ATen {data['capability']}, {data['threads']} thread(s), "
              f"{len(data['rows'])} rows", flush=True)
    return out


def spreads(results: dict[str, dict]) -> dict:
    """Per column: the largest difference between two paths on one row, relative to the
    column's scale (:func:`nibcore.audit.scale`); flips of the yes/no columns; the largest
    difference of a raw map relative to its magnitude; and that of a [0, 1] map among maps
    that min-max does not amplify (span at least a tenth of the raw magnitude)."""
    from nibcore.audit import scale
    from nibcore.store import UNAUDITED

    names = list(results)
    by_key = {n: {r["key"]: r for r in results[n]["rows"]} for n in names}
    keys = list(by_key[names[0]])
    spread: dict[str, float] = {}
    worst: dict[str, str] = {}
    flips: dict[str, int] = {}
    map_spread = raw_spread = 0.0
    for key in keys:
        rows = [by_key[n][key]["new"] for n in names]
        for col in rows[0]:
            values = [r.get(col) for r in rows]
            if col in UNAUDITED or not all(isinstance(v, float) for v in values):
                continue
            if col in OUTCOMES or "_conf_incr" in col:
                flips[col] = flips.get(col, 0) + int(len(set(values)) > 1)
                continue
            v = np.asarray(values)
            if not np.isfinite(v).all():
                continue
            sc = max(scale(col, float(x), float(x), r) for x, r in zip(v, rows))
            s = float(v.max() - v.min()) / sc if sc > 0 else 0.0
            if s > spread.get(col, -1.0):
                spread[col], worst[col] = s, key
        if f"{key}:scores" in results[names[0]]["maps"]:
            raw = np.stack([results[n]["maps"][f"{key}:raw"] for n in names])
            mag = float(np.abs(raw).max())
            if mag > 0:
                raw_spread = max(raw_spread, float((raw.max(0) - raw.min(0)).max()) / mag)
            side = by_key[names[0]][key]["side"]
            body = raw[0, 1:] if side == "image" else raw[0]  # the values min-max stretches
            if mag > 0 and float(body.max() - body.min()) >= 0.1 * mag:
                sc = np.stack([results[n]["maps"][f"{key}:scores"] for n in names])
                map_spread = max(map_spread, float((sc.max(0) - sc.min(0)).max()))
    return dict(spread=spread, worst=worst, flips=flips, map_spread=map_spread,
                raw_spread=raw_spread, rows=len(keys))


def tolerances(measured: dict, configs: list[str], factor: float) -> dict:
    from nibcore.audit import MAX_RTOL
    from nibcore.metrics import cpu_name

    rtol = {c: min(s * factor, MAX_RTOL) for c, s in sorted(measured["spread"].items())}
    over = sorted(c for c, s in measured["spread"].items() if s > MAX_RTOL)
    return dict(
        factor=factor, configs={n: CONFIGS[n] for n in configs},
        machine=f"{platform.machine()} {platform.processor() or ''}".strip(),
        cpu=cpu_name(), rows=measured["rows"], rtol=rtol,
        spread={c: s for c, s in sorted(measured["spread"].items())},
        worst_row=measured["worst"], over_max=over,
        outcome_flips=measured["flips"], map_spread=measured["map_spread"],
        map_atol=measured["map_spread"] * factor, raw_spread=measured["raw_spread"],
        raw_rtol=measured["raw_spread"] * factor)


#: How each kind of column is audited (the README's words).
HOW = {"img_conf_drop": "through s0 and s1", "energy": "through the map's noise",
       "energy_pos": "through the raw map's noise",
       "spearman": "through the near-tied neighbours of its two maps",
       "img_insertion": "relative to 100·s0; excused where a step boundary's gap is noise",
       "img_deletion": "relative to 100·s0; excused where a step boundary's gap is noise"}


def table(tol: dict) -> str:
    """The Markdown table of the README."""
    from nibcore.audit import MAX_RTOL

    lines = ["| column | spread | tolerance | audited |", "|---|---:|---:|---|"]
    for col, s in tol["spread"].items():
        how = HOW.get(col) or ("through s0 and s1" if "_conf_drop" in col else
                               "through its margin" if s > MAX_RTOL else "relative")
        lines.append(f"| `{col}` | {s:.2g} | {tol['rtol'][col]:.2g} | {how} |")
    for col, n in sorted(tol["outcome_flips"].items()):
        lines.append(f"| `{col}` (yes/no) | {n} flip(s) in {tol['rows']} rows | exact | "
                     f"a flip is excused only when its margin is within the noise |")
    lines.append(f"| raw map (relative to its largest value) | {tol['raw_spread']:.2g} | "
                 f"{tol['raw_rtol']:.2g} | a [0, 1] map's noise is this × magnitude / span |")
    lines.append(f"| [0, 1] map value (maps min-max does not amplify) | "
                 f"{tol['map_spread']:.2g} | {tol['map_atol']:.2g} | the randomisation "
                 f"check's rank margins |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--factor", type=float, default=FACTOR)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "results" / "tolerances.json")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep each path's dump here and reuse it on a re-run (default: a "
                             "temporary folder)")
    parser.add_argument("--jobs", type=int, default=1, help="workers at a time")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker(args.worker, args.pairs, args.seed)
        return 0
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or len(names) < 2:
        parser.error(f"need two or more of {list(CONFIGS)}; unknown: {unknown}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = run_configs(names, work, args.pairs, args.seed, args.jobs)
    tol = tolerances(spreads(results), names, args.factor)
    args.out.write_text(json.dumps(tol, indent=1) + "\n")
    print(f"\n{args.out} written ({tol['rows']} rows, {len(names)} numeric paths, "
          f"CPU {tol['cpu']})\n")
    print(table(tol))
    if tol["over_max"]:
        print(f"\nspread above {math.floor(2e-4 * 1e4) / 1e4:g}: {tol['over_max']} "
              f"(audited through their margins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
