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
from evograd import feedback, flat, harness, schema
from evograd.evaluate import LowRankEvaluator, VmapEvaluator
from evograd.harness import Budget
from evograd.loggers import Logger
from evograd.noise import Mutation
from evograd.optim import HybridOptimizer
from evograd.progress import Board
from evograd.protocols import Evaluator
from evograd.runstore import RunStore
from evograd.strategies import OpenES, RollingImprovement, ScaleFreeEvolution
from evograd.tasks import EpisodeEvaluator, Task, is_episodic

__all__ = [
    "Budget",
    "Method",
    "RunResult",
    "METHODS",
    "DEFAULT_METHODS",
    "settings_schema",
    "settings_for",
    "check_method",
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

    @property
    def name(self) -> str:
        """The run's name in a :class:`~evograd.runstore.RunStore`: ``"adam-seed0"``."""
        return f"{self.method}-seed{self.seed}"

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> RunResult:
        """The result whose :func:`dataclasses.asdict` is ``payload`` (after JSON: points as tuples again)."""
        return cls(**{**payload, "curve": [tuple(point) for point in payload["curve"]]})


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


def _mutation(s: dict, model: nn.Module) -> Mutation:
    """The method's mutation, resolved for ``model`` (with a ``rank``, its matrices are the model's 2-d parameters)."""
    return Mutation(
        kind=s["kind"],
        sigma=s["sigma"],
        alpha=s.get("alpha", 1.5),
        clip=s.get("clip"),
        antithetic=s.get("antithetic", False),
        rank=s.get("rank"),
    ).resolve(model)


def _population_evaluator(
    task: Task, model: nn.Module, mutation: Mutation, batches: harness.Minibatches | None = None
) -> Evaluator:
    """Scores a population on minibatches: :class:`~evograd.LowRankEvaluator` for a low-rank mutation
    (linear layers never form member weights), :class:`~evograd.VmapEvaluator` otherwise."""
    evaluator = LowRankEvaluator if mutation.rank is not None else VmapEvaluator
    return evaluator(model, task.loss_fn, batches)


def _evolve(make_strategy: Callable[[dict, Mutation], Any]) -> Method:
    """One ask/tell generation per step: minibatch fitness on supervised tasks, episodes on episodic ones.

    On an episodic task the members' episodes run in lockstep (:class:`~evograd.tasks.rl.EpisodeEvaluator`
    with the settings ``episodes``, ``share`` and ``obs_norm``) and the cost is the environment steps
    of every training episode; the test episodes of the metric are not charged. With a ``rank``
    setting the mutation is low-rank, and supervised members are scored by a
    :class:`~evograd.LowRankEvaluator`.
    """

    def build(task: Task, s: dict, model: nn.Module) -> harness.Step:
        mutation = _mutation(s, model)
        strategy = make_strategy(s, mutation)
        if task.episodic:
            evaluator = EpisodeEvaluator(
                model,
                task.environment,
                seed=s["seed"],
                episodes=s["episodes"],
                share=s["share"],
                obs_norm=s["obs_norm"],
            )
        else:
            evaluator = _population_evaluator(task, model, mutation, _batches(task, s))
        state = strategy.init(flat.flatten(model), seed=s["seed"])

        def step() -> int:
            nonlocal state
            before = evaluator.fe
            seeds = strategy.ask(state)
            state, _ = strategy.tell(state, seeds, evaluator(state.center, seeds, state.mutation))
            flat.assign(model, state.center)
            return evaluator.fe - before

        return step

    return build


def _hybrid(task: Task, s: dict, model: nn.Module) -> harness.Step:
    """HybridOptimizer: ``bp_weight`` of the unit backprop gradient plus the rest of the unit evolution estimate."""
    mutation = _mutation(s, model)
    strategy = RollingImprovement(size=s["size"], mutation=mutation, beta=s["beta"])
    direction = D.mix(
        bp=(s["bp_weight"], harness.unit(D.backprop())),
        evo=(1.0 - s["bp_weight"], harness.evolution(strategy, s["seed"])),
    )
    optimizer = HybridOptimizer(
        model.parameters(),
        direction,
        base=torch.optim.SGD,
        evaluator=_population_evaluator(task, model, mutation),
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
        _evolve(lambda s, m: ScaleFreeEvolution(size=s["size"], mutation=m, selection=s["selection"], mu=s["mu"])),
    ),
    "rolling": (
        "evolution",
        _evolve(
            lambda s, m: RollingImprovement(
                size=s["size"], mutation=m, lr=s["lr"], lr_decay=s["lr_decay"], beta=s["beta"]
            )
        ),
    ),
    "openes": ("evolution", _evolve(lambda s, m: OpenES(size=s["size"], mutation=m, lr=s["lr"]))),
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
# What every evolution method has on an episodic task (see evograd.tasks.rl): episodes per member,
# who shares start states (each antithetic pair, or everyone), observation normalization.
_EPISODIC_DEFAULTS: dict[str, Any] = {"episodes": 3, "share": "pair", "obs_norm": False}
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
    "episodic": {  # any other episodic task (gym:ENV_ID)
        "evolution": {"sigma": 0.5, "clip": None, "selection": "plus", "mu": 1, "size": 16},
        "rolling": {"sigma": 0.1, "lr": 0.3, "lr_decay": 1.0, "size": 16},
        "openes": {"sigma": 0.1, "lr": 0.05, "size": 16},
    },
    "teacher": {"sgd": {"lr": 0.01}},
    # charlm: a sample is a 64-byte window; Adam takes 32 per step (2,048 tokens). Each ES generation
    # scores every member on one shared window, the regime where low-rank members pay (rank=1,
    # LowRankEvaluator); openes.lr 0.01 beat 0.03 in 60 s (validation loss 3.86 against 4.73).
    "charlm": {
        "sgd": {"batch_size": 32},
        "adam": {"batch_size": 32},
        "openes": {"batch_size": 1},
        "rolling": {"batch_size": 1},
        "evolution": {"batch_size": 1},
    },
}


#: Fields of the :class:`~evograd.noise.Mutation` that a method building one (its settings have the
#: mutation's ``kind`` and ``sigma``, see :func:`_mutation`) may set beyond its defaults; ``rank``
#: makes the mutation low-rank (and the evaluator a :class:`~evograd.LowRankEvaluator`).
_MUTATION_SETTINGS = ("alpha", "clip", "antithetic", "rank")


def settings_schema(method: str) -> dict[str, schema.Field]:
    """The settings ``method`` takes and the types of their values, derived from its defaults.

    A key's types are those of its default on every task (``clip`` is a real number on digits and
    None on CartPole, so it takes either); a method that builds a mutation also takes the
    mutation's optional fields, typed as :class:`~evograd.noise.Mutation` declares them. A new
    method or task therefore needs no schema of its own.

    Raises:
        ValueError: an unknown method (the message lists the known ones).

    Examples:
        >>> settings_schema("sgd")["batch_size"].describe()
        'an integer'
        >>> settings_schema("evolution")["clip"].describe()
        'a real number or None'
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method {method!r} is unknown; allowed {', '.join(METHODS)}")
    examples = [_DEFAULTS[method], *(task[method] for task in _TASK_DEFAULTS.values() if method in task)]
    if METHODS[method][0] == "evolution":
        examples.append(_EPISODIC_DEFAULTS)
    keys = dict.fromkeys(key for defaults in examples for key in defaults)
    fields = {key: schema.infer(f"{method}.{key}", [d[key] for d in examples if key in d]) for key in keys}
    if {"kind", "sigma"} <= keys.keys():
        for key, declared in schema.from_hints(Mutation, _MUTATION_SETTINGS, prefix=f"{method}.").items():
            fields[key] = schema.Field(declared.name, declared.kinds | (fields[key].kinds if key in fields else set()))
    return fields


def settings_for(method: str, task: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The method's hyperparameters on ``task``: defaults, then task defaults, then ``overrides``.

    ``overrides`` are checked against :func:`settings_schema`: unknown keys and values of the wrong
    type are refused (ranges are checked by :func:`check_method`, which builds the method).

    Raises:
        TypeError: an override of the wrong type, or overrides that are not a mapping.
        ValueError: an unknown method, an override key the method does not have (the message lists
            the keys it has), NaN or infinity.
    """
    schema_fields = settings_schema(method)  # refuses an unknown method
    episodic = is_episodic(task) and METHODS[method][0] == "evolution"
    task_defaults = _TASK_DEFAULTS.get(task, _TASK_DEFAULTS["episodic"] if is_episodic(task) else {})
    settings = {**_DEFAULTS[method], **(_EPISODIC_DEFAULTS if episodic else {}), **task_defaults.get(method, {})}
    # the keys this method has on this task (episodes only on an episodic one), and its mutation's
    fields = {key: f for key, f in schema_fields.items() if key in settings or key in _MUTATION_SETTINGS}
    settings.update(schema.check(fields, {} if overrides is None else overrides, method))
    return settings


def _prepare(task: Task, method: str, seed: int, settings: dict, device: str) -> tuple[nn.Module, harness.Step] | None:
    """The model and the training step of ``method`` on ``task``; None where the method cannot train on it."""
    family, build = METHODS[method]
    if family == "backprop" and task.episodic:
        return None
    model = task.make_model(seed).to(device)
    return model, build(task, {**settings, "seed": seed, "device": torch.device(device)}, model)


def check_method(task: Task, method: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`settings_for`, then the method built once on the CPU (nothing trained), so that every
    value is checked by the configs it builds (a strategy's ``size``, a minibatch's ``batch_size``,
    a torch optimizer's ``lr``) before a run starts.

    Returns:
        The method's settings on ``task``.

    Raises:
        TypeError: a setting of the wrong type.
        ValueError: an unknown method or key, or a value out of range (the message starts with the method).
    """
    settings = settings_for(method, task.name, overrides)
    try:
        _prepare(task, method, 0, settings, "cpu")
    except (TypeError, ValueError) as err:
        raise type(err)(f"{method} settings: {err}") from err
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
    logger: Logger | None = None,
) -> RunResult:
    """Train ``method`` on ``task`` from seed ``seed`` until ``budget`` is spent.

    Args:
        task, method, seed, budget: what to train, how, from which seed, for how long.
        overrides: settings replacing the method's defaults.
        device: where the model and data live.
        progress: ``progress(fraction, status)`` after each measurement.
        logger: gets each measurement as it is made (:func:`evograd.harness.point_record`, tagged
            with ``method`` and ``seed``).
    """
    settings = settings_for(method, task.name, overrides)
    prepared = _prepare(task, method, seed, settings, device)
    if prepared is None:
        return RunResult(
            method,
            seed,
            settings,
            [],
            0,
            0.0,
            note=f"skipped: {method} needs a gradient, and {task.name} is an episodic task",
        )
    model, step = prepared
    recorder = harness.Recorder(
        lambda: task.metric(model),
        budget,
        progress=progress,
        label=task.metric_name,
        logger=logger,
        tags={"method": method, "seed": seed},
    )
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
    board: Board | None = None,
    logger: Logger | None = None,
    store: RunStore | None = None,
) -> list[RunResult]:
    """Every method on every seed, in that order.

    Args:
        task, methods, seeds, budget: what to compare, on which seeds, for how long each.
        overrides: per method, settings replacing its defaults.
        device: where models and data live.
        board: the progress display (a run taken from ``store`` counts as skipped).
        logger: gets every measurement as it is made; a run taken from ``store`` is replayed into
            it, so the log of a resumed comparison holds every run.
        store: finished runs: each run is saved there when it finishes, and a run already there
            is loaded instead of trained (resume). Its settings must be the ones asked for now.

    Raises:
        ValueError: an unknown method or setting, or a stored run whose settings differ.
    """
    for method in methods:
        settings_for(method, task.name, (overrides or {}).get(method))  # fail before any training
    results = []
    for method in methods:
        for seed in seeds:
            label = f"{method} seed {seed}"
            stored = None if store is None else store.load(f"{method}-seed{seed}")
            if stored is not None:
                result = RunResult.from_dict(stored)
                expected = settings_for(method, task.name, (overrides or {}).get(method))
                if result.settings != expected:
                    raise ValueError(
                        f"{store.folder}/{result.name}.json was run with settings {result.settings}, not {expected}"
                    )
                if board is not None:
                    board.skip(label)
                for point in result.curve if logger is not None else ():
                    logger.log(harness.point_record(point, task.metric_name, {"method": method, "seed": seed}))
            else:
                result = run_method(
                    task,
                    method,
                    seed,
                    budget,
                    overrides=(overrides or {}).get(method),
                    device=device,
                    progress=None if board is None else board.start(label),
                    logger=logger,
                )
                if store is not None:
                    store.save(result.name, dataclasses.asdict(result))
            results.append(result)
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
    """``["rolling.lr=0.1", "sgd.momentum=0"]`` → ``{"rolling": {"lr": 0.1}, "sgd": {"momentum": 0}}``.

    Values are Python literals (``0.1``, ``None``, ``True``, ``'cauchy'``), ``nan`` or ``inf``, or
    else bare words (``cauchy``); :func:`settings_for` checks them against the method's schema.

    Raises:
        ValueError: an item that is not ``METHOD.KEY=VALUE``.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, _, raw = item.partition("=")
        method, _, key = name.partition(".")
        if not raw or not key:
            raise ValueError(f"--set {item!r} is not METHOD.KEY=VALUE (e.g. rolling.lr=0.1)")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            try:
                value = float(raw)  # nan, inf: refused by the schema with the field named
            except ValueError:
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
