"""The ask/evaluate/tell loop in one call: :func:`optimize`.

Most runs of a strategy are the same loop (:mod:`evograd.strategies`)::

    state = strategy.init(center, seed=seed)
    while budget left:
        seeds = strategy.ask(state)
        state, metrics = strategy.tell(state, seeds, evaluator(state.center, seeds, state.mutation))

:func:`optimize` runs it for a budget of generations or forward-pass equivalents (FE, contract 8),
streams each generation's metrics to a :class:`~evograd.loggers.Logger` and a callback that may
stop the run, and returns the final state with what the run spent, in the manner of pycma's
``fmin`` and EvoTorch's ``searcher.run``. The objective may be an evaluator, a torch model with
a loss and a batch, or a function of (n, dim) candidates.

Examples:
    >>> import torch
    >>> from evograd import Mutation, OpenES
    >>> es = OpenES(size=20, mutation=Mutation(sigma=0.1, antithetic=True), lr=0.05)
    >>> result = optimize(lambda x: (x**2).sum(1), es, center=torch.ones(5), generations=200)
    >>> result.stopped, result.fe, result.best < 0.01 * 5
    ('generations', 4000, True)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from evograd import flat, validate
from evograd.evaluate import FunctionEvaluator, VmapEvaluator
from evograd.loggers import Logger
from evograd.protocols import Evaluator, ModelEvaluator, State, Strategy

__all__ = ["Result", "optimize", "STOP_REASONS"]

#: Why :func:`optimize` stopped: its generation or FE budget was spent, the callback asked, or the
#: best fitness of a generation reached ``target``.
STOP_REASONS = ("generations", "fe", "callback", "target")

Callback = Callable[[State, Mapping[str, Any]], bool | None]
"""``callback(state, metrics)`` after every generation; returning True stops the run."""


@dataclasses.dataclass(frozen=True)
class Result:
    """What :func:`optimize` returns.

    Attributes:
        state: the strategy's final state; ``state.center`` is the point the run ends at.
        metrics: the last generation's metrics (``tell``'s, with ``fe``), empty if none ran.
        history: every generation's metrics, in order.
        fe: forward-pass equivalents the run spent (the evaluator's ``fe`` during the run).
        generations: generations run.
        best: the lowest finite fitness any member scored during the run (``inf`` if none).
        stopped: why the run stopped, one of :data:`STOP_REASONS`.
    """

    state: State
    metrics: dict[str, Any]
    history: tuple[dict[str, Any], ...]
    fe: int
    generations: int
    best: float
    stopped: str


def optimize(
    objective: Evaluator | nn.Module | Callable[[torch.Tensor], torch.Tensor],
    strategy: Strategy,
    *,
    center: torch.Tensor | None = None,
    seed: int = 0,
    generations: int | None = None,
    fe: int | None = None,
    target: float | None = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    batch: Any = None,
    logger: Logger | None = None,
    callback: Callback | None = None,
) -> Result:
    """Run ``strategy`` on ``objective`` until its budget is spent (lower fitness is better).

    Args:
        objective: what is minimized. An :class:`~evograd.protocols.Evaluator` is used as it is;
            a torch model is scored by a :class:`~evograd.VmapEvaluator` with ``loss_fn`` on
            ``batch`` (a tuple ``(inputs, targets)`` or a callable returning one per generation)
            and is left holding the final center, as a torch optimizer leaves it; any other
            callable is ``fn((n, dim) candidates) -> (n,)`` fitness, scored by a
            :class:`~evograd.FunctionEvaluator`.
        strategy: an ask/tell :class:`~evograd.protocols.Strategy`.
        center: (dim,) the starting point; by default the model's parameters (a model, or a
            :class:`~evograd.protocols.ModelEvaluator`); required for other objectives.
        seed: the run's only seed (docs/design.rst, contract 2).
        generations: run this many generations; exactly one of ``generations`` and ``fe``.
        fe: run until the evaluator has spent at least this many forward-pass equivalents (the
            last generation may pass it by less than one generation's cost).
        target: stop after the first generation whose best fitness is at most this.
        loss_fn: ``loss_fn(model(inputs), targets) -> scalar``, with a model only.
        batch: the data of a model's loss, with a model only.
        logger: receives ``{"generation", "fe", ...metrics}`` after every generation; not closed.
        callback: ``callback(state, metrics)`` after every generation (after the logger);
            returning True stops the run.

    Returns:
        The :class:`Result`: the final state, the metrics, what was spent and why it stopped.

    Raises:
        TypeError: an argument of the wrong type, naming it.
        ValueError: neither or both budgets, a budget below 1, a model without ``loss_fn`` and
            ``batch``, a missing ``center``, or ``loss_fn``/``batch`` given with another objective.

    Examples:
        >>> import torch
        >>> from evograd import Mutation, ScaleFreeEvolution
        >>> model = torch.nn.Linear(3, 1)
        >>> x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
        >>> y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
        >>> evo = ScaleFreeEvolution(size=16, mutation=Mutation(sigma=0.05))
        >>> result = optimize(model, evo, loss_fn=torch.nn.functional.mse_loss, batch=(x, y), fe=64 * 17 * 300)
        >>> result.stopped, result.fe >= 64 * 17 * 300, result.best < 0.01
        ('fe', True, True)
    """
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be an evograd.Strategy (init, ask, tell), got {type(strategy).__name__}")
    if (generations is None) == (fe is None):
        raise ValueError("give exactly one budget: generations or fe")
    if generations is not None:
        generations = validate.integer("generations", generations, low=1)
    if fe is not None:
        fe = validate.integer("fe", fe, low=1)
    if target is not None:
        target = validate.real("target", target)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    evaluator, model = _evaluator(objective, loss_fn, batch)
    if center is None:
        if not isinstance(evaluator, ModelEvaluator):
            raise ValueError("center is required unless the objective is a model or a model evaluator")
        center = flat.flatten(evaluator.model)

    state = strategy.init(center, seed=seed)
    start, history, best, stopped = evaluator.fe, [], math.inf, "generations"
    while True:
        seeds = strategy.ask(state)  # (population,)
        state, metrics = strategy.tell(state, seeds, evaluator(state.center, seeds, state.mutation))
        metrics = {**metrics, "fe": evaluator.fe - start}
        history.append(metrics)
        best = min(best, metrics["best"])
        if logger is not None:
            logger.log(metrics)
        if callback is not None and callback(state, metrics) is True:
            stopped = "callback"
        elif target is not None and metrics["best"] <= target:
            stopped = "target"
        elif fe is not None and metrics["fe"] >= fe:
            stopped = "fe"
        elif generations is not None and len(history) >= generations:
            stopped = "generations"
        else:
            continue
        break
    if model is not None:
        flat.assign(model, state.center)
    return Result(state, history[-1], tuple(history), evaluator.fe - start, len(history), best, stopped)


def _evaluator(objective: Any, loss_fn: Any, batch: Any) -> tuple[Evaluator, nn.Module | None]:
    """The evaluator of ``objective``, and the model to leave at the final center (None if not ours)."""
    if isinstance(objective, nn.Module):
        if loss_fn is None or batch is None:
            raise ValueError("a model objective needs loss_fn and batch (or pass an evaluator of it)")
        return VmapEvaluator(objective, loss_fn, batch), objective
    if loss_fn is not None or batch is not None:
        raise ValueError("loss_fn and batch go with a model objective only; an evaluator or function has its own")
    if isinstance(objective, Evaluator):
        return objective, None
    if callable(objective):
        return FunctionEvaluator(objective), None
    raise TypeError(
        f"objective must be an evograd.Evaluator, a torch.nn.Module or a function of (n, dim) candidates, "
        f"got {type(objective).__name__}"
    )
