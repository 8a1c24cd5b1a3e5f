"""Torch optimizers for search gradients: :class:`ClipUp`.

A search gradient (an evolution strategy's estimate from ranked fitness) has no natural scale: its
length follows the population size, the fitness shaping and sigma rather than the loss. ClipUp
(Toklu et al. 2020) uses only its direction: a momentum of normalized gradients whose length is
clipped at a maximum speed, so ``lr`` and ``max_speed`` are distances in parameter space. It is a
real ``torch.optim.Optimizer`` (docs/design.rst, contract 5): :class:`~evograd.OpenES` and
:class:`~evograd.PGPE` take it as their ``optimizer``, the hybrid optimizer as its ``base``, and
LR schedulers, ``state_dict`` and param groups behave as with any torch optimizer.

References:
    Toklu, Liskowski & Srivastava (2020), ClipUp: a simple and powerful optimizer for
    distribution-based policy evolution.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from evograd import validate

__all__ = ["ClipUp"]


class ClipUp(torch.optim.Optimizer):
    """ClipUp: momentum over normalized gradients, its velocity clipped at a maximum speed.

    For each param group, with ``g`` the group's gradient (all its parameters' ``.grad`` as one
    vector, pointing uphill in loss) and ``v`` its velocity (zero at first)::

        v ← momentum · v + lr · g / ‖g‖           (no term when g = 0)
        v ← v · min(1, max_speed / ‖v‖)
        θ ← θ − v

    Norms are over the whole group, as the paper defines them on the whole parameter vector, so
    ``lr`` is the length one normalized gradient adds and ``max_speed`` the longest step ever taken.

    Args:
        params: the parameters (or param group dicts) to optimize.
        lr: the step size α, >= 0.
        max_speed: the largest step length, > 0; ``None`` means ``2 · lr``, read at every step, so an
            LR scheduler scales both (the paper's rule of thumb α = max_speed / 2).
        momentum: the velocity's decay factor, in [0, 1).

    Raises:
        TypeError: a setting of the wrong type, naming it.
        ValueError: a setting out of its allowed range, naming it.

    Examples:
        >>> x = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
        >>> opt = ClipUp([x], lr=0.5, max_speed=1.0, momentum=0.0)
        >>> x.grad = torch.tensor([30.0, 40.0])  # only the direction counts
        >>> opt.step()
        >>> x.detach()
        tensor([2.7000, 3.6000])

    References:
        Toklu, Liskowski & Srivastava (2020), ClipUp: a simple and powerful optimizer for
        distribution-based policy evolution (PPSN XVI).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.075,
        max_speed: float | None = None,
        momentum: float = 0.9,
    ) -> None:
        defaults = {"lr": lr, "max_speed": max_speed, "momentum": momentum}
        self._check(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group (its missing settings from the defaults), checking its settings."""
        super().add_param_group(param_group)
        self._check(self.param_groups[-1])

    @staticmethod
    def _check(group: dict[str, Any]) -> None:
        """Refuse a group's settings out of range, naming the setting."""
        validate.real("lr", group["lr"], low=0.0)
        if group["max_speed"] is not None:
            validate.real("max_speed", group["max_speed"], low=0.0, low_open=True)
        validate.real("momentum", group["momentum"], low=0.0, high=1.0, high_open=True)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One ClipUp step of every param group; ``closure`` (optional) re-evaluates the loss first."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            max_speed = 2.0 * group["lr"] if group["max_speed"] is None else group["max_speed"]
            velocities = []
            for p in params:
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p)
                velocities.append(state["velocity"])
            grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
            push = group["lr"] / grad_norm if grad_norm > 0 else 0.0  # lr / ‖g‖
            for p, v in zip(params, velocities):
                v.mul_(group["momentum"]).add_(p.grad, alpha=push)  # v ← m·v + lr·g/‖g‖
            speed = float(torch.linalg.vector_norm(torch.stack([v.norm() for v in velocities])))
            clip = max_speed / speed if speed > max_speed else 1.0
            for p, v in zip(params, velocities):
                v.mul_(clip)  # ‖v‖ <= max_speed
                p.sub_(v)
        return loss
