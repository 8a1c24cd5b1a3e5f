"""PGPE: symmetric sampling, a per-coordinate sigma learned from the same samples, ClipUp.

References:
    Sehnke, Osendorfer, Rückstieß, Graves, Peters & Schmidhuber (2010), Parameter-exploring policy
    gradients. Neural Networks 23(4).
    Toklu, Liskowski & Srivastava (2020), ClipUp: a simple and powerful optimizer for
    distribution-based policy evolution.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from evograd import shaping, validate
from evograd.noise import Mutation
from evograd.optimizers import ClipUp
from evograd.strategies import descent, diagonal
from evograd.strategies.base import LR_LIMIT, StrategyState, store_setting
from evograd.strategies.diagonal import DiagonalStrategy

__all__ = ["RANKINGS", "PGPEState", "PGPE"]

#: How :class:`PGPE` shapes fitness: centered ranks of all members, or ranks within the pairs.
RANKINGS = ("centered", "pairs")


@dataclasses.dataclass(frozen=True)
class PGPEState(StrategyState):
    """State of :class:`PGPE`: ``optimizer_state`` is the center optimizer's ``state_dict()``,
    ``gradient`` the last generation's (dim,) estimate (uphill in loss; ``None`` before the first).
    The per-coordinate sigma is ``mutation.sigma · mutation.scale`` (:mod:`evograd.strategies.diagonal`)."""

    optimizer_state: dict | None = None
    gradient: torch.Tensor | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PGPE(DiagonalStrategy[PGPEState]):
    """PGPE: symmetric sampling, a per-coordinate sigma learned from the same samples, ClipUp.

    Each generation samples ``n = size/2`` directions ``ε_i = σ ⊙ z_i`` and scores both ends,
    ``center ± ε_i`` (the mutation must be antithetic: ``ask`` returns the seeds of the ``+`` ends,
    then their mirrors). The fitness of all ``2n`` members is shaped into utilities
    ``u = -centered_ranks(f)`` in [-0.5, 0.5] (the lowest loss gets +0.5; EvoTorch's ``"centered"``
    ranking), and with ``u⁺_i, u⁻_i`` the utilities of the two ends (Sehnke et al. 2010,
    symmetric sampling, in EvoTorch's normalization)::

        ∇_μ = (1/n) Σ_i (u⁺_i - u⁻_i)/2 · ε_i                     (ascent of utility)
        ∇_σ = (1/n) Σ_i ((u⁺_i + u⁻_i)/2) · (ε_i² - σ²)/σ
        center ← optimizer(center, gradient = -∇_μ)                 (ClipUp by default)
        σ ← clip(σ + sigma_lr · ∇_σ, σ (1 ± sigma_max_change))      (elementwise)

    With ``ranking="pairs"`` the center's weights compare only the two ends of each pair:
    ``(u⁺_i - u⁻_i)/2`` becomes the centered rank of the pair difference ``(f⁻_i - f⁺_i)/2``
    among the pairs (+0.5 for the pair whose ``+`` end beat its ``-`` end by the most), and sigma's
    weights the negated centered ranks of the pair means ``(f⁺_i + f⁻_i)/2``. Pairs scored on
    different data (their own minibatch or episode start) are then never ranked against each other
    for the center.

    The sigma step is bounded relative to sigma, as EvoTorch's ``stdev_max_change``. The
    optimizer runs at ``lr · lr_decay^generation`` (ClipUp's default ``max_speed``, ``2 · lr``,
    follows it). The gradient handed to the optimizer, ``-∇_μ``, is the search gradient of the
    expected loss preconditioned by ``σ²`` (Sehnke et al.'s form, without the ``1/σ²``);
    ``gradient_estimate`` returns it, so the hybrid optimizer's :func:`~evograd.directions.es`
    source can descend along it.

    With other mutation kinds than Gaussian, ``z`` is standardized by its second moment
    (:mod:`evograd.strategies.diagonal`); heavy-tailed kinds need ``mutation.clip``.

    Metrics: the common ones (:mod:`evograd.strategies.base`; ``sigma`` is the mean
    per-coordinate sigma), ``grad_norm`` (``‖∇_μ‖``) and ``lr`` (this generation's learning rate).

    Args:
        size: population size ``2n``: even, >= 2.
        mutation: the mutation: antithetic; its ``sigma`` (times ``scale``, if given) is the
            initial per-coordinate sigma.
        lr: the center optimizer's learning rate (ClipUp's step α), >= 0.
        lr_decay: per-generation factor on ``lr``, in (0, 1].
        optimizer: a ``torch.optim.Optimizer`` class for the center; :class:`ClipUp` by default.
        optimizer_kw: extra keyword arguments for it (e.g. ``{"max_speed": 0.2, "momentum": 0.9}``).
        ranking: ``"centered"`` (centered ranks of all members, EvoTorch's default) or ``"pairs"``
            (ranks of the pair differences and pair means).
        sigma_lr: sigma's learning rate, >= 0 (0 keeps sigma fixed).
        sigma_max_change: the largest relative change of sigma per generation, in [0, 1).
        chunk_size: rows regenerated at once in ``tell``; by default
            :func:`evograd.noise.chunk_rows` of the center's device.

    Raises:
        TypeError: a setting of the wrong type, naming it.
        ValueError: a setting out of its allowed range, naming it.

    Examples:
        >>> import torch
        >>> from evograd import FunctionEvaluator
        >>> pgpe = PGPE(size=20, mutation=Mutation(sigma=0.5, antithetic=True), lr=0.1, lr_decay=0.98)
        >>> evaluate = FunctionEvaluator(lambda x: (x ** 2).sum(1))
        >>> state = pgpe.init(torch.ones(10), seed=0)
        >>> for _ in range(300):
        ...     seeds = pgpe.ask(state)
        ...     state, metrics = pgpe.tell(state, seeds, evaluate(state.center, seeds, state.mutation))
        >>> float((state.center ** 2).sum()) < 1e-2, metrics["sigma"] < 0.05  # from 10.0 and 0.5
        (True, True)

    References:
        Sehnke et al. (2010), Parameter-exploring policy gradients; Toklu et al. (2020), ClipUp.
    """

    size: int = 200
    mutation: Mutation = Mutation(kind="gaussian", sigma=0.02, antithetic=True)
    lr: float = 0.075
    lr_decay: float = 1.0
    optimizer: type[torch.optim.Optimizer] = ClipUp
    optimizer_kw: dict[str, Any] | None = dataclasses.field(default=None, hash=False)
    ranking: str = "centered"
    sigma_lr: float = 0.1
    sigma_max_change: float = 0.2

    state_type: ClassVar[type[StrategyState]] = PGPEState
    extra_metrics: ClassVar[tuple[str, ...]] = ("grad_norm", "lr")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.mutation.antithetic:
            raise ValueError("mutation.antithetic=False is not allowed: PGPE samples symmetric pairs; allowed True")
        store_setting(self, "lr", validate.real("lr", self.lr, low=0.0, high=LR_LIMIT))
        store_setting(self, "lr_decay", validate.real("lr_decay", self.lr_decay, low=0.0, high=1.0, low_open=True))
        store_setting(self, "optimizer_kw", descent.check_optimizer(self.optimizer, self.optimizer_kw, self.lr))
        validate.choice("ranking", self.ranking, RANKINGS)
        store_setting(self, "sigma_lr", validate.real("sigma_lr", self.sigma_lr, low=0.0))
        store_setting(
            self,
            "sigma_max_change",
            validate.real("sigma_max_change", self.sigma_max_change, low=0.0, high=1.0, high_open=True),
        )

    def gradient_estimate(self, state: PGPEState) -> torch.Tensor | None:
        """The last generation's ``-∇_μ`` (uphill in loss, preconditioned by ``σ²``): a copy; None before the first."""
        return None if state.gradient is None else state.gradient.clone()

    def _update(
        self, state: PGPEState, seeds: torch.Tensor, fitness: torch.Tensor
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The symmetric PGPE gradients of center and sigma from the ranked pairs; one optimizer step."""
        n = len(seeds) // 2
        plus = seeds[:n]  # (n,) the + ends; seeds[n:] are their mirrors
        if not torch.equal(seeds[n:], ~plus):
            raise ValueError("seeds must be antithetic pairs as ask returns them: the second half mirrors the first")

        # --- utilities (higher is better): per pair, the center's weight and sigma's (mean zero)
        if self.ranking == "centered":  # u = -centered ranks of all 2n, +0.5 for the lowest loss
            utility = -shaping.centered_ranks(fitness)  # (2n,)
            difference = (utility[:n] - utility[n:]) / 2  # (n,) (u⁺ - u⁻)/2
            mean = (utility[:n] + utility[n:]) / 2  # (n,) (u⁺ + u⁻)/2
        else:  # ranks within the pairs: of (f⁻ - f⁺)/2 for the center, of -(f⁺ + f⁻)/2 for sigma
            difference = shaping.centered_ranks((fitness[n:] - fitness[:n]) / 2)  # (n,)
            mean = -shaping.centered_ranks((fitness[:n] + fitness[n:]) / 2)  # (n,)
        linear, square = diagonal.moments(state, plus, difference, mean, chunk_size=self.chunk_size)  # (dim,) ×2

        # --- center: ∇_μ = (1/n) Σ (u⁺-u⁻)/2 ε_i = std ⊙ (1/n) Σ (u⁺-u⁻)/2 ζ_i, std = σ √m₂
        sigma = diagonal.per_coordinate(state.mutation, state.center)  # (dim,)
        std = sigma * diagonal.second_moment(state.mutation, state.center.numel()) ** 0.5  # (dim,)
        gradient = -(std * linear) / n  # (dim,) -∇_μ, uphill in loss
        center, optimizer_state, lr = descent.scheduled_step(self, state, gradient)

        # --- sigma: σ ← σ · clip(1 + sigma_lr · (1/n) Σ mean_i (ζ_i² - 1), 1 ± max_change)
        factor = diagonal.sehnke_factor(square, mean, self.sigma_lr, self.sigma_max_change)  # (dim,)
        changes = {
            "center": center,
            "mutation": diagonal.rescaled(state.mutation, factor),
            "optimizer_state": optimizer_state,
            "gradient": gradient,
        }
        return changes, {"grad_norm": float(gradient.norm()), "lr": lr}
