"""Rank script: rank 1 raises while rank 0 waits in the fitness all-gather.

Under ``python -m mpi4py`` the exception aborts the whole job (non-zero exit, rank 1's traceback in
the output); under plain ``python`` rank 0 would wait forever.
"""

import torch

from evograd import FunctionEvaluator, Mutation, noise


def main():
    from evograd.mpi import MPIEvaluator

    torch.set_num_threads(1)
    evaluate = MPIEvaluator(FunctionEvaluator(lambda x: (x**2).sum(1)), block=1)
    if evaluate.rank == 1:
        raise RuntimeError("deliberate failure on rank 1")
    evaluate(torch.zeros(3), noise.member_seeds(0, 0, 8), Mutation())


if __name__ == "__main__":
    main()
