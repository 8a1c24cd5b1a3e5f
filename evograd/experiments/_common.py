"""Training and measuring helpers shared by the experiments (one loop for every method)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from evograd import directions as D
from evograd.optim import HybridOptimizer
from evograd.strategies import RollingImprovement

Batch = tuple[torch.Tensor, torch.Tensor]


def minibatches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> Callable[[], Batch]:
    """An endless seeded stream of minibatches drawn with replacement (the whole set if it is smaller)."""
    gen = torch.Generator().manual_seed(20_011 + seed)
    if batch_size >= len(x):
        return lambda: (x, y)

    def draw() -> Batch:
        index = torch.randint(0, len(x), (batch_size,), generator=gen).to(x.device)
        return x[index], y[index]

    return draw


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` whose arg-max output is ``y``."""
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).double().mean())


def unit(source: D.Direction) -> D.Direction:
    """A direction scaled to unit norm, so the base optimizer's lr is the step length."""
    return D.chain(source, D.normalize())


def evolution(strategy: RollingImprovement, seed: int) -> D.Direction:
    """The unit rolling-improvement direction of ``strategy``."""
    return unit(D.improvement(strategy, seed=seed))


def train(
    model: nn.Module,
    optimizer: HybridOptimizer,
    draw: Callable[[], Batch],
    *,
    fe_cap: int,
    metric: Callable[[], float],
    uses_gradient: bool,
    points: int = 20,
    stop: Callable[[float], bool] | None = None,
) -> dict:
    """Step ``optimizer`` on minibatches until ``fe_cap`` FE are spent or ``stop(metric)`` says so.

    The metric is measured (uncharged, untimed) and recorded at ``points`` evenly spaced FE marks, or
    after every step when ``stop`` is given (it needs the metric to decide).

    Returns:
        ``{"fe", "seconds", "stopped", "metric", "curve": [[fe, seconds, metric], ...]}``; seconds
        count training steps only.
    """
    value = metric()
    curve, seconds, stopped = [[0, 0.0, value]], 0.0, stop is not None and stop(value)
    while not stopped and optimizer.fe < fe_cap:
        x, y = draw()

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        start = time.perf_counter()
        optimizer.step(closure if uses_gradient else None, batch=(x, y))
        seconds += time.perf_counter() - start
        mark = optimizer.fe >= len(curve) * fe_cap / points or optimizer.fe >= fe_cap
        if stop is not None or mark:
            value = metric()
            stopped = stop is not None and stop(value)
            curve.append([optimizer.fe, seconds, value])
    return {"fe": optimizer.fe, "seconds": seconds, "stopped": stopped, "metric": value, "curve": curve}
