"""One MLP on digits, one training loop, four optimizers: SGD, Adam, evolution only, a 50/50 hybrid.

Every run starts from the same weights and sees the same minibatches through the same torch loop;
only the HybridOptimizer's direction differs. ``improvement`` descends along the rolling average of
improving clipped-Cauchy mutations (64 per step, scored by a vectorized evaluator, no gradient at
all); ``hybrid 50/50`` along half the normalized backprop gradient plus half the normalized
evolution estimate. ``SGD`` and ``Adam`` are ``HybridOptimizer(backprop())``, which equals the
torch optimizers step for step (tests/test_optim.py). Cost is in forward-pass equivalents (FE): a
sample forward is 1 FE, backward 2 FE. About 15 seconds on 2 CPU cores.

    python examples/hybrid_digits.py [--steps 800] [--seed 0]
"""

import argparse
import time

import torch
from torch.nn import functional as F

import evograd
from evograd import directions as D
from evograd.tasks import digits, mlp


def unit(source):
    """A source scaled to unit norm, so the base optimizer's lr is the step length."""
    return D.chain(source, D.normalize())


def evolution(seed):
    strategy = evograd.RollingImprovement(
        size=64, mutation=evograd.Mutation(kind="cauchy", sigma=0.01, clip=3.0, antithetic=True), beta=0.9
    )
    return unit(D.improvement(strategy, seed=seed))


# name -> (direction, base optimizer, its options (lightly tuned on seeds 0-3), whether it uses the gradient)
METHODS = {
    "SGD": lambda seed: (D.backprop(), torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}, True),
    "Adam": lambda seed: (D.backprop(), torch.optim.Adam, {"lr": 3e-3, "weight_decay": 1e-3}, True),
    "improvement": lambda seed: (evolution(seed), torch.optim.SGD, {"lr": 0.1, "weight_decay": 1e-2}, False),
    "hybrid 50/50": lambda seed: (
        D.mix(bp=(0.5, unit(D.backprop())), evo=(0.5, evolution(seed))),
        torch.optim.SGD,
        {"lr": 0.1, "weight_decay": 1e-2},
        True,
    ),
}


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def train(method: str, steps: int = 800, seed: int = 0, batch_size: int = 128):
    """Train the MLP 64-32-10 with ``method``; return (test accuracy, FE spent, seconds)."""
    torch.set_flush_denormal(True)  # over-fitted minibatches otherwise slow down with denormal floats
    data = digits(seed=0)
    model = mlp((64, 32, 10), seed=seed)
    direction, base, options, uses_gradient = METHODS[method](seed)
    evaluator = evograd.VmapEvaluator(model, F.cross_entropy)  # scores populations on step(batch=...)
    optimizer = evograd.HybridOptimizer(model.parameters(), direction, base=base, evaluator=evaluator, **options)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    batches = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        index = torch.randint(0, len(data.train_x), (batch_size,), generator=batches)
        x, y = data.train_x[index], data.train_y[index]

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        # evolution alone needs no closure: calling one would spend a forward and a backward pass
        optimizer.step(closure if uses_gradient else None, batch=(x, y))
        schedule.step()
    return accuracy(model, data.test_x, data.test_y), optimizer.fe, time.perf_counter() - start


def main(steps: int = 800, seed: int = 0) -> None:
    torch.set_num_threads(1)
    print(f"MLP 64-32-10 on digits, {steps} steps of minibatch 128, cosine LR, seed {seed}")
    print(f"{'method':<14} {'test acc':>8} {'FE':>8} {'seconds':>8}")
    for method in METHODS:
        acc, fe, seconds = train(method, steps, seed)
        print(f"{method:<14} {100 * acc:>7.1f}% {fe / 1e6:>7.2f}M {seconds:>8.1f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.steps, args.seed)
