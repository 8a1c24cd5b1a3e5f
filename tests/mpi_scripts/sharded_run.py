"""Rank script: several generations of each strategy with its update sum sharded across the ranks.

    mpiexec -n 3 python -m mpi4py sharded_run.py OUT.pt    # ShardedUpdate on every rank (rank 0 writes OUT.pt)
    python sharded_run.py --reference OUT.pt                # the same loops in one process, whole rows, no MPI

Every rank scores the whole population itself (the update is what is under test), on a
quadratic with a random minimum. D = 1,000 coordinates in blocks of 64 (16 blocks, which 2 and 3
ranks share unevenly); the strategies cover the weightings and the kinds a slice must reproduce:
signed ranks (OpenES, float32 and float64), row norms to the power 2 and 1 (rolling), loguniform rows
normalized by their whole window with a sparse mask, clipped Cauchy with per-coordinate scales, and
a (mu/mu, lambda) mean.
"""

import argparse

import torch

from evograd import FunctionEvaluator, Mutation, OpenES, RollingImprovement, ScaleFreeEvolution

DIM = 1000
BLOCK = 64
GENERATIONS = 5
SCALE = torch.linspace(0.5, 2.0, DIM)
STRATEGIES = {
    "openes": lambda: OpenES(size=18, mutation=Mutation(sigma=0.05, antithetic=True), lr=0.05, chunk_size=4),
    "openes64": lambda: OpenES(size=12, mutation=Mutation(kind="levy", sigma=0.02, antithetic=True), lr=0.05),
    "rolling-slope": lambda: RollingImprovement(
        size=18, mutation=Mutation(kind="loguniform", sigma=0.5, sparsity=0.3, antithetic=True), chunk_size=5
    ),
    "rolling-improvement": lambda: RollingImprovement(
        size=16,
        weighting="improvement",
        use_worse=True,
        mutation=Mutation(kind="cauchy", sigma=0.02, clip=3.0, scale=SCALE),
        chunk_size=3,
    ),
    "evolution-comma": lambda: ScaleFreeEvolution(
        size=16, selection="comma", mu=5, mutation=Mutation(kind="cauchy", sigma=0.05)
    ),
}


def run(update=None):
    """Final centers, fitness histories and (per strategy) the coordinates this rank regenerated."""
    results = {}
    target = torch.randn(DIM, generator=torch.Generator().manual_seed(7))
    for name, make in STRATEGIES.items():
        dtype = torch.float64 if name == "openes64" else torch.float32
        evaluate = FunctionEvaluator(lambda x: ((x - target.to(x.dtype)) ** 2).sum(1))
        strategy = make() if update is None else make().replace(update=update)
        state = strategy.init(torch.zeros(DIM, dtype=dtype), seed=3)
        history = []
        before = 0 if update is None else update.regenerated
        for _ in range(GENERATIONS):
            seeds = strategy.ask(state)
            fitness = evaluate(state.center, seeds, state.mutation)
            history.append(fitness)
            state, _ = strategy.tell(state, seeds, fitness)
        results[name] = {
            "center": state.center,
            "fitness": torch.stack(history),
            "regenerated": 0 if update is None else update.regenerated - before,
        }
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--reference", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.reference:
        torch.save(run(), args.out)
        return
    from mpi4py import MPI

    from evograd.mpi import ShardedUpdate, check_sync, coordinate_shares

    comm = MPI.COMM_WORLD
    update = ShardedUpdate(comm, block=BLOCK)
    results = run(update)
    for result in results.values():
        check_sync(result["center"], generation=GENERATIONS, comm=comm)
        result["regenerated"] = comm.allgather(result["regenerated"])  # per rank
    results["widths"] = [len(share) for share in coordinate_shares(DIM, comm.Get_size(), block=BLOCK)]
    if comm.Get_rank() == 0:
        torch.save(results, args.out)
    print(f"rank {comm.Get_rank()} of {comm.Get_size()} ok", flush=True)


if __name__ == "__main__":
    main()
