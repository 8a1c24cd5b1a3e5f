"""Rank script: a few generations of each strategy through MPIEvaluator(VmapEvaluator or LowRankEvaluator).

    mpiexec -n 3 python -m mpi4py spmd_run.py OUT.pt    # the SPMD run (rank 0 writes OUT.pt)
    python spmd_run.py --reference OUT.pt                # the same loops in one process, no MPI

``--device cuda`` runs both on the GPU (every rank on the same one).

The model (a 20-50-1 MLP) is one whose vectorized scores were seen to depend on chunk composition,
and the population (19 or 18 members in chunks of 4) does not divide evenly by 2 or 3 ranks.
Rank runs also check allreduce_mean_ and a passing check_sync.
"""

import argparse

import torch
from torch.nn import functional as F

from evograd import LowRankEvaluator, Mutation, OpenES, RollingImprovement, ScaleFreeEvolution, VmapEvaluator, flat
from evograd.tasks import mlp

CHUNK = 4
GENERATIONS = 4
STRATEGIES = {  # name: (the strategy for a model, the evaluator class)
    "evolution": (lambda m: ScaleFreeEvolution(size=18, mutation=Mutation(kind="cauchy", sigma=0.05)), VmapEvaluator),
    "rolling": (
        lambda m: RollingImprovement(size=18, mutation=Mutation(kind="loguniform", sigma=0.5, antithetic=True)),
        VmapEvaluator,
    ),
    "openes": (lambda m: OpenES(size=18, mutation=Mutation(sigma=0.05, antithetic=True), lr=0.05), VmapEvaluator),
    # low-rank mutations scored without materializing the members (shared x Wᵀ, factors per member)
    "openes-lowrank": (
        lambda m: OpenES(size=18, mutation=Mutation(sigma=0.05, rank=1, antithetic=True).resolve(m), lr=0.05),
        LowRankEvaluator,
    ),
    "rolling-lowrank": (
        lambda m: RollingImprovement(
            size=18, mutation=Mutation(kind="loguniform", sigma=0.5, rank=1, antithetic=True).resolve(m)
        ),
        LowRankEvaluator,
    ),
    "evolution-lowrank": (
        lambda m: ScaleFreeEvolution(size=18, mutation=Mutation(sigma=0.05, rank=1).resolve(m)),
        LowRankEvaluator,
    ),
}


def run(wrap, device="cpu"):
    """Final centers, all fitness vectors and the cost counters of every strategy."""
    results = {}
    for name, (make, evaluator) in STRATEGIES.items():
        gen = torch.Generator().manual_seed(1)
        batch = (torch.randn(64, 20, generator=gen).to(device), torch.randn(64, 1, generator=gen).to(device))
        model = mlp((20, 50, 1), seed=0).to(device)
        evaluate = wrap(evaluator(model, F.mse_loss, batch, chunk_size=CHUNK))
        strategy = make(model)
        state = strategy.init(flat.flatten(model), seed=0)
        history = []
        for _ in range(GENERATIONS):
            seeds = strategy.ask(state)
            fitness = evaluate(state.center, seeds, state.mutation)
            history.append(fitness)
            state, _ = strategy.tell(state, seeds, fitness)
        if hasattr(evaluate, "check_sync"):
            evaluate.check_sync(state, state.generation, final=True)
        results[name] = {
            "center": state.center,
            "fitness": torch.stack(history),
            "evaluations": evaluate.evaluations,
            "fe": evaluate.fe,
        }
    return results


def check_allreduce(comm):
    from evograd.mpi import allreduce_mean_

    rank, size = comm.Get_rank(), comm.Get_size()
    base = torch.zeros(6)
    tensors = [
        torch.full((2, 3), rank + 1.0),
        None,
        torch.arange(4, dtype=torch.float64) * (rank + 1),
        base[::2],
        torch.full((2,), rank + 1.0, dtype=torch.bfloat16),
    ]
    tensors[3] += rank + 1  # a non-contiguous view: the result must land in its base tensor
    allreduce_mean_(tensors, comm)
    mean = (size + 1) / 2  # mean of 1..size, exact in every dtype used
    assert torch.equal(tensors[0], torch.full((2, 3), mean))
    assert torch.equal(tensors[2], torch.arange(4, dtype=torch.float64) * mean)
    assert torch.equal(base, torch.tensor([mean, 0, mean, 0, mean, 0]))
    assert torch.equal(tensors[4], torch.full((2,), mean, dtype=torch.bfloat16))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.reference:
        torch.save(run(lambda local: local, args.device), args.out)
        return
    from mpi4py import MPI

    from evograd.mpi import MPIEvaluator

    results = run(MPIEvaluator, args.device)
    comm = MPI.COMM_WORLD
    check_allreduce(comm)
    if comm.Get_rank() == 0:
        torch.save(results, args.out)
    print(f"rank {comm.Get_rank()} of {comm.Get_size()} ok", flush=True)


if __name__ == "__main__":
    main()
