"""The training harness shared by ``evograd compare`` and ``evograd experiment``.

One loop trains every method the same way: :func:`train` calls a *step* (one minibatch step of a
torch optimizer or :class:`~evograd.HybridOptimizer`, or one ask/tell generation; it returns the
forward-pass equivalents it spent) until a :class:`Recorder` says its :class:`Budget` is spent;
the recorder charges the FE and measures the metric at budget points. Measuring is neither
charged nor timed (docs/design.rst, contract 8), so a method's FE and seconds are what its
training cost.

The pieces around the loop are shared too: :class:`Minibatches` (a seeded stream of minibatches,
batch ``k`` a function of ``(seed, k)`` alone), :func:`optimizer_step`, :func:`accuracy`,
:func:`format_table`, the unit directions of the hybrid (:func:`unit`, :func:`evolution`) and the
process settings of a CPU run (:func:`torch_threads`). Every random stream derives from the run's
seed through :func:`evograd.noise.stream_seed` (contract 2).

Examples:
    >>> import torch
    >>> from torch.nn import functional as F
    >>> from evograd import tasks
    >>> gen = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(256, 4, generator=gen), torch.randint(0, 3, (256,), generator=gen)
    >>> model = tasks.mlp((4, 8, 3), seed=0)
    >>> adam = torch.optim.Adam(model.parameters(), lr=1e-2)
    >>> step = optimizer_step(adam, model, F.cross_entropy, Minibatches(x, y, batch_size=32, seed=0))
    >>> run = train(step, Recorder(lambda: accuracy(model, x, y), Budget(fe=30_000, points=4)))
    >>> run.fe, run.curve[-1][2] > run.curve[0][2]
    (30048, True)
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from evograd import directions as D
from evograd import noise, validate
from evograd.loggers import Logger
from evograd.optim import HybridOptimizer

__all__ = [
    "Batch",
    "Step",
    "Progress",
    "Point",
    "Budget",
    "Recorder",
    "Run",
    "point_record",
    "Minibatches",
    "train",
    "optimizer_step",
    "accuracy",
    "device_of",
    "unit",
    "evolution",
    "format_table",
    "torch_threads",
]

Batch = tuple[Tensor, Tensor]
Step = Callable[[], int]
"""One training step: trains, and returns the forward-pass equivalents it spent."""
Progress = Callable[[float, str], None]
"""``progress(fraction of the budget spent, status line)``."""
Point = tuple[int, float, float]
"""One measurement: ``(FE spent, training seconds, metric)``."""


def point_record(point: Point, label: str, tags: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A measurement as a logger record: the run's ``tags``, then ``fe``, ``seconds`` and ``label``.

    Examples:
        >>> point_record((1200, 0.5, 0.93), "test accuracy", {"method": "adam", "seed": 0})
        {'method': 'adam', 'seed': 0, 'fe': 1200, 'seconds': 0.5, 'test accuracy': 0.93}
    """
    fe, seconds, value = point
    return {**(tags or {}), "fe": fe, "seconds": seconds, label: value}


# ----------------------------------------------------------------------------------------------
# budget and measurement


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much a run may spend: forward-pass equivalents or training seconds (exactly one), and
    how often the metric is measured.

    Attributes:
        fe: forward-pass equivalents (contract 8), an integer > 0; or None.
        seconds: wall seconds of training (measuring excluded), > 0; or None.
        points: the metric is measured at ``points`` evenly spaced fractions of the budget and
            ``points`` geometrically spaced ones from 1/1000 of it (and at zero cost).

    Raises:
        TypeError: a value of the wrong type.
        ValueError: neither or both of ``fe`` and ``seconds``, or a value out of range.
    """

    fe: int | None = None
    seconds: float | None = None
    points: int = 25

    def __post_init__(self) -> None:
        if (self.fe is None) == (self.seconds is None):
            raise ValueError("give exactly one budget: fe or seconds")
        if self.fe is not None:
            validate.integer("budget fe", self.fe, low=1)
        if self.seconds is not None:
            validate.real("budget seconds", self.seconds, low=0.0, low_open=True)
        validate.integer("points", self.points, low=1)

    def schedule(self) -> list[float]:
        """The fractions of the budget at which the metric is measured, ascending, ending at 1.

        Evenly and geometrically spaced: backprop and evolution differ in cost by orders of
        magnitude, and both curves must show their rise with the same resolution.

        Examples:
            >>> Budget(fe=100, points=2).schedule()
            [0.001, 0.031622777, 0.5, 1.0]
        """
        n = self.points
        even = {round(k / n, 9) for k in range(1, n + 1)}
        geometric = {round(1e-3 ** (1 - k / n), 9) for k in range(n)}
        return sorted(even | geometric)


class Recorder:
    """Counts what a run spends, measures the metric at the budget's points, and says when to stop.

    The metric is measured once at the start (zero cost), then after the first step that reaches
    or passes each point of the budget's schedule (once, if a step passes several), which includes
    the end; with ``stop``, after every step instead, since ``stop`` decides on the metric. Time
    spent measuring is excluded from :attr:`seconds`.

    Args:
        metric: ``metric() -> float``, e.g. test accuracy of the model being trained.
        budget: what the run may spend.
        stop: ``stop(metric) -> bool``, to end the run early (e.g. at 100% training accuracy).
        progress: called with ``(fraction, status)`` after each measurement.
        label: the metric's name in the progress status and the logged records.
        logger: an :class:`evograd.loggers.Logger` that gets each measurement as it is made, as
            :func:`point_record` of ``tags``.
        tags: what names the run in the logged records (e.g. ``{"method": "adam", "seed": 0}``).

    Attributes:
        fe: forward-pass equivalents spent so far.
        curve: the measurements, ``[(fe, seconds, metric), ...]``.
        stopped: whether ``stop`` ended the run.
    """

    def __init__(
        self,
        metric: Callable[[], float],
        budget: Budget,
        *,
        stop: Callable[[float], bool] | None = None,
        progress: Progress | None = None,
        label: str = "metric",
        logger: Logger | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        self.metric, self.budget, self.stop, self.progress, self.label = metric, budget, stop, progress, label
        self.logger, self.tags = logger, dict(tags or {})
        self.fe, self.stopped = 0, False
        self.curve: list[Point] = []
        self._points = budget.schedule()
        self._next = 0  # the schedule's first point not yet measured
        self._start = time.perf_counter()
        self._measuring = 0.0  # seconds spent measuring, not charged to the run
        self.record()

    @property
    def seconds(self) -> float:
        """Wall seconds since the start, less the time spent measuring."""
        return time.perf_counter() - self._start - self._measuring

    def fraction(self) -> float:
        """How much of the budget is spent, in [0, 1]."""
        budget = self.budget
        spent = self.fe / budget.fe if budget.fe is not None else self.seconds / budget.seconds
        return min(spent, 1.0)

    @property
    def done(self) -> bool:
        """Whether the budget is spent or ``stop`` said so."""
        return self.stopped or self.fraction() >= 1.0

    def spend(self, fe: int) -> None:
        """Charge ``fe`` forward-pass equivalents, and measure if a budget point was passed."""
        self.fe += int(fe)
        fraction, due = self.fraction(), False
        while self._next < len(self._points) and fraction >= self._points[self._next]:
            self._next, due = self._next + 1, True
        if due or self.stop is not None:
            self.record()

    def record(self) -> None:
        """Measure the metric now, uncharged and untimed, and append it to :attr:`curve`."""
        start = time.perf_counter()
        seconds = self.seconds  # the training time up to now: this measurement's own time is not in it
        value = float(self.metric())
        self.curve.append((self.fe, seconds, value))
        self.stopped = self.stop is not None and bool(self.stop(value))
        if self.logger is not None:
            self.logger.log(point_record(self.curve[-1], self.label, self.tags))
        self._measuring += time.perf_counter() - start
        if self.progress is not None:
            self.progress(1.0 if self.stopped else self.fraction(), f"{self.label} {value:.4g}")


@dataclasses.dataclass(frozen=True)
class Run:
    """What :func:`train` measured.

    Attributes:
        curve: ``[(fe, seconds, metric), ...]``, from zero cost to the end.
        fe: forward-pass equivalents spent.
        seconds: training seconds (measuring excluded).
        stopped: whether the run's ``stop`` rule ended it before the budget.
    """

    curve: list[Point]
    fe: int
    seconds: float
    stopped: bool

    @property
    def final(self) -> float:
        """The metric at the end of the run."""
        return self.curve[-1][2]


def train(step: Step, recorder: Recorder) -> Run:
    """Call ``step`` until ``recorder`` says the budget is spent (or its ``stop`` rule holds).

    Args:
        step: one training step returning the FE it spent (see :func:`optimizer_step`).
        recorder: charges the FE, measures the metric at the budget's points (uncharged, untimed)
            and says when to stop; make it just before training, since its clock starts then.

    Returns:
        The :class:`Run`: the curve, FE, training seconds and whether ``stop`` ended it.
    """
    while not recorder.done:
        recorder.spend(step())
    return Run(recorder.curve, recorder.fe, recorder.seconds, recorder.stopped)


# ----------------------------------------------------------------------------------------------
# data and steps


class Minibatches:
    """An endless seeded stream of training minibatches, drawn with replacement.

    Batch ``k`` is a function of ``(seed, stream, k)`` alone (its indices come from a generator
    seeded with ``noise.stream_seed(seed, stream, k)``), so two methods given the same seed see
    the same data in the same order, and a resumed run needs only :attr:`drawn` to continue the
    stream. A batch size of at least the data set's size gives the whole set every time.

    Args:
        x, y: inputs and targets, on the device training runs on.
        batch_size: samples per batch, >= 1.
        seed: the run's seed.
        stream: the stream's name (independent streams of one run need different names).

    Attributes:
        drawn: how many batches ``__call__`` has handed out.

    Examples:
        >>> x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
        >>> batches = Minibatches(x, y, batch_size=4, seed=0)
        >>> first = batches()
        >>> first[0].shape, bool((first[1] == batches.at(0)[1]).all()), batches.drawn
        (torch.Size([4, 1]), True, 1)
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, seed: int, *, stream: str = "minibatches") -> None:
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"x and y must hold the same number (>= 1) of samples, got {len(x)} and {len(y)}")
        self.x, self.y, self.stream = x, y, stream
        self.batch_size = validate.integer("batch_size", batch_size, low=1)
        self.seed = validate.seed("seed", seed)
        self.drawn = 0
        self._gen = torch.Generator()  # reseeded for every batch: batch k never depends on batch k - 1

    def at(self, k: int) -> Batch:
        """Batch number ``k`` of the stream (the same every time)."""
        if self.batch_size >= len(self.x):
            return self.x, self.y
        self._gen.manual_seed(noise.stream_seed(self.seed, self.stream, k))
        index = torch.randint(0, len(self.x), (self.batch_size,), generator=self._gen).to(self.x.device)  # (batch,)
        return self.x[index], self.y[index]

    def __call__(self) -> Batch:
        """The next batch of the stream."""
        batch = self.at(self.drawn)
        self.drawn += 1
        return batch


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batches: Callable[[], Batch],
    *,
    gradient: bool = True,
) -> Step:
    """One minibatch step of a torch optimizer or a :class:`~evograd.HybridOptimizer`, as a :data:`Step`.

    A torch optimizer steps on the gradient of ``loss_fn(model(x), y)`` and is charged 3 FE per
    sample (forward 1, backward 2). A HybridOptimizer is handed the batch (its evaluator scores
    populations on it) and is charged what it counts in ``optimizer.fe``; with ``gradient=False``
    it gets no closure, so a gradient-free direction spends no forward or backward pass on it.

    Args:
        optimizer: the optimizer of ``model``'s parameters.
        model: the model to train (e.g. a feedback-converted one: its forward pass is used).
        loss_fn: ``loss_fn(output, target) -> scalar``.
        batches: ``batches() -> (x, y)``, a fresh batch per step (e.g. :class:`Minibatches`).
        gradient: whether the HybridOptimizer's direction needs the closure (backprop, feedback).

    Returns:
        ``step() -> FE spent``.
    """
    hybrid = isinstance(optimizer, HybridOptimizer)
    if not gradient and not hybrid:
        raise ValueError("gradient=False needs a HybridOptimizer: a torch optimizer steps on the gradient")

    def step() -> int:
        x, y = batches()

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            return loss

        if not hybrid:
            optimizer.step(closure)
            return 3 * len(x)
        before = optimizer.fe
        optimizer.step(closure if gradient else None, batch=(x, y))
        return optimizer.fe - before

    return step


def device_of(model: nn.Module) -> torch.device:
    """Where the model's parameters live (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of ``x`` whose arg-max output is ``y``, computed on the model's device.

    Examples:
        >>> model = torch.nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.eye(2))
        >>> accuracy(model, torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]]), torch.tensor([0, 1, 1]))
        0.6666666666666666
    """
    device = device_of(model)
    with torch.no_grad():
        return float((model(x.to(device)).argmax(-1) == y.to(device)).double().mean())


def unit(source: D.Direction) -> D.Direction:
    """``source`` scaled to unit norm, so the base optimizer's lr is the step length."""
    return D.chain(source, D.normalize())


def evolution(strategy: Any, seed: int) -> D.Direction:
    """The unit rolling-improvement direction of ``strategy`` (a ``RollingImprovement``) from ``seed``."""
    return unit(D.improvement(strategy, seed=seed))


# ----------------------------------------------------------------------------------------------
# reports and process settings


def _numeric(value: Any) -> bool:
    """Whether a cell reads as a number (and so is right-aligned)."""
    return isinstance(value, (int, float)) or str(value)[:1] in tuple("0123456789+-.—")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of dicts (the same keys, in column order) as a fixed-width text table.

    Floats print to 3 decimals (NaN as ``n/a``, 1000 and more as grouped integers); pass a
    string to print a cell otherwise. A column of numbers, or of text that starts like a number
    (a digit, a sign, a point or ``—``, e.g. ``"0.97 ± 0.01"``), is right-aligned; others are
    left-aligned.

    Examples:
        >>> print(format_table([{"kind": "gaussian", "cosine": 0.25}, {"kind": "cauchy", "cosine": float("nan")}]))
        kind      cosine
        --------  ------
        gaussian   0.250
        cauchy       n/a
    """
    columns = list(rows[0])
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [all(_numeric(row[c]) for row in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def torch_threads(n: int) -> None:
    """Run torch on ``n`` CPU threads, with denormal floats flushed to zero.

    Small models run fastest on one thread (more only oversubscribe shared cores), and over-fitted
    minibatches produce denormals that slow every step several-fold on CPUs. Both are process
    settings, not random state.

    Raises:
        ValueError: ``n`` < 1.
    """
    torch.set_num_threads(validate.integer("threads", n, low=1))
    torch.set_flush_denormal(True)
