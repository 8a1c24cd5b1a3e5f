"""``probes``: do scale-free mutations estimate a deep network's gradient better than Gaussian ones?

At a parameter point θ, ``n`` probes ε_i give loss differences Δ_i = f(θ) − f(θ+ε_i) on one fixed
batch. The estimate is what :class:`~evograd.RollingImprovement`'s ``tell`` forms with
``weighting="slope"``: slope-weighted unit directions Σ_i (Δ_i/‖ε_i‖)·ε_i/‖ε_i‖ over the improving
probes (Δ_i > 0, "improving") or over all of them with their sign ("signed", ``use_worse=True``).
Its cosine with the true descent direction −∇f(θ) (autograd, same batch) is measured for n = 16 …
1024, for MLPs of several depths on digits and on the teacher task, at initialization and at points
along an Adam training run. Then each mutation trains a digits MLP with the same estimator at
equal FE, and its training accuracy is reported.

Judgement calls: per-coordinate kinds (Gaussian, Cauchy, Lévy) use σ = 0.01 unclipped, the raw
distributions the claim is about; the radial log-uniform kind uses σ·√D as its largest norm (the
Gaussian's typical norm), a Gaussian direction with magnitude spread over ``log_range`` = 5 e-folds.
The first n of 1024 probes are reused for each n, so the curves of one point are nested.

References:
    Yao & Liu (1999) and Lee & Yao (2004) for Cauchy and Lévy mutation; Salimans et al. (2017) for the
    signed estimator; Baydin et al. (2022) on gradient estimates from random directions.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn import functional as F

from evograd import flat, harness, noise, tasks
from evograd.evaluate import VmapEvaluator
from evograd.experiments import Experiment, Panel, Progress, mean, train_classifier
from evograd.harness import Minibatches, evolution
from evograd.loggers import Logger
from evograd.noise import Mutation
from evograd.optim import HybridOptimizer
from evograd.strategies import RollingImprovement

KINDS = ("gaussian", "cauchy", "levy1.2", "levy1.5", "levy1.8", "loguniform")
WEIGHTINGS = ("improving", "signed")
TASK_LOSS = {"digits": F.cross_entropy, "teacher": F.mse_loss}


def mutation(kind: str, sigma: float, dim: int) -> Mutation:
    """The probe distribution ``kind`` (a name of :data:`KINDS`) at scale ``sigma`` in ``dim`` coordinates.

    Examples:
        >>> mutation("levy1.2", 0.01, 100).alpha, round(mutation("loguniform", 0.01, 100).sigma, 6)
        (1.2, 0.1)
    """
    if kind.startswith("levy"):
        return Mutation(kind="levy", sigma=sigma, alpha=float(kind[4:]))
    if kind == "loguniform":
        return Mutation(kind="loguniform", sigma=sigma * math.sqrt(dim))
    return Mutation(kind=kind, sigma=sigma)


def _data(task: str, device: str) -> tasks.Split:
    return (tasks.digits() if task == "digits" else tasks.teacher()).to(device)


def _model(task: str, split: tasks.Split, depth: int, width: int, seed: int) -> torch.nn.Sequential:
    """The MLP of ``task``, on the device of ``split``."""
    n_out = int(split.train_y.max()) + 1 if task == "digits" else split.train_y.shape[1]
    return tasks.mlp((split.train_x.shape[1], *(width,) * (depth - 1), n_out), seed=seed).to(split.train_x.device)


def probe_cosines(
    model: torch.nn.Module, loss_fn, batch: tuple, mutation: Mutation, ns: list[int], seed: int
) -> dict[str, list[float]]:
    """Cosine between −∇f and the slope-weighted estimate from the first n of max(ns) probes, per weighting."""
    x, y = batch
    params = [p for p in model.parameters() if p.requires_grad]
    descent = -torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss_fn(model(x), y), params)])  # (dim,)
    center, dim = flat.flatten(model), descent.numel()
    evaluator = VmapEvaluator(model, loss_fn, batch)
    seeds = noise.member_seeds(seed, 0, max(ns))
    parent = evaluator(center, torch.tensor([noise.PARENT_SEED]), mutation)
    gain = (parent - evaluator(center, seeds, mutation)).double()  # (N,) > 0 where the probe improved
    found = {}
    for weighting in WEIGHTINGS:
        weights = gain if weighting == "signed" else gain.clamp_min(0.0)
        found[weighting] = []
        for n in ns:
            estimate, _ = noise.weighted_sum(mutation, seeds[:n], weights[:n].float(), dim, norm_power=2.0)
            found[weighting].append(float(F.cosine_similarity(estimate.double(), descent.double(), dim=0)))
    return found


def _cosine_records(config: dict, seeds: list[int], tick, logger: Logger) -> list[dict]:
    records = []
    for task in config["tasks"]:
        split = _data(task, config["device"])
        probe = (split.train_x[: config["batch"]], split.train_y[: config["batch"]])
        for depth in config["depths"]:
            for seed in seeds:
                model = _model(task, split, depth, config["width"], seed)
                adam = torch.optim.Adam(model.parameters(), lr=config["adam_lr"])
                batches = Minibatches(split.train_x, split.train_y, 32, seed)
                step, done = harness.optimizer_step(adam, model, TASK_LOSS[task], batches), 0
                for point in config["points"]:
                    for _ in range(point - done):  # train on to the next measuring point
                        step()
                    done = point
                    dim = flat.layout_of(model).dim
                    for kind in KINDS:
                        found = probe_cosines(
                            model, TASK_LOSS[task], probe, mutation(kind, config["sigma"], dim), config["ns"], seed
                        )
                        records += [
                            {
                                "task": task,
                                "depth": depth,
                                "point": point,
                                "seed": seed,
                                "kind": kind,
                                "weighting": w,
                                "cosine": c,
                            }
                            for w, c in found.items()
                        ]
                        for w, c in found.items():
                            run = f"{task} depth {depth} seed {seed} {kind} {w}"
                            cosines = {f"cosine@{n}": v for n, v in zip(config["ns"], c)}
                            logger.log({"run": run, "step": point, **cosines})
                    tick(f"{task} depth {depth} seed {seed} step {point}")
    return records


def _training_records(config: dict, seeds: list[int], tick, logger: Logger) -> list[dict]:
    split, records = _data("digits", config["device"]), []
    budget = config["train"]
    for kind in KINDS:
        for weighting in WEIGHTINGS:
            for seed in seeds:
                model = _model("digits", split, budget["depth"], config["width"], seed)
                strategy = RollingImprovement(
                    size=budget["size"],
                    mutation=mutation(kind, config["sigma"], flat.layout_of(model).dim),
                    use_worse=weighting == "signed",
                )
                optimizer = HybridOptimizer(
                    model.parameters(),
                    evolution(strategy, seed),
                    lr=budget["lr"],
                    evaluator=VmapEvaluator(model, F.cross_entropy),
                )
                run = train_classifier(
                    model,
                    optimizer,
                    split,
                    batch_size=budget["batch"],
                    seed=seed,
                    fe=budget["fe"],
                    gradient=False,
                    on="train",
                    logger=logger,
                    run=f"train {kind} {weighting} seed {seed}",
                )
                records.append(
                    {"kind": kind, "weighting": weighting, "seed": seed, "train_accuracy": run.final, "fe": run.fe}
                )
                tick(f"train {kind} {weighting} seed {seed}")
    return records


def measure(config: dict, seeds: list[int], progress: Progress, logger: Logger) -> dict[str, Any]:
    """Cosines for every task × depth × seed × point × kind × weighting × n, then equal-FE training."""
    total = (len(config["tasks"]) * len(config["depths"]) * len(config["points"]) + len(KINDS) * len(WEIGHTINGS)) * len(
        seeds
    )
    done = [0]

    def tick(status: str) -> None:
        done[0] += 1
        progress(done[0] / total, status)

    return {
        "ns": config["ns"],
        "verdict_n": config["verdict_n"],
        "depths": config["depths"],
        "seeds": len(seeds),
        "cosines": _cosine_records(config, seeds, tick, logger),
        "training": _training_records(config, seeds, tick, logger),
        "train_fe": config["train"]["fe"],
        "train_depth": config["train"]["depth"],
    }


def _cosine(numbers: dict, kind: str, weighting: str, n: int, **where: Any) -> float:
    """Mean cosine at n probes over the records matching ``where`` (all tasks, depths, points, seeds by default)."""
    i = numbers["ns"].index(n)
    return mean(
        [
            r["cosine"][i]
            for r in numbers["cosines"]
            if r["kind"] == kind and r["weighting"] == weighting and all(r[k] == v for k, v in where.items())
        ]
    )


def _accuracy(numbers: dict, kind: str, weighting: str) -> float:
    return mean([r["train_accuracy"] for r in numbers["training"] if r["kind"] == kind and r["weighting"] == weighting])


def _best_weighting(numbers: dict, kind: str) -> str:
    n = numbers["verdict_n"]
    return max(WEIGHTINGS, key=lambda w: _cosine(numbers, kind, w, n))


def verdict_probes(numbers: dict) -> tuple[bool, str]:
    """Holds if the best scale-free kind's cosine at ``verdict_n`` probes beats Gaussian's by ≥ 10%
    (relative; each kind with its better weighting, averaged over tasks, depths, points and seeds) and
    its equal-FE training accuracy is at least Gaussian's.

    Examples:
        >>> rec = lambda kind, c: [{"kind": kind, "weighting": w, "cosine": [c]} for w in WEIGHTINGS]
        >>> acc = lambda kind, a: [{"kind": kind, "weighting": w, "train_accuracy": a} for w in WEIGHTINGS]
        >>> numbers = {"ns": [256], "verdict_n": 256, "depths": [4], "seeds": 1,
        ...            "cosines": rec("gaussian", 0.2) + rec("cauchy", 0.3),
        ...            "training": acc("gaussian", 0.8) + acc("cauchy", 0.9)}
        >>> verdict_probes(numbers)[0]
        True
    """
    n = numbers["verdict_n"]
    score = {k: _cosine(numbers, k, _best_weighting(numbers, k), n) for k in {r["kind"] for r in numbers["cosines"]}}
    best = max((k for k in score if k != "gaussian"), key=score.get)
    acc = {k: _accuracy(numbers, k, _best_weighting(numbers, k)) for k in (best, "gaussian")}
    holds = (
        score[best] - score["gaussian"] >= 0.1 * abs(score["gaussian"])
        and score[best] > score["gaussian"]
        and acc[best] >= acc["gaussian"]
    )
    depths = "/".join(str(d) for d in numbers["depths"])
    return holds, (
        f"claim {'holds' if holds else 'does not hold'}: best scale-free probes ({best}) reach cosine "
        f"{score[best]:.3f} vs Gaussian {score['gaussian']:.3f} at n={n} (needs +10%), and train accuracy "
        f"{acc[best]:.3f} vs {acc['gaussian']:.3f} at equal FE ({numbers['seeds']} seeds, depths {depths})"
    )


def table(numbers: dict) -> list[dict[str, Any]]:
    """One row per kind × weighting: cosine at each n, at ``verdict_n`` per depth, and training accuracy."""
    n = numbers["verdict_n"]
    rows = []
    for kind in KINDS:
        for weighting in WEIGHTINGS:
            row: dict[str, Any] = {"probe": kind, "weighting": weighting}
            row.update({f"cos@{m}": _cosine(numbers, kind, weighting, m) for m in numbers["ns"]})
            row.update({f"d{d}@{n}": _cosine(numbers, kind, weighting, n, depth=d) for d in numbers["depths"]})
            row["train acc"] = _accuracy(numbers, kind, weighting)
            rows.append(row)
    return rows


def panels(numbers: dict) -> list[Panel]:
    """Cosine against n, one panel per depth (improving-only), and one of the signed estimator."""
    ns = numbers["ns"]

    def lines(weighting: str, **where: Any) -> dict:
        return {k: (ns, [_cosine(numbers, k, weighting, n, **where) for n in ns]) for k in KINDS}

    found = [
        Panel(f"depth {d}, improving-only", "probes n", "cosine to -gradient", lines("improving", depth=d), True)
        for d in numbers["depths"]
    ]
    return found + [Panel("all depths, signed", "probes n", "cosine to -gradient", lines("signed"), True)]


def configure(quick: bool) -> dict[str, Any]:
    """Default: depths 2/4/8 on digits and teacher, n = 16…1024, 3 seeds; quick: depth 2/4, digits, 1 seed."""
    if quick:
        return {
            "tasks": ["digits"],
            "depths": [2, 4],
            "width": 16,
            "ns": [16, 64],
            "verdict_n": 64,
            "points": [0],
            "batch": 64,
            "sigma": 0.01,
            "adam_lr": 1e-3,
            "seeds": 1,
            "train": {"depth": 2, "size": 16, "batch": 32, "lr": 0.05, "fe": 20_000},
        }
    return {
        "tasks": ["digits", "teacher"],
        "depths": [2, 4, 8],
        "width": 32,
        "ns": [16, 64, 256, 1024],
        "verdict_n": 256,
        "points": [0, 300],
        "batch": 256,
        "sigma": 0.01,
        "adam_lr": 1e-3,
        "seeds": 3,
        "train": {"depth": 4, "size": 64, "batch": 128, "lr": 0.05, "fe": 2_000_000},
    }


EXPERIMENT = Experiment(
    name="probes",
    claim="Scale-free mutations make good probes for estimating the gradient in a deep network; Gaussian ones do not.",
    configure=configure,
    measure=measure,
    table=table,
    panels=panels,
    verdict=verdict_probes,
)
