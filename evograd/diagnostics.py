"""Diagnostics: how well a direction agrees with the true (backprop) gradient.

The cosine between a source's direction and the gradient says how much of a step goes downhill:
1 for backprop itself, about ``±1/sqrt(D)`` for a random direction in D dimensions, and in between
for estimates (evolution, forward gradients, feedback rules). It is measured per parameter tensor
(per layer) and overall. :class:`~evograd.HybridOptimizer` logs it every k steps with
``log_alignment_every=k``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from evograd.context import Context, set_batch
from evograd.directions import Direction
from evograd.protocols import Evaluator

__all__ = ["Alignment", "cosines", "alignment"]


@dataclasses.dataclass(frozen=True)
class Alignment:
    """Cosines between a direction and the gradient: over all parameters, and per parameter name."""

    overall: float
    layers: dict[str, float]


def _cosine(a: Tensor, b: Tensor) -> float:
    """``a·b / (|a| |b|)`` in float64; 0 when either is zero."""
    a, b = a.detach().double().reshape(-1), b.detach().double().reshape(-1)  # (n,), (n,)
    norms = a.norm() * b.norm()
    return float(a @ b / norms) if norms > 0 else 0.0


def cosines(directions: Sequence[Tensor], gradients: Sequence[Tensor], names: Sequence[str]) -> Alignment:
    """The :class:`Alignment` of ``directions`` with ``gradients`` (one tensor per name each).

    Examples:
        >>> import torch
        >>> cosines([torch.tensor([3.0, 0.0]), torch.tensor([4.0])],
        ...         [torch.tensor([1.0, 0.0]), torch.tensor([0.0])], ["w", "b"])  # a zero gradient gives 0
        Alignment(overall=0.6, layers={'w': 1.0, 'b': 0.0})
    """
    if not len(directions) == len(gradients) == len(names):
        raise ValueError(
            f"need one direction and one gradient per name, got {len(directions)}, {len(gradients)} and {len(names)}"
        )
    layers = {name: _cosine(d, g) for name, d, g in zip(names, directions, gradients)}
    overall = _cosine(torch.cat([d.reshape(-1) for d in directions]), torch.cat([g.reshape(-1) for g in gradients]))
    return Alignment(overall, layers)


def alignment(
    direction: Direction,
    model: nn.Module,
    closure: Callable[[], Tensor],
    *,
    evaluator: Evaluator | None = None,
    batch: Any = None,
    state: Any = None,
    step: int = 0,
) -> Alignment:
    """The cosine between one update of ``direction`` and the backprop gradient of ``closure``'s loss.

    The direction runs once, from ``state`` (a fresh one by default), on ``model``'s trainable
    parameters; the gradient comes from the same closure (run inside ``feedback.mode("bp")``, so a
    converted model gives its true gradient). ``.grad`` is left as it was.

    Args:
        direction: a direction source.
        model: the network.
        closure: computes the loss with ``model`` (calling ``backward()`` itself or not).
        evaluator: for sources that need one (population, forward gradient, SPSA).
        batch: if given, handed first to ``evaluator.set_batch`` (a model evaluator's).
        state: the source's state to start from (e.g. a trained rolling estimate).
        step: the step count the source sees (it seeds per-step noise).

    Returns:
        The cosines per parameter name and overall.

    Examples:
        >>> import torch
        >>> from evograd import directions
        >>> net = torch.nn.Linear(4, 2)
        >>> x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
        >>> closure = lambda: net(x).square().mean()
        >>> a = alignment(directions.backprop(), net, closure)
        >>> round(a.overall, 6), sorted(a.layers)
        (1.0, ['bias', 'weight'])
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    names, params = [n for n, _ in named], [p for _, p in named]
    set_batch(evaluator, batch)
    saved = [p.grad for p in params]
    try:
        ctx = Context(params, step=step, closure=closure, evaluator=evaluator, names=names)
        found, _ = direction.update(direction.init(ctx) if state is None else state, ctx)
        return cosines(found, ctx.gradient("alignment()"), names)
    finally:
        for p, grad in zip(params, saved):
            p.grad = grad
