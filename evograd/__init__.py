"""evograd: train neural networks by mixing evolution with gradients.

The public API, re-exported here (importing evograd has no side effects and needs only torch,
numpy and deap; optional extras are imported where they are used).
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
    mpi,
    noise,
    optimizers,
    protocols,
    shaping,
    strategies,
    tasks,
    tree,
    validate,
)
from evograd.cupy_bridge import CupyEvaluator
from evograd.evaluate import ChunkedEvaluator, FunctionEvaluator, SerialEvaluator, VmapEvaluator
from evograd.mpi import MPIEvaluator, MPIModelEvaluator, MPIVectorEvaluator
from evograd.noise import Mutation
from evograd.optim import HybridOptimizer
from evograd.optimizers import ClipUp
from evograd.protocols import Evaluator, GradientEstimator, ModelEvaluator, State, Strategy, VectorEvaluator
from evograd.strategies import (
    PGPE,
    SNES,
    ESState,
    EvolutionState,
    OpenES,
    PGPEState,
    RollingImprovement,
    RollingState,
    ScaleFreeEvolution,
    SepCMAES,
    SepCMAState,
    SNESState,
    StrategyState,
)

__version__ = "0.1.0"

__all__ = [
    "ChunkedEvaluator",
    "ClipUp",
    "CupyEvaluator",
    "ESState",
    "Evaluator",
    "EvolutionState",
    "FunctionEvaluator",
    "GradientEstimator",
    "HybridOptimizer",
    "MPIEvaluator",
    "MPIModelEvaluator",
    "MPIVectorEvaluator",
    "ModelEvaluator",
    "Mutation",
    "OpenES",
    "PGPE",
    "PGPEState",
    "RollingImprovement",
    "RollingState",
    "SNES",
    "SNESState",
    "ScaleFreeEvolution",
    "SepCMAES",
    "SepCMAState",
    "SerialEvaluator",
    "State",
    "Strategy",
    "StrategyState",
    "VectorEvaluator",
    "VmapEvaluator",
    "checkpoint",
    "context",
    "cupy_bridge",
    "deap_tools",
    "diagnostics",
    "directions",
    "feedback",
    "flat",
    "harness",
    "mpi",
    "noise",
    "optimizers",
    "protocols",
    "shaping",
    "strategies",
    "tasks",
    "tree",
    "validate",
    "__version__",
]
