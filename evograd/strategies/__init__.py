"""Ask/tell strategies over seeds, with explicit immutable state.

Every strategy follows one loop (lower fitness is better)::

    state = strategy.init(center, seed=0)
    for _ in range(generations):
        seeds = strategy.ask(state)                              # (n,) int64, no parameters
        fitness = evaluator(state.center, seeds, state.mutation)  # (n,)
        state, metrics = strategy.tell(state, seeds, fitness)

``tell`` is a deterministic function of ``(state, seeds, fitness)``: MPI ranks that run the same
loop stay in lockstep exchanging only fitness values (docs/design.rst, contract 4). Strategies are
frozen, validated configs (``strategy.replace(lr=0.1)`` gives a validated copy) and states are
frozen dataclasses; ``tell`` returns a new state and never modifies its input. ``state.mutation``
is the mutation of the current generation (its ``sigma`` may adapt), ``state.center`` the current
point.

Strategies that compare mutations with their parent put :data:`evograd.noise.PARENT_SEED` first in
the seeds they ask for, so the parent is scored on the same data as its mutations.

The metrics of ``tell`` have one meaning across strategies; :mod:`evograd.strategies.base` lists
them. Strategies that estimate the loss gradient (:class:`RollingImprovement`, :class:`OpenES`,
:class:`PGPE`, :class:`SNES`) say so with ``gradient_estimate(state)``, the estimate pointing uphill.

The adaptive strategies (:class:`PGPE`, :class:`SNES`, :class:`SepCMAES`) learn a per-coordinate
sigma, kept as the factors ``scale`` of ``state.mutation``, so every evaluator scores their members
unchanged (:mod:`evograd.strategies.diagonal`).

Modules: :mod:`~evograd.strategies.base` (the state, the shared config and the template ``tell``),
:mod:`~evograd.strategies.diagonal` (per-coordinate sigma), :mod:`~evograd.strategies.descent`
(a torch optimizer inside a pure ``tell``), and one module per strategy:
:mod:`~evograd.strategies.evolution`, :mod:`~evograd.strategies.rolling`,
:mod:`~evograd.strategies.openes`, :mod:`~evograd.strategies.pgpe`, :mod:`~evograd.strategies.snes`,
:mod:`~evograd.strategies.sepcma`.
"""

from evograd.strategies.base import COMMON_METRICS, PARENT_METRIC, SeedStrategy, StrategyState
from evograd.strategies.evolution import EvolutionState, ScaleFreeEvolution
from evograd.strategies.openes import ESState, OpenES
from evograd.strategies.pgpe import PGPE, PGPEState
from evograd.strategies.rolling import RollingImprovement, RollingState
from evograd.strategies.sepcma import SepCMAES, SepCMAParameters, SepCMAState
from evograd.strategies.snes import SNES, SNESState

__all__ = [
    "COMMON_METRICS",
    "PARENT_METRIC",
    "SeedStrategy",
    "StrategyState",
    "EvolutionState",
    "RollingState",
    "ESState",
    "PGPEState",
    "SNESState",
    "SepCMAState",
    "SepCMAParameters",
    "ScaleFreeEvolution",
    "RollingImprovement",
    "OpenES",
    "PGPE",
    "SNES",
    "SepCMAES",
]
