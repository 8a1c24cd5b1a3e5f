"""(1+λ) and (μ/μ,λ) evolution with scale-free mutations and the 1/5th success rule.

References:
    Yao, Liu & Lin (1999), Evolutionary programming made faster.
    Lee & Yao (2004), Evolutionary programming using mutations based on the Lévy distribution.
    Rechenberg (1973); Kern et al. (2004), the 1/5th success rule.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch

from evograd import validate
from evograd.noise import Mutation
from evograd.strategies.base import SeedStrategy, StrategyState, store_setting

__all__ = ["EvolutionState", "ScaleFreeEvolution"]


@dataclasses.dataclass(frozen=True)
class EvolutionState(StrategyState):
    """State of :class:`ScaleFreeEvolution`; ``fitness`` is the parent's last measured fitness
    (under ``"comma"``, the mean fitness of the mutations it was recombined from)."""

    fitness: float = math.inf


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScaleFreeEvolution(SeedStrategy[EvolutionState]):
    """(1+λ) and (μ/μ,λ) evolution with scale-free mutations and the 1/5th success rule.

    With Cauchy or Lévy mutations this is fast evolutionary programming: the heavy tails make the
    occasional long jump that escapes a local minimum, while most mutations stay local.

    * ``selection="plus"``: (1+λ): the best mutation replaces the parent only if it is strictly
      better on the same data (elitist).
    * ``selection="comma"``: (μ/μ,λ): the new center is the mean of the ``mu`` best mutations,
      better or not.

    Each generation the parent is re-scored with its ``size`` mutations (so minibatch fitness is
    compared like with like), and ``sigma`` follows the 1/5th success rule: it grows when more than
    ``success_target`` of the mutations beat the parent and shrinks otherwise, by
    ``exp((p_success - target) / (damping * (1 - target)))`` per generation, within ``sigma_bounds``.

    Metrics: the common ones (:mod:`evograd.strategies.base`, ``parent`` included) and
    ``success``, the fraction of the mutations strictly better than the parent. Under ``"plus"``,
    ``best`` is the new parent's fitness.

    Args:
        size: mutations per generation (λ).
        mutation: the mutation; Cauchy by default.
        selection: ``"plus"`` or ``"comma"``.
        mu: parents recombined under ``"comma"`` (must be 1 under ``"plus"``).
        adapt_sigma: apply the 1/5th success rule.
        success_target: the success rate the rule aims at, in (0, 1).
        damping: how slowly sigma moves, > 0.
        sigma_bounds: ``(low, high)``, ``0 < low <= high``; sigma is kept in this closed interval.
        chunk_size: rows regenerated at once in ``tell``; by default
            :func:`evograd.noise.chunk_rows` of the center's device.

    Raises:
        TypeError: a setting of the wrong type, naming it.
        ValueError: a setting out of its allowed range, naming it.

    Examples:
        >>> import torch
        >>> from evograd import FunctionEvaluator
        >>> strategy = ScaleFreeEvolution(size=8, mutation=Mutation(kind="cauchy", sigma=0.5))
        >>> evaluate = FunctionEvaluator(lambda x: (x ** 2).sum(1))
        >>> state = strategy.init(torch.ones(5), seed=0)
        >>> for _ in range(100):
        ...     seeds = strategy.ask(state)
        ...     state, metrics = strategy.tell(state, seeds, evaluate(state.center, seeds, state.mutation))
        >>> metrics["best"] < 1e-3
        True
    """

    size: int = 16
    mutation: Mutation = Mutation(kind="cauchy", sigma=0.1)
    selection: str = "plus"
    mu: int = 1
    adapt_sigma: bool = True
    success_target: float = 0.2
    damping: float = 1.0
    sigma_bounds: tuple[float, float] = (1e-12, 1e12)

    evaluates_parent: ClassVar[bool] = True
    state_type: ClassVar[type[StrategyState]] = EvolutionState
    extra_metrics: ClassVar[tuple[str, ...]] = ("success",)

    def __post_init__(self) -> None:
        super().__post_init__()
        validate.choice("selection", self.selection, ("plus", "comma"))
        store_setting(self, "mu", validate.integer("mu", self.mu, low=1, high=self.size))
        if self.selection == "plus" and self.mu != 1:
            raise ValueError(f"mu={self.mu} is not allowed with selection='plus'; allowed mu=1 (1+lambda)")
        validate.flag("adapt_sigma", self.adapt_sigma)
        store_setting(
            self,
            "success_target",
            validate.real("success_target", self.success_target, low=0.0, high=1.0, low_open=True, high_open=True),
        )
        store_setting(self, "damping", validate.real("damping", self.damping, low=0.0, low_open=True))
        bounds = self.sigma_bounds
        if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
            raise TypeError(f"sigma_bounds={bounds!r} must be a pair (low, high), got {type(bounds).__name__}")
        low = validate.real("sigma_bounds[0]", bounds[0], low=0.0, low_open=True)
        high = validate.real("sigma_bounds[1]", bounds[1], low=0.0, low_open=True)
        if low > high:
            raise ValueError(f"sigma_bounds={bounds!r} is not allowed; allowed 0 < low <= high")
        store_setting(self, "sigma_bounds", (low, high))

    def _update(
        self, state: EvolutionState, seeds: torch.Tensor, fitness: torch.Tensor
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Select the next parent and adapt sigma from this generation's fitness."""
        parent, children, child_seeds = fitness[0], fitness[1:], seeds[1:]  # f_parent; (λ,) f_i; (λ,) seeds

        # --- select
        order = torch.argsort(children, stable=True).cpu()  # (λ,) best first, ties by position
        best = int(order[0])
        center, new_fitness = state.center, float(parent)
        if self.selection == "plus":  # (1+λ): x ← x + ε_best if f_best < f_parent
            if children[best] < parent:
                center = center + self.rows(state, child_seeds[best : best + 1])[0]  # (dim,)
                new_fitness = float(children[best])
        else:  # (μ/μ,λ): x ← x + (1/μ) Σ_{i ≤ μ} ε_(i)
            elite = order[: self.mu]  # (μ,)
            step, _ = self.weighted_sum(
                state, child_seeds[elite], torch.full((self.mu,), 1.0 / self.mu), with_norms=False
            )  # (dim,)
            center = center + step
            new_fitness = float(children[elite].mean())

        # --- adapt sigma (1/5th success rule): σ ← σ · exp((p_s - target) / (damping · (1 - target)))
        success = float((children < parent).double().mean())  # p_s
        sigma = state.mutation.sigma
        if self.adapt_sigma:
            change = (success - self.success_target) / (self.damping * (1.0 - self.success_target))
            sigma = min(max(sigma * math.exp(change), self.sigma_bounds[0]), self.sigma_bounds[1])

        changes = {"center": center, "mutation": state.mutation.replace(sigma=sigma), "fitness": new_fitness}
        return changes, {"success": success}
