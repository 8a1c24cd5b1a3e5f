"""``layers``: should bottom layers be searched more thoroughly than top layers?

A digits MLP whose bottom half (first two linear layers) and top half (last two) hold **the same
number of parameters** (default 64-24-40-50-10: 2,560 and 2,560), so no arm evolves more
coordinates than its mirror (ES estimates degrade with dimension, cosine ~ √(n/D)). Every arm of
the first three readings runs at the same FE budget; test accuracy is reported.

1. *Per-layer mutation scales.* Pure evolution (the unit rolling-improvement direction, clipped
   Cauchy mutations) with each linear layer's mutation scale multiplied by a factor that changes
   geometrically from the first to the last layer, the first/last ratio swept over :data:`RATIOS`
   (1/16 … 16; 1 is uniform). Factors are normalized so the mean squared factor over all
   coordinates is 1: every arm perturbs with the same expected norm.
2. *More probes per layer.* Each linear layer is its own param group with its own population
   (its mutations perturb only that layer), the populations' sizes allocated bottom-heavy, uniform
   or top-heavy (ratio ``probe_ratio`` between first and last layer) from one total, so every arm
   spends the same FE per step. Each layer steps ``lr·√(D_l/D)`` along its unit estimate: the
   whole step has length ``lr`` in every arm.
3. *Who searches where* (matched). Evolution on the bottom half and backprop on the top half,
   against the reverse; each half moves along its own unit direction.
4. *The seeds' arm: bottom frozen at random.* Adam trains only the top half (the bottom keeps its
   random initialization) or everything; capacity is the training accuracy reached on a
   random-label subset at equal FE, beside test accuracy on the true labels. Reported beside the
   verdict: it asks whether bottom layers need training at all, not how to search them.

References:
    Yao & Liu (1999) for Cauchy mutation; Salimans et al. (2017) for ES on networks; Zhang et al.
    (2017) for capacity measured on random labels.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn import functional as F

from evograd import directions as D
from evograd import noise, tasks
from evograd.evaluate import VmapEvaluator
from evograd.experiments import Experiment, Panel, Progress, mean, train_classifier
from evograd.experiments.random_labels import subset
from evograd.harness import evolution, unit
from evograd.loggers import Logger
from evograd.noise import Mutation
from evograd.optim import HybridOptimizer
from evograd.strategies import RollingImprovement

RATIOS = (1 / 16, 1 / 4, 1.0, 4.0, 16.0)  # first/last layer mutation-scale factor
ALLOCATIONS = ("bottom-heavy", "uniform", "top-heavy")
SPLITS = ("evo bottom + bp top", "bp bottom + evo top")
FROZEN = ("bottom frozen, top trained", "all trained")


def scale_arm(ratio: float) -> str:
    """The name of the scale arm of ``ratio``, e.g. ``"scale 1/4"``, ``"scale 16"``."""
    return f"scale 1/{1 / ratio:g}" if ratio < 1 else f"scale {ratio:g}"


def probe_arm(allocation: str) -> str:
    """The name of the probe-allocation arm, e.g. ``"probes uniform"``."""
    return f"probes {allocation}"


def linears(model: torch.nn.Module) -> list[str]:
    """Names of the linear layers of ``model``, bottom first."""
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def halves(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """Parameters of the bottom and the top half of the linear layers."""
    names = linears(model)
    half = len(names) // 2
    bottom = [p for n in names[:half] for p in model.get_submodule(n).parameters()]
    top = [p for n in names[half:] for p in model.get_submodule(n).parameters()]
    return bottom, top


def layer_factors(model: torch.nn.Module, ratio: float) -> dict[str, float]:
    """Mutation-scale factor per linear layer (name -> factor), first/last = ``ratio``, mean squared factor 1.

    Examples:
        >>> model = tasks.mlp((4, 4, 4), seed=0)
        >>> {k: round(v, 3) for k, v in layer_factors(model, 4.0).items()}
        {'0': 1.372, '2': 0.343}
    """
    names = linears(model)
    top = max(len(names) - 1, 1)
    raw = {n: ratio ** (-i / top) for i, n in enumerate(names)}
    sizes = {n: sum(p.numel() for p in model.get_submodule(n).parameters()) for n in names}
    norm = (sum(sizes[n] * raw[n] ** 2 for n in names) / sum(sizes.values())) ** 0.5
    return {n: f / norm for n, f in raw.items()}


def allocate(total: int, layers: int, ratio: float) -> list[int]:
    """Split ``total`` mutations (even, antithetic pairs) over ``layers`` layers, first/last ≈ ``ratio``.

    Every layer gets at least one pair; the pairs left are shared in proportion to a geometric
    weight by largest remainders, so the sizes sum to ``total`` exactly.

    Examples:
        >>> allocate(64, 4, 4.0), allocate(64, 4, 1.0), allocate(64, 4, 0.25)
        ([26, 18, 12, 8], [16, 16, 16, 16], [8, 12, 18, 26])
    """
    if total % 2 or total < 2 * layers:
        raise ValueError(f"total={total} must be even and at least {2 * layers}")
    weights = [ratio ** (-i / max(layers - 1, 1)) for i in range(layers)]
    pairs = total // 2 - layers
    shares = [pairs * w / sum(weights) for w in weights]
    counts = [math.floor(s) for s in shares]
    by_remainder = sorted(range(layers), key=lambda i: shares[i] - counts[i], reverse=True)
    for i in by_remainder[: pairs - sum(counts)]:
        counts[i] += 1
    return [2 * (c + 1) for c in counts]


def _mutation(config: dict) -> Mutation:
    return Mutation(kind="cauchy", sigma=config["sigma"], clip=3.0, antithetic=True)


def _optimizer(arm: str, model: torch.nn.Module, config: dict, seed: int) -> tuple[torch.optim.Optimizer, bool]:
    """The arm's optimizer and whether it needs the gradient closure."""
    evaluator = VmapEvaluator(model, F.cross_entropy)
    for ratio in RATIOS:
        if arm == scale_arm(ratio):
            mutation = _mutation(config).replace(scale=layer_factors(model, ratio)).resolve(model)
            strategy = RollingImprovement(size=config["size"], mutation=mutation)
            return HybridOptimizer(
                model.parameters(), evolution(strategy, seed), lr=config["lr"], evaluator=evaluator
            ), False
    for allocation in ALLOCATIONS:
        if arm == probe_arm(allocation):
            ratio = {"bottom-heavy": config["probe_ratio"], "uniform": 1.0, "top-heavy": 1 / config["probe_ratio"]}
            names = linears(model)
            sizes = allocate(config["size"], len(names), ratio[allocation])
            dim = sum(p.numel() for p in model.parameters())
            groups = []
            for i, (name, size) in enumerate(zip(names, sizes)):
                params = list(model.get_submodule(name).parameters())
                share = sum(p.numel() for p in params) / dim
                strategy = RollingImprovement(size=size, mutation=_mutation(config))
                groups.append(
                    {
                        "params": params,
                        "direction": evolution(strategy, noise.stream_seed(seed, "layer population", i)),
                        "lr": config["lr"] * share**0.5,
                    }
                )
            return HybridOptimizer(groups, D.backprop(), lr=config["lr"], evaluator=evaluator), False
    if arm in SPLITS:
        bottom, top = halves(model)
        evo = evolution(RollingImprovement(size=config["size"], mutation=_mutation(config)), seed)
        bp = unit(D.backprop())
        groups = [
            {"params": bottom, "direction": evo if arm == SPLITS[0] else bp},
            {"params": top, "direction": bp if arm == SPLITS[0] else evo},
        ]
        return HybridOptimizer(groups, bp, lr=config["lr"], evaluator=evaluator), True
    raise ValueError(f"arm={arm!r} is unknown")


def arms() -> list[str]:
    """The arms trained by evolution at equal FE, in table order."""
    return [*(scale_arm(r) for r in RATIOS), *(probe_arm(a) for a in ALLOCATIONS), *SPLITS]


def _model(config: dict, seed: int) -> torch.nn.Sequential:
    return tasks.mlp((64, *config["widths"], 10), seed=seed).to(config["device"])


def _frozen(arm: str, labels: str, config: dict, seed: int, logger: Logger) -> dict[str, Any]:
    """Adam on the top half only, or on everything: train accuracy on a shuffled subset, or test accuracy."""
    model = _model(config, seed)
    bottom, _ = halves(model)
    if arm == FROZEN[0]:
        for p in bottom:
            p.requires_grad_(False)
    adam = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config["adam_lr"])
    shuffled = labels == "shuffled"
    split = subset(config["capacity_n"], shuffled=True, seed=seed) if shuffled else tasks.digits()
    run = train_classifier(
        model,
        adam,
        split.to(config["device"]),
        batch_size=config["capacity_n"] if shuffled else config["batch"],  # the whole subset every step
        seed=seed,
        fe=config["capacity_fe"] if shuffled else config["adam_fe"],
        on="train" if shuffled else "test",
        logger=logger,
        run=f"{arm} {labels} seed {seed}",
    )
    return {"arm": arm, "labels": labels, "seed": seed, "accuracy": run.final, "fe": run.fe}


def measure(config: dict, seeds: list[int], progress: Progress, logger: Logger) -> dict[str, Any]:
    """Every evolution arm × seed at the same FE budget, then the frozen-bottom arms."""
    split, runs, frozen = tasks.digits().to(config["device"]), [], []
    total = (len(arms()) + 2 * len(FROZEN)) * len(seeds)
    for arm in arms():
        for seed in seeds:
            model = _model(config, seed)
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
            runs.append({"arm": arm, "seed": seed, "test_accuracy": run.final, "fe": run.fe, "curve": run.curve})
            progress((len(runs) + len(frozen)) / total, f"{arm} seed {seed}: test accuracy {run.final:.3f}")
    for arm in FROZEN:
        for labels in ("shuffled", "true"):
            for seed in seeds:
                frozen.append(_frozen(arm, labels, config, seed, logger))
                progress((len(runs) + len(frozen)) / total, f"{arm} {labels} seed {seed}")
    model = _model(config, 0)
    bottom, top = halves(model)
    probe_ratio = {"bottom-heavy": config["probe_ratio"], "uniform": 1.0, "top-heavy": 1 / config["probe_ratio"]}
    return {
        "widths": config["widths"],
        "evolved": {"bottom": sum(p.numel() for p in bottom), "top": sum(p.numel() for p in top)},
        "fe": config["fe"],
        "ratios": list(RATIOS),
        "probe_sizes": {a: allocate(config["size"], len(linears(model)), r) for a, r in probe_ratio.items()},
        "capacity": {"n": config["capacity_n"], "fe": config["capacity_fe"], "adam_fe": config["adam_fe"]},
        "seeds": len(seeds),
        "runs": runs,
        "frozen": frozen,
    }


def accuracy(numbers: dict, arm: str) -> float:
    """Mean test accuracy of an evolution arm over seeds."""
    return mean([r["test_accuracy"] for r in numbers["runs"] if r["arm"] == arm])


def frozen_accuracy(numbers: dict, arm: str, labels: str) -> float:
    """Mean accuracy of a frozen-bottom arm: train accuracy on shuffled labels, test accuracy on true ones."""
    return mean([r["accuracy"] for r in numbers["frozen"] if r["arm"] == arm and r["labels"] == labels])


def verdict_layers(numbers: dict) -> tuple[bool, str]:
    """Holds if all three search readings favour the bottom: the best mutation-scale ratio is > 1
    (bottom-heavy), bottom-heavy probe allocation beats uniform and top-heavy, and evolution on the
    bottom with backprop on the top beats the reverse, with bottom and top of equal evolved size
    (mean test accuracy over seeds, equal FE). The frozen-bottom capacity arm is reported beside.

    Examples:
        >>> accs = dict.fromkeys(arms(), 0.8) | {"scale 4": 0.9, "probes bottom-heavy": 0.9, SPLITS[0]: 0.9}
        >>> runs = [{"arm": a, "test_accuracy": v} for a, v in accs.items()]
        >>> frozen = [{"arm": a, "labels": s, "accuracy": 0.5} for a in FROZEN for s in ("shuffled", "true")]
        >>> numbers = {"ratios": list(RATIOS), "evolved": {"bottom": 10, "top": 10}, "fe": 1, "seeds": 1,
        ...            "runs": runs, "frozen": frozen}
        >>> verdict_layers(numbers)[0]
        True
    """
    ratios = numbers["ratios"]
    scales = {r: accuracy(numbers, scale_arm(r)) for r in ratios}
    best = max(ratios, key=scales.get)
    probes = {a: accuracy(numbers, probe_arm(a)) for a in ALLOCATIONS}
    split = {a: accuracy(numbers, a) for a in SPLITS}
    readings = {
        "scales": best > 1,
        "probes": probes["bottom-heavy"] > max(probes["uniform"], probes["top-heavy"]),
        "placement": split[SPLITS[0]] > split[SPLITS[1]],
    }
    holds = all(readings.values())
    held = sum(readings.values())
    capacity = {a: frozen_accuracy(numbers, a, "shuffled") for a in FROZEN}
    generalization = {a: frozen_accuracy(numbers, a, "true") for a in FROZEN}
    sweep = ", ".join(f"{scales[r]:.3f}" for r in ratios)
    return holds, (
        f"claim {'holds' if holds else 'does not hold'} ({held} of 3 readings favour the bottom): mutation "
        f"scales first/last {', '.join(scale_arm(r)[6:] for r in ratios)} reach {sweep} (best {scale_arm(best)[6:]}); "
        f"probes bottom-heavy / uniform / top-heavy {probes['bottom-heavy']:.3f} / {probes['uniform']:.3f} / "
        f"{probes['top-heavy']:.3f}; evolution on the bottom + backprop on the top {split[SPLITS[0]]:.3f} vs the "
        f"reverse {split[SPLITS[1]]:.3f} ({numbers['evolved']['bottom']:,} vs {numbers['evolved']['top']:,} evolved "
        f"parameters); beside: bottom frozen at random fits {capacity[FROZEN[0]]:.3f} of random labels vs "
        f"{capacity[FROZEN[1]]:.3f} all trained (test accuracy {generalization[FROZEN[0]]:.3f} vs "
        f"{generalization[FROZEN[1]]:.3f}) ({numbers['seeds']} seeds, {numbers['fe']:,} FE each)"
    )


def table(numbers: dict) -> list[dict[str, Any]]:
    """One row per arm: mean, min and max accuracy and FE."""
    rows = []
    for arm in arms():
        found = [r for r in numbers["runs"] if r["arm"] == arm]
        accs = [r["test_accuracy"] for r in found]
        rows.append(
            {
                "arm": arm,
                "accuracy": mean(accs),
                "min": min(accs),
                "max": max(accs),
                "FE": mean([r["fe"] for r in found]),
            }
        )
    for arm in FROZEN:
        for labels, what in (("shuffled", "train acc, random labels"), ("true", "test acc")):
            found = [r for r in numbers["frozen"] if r["arm"] == arm and r["labels"] == labels]
            accs = [r["accuracy"] for r in found]
            rows.append(
                {
                    "arm": f"{arm} ({what})",
                    "accuracy": mean(accs),
                    "min": min(accs),
                    "max": max(accs),
                    "FE": mean([r["fe"] for r in found]),
                }
            )
    return rows


def panels(numbers: dict) -> list[Panel]:
    """Test accuracy against FE (mean over seeds) of the scale sweep, probe allocations and placement arms."""

    def lines(names: list[str]) -> dict:
        found = {}
        for arm in names:
            curves = [r["curve"] for r in numbers["runs"] if r["arm"] == arm]
            length = min(len(c) for c in curves)
            found[arm] = ([c[0] for c in curves[0][:length]], [mean([c[i][2] for c in curves]) for i in range(length)])
        return found

    return [
        Panel(
            "mutation scale first/last layer", "FE", "test accuracy", lines([scale_arm(r) for r in numbers["ratios"]])
        ),
        Panel("probes per layer, equal FE", "FE", "test accuracy", lines([probe_arm(a) for a in ALLOCATIONS])),
        Panel("evolution and backprop by half", "FE", "test accuracy", lines(list(SPLITS))),
    ]


def configure(quick: bool) -> dict[str, Any]:
    """Default: MLP 64-24-40-50-10 (halves of 2,560 parameters), 400k FE per arm, 2 seeds; quick: tiny."""
    base = {"sigma": 0.01, "lr": 0.05, "probe_ratio": 4.0, "adam_lr": 3e-3}
    if quick:
        return base | {
            "widths": [12, 22, 32],
            "size": 16,
            "batch": 32,
            "fe": 20_000,
            "capacity_n": 32,
            "capacity_fe": 20_000,
            "adam_fe": 20_000,
            "seeds": 1,
        }
    return base | {
        "widths": [24, 40, 50],
        "size": 32,
        "batch": 64,
        "fe": 400_000,
        "capacity_n": 1024,
        "capacity_fe": 1_500_000,
        "adam_fe": 300_000,
        "seeds": 2,
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
