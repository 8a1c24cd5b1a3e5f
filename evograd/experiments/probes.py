"""``probes``: do scale-free mutations estimate a deep network's gradient better than Gaussian ones?

Two factors, crossed. A probe is ε = σ · s · d: a **direction law** draws d (per-coordinate
Gaussian, Cauchy, Lévy α = 1.0 and 1.5 at unit scale, or ``sphere``: uniform on the sphere of
radius √D, the Gaussian's typical norm), and a **length law** draws the factor s (``fixed``: s = 1,
the raw per-coordinate distribution; ``loguniform``: s = 2^(k(U − ½)), U ~ U(0, 1), spread evenly
over ``octaves`` = k octaves around 1). The ten cells share one log-spaced sweep of σ.

At a parameter point θ, ``n`` probes give loss differences Δ_i = f(θ) − f(θ+ε_i) on one fixed
batch. The estimate is the one :class:`~evograd.RollingImprovement`'s ``tell`` forms with
``weighting="slope"``: Σ_i (Δ_i/‖ε_i‖)·ε_i/‖ε_i‖, over the improving probes (``improving``) or all
of them with their sign (``signed``). Its cosine with −∇f(θ) (autograd, same batch, float64 so
rounding of tiny differences is no confound) is measured for MLPs of several depths on digits and
the teacher task, at initialization and after some Adam steps.

**Validation and test.** Each cell's σ and weighting are chosen by its mean cosine at ``verdict_n``
probes on the *validation* measurements (a training-set batch, probe generation 1) and reported on
the *test* measurements (a test-set batch, fresh probes of generation 2), at the same points.
Then each cell trains a digits MLP with that estimator alone (unit steps, no averaging, float64)
at its chosen σ and weighting, at equal FE, and its test accuracy is reported. Ties (the σ
plateau of the linear regime) go to the smallest σ.

Judgement calls: the first n of ``max(ns)`` probes are reused for each n, so the curves of one
point are nested; ``levy1.0`` is the Cauchy law, and the library draws it from the same uniform stream as its
Cauchy rows, so the two agree exactly (a consistency check);
``gaussian × fixed`` and ``sphere × fixed`` differ only by the χ fluctuation of the Gaussian norm.

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
from evograd.experiments import Experiment, Panel, Progress, mean, train_steps
from evograd.harness import Minibatches
from evograd.loggers import Logger
from evograd.noise import Mutation

DIRECTIONS = ("gaussian", "cauchy", "levy1.0", "levy1.5", "sphere")
HEAVY = ("cauchy", "levy1.0", "levy1.5")  # heavy-tailed per coordinate: what "scale-free mutation" names
LENGTHS = ("fixed", "loguniform")
CELLS = tuple(f"{d}/{length}" for d in DIRECTIONS for length in LENGTHS)
WEIGHTINGS = ("improving", "signed")
SPLITS = ("validation", "test")
MARGIN = 0.10  # relative cosine gain the verdict asks of a probe law over its reference
TASK_LOSS = {"digits": F.cross_entropy, "teacher": F.mse_loss}


def directions(law: str, seeds: torch.Tensor, dim: int) -> torch.Tensor:
    """The (n, dim) unit-scale directions of ``law`` (a name of :data:`DIRECTIONS`) for member ``seeds``.

    Per-coordinate laws are the library's own rows (:func:`evograd.noise.sample` at σ = 1); ``sphere``
    is the Gaussian row rescaled to norm √dim.

    Examples:
        >>> rows = directions("sphere", noise.member_seeds(0, 0, 3), 100)
        >>> [round(float(r), 4) for r in rows.norm(dim=1)]
        [10.0, 10.0, 10.0]
    """
    if law == "sphere":
        rows = noise.sample(Mutation(kind="gaussian", sigma=1.0), seeds, dim)  # (n, dim)
        return rows * (math.sqrt(dim) / rows.norm(dim=1, keepdim=True))
    if law.startswith("levy"):
        return noise.sample(Mutation(kind="levy", sigma=1.0, alpha=float(law[4:])), seeds, dim)
    return noise.sample(Mutation(kind=law, sigma=1.0), seeds, dim)


def lengths(law: str, n: int, octaves: float, seed: int, generation: int) -> torch.Tensor:
    """The (n,) length factors of ``law``: ones (``fixed``) or 2^(octaves·(U − ½)) (``loguniform``).

    U comes from the stream ``"probe lengths"`` of ``(seed, generation)``, so member i's factor does
    not depend on n.

    Examples:
        >>> s = lengths("loguniform", 1000, 6.0, seed=0, generation=0)
        >>> bool(s.min() >= 2**-3 and s.max() <= 2**3), lengths("fixed", 2, 6.0, 0, 0).tolist()
        (True, [1.0, 1.0])
    """
    if law == "fixed":
        return torch.ones(n, dtype=torch.float64)
    gen = torch.Generator().manual_seed(noise.stream_seed(seed, "probe lengths", generation))
    return torch.exp2(octaves * (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5))  # (n,)


def probes(cell: str, sigma: float, n: int, dim: int, seed: int, generation: int, octaves: float) -> torch.Tensor:
    """The (n, dim) float64 probes ε = σ·s·d of ``cell`` (``"direction/length"``) for one generation."""
    direction, length = cell.split("/")
    rows = directions(direction, noise.member_seeds(seed, generation, n), dim).double()  # (n, dim)
    return rows * (sigma * lengths(length, n, octaves, seed, generation))[:, None]


def estimate(rows: torch.Tensor, gain: torch.Tensor, weighting: str) -> torch.Tensor:
    """Slope-weighted sum of unit directions Σ (Δ_i/‖ε_i‖)·ε_i/‖ε_i‖ (descent direction, unnormalized).

    ``improving`` keeps only Δ_i > 0; ``signed`` uses every probe with its sign.

    Examples:
        >>> rows = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> estimate(rows, torch.tensor([0.5, -1.0]), "signed").tolist()
        [0.5, -0.5]
        >>> estimate(rows, torch.tensor([0.5, -1.0]), "improving").tolist()
        [0.5, 0.0]
    """
    weights = gain if weighting == "signed" else gain.clamp_min(0.0)  # (n,)
    return (weights / rows.norm(dim=1).pow(2)) @ rows  # (dim,)


def _data(task: str, device: str) -> tasks.Split:
    return (tasks.digits() if task == "digits" else tasks.teacher()).to(device)


def _model(task: str, split: tasks.Split, depth: int, width: int, seed: int) -> torch.nn.Sequential:
    """The MLP of ``task``, on the device of ``split``."""
    n_out = int(split.train_y.max()) + 1 if task == "digits" else split.train_y.shape[1]
    return tasks.mlp((split.train_x.shape[1], *(width,) * (depth - 1), n_out), seed=seed).to(split.train_x.device)


def cosines(
    model: torch.nn.Module, loss_fn, batch: tuple, config: dict, seed: int, generation: int
) -> dict[tuple[str, str], list[list[float]]]:
    """(cell, weighting) -> [per σ of ``config["sigmas"]``: [cosine at each n of ``config["ns"]``]].

    ``model`` and ``batch`` are float64; −∇f is the autograd gradient on the same batch.
    """
    x, y = batch
    params = [p for p in model.parameters() if p.requires_grad]
    descent = -torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss_fn(model(x), y), params)])  # (dim,)
    center, dim, n_max = flat.flatten(model).detach(), descent.numel(), max(config["ns"])
    evaluator = VmapEvaluator(model, loss_fn, batch)
    parent = evaluator.score(center[None])[0]
    found: dict[tuple[str, str], list[list[float]]] = {}
    for cell in CELLS:
        unit_rows = probes(cell, 1.0, n_max, dim, seed, generation, config["octaves"])  # (N, dim) at σ = 1
        for w in WEIGHTINGS:
            found[(cell, w)] = []
        for sigma in config["sigmas"]:
            rows = sigma * unit_rows  # (N, dim)
            gain = parent - evaluator.score(center + rows)  # (N,) > 0 where the probe improved
            for w in WEIGHTINGS:
                found[(cell, w)].append(
                    [float(F.cosine_similarity(estimate(rows[:n], gain[:n], w), descent, dim=0)) for n in config["ns"]]
                )
    return found


def _cosine_records(config: dict, seeds: list[int], tick, logger: Logger) -> list[dict]:
    records = []
    for task in config["tasks"]:
        split = _data(task, config["device"])
        batches = {
            "validation": (split.train_x[: config["batch"]].double(), split.train_y[: config["batch"]]),
            "test": (split.test_x[: config["batch"]].double(), split.test_y[: config["batch"]]),
        }
        if task == "teacher":
            batches = {k: (x, y.double()) for k, (x, y) in batches.items()}
        for depth in config["depths"]:
            for seed in seeds:
                model = _model(task, split, depth, config["width"], seed)
                adam = torch.optim.Adam(model.parameters(), lr=config["adam_lr"])
                step, done = (
                    harness.optimizer_step(
                        adam, model, TASK_LOSS[task], Minibatches(split.train_x, split.train_y, 32, seed)
                    ),
                    0,
                )
                for point in config["points"]:
                    for _ in range(point - done):  # train on to the next measuring point
                        step()
                    done = point
                    probe_model = _model(task, split, depth, config["width"], seed).double()
                    probe_model.load_state_dict(model.state_dict())
                    for generation, name in enumerate(SPLITS, start=1):
                        found = cosines(probe_model, TASK_LOSS[task], batches[name], config, seed, generation)
                        for (cell, w), sweep in found.items():
                            where = {"task": task, "depth": depth, "point": point, "seed": seed, "split": name}
                            records.append({**where, "cell": cell, "weighting": w, "cosine": sweep})
                            best = max(s[-1] for s in sweep)
                            logger.log(
                                {
                                    "run": f"{task} depth {depth} seed {seed} {name} {cell} {w}",
                                    "step": point,
                                    f"best cosine@{config['ns'][-1]}": best,
                                }
                            )
                    tick(f"{task} depth {depth} seed {seed} step {point}")
    return records


def select(numbers: dict) -> dict[str, dict[str, Any]]:
    """Each cell's σ and weighting with the best mean *validation* cosine at ``verdict_n`` probes.

    Returns:
        cell -> ``{"sigma", "weighting", "validation", "edge"}`` (``edge``: the σ is an end of the sweep).
    """
    i, sigmas = numbers["ns"].index(numbers["verdict_n"]), numbers["sigmas"]
    chosen = {}
    for cell in {r["cell"] for r in numbers["cosines"]}:
        scores = {
            (j, w): _mean_cosine(numbers, cell, w, j, i, "validation") for j in range(len(sigmas)) for w in WEIGHTINGS
        }
        (j, w), score = max(scores.items(), key=lambda item: item[1])
        chosen[cell] = {"sigma": sigmas[j], "weighting": w, "validation": score, "edge": j in (0, len(sigmas) - 1)}
    return chosen


def _mean_cosine(numbers: dict, cell: str, weighting: str, j: int, i: int, split: str, **where: Any) -> float:
    """Mean cosine of ``cell`` at σ index j and n index i over the matching records."""
    return mean(
        [
            r["cosine"][j][i]
            for r in numbers["cosines"]
            if r["cell"] == cell
            and r["weighting"] == weighting
            and r["split"] == split
            and all(r[k] == v for k, v in where.items())
        ]
    )


def reported_cosine(numbers: dict, chosen: dict, cell: str, n: int | None = None, **where: Any) -> float:
    """The test cosine of ``cell`` at its σ and weighting in ``chosen`` (:func:`select`), at n probes
    (``verdict_n`` by default)."""
    chosen = chosen[cell]
    j = numbers["sigmas"].index(chosen["sigma"])
    i = numbers["ns"].index(numbers["verdict_n"] if n is None else n)
    return _mean_cosine(numbers, cell, chosen["weighting"], j, i, "test", **where)


def _train(cell: str, sigma: float, weighting: str, config: dict, split: tasks.Split, seed: int, logger) -> dict:
    """Train a digits MLP by unit steps along the cell's estimate alone; test accuracy at equal FE.

    In float64, like the cosines: the chosen σ may be far below where float32 resolves a loss difference.
    """
    budget = config["train"]
    split = tasks.Split(split.train_x.double(), split.train_y, split.test_x.double(), split.test_y)
    model = _model("digits", split, budget["depth"], config["width"], seed).double()
    evaluator = VmapEvaluator(model, F.cross_entropy)
    batches = Minibatches(split.train_x, split.train_y, budget["batch"], seed)
    generation = [0]

    def step() -> int:
        batch = batches()
        evaluator.set_batch(batch)
        center = flat.flatten(model).detach()  # (dim,)
        rows = probes(cell, sigma, budget["size"], center.numel(), seed, 10 + generation[0], config["octaves"])
        generation[0] += 1
        gain = evaluator.score(center[None])[0] - evaluator.score(center + rows)  # (n,)
        direction = estimate(rows, gain, weighting)  # (dim,)
        length = float(direction.norm())
        if length > 0:
            flat.assign(model, center + (budget["lr"] / length) * direction)
        return (budget["size"] + 1) * len(batch[0])

    run = train_steps(step, model, split, fe=budget["fe"], logger=logger, run=f"train {cell} seed {seed}")
    return {
        "cell": cell,
        "seed": seed,
        "sigma": sigma,
        "weighting": weighting,
        "test_accuracy": run.final,
        "fe": run.fe,
    }


def measure(config: dict, seeds: list[int], progress: Progress, logger: Logger) -> dict[str, Any]:
    """Cosines of every cell × σ × weighting × n on both splits, then equal-FE training at the chosen σ."""
    total = (len(config["tasks"]) * len(config["depths"]) * len(config["points"]) + len(CELLS)) * len(seeds)
    done = [0]

    def tick(status: str) -> None:
        done[0] += 1
        progress(done[0] / total, status)

    numbers: dict[str, Any] = {
        "ns": config["ns"],
        "verdict_n": config["verdict_n"],
        "sigmas": config["sigmas"],
        "octaves": config["octaves"],
        "depths": config["depths"],
        "tasks": config["tasks"],
        "seeds": len(seeds),
        "train": config["train"],
        "cosines": _cosine_records(config, seeds, tick, logger),
    }
    numbers["selected"] = select(numbers)
    split, training = _data("digits", config["device"]), []
    for cell in CELLS:
        chosen = numbers["selected"][cell]
        for seed in seeds:
            training.append(_train(cell, chosen["sigma"], chosen["weighting"], config, split, seed, logger))
            tick(f"train {cell} seed {seed}")
    numbers["training"] = training
    return numbers


def accuracy(numbers: dict, cell: str) -> float:
    """Mean equal-FE test accuracy of ``cell`` trained at its selected σ."""
    return mean([r["test_accuracy"] for r in numbers["training"] if r["cell"] == cell])


def _setting(chosen: dict, cell: str) -> str:
    chosen = chosen[cell]
    edge = ", sweep edge" if chosen["edge"] else ""
    return f"σ={chosen['sigma']:g} {chosen['weighting']}{edge}"


def lengths_help(numbers: dict, chosen: dict) -> tuple[list[str], str]:
    """Directions whose log-uniform lengths beat fixed ones by ≥ :data:`MARGIN` in test cosine (each at
    its own selected σ), and a sentence giving every direction's relative change.

    Examples:
        >>> cells = {"gaussian/fixed": 0.2, "gaussian/loguniform": 0.25, "cauchy/fixed": 0.1, "cauchy/loguniform": 0.1}
        >>> rec = lambda c, v, s, w: {"cell": c, "weighting": w, "split": s, "cosine": [[v]]}
        >>> numbers = {"ns": [8], "verdict_n": 8, "sigmas": [0.1], "cosines": [rec(c, v, s, w) for c, v in cells.items()
        ...            for s in SPLITS for w in WEIGHTINGS]}
        >>> lengths_help(numbers, select(numbers))
        (['gaussian'], 'scale-free lengths help 1 of 2 directions at equal directions (gaussian +25%, cauchy +0%)')
    """
    present = [d for d in DIRECTIONS if all(f"{d}/{length}" in chosen for length in LENGTHS)]
    cosine = {c: reported_cosine(numbers, chosen, c) for d in present for c in (f"{d}/loguniform", f"{d}/fixed")}
    change = {d: cosine[f"{d}/loguniform"] / cosine[f"{d}/fixed"] - 1.0 for d in present}
    helped = [d for d in present if change[d] >= MARGIN]
    parts = ", ".join(f"{d} {100 * change[d]:+.0f}%" for d in present)
    return helped, f"scale-free lengths help {len(helped)} of {len(present)} directions at equal directions ({parts})"


def verdict_probes(numbers: dict) -> tuple[bool, str]:
    """Holds if the best heavy-tailed per-coordinate law (Cauchy, Lévy; fixed length) beats Gaussian in
    test cosine at ``verdict_n`` by ≥ :data:`MARGIN` (relative) and trains at least as well at equal FE,
    every cell at its own σ and weighting chosen on the validation measurements. The line also says
    whether log-uniform lengths help at equal directions (:func:`lengths_help`).

    Examples:
        >>> def rec(cell, v):
        ...     return [{"cell": cell, "weighting": w, "split": s, "cosine": [[v]]} for w in WEIGHTINGS for s in SPLITS]
        >>> def acc(cell, a):
        ...     return [{"cell": cell, "test_accuracy": a}]
        >>> numbers = {"ns": [64], "verdict_n": 64, "sigmas": [0.01], "seeds": 1, "depths": [4],
        ...            "cosines": rec("gaussian/fixed", 0.2) + rec("cauchy/fixed", 0.3),
        ...            "training": acc("gaussian/fixed", 0.8) + acc("cauchy/fixed", 0.9)}
        >>> verdict_probes(numbers)[0]
        True
    """
    chosen, n = select(numbers), numbers["verdict_n"]
    heavy_cells = [f"{d}/fixed" for d in HEAVY if f"{d}/fixed" in chosen]
    score = {c: reported_cosine(numbers, chosen, c) for c in [*heavy_cells, "gaussian/fixed"]}
    best = max(heavy_cells, key=score.get)
    acc = {c: accuracy(numbers, c) for c in (best, "gaussian/fixed")}
    gauss = score["gaussian/fixed"]
    holds = score[best] - gauss >= MARGIN * abs(gauss) and score[best] > gauss and acc[best] >= acc["gaussian/fixed"]
    _, lengths_line = lengths_help(numbers, chosen)
    depths = "/".join(str(d) for d in numbers["depths"])
    return holds, (
        f"claim {'holds' if holds else 'does not hold'}: the best heavy-tailed per-coordinate probes "
        f"({best.split('/')[0]}, {_setting(chosen, best)}) reach test cosine {score[best]:.3f} vs Gaussian "
        f"{gauss:.3f} ({_setting(chosen, 'gaussian/fixed')}) at n={n} (needs +{100 * MARGIN:.0f}%), and test "
        f"accuracy {acc[best]:.3f} vs {acc['gaussian/fixed']:.3f} at equal FE; {lengths_line} "
        f"(σ and weighting per cell chosen on validation, reported on test; {numbers['seeds']} seeds, depths {depths})"
    )


def table(numbers: dict) -> list[dict[str, Any]]:
    """One row per cell: selected σ and weighting, validation and test cosine, test cosine per n and depth, accuracy."""
    chosen, n = select(numbers), numbers["verdict_n"]
    rows = []
    for cell in CELLS:
        row: dict[str, Any] = {"direction/length": cell, "sigma": f"{chosen[cell]['sigma']:g}"}
        row["weighting"] = chosen[cell]["weighting"]
        row[f"val@{n}"] = chosen[cell]["validation"]
        row.update({f"test@{m}": reported_cosine(numbers, chosen, cell, m) for m in numbers["ns"]})
        row.update({f"d{d}@{n}": reported_cosine(numbers, chosen, cell, depth=d) for d in numbers["depths"]})
        row["test acc"] = accuracy(numbers, cell)
        rows.append(row)
    return rows


def panels(numbers: dict) -> list[Panel]:
    """The σ sweeps (validation cosine at ``verdict_n``, better weighting) per length law, and test cosine against n."""
    i, sigmas = numbers["ns"].index(numbers["verdict_n"]), numbers["sigmas"]

    def sweep(cell: str) -> list[float]:
        return [max(_mean_cosine(numbers, cell, w, j, i, "validation") for w in WEIGHTINGS) for j in range(len(sigmas))]

    found = [
        Panel(
            f"{length} lengths: σ sweep (validation, n={numbers['verdict_n']})",
            "sigma",
            "cosine to -gradient",
            {d: (sigmas, sweep(f"{d}/{length}")) for d in DIRECTIONS},
            logx=True,
        )
        for length in LENGTHS
    ]
    chosen = select(numbers)
    lines = {c: (numbers["ns"], [reported_cosine(numbers, chosen, c, m) for m in numbers["ns"]]) for c in CELLS}
    return [*found, Panel("test, each cell at its chosen σ", "probes n", "cosine to -gradient", lines, True)]


def configure(quick: bool) -> dict[str, Any]:
    """Default: digits and teacher, depths 2/4, σ = 1e-7…1e-1 (7 values), n = 16…128, 1 seed; quick: tiny."""
    if quick:
        return {
            "tasks": ["digits"],
            "depths": [2],
            "width": 16,
            "ns": [8, 32],
            "verdict_n": 32,
            "sigmas": [1e-4, 1e-3, 1e-2, 1e-1, 0.3, 1.0],
            "octaves": 6.0,
            "points": [0],
            "batch": 64,
            "adam_lr": 1e-3,
            "seeds": 1,
            "train": {"depth": 2, "size": 16, "batch": 32, "lr": 0.05, "fe": 10_000},
        }
    return {
        "tasks": ["digits", "teacher"],
        "depths": [2, 4],
        "width": 32,
        "ns": [16, 32, 128],
        "verdict_n": 128,
        "sigmas": [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
        "octaves": 6.0,
        "points": [0, 300],
        "batch": 64,
        "adam_lr": 1e-3,
        "seeds": 1,
        "train": {"depth": 4, "size": 32, "batch": 64, "lr": 0.05, "fe": 400_000},
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
