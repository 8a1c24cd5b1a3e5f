"""Rank script: OpenES with a sharded update, one fault injected on one rank before one generation's update.

    mpiexec -n 2 python -m mpi4py tests/mpi_scripts/sharded_fault.py KIND RANK GENERATION

Every rank scores the whole population itself, so the sharded update's all-gathers are the job's
only collectives (one per generation: OpenES needs no row norms, so generation G is call G). KIND
is what the rank does just before the ``tell`` of that generation: ``stop`` (SIGSTOP itself),
``exit`` (``sys.exit(0)``: leaves early without an error) or ``kill`` (SIGKILL itself). Before the
fault the rank prints ``injecting KIND on rank R at generation G at T`` (T: ``time.time()``), so a
test can time the job's end from the fault. Without a fault the job ends with ``rank R of N ok``.
"""

import os
import signal
import sys
import time

import torch

from evograd import FunctionEvaluator, Mutation, OpenES

DIM = 1000
GENERATIONS = 40


def main():
    from mpi4py import MPI

    from evograd.mpi import ShardedUpdate

    kind, rank, at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    update = ShardedUpdate(comm, block=64)  # the deadline from $EVOGRAD_MPI_TIMEOUT
    strategy = OpenES(size=16, mutation=Mutation(sigma=0.05, antithetic=True), lr=0.05, update=update)
    evaluate = FunctionEvaluator(lambda x: (x**2).sum(1))
    state = strategy.init(torch.ones(DIM), seed=3)
    for generation in range(GENERATIONS):
        seeds = strategy.ask(state)
        fitness = evaluate(state.center, seeds, state.mutation)
        if comm.Get_rank() == rank and generation == at:
            print(f"injecting {kind} on rank {rank} at generation {at} at {time.time():.3f}", flush=True)
            if kind == "exit":
                sys.exit(0)
            os.kill(os.getpid(), signal.SIGSTOP if kind == "stop" else signal.SIGKILL)
        state, _ = strategy.tell(state, seeds, fitness)
    print(f"rank {comm.Get_rank()} of {comm.Get_size()} ok", flush=True)


if __name__ == "__main__":
    main()
