"""evograd's SepCMAES against pycma's sep-CMA-ES on the 30-d sphere and ellipsoid: evaluations to f < 1e-8.

pycma (``pip install cma``; benchmark-only, never a dependency of evograd) runs with
``CMA_diagonal=True`` (its sep-CMA), once with its default active covariance update and once with
``CMA_active=False``, the variant evograd implements; both from x0 = 1, sigma0 = 1, at the default
population 4 + ⌊3 ln 30⌋ = 14. evograd's SepCMAES runs the same problems from the same start.

Usage (an environment with torch, cma and this checkout on the path)::

    PYTHONPATH=. python benchmarks/sepcma_reference.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from evograd import FunctionEvaluator, Mutation, SepCMAES
from evograd.strategies import diagonal

DIM, TARGET = 30, 1e-8


def ellipsoid(x: np.ndarray) -> float:
    """sum 10^(6 (i-1)/(n-1)) x_i^2 (pycma's ``elli``)."""
    return float(np.sum(1e6 ** (np.arange(len(x)) / (len(x) - 1)) * np.asarray(x) ** 2))


def sphere(x: np.ndarray) -> float:
    return float(np.sum(np.asarray(x) ** 2))


def pycma(function, seed: int, active: bool) -> int:
    """Evaluations pycma's sep-CMA needs to reach TARGET."""
    import cma

    options = {"CMA_diagonal": True, "CMA_active": active, "seed": seed + 1, "verbose": -9, "ftarget": TARGET}
    options.update({"tolfun": 0, "tolx": 0, "tolfunhist": 0})
    es = cma.CMAEvolutionStrategy(DIM * [1.0], 1.0, options)
    while not es.stop():
        solutions = es.ask()
        es.tell(solutions, [function(x) for x in solutions])
    return es.countevals


def evograd_sepcma(function, seed: int) -> int:
    """Evaluations evograd's SepCMAES needs to reach TARGET."""
    strategy = SepCMAES(size=diagonal.paper_size(DIM), mutation=Mutation(sigma=1.0))
    evaluate = FunctionEvaluator(lambda xs: torch.tensor([function(x.numpy()) for x in xs], dtype=torch.float64))
    state = strategy.init(torch.ones(DIM, dtype=torch.float64), seed=seed)
    while True:
        seeds = strategy.ask(state)
        state, metrics = strategy.tell(state, seeds, evaluate(state.center, seeds, state.mutation))
        if metrics["best"] < TARGET:
            return state.generation * strategy.population


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name, function in (("sphere", sphere), ("ellipsoid", ellipsoid)):
        for label, run in (
            ("pycma sep-CMA, active", lambda s: pycma(function, s, True)),
            ("pycma sep-CMA, CMA_active=False", lambda s: pycma(function, s, False)),
            ("evograd SepCMAES", lambda s: evograd_sepcma(function, s)),
        ):
            evaluations = [run(seed) for seed in range(args.seeds)]
            print(f"{name:9s}  {label:32s}  median {statistics.median(evaluations):>6.0f}  {evaluations}", flush=True)


if __name__ == "__main__":
    main()
