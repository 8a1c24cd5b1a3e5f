"""The comparison harness behind ``evograd compare``: methods × seeds on one task, one budget.

Fairness is the point. Every method trains the same model (same architecture, same initial weights
for the same seed) on the same data, and stops at the same budget, counted in forward-pass
equivalents (FE, docs/design.rst contract 8: one sample through the network forward is 1 FE, a backward
pass 2 FE, one environment step 1 FE) or in wall-clock seconds. The test metric is measured at
evenly spaced points of the budget; measuring is not charged to the method.

Methods are small functions ``run(task, settings, recorder)`` that train until the recorder says
the budget is spent. Backprop methods cannot train on episodic tasks (no gradient through an
environment): they are skipped there with a note, never faked.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from evograd import feedback, flat
from evograd.evaluate import SerialEvaluator, VmapEvaluator
from evograd.noise import Mutation
from evograd.strategies import OpenES, RollingImprovement, ScaleFreeEvolution
from evograd.tasks import Task

__all__ = [
    "Budget",
    "Recorder",
    "RunResult",
    "METHODS",
    "DEFAULT_METHODS",
    "settings_for",
    "run_method",
    "compare",
    "summarize",
    "format_table",
]


# ----------------------------------------------------------------------------------------------
# budget and measurement


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much every method may spend: forward-pass equivalents, or wall seconds (exactly one)."""

    fe: int | None = None
    seconds: float | None = None
    points: int = 25

    def __post_init__(self) -> None:
        if (self.fe is None) == (self.seconds is None):
            raise ValueError("give exactly one budget: fe or seconds")
        if self.fe is not None and (not isinstance(self.fe, int) or self.fe <= 0):
            raise ValueError(f"budget fe={self.fe!r} is out of range; allowed integers > 0")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"budget seconds={self.seconds!r} is out of range; allowed (0, inf)")
        if not isinstance(self.points, int) or self.points < 1:
            raise ValueError(f"points={self.points!r} is out of range; allowed integers >= 1")


class Recorder:
    """Counts what a run spends, measures the metric at evenly spaced budget points, says when to stop."""

    def __init__(
        self, task: Task, budget: Budget, model: nn.Module, progress: Callable[[float, str], None] | None = None
    ):
        self.task, self.budget, self.model, self.progress = task, budget, model, progress
        self.fe = 0
        self.curve: list[tuple[int, float, float]] = []  # (fe, seconds, metric)
        self._start = time.perf_counter()
        self._measuring = 0.0  # seconds spent measuring, not charged to the method
        n = budget.points
        self._points = sorted(
            {round(k / n, 9) for k in range(1, n + 1)} | {round(1e-3 ** (1 - k / n), 9) for k in range(n)}
        )
        self.record()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._start - self._measuring

    def fraction(self) -> float:
        """How much of the budget is spent, in [0, 1]."""
        spent = self.fe / self.budget.fe if self.budget.fe is not None else self.seconds / self.budget.seconds
        return min(spent, 1.0)

    @property
    def done(self) -> bool:
        return self.fraction() >= 1.0

    def spend(self, fe: int) -> None:
        """Charge ``fe`` forward-pass equivalents, and measure the metric when a budget point is passed.

        Budget points are ``points`` evenly spaced fractions of the budget together with ``points``
        geometrically spaced ones from 1/1000 of it: backprop and evolution differ in cost by orders
        of magnitude, and both curves must show their rise with the same resolution.
        """
        self.fe += int(fe)
        passed = len(self.curve) - 1  # the first measurement is at zero cost
        if self.done or (passed < len(self._points) and self.fraction() >= self._points[passed]):
            self.record()

    def record(self) -> None:
        start = time.perf_counter()
        value = self.task.metric(self.model)
        self.curve.append((self.fe, self.seconds, value))
        self._measuring += time.perf_counter() - start
        if self.progress is not None:
            self.progress(self.fraction(), f"{self.task.metric_name} {value:.4g}")


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One method on one seed: its curve and what it cost."""

    method: str
    seed: int
    settings: dict[str, Any]
    curve: list[tuple[int, float, float]]
    fe: int
    seconds: float
    note: str = ""


# ----------------------------------------------------------------------------------------------
# methods


def _minibatches(task: Task, batch_size: int, seed: int, device: torch.device):
    """An endless seeded stream of training minibatches (sampled with replacement)."""
    split = task.split
    gen = torch.Generator().manual_seed(10_007 + seed)
    x, y = split.train_x.to(device), split.train_y.to(device)

    def draw():
        index = torch.randint(0, len(x), (batch_size,), generator=gen).to(device)
        return x[index], y[index]

    return draw


def _backprop(optimizer_cls, rule: str | None = None):
    """A plain training loop with a torch optimizer; ``rule`` swaps in a backprop-free feedback rule."""

    def run(task: Task, s: dict, rec: Recorder) -> None:
        model = rec.model if rule is None else feedback.convert(rec.model, mode=rule, seed=s["seed"])
        extra = {"momentum": s["momentum"]} if "momentum" in s else {}
        optimizer = optimizer_cls(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"], **extra)
        draw = _minibatches(task, s["batch_size"], s["seed"], s["device"])
        while not rec.done:
            x, y = draw()
            optimizer.zero_grad(set_to_none=True)
            task.loss_fn(model(x), y).backward()
            optimizer.step()
            rec.spend(3 * len(x))  # forward 1 FE + backward 2 FE per sample

    return run


def _mutation(s: dict) -> Mutation:
    return Mutation(
        kind=s["kind"],
        sigma=s["sigma"],
        alpha=s.get("alpha", 1.5),
        clip=s.get("clip"),
        antithetic=s.get("antithetic", False),
    )


def _evolve(make_strategy: Callable[[dict], Any]):
    """An ask/tell loop: minibatch fitness on supervised tasks, episodes on episodic ones."""

    def run(task: Task, s: dict, rec: Recorder) -> None:
        strategy = make_strategy(s)
        model = rec.model
        steps = [0]
        if task.episodic:

            def fitness(module: nn.Module) -> float:
                value, n = task.episode_fitness(module)
                steps[0] += n
                return value

            evaluator = SerialEvaluator(model, fitness=fitness)
        else:
            evaluator = VmapEvaluator(model, task.loss_fn, _minibatches(task, s["batch_size"], s["seed"], s["device"]))
        state = strategy.init(flat.flatten(model), seed=s["seed"])
        while not rec.done:
            before = evaluator.forward_passes if not task.episodic else steps[0]
            seeds = strategy.ask(state)
            state, _ = strategy.tell(state, seeds, evaluator(state.center, seeds, state.mutation))
            flat.assign(model, state.center)
            rec.spend((evaluator.forward_passes if not task.episodic else steps[0]) - before)

    return run


def _hybrid(task: Task, s: dict, rec: Recorder) -> None:
    """HybridOptimizer: ``bp_weight`` of the unit backprop gradient plus the rest of the unit evolution estimate."""
    from evograd import directions as D
    from evograd.optim import HybridOptimizer

    model = rec.model
    strategy = RollingImprovement(size=s["size"], mutation=_mutation(s), beta=s["beta"])
    direction = D.mix(
        bp=(s["bp_weight"], D.chain(D.backprop(), D.normalize())),
        evo=(1.0 - s["bp_weight"], D.chain(D.improvement(strategy, seed=s["seed"]), D.normalize())),
    )
    evaluator = VmapEvaluator(model, task.loss_fn)
    optimizer = HybridOptimizer(
        model.parameters(),
        direction,
        base=torch.optim.SGD,
        evaluator=evaluator,
        lr=s["lr"],
        weight_decay=s["weight_decay"],
    )
    draw = _minibatches(task, s["batch_size"], s["seed"], s["device"])
    while not rec.done:
        x, y = draw()

        def closure():
            optimizer.zero_grad()
            loss = task.loss_fn(model(x), y)
            loss.backward()
            return loss

        before = optimizer.fe
        optimizer.step(closure, batch=(x, y))
        rec.spend(optimizer.fe - before)


METHODS: dict[str, tuple[str, Callable]] = {
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
                size=s["size"], mutation=_mutation(s), lr=s["lr"], lr_decay=s["lr_decay"], beta=s["beta"]
            )
        ),
    ),
    "openes": ("evolution", _evolve(lambda s: OpenES(size=s["size"], mutation=_mutation(s), lr=s["lr"]))),
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
        "batch_size": 128,
    },
    "openes": {"size": 64, "kind": "gaussian", "sigma": 0.02, "antithetic": True, "lr": 0.01, "batch_size": 128},
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
    "cartpole": {
        "evolution": {"sigma": 0.5, "clip": None, "selection": "plus", "mu": 1, "size": 16},
        "rolling": {"sigma": 0.1, "clip": 3.0, "lr": 0.3, "lr_decay": 1.0, "size": 16},
        "openes": {"sigma": 0.1, "lr": 0.05, "size": 16},
    },
    "pendulum": {
        "evolution": {"sigma": 0.5, "clip": None, "selection": "plus", "mu": 1, "size": 16},
        "rolling": {"sigma": 0.1, "lr": 0.3, "lr_decay": 1.0, "size": 16},
        "openes": {"sigma": 0.1, "lr": 0.05, "size": 16},
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
    family, run = METHODS[method]
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
    recorder = Recorder(task, budget, model, progress)
    run(task, {**settings, "seed": seed, "device": torch.device(device)}, recorder)
    return RunResult(method, seed, settings, recorder.curve, recorder.fe, recorder.seconds)


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


def format_table(task: Task, rows: list[dict[str, Any]]) -> str:
    """The summary as a fixed-width text table."""
    target = f"FE to {task.target:g}"
    header = f"{'method':<10} {'final ' + task.metric_name:>24} {'best':>17} {target:>14} {'FE':>8} {'wall s':>8}"
    lines = [header, "-" * len(header)]
    for row in rows:
        if row.get("note"):
            lines.append(f"{row['method']:<10} {row['note']}")
            continue
        reached = f"{_fe(row['fe_to_target'])} ({row['reached']}/{row['seeds']})"
        lines.append(
            f"{row['method']:<10} {row['final_mean']:>15.4g} ± {row['final_std']:<6.2g} "
            f"{row['best_mean']:>8.4g} ± {row['best_std']:<6.2g} {reached:>14} {_fe(row['fe']):>8} "
            f"{row['seconds']:>8.1f}"
        )
    return "\n".join(lines)


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
    (out / "table.txt").write_text(format_table(task, rows) + "\n")
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
