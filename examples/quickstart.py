"""Quickstart: train an MLP on scikit-learn's digits without backprop.

A RollingImprovement strategy mutates the network's 2,410 parameters with clipped Cauchy noise,
averages the directions of the mutations that improved the loss, and walks the network along that
estimate. No gradient is ever computed. Runs in well under a minute on 2 CPU cores.

    python examples/quickstart.py [--generations 1000] [--seed 0]
"""

import argparse
import time

import torch
from torch.nn import functional as F

import evograd
from evograd.tasks import digits, mlp


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def main(generations: int = 1000, seed: int = 0, batch_size: int = 128) -> float:
    torch.set_flush_denormal(True)  # over-fitted minibatches otherwise slow down with denormal floats
    torch.set_num_threads(1)  # a 2,410-parameter model runs fastest on one thread (and steadily on a busy machine)
    data = digits(seed=seed)
    model = mlp((64, 32, 10), seed=seed)
    batches = torch.Generator().manual_seed(seed)

    def minibatch():  # every member of a generation is scored on the same minibatch
        index = torch.randint(0, len(data.train_x), (batch_size,), generator=batches)
        return data.train_x[index], data.train_y[index]

    strategy = evograd.RollingImprovement(
        size=64,
        mutation=evograd.Mutation(kind="cauchy", sigma=0.01, clip=3.0, antithetic=True),
        lr=0.08,
        lr_decay=0.9995,
    )
    evaluate = evograd.VmapEvaluator(model, F.cross_entropy, minibatch)
    state = strategy.init(evograd.flat.flatten(model), seed=seed)
    start = time.perf_counter()
    for generation in range(1, generations + 1):
        seeds = strategy.ask(state)
        state, metrics = strategy.tell(state, seeds, evaluate(state.center, seeds, state.mutation))
        if generation % 100 == 0 or generation == generations:
            evograd.flat.assign(model, state.center)
            print(
                f"generation {generation:5d}  loss {metrics['parent']:.3f}  "
                f"test accuracy {accuracy(model, data.test_x, data.test_y):.3f}  "
                f"{evaluate.fe / 1e6:5.1f}M FE  {time.perf_counter() - start:5.1f}s",
                flush=True,
            )
    evograd.flat.assign(model, state.center)
    final = accuracy(model, data.test_x, data.test_y)
    print(f"final test accuracy: {final:.3f}")
    return final


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.generations, args.seed)
