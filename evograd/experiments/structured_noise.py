"""``structured-noise``: does noise tied to the architecture beat i.i.d. per-coordinate noise?

The arms perturb a digits MLP with OpenES's antithetic Gaussian mutations of three shapes
(:data:`ARMS`): ``full`` (every coordinate i.i.d., the reference) and ``rank1``/``rank4``
(``Mutation(rank=r)``: every weight matrix by σ/√r · A Bᵀ, biases coordinate by coordinate,
:mod:`evograd.lowrank`). Entries have the same per-coordinate variance σ² in every arm, and each
arm gets the same population, minibatches, initial weights and FE; low-rank members are scored by
:class:`~evograd.LowRankEvaluator`, full-rank ones by :class:`~evograd.VmapEvaluator` (the
fitness agrees to float tolerance; FE count samples, not arithmetic).

Two measures, each arm at its own best σ of one log-spaced sweep, chosen on validation data and
reported on test data:

* **cosine**: at the initial weights and after some Adam steps, one OpenES generation of ``size``
  members on a whole batch gives the estimate ``g`` (:meth:`~evograd.OpenES.gradient_estimate`);
  its cosine with that batch's true gradient (autograd, not charged). σ is chosen on the
  validation batch (held out of the training set, probe seeds of one stream) and the cosine is
  reported on the test set with fresh probes (another stream).
* **accuracy**: OpenES trains the MLP on the rest of the training set at equal FE at every σ of the
  sweep; σ is chosen by the final validation accuracy and the test accuracy of that run is reported.

References:
    Sarkar, Fellows, Duque et al. (2025), Evolution strategies at the hyperscale (EGGROLL),
    arXiv:2511.16652. Salimans et al. (2017) for OpenES.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from evograd import flat, harness, noise, tasks
from evograd.evaluate import LowRankEvaluator, VmapEvaluator
from evograd.experiments import Experiment, Panel, Progress, mean, train_steps
from evograd.harness import Minibatches
from evograd.loggers import Logger
from evograd.noise import Mutation
from evograd.strategies import OpenES

ARMS = {"full": None, "rank1": 1, "rank4": 4}
SPLITS = ("validation", "test")
MARGIN = 0.10  # relative cosine gain the verdict asks of low-rank noise over full-rank noise


def _data(config: dict) -> tuple[tasks.Split, tuple, tuple]:
    """Training data without the validation part, the validation batch and the test batch."""
    split = tasks.digits().to(config["device"])
    k = len(split.train_y) - config["validation"]
    fit = tasks.Split(split.train_x[:k], split.train_y[:k], split.train_x[k:], split.train_y[k:])
    return fit, (fit.test_x, fit.test_y), (split.test_x, split.test_y)


def _model(config: dict, seed: int, device: torch.device) -> torch.nn.Sequential:
    return tasks.mlp((64, *(config["width"],) * (config["depth"] - 1), 10), seed=seed).to(device)


def strategy(arm: str, sigma: float, config: dict, model: torch.nn.Module) -> OpenES:
    """OpenES with antithetic Gaussian mutations of ``arm``'s rank at ``sigma``, resolved for ``model``."""
    mutation = Mutation(sigma=sigma, rank=ARMS[arm], antithetic=True)
    if ARMS[arm] is not None:
        mutation = mutation.resolve(model)
    return OpenES(size=config["size"], mutation=mutation, lr=config["lr"])


def evaluator(arm: str, model: torch.nn.Module, batch: tuple | None = None) -> VmapEvaluator:
    """:class:`~evograd.LowRankEvaluator` for a low-rank arm, :class:`~evograd.VmapEvaluator` for ``full``."""
    kind = VmapEvaluator if ARMS[arm] is None else LowRankEvaluator
    return kind(model, F.cross_entropy, batch)


def estimate_cosine(arm: str, sigma: float, config: dict, model: torch.nn.Module, batch: tuple, seed: int) -> float:
    """Cosine of one OpenES generation's estimate (−g) with −∇ of the loss on all of ``batch``."""
    x, y = batch
    params = [p for p in model.parameters() if p.requires_grad]
    descent = -torch.cat([g.reshape(-1) for g in torch.autograd.grad(F.cross_entropy(model(x), y), params)])  # (dim,)
    es = strategy(arm, sigma, config, model)
    state = es.init(flat.flatten(model).detach(), seed=seed)
    seeds = es.ask(state)
    state, _ = es.tell(state, seeds, evaluator(arm, model, batch)(state.center, seeds, state.mutation))
    return float(F.cosine_similarity(-es.gradient_estimate(state).double(), descent.double(), dim=0))


def _cosine_records(config: dict, seeds: list[int], data: tuple, tick, logger: Logger) -> list[dict]:
    fit, validation, test = data
    records = []
    for seed in seeds:
        model = _model(config, seed, fit.train_x.device)
        adam = torch.optim.Adam(model.parameters(), lr=config["adam_lr"])
        batches = Minibatches(fit.train_x, fit.train_y, 32, seed)
        step, done = harness.optimizer_step(adam, model, F.cross_entropy, batches), 0
        for point in config["points"]:
            for _ in range(point - done):  # train on to the next measuring point
                step()
            done = point
            for name, batch in zip(SPLITS, (validation, test)):
                probe_seed = noise.stream_seed(seed, f"{name} probes", point)
                for arm in ARMS:
                    sweep = [estimate_cosine(arm, s, config, model, batch, probe_seed) for s in config["sigmas"]]
                    records.append({"arm": arm, "split": name, "point": point, "seed": seed, "cosine": sweep})
                    logger.log({"run": f"cosine {arm} seed {seed} {name}", "step": point, "best cosine": max(sweep)})
            tick(f"cosines seed {seed} step {point}")
    return records


def _train(arm: str, sigma: float, config: dict, data: tuple, seed: int, logger: Logger) -> dict:
    """OpenES on the fitting data at equal FE: final validation accuracy and test accuracy."""
    fit, _, (test_x, test_y) = data
    model = _model(config, seed, fit.train_x.device)
    es = strategy(arm, sigma, config, model)
    score = evaluator(arm, model)
    batches = Minibatches(fit.train_x, fit.train_y, config["batch"], seed)
    state = [es.init(flat.flatten(model).detach(), seed=seed)]

    def step() -> int:
        batch = batches()
        score.set_batch(batch)
        seeds = es.ask(state[0])
        state[0], _ = es.tell(state[0], seeds, score(state[0].center, seeds, state[0].mutation))
        flat.assign(model, state[0].center)
        return len(seeds) * len(batch[0])

    run = train_steps(step, model, fit, fe=config["fe"], logger=logger, run=f"train {arm} σ={sigma:g} seed {seed}")
    return {
        "arm": arm,
        "sigma": sigma,
        "seed": seed,
        "validation_accuracy": run.final,
        "test_accuracy": harness.accuracy(model, test_x, test_y),
        "fe": run.fe,
    }


def measure(config: dict, seeds: list[int], progress: Progress, logger: Logger) -> dict[str, Any]:
    """Cosines of every arm × σ on both splits, then equal-FE OpenES training of every arm × σ."""
    total = (len(config["points"]) + len(ARMS) * len(config["sigmas"])) * len(seeds)
    done = [0]

    def tick(status: str) -> None:
        done[0] += 1
        progress(done[0] / total, status)

    data = _data(config)
    numbers: dict[str, Any] = {
        "arms": ARMS,
        "sigmas": config["sigmas"],
        "size": config["size"],
        "fe": config["fe"],
        "depth": config["depth"],
        "width": config["width"],
        "dim": sum(p.numel() for p in _model(config, 0, torch.device("cpu")).parameters()),
        "points": config["points"],
        "seeds": len(seeds),
        "cosines": _cosine_records(config, seeds, data, tick, logger),
    }
    training = []
    for arm in ARMS:
        for sigma in config["sigmas"]:
            for seed in seeds:
                training.append(_train(arm, sigma, config, data, seed, logger))
                tick(f"train {arm} σ={sigma:g} seed {seed}")
    numbers["training"] = training
    return numbers


def _cosine(numbers: dict, arm: str, j: int, split: str) -> float:
    """Mean cosine of ``arm`` at σ index j on ``split`` over points and seeds."""
    return mean([r["cosine"][j] for r in numbers["cosines"] if r["arm"] == arm and r["split"] == split])


def _accuracy(numbers: dict, arm: str, sigma: float, key: str) -> float:
    return mean([r[key] for r in numbers["training"] if r["arm"] == arm and r["sigma"] == sigma])


def select(numbers: dict) -> dict[str, dict[str, Any]]:
    """Per arm: the σ of the best mean validation cosine and its test cosine, and the σ of the best mean
    validation accuracy and its test accuracy (ties go to the smaller σ).

    Examples:
        >>> numbers = {"sigmas": [0.01, 0.1], "arms": {"full": None},
        ...            "cosines": [{"arm": "full", "split": s, "cosine": [0.2, 0.3]} for s in SPLITS],
        ...            "training": [{"arm": "full", "sigma": s, "validation_accuracy": a, "test_accuracy": a}
        ...                         for s, a in ((0.01, 0.9), (0.1, 0.8))]}
        >>> select(numbers)["full"]["cosine_sigma"], select(numbers)["full"]["accuracy_sigma"]
        (0.1, 0.01)
    """
    sigmas, last = numbers["sigmas"], len(numbers["sigmas"]) - 1
    chosen = {}
    for arm in numbers["arms"]:
        j = max(range(len(sigmas)), key=lambda i: (_cosine(numbers, arm, i, "validation"), -i))
        k = max(range(len(sigmas)), key=lambda i: (_accuracy(numbers, arm, sigmas[i], "validation_accuracy"), -i))
        chosen[arm] = {
            "cosine_sigma": sigmas[j],
            "validation_cosine": _cosine(numbers, arm, j, "validation"),
            "cosine": _cosine(numbers, arm, j, "test"),
            "cosine_edge": j in (0, last),
            "accuracy_sigma": sigmas[k],
            "accuracy": _accuracy(numbers, arm, sigmas[k], "test_accuracy"),
            "accuracy_edge": k in (0, last),
        }
    return chosen


def _sigma(chosen: dict, arm: str, measure: str) -> str:
    edge = ", sweep edge" if chosen[arm][f"{measure}_edge"] else ""
    return f"σ={chosen[arm][f'{measure}_sigma']:g}{edge}"


def verdict_structured_noise(numbers: dict) -> tuple[bool, str]:
    """Holds if the best low-rank arm (by validation cosine) beats full-rank Gaussian noise in test
    cosine by ≥ :data:`MARGIN` (relative) and reaches at least its test accuracy at equal FE, every
    arm at its own σ chosen on validation data (one σ for the cosine, one for training).

    Examples:
        >>> def numbers(cos, acc):
        ...     return {"sigmas": [0.01], "arms": ARMS, "seeds": 1, "fe": 1000, "size": 8, "depth": 2, "width": 16,
        ...             "dim": 1000, "points": [0],
        ...             "cosines": [{"arm": a, "split": s, "cosine": [cos[a]]} for a in ARMS for s in SPLITS],
        ...             "training": [{"arm": a, "sigma": 0.01, "validation_accuracy": acc[a],
        ...                           "test_accuracy": acc[a]} for a in ARMS]}
        >>> verdict_structured_noise(numbers({"full": 0.2, "rank1": 0.3, "rank4": 0.2}, dict.fromkeys(ARMS, 0.8)))[0]
        True
        >>> verdict_structured_noise(numbers({"full": 0.2, "rank1": 0.21, "rank4": 0.2}, dict.fromkeys(ARMS, 0.8)))[0]
        False
    """
    chosen = select(numbers)
    low = [a for a in numbers["arms"] if a != "full"]
    best = max(low, key=lambda a: chosen[a]["validation_cosine"])  # picked on validation too
    full, mine = chosen["full"], chosen[best]
    holds = (
        mine["cosine"] - full["cosine"] >= MARGIN * abs(full["cosine"])
        and mine["cosine"] > full["cosine"]
        and mine["accuracy"] >= full["accuracy"]
    )
    others = ", ".join(
        f"{a} cosine {chosen[a]['cosine']:.3f} accuracy {chosen[a]['accuracy']:.3f}" for a in low if a != best
    )
    return holds, (
        f"claim {'holds' if holds else 'does not hold'}: the best low-rank noise ({best}) reaches test cosine "
        f"{mine['cosine']:.3f} ({_sigma(chosen, best, 'cosine')}) vs full-rank {full['cosine']:.3f} "
        f"({_sigma(chosen, 'full', 'cosine')}) (needs +{100 * MARGIN:.0f}%), and test accuracy "
        f"{mine['accuracy']:.3f} ({_sigma(chosen, best, 'accuracy')}) vs {full['accuracy']:.3f} "
        f"({_sigma(chosen, 'full', 'accuracy')}) at equal FE"
        f"{'; ' + others if others else ''} (OpenES, {numbers['size']} antithetic members, digits MLP depth "
        f"{numbers['depth']} width {numbers['width']}, {numbers['dim']:,} parameters, {numbers['fe']:,} FE per "
        f"training run; σ per arm chosen on validation, reported on test; same seeds, batches and initial "
        f"weights; {numbers['seeds']} seeds)"
    )


def table(numbers: dict) -> list[dict[str, Any]]:
    """One row per arm: validation cosine per σ, chosen σ and test cosine, validation accuracy per σ, test accuracy."""
    chosen, rows = select(numbers), []
    for arm in numbers["arms"]:
        row: dict[str, Any] = {"arm": arm}
        row.update({f"vcos σ={s:g}": _cosine(numbers, arm, j, "validation") for j, s in enumerate(numbers["sigmas"])})
        row["σ cos"] = f"{chosen[arm]['cosine_sigma']:g}"
        row["test cos"] = chosen[arm]["cosine"]
        row.update({f"vacc σ={s:g}": _accuracy(numbers, arm, s, "validation_accuracy") for s in numbers["sigmas"]})
        row["σ acc"] = f"{chosen[arm]['accuracy_sigma']:g}"
        row["test acc"] = chosen[arm]["accuracy"]
        rows.append(row)
    return rows


def panels(numbers: dict) -> list[Panel]:
    """The σ sweeps of validation cosine and of validation accuracy, one line per arm."""
    sigmas = numbers["sigmas"]
    cos = {a: (sigmas, [_cosine(numbers, a, j, "validation") for j in range(len(sigmas))]) for a in numbers["arms"]}
    acc = {a: (sigmas, [_accuracy(numbers, a, s, "validation_accuracy") for s in sigmas]) for a in numbers["arms"]}
    return [
        Panel(f"σ sweep: cosine, n={numbers['size']} (validation)", "sigma", "cosine to -gradient", cos, logx=True),
        Panel(f"σ sweep: accuracy at {numbers['fe']:,} FE (validation)", "sigma", "accuracy", acc, logx=True),
    ]


def configure(quick: bool) -> dict[str, Any]:
    """Default: MLP 64-64-64-10, 32 antithetic members, σ = 1e-3…3e-1 (6 values), 250k FE per run, 4 seeds."""
    if quick:
        return {
            "depth": 2,
            "width": 16,
            "size": 8,
            "batch": 32,
            "lr": 0.03,
            "adam_lr": 1e-3,
            "sigmas": [0.003, 0.03, 0.3, 3.0],
            "points": [0],
            "validation": 256,
            "fe": 3_000,
            "seeds": 1,
        }
    return {
        "depth": 3,
        "width": 64,
        "size": 32,
        "batch": 64,
        "lr": 0.03,
        "adam_lr": 1e-3,
        "sigmas": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
        "points": [0, 100, 300],
        "validation": 300,
        "fe": 250_000,
        "seeds": 4,
    }


EXPERIMENT = Experiment(
    name="structured-noise",
    claim="Noise tied to the architecture (low-rank per weight matrix) works better than i.i.d. per-coordinate noise.",
    configure=configure,
    measure=measure,
    table=table,
    panels=panels,
    verdict=verdict_structured_noise,
)
