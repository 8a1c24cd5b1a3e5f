"""sep-CMA-ES: CMA-ES with a diagonal covariance, cumulation and cumulative step-size adaptation.

References:
    Ros & Hansen (2008), A simple modification in CMA-ES achieving linear time and space
    complexity. PPSN X, LNCS 5199.
    Hansen (2016), The CMA evolution strategy: a tutorial. arXiv:1604.00772.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch

from evograd.noise import Mutation
from evograd.strategies import diagonal
from evograd.strategies.base import StrategyState
from evograd.strategies.diagonal import DiagonalStrategy

__all__ = ["SepCMAState", "SepCMAES", "SepCMAParameters"]

_STEP_BOUNDS = (1e-300, 1e300)  # the step size never leaves these (a sigma of 0 or inf is no mutation)


@dataclasses.dataclass(frozen=True)
class SepCMAState(StrategyState):
    """State of :class:`SepCMAES`. The mutation's ``sigma`` is the global step size and its ``scale``
    the square root of the diagonal covariance, ``D = √diag(C)``; ``path_sigma`` and ``path_c`` are
    the (dim,) evolution paths of the step size and of the covariance (zero at first)."""

    path_sigma: torch.Tensor | None = None
    path_c: torch.Tensor | None = None


@dataclasses.dataclass(frozen=True)
class SepCMAParameters:
    """The strategy parameters of sep-CMA-ES for ``dim`` coordinates and population ``size`` (λ).

    Hansen's (2016) defaults, as ``purecma`` (pycma 4.5.0, ``cma/more_algorithms/purecma.py``)
    sets them, with the covariance learning rates multiplied by ``(n + 2)/3`` for the diagonal
    model (Ros & Hansen 2008, Sect. 3: fewer free parameters learn faster):

    * weights ``w_i ∝ ln((λ+1)/2) - ln i`` for the ``μ = ⌊λ/2⌋`` best, summing to 1;
      ``μ_eff = 1/Σ w_i²``
    * ``c_σ = (μ_eff + 2)/(n + μ_eff + 5)``, ``d_σ = 2 μ_eff/λ + 0.3 + c_σ``
    * ``c_c = (4 + μ_eff/n)/(n + 4 + 2 μ_eff/n)``
    * ``c_1 = (n+2)/3 · 2/((n + 1.3)² + μ_eff)``,
      ``c_μ = min(1 - c_1, (n+2)/3 · 2 (μ_eff - 2 + 1/μ_eff)/((n + 2)² + μ_eff))``

    (pycma's own ``CMA_diagonal`` option uses its newer ``c1_sep``, ``cmu_sep`` and ``cc_sep``
    formulas, of the same order in ``n`` for ``c_1`` and ``c_μ``.)
    """

    dim: int
    size: int

    @property
    def mu(self) -> int:
        """How many of the best members are recombined, ``⌊λ/2⌋``."""
        return self.size // 2

    @property
    def weights(self) -> torch.Tensor:
        """(μ,) float64 recombination weights, best first, summing to 1."""
        raw = math.log((self.size + 1) / 2) - torch.log(torch.arange(1, self.mu + 1, dtype=torch.float64))
        return raw / raw.sum()

    @property
    def mueff(self) -> float:
        """The variance-effective selection mass ``1/Σ w_i²``."""
        return float(1.0 / self.weights.square().sum())

    @property
    def cs(self) -> float:
        """The step-size path's learning rate ``c_σ``."""
        return (self.mueff + 2) / (self.dim + self.mueff + 5)

    @property
    def damps(self) -> float:
        """The step-size damping ``d_σ``."""
        return 2 * self.mueff / self.size + 0.3 + self.cs

    @property
    def cc(self) -> float:
        """The covariance path's learning rate ``c_c``."""
        n, mueff = self.dim, self.mueff
        return (4 + mueff / n) / (n + 4 + 2 * mueff / n)

    @property
    def c1(self) -> float:
        """The rank-one learning rate, scaled for the diagonal model."""
        return min(1.0, (self.dim + 2) / 3 * 2 / ((self.dim + 1.3) ** 2 + self.mueff))

    @property
    def cmu(self) -> float:
        """The rank-μ learning rate, scaled for the diagonal model."""
        n, mueff = self.dim, self.mueff
        return min(1.0 - self.c1, (n + 2) / 3 * 2 * (mueff - 2 + 1 / mueff) / ((n + 2) ** 2 + mueff))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SepCMAES(DiagonalStrategy[SepCMAState]):
    """sep-CMA-ES: CMA-ES with a diagonal covariance, cumulation and cumulative step-size adaptation.

    Members are ``x_k = m + s · D ⊙ z_k``: ``s`` is ``state.mutation.sigma`` (the global step
    size) and ``D = √diag(C)`` is ``state.mutation.scale`` (:mod:`evograd.strategies.diagonal`).
    With the ``μ`` best members' standardized rows ``ζ_(i)`` (Gaussian rows as they are) and the
    parameters of :class:`SepCMAParameters`, one generation is (Hansen 2016, as ``purecma``;
    ``g`` counts generations, ``n`` coordinates)::

        ⟨ζ⟩ = Σ w_i ζ_(i),  ⟨ζ²⟩ = Σ w_i ζ_(i)²                                 (elementwise)
        m ← m + s · D ⊙ ⟨ζ⟩                                                    (weighted recombination)
        p_σ ← (1 - c_σ) p_σ + √(c_σ (2 - c_σ) μ_eff) ⟨ζ⟩                       (C^-1/2 is 1/D)
        h = [‖p_σ‖²/n / (1 - (1 - c_σ)^(2g)) < 2 + 4/(n + 1)]
        p_c ← (1 - c_c) p_c + h √(c_c (2 - c_c) μ_eff) D ⊙ ⟨ζ⟩
        C ← (1 - c_1 (1 - (1-h) c_c (2-c_c)) - c_μ) C + c_1 p_c² + c_μ C ⊙ ⟨ζ²⟩
        s ← s · exp(min(1, c_σ/d_σ · (‖p_σ‖²/n - 1)/2))

    The initial ``C`` is ``diag(scale²)`` of the configured mutation (the identity without a
    scale); the initial ``s`` its ``sigma``. The paper's population is ``4 + ⌊3 ln n⌋``
    (:func:`evograd.strategies.diagonal.paper_size`); ``size`` is a setting. sep-CMA estimates no
    gradient (its step is a recombination), so it has no ``gradient_estimate``.

    Metrics: the common ones (``sigma`` is the mean per-coordinate sigma ``s · mean(D)``),
    ``step_size`` (``s``) and ``axis_ratio`` (``max D / min D`` over the coordinates with ``D > 0``).

    Args:
        size: population size λ, >= 2.
        mutation: the mutation; ``sigma`` is the initial step size, ``scale`` (optional) the
            initial ``√diag(C)``.
        chunk_size: rows regenerated at once in ``tell``; by default
            :func:`evograd.noise.chunk_rows` of the center's device.

    Raises:
        TypeError: a setting of the wrong type, naming it.
        ValueError: a setting out of its allowed range, naming it.

    Examples:
        >>> import torch
        >>> from evograd import FunctionEvaluator
        >>> cma = SepCMAES(size=diagonal.paper_size(10), mutation=Mutation(sigma=0.5))
        >>> evaluate = FunctionEvaluator(lambda x: (x ** 2).sum(1))
        >>> state = cma.init(torch.ones(10, dtype=torch.float64), seed=0)
        >>> for _ in range(200):
        ...     seeds = cma.ask(state)
        ...     state, metrics = cma.tell(state, seeds, evaluate(state.center, seeds, state.mutation))
        >>> metrics["best"] < 1e-10
        True

    References:
        Ros & Hansen (2008), A simple modification in CMA-ES achieving linear time and space
        complexity; Hansen (2016), The CMA evolution strategy: a tutorial.
    """

    size: int = 200
    mutation: Mutation = Mutation(kind="gaussian", sigma=0.02)

    state_type: ClassVar[type[StrategyState]] = SepCMAState
    extra_metrics: ClassVar[tuple[str, ...]] = ("step_size", "axis_ratio")

    def parameters(self, dim: int) -> SepCMAParameters:
        """The strategy parameters for ``dim`` coordinates at this population size."""
        return SepCMAParameters(dim=dim, size=self.size)

    def _initial_fields(self, center: torch.Tensor) -> dict[str, Any]:
        """Zero evolution paths, and the mutation with ``√diag(C)`` as its factors."""
        paths = {"path_sigma": torch.zeros_like(center), "path_c": torch.zeros_like(center)}
        return {**super()._initial_fields(center), **paths}

    def _update(
        self, state: SepCMAState, seeds: torch.Tensor, fitness: torch.Tensor
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Recombine the μ best, update both evolution paths, the diagonal covariance and the step size."""
        center, mutation = state.center, state.mutation
        n = center.numel()
        p = self.parameters(n)
        elite = torch.argsort(fitness, stable=True)[: p.mu].cpu()  # (μ,) best first
        weights = p.weights  # (μ,)
        mean_z, mean_z2 = diagonal.moments(state, seeds[elite], weights, weights, chunk_size=self.chunk_size)

        # --- mean: m ← m + s·D ⊙ ⟨ζ⟩, with s·D the members' standard deviation σ √m₂
        scale = mutation.scale.to(center)  # (dim,) D
        std = diagonal.per_coordinate(mutation, center) * diagonal.second_moment(mutation, n) ** 0.5  # (dim,)
        new_center = center + std * mean_z

        # --- evolution paths
        generation = state.generation + 1
        path_sigma = (1 - p.cs) * state.path_sigma + math.sqrt(p.cs * (2 - p.cs) * p.mueff) * mean_z  # (dim,)
        norm2 = float(path_sigma.double().square().sum())  # ‖p_σ‖²
        h = float(norm2 / n / (1 - (1 - p.cs) ** (2 * generation)) < 2 + 4 / (n + 1))
        path_c = (1 - p.cc) * state.path_c + h * math.sqrt(p.cc * (2 - p.cc) * p.mueff) * scale * mean_z  # (dim,)

        # --- covariance: C = D², rank-one and rank-μ updates
        c1a = p.c1 * (1 - (1 - h) * p.cc * (2 - p.cc))
        variance = scale.square()  # (dim,) diag(C)
        variance = (1 - c1a - p.cmu) * variance + p.c1 * path_c.square() + p.cmu * variance * mean_z2  # (dim,)

        # --- step size: cumulative step-size adaptation on ‖p_σ‖²
        step_size = mutation.sigma * math.exp(min(1.0, p.cs / p.damps * (norm2 / n - 1) / 2))
        step_size = min(max(step_size, _STEP_BOUNDS[0]), _STEP_BOUNDS[1])  # a valid Mutation sigma, always
        new_scale = variance.clamp_min(0.0).sqrt()  # (dim,) D
        live = new_scale[new_scale > 0]
        axis_ratio = float(live.max() / live.min()) if len(live) else 1.0
        changes = {
            "center": new_center,
            "mutation": mutation.replace(sigma=step_size, scale=new_scale),
            "path_sigma": path_sigma,
            "path_c": path_c,
        }
        return changes, {"step_size": step_size, "axis_ratio": axis_ratio}
