"""The interfaces evograd's parts meet through, declared in one place (docs/design.rst, contract 9).

Evaluators and strategies are duck-typed: anything with these members works, whichever class it
comes from. Callers never probe an object for an attribute; they test it against a protocol
(``isinstance(evaluator, ModelEvaluator)``, all of them are ``runtime_checkable``) and then use
what the protocol declares. Wrappers declare what they wrap: :class:`~evograd.MPIEvaluator` of a
:class:`ModelEvaluator` is a ``ModelEvaluator`` itself, forwarding ``model``, ``batch``,
``set_batch`` and ``objective`` to the evaluator of its rank.

Evaluators:

* :class:`Evaluator`: ``evaluator(center, seeds, mutation) -> (n,)`` fitness, and its cost ``fe``
  (forward-pass equivalents, docs/design.rst, contract 8) and ``evaluations`` (members scored).
* :class:`ModelEvaluator`: an evaluator of a torch model on a batch, which also offers the loss as a
  function of the model's parameters (``objective``), for sources that need the loss itself
  (forward gradients, SPSA).
* :class:`VectorEvaluator`: an evaluator of a function of flat parameter vectors, which offers that
  function for one vector (``vector_objective``).
* :class:`StatisticsEvaluator`: an evaluator that learns from what it evaluates (the running
  observation statistics of :class:`~evograd.tasks.rl.EpisodeEvaluator`): each member yields a
  row of statistics, and the rows of a population are merged in member order, which keeps MPI
  ranks bit-identical.

Strategies:

* :class:`Strategy`: ``init``/``ask``/``tell`` over member seeds (contracts 3 and 4).
* :class:`GradientEstimator`: a strategy whose state holds an estimate of the loss gradient, the
  direction the hybrid optimizer's :func:`~evograd.directions.improvement` and
  :func:`~evograd.directions.es` sources descend along.
* :class:`State`: what every strategy state carries.
* :class:`WeightedSum`: how a seed strategy's ``tell`` forms its update sum ``Σ_i w_i ε_i /
  ‖ε_i‖^p`` (every strategy's update goes through this one seam); a strategy without one sums in
  the process (:func:`evograd.noise.weighted_sum`), :class:`~evograd.mpi.ShardedUpdate` shares the
  coordinates among MPI ranks.

Direction sources meet the optimizer through the base class :class:`evograd.directions.Direction`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from evograd.noise import Mutation

__all__ = [
    "Evaluator",
    "ModelEvaluator",
    "VectorEvaluator",
    "StatisticsEvaluator",
    "State",
    "Strategy",
    "GradientEstimator",
    "WeightedSum",
]

#: ``(inputs, targets, ...)``, a tensor of inputs, or a callable returning either (a fresh minibatch per call).
Batch = Any
#: The loss of a model's parameters given by name (the others keep the model's values) -> scalar.
ParamsLoss = Callable[[dict[str, Tensor]], Tensor]
#: The loss of one (dim,) parameter vector -> scalar.
VectorLoss = Callable[[Tensor], Tensor]


@runtime_checkable
class Evaluator(Protocol):
    """Scores a population: ``evaluator(center, seeds, mutation) -> (n,)`` fitness, lower is better.

    Member ``i`` is ``center + noise.sample(mutation, seeds[i:i+1])``; non-finite losses are
    reported as ``+inf``.

    Attributes:
        evaluations: members scored so far.
        fe: forward-pass equivalents spent so far (samples pushed through the network;
            1 per member for a plain function).
    """

    evaluations: int
    fe: int

    def __call__(self, center: Tensor, seeds: Tensor, mutation: Mutation) -> Tensor:
        """(n,) fitness of ``center`` perturbed by each of the (n,) int64 ``seeds``."""
        ...


@runtime_checkable
class ModelEvaluator(Evaluator, Protocol):
    """An evaluator of a torch model on a batch shared by every member of a call.

    Attributes:
        model: the network; its trainable parameters, flattened by :func:`evograd.flat.layout_of`,
            are the vector the population perturbs.
        batch: what the next calls score on: ``(inputs, targets, ...)``, a callable drawing one per
            call, or ``None`` before one is set.
    """

    model: nn.Module
    batch: Batch

    def set_batch(self, batch: Batch) -> None:
        """Score the next calls on ``batch`` (a tuple ``(inputs, targets, ...)`` or a callable returning one)."""
        ...

    def objective(self) -> tuple[ParamsLoss, int]:
        """The loss on one batch as a function of parameters by name, and that batch's sample count.

        ``loss(params)`` uses ``params`` in place of the model's own and the model's current values
        for the rest; it is differentiable (``torch.func.jvp`` works through it) and counts nothing:
        the caller charges its cost. A callable batch is drawn once, here.
        """
        ...


@runtime_checkable
class VectorEvaluator(Evaluator, Protocol):
    """An evaluator of a function of flat parameter vectors (a benchmark function, say)."""

    def vector_objective(self) -> tuple[VectorLoss, int]:
        """The function for one (dim,) vector, and the samples one call costs (1 for a plain function).

        ``loss(vector)`` is differentiable when the function is written in torch, and counts
        nothing: the caller charges its cost.
        """
        ...


@runtime_checkable
class StatisticsEvaluator(Evaluator, Protocol):
    """An evaluator whose members also yield statistics that update its state (e.g. observation normalization).

    A call scores the members and merges their statistics before it returns. The two halves are
    offered apart so that a wrapper can split a population, gather every share's statistics and
    merge them itself: :class:`~evograd.MPIEvaluator` calls :meth:`evaluate` on each rank's share,
    all-gathers the fitness and the rows, and calls :meth:`absorb` with the whole population's rows
    in member order on every rank. A member's row must depend only on the member (its parameters,
    its seed, the evaluator's state before the call), never on which members share its chunk or
    rank, so the merged state is the same bit for bit on any number of ranks.

    Attributes:
        statistics_width: floats in one member's row (0: the evaluator learns nothing this way).
    """

    statistics_width: int

    def evaluate(self, center: Tensor, seeds: Tensor, mutation: Mutation) -> tuple[Tensor, Tensor]:
        """(n,) fitness and (n, statistics_width) float64 rows, one per member in order; nothing merged."""
        ...

    def absorb(self, statistics: Tensor) -> None:
        """Merge a whole population's (n, statistics_width) rows, in member order, into the evaluator's state."""
        ...


@runtime_checkable
class State(Protocol):
    """What every strategy state carries; states are frozen dataclasses, replaced, never modified.

    Attributes:
        center: (dim,) the current point.
        mutation: the mutation of the current generation (its ``sigma`` may adapt).
        seed: the run's seed (docs/design.rst, contract 2).
        generation: generations told so far.
    """

    center: Tensor
    mutation: Mutation
    seed: int
    generation: int


@runtime_checkable
class Strategy(Protocol):
    """An ask/tell strategy over member seeds (docs/design.rst, contracts 3 and 4)::

        state = strategy.init(center, seed=0)
        seeds = strategy.ask(state)                                   # (population,) int64
        state, metrics = strategy.tell(state, seeds, evaluator(state.center, seeds, state.mutation))

    Attributes:
        population: how many seeds ``ask`` returns.
    """

    @property
    def population(self) -> int: ...

    def init(self, center: Tensor, *, seed: int) -> State:
        """The first state at ``center``; ``seed`` is the run's only seed."""
        ...

    def ask(self, state: State) -> Tensor:
        """The (population,) int64 seeds of this generation's members."""
        ...

    def tell(self, state: State, seeds: Tensor, fitness: Tensor) -> tuple[State, dict[str, Any]]:
        """The next state and this generation's metrics; a pure function of its arguments."""
        ...


@runtime_checkable
class GradientEstimator(Strategy, Protocol):
    """A strategy that estimates the gradient of the loss as it goes (rolling improvement, OpenES)."""

    def gradient_estimate(self, state: State) -> Tensor | None:
        """The (dim,) estimate of the loss gradient at ``state`` (uphill), or ``None`` before there is one."""
        ...


@runtime_checkable
class WeightedSum(Protocol):
    """Forms a strategy's update sum ``Σ_i weights[i] ε_i / ‖ε_i‖^norm_power`` from member seeds.

    The seam between a seed strategy's ``tell`` and where its rows are regenerated
    (:meth:`evograd.strategies.SeedStrategy.weighted_sum`). An implementation returns on every
    caller the same bits as :func:`evograd.noise.weighted_sum` with the same arguments, or says
    where it does not; ``tell`` stays a deterministic function of its arguments (a collective one
    when the implementation communicates: every rank calls it in the same order).

    Attributes:
        regenerated: coordinates of noise rows this caller has drawn so far (a cost counter: the
            update's work, ``P·D`` per generation for a whole-row sum).
    """

    regenerated: int

    def __call__(
        self,
        mutation: Mutation,
        seeds: Tensor,
        weights: Tensor,
        dim: int,
        *,
        norm_power: float = 0.0,
        chunk_size: int | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        with_norms: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """The (dim,) sum and the (n,) row norms (0 where the weight is 0), or None for the norms
        when ``with_norms`` is False and ``norm_power`` is 0 (so an implementation may skip them)."""
        ...
