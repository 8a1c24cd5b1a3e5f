"""SNES: separable natural evolution strategies, natural-gradient steps of the center and log-sigma.

References:
    Schaul, Glasmachers & Schmidhuber (2011), High dimensions and heavy tails for natural evolution
    strategies. GECCO 2011.
    Wierstra, Schaul, Glasmachers, Sun, Peters & Schmidhuber (2014), Natural evolution strategies.
    JMLR 15.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch

from evograd import shaping, validate
from evograd.noise import Mutation
from evograd.strategies import diagonal
from evograd.strategies.base import LR_LIMIT, StrategyState, store_setting
from evograd.strategies.diagonal import DiagonalStrategy

__all__ = ["SNESState", "SNES"]


@dataclasses.dataclass(frozen=True)
class SNESState(StrategyState):
    """State of :class:`SNES`: ``gradient`` is the last generation's (dim,) natural-gradient estimate,
    uphill in loss (``None`` before the first). The per-coordinate sigma is
    ``mutation.sigma · mutation.scale`` (:mod:`evograd.strategies.diagonal`)."""

    gradient: torch.Tensor | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class SNES(DiagonalStrategy[SNESState]):
    """SNES: separable natural evolution strategies, natural-gradient steps of the center and log-sigma.

    Members ``x_k = μ + σ ⊙ z_k``; the fitness is shaped into NES utilities ``u_k``
    (:func:`evograd.shaping.utilities`: the best member gets the most, they sum to zero), and
    (Schaul et al. 2011, Algorithm 1)::

        ∇_μ = Σ_k u_k z_k,   ∇_σ = Σ_k u_k (z_k² - 1)
        μ ← μ + lr · σ ⊙ ∇_μ
        σ ← σ ⊙ exp(sigma_lr / 2 · ∇_σ)

    with the paper's learning rates as defaults: ``lr = 1`` and ``sigma_lr = (3 + ln d)/(5 √d)``
    for ``d`` coordinates (``sigma_lr=None``). The paper's population is ``4 + ⌊3 ln d⌋``
    (:func:`evograd.strategies.diagonal.paper_size`); networks learn better with larger ones
    (``size`` is a setting; ``benchmarks/RESULTS.rst`` has the measured choice). Mirrored
    sampling (an antithetic mutation) is allowed. Other mutation kinds than Gaussian enter
    standardized (:mod:`evograd.strategies.diagonal`).

    ``gradient_estimate`` returns ``-σ ⊙ ∇_μ``, the center's natural-gradient estimate pointing
    uphill in loss, for the hybrid optimizer's :func:`~evograd.directions.es` source.

    Metrics: the common ones (``sigma`` is the mean per-coordinate sigma) and ``grad_norm``
    (``‖σ ⊙ ∇_μ‖``).

    Args:
        size: population size λ, >= 2 (even with an antithetic mutation).
        mutation: the mutation; its ``sigma`` (times ``scale``, if given) is the initial sigma.
        lr: the center's learning rate η_μ, >= 0.
        sigma_lr: log-sigma's learning rate η_σ, >= 0; ``None`` for the paper's ``(3 + ln d)/(5 √d)``.
        chunk_size: rows regenerated at once in ``tell``; by default
            :func:`evograd.noise.chunk_rows` of the center's device.

    Raises:
        TypeError: a setting of the wrong type, naming it.
        ValueError: a setting out of its allowed range, naming it.

    Examples:
        >>> import torch
        >>> from evograd import FunctionEvaluator
        >>> snes = SNES(size=diagonal.paper_size(10), mutation=Mutation(sigma=1.0))
        >>> evaluate = FunctionEvaluator(lambda x: (x ** 2).sum(1))
        >>> state = snes.init(torch.ones(10, dtype=torch.float64), seed=0)
        >>> for _ in range(300):
        ...     seeds = snes.ask(state)
        ...     state, metrics = snes.tell(state, seeds, evaluate(state.center, seeds, state.mutation))
        >>> metrics["best"] < 1e-8
        True

    References:
        Schaul, Glasmachers & Schmidhuber (2011), High dimensions and heavy tails for natural
        evolution strategies.
    """

    size: int = 200
    mutation: Mutation = Mutation(kind="gaussian", sigma=0.02)
    lr: float = 1.0
    sigma_lr: float | None = None

    state_type: ClassVar[type[StrategyState]] = SNESState
    extra_metrics: ClassVar[tuple[str, ...]] = ("grad_norm",)

    def __post_init__(self) -> None:
        super().__post_init__()
        store_setting(self, "lr", validate.real("lr", self.lr, low=0.0, high=LR_LIMIT))
        if self.sigma_lr is not None:
            store_setting(self, "sigma_lr", validate.real("sigma_lr", self.sigma_lr, low=0.0))

    def sigma_rate(self, dim: int) -> float:
        """η_σ for ``dim`` coordinates: ``sigma_lr``, or the paper's ``(3 + ln d)/(5 √d)``."""
        return (3.0 + math.log(dim)) / (5.0 * math.sqrt(dim)) if self.sigma_lr is None else self.sigma_lr

    def gradient_estimate(self, state: SNESState) -> torch.Tensor | None:
        """The last generation's ``-σ ⊙ ∇_μ`` (uphill in loss): a copy; None before the first."""
        return None if state.gradient is None else state.gradient.clone()

    def _update(
        self, state: SNESState, seeds: torch.Tensor, fitness: torch.Tensor
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Natural-gradient steps of the center and of log-sigma from the NES utilities."""
        utility = shaping.utilities(fitness)  # (λ,) best first in value, Σ u = 0
        linear, square = diagonal.moments(state, seeds, utility, utility, chunk_size=self.chunk_size)  # (dim,) ×2

        # --- center: μ ← μ + η_μ · std ⊙ Σ u ζ  (std = σ √m₂, the members' standard deviation)
        sigma = diagonal.per_coordinate(state.mutation, state.center)  # (dim,)
        std = sigma * diagonal.second_moment(state.mutation, state.center.numel()) ** 0.5  # (dim,)
        step = std * linear  # (dim,) natural gradient of the expected utility
        center = state.center + self.lr * step

        # --- sigma: σ ← σ ⊙ exp(η_σ/2 · Σ u (ζ² - 1))
        log_step = square - float(utility.sum())  # (dim,) Σ u (ζ² - 1)
        factor = torch.exp(0.5 * self.sigma_rate(state.center.numel()) * log_step)  # (dim,)
        changes = {"center": center, "mutation": diagonal.rescaled(state.mutation, factor), "gradient": -step}
        return changes, {"grad_norm": float(step.norm())}
