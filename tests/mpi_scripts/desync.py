"""Rank script: rank 1 nudges one parameter by one ulp after generation 3; the check at 4 must catch it.

Every rank catches the SyncError, prints it and exits normally, which shows that all ranks raise.
"""

import dataclasses

import torch

from evograd import FunctionEvaluator, Mutation, OpenES


def main():
    from evograd.mpi import MPIEvaluator, SyncError

    torch.set_num_threads(1)
    evaluate = MPIEvaluator(FunctionEvaluator(lambda x: (x**2).sum(1), chunk_size=2), sync_every=2)
    strategy = OpenES(size=8, mutation=Mutation(sigma=0.1, antithetic=True), lr=0.05)
    state = strategy.init(torch.ones(5), seed=0)
    try:
        while state.generation < 8:
            evaluate.check_sync(state, state.generation)
            seeds = strategy.ask(state)
            state, _ = strategy.tell(state, seeds, evaluate(state.center, seeds, state.mutation))
            if state.generation == 3 and evaluate.rank == 1:
                center = state.center.clone()
                center[0] = torch.nextafter(center[0], torch.tensor(float("inf")))
                state = dataclasses.replace(state, center=center)
        print(f"rank {evaluate.rank}: no SyncError", flush=True)
    except SyncError as err:
        print(f"rank {evaluate.rank} caught SyncError: {err}", flush=True)
    evaluate.comm.Barrier()


if __name__ == "__main__":
    main()
