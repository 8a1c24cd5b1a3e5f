"""Rank script: mpi/train.py with one fault injected on one rank at one generation.

    mpiexec -n 2 python -m mpi4py tests/mpi_scripts/faults.py KIND RANK GENERATION [train.py arguments]

KIND is what the rank does when it is about to score that generation: ``raise`` (an exception),
``kill`` (SIGKILL itself), ``stop`` (SIGSTOP itself), ``exit`` (``sys.exit(0)``: leaves early
without an error), ``exit3`` (``os._exit(3)``), ``position`` (enters a sync check the others do
not), or ``data`` (from the start, holds training data that differs in one number). Before the fault
the rank prints ``injecting KIND on rank R at generation G at T`` (T: ``time.time()``), so a test can
time the job's end from the fault.
"""

import importlib.util
import os
import pathlib
import signal
import sys
import time

import torch

from evograd import mpi

ROOT = pathlib.Path(__file__).resolve().parents[2]


def announce(kind, rank, generation):
    print(f"injecting {kind} on rank {rank} at generation {generation} at {time.time():.3f}", flush=True)


def main():
    from mpi4py import MPI

    kind, rank, at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    spec = importlib.util.spec_from_file_location("train", ROOT / "mpi" / "train.py")
    train = sys.modules["train"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    evaluate = mpi.MPIEvaluator.__call__

    def faulty(self, center, seeds, mutation):
        if self.rank == rank and self.generation == at:
            announce(kind, rank, at)
            if kind == "raise":
                raise RuntimeError(f"deliberate failure on rank {rank}")
            if kind in ("kill", "stop"):
                os.kill(os.getpid(), signal.SIGKILL if kind == "kill" else signal.SIGSTOP)
            if kind == "exit":
                sys.exit(0)
            if kind == "exit3":
                os._exit(3)
            if kind == "position":
                self.check_sync(center, at, final=True)
        return evaluate(self, center, seeds, mutation)

    mpi.MPIEvaluator.__call__ = faulty
    if kind == "data":
        make_task = train.make_task

        def other_data(*args):
            task = make_task(*args)
            if MPI.COMM_WORLD.Get_rank() == rank:
                announce(kind, rank, 0)
                task.train[0][0, 0] += 1.0  # one number of one rank's training inputs
            return task

        train.make_task = other_data
    torch.set_num_threads(1)
    train.main(sys.argv[4:])


if __name__ == "__main__":
    main()
