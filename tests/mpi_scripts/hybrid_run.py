"""Rank script: HybridOptimizer with every kind of direction source, its evaluator over MPI.

    mpiexec -n 3 python -m mpi4py hybrid_run.py OUT.pt    # the SPMD run (rank 0 writes OUT.pt)
    python hybrid_run.py --reference OUT.pt                # the same runs in one process, no MPI

Each run trains a 20-50-1 MLP (a model whose vectorized scores were seen to depend on chunk
composition) for a few steps of ``step(closure, batch=...)``, the batch of step t drawn from a
generator seeded with t, so every rank hands the same batch. Populations of 19 and 18 members in
chunks of 4 do not divide evenly by 2 or 3 ranks. For each run the final parameters, the losses
the closure returned and the FE are saved.
"""

import argparse

import torch
from torch.nn import functional as F

from evograd import HybridOptimizer, Mutation, OpenES, RollingImprovement, VmapEvaluator
from evograd import directions as D
from evograd.tasks import mlp

CHUNK = 4
STEPS = 4


def rolling():
    return D.improvement(RollingImprovement(size=18, mutation=Mutation(sigma=0.05, antithetic=True)), seed=1)


def openes():
    return D.es(OpenES(size=18, mutation=Mutation(sigma=0.05, antithetic=True)), seed=2)


def unit(source):
    return D.chain(source, D.normalize())


SOURCES = {
    "improvement": lambda model: rolling(),
    "es": lambda model: openes(),
    "spsa": lambda model: D.spsa(seed=3),
    "forward_gradient": lambda model: D.forward_gradient(seed=4),
    "backprop": lambda model: D.backprop(),
    "backprop+improvement": lambda model: D.mix(bp=(0.5, unit(D.backprop())), evo=(0.5, unit(rolling()))),
    "backprop+es+spsa": lambda model: D.mix(
        bp=(0.5, unit(D.backprop())), es=(0.3, unit(openes())), zo=(0.2, unit(D.spsa(seed=5)))
    ),
    "per-group": lambda model: [  # the bottom layer evolves, the top one backpropagates
        {"params": model[0].parameters(), "direction": rolling()},
        {"params": model[2].parameters()},
    ],
}


def batch(step):
    gen = torch.Generator().manual_seed(step)
    return torch.randn(32, 20, generator=gen), torch.randn(32, 1, generator=gen)


def run(wrap):
    """Final parameters, closure losses and FE of a short run with each source."""
    results = {}
    for name, make in SOURCES.items():
        model = mlp((20, 50, 1), seed=0)
        made = make(model)
        params, direction = (made, D.backprop()) if isinstance(made, list) else (model.parameters(), made)
        optimizer = HybridOptimizer(
            params,
            direction,
            base=torch.optim.SGD,
            evaluator=wrap(VmapEvaluator(model, F.mse_loss, chunk_size=CHUNK)),
            lr=0.05,
            momentum=0.9,
        )
        losses = []
        for step in range(STEPS):
            x, y = batch(step)

            def closure():
                optimizer.zero_grad()
                loss = F.mse_loss(model(x), y)
                loss.backward()
                return loss

            losses.append(optimizer.step(closure, batch=(x, y)).detach())
        results[name] = {
            "parameters": [p.detach().clone() for p in model.parameters()],
            "losses": torch.stack(losses),
            "fe": optimizer.fe,
        }
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--reference", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.reference:
        torch.save(run(lambda local: local), args.out)
        return
    from evograd.mpi import MPIEvaluator

    evaluators = []

    def wrap(local):
        evaluators.append(MPIEvaluator(local))
        return evaluators[-1]

    results = run(wrap)
    rank, size = evaluators[0].rank, evaluators[0].size
    for evaluator, name in zip(evaluators, results):
        parameters = torch.cat([p.reshape(-1) for p in results[name]["parameters"]])
        evaluator.check_sync(parameters, generation=STEPS, final=True)
    if rank == 0:
        torch.save(results, args.out)
    print(f"rank {rank} of {size} ok", flush=True)


if __name__ == "__main__":
    main()
