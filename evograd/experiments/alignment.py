"""``alignment``: does feedback alignment do far better than sending back Gaussian noise?

One tanh MLP per depth is trained five times from the same initial weights, with the same Adam
settings and data order, sending its error backwards by backprop (``bp``), feedback alignment
(``fa``), direct feedback alignment (``dfa``), sign symmetry (``sign``) and Gaussian noise of the
true signal's norm (``noise``), all from :func:`evograd.feedback.convert`. Reported: test accuracy,
and per hidden layer the angle between the rule's weight update direction and the true gradient,
both on one fixed training batch at the same weights, along training (90° is a random direction).
The output layer's gradient is exact under every rule and is left out of the angles.

References:
    Lillicrap, Cownden, Tweed & Akerman (2016), Random synaptic feedback weights support error
    backpropagation for deep learning.
    Nøkland (2016), Direct feedback alignment provides learning in deep neural networks.
    Liao, Leibo & Poggio (2016), How important is weight symmetry in backpropagation?
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn import functional as F

from evograd import feedback, harness, tasks
from evograd.experiments import Experiment, Panel, Progress, mean
from evograd.harness import Minibatches, accuracy
from evograd.loggers import Logger

RULES = ("bp", "fa", "dfa", "sign", "noise")


def _angles(net: torch.nn.Module, rule: str, batch: tuple) -> dict[str, float]:
    """Degrees between the rule's and backprop's gradient of each hidden weight matrix, same batch."""
    x, y = batch
    names = [n for n, _ in net.named_parameters()]
    true = feedback.feedback_gradients(net, lambda: F.cross_entropy(net(x), y), "bp")
    found = true if rule == "bp" else feedback.feedback_gradients(net, lambda: F.cross_entropy(net(x), y), rule)
    hidden = [i for i, n in enumerate(names) if n.endswith("weight")][:-1]
    return {
        names[i]: math.degrees(
            math.acos(
                max(
                    -1.0,
                    min(
                        1.0, float(F.cosine_similarity(found[i].flatten().double(), true[i].flatten().double(), dim=0))
                    ),
                )
            )
        )
        for i in hidden
    }


def train_rule(
    split: tasks.Split, rule: str, depth: int, config: dict, seed: int, logger: Logger | None = None
) -> dict[str, Any]:
    """Train under ``rule``; return test accuracy and the per-layer angles at each measured epoch.

    ``logger`` gets the mean hidden-layer angle and the FE spent at each measured epoch.
    """
    sizes = (split.train_x.shape[1], *(config["width"],) * (depth - 1), 10)
    base = tasks.mlp(sizes, seed=seed).to(split.train_x.device)
    net = base if rule == "bp" else feedback.convert(base, mode=rule, seed=seed)
    adam = torch.optim.Adam(net.parameters(), lr=config["lr"])
    probe = (split.train_x[:256], split.train_y[:256])
    batches = Minibatches(split.train_x, split.train_y, config["batch"], seed)
    step = harness.optimizer_step(adam, net, F.cross_entropy, batches)
    steps_per_epoch = len(split.train_x) // config["batch"]
    epochs, angles, fe = [0], [_angles(net, rule, probe)], 0
    name = f"depth {depth} {rule} seed {seed}"

    def log(epoch: int) -> None:
        if logger is not None:
            logger.log({"run": name, "epoch": epoch, "fe": fe, "angle": mean(list(angles[-1].values()))})

    log(0)
    for epoch in range(1, config["epochs"] + 1):
        for _ in range(steps_per_epoch):
            fe += step()
        if epoch % config["every"] == 0 or epoch == config["epochs"]:
            epochs.append(epoch)
            angles.append(_angles(net, rule, probe))
            log(epoch)
    layers = {name: [a[name] for a in angles] for name in angles[0]}
    return {"test_accuracy": accuracy(net, split.test_x, split.test_y), "epochs": epochs, "angles": layers}


def measure(config: dict, seeds: list[int], progress: Progress, logger: Logger) -> dict[str, Any]:
    """Every rule × depth × seed."""
    split, records = tasks.digits().to(config["device"]), []
    total = len(RULES) * len(config["depths"]) * len(seeds)
    for depth in config["depths"]:
        for rule in RULES:
            for seed in seeds:
                records.append(
                    {"depth": depth, "rule": rule, "seed": seed, **train_rule(split, rule, depth, config, seed, logger)}
                )
                progress(len(records) / total, f"depth {depth} {rule} seed {seed}")
    return {"depths": config["depths"], "seeds": len(seeds), "epochs": config["epochs"], "runs": records}


def _select(numbers: dict, rule: str, depth: int | None = None) -> list[dict]:
    return [r for r in numbers["runs"] if r["rule"] == rule and depth in (None, r["depth"])]


def _accuracy(numbers: dict, rule: str, depth: int | None = None) -> float:
    return mean([r["test_accuracy"] for r in _select(numbers, rule, depth)])


def _final_angle(numbers: dict, rule: str, depth: int | None = None) -> float:
    """Mean over runs and hidden layers of the angle at the last measured epoch."""
    return mean([mean([a[-1] for a in r["angles"].values()]) for r in _select(numbers, rule, depth)])


def verdict_alignment(numbers: dict) -> tuple[bool, str]:
    """Holds if FA's mean test accuracy beats noise's by at least 5 points and its final hidden-layer
    angle to the true gradient is smaller (means over depths and seeds).

    Examples:
        >>> run = lambda rule, acc, angle: {"rule": rule, "depth": 2, "test_accuracy": acc,
        ...                                  "angles": {"0.weight": [angle]}}
        >>> verdict_alignment({"depths": [2], "seeds": 1, "runs": [run("fa", 0.95, 40.0), run("noise", 0.7, 89.0)]})[0]
        True
        >>> verdict_alignment({"depths": [2], "seeds": 1, "runs": [run("fa", 0.95, 40.0), run("noise", 0.93, 89.0)]})[0]
        False
    """
    acc = {rule: _accuracy(numbers, rule) for rule in ("fa", "noise")}
    angle = {rule: _final_angle(numbers, rule) for rule in ("fa", "noise")}
    holds = acc["fa"] - acc["noise"] >= 0.05 and angle["fa"] < angle["noise"]
    depths = "/".join(str(d) for d in numbers["depths"])
    return holds, (
        f"claim {'holds' if holds else 'does not hold'}: FA reaches test accuracy {acc['fa']:.3f} vs noise "
        f"{acc['noise']:.3f} ({100 * (acc['fa'] - acc['noise']):+.1f} points, needs +5) with hidden-layer "
        f"updates {angle['fa']:.1f}° from the gradient vs {angle['noise']:.1f}° "
        f"({numbers['seeds']} seeds, depths {depths})"
    )


def table(numbers: dict) -> list[dict[str, Any]]:
    """One row per rule: test accuracy and final hidden-layer angle per depth."""
    rows = []
    for rule in RULES:
        row: dict[str, Any] = {"rule": rule}
        for d in numbers["depths"]:
            row[f"acc d{d}"] = _accuracy(numbers, rule, d)
        for d in numbers["depths"]:
            row[f"angle d{d}"] = _final_angle(numbers, rule, d)
        rows.append(row)
    return rows


def panels(numbers: dict) -> list[Panel]:
    """Mean hidden-layer angle against epoch, one panel per depth, one line per rule."""
    found = []
    for d in numbers["depths"]:
        lines = {}
        for rule in RULES:
            runs = _select(numbers, rule, d)
            curves = [[mean(v) for v in zip(*r["angles"].values())] for r in runs]
            lines[rule] = (runs[0]["epochs"], [mean(v) for v in zip(*curves)])
        found.append(Panel(f"depth {d}", "epoch", "angle to gradient (deg)", lines))
    return found


def configure(quick: bool) -> dict[str, Any]:
    """Default: depths 2/4/8, width 64, 20 epochs of Adam, 3 seeds; quick: depth 2/4, 2 epochs, 1 seed."""
    if quick:
        return {"depths": [2, 4], "width": 32, "epochs": 2, "every": 1, "batch": 64, "lr": 1e-3, "seeds": 1}
    return {"depths": [2, 4, 8], "width": 64, "epochs": 20, "every": 2, "batch": 32, "lr": 1e-3, "seeds": 3}


EXPERIMENT = Experiment(
    name="alignment",
    claim="Feedback alignment does far better than sending back Gaussian noise proportional to the error.",
    configure=configure,
    measure=measure,
    table=table,
    panels=panels,
    verdict=verdict_alignment,
)
