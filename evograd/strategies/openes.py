"""OpenAI-style evolution strategy: antithetic sampling, centered ranks, a torch optimizer.

References:
    Salimans, Ho, Chen, Sidor & Sutskever (2017), Evolution strategies as a scalable alternative to
    reinforcement learning.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from evograd import shaping, validate
from evograd.noise import Mutation
from evograd.strategies import descent, diagonal
from evograd.strategies.base import LR_LIMIT, SeedStrategy, StrategyState, store_setting

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
    by default; :class:`~evograd.optimizers.ClipUp` works too) that steps the center downhill at
    ``lr · lr_decay^generation``. The optimizer's ``state_dict`` lives in the state, so ``tell``
    stays a pure function and checkpoints need nothing else.

    Optional step-size adaptation, ``sigma_adapt="pgpe"``: each coordinate's sigma follows PGPE's
    rule from the same samples (Sehnke et al. 2010, as EvoTorch bounds it:
    :func:`evograd.strategies.diagonal.sehnke_factor`), kept in ``state.mutation.scale``
    (:mod:`evograd.strategies.diagonal`); ``σ`` in ``g`` stays the mutation's scalar ``sigma``, so
    the adapted factors precondition the estimate as PGPE's do. Off by default.

    Metrics: the common ones (:mod:`evograd.strategies.base`; no ``parent``: OpenES does not
    re-score it), ``grad_norm`` (``‖g‖``) and ``lr`` (this generation's learning rate).

    Args:
        size: population size (even with antithetic mutations).
        mutation: the mutation; antithetic Gaussian by default.
        lr: optimizer learning rate, >= 0.
        lr_decay: per-generation factor on ``lr``, in (0, 1].
        optimizer: a ``torch.optim.Optimizer`` class.
        optimizer_kw: extra keyword arguments for it (e.g. ``{"weight_decay": 1e-4}``); checked by
            constructing the optimizer once. The config keeps a copy.
        sigma_adapt: ``"none"`` or ``"pgpe"`` (:data:`evograd.strategies.diagonal.SIGMA_ADAPT`).
        sigma_lr: sigma's learning rate under ``"pgpe"``, >= 0.
        sigma_max_change: the largest relative change of sigma per generation, in [0, 1).
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

    References:
        Salimans, Ho, Chen, Sidor & Sutskever (2017), Evolution strategies as a scalable alternative
        to reinforcement learning. Sehnke et al. (2010), Parameter-exploring policy gradients (the
        sigma rule).
    """

    size: int = 64
    mutation: Mutation = Mutation(kind="gaussian", sigma=0.02, antithetic=True)
    lr: float = 0.01
    lr_decay: float = 1.0
    optimizer: type[torch.optim.Optimizer] = torch.optim.Adam
    optimizer_kw: dict[str, Any] | None = dataclasses.field(default=None, hash=False)
    sigma_adapt: str = "none"
    sigma_lr: float = 0.1
    sigma_max_change: float = 0.2

    state_type: ClassVar[type[StrategyState]] = ESState
    extra_metrics: ClassVar[tuple[str, ...]] = ("grad_norm", "lr")

    def __post_init__(self) -> None:
        super().__post_init__()
        store_setting(self, "lr", validate.real("lr", self.lr, low=0.0, high=LR_LIMIT))
        store_setting(self, "lr_decay", validate.real("lr_decay", self.lr_decay, low=0.0, high=1.0, low_open=True))
        store_setting(self, "optimizer_kw", descent.check_optimizer(self.optimizer, self.optimizer_kw, self.lr))
        sigma_lr, max_change = diagonal.check_sigma_adapt(
            self.sigma_adapt, self.sigma_lr, self.sigma_max_change, self.mutation
        )
        store_setting(self, "sigma_lr", sigma_lr)
        store_setting(self, "sigma_max_change", max_change)

    def gradient_estimate(self, state: ESState) -> torch.Tensor | None:
        """The current estimate of the loss gradient, uphill: a copy of ``state.gradient``, None before the first."""
        return None if state.gradient is None else state.gradient.clone()

    def _initial_fields(self, center: torch.Tensor) -> dict[str, Any]:
        """With sigma adaptation, the first state's mutation holds per-coordinate factors."""
        return {} if self.sigma_adapt == "none" else {"mutation": diagonal.with_scale(self.mutation, center)}

    def _update(
        self, state: ESState, seeds: torch.Tensor, fitness: torch.Tensor
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Estimate the gradient from ranked fitness, take one optimizer step, adapt sigma if asked."""
        # --- shape fitness: centered ranks r_i in [-0.5, 0.5], -0.5 for the lowest loss
        ranks = shaping.centered_ranks(fitness)  # (n,)

        # --- estimate: g = Σ_i r_i ε_i / (n σ²), uphill in loss
        total, _ = self.weighted_sum(state, seeds, ranks.to(state.center.dtype), with_norms=False)  # (dim,)
        denominator = len(seeds) * state.mutation.sigma**2  # n σ², a Python float
        if denominator >= torch.finfo(state.center.dtype).tiny:
            gradient = total / denominator  # (dim,)
        else:  # n σ² underflows in the center's dtype (σ = 1e-25 in float32): divide in two steps
            gradient = total / (len(seeds) * state.mutation.sigma) / state.mutation.sigma  # (dim,)

        # --- step: x ← optimizer(x, g) at lr · decay^t
        center, optimizer_state, lr = descent.scheduled_step(self, state, gradient)
        changes = {"center": center, "optimizer_state": optimizer_state, "gradient": gradient}

        # --- sigma: PGPE's rule from the same members, utilities u = -r (higher is better)
        if self.sigma_adapt == "pgpe":
            changes["mutation"] = diagonal.adapted(
                state, seeds, -ranks, self.sigma_lr, self.sigma_max_change, chunk_size=self.chunk_size
            )
        return changes, {"grad_norm": float(gradient.norm()), "lr": lr}
