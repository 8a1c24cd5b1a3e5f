"""evograd: train neural networks by mixing evolution with gradients.

The public API, re-exported here (importing evograd has no side effects and needs only torch,
numpy and deap; optional extras are imported where they are used).
"""

from evograd import (
    checkpoint,
    cupy_bridge,
    deap_tools,
    diagnostics,
    directions,
    feedback,
    flat,
    harness,
    mpi,
    noise,
    shaping,
    tasks,
    validate,
)
from evograd.cupy_bridge import CupyEvaluator
from evograd.evaluate import ChunkedEvaluator, Evaluator, FunctionEvaluator, SerialEvaluator, VmapEvaluator
from evograd.mpi import MPIEvaluator
from evograd.noise import Mutation
from evograd.optim import HybridOptimizer
from evograd.population import (
    ESState,
    EvolutionState,
    OpenES,
    RollingImprovement,
    RollingState,
    ScaleFreeEvolution,
    StrategyState,
)

__version__ = "0.1.0"

__all__ = [
    "ChunkedEvaluator",
    "CupyEvaluator",
    "ESState",
    "Evaluator",
    "EvolutionState",
    "FunctionEvaluator",
    "HybridOptimizer",
    "MPIEvaluator",
    "Mutation",
    "OpenES",
    "RollingImprovement",
    "RollingState",
    "ScaleFreeEvolution",
    "SerialEvaluator",
    "StrategyState",
    "VmapEvaluator",
    "checkpoint",
    "cupy_bridge",
    "deap_tools",
    "diagnostics",
    "directions",
    "feedback",
    "flat",
    "harness",
    "mpi",
    "noise",
    "shaping",
    "tasks",
    "validate",
    "__version__",
]
