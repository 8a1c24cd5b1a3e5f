"""``rolling-average``: does a rolling average of improving directions estimate the gradient better?

:class:`~evograd.RollingImprovement` keeps ``m ← β·m + (1−β)·d``, where d is one generation's
weighted mean of unit mutation directions. Every arm trains the same digits MLP from the same
initial weights on the same minibatch stream with the strategy's own step (``lr`` along ``m/‖m‖``,
so the step length does not depend on β) at equal FE, crossing

* β in :data:`BETAS` (β = 0: no averaging, this generation's direction only),
* ``improving`` (only mutations that improve on the parent) against ``signed`` (``use_worse``:
  every mutation with its sign),
* ``slope`` weighting (Δ_i/‖ε_i‖) against ``improvement`` weighting (Δ_i).

Reported: the cosine between m and the true descent direction −∇f at the current parameters (the
full training set's gradient by autograd, not counted in FE), at evenly spaced generations, its
mean over the second half of training, and the test accuracy at the end. The mutation is the
library default, Cauchy clipped at 3σ with σ = 0.01 in antithetic pairs.

References:
    Salimans et al. (2017) for the signed estimator; Polyak (1964) and Kingma & Ba (2015) on averaged
    (momentum) gradient directions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from evograd import flat, tasks
from evograd.evaluate import VmapEvaluator
from evograd.experiments import Experiment, Panel, Progress, mean, train_steps
from evograd.harness import Minibatches
from evograd.loggers import Logger
from evograd.noise import Mutation
from evograd.strategies import RollingImprovement

BETAS = (0.0, 0.5, 0.9, 0.97, 0.99)
ESTIMATORS = ("improving", "signed")
WEIGHTINGS = ("slope", "improvement")
MARGIN = 0.10  # relative cosine gain the verdict asks of averaging over no averaging


def arm(beta: float, estimator: str, weighting: str) -> str:
    """The name of one arm, e.g. ``"β=0.9 improving slope"``."""
    return f"β={beta:g} {estimator} {weighting}"


def descent_cosine(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, direction: torch.Tensor) -> float:
    """Cosine between ``direction`` (dim,) and −∇ of the cross-entropy of ``model`` on all of (x, y)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    descent = -torch.cat([g.reshape(-1) for g in grads])  # (dim,)
    return float(F.cosine_similarity(direction.double(), descent.double(), dim=0))


def train_arm(
    beta: float, estimator: str, weighting: str, config: dict, split: tasks.Split, seed: int, logger: Logger
) -> dict[str, Any]:
    """One arm's run: ask/tell on minibatches until the FE budget, cosine of m to −∇f along the way."""
    sizes = (split.train_x.shape[1], *(config["width"],) * (config["depth"] - 1), 10)
    model = tasks.mlp(sizes, seed=seed).to(split.train_x.device)
    strategy = RollingImprovement(
        size=config["size"],
        mutation=Mutation(kind="cauchy", sigma=config["sigma"], clip=3.0, antithetic=True),
        beta=beta,
        lr=config["lr"],
        weighting=weighting,
        use_worse=estimator == "signed",
    )
    evaluator = VmapEvaluator(model, F.cross_entropy)
    batches = Minibatches(split.train_x, split.train_y, config["batch"], seed)
    state = [strategy.init(flat.flatten(model).detach(), seed=seed)]
    generations = config["fe"] // ((config["size"] + 1) * config["batch"])
    every = max(1, generations // config["points"])
    trace: list[tuple[int, float]] = []
    name = f"{arm(beta, estimator, weighting)} seed {seed}"

    def step() -> int:
        batch = batches()
        evaluator.set_batch(batch)
        seeds = strategy.ask(state[0])
        new, _ = strategy.tell(state[0], seeds, evaluator(state[0].center, seeds, state[0].mutation))
        state[0] = new
        flat.assign(model, new.center)
        if new.generation % every == 0:
            cosine = descent_cosine(model, split.train_x, split.train_y, -strategy.gradient_estimate(new))
            trace.append((new.generation, cosine))
            logger.log({"run": name, "generation": new.generation, "cosine": cosine})
        return len(seeds) * len(batch[0])

    run = train_steps(step, model, split, fe=config["fe"], logger=logger, run=name)
    late = [c for g, c in trace if g > trace[-1][0] / 2]
    return {
        "beta": beta,
        "estimator": estimator,
        "weighting": weighting,
        "seed": seed,
        "test_accuracy": run.final,
        "fe": run.fe,
        "cosine": mean(late),
        "trace": trace,
    }


def measure(config: dict, seeds: list[int], progress: Progress, logger: Logger) -> dict[str, Any]:
    """Every β × estimator × weighting × seed at the same FE."""
    split, runs = tasks.digits().to(config["device"]), []
    total = len(BETAS) * len(ESTIMATORS) * len(WEIGHTINGS) * len(seeds)
    for beta in BETAS:
        for estimator in ESTIMATORS:
            for weighting in WEIGHTINGS:
                for seed in seeds:
                    runs.append(train_arm(beta, estimator, weighting, config, split, seed, logger))
                    progress(len(runs) / total, f"{arm(beta, estimator, weighting)} seed {seed}")
    return {
        "betas": list(BETAS),
        "fe": config["fe"],
        "size": config["size"],
        "sigma": config["sigma"],
        "lr": config["lr"],
        "depth": config["depth"],
        "seeds": len(seeds),
        "runs": runs,
    }


def _mean(numbers: dict, key: str, beta: float, estimator: str, weighting: str) -> float:
    return mean(
        [
            r[key]
            for r in numbers["runs"]
            if r["beta"] == beta and r["estimator"] == estimator and r["weighting"] == weighting
        ]
    )


def verdict_rolling_average(numbers: dict) -> tuple[bool, str]:
    """Holds if, for the improving-only slope-weighted estimate (:class:`~evograd.RollingImprovement`'s
    default), the β > 0 with the best mean cosine beats β = 0 by ≥ :data:`MARGIN` (relative) and reaches
    at least β = 0's test accuracy at equal FE. The line also compares signed with improving-only and
    improvement with slope weighting at that β.

    Examples:
        >>> def run(beta, est, w, cos, acc):
        ...     return {"beta": beta, "estimator": est, "weighting": w, "cosine": cos, "test_accuracy": acc}
        >>> runs = [run(b, e, w, 0.1 + b / 10, 0.8) for b in (0.0, 0.9) for e in ESTIMATORS for w in WEIGHTINGS]
        >>> numbers = {"betas": [0.0, 0.9], "fe": 1000, "seeds": 1, "runs": runs}
        >>> verdict_rolling_average(numbers)[0]
        True
    """
    cos = {b: _mean(numbers, "cosine", b, "improving", "slope") for b in numbers["betas"]}
    acc = {b: _mean(numbers, "test_accuracy", b, "improving", "slope") for b in numbers["betas"]}
    best = max((b for b in numbers["betas"] if b > 0), key=cos.get)
    holds = cos[best] - cos[0.0] >= MARGIN * abs(cos[0.0]) and cos[best] > cos[0.0] and acc[best] >= acc[0.0]
    signed = _mean(numbers, "cosine", best, "signed", "slope")
    improvement = _mean(numbers, "cosine", best, "improving", "improvement")
    return holds, (
        f"claim {'holds' if holds else 'does not hold'}: improving-only slope-weighted estimate, cosine to "
        f"-gradient {cos[best]:.3f} at β={best:g} (the best β) vs {cos[0.0]:.3f} without averaging (needs "
        f"+{100 * MARGIN:.0f}%), test accuracy {acc[best]:.3f} vs {acc[0.0]:.3f}; at β={best:g} signed "
        f"{signed:.3f} and improvement weighting {improvement:.3f} ({numbers['seeds']} seeds, "
        f"{numbers['fe']:,} FE each)"
    )


def table(numbers: dict) -> list[dict[str, Any]]:
    """One row per β: cosine and test accuracy of each estimator × weighting."""
    rows = []
    for beta in numbers["betas"]:
        row: dict[str, Any] = {"beta": f"{beta:g}"}
        for e in ESTIMATORS:
            for w in WEIGHTINGS:
                row[f"cos {e[:4]}/{w[:5]}"] = _mean(numbers, "cosine", beta, e, w)
        for e in ESTIMATORS:
            for w in WEIGHTINGS:
                row[f"acc {e[:4]}/{w[:5]}"] = _mean(numbers, "test_accuracy", beta, e, w)
        rows.append(row)
    return rows


def panels(numbers: dict) -> list[Panel]:
    """Cosine along training per β (improving-only, slope), and late cosine against β per estimator × weighting."""
    lines = {}
    for beta in numbers["betas"]:
        traces = [
            r["trace"]
            for r in numbers["runs"]
            if r["beta"] == beta and r["estimator"] == "improving" and r["weighting"] == "slope"
        ]
        length = min(len(t) for t in traces)
        lines[f"β={beta:g}"] = (
            [g for g, _ in traces[0][:length]],
            [mean([t[i][1] for t in traces]) for i in range(length)],
        )
    sweep = {
        f"{e} {w}": (list(range(len(numbers["betas"]))), [_mean(numbers, "cosine", b, e, w) for b in numbers["betas"]])
        for e in ESTIMATORS
        for w in WEIGHTINGS
    }
    return [
        Panel("improving-only, slope weighting", "generation", "cosine to -gradient", lines),
        Panel(
            "late cosine by β (index into " + "/".join(f"{b:g}" for b in numbers["betas"]) + ")",
            "β index",
            "cosine to -gradient",
            sweep,
        ),
    ]


def configure(quick: bool) -> dict[str, Any]:
    """Default: MLP 64-32-32-10, 32 mutations, minibatch 64, 300k FE per arm, 1 seed; quick: tiny."""
    if quick:
        return {
            "depth": 2,
            "width": 16,
            "size": 8,
            "batch": 32,
            "sigma": 0.01,
            "lr": 0.05,
            "fe": 6_000,
            "points": 4,
            "seeds": 1,
        }
    return {
        "depth": 3,
        "width": 32,
        "size": 32,
        "batch": 64,
        "sigma": 0.01,
        "lr": 0.05,
        "fe": 300_000,
        "points": 15,
        "seeds": 1,
    }


EXPERIMENT = Experiment(
    name="rolling-average",
    claim="Averaging the directions of improving mutations over generations estimates the gradient better.",
    configure=configure,
    measure=measure,
    table=table,
    panels=panels,
    verdict=verdict_rolling_average,
)
