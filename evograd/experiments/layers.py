"""``layers``: should bottom layers be searched more thoroughly than top layers?

Two tests on a digits MLP, every arm at the same FE budget, test accuracy reported:

1. *Per-layer mutation scales.* Pure evolution (the unit rolling-improvement direction, clipped
   Cauchy mutations) with each linear layer's mutation scale multiplied by a factor falling
   geometrically from bottom to top (``bottom-heavy``, ratio ``ratio`` between the first and last
   layer), constant (``uniform``) or rising (``top-heavy``). The factors are normalized so that the
   mean squared factor over all coordinates is 1: every arm perturbs with the same expected norm,
   only its distribution over layers differs (``Mutation(scale={...}).resolve(model)``).
2. *Who searches where.* Per-group directions in :class:`~evograd.HybridOptimizer`: evolution on
   the bottom half of the layers and backprop on the top half (``evo bottom + bp top``), against
   the reverse; each group moves along its own unit direction.

References:
    Yao & Liu (1999) for Cauchy mutation; Salimans et al. (2017) for ES on networks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from evograd import directions as D
from evograd import tasks
from evograd.evaluate import VmapEvaluator
from evograd.experiments import Experiment, Panel, Progress, mean, train_classifier
from evograd.harness import evolution, unit
from evograd.loggers import Logger
from evograd.noise import Mutation
from evograd.optim import HybridOptimizer
from evograd.strategies import RollingImprovement

SCALES = ("bottom-heavy", "uniform", "top-heavy")
SPLITS = ("evo bottom + bp top", "bp bottom + evo top")
ARMS = SCALES + SPLITS


def layer_factors(model: torch.nn.Module, arm: str, ratio: float) -> dict[str, float]:
    """Mutation-scale factor per linear layer (module name -> factor), mean squared factor 1 over coordinates.

    Examples:
        >>> model = tasks.mlp((4, 4, 4), seed=0)
        >>> {k: round(v, 3) for k, v in layer_factors(model, "bottom-heavy", 4.0).items()}
        {'0': 1.372, '2': 0.343}
    """
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    top = max(len(names) - 1, 1)
    exponent = {"bottom-heavy": -1.0, "uniform": 0.0, "top-heavy": 1.0}[arm]
    raw = {n: ratio ** (exponent * i / top) for i, n in enumerate(names)}
    sizes = {n: sum(p.numel() for p in model.get_submodule(n).parameters()) for n in names}
    norm = (sum(sizes[n] * raw[n] ** 2 for n in names) / sum(sizes.values())) ** 0.5
    return {n: f / norm for n, f in raw.items()}


def _optimizer(arm: str, model: torch.nn.Module, config: dict, seed: int) -> tuple[HybridOptimizer, bool]:
    """The arm's optimizer and whether it needs the gradient closure."""
    mutation = Mutation(kind="cauchy", sigma=config["sigma"], clip=3.0, antithetic=True)
    evaluator = VmapEvaluator(model, F.cross_entropy)
    if arm in SCALES:
        mutation = mutation.replace(scale=layer_factors(model, arm, config["ratio"])).resolve(model)
        strategy = RollingImprovement(size=config["size"], mutation=mutation)
        return HybridOptimizer(
            model.parameters(), evolution(strategy, seed), lr=config["lr"], evaluator=evaluator
        ), False
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    half = len(linears) // 2
    bottom = [p for m in linears[:half] for p in m.parameters()]
    top = [p for m in linears[half:] for p in m.parameters()]
    evo = evolution(RollingImprovement(size=config["size"], mutation=mutation), seed)
    bp = unit(D.backprop())
    groups = [
        {"params": bottom, "direction": evo if arm == SPLITS[0] else bp},
        {"params": top, "direction": bp if arm == SPLITS[0] else evo},
    ]
    return HybridOptimizer(groups, bp, lr=config["lr"], evaluator=evaluator), True


def measure(config: dict, seeds: list[int], progress: Progress, logger: Logger) -> dict[str, Any]:
    """Every arm × seed at the same FE budget."""
    split, runs = tasks.digits().to(config["device"]), []
    total = len(ARMS) * len(seeds)
    for arm in ARMS:
        for seed in seeds:
            model = tasks.mlp((64, *(config["width"],) * (config["depth"] - 1), 10), seed=seed).to(config["device"])
            optimizer, gradient = _optimizer(arm, model, config, seed)
            run = train_classifier(
                model,
                optimizer,
                split,
                batch_size=config["batch"],
                seed=seed,
                fe=config["fe"],
                gradient=gradient,
                logger=logger,
                run=f"{arm} seed {seed}",
            )
            runs.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "test_accuracy": run.final,
                    "fe": run.fe,
                    "seconds": run.seconds,
                    "curve": run.curve,
                }
            )
            progress(len(runs) / total, f"{arm} seed {seed}: test accuracy {run.final:.3f}")
    return {"depth": config["depth"], "fe": config["fe"], "ratio": config["ratio"], "seeds": len(seeds), "runs": runs}


def _accuracy(numbers: dict, arm: str) -> float:
    return mean([r["test_accuracy"] for r in numbers["runs"] if r["arm"] == arm])


def verdict_layers(numbers: dict) -> tuple[bool, str]:
    """Holds if bottom-heavy mutation scales beat both uniform and top-heavy ones, and evolution on
    the bottom with backprop on the top beats the reverse (mean test accuracy over seeds).

    Examples:
        >>> accs = {"bottom-heavy": 0.9, "uniform": 0.85, "top-heavy": 0.8, SPLITS[0]: 0.95, SPLITS[1]: 0.9}
        >>> runs = [{"arm": a, "test_accuracy": v} for a, v in accs.items()]
        >>> numbers = {"depth": 4, "fe": 1, "seeds": 1, "runs": runs}
        >>> verdict_layers(numbers)[0]
        True
    """
    acc = {arm: _accuracy(numbers, arm) for arm in ARMS}
    scales = acc["bottom-heavy"] > max(acc["uniform"], acc["top-heavy"])
    placement = acc[SPLITS[0]] > acc[SPLITS[1]]
    holds = scales and placement
    return holds, (
        f"claim {'holds' if holds else 'does not hold'}: test accuracy with bottom-heavy / uniform / "
        f"top-heavy mutation scales {acc['bottom-heavy']:.3f} / {acc['uniform']:.3f} / {acc['top-heavy']:.3f}"
        f" ({'bottom-heavy best' if scales else 'bottom-heavy not best'}); evolution on the bottom + "
        f"backprop on the top {acc[SPLITS[0]]:.3f} vs the reverse {acc[SPLITS[1]]:.3f} "
        f"({numbers['seeds']} seeds, depth {numbers['depth']}, {numbers['fe']:,} FE each)"
    )


def table(numbers: dict) -> list[dict[str, Any]]:
    """One row per arm: mean and spread of test accuracy, FE and seconds."""
    rows = []
    for arm in ARMS:
        accs = [r["test_accuracy"] for r in numbers["runs"] if r["arm"] == arm]
        rows.append(
            {
                "arm": arm,
                "test acc": mean(accs),
                "min": min(accs),
                "max": max(accs),
                "FE": mean([r["fe"] for r in numbers["runs"] if r["arm"] == arm]),
                "seconds": mean([r["seconds"] for r in numbers["runs"] if r["arm"] == arm]),
            }
        )
    return rows


def panels(numbers: dict) -> list[Panel]:
    """Test accuracy against FE (mean over seeds): the scale arms, and the placement arms."""

    def lines(arms: tuple[str, ...]) -> dict:
        found = {}
        for arm in arms:
            curves = [r["curve"] for r in numbers["runs"] if r["arm"] == arm]
            length = min(len(c) for c in curves)
            found[arm] = ([c[0] for c in curves[0][:length]], [mean([c[i][2] for c in curves]) for i in range(length)])
        return found

    return [
        Panel("per-layer mutation scales", "FE", "test accuracy", lines(SCALES)),
        Panel("evolution and backprop by layer", "FE", "test accuracy", lines(SPLITS)),
    ]


def configure(quick: bool) -> dict[str, Any]:
    """Default: depth 4, width 32, 6M FE per run, 3 seeds; quick: depth 2, width 16, 40k FE, 1 seed."""
    if quick:
        return {
            "depth": 2,
            "width": 16,
            "size": 16,
            "batch": 32,
            "sigma": 0.01,
            "ratio": 4.0,
            "lr": 0.05,
            "fe": 40_000,
            "seeds": 1,
        }
    return {
        "depth": 4,
        "width": 32,
        "size": 64,
        "batch": 128,
        "sigma": 0.01,
        "ratio": 4.0,
        "lr": 0.05,
        "fe": 6_000_000,
        "seeds": 3,
    }


EXPERIMENT = Experiment(
    name="layers",
    claim="Bottom layers should be searched more thoroughly than top layers.",
    configure=configure,
    measure=measure,
    table=table,
    panels=panels,
    verdict=verdict_layers,
)
