"""What every seed strategy shares: the state, the validated config, ``ask``, and the template ``tell``.

A strategy is a frozen dataclass of its settings (docs/design.rst, contract 6), validated in
``__post_init__``; its state is a frozen dataclass too. :class:`SeedStrategy` owns the parts that
must mean the same in every strategy:

* ``init`` checks the center and the seed and builds the first state;
* ``ask`` derives the generation's member seeds from ``(seed, generation, member)``;
* ``tell`` is a template: it checks the seeds and fitness (shapes, length, float64 on the center's
  device, non-finite values ranked worst and counted), hands them to the strategy's own
  :meth:`SeedStrategy._update`, advances the generation, and builds the common metrics.

So a new strategy writes its update and nothing else, and the metrics below keep one meaning
across strategies (lower fitness is better, docs/design.rst, contract 1):

==============  ======================================================================================
key             meaning
==============  ======================================================================================
``generation``  the generation told: ``state.generation`` of the state passed in
``best``        the lowest finite fitness told this generation (every member, the parent's re-score
                included); ``inf`` when none is finite
``mean``        the mean of the finite fitness values told this generation; ``inf`` when none is finite
``nonfinite``   how many fitness values were NaN or ±inf (ranked worst, never reaching the state)
``sigma``       the mutation's ``sigma`` in force for the next generation (after any adaptation)
``parent``      only where the strategy re-scores its parent (``evaluates_parent``): the parent's
                fitness this generation, at the center *before* this tell's step; ``inf`` if non-finite
==============  ======================================================================================

Each strategy adds its own keys, named in its ``extra_metrics``; :attr:`SeedStrategy.metric_names`
is the full, ordered key set of one strategy.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar

import torch

from evograd import noise, shaping, validate
from evograd.noise import Mutation
from evograd.protocols import WeightedSum

__all__ = ["COMMON_METRICS", "PARENT_METRIC", "StrategyState", "SeedStrategy", "store_setting"]

#: The metrics every strategy's ``tell`` returns, with one meaning each (see the module docstring).
COMMON_METRICS = ("generation", "best", "mean", "nonfinite", "sigma")
#: The metric of strategies that re-score their parent each generation.
PARENT_METRIC = "parent"


def store_setting(config: Any, name: str, value: Any) -> None:
    """Keep a validated (converted, e.g. ``numpy.int64`` to ``int``) setting on a frozen config.

    For the ``__post_init__`` of strategy configs only: a frozen dataclass cannot assign its fields,
    and the checks of :mod:`evograd.validate` return the plain value they checked.
    """
    object.__setattr__(config, name, value)


@dataclasses.dataclass(frozen=True)
class StrategyState:
    """What every strategy carries: the current point, the mutation in force, and where it is in time.

    Attributes:
        center: (dim,) the current point.
        mutation: the mutation of the current generation (its ``sigma`` may adapt).
        seed: the run's only seed (docs/design.rst, contract 2).
        generation: how many generations have been told.
    """

    center: torch.Tensor
    mutation: Mutation
    seed: int
    generation: int


StateT = TypeVar("StateT", bound=StrategyState)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeedStrategy(abc.ABC, Generic[StateT]):
    """The base of the ask/tell strategies over member seeds; a frozen, validated config.

    Subclasses are ``@dataclasses.dataclass(frozen=True, kw_only=True)`` with their settings as
    fields (with defaults), validate them in ``__post_init__`` after calling this one, set the class
    variables below, and implement :meth:`_update` (and :meth:`_initial_fields` if their state has
    fields without defaults).

    Args:
        size: mutations per generation.
        mutation: the mutation of the first generation.
        chunk_size: rows regenerated at once in ``tell``; by default
            :func:`evograd.noise.chunk_rows` of the center's device.
        update: who forms the update's weighted sum of rows (:class:`evograd.protocols.WeightedSum`):
            None sums whole rows in this process; :class:`evograd.mpi.ShardedUpdate` has each MPI
            rank sum its own coordinates. Not part of equality.

    Raises:
        TypeError: a setting of the wrong type, naming it.
        ValueError: a setting out of its allowed range, naming it.
    """

    size: int
    mutation: Mutation
    chunk_size: int | None = None
    update: WeightedSum | None = dataclasses.field(default=None, compare=False)

    #: Whether ``ask`` puts :data:`evograd.noise.PARENT_SEED` first, so the parent is re-scored on
    #: the same data as its mutations.
    evaluates_parent: ClassVar[bool] = False
    #: The class of this strategy's states.
    state_type: ClassVar[type[StrategyState]] = StrategyState
    #: The metrics this strategy adds to the common ones.
    extra_metrics: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        store_setting(self, "size", validate.integer("size", self.size, low=1))
        if not isinstance(self.mutation, Mutation):
            kind = type(self.mutation).__name__
            raise TypeError(f"mutation={self.mutation!r} must be an evograd.Mutation, got {kind}")
        if self.mutation.antithetic and self.size % 2:
            raise ValueError(f"size={self.size} is not allowed; allowed even sizes when mutation.antithetic is True")
        if isinstance(self.mutation.scale, Mapping):
            raise ValueError(
                "mutation.scale names parameters: call mutation.resolve(model) before handing it to a strategy"
            )
        if self.mutation.rank is not None and self.mutation.layout is None:
            raise ValueError(
                f"mutation.rank={self.mutation.rank} needs the model's layout: call mutation.resolve(model) before "
                "handing it to a strategy"
            )
        if self.chunk_size is not None:
            store_setting(self, "chunk_size", validate.integer("chunk_size", self.chunk_size, low=1))
        if self.update is not None and not isinstance(self.update, WeightedSum):
            raise TypeError(f"update={self.update!r} must be an evograd.WeightedSum or None")

    def replace(self, **changes: Any) -> SeedStrategy[StateT]:
        """A copy with some settings changed, validated again.

        Raises:
            TypeError: a name that is not a setting of this strategy, or a value of the wrong type.
            ValueError: a value out of its allowed range.
        """
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no setting(s) {unknown}; allowed {names}")
        return dataclasses.replace(self, **changes)

    @property
    def population(self) -> int:
        """How many seeds ``ask`` returns (the mutations, plus the parent where it is re-scored)."""
        return self.size + int(self.evaluates_parent)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every key of the metrics ``tell`` returns, in order: the common ones, then this strategy's."""
        parent = (PARENT_METRIC,) if self.evaluates_parent else ()
        return COMMON_METRICS + parent + self.extra_metrics

    # ------------------------------------------------------------------------------------------
    # the loop

    def init(self, center: torch.Tensor, *, seed: int) -> StateT:
        """The first state, at ``center``.

        Args:
            center: (dim,) floating tensor, finite; the state keeps a copy.
            seed: the run's only seed, an integer in ``[0, 2**63)``.

        Raises:
            TypeError: ``center`` is not a tensor, or ``seed`` not an integer.
            ValueError: ``center`` is not a non-empty finite 1-d floating tensor, does not match
                ``mutation.scale`` or ``mutation.layout``, or ``seed`` is out of range.
        """
        seed = validate.seed("seed", seed)
        if not isinstance(center, torch.Tensor):
            raise TypeError(f"center must be a torch.Tensor, got {type(center).__name__}")
        if center.dim() != 1 or not center.is_floating_point() or center.numel() == 0:
            raise ValueError(
                f"center must be a non-empty 1-d floating tensor, got shape {tuple(center.shape)} {center.dtype}"
            )
        if not torch.isfinite(center).all():
            raise ValueError("center has non-finite entries; allowed finite values only")
        if isinstance(self.mutation.scale, torch.Tensor) and self.mutation.scale.numel() != center.numel():
            raise ValueError(
                f"mutation.scale has {self.mutation.scale.numel()} entries but center has {center.numel()}"
            )
        if self.mutation.layout is not None and self.mutation.layout.dim != center.numel():
            raise ValueError(
                f"mutation.layout has {self.mutation.layout.dim} parameters but center has {center.numel()}"
            )
        center = center.detach().clone()
        fields = self._initial_fields(center)
        return self.state_type(center=center, mutation=self.mutation, seed=seed, generation=0, **fields)

    def ask(self, state: StateT) -> torch.Tensor:
        """The (population,) int64 seeds of this generation's members, from ``(seed, generation, member)``."""
        seeds = noise.member_seeds(state.seed, state.generation, self.size, antithetic=state.mutation.antithetic)
        if self.evaluates_parent:
            seeds = torch.cat([torch.tensor([noise.PARENT_SEED]), seeds])
        return seeds

    def tell(self, state: StateT, seeds: torch.Tensor, fitness: torch.Tensor) -> tuple[StateT, dict[str, Any]]:
        """The next state and this generation's metrics; a pure function of its arguments.

        Args:
            state: the state the seeds were asked from.
            seeds: (population,) int64, as ``ask`` returned them.
            fitness: (population,) losses of those members (lower is better); NaN and ±inf are
                ranked worst and counted in ``metrics["nonfinite"]``.

        Returns:
            The new state (the one passed in is not modified) and the metrics, keyed by
            :attr:`metric_names` (meanings in :mod:`evograd.strategies.base`).

        Raises:
            TypeError: ``state`` is not this strategy's state, or ``seeds`` are not int64.
            ValueError: ``seeds`` or ``fitness`` do not hold ``population`` entries.
        """
        if not isinstance(state, self.state_type):
            raise TypeError(f"state must be a {self.state_type.__name__}, got {type(state).__name__}")
        seeds, told = torch.as_tensor(seeds), torch.as_tensor(fitness)
        if seeds.dtype != torch.int64:
            raise TypeError(f"seeds must be int64 (as ask returns them), got {seeds.dtype}")
        if seeds.shape != (self.population,) or told.shape != (self.population,):
            raise ValueError(
                f"tell expects {self.population} seeds and fitness values, got {tuple(seeds.shape)} and "
                f"{tuple(told.shape)}"
            )
        told = told.to(device=state.center.device, dtype=torch.float64)  # (population,)
        fitness = shaping.finite_or_worst(told)  # (population,) NaN and ±inf -> +inf

        changes, extras = self._update(state, seeds.cpu(), fitness)
        new_state = dataclasses.replace(state, generation=state.generation + 1, **changes)

        finite = fitness[torch.isfinite(fitness)]  # (k,)
        metrics: dict[str, Any] = {
            "generation": state.generation,
            "best": float(finite.min()) if len(finite) else math.inf,
            "mean": float(finite.mean()) if len(finite) else math.inf,
            "nonfinite": len(fitness) - len(finite),
            "sigma": float(new_state.mutation.sigma),
        }
        if self.evaluates_parent:
            metrics[PARENT_METRIC] = float(fitness[0])
        metrics.update(extras)
        return new_state, metrics

    # ------------------------------------------------------------------------------------------
    # what a strategy supplies

    def _initial_fields(self, center: torch.Tensor) -> dict[str, Any]:
        """The first state's fields beyond the common four (none by default)."""
        return {}

    @abc.abstractmethod
    def _update(
        self, state: StateT, seeds: torch.Tensor, fitness: torch.Tensor
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The strategy's own update: what changes in the state, and its extra metrics.

        Called by :meth:`tell` after its checks; must not modify ``state``.

        Args:
            state: the current state.
            seeds: (population,) int64 on the CPU.
            fitness: (population,) float64 on the center's device, every entry finite or +inf.

        Returns:
            The changed state fields (``generation`` is advanced by :meth:`tell`), and the
            metrics named in ``extra_metrics``.
        """

    # ------------------------------------------------------------------------------------------
    # helpers of the updates

    def rows(self, state: StateT, seeds: torch.Tensor) -> torch.Tensor:
        """The (n, dim) perturbations of ``seeds``, in the center's dtype and device."""
        center = state.center
        return noise.sample(state.mutation, seeds, center.numel(), device=center.device, dtype=center.dtype)

    def weighted_sum(
        self,
        state: StateT,
        seeds: torch.Tensor,
        weights: torch.Tensor,
        norm_power: float = 0.0,
        *,
        with_norms: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``Σ_i weights[i] ε_i / ‖ε_i‖^norm_power`` (dim,) and the (n,) norms ``‖ε_i‖``, chunk by chunk.

        Formed by :attr:`update` when one is set, else in this process by
        :func:`evograd.noise.weighted_sum` (which forms a low-rank mutation's sum as one GEMM of
        stacked factors per matrix, never as rows). An update that does not
        use the norms passes ``with_norms=False`` (then the norms are None), which spares a sharded
        update a pass over whole rows.
        """
        center = state.center
        arguments = {"norm_power": norm_power, "chunk_size": self.chunk_size, "device": center.device}
        if self.update is not None:
            return self.update(
                state.mutation, seeds, weights, center.numel(), dtype=center.dtype, with_norms=with_norms, **arguments
            )
        total, norms = noise.weighted_sum(
            state.mutation, seeds, weights, center.numel(), dtype=center.dtype, **arguments
        )
        return total, norms if with_norms else None
