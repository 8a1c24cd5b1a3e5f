"""evograd's scale-free mutations as DEAP operators, and batch evaluation of DEAP populations.

The operators are shaped like ``deap.tools.mutGaussian``: they change a sequence individual in
place, each attribute with probability ``indpb``, and return it as a one-tuple. Unlike DEAP's own,
they never draw from Python's global ``random`` module (docs/design.rst, contract 2): pass ``rng=`` (a
``numpy.random.Generator`` or an int seed), or let :func:`register` bind one seeded generator to
the toolbox. Nothing here touches DEAP's global ``creator``; users may.

:class:`PopulationFitness` scores individuals that are flat parameter vectors of a torch model
through an evograd evaluator, a chunk at a time, and :func:`batch_map` lets DEAP's algorithms
(``eaSimple``, ``eaMuPlusLambda``) use it through ``toolbox.map`` unchanged.

References:
    Yao, Liu & Lin (1999), Evolutionary programming made faster.
    Lee & Yao (2004), Evolutionary programming using mutations based on the Lévy distribution.
    Fortin et al. (2012), DEAP: evolutionary algorithms made easy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from evograd import noise

__all__ = ["mut_cauchy", "mut_levy", "mut_loguniform", "register", "PopulationFitness", "batch_map"]

RNG = np.random.Generator | int | None


def _generator(rng: RNG) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)  # an int seeds it; None draws fresh OS entropy, never a global state


def _per_attribute(value, size: int, name: str) -> np.ndarray:
    """A scalar or a sequence of at least ``size`` values, as ``size`` floats (DEAP's convention)."""
    if isinstance(value, Sequence) or isinstance(value, np.ndarray):
        if len(value) < size:
            raise IndexError(f"{name} must be at least the size of individual: {len(value)} < {size}")
        return np.asarray(value[:size], dtype=np.float64)
    return np.full(size, float(value))


def _mutate(individual, mu, sigma, indpb: float, rng: RNG, kind: str, **options) -> tuple:
    """Add ``mu + sigma * X`` to each attribute chosen with probability ``indpb``; X of ``kind``."""
    if not 0.0 <= indpb <= 1.0:
        raise ValueError(f"indpb={indpb!r} is out of range; allowed [0, 1]")
    size = len(individual)
    gen = _generator(rng)
    chosen = np.flatnonzero(gen.random(size) < indpb)
    if len(chosen) == 0:
        return (individual,)
    torch_gen = torch.Generator().manual_seed(int(gen.integers(2**63)))
    x = noise.draw(kind, len(chosen), generator=torch_gen, alpha=options.get("alpha", 1.5), dtype=torch.float64).numpy()
    if kind == "loguniform":  # a direction in the chosen subspace, one scale-free magnitude for all of it
        magnitude = np.exp(-options.get("log_range", 5.0) * gen.random())
        x = x / max(np.linalg.norm(x), np.finfo(np.float64).tiny) * magnitude
    delta = _per_attribute(mu, size, "mu")[chosen] + _per_attribute(sigma, size, "sigma")[chosen] * x
    if isinstance(individual, np.ndarray):
        individual[chosen] += delta.astype(individual.dtype, copy=False)
    else:
        for i, d in zip(chosen.tolist(), delta.tolist()):
            individual[i] += d
    return (individual,)


def mut_cauchy(individual, mu, sigma, indpb: float, *, rng: RNG = None) -> tuple:
    """Cauchy mutation (fast evolutionary programming), shaped like ``deap.tools.mutGaussian``.

    Examples:
        >>> ind = [0.0] * 5
        >>> mut_cauchy(ind, 0.0, 1.0, indpb=1.0, rng=0)[0] is ind
        True
    """
    return _mutate(individual, mu, sigma, indpb, rng, "cauchy")


def mut_levy(individual, mu, sigma, alpha: float, indpb: float, *, rng: RNG = None) -> tuple:
    """Symmetric α-stable (Lévy) mutation, any ``alpha`` in (0, 2]; 1 is Cauchy, 2 Gaussian (variance 2σ²)."""
    if not 0.0 < alpha <= 2.0:
        raise ValueError(f"alpha={alpha!r} is out of range; allowed (0, 2]")
    return _mutate(individual, mu, sigma, indpb, rng, "levy", alpha=alpha)


def mut_loguniform(individual, mu, sigma, indpb: float, *, log_range: float = 5.0, rng: RNG = None) -> tuple:
    """Radial log-uniform mutation: the chosen attributes move along a random direction, by a length
    ``sigma * exp(-log_range * U)`` (every scale equally likely per octave); ``mu`` is added too."""
    if not log_range >= 0.0:
        raise ValueError(f"log_range={log_range!r} is out of range; allowed [0, inf)")
    return _mutate(individual, mu, sigma, indpb, rng, "loguniform", log_range=log_range)


_OPERATORS = {"cauchy": mut_cauchy, "levy": mut_levy, "loguniform": mut_loguniform}


def register(
    toolbox,
    *,
    kind: str = "cauchy",
    sigma: float = 1.0,
    indpb: float = 0.1,
    mu: float = 0.0,
    seed: int = 0,
    name: str = "mutate",
    fitness: PopulationFitness | None = None,
    **options,
) -> None:
    """Register an evograd mutation as ``toolbox.<name>``, bound to one generator seeded by ``seed``.

    With ``fitness``, also register it as ``toolbox.evaluate`` and :func:`batch_map` as
    ``toolbox.map``, so DEAP's algorithms score each generation's new individuals in one batch.

    Examples:
        >>> from deap import base
        >>> toolbox = base.Toolbox()
        >>> register(toolbox, kind="levy", sigma=0.1, indpb=0.5, alpha=1.5, seed=3)
        >>> len(toolbox.mutate([0.0, 0.0])[0])
        2
    """
    if kind not in _OPERATORS:
        raise ValueError(f"kind={kind!r} is not a DEAP mutation here; allowed {', '.join(_OPERATORS)}")
    rng = np.random.default_rng(seed)
    extra = {"alpha": options.pop("alpha", 1.5)} if kind == "levy" else {}
    toolbox.register(name, _OPERATORS[kind], mu=mu, sigma=sigma, indpb=indpb, rng=rng, **extra, **options)
    if fitness is not None:
        toolbox.register("evaluate", fitness)
        toolbox.register("map", batch_map)


class PopulationFitness:
    """DEAP fitness of individuals that are flat parameter vectors of a torch model, scored in batches.

    ``fitness(individual)`` scores one (DEAP's protocol, a one-tuple); :meth:`batch` scores many at
    once through an evograd evaluator (``VmapEvaluator`` for a model and a batch, or any
    :class:`~evograd.evaluate.ChunkedEvaluator`), on its device.

    Args:
        evaluator: scores (c, dim) candidate chunks; its ``chunk_size`` bounds memory.
        dtype: the dtype candidates are built in.
        device: where candidates are built.
    """

    def __init__(self, evaluator, *, dtype: torch.dtype = torch.float32, device=None) -> None:
        self.evaluator, self.dtype, self.device = evaluator, dtype, device

    def __call__(self, individual) -> tuple[float]:
        return self.batch([individual])[0]

    def batch(self, individuals: Sequence) -> list[tuple[float]]:
        """One DEAP fitness tuple per individual."""
        if len(individuals) == 0:  # DEAP asks for none when every offspring kept a valid fitness
            return []
        candidates = torch.as_tensor(np.asarray(individuals, dtype=np.float64), dtype=self.dtype, device=self.device)
        return [(f,) for f in self.evaluator.score(candidates).tolist()]  # one transfer, not one per member


def batch_map(function: Callable, iterable: Iterable) -> list | Any:
    """``map`` for ``toolbox.map``: one batch call for a :class:`PopulationFitness`, plain ``map`` otherwise."""
    if isinstance(function, PopulationFitness):
        return function.batch(list(iterable))
    if isinstance(function, functools.partial) and isinstance(function.func, PopulationFitness):
        return function.func.batch(list(iterable))
    return map(function, iterable)
