"""Sweep the settings that matter for the evolution strategies of ``evograd compare``, FE-counted.

Each method starts from its defaults (``evograd.compare.settings_for``) and each listed setting is
varied alone (one-at-a-time around the defaults, not a full product, which would cost thousands of
runs); every variant trains on ``--seeds`` seeds to the same FE budget through the harness of
``evograd compare`` (same model, same initial weights, same minibatches per seed). The table
reports, per variant: FE to the task's target (median over the seeds that reached it, and how
many did), the FE at which each seed reached it, the mean test metric at 2M FE (the nearest
measurement at or before it) and at the end. Costs are forward-pass equivalents, never wall
time, so results do not depend on how busy the machine is.

Results are appended to ``OUT/sweep.jsonl`` one run per line; a rerun skips the runs already there
(so a long sweep can be stopped and resumed) and prints the table of everything in the file.

Usage::

    python benchmarks/sweep.py --task digits --methods pgpe openes --seeds 3 --out sweep-digits
    python benchmarks/sweep.py --task digits --methods pgpe --grid pgpe.size=100,200,400 --out sweep-digits
    python benchmarks/sweep.py --task digits --methods pgpe --combo pgpe:size=100,lr_decay=0.999 --out sweep-digits
    python benchmarks/sweep.py --out sweep-digits --table-only

Run it niced on one thread (the default here); FE counts make the figures reproducible exactly.
"""

from __future__ import annotations

import argparse
import ast
import json
import pathlib
import statistics
import sys
from typing import Any

import torch

from evograd import compare, harness, tasks

#: The settings that matter, per method: values tried one at a time around the defaults; under
#: ``"combined"``, whole sets of overrides tried together.
GRIDS: dict[str, dict[str, list[Any]]] = {
    "pgpe": {
        "size": [100, 400],
        "sigma": [0.01, 0.05],
        "lr": [0.05, 0.1],
        "lr_decay": [1.0, 0.999],
        "sigma_lr": [0.0, 0.2],
        "ranking": ["centered"],
        "per_pair": [False],
        "batch_size": [16, 64],
        "combined": [{"per_pair": False, "ranking": "centered"}],  # the shared minibatch of every other method
    },
    "openes": {"size": [100], "sigma_adapt": ["pgpe"], "batch_size": [64]},
    "rolling": {
        "batch_size": [32],
        "beta": [0.97],
        "sigma_adapt": ["pgpe"],
        "combined": [{"batch_size": 32, "size": 200, "beta": 0.97}],
    },
    "snes": {"size": [27, 100], "combined": [{"size": 27, "batch_size": 128}]},
    "sepcma": {"size": [100]},
    "evolution": {"combined": [{"batch_size": 32, "size": 200, "mu": 50}]},
}


def variants(method: str, grid: dict[str, list[Any]], task: str) -> list[dict[str, Any]]:
    """The overrides to run: the defaults (``{}``), each setting's values one at a time, then the combinations."""
    defaults = compare.settings_for(method, task)
    runs: list[dict[str, Any]] = [{}]
    for key, values in grid.items():
        for value in values:
            overrides = dict(value) if key == "combined" else {key: value}
            if any(defaults.get(k) != v for k, v in overrides.items()) and overrides not in runs:
                runs.append(overrides)
    return runs


def parse_grid(items: list[str]) -> dict[str, dict[str, list[Any]]]:
    """``["pgpe.size=100,200"]`` → ``{"pgpe": {"size": [100, 200]}}`` (values as Python literals or bare words)."""
    grids: dict[str, dict[str, list[Any]]] = {}
    for item in items:
        name, _, raw = item.partition("=")
        method, _, key = name.partition(".")
        if not raw or not key:
            raise SystemExit(f"--grid {item!r} is not METHOD.KEY=V1,V2,... (e.g. pgpe.size=100,200)")
        values = []
        for word in raw.split(","):
            try:
                values.append(ast.literal_eval(word))
            except (ValueError, SyntaxError):
                values.append(word)
        grids.setdefault(method, {})[key] = values
    return grids


def key_of(task: str, method: str, settings: dict[str, Any], seed: int, budget: int) -> str:
    """The identity of one run in the results file: its full settings, so changed defaults never reuse old runs."""
    return json.dumps([task, method, sorted(settings.items()), seed, budget], default=str)


def load(path: pathlib.Path) -> dict[str, dict]:
    """The runs already in ``path``, by :func:`key_of`."""
    runs = {}
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            key = key_of(record["task"], record["method"], record["settings"], record["seed"], record["budget_fe"])
            runs[key] = record
    return runs


def label(method: str, settings: dict[str, Any], task: str) -> str:
    """The settings that differ from the method's current defaults, or ``(defaults)``."""
    defaults = compare.settings_for(method, task)
    changed = [f"{key}={value}" for key, value in settings.items() if defaults.get(key, value) != value]
    return ", ".join(changed) or "(defaults)"


def reaching(curve: list, task: tasks.Task) -> int | None:
    """The FE of the first measurement at or beyond the task's target, or None."""
    for spent, _, value in curve:
        if (value >= task.target) if task.higher_is_better else (value <= task.target):
            return spent
    return None


def at_fe(curve: list, fe: float) -> float:
    """The metric at the last measurement at or before ``fe`` FE."""
    return [value for spent, _, value in curve if spent <= fe][-1]


def cost(fe: float | None) -> str:
    """FE or env steps in M from a million on, else in k; ``—`` for never."""
    if fe is None:
        return "—"
    return f"{fe / 1e6:.2f}M" if fe >= 1e6 else f"{fe / 1e3:.1f}k"


def summary(records: list[dict], task: tasks.Task) -> list[dict[str, Any]]:
    """One table row per (method, settings): FE to target, per-seed FE, metric at 2M and at the end."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["method"], json.dumps(record["settings"], sort_keys=True)), []).append(record)
    rows = []
    for (method, settings), runs in groups.items():
        runs.sort(key=lambda r: r["seed"])
        reached = [r["reached"] for r in runs]
        hits = [fe for fe in reached if fe is not None]
        rows.append(
            {
                "method": method,
                "setting": label(method, json.loads(settings), task.name),
                "seeds": len(runs),
                f"FE to {task.target:g}": (
                    f"{cost(statistics.median(hits))} ({len(hits)}/{len(runs)})" if hits else f"— (0/{len(runs)})"
                ),
                "per seed": " ".join(cost(fe) for fe in reached),
                "at 2M": statistics.fmean(r["at_2m"] for r in runs),
                "final": statistics.fmean(r["final"] for r in runs),
                "min final": min(r["final"] for r in runs),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--methods", nargs="+", default=list(GRIDS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-fe", type=float, default=5e6)
    parser.add_argument("--points", type=int, default=50, help="measurements: this many even + geometric points")
    parser.add_argument("--grid", action="append", default=[], help="METHOD.KEY=V1,V2 replaces the built-in grid")
    parser.add_argument(
        "--combo", action="append", default=[], help="METHOD:KEY=V,KEY=V runs these overrides together (repeatable)"
    )
    parser.add_argument("--only-defaults", action="store_true", help="run each method at its defaults only")
    parser.add_argument("--out", required=True, help="directory of sweep.jsonl")
    parser.add_argument("--table-only", action="store_true", help="print the table of the runs in --out, run none")
    args = parser.parse_args(argv)

    harness.torch_threads(1)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sweep.jsonl"
    task = tasks.get(args.task)
    budget = compare.Budget(fe=int(args.budget_fe), points=args.points)
    done = load(path)
    if not args.table_only:
        custom = parse_grid(args.grid)
        for item in args.combo:
            method, _, rest = item.partition(":")
            combo = {
                key: values[0]
                for key, values in parse_grid([f"{method}.{kv}" for kv in rest.split(",")])[method].items()
            }
            custom.setdefault(method, {}).setdefault("combined", []).append(combo)
        for method in args.methods:
            grid = {} if args.only_defaults else custom.get(method, GRIDS.get(method, {}))
            for overrides in variants(method, grid, task.name):
                settings = compare.settings_for(method, task.name, overrides)
                for seed in range(args.seeds):
                    key = key_of(task.name, method, settings, seed, budget.fe)
                    if key in done:
                        continue
                    result = compare.run_method(task, method, seed, budget, overrides=overrides)
                    curve = result.curve
                    record = {
                        "key": key,
                        "task": task.name,
                        "method": method,
                        "overrides": overrides,
                        "seed": seed,
                        "budget_fe": budget.fe,
                        "settings": result.settings,
                        "reached": reaching(curve, task),
                        "at_2m": at_fe(curve, 2e6),
                        "final": curve[-1][2],
                        "fe": result.fe,
                        "curve": [(fe, value) for fe, _, value in curve],
                        "torch": torch.__version__,
                    }
                    with open(path, "a") as handle:
                        handle.write(json.dumps(record, default=str) + "\n")
                    done[key] = record
                    print(
                        f"{method} {overrides or '(defaults)'} seed {seed}: reached {record['reached']} "
                        f"final {record['final']:.4f}",
                        flush=True,
                    )
    records = [r for r in done.values() if r["task"] == task.name and r["budget_fe"] == budget.fe]
    if args.methods and not args.table_only:
        records = [r for r in records if r["method"] in args.methods]
    if records:
        print(harness.format_table(summary(records, task)))
    else:
        print("no runs yet", file=sys.stderr)


if __name__ == "__main__":
    main()
