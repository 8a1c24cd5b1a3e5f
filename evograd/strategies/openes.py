"""OpenAI-style evolution strategy: antithetic sampling, centered ranks, a torch optimizer.

References:
    Salimans, Ho, Chen, Sidor & Sutskever (2017), Evolution strategies as a scalable alternative to
    reinforcement learning.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from evograd import shaping, validate
from evograd.noise import Mutation
from evograd.strategies.base import SeedStrategy, StrategyState, store_setting

__all__ = ["ESState", "OpenES"]


@dataclasses.dataclass(frozen=True)
class ESState(StrategyState):
    """State of :class:`OpenES`; ``optimizer_state`` is the torch optimizer's ``state_dict()``,
    ``gradient`` the last generation's (dim,) estimate (uphill in loss; ``None`` before the first)."""

    optimizer_state: dict | None = None
    gradient: torch.Tensor | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class OpenES(SeedStrategy[ESState]):
    """OpenAI-style evolution strategy: antithetic sampling, centered ranks, a torch optimizer.

    The gradient estimate ``g = Σ_i r_i ε_i / (n σ²)``, with ``r`` the centered ranks of the
    fitness (lower is better, so ``g`` points uphill in loss), is handed to a torch optimizer (Adam
    by default) that steps the center downhill. The optimizer's ``state_dict`` lives in the state,
    so ``tell`` stays a pure function and checkpoints need nothing else.

    Metrics: the common ones (:mod:`evograd.strategies.base`; no ``parent``: OpenES does not
    re-score it) and ``grad_norm``, ``‖g‖``.

    Args:
        size: population size (even with antithetic mutations).
        mutation: the mutation; antithetic Gaussian by default.
        lr: optimizer learning rate, >= 0.
        optimizer: a ``torch.optim.Optimizer`` class.
        optimizer_kw: extra keyword arguments for it (e.g. ``{"weight_decay": 1e-4}``); checked by
            constructing the optimizer once. The config keeps a copy.
        chunk_size: rows regenerated at once in ``tell``; by default
            :func:`evograd.noise.chunk_rows` of the center's device.

    Raises:
        TypeError: a setting of the wrong type, naming it.
        ValueError: a setting out of its allowed range, naming it (``optimizer_kw`` when the
            optimizer refuses a value).

    Examples:
        >>> import torch
        >>> from evograd import FunctionEvaluator
        >>> es = OpenES(size=32, mutation=Mutation(sigma=0.1, antithetic=True), lr=0.1)
        >>> evaluate = FunctionEvaluator(lambda x: (x ** 2).sum(1))
        >>> state = es.init(torch.ones(10), seed=0)
        >>> for _ in range(100):
        ...     seeds = es.ask(state)
        ...     state, metrics = es.tell(state, seeds, evaluate(state.center, seeds, state.mutation))
        >>> float((state.center ** 2).sum()) < 0.1
        True
    """

    size: int = 64
    mutation: Mutation = Mutation(kind="gaussian", sigma=0.02, antithetic=True)
    lr: float = 0.01
    optimizer: type[torch.optim.Optimizer] = torch.optim.Adam
    optimizer_kw: dict[str, Any] | None = dataclasses.field(default=None, hash=False)

    state_type: ClassVar[type[StrategyState]] = ESState
    extra_metrics: ClassVar[tuple[str, ...]] = ("grad_norm",)

    def __post_init__(self) -> None:
        super().__post_init__()
        store_setting(self, "lr", validate.real("lr", self.lr, low=0.0))
        if not (isinstance(self.optimizer, type) and issubclass(self.optimizer, torch.optim.Optimizer)):
            raise TypeError(f"optimizer={self.optimizer!r} must be a torch.optim.Optimizer class")
        kw = {} if self.optimizer_kw is None else self.optimizer_kw
        if not isinstance(kw, Mapping) or not all(isinstance(key, str) for key in kw):
            raise TypeError(f"optimizer_kw={kw!r} must be a mapping of keyword names to values, or None")
        if {"params", "lr"} & set(kw):
            raise ValueError(f"optimizer_kw={kw!r} is not allowed to set 'params' or 'lr'; set lr= instead")
        refused = f"optimizer_kw={dict(kw)!r} is refused by {self.optimizer.__name__}"
        try:  # the optimizer's own checks, now rather than at the first tell
            self.optimizer([torch.nn.Parameter(torch.zeros(1))], lr=self.lr, **kw)
        except TypeError as err:  # an unknown keyword, or a value of the wrong type
            raise TypeError(f"{refused}: {err}") from None
        except ValueError as err:
            raise ValueError(f"{refused}: {err}") from None
        store_setting(self, "optimizer_kw", dict(kw))

    def gradient_estimate(self, state: ESState) -> torch.Tensor | None:
        """The current estimate of the loss gradient, uphill: a copy of ``state.gradient``, None before the first."""
        return None if state.gradient is None else state.gradient.clone()

    def _update(
        self, state: ESState, seeds: torch.Tensor, fitness: torch.Tensor
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Estimate the gradient from ranked fitness and take one optimizer step."""
        # --- shape fitness: centered ranks r_i in [-0.5, 0.5], -0.5 for the lowest loss
        ranks = shaping.centered_ranks(fitness)  # (n,)

        # --- estimate: g = Σ_i r_i ε_i / (n σ²), uphill in loss
        total, _ = self.weighted_sum(state, seeds, ranks.to(state.center.dtype), with_norms=False)  # (dim,) Σ r_i ε_i
        gradient = total / (len(seeds) * state.mutation.sigma**2)  # (dim,)

        # --- step: x ← optimizer(x, g), on a private copy of the center and optimizer state
        # (optimizers update their state in place, so the state loaded is a copy; the state saved
        # needs none: this optimizer is private to this call and dropped at its end)
        param = torch.nn.Parameter(state.center.clone())
        opt = self.optimizer([param], lr=self.lr, **self.optimizer_kw)
        if state.optimizer_state is not None:
            opt.load_state_dict(copy.deepcopy(state.optimizer_state))
        param.grad = gradient
        opt.step()

        changes = {"center": param.detach(), "optimizer_state": opt.state_dict(), "gradient": gradient}
        return changes, {"grad_norm": float(gradient.norm())}
