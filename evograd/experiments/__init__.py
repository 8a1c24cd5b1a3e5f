"""Six claims about randomness in deep learning, each a one-command experiment with a verdict.

``evograd experiment NAME [--quick] [--seeds N] [--out DIR]`` runs one of:

* ``probes``: scale-free mutations estimate the gradient of a deep network better than Gaussian ones
  (direction law × length law, each at its own best σ).
* ``alignment``: feedback alignment does far better than sending back norm-matched Gaussian noise.
* ``random-labels``: gradient-trained networks memorize random labels, and it takes only a small
  factor longer.
* ``layers``: bottom layers should be searched more thoroughly than top layers.
* ``rolling-average``: averaging improving directions over generations estimates the gradient better.
* ``structured-noise``: low-rank noise per weight matrix works better than i.i.d. per-coordinate noise.

Every experiment is a :class:`Experiment`: a configuration (default or ``quick``), a ``measure``
function returning a JSON-ready dict of every number, a table, plot panels, and a pure verdict rule
``verdict_<name>(numbers) -> (holds, line)``. :func:`run` shares the plumbing: it round-trips the
numbers through JSON *before* the verdict is computed (so the verdict stored is exactly the rule
applied to the stored numbers), prints the table and the verdict, and writes ``NAME.json``,
``NAME.txt`` (the table) and ``NAME.png`` into the output directory. Cost is in forward-pass
equivalents (FE): one sample forward 1 FE, a backward pass 2 FE.

References:
    Zhang, Bengio, Hardt, Recht & Vinyals (2017), Understanding deep learning requires rethinking
    generalization.
    Lillicrap, Cownden, Tweed & Akerman (2016), Random synaptic feedback weights support error
    backpropagation for deep learning.
    Nøkland (2016), Direct feedback alignment provides learning in deep neural networks.
    Baydin, Pearlmutter, Syme, Wood & Torr (2022), Gradients without backpropagation.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import textwrap
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.nn import functional as F

from evograd import harness, loggers, tasks, validate
from evograd.harness import Progress
from evograd.loggers import Logger

__all__ = ["Experiment", "Panel", "Outcome", "EXPERIMENTS", "run", "train_classifier", "train_steps", "mean"]


@dataclasses.dataclass(frozen=True)
class Panel:
    """One subplot: lines ``label -> (xs, ys)``."""

    title: str
    xlabel: str
    ylabel: str
    lines: dict[str, tuple[Sequence[float], Sequence[float]]]
    logx: bool = False


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A claim and how to test it.

    Attributes:
        name: the command-line name.
        claim: the claim, in one sentence.
        configure: ``configure(quick) -> config`` (JSON-ready; sizes, budgets, default seeds).
        measure: ``measure(config, seeds, progress, logger) -> numbers`` (JSON-ready); it streams
            what it measures to ``logger`` (:class:`evograd.loggers.Logger`) as it goes, each
            record naming its sub-run in a ``run`` field.
        table: ``table(numbers) -> rows`` (dicts with the same keys, in column order).
        panels: ``panels(numbers) -> [Panel]``.
        verdict: ``verdict(numbers) -> (holds, line)``, a pure function of the numbers.
    """

    name: str
    claim: str
    configure: Callable[[bool], dict[str, Any]]
    measure: Callable[[dict[str, Any], list[int], Progress, Logger], dict[str, Any]]
    table: Callable[[dict[str, Any]], list[dict[str, Any]]]
    panels: Callable[[dict[str, Any]], list[Panel]]
    verdict: Callable[[dict[str, Any]], tuple[bool, str]]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one run of an experiment found and where it was written."""

    name: str
    holds: bool
    verdict: str
    table: str
    seconds: float
    files: list[pathlib.Path]


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean (NaN of nothing)."""
    return sum(values) / len(values) if values else float("nan")


def train_classifier(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    split: tasks.Split,
    *,
    batch_size: int,
    seed: int,
    fe: int,
    gradient: bool = True,
    on: str = "test",
    stop: Callable[[float], bool] | None = None,
    logger: Logger | None = None,
    run: str = "",
) -> harness.Run:
    """Train a classifier through the harness, measuring its accuracy along the way.

    Steps of :func:`evograd.harness.optimizer_step` on cross-entropy and minibatches of ``split``'s
    training set (the stream of ``seed``), until ``fe`` forward-pass equivalents are spent or
    ``stop(accuracy)`` holds. Accuracy on the ``on`` set is measured at 20 evenly and 20
    geometrically spaced points of the budget (after every step with ``stop``).

    Args:
        model: the classifier ``optimizer`` trains.
        optimizer: a torch optimizer or a HybridOptimizer of ``model``'s parameters.
        split: the data.
        batch_size: samples per step (the whole training set if at least its size).
        seed: the run's seed.
        fe: the budget.
        gradient: whether a HybridOptimizer's direction needs the loss closure.
        on: the set accuracy is measured on, ``"test"`` or ``"train"``.
        stop: ends the run early when it holds for the measured accuracy.
        logger: gets every measurement as it is made, tagged ``{"run": run}``.
        run: the name of this training run in the logged records.

    Raises:
        ValueError: ``on`` is neither ``"test"`` nor ``"train"``.
    """
    batches = harness.Minibatches(split.train_x, split.train_y, batch_size, seed)
    step = harness.optimizer_step(optimizer, model, F.cross_entropy, batches, gradient=gradient)
    return train_steps(step, model, split, fe=fe, on=on, stop=stop, logger=logger, run=run)


def train_steps(
    step: harness.Step,
    model: torch.nn.Module,
    split: tasks.Split,
    *,
    fe: int,
    on: str = "test",
    stop: Callable[[float], bool] | None = None,
    logger: Logger | None = None,
    run: str = "",
) -> harness.Run:
    """Call ``step`` (``step() -> FE spent``, training ``model``) until ``fe`` is spent or ``stop`` holds.

    The measuring half of :func:`train_classifier`, for training loops that are not a torch
    optimizer: accuracy of ``model`` on the ``on`` set at 20 evenly and 20 geometrically spaced
    points of the budget.

    Raises:
        ValueError: ``on`` is neither ``"test"`` nor ``"train"``.
    """
    on = validate.choice("on", on, ("test", "train"))
    x, y = (split.test_x, split.test_y) if on == "test" else (split.train_x, split.train_y)
    recorder = harness.Recorder(
        lambda: harness.accuracy(model, x, y),
        harness.Budget(fe=fe, points=20),
        stop=stop,
        label=f"{on} accuracy",
        logger=logger,
        tags={"run": run},
    )
    return harness.train(step, recorder)


def _plot(panels: list[Panel], title: str, path: pathlib.Path) -> None:
    """A PNG with one subplot per panel, side by side, each with its legend below it, outside the data.

    Lines get distinct colours, dashes and markers (:func:`evograd.plots.style`), so a line drawn
    exactly under another (two rules with the same angles) still shows; ``title`` may hold several
    lines (the claim and the verdict).

    Raises:
        ImportError: matplotlib is missing (install the ``plot`` extra).
    """
    from evograd.plots import pyplot, style

    plt = pyplot()
    rows = title.count("\n") + 1
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 4.6 + 0.2 * rows), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for index, (label, (xs, ys)) in enumerate(panel.lines.items()):
            ax.plot(xs, ys, label=label, **style(index))
        if panel.logx:
            ax.set_xscale("log", base=2)
        else:
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=min(3, len(panel.lines)), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _title(name: str, claim: str, verdict: str, width: int) -> str:
    """The plot's title: the experiment and its claim, then the verdict, wrapped to ``width`` characters.

    Examples:
        >>> print(_title("layers", "Bottom layers matter.", "claim holds: 0.91 vs 0.88", 40))
        layers: Bottom layers matter.
        claim holds: 0.91 vs 0.88
    """
    return "\n".join(textwrap.wrap(f"{name}: {claim}", width) + textwrap.wrap(verdict, width))


def run(
    name: str,
    *,
    quick: bool = False,
    seeds: int | None = None,
    out: str | pathlib.Path = ".",
    progress: Progress | None = None,
    command: str = "",
    device: str = "cpu",
    logger: Logger | None = None,
) -> Outcome:
    """Run experiment ``name``: measure, print the table and verdict, write JSON, table and PNG.

    Uses one torch thread (the experiments are sized for 2 shared CPU cores) with denormal floats
    flushed (:func:`evograd.harness.torch_threads`).

    Args:
        name: a key of :data:`EXPERIMENTS`.
        quick: the tiny configuration (under a minute; for tests and smoke runs).
        seeds: how many seeds (0, 1, ...); default the experiment's own.
        out: the output directory (created when the results are written, after measuring).
        progress: ``progress(fraction, status)``, called as work completes.
        command: the command line that produced the run, recorded in the JSON.
        device: where models and data live (``"cpu"`` or ``"cuda"``); recorded in the config.
        logger: gets every measurement as the experiment makes it (default: none kept).

    Raises:
        ValueError: an unknown experiment, a seed count below 1, or a device torch cannot use.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment {name!r} is unknown; allowed {', '.join(EXPERIMENTS)}")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but torch sees no CUDA device; use device='cpu'")
    experiment = EXPERIMENTS[name]
    config = {**experiment.configure(quick), "device": device}
    n_seeds = config["seeds"] if seeds is None else seeds
    if n_seeds < 1:
        raise ValueError(f"seeds={n_seeds} is out of range; allowed 1 or more")
    harness.torch_threads(1)
    start = time.perf_counter()
    measured = experiment.measure(
        config, list(range(n_seeds)), progress or (lambda fraction, status: None), logger or loggers.Fanout()
    )
    seconds = time.perf_counter() - start
    numbers = json.loads(json.dumps(measured))  # the verdict reads exactly what the JSON holds
    holds, line = experiment.verdict(numbers)
    table = harness.format_table(experiment.table(numbers))
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.txt", out / f"{name}.png"]
    record = {
        "experiment": name,
        "claim": experiment.claim,
        "command": command,
        "quick": quick,
        "config": config,
        "seeds": n_seeds,
        "seconds": seconds,
        "numbers": numbers,
        "verdict": {"holds": holds, "line": line},
    }
    paths[0].write_text(json.dumps(record, indent=1) + "\n")
    paths[1].write_text(f"{table}\n\n{line}\n")
    panels = experiment.panels(numbers)
    _plot(panels, _title(name, experiment.claim, line, 34 * len(panels)), paths[2])
    print(f"{experiment.claim}\n\n{table}\n\n{line}")
    return Outcome(name, holds, line, table, seconds, paths)


def _registry() -> dict[str, Experiment]:
    from evograd.experiments import alignment, layers, probes, random_labels, rolling_average, structured_noise

    found = (probes, alignment, random_labels, layers, rolling_average, structured_noise)
    return {module.EXPERIMENT.name: module.EXPERIMENT for module in found}


EXPERIMENTS: dict[str, Experiment] = _registry()
