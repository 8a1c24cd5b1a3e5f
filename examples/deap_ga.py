"""DEAP's eaMuPlusLambda on Rastrigin-30: evograd's Cauchy mutation against DEAP's Gaussian one.

Same algorithm, population, budget, sigma and seeds; only the mutation operator differs. DEAP's
own variation step draws from Python's global ``random``, so this script seeds it per run (evograd's
operators draw from the generator ``register`` binds, never from a global state).

    python examples/deap_ga.py [--generations 300] [--seeds 5] [--sigma 0.3]
"""

import argparse
import random

import numpy as np
from deap import algorithms, base, benchmarks, tools

from evograd import deap_tools


class Fitness(base.Fitness):
    weights = (-1.0,)  # minimize


class Individual(list):
    def __init__(self, values):
        super().__init__(values)
        self.fitness = Fitness()


def run(mutation: str, seed: int, generations: int, sigma: float, dim: int = 30) -> float:
    toolbox = base.Toolbox()
    toolbox.register("evaluate", benchmarks.rastrigin)
    toolbox.register("mate", tools.cxBlend, alpha=0.3)
    toolbox.register("select", tools.selTournament, tournsize=3)
    if mutation == "cauchy":
        deap_tools.register(toolbox, kind="cauchy", sigma=sigma, indpb=1.0 / dim, seed=seed)
    else:
        toolbox.register("mutate", tools.mutGaussian, mu=0.0, sigma=sigma, indpb=1.0 / dim)
    random.seed(seed)
    rng = np.random.default_rng(seed)
    population = [Individual(rng.uniform(-5.12, 5.12, dim).tolist()) for _ in range(50)]
    hall = tools.HallOfFame(1)
    algorithms.eaMuPlusLambda(
        population, toolbox, mu=50, lambda_=100, cxpb=0.5, mutpb=0.5, ngen=generations, halloffame=hall, verbose=False
    )
    return hall[0].fitness.values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sigma", type=float, default=0.3)
    args = parser.parse_args()
    print(
        f"Rastrigin-30, eaMuPlusLambda(mu=50, lambda=100), {args.generations} generations "
        f"({100 * args.generations:,} evaluations), sigma={args.sigma}; best fitness, lower is better"
    )
    print(f"{'seed':>4} {'evograd cauchy':>15} {'deap gaussian':>14}")
    results = {"cauchy": [], "gaussian": []}
    for seed in range(args.seeds):
        for mutation in results:
            results[mutation].append(run(mutation, seed, args.generations, args.sigma))
        print(f"{seed:>4} {results['cauchy'][-1]:>15.2f} {results['gaussian'][-1]:>14.2f}")
    c, g = np.mean(results["cauchy"]), np.mean(results["gaussian"])
    print(f"{'mean':>4} {c:>15.2f} {g:>14.2f}")
    print(f"evograd's Cauchy mutation is {'ahead' if c < g else 'not ahead'}: {c:.2f} vs {g:.2f}")


if __name__ == "__main__":
    main()
