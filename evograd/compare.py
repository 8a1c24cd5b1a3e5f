"""The comparison harness behind ``evograd compare``: methods × seeds on one task, one budget.

Fairness is the point. Every method trains the same model (same architecture, same initial weights
for the same seed) on the same data, and stops at the same budget, counted in forward-pass
equivalents (FE, docs/design.rst contract 8: one sample through the network forward is 1 FE, a backward
pass 2 FE, one environment step 1 FE) or in wall-clock seconds, and sees the same minibatches (the
stream of its seed, :class:`evograd.harness.Minibatches`). The test metric is measured at evenly
and geometrically spaced points of the budget; measuring is neither charged nor timed.

A method is a small function ``build(task, settings, model) -> step`` that sets up its optimizer
or strategy and returns one training step; :func:`evograd.harness.train` runs every method's steps
through the same loop, FE accounting and measurement. Adding a method is one entry of
:data:`METHODS` and its defaults. Backprop methods cannot train on episodic tasks (no gradient
through an environment): they are skipped there with a note, never faked.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from evograd import directions as D
from evograd import feedback, flat, harness
from evograd.evaluate import SerialEvaluator, VmapEvaluator
from evograd.harness import Budget
from evograd.noise import Mutation
from evograd.optim import HybridOptimizer
from evograd.strategies import PGPE, SNES, OpenES, RollingImprovement, ScaleFreeEvolution, SepCMAES
from evograd.tasks import Task

__all__ = [
    "Budget",
    "Method",
    "RunResult",
    "METHODS",
    "DEFAULT_METHODS",
    "settings_for",
    "run_method",
    "compare",
    "summarize",
    "table",
    "parse_overrides",
    "write_outputs",
]

Method = Callable[[Task, dict[str, Any], nn.Module], harness.Step]
"""``build(task, settings, model) -> step``: a method's optimizer or strategy on ``model``, as one step."""


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One method on one seed: its curve ``[(fe, seconds, metric), ...]`` and what it cost."""

    method: str
    seed: int
    settings: dict[str, Any]
    curve: list[harness.Point]
    fe: int
    seconds: float
    note: str = ""


# ----------------------------------------------------------------------------------------------
# methods: each builds one training step (harness.Step) of its model


def _batches(task: Task, s: dict) -> harness.Minibatches:
    """The run's minibatch stream: the same for every method given the same seed."""
    split = task.split.to(s["device"])
    return harness.Minibatches(split.train_x, split.train_y, s["batch_size"], s["seed"])


def _backprop(optimizer_cls: type[torch.optim.Optimizer], rule: str | None = None) -> Method:
    """A torch optimizer on minibatch gradients; ``rule`` swaps in a backprop-free feedback rule."""

    def build(task: Task, s: dict, model: nn.Module) -> harness.Step:
        model = model if rule is None else feedback.convert(model, mode=rule, seed=s["seed"])
        extra = {"momentum": s["momentum"]} if "momentum" in s else {}
        optimizer = optimizer_cls(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"], **extra)
        return harness.optimizer_step(optimizer, model, task.loss_fn, _batches(task, s))

    return build


def _mutation(s: dict) -> Mutation:
    return Mutation(
        kind=s["kind"],
        sigma=s["sigma"],
        alpha=s.get("alpha", 1.5),
        clip=s.get("clip"),
        antithetic=s.get("antithetic", False),
    )


def _evolve(make_strategy: Callable[[dict], Any]) -> Method:
    """One ask/tell generation per step: minibatch fitness on supervised tasks, episodes on episodic ones."""

    def build(task: Task, s: dict, model: nn.Module) -> harness.Step:
        strategy = make_strategy(s)
        if task.episodic:
            steps = [0]  # environment steps, 1 FE each

            def fitness(module: nn.Module) -> float:
                value, n = task.episode_fitness(module)
                steps[0] += n
                return value

            evaluator = SerialEvaluator(model, fitness=fitness)
            spent = lambda: steps[0]  # noqa: E731
        else:
            evaluator = VmapEvaluator(model, task.loss_fn, _batches(task, s))
            spent = lambda: evaluator.forward_passes  # noqa: E731
        state = strategy.init(flat.flatten(model), seed=s["seed"])

        def step() -> int:
            nonlocal state
            before = spent()
            seeds = strategy.ask(state)
            state, _ = strategy.tell(state, seeds, evaluator(state.center, seeds, state.mutation))
            flat.assign(model, state.center)
            return spent() - before

        return step

    return build


def _hybrid(task: Task, s: dict, model: nn.Module) -> harness.Step:
    """HybridOptimizer: ``bp_weight`` of the unit backprop gradient plus the rest of the unit evolution estimate."""
    strategy = RollingImprovement(size=s["size"], mutation=_mutation(s), beta=s["beta"])
    direction = D.mix(
        bp=(s["bp_weight"], harness.unit(D.backprop())),
        evo=(1.0 - s["bp_weight"], harness.evolution(strategy, s["seed"])),
    )
    optimizer = HybridOptimizer(
        model.parameters(),
        direction,
        base=torch.optim.SGD,
        evaluator=VmapEvaluator(model, task.loss_fn),
        lr=s["lr"],
        weight_decay=s["weight_decay"],
    )
    return harness.optimizer_step(optimizer, model, task.loss_fn, _batches(task, s))


METHODS: dict[str, tuple[str, Method]] = {
    "sgd": ("backprop", _backprop(torch.optim.SGD)),
    "adam": ("backprop", _backprop(torch.optim.Adam)),
    "fa": ("backprop", _backprop(torch.optim.Adam, rule="fa")),
    "dfa": ("backprop", _backprop(torch.optim.Adam, rule="dfa")),
    "evolution": (
        "evolution",
        _evolve(
            lambda s: ScaleFreeEvolution(size=s["size"], mutation=_mutation(s), selection=s["selection"], mu=s["mu"])
        ),
    ),
    "rolling": (
        "evolution",
        _evolve(
            lambda s: RollingImprovement(
                size=s["size"],
                mutation=_mutation(s),
                lr=s["lr"],
                lr_decay=s["lr_decay"],
                beta=s["beta"],
                weighting=s["weighting"],
                sigma_adapt=s["sigma_adapt"],
                sigma_lr=s["sigma_lr"],
            )
        ),
    ),
    "openes": (
        "evolution",
        _evolve(
            lambda s: OpenES(
                size=s["size"],
                mutation=_mutation(s),
                lr=s["lr"],
                lr_decay=s["lr_decay"],
                sigma_adapt=s["sigma_adapt"],
                sigma_lr=s["sigma_lr"],
            )
        ),
    ),
    "pgpe": (
        "evolution",
        _evolve(
            lambda s: PGPE(
                size=s["size"],
                mutation=_mutation(s),
                lr=s["lr"],
                lr_decay=s["lr_decay"],
                optimizer_kw={"max_speed": s["max_speed"], "momentum": s["momentum"]},
                ranking=s["ranking"],
                sigma_lr=s["sigma_lr"],
                sigma_max_change=s["sigma_max_change"],
            )
        ),
    ),
    "snes": (
        "evolution",
        _evolve(lambda s: SNES(size=s["size"], mutation=_mutation(s), lr=s["lr"], sigma_lr=s["sigma_lr"])),
    ),
    "sepcma": ("evolution", _evolve(lambda s: SepCMAES(size=s["size"], mutation=_mutation(s)))),
    "hybrid": ("backprop", _hybrid),
}
DEFAULT_METHODS = ("sgd", "adam", "hybrid", "rolling", "openes", "evolution", "fa", "dfa")

# Defaults tuned once on digits (see benchmarks/RESULTS.rst); other tasks override below.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3, "batch_size": 128},
    "adam": {"lr": 3e-3, "weight_decay": 1e-3, "batch_size": 128},
    "fa": {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 128},
    "dfa": {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 128},
    # (mu/mu, lambda): elitist (1+lambda) accepts minibatch noise as progress (2M FE: 0.67 vs 0.91)
    "evolution": {
        "size": 64,
        "kind": "cauchy",
        "sigma": 0.01,
        "clip": 3.0,
        "selection": "comma",
        "mu": 16,
        "batch_size": 128,
    },
    "rolling": {
        "size": 64,
        "kind": "cauchy",
        "sigma": 0.01,
        "clip": 3.0,
        "antithetic": True,
        "lr": 0.08,
        "lr_decay": 0.9995,
        "beta": 0.9,
        "weighting": "slope",
        "sigma_adapt": "none",
        "sigma_lr": 0.1,
        "batch_size": 128,
    },
    "openes": {
        "size": 200,
        "kind": "gaussian",
        "sigma": 0.02,
        "antithetic": True,
        "lr": 0.01,
        "lr_decay": 0.998,
        "sigma_adapt": "none",
        "sigma_lr": 0.1,
        "batch_size": 32,
    },
    "pgpe": {
        "size": 200,
        "kind": "gaussian",
        "sigma": 0.02,
        "antithetic": True,
        "lr": 0.075,
        "lr_decay": 0.998,
        "max_speed": None,
        "momentum": 0.9,
        "ranking": "centered",
        "sigma_lr": 0.1,
        "sigma_max_change": 0.2,
        "batch_size": 32,
    },
    "snes": {"size": 200, "kind": "gaussian", "sigma": 0.02, "lr": 1.0, "sigma_lr": None, "batch_size": 32},
    "sepcma": {"size": 200, "kind": "gaussian", "sigma": 0.02, "batch_size": 32},
    "hybrid": {
        "size": 64,
        "kind": "cauchy",
        "sigma": 0.01,
        "clip": 3.0,
        "antithetic": True,
        "beta": 0.9,
        "bp_weight": 0.5,
        "lr": 0.1,
        "weight_decay": 1e-2,
        "batch_size": 128,
    },
}
_TASK_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    # The adaptive methods' episodic defaults are provisional, from the issue-17 prototypes (PGPE:
    # population 10-20, sigma 0.1-0.3, ClipUp max speed 0.6) and the papers' population 4 + 3 ln d
    # with EvoTorch's radius 2.25 spread over the d coordinates for SNES and sep-CMA-ES; to be
    # swept with benchmarks/sweep.py once the RL evaluation (episode seeds, normalization) lands.
    "cartpole": {
        "evolution": {"sigma": 0.5, "clip": None, "selection": "plus", "mu": 1, "size": 16},
        "rolling": {"sigma": 0.1, "clip": 3.0, "lr": 0.3, "lr_decay": 1.0, "size": 16},
        "openes": {"sigma": 0.1, "lr": 0.05, "lr_decay": 1.0, "size": 16},
        "pgpe": {"size": 10, "sigma": 0.3, "lr": 0.3, "lr_decay": 1.0},
        "snes": {"size": 18, "sigma": 0.2},
        "sepcma": {"size": 18, "sigma": 0.2},
    },
    "pendulum": {
        "evolution": {"sigma": 0.5, "clip": None, "selection": "plus", "mu": 1, "size": 16},
        "rolling": {"sigma": 0.1, "lr": 0.3, "lr_decay": 1.0, "size": 16},
        "openes": {"sigma": 0.1, "lr": 0.05, "lr_decay": 1.0, "size": 16},
        "pgpe": {"size": 20, "sigma": 0.1, "lr": 0.3, "lr_decay": 1.0},
        "snes": {"size": 17, "sigma": 0.25},
        "sepcma": {"size": 17, "sigma": 0.25},
    },
    "teacher": {"sgd": {"lr": 0.01}},
}


def settings_for(method: str, task: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The method's hyperparameters on ``task``: defaults, then task defaults, then ``overrides``.

    Raises:
        ValueError: an unknown method, or an override key the method does not have.
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r} is unknown; allowed {', '.join(METHODS)}")
    settings = {**_DEFAULTS[method], **_TASK_DEFAULTS.get(task, {}).get(method, {})}
    for key, value in (overrides or {}).items():
        if key not in settings and key not in ("alpha", "clip", "antithetic"):
            raise ValueError(f"{method} has no setting {key!r}; it has {', '.join(sorted(settings))}")
        settings[key] = value
    return settings


def run_method(
    task: Task,
    method: str,
    seed: int,
    budget: Budget,
    *,
    overrides: dict[str, Any] | None = None,
    device: str = "cpu",
    progress: Callable[[float, str], None] | None = None,
) -> RunResult:
    """Train ``method`` on ``task`` from seed ``seed`` until ``budget`` is spent."""
    settings = settings_for(method, task.name, overrides)
    family, build = METHODS[method]
    if family == "backprop" and task.episodic:
        return RunResult(
            method,
            seed,
            settings,
            [],
            0,
            0.0,
            note=f"skipped: {method} needs a gradient, and {task.name} is an episodic task",
        )
    model = task.make_model(seed).to(device)
    step = build(task, {**settings, "seed": seed, "device": torch.device(device)}, model)
    recorder = harness.Recorder(lambda: task.metric(model), budget, progress=progress, label=task.metric_name)
    run = harness.train(step, recorder)
    return RunResult(method, seed, settings, run.curve, run.fe, run.seconds)


def compare(
    task: Task,
    methods: Sequence[str],
    seeds: Sequence[int],
    budget: Budget,
    *,
    overrides: dict[str, dict[str, Any]] | None = None,
    device: str = "cpu",
    progress_factory: Callable[[str], Callable[[float, str], None]] | None = None,
) -> list[RunResult]:
    """Every method on every seed, in that order."""
    for method in methods:
        settings_for(method, task.name, (overrides or {}).get(method))  # fail before any training
    results = []
    for method in methods:
        for seed in seeds:
            progress = progress_factory(f"{method} seed {seed}") if progress_factory else None
            results.append(
                run_method(
                    task,
                    method,
                    seed,
                    budget,
                    overrides=(overrides or {}).get(method),
                    device=device,
                    progress=progress,
                )
            )
    return results


# ----------------------------------------------------------------------------------------------
# summaries


def _first_reaching(curve, target: float, higher_is_better: bool) -> int | None:
    for fe, _, value in curve:
        if (value >= target) if higher_is_better else (value <= target):
            return fe
    return None


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(task: Task, results: list[RunResult]) -> list[dict[str, Any]]:
    """One row per method: final and best metric (mean, std over seeds), FE to target, FE, wall time."""
    rows = []
    for method in dict.fromkeys(r.method for r in results):
        runs = [r for r in results if r.method == method]
        if not runs[0].curve:
            rows.append({"method": method, "note": runs[0].note})
            continue
        pick = max if task.higher_is_better else min
        final = [r.curve[-1][2] for r in runs]
        best = [pick(v for _, _, v in r.curve) for r in runs]
        reached = [_first_reaching(r.curve, task.target, task.higher_is_better) for r in runs]
        hits = [fe for fe in reached if fe is not None]
        rows.append(
            {
                "method": method,
                "seeds": len(runs),
                "final_mean": _mean_std(final)[0],
                "final_std": _mean_std(final)[1],
                "best_mean": _mean_std(best)[0],
                "best_std": _mean_std(best)[1],
                "fe_to_target": statistics.median(hits) if hits else None,
                "reached": len(hits),
                "fe": statistics.fmean(r.fe for r in runs),
                "seconds": statistics.fmean(r.seconds for r in runs),
                "note": "",
            }
        )
    return rows


def _fe(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{value / 1e3:.0f}k"


def table(task: Task, rows: list[dict[str, Any]]) -> str:
    """The summary as a fixed-width text table (:func:`evograd.harness.format_table`), then one line
    per skipped method with its note."""

    def spread(mean: float, std: float) -> str:
        return f"{mean:.4g} ± {std:<6.2g}"

    shown = [
        {
            "method": row["method"],
            f"final {task.metric_name}": spread(row["final_mean"], row["final_std"]),
            "best": spread(row["best_mean"], row["best_std"]),
            f"FE to {task.target:g}": f"{_fe(row['fe_to_target'])} ({row['reached']}/{row['seeds']})",
            "FE": _fe(row["fe"]),
            "wall s": f"{row['seconds']:.1f}",
        }
        for row in rows
        if not row.get("note")
    ]
    notes = [f"{row['method']}: {row['note']}" for row in rows if row.get("note")]
    return "\n".join(([harness.format_table(shown)] if shown else []) + notes)


def parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["rolling.lr=0.1", "sgd.momentum=0"]`` → ``{"rolling": {"lr": 0.1}, "sgd": {"momentum": 0}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, _, raw = item.partition("=")
        method, _, key = name.partition(".")
        if not raw or not key:
            raise ValueError(f"--set {item!r} is not METHOD.KEY=VALUE (e.g. rolling.lr=0.1)")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare word such as a mutation kind
        out.setdefault(method, {})[key] = value
    return out


def write_outputs(out_dir, task: Task, budget: Budget, results: list[RunResult], rows: list[dict[str, Any]]) -> None:
    """``results.json`` (every number), ``summary.csv`` and ``table.txt`` (the printed table)."""
    import csv
    import pathlib

    out = pathlib.Path(out_dir)
    payload = {
        "task": task.name,
        "metric": task.metric_name,
        "higher_is_better": task.higher_is_better,
        "target": task.target,
        "budget": dataclasses.asdict(budget),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "summary": rows,
        "runs": [dataclasses.asdict(r) for r in results],
    }
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    (out / "table.txt").write_text(table(task, rows) + "\n")
    columns = [
        "method",
        "seeds",
        "final_mean",
        "final_std",
        "best_mean",
        "best_std",
        "fe_to_target",
        "reached",
        "fe",
        "seconds",
        "note",
    ]
    with open(out / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
