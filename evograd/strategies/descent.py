"""A torch optimizer stepping a strategy's center inside a pure ``tell``: what :class:`OpenES` and :class:`PGPE` share.

Torch optimizers keep their state (moments, velocities) inside themselves and update it in place;
a strategy's ``tell`` must be a pure function (docs/design.rst, contract 4). So each step builds a
private optimizer over a copy of the center, loads the state saved in the strategy's state (a
``state_dict()``, copied), sets the step's learning rate, steps once on the gradient, and returns
the new center with the new ``state_dict()``. Checkpoints store that dict like any other field.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["check_optimizer", "descend", "scheduled_step"]


def check_optimizer(optimizer: Any, optimizer_kw: Any, lr: float) -> dict[str, Any]:
    """Check an optimizer class and its keyword arguments by constructing it once; returns a copy of the keywords.

    Args:
        optimizer: a ``torch.optim.Optimizer`` class.
        optimizer_kw: a mapping of its extra keyword arguments, or None.
        lr: the learning rate it will be given.

    Raises:
        TypeError: ``optimizer`` is not an optimizer class, ``optimizer_kw`` is not a mapping of
            names, or the optimizer refuses a keyword or a type; naming the setting.
        ValueError: ``optimizer_kw`` sets ``params`` or ``lr``, or the optimizer refuses a value.
    """
    if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
        raise TypeError(f"optimizer={optimizer!r} must be a torch.optim.Optimizer class")
    kw = {} if optimizer_kw is None else optimizer_kw
    if not isinstance(kw, Mapping) or not all(isinstance(key, str) for key in kw):
        raise TypeError(f"optimizer_kw={kw!r} must be a mapping of keyword names to values, or None")
    if {"params", "lr"} & set(kw):
        raise ValueError(f"optimizer_kw={kw!r} is not allowed to set 'params' or 'lr'; set lr= instead")
    refused = f"optimizer_kw={dict(kw)!r} is refused by {optimizer.__name__}"
    try:  # the optimizer's own checks, now rather than at the first tell
        optimizer([torch.nn.Parameter(torch.zeros(1))], lr=lr, **kw)
    except TypeError as err:  # an unknown keyword, or a value of the wrong type
        raise TypeError(f"{refused}: {err}") from None
    except ValueError as err:
        raise ValueError(f"{refused}: {err}") from None
    return dict(kw)


def descend(
    center: torch.Tensor,
    gradient: torch.Tensor,
    *,
    optimizer: type[torch.optim.Optimizer],
    optimizer_kw: dict[str, Any],
    lr: float,
    saved: dict | None,
) -> tuple[torch.Tensor, dict]:
    """One optimizer step from ``center`` along the loss ``gradient`` (uphill), without touching either.

    Args:
        center: (dim,) the current point.
        gradient: (dim,) the loss gradient estimate, uphill.
        optimizer, optimizer_kw: the optimizer class and its keywords.
        lr: this step's learning rate (it replaces the one saved, so a schedule or a changed
            config takes effect).
        saved: the optimizer's ``state_dict()`` after the previous step, or None at the first.

    Returns:
        The new (dim,) center and the optimizer's new ``state_dict()``.
    """
    # Optimizers update their state in place, so the state loaded is a copy; the state returned
    # needs none: this optimizer is private to this call and dropped at its end.
    param = torch.nn.Parameter(center.clone())
    opt = optimizer([param], lr=lr, **optimizer_kw)
    if saved is not None:
        opt.load_state_dict(copy.deepcopy(saved))
    for group in opt.param_groups:
        group["lr"] = lr
    param.grad = gradient
    opt.step()
    return param.detach(), opt.state_dict()


def scheduled_step(strategy: Any, state: Any, gradient: torch.Tensor) -> tuple[torch.Tensor, dict, float]:
    """:func:`descend` at ``strategy.lr · strategy.lr_decay ** state.generation``.

    Args:
        strategy: an :class:`OpenES` or :class:`PGPE` (its ``lr``, ``lr_decay``, ``optimizer``,
            ``optimizer_kw``).
        state: its state (``center``, ``generation``, ``optimizer_state``).
        gradient: (dim,) the loss gradient estimate, uphill.

    Returns:
        The new (dim,) center, the optimizer's new ``state_dict()`` and the learning rate used.
    """
    lr = strategy.lr * strategy.lr_decay**state.generation
    center, saved = descend(
        state.center,
        gradient,
        optimizer=strategy.optimizer,
        optimizer_kw=strategy.optimizer_kw,
        lr=lr,
        saved=state.optimizer_state,
    )
    return center, saved, lr
