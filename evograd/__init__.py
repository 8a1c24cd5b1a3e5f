"""evograd: train neural networks by mixing evolution with gradients.

The public API, re-exported here (importing evograd has no side effects and needs only torch,
numpy, deap and rich; optional extras are imported where they are used).
"""

from evograd import (
    checkpoint,
    context,
    cupy_bridge,
    deap_tools,
    diagnostics,
    directions,
    feedback,
    flat,
    harness,
    loggers,
    loop,
    lowrank,
    mpi,
    noise,
    progress,
    protocols,
    runstore,
    schema,
    shaping,
    strategies,
    tasks,
    tree,
    validate,
)
from evograd.cupy_bridge import CupyEvaluator
from evograd.evaluate import ChunkedEvaluator, FunctionEvaluator, LowRankEvaluator, SerialEvaluator, VmapEvaluator
from evograd.loop import optimize
from evograd.mpi import MPIEvaluator, MPIModelEvaluator, MPIVectorEvaluator, ShardedUpdate
from evograd.noise import Mutation
from evograd.optim import HybridOptimizer
from evograd.protocols import (
    Evaluator,
    GradientEstimator,
    ModelEvaluator,
    State,
    StatisticsEvaluator,
    Strategy,
    VectorEvaluator,
    WeightedSum,
)
from evograd.strategies import (
    ESState,
    EvolutionState,
    OpenES,
    RollingImprovement,
    RollingState,
    ScaleFreeEvolution,
    StrategyState,
)
from evograd.tasks import EpisodeEvaluator, ObservationNorm

__version__ = "0.1.0"

__all__ = [
    "ChunkedEvaluator",
    "CupyEvaluator",
    "ESState",
    "EpisodeEvaluator",
    "Evaluator",
    "EvolutionState",
    "FunctionEvaluator",
    "GradientEstimator",
    "HybridOptimizer",
    "LowRankEvaluator",
    "MPIEvaluator",
    "MPIModelEvaluator",
    "MPIVectorEvaluator",
    "ModelEvaluator",
    "Mutation",
    "ObservationNorm",
    "OpenES",
    "RollingImprovement",
    "RollingState",
    "ScaleFreeEvolution",
    "SerialEvaluator",
    "ShardedUpdate",
    "State",
    "StatisticsEvaluator",
    "Strategy",
    "StrategyState",
    "VectorEvaluator",
    "VmapEvaluator",
    "WeightedSum",
    "checkpoint",
    "context",
    "cupy_bridge",
    "deap_tools",
    "diagnostics",
    "directions",
    "feedback",
    "flat",
    "harness",
    "loggers",
    "loop",
    "lowrank",
    "mpi",
    "noise",
    "optimize",
    "progress",
    "protocols",
    "runstore",
    "schema",
    "shaping",
    "strategies",
    "tasks",
    "tree",
    "validate",
    "__version__",
]
