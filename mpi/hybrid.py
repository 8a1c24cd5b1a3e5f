"""The hybrid optimizer on MPI ranks: backprop mixed with evolution, populations split across ranks.

    mpiexec -n 2 python -m mpi4py mpi/hybrid.py [--source hybrid] [--steps 300] [--seed 0]

Every rank runs this same loop (SPMD) on the same model and the same minibatches (drawn from one
generator seeded with ``--seed``; a loop that checkpoints derives each step's batch from ``(seed,
step)`` instead, as ``mpi/train.py`` does). ``MPIEvaluator(VmapEvaluator(...))`` splits each step's
population across the ranks and all-gathers the fitness values; the closure (backprop) and the loss
of SPSA and forward gradients are computed in full on every rank. So the parameters end the same
bit for bit on any number of ranks, and the same as one process; the FE printed is the algorithmic
cost, counted once. The task regresses a fixed random MLP (teacher-student; synthetic, needs no
data). Sources: ``improvement``, ``es``, ``spsa``, ``forward_gradient``, ``backprop``, and
``hybrid`` (half backprop, half evolution, both normalized).
"""

from __future__ import annotations

import argparse

import torch
from torch.nn import functional as F

import evograd
from evograd import directions as D
from evograd.mpi import MPIEvaluator
from evograd.tasks import mlp, teacher


def unit(source: D.Direction) -> D.Direction:
    """A source scaled to unit norm, so the base optimizer's lr is the step length."""
    return D.chain(source, D.normalize())


def source(name: str, seed: int) -> D.Direction:
    mutation = evograd.Mutation(sigma=0.005, antithetic=True)
    evolution = D.improvement(evograd.RollingImprovement(size=32, mutation=mutation), seed=seed)
    return {
        "improvement": lambda: unit(evolution),
        "es": lambda: unit(D.es(evograd.OpenES(size=32, mutation=mutation), seed=seed)),
        "spsa": lambda: unit(D.spsa(seed=seed)),
        "forward_gradient": lambda: unit(D.forward_gradient(seed=seed)),
        "backprop": lambda: unit(D.backprop()),
        "hybrid": lambda: D.mix(bp=(0.5, unit(D.backprop())), evo=(0.5, unit(evolution))),
    }[name]()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", default="hybrid", choices=("improvement", "es", "spsa", "forward_gradient", "backprop", "hybrid")
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0, help="the run's only seed")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread per rank: oversubscribed threads slow every rank down

    data = teacher(seed=args.seed)
    model = mlp((16, 32, 4), seed=args.seed)
    evaluator = MPIEvaluator(evograd.VmapEvaluator(model, F.mse_loss, chunk_size=8))  # 33 members: 4-5 chunks
    optimizer = evograd.HybridOptimizer(
        model.parameters(), source(args.source, args.seed), evaluator=evaluator, lr=0.02, momentum=0.9
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps)  # a torch optimizer like any
    log = print if evaluator.rank == 0 else (lambda *a, **k: None)
    batches = torch.Generator().manual_seed(args.seed)  # the same minibatches on every rank
    for step in range(1, args.steps + 1):
        index = torch.randint(0, len(data.train_x), (args.batch_size,), generator=batches)
        x, y = data.train_x[index], data.train_y[index]

        def closure():
            optimizer.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            return loss

        loss = optimizer.step(closure, batch=(x, y))
        schedule.step()
        if step % 100 == 0 or step == args.steps:
            with torch.no_grad():
                test = float(F.mse_loss(model(data.test_x), data.test_y))
            log(f"step {step:5d}  loss {loss.item():.4f}  test mse {test:.4f}  {optimizer.fe / 1e6:.2f}M FE")

    digest = evaluator.check_sync(list(model.parameters()), args.steps, final=True)
    log(f"{args.source} on {evaluator.size} ranks: parameters in sync (digest {digest:016x})")


if __name__ == "__main__":
    main()
