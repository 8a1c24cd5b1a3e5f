"""Constants of the sharded update (issue 14, item 3): regeneration per coordinate, Allgatherv of D floats.

    mpiexec -n N python -m mpi4py benchmarks/sharded_update.py [--dim 1000000] [--size 64] [--repeats 15]

Run on N = 1, 2, 3 ranks (one torch thread each). Every rank times, with a barrier before each
repeat, the pieces of one OpenES update (antithetic Gaussian, ``size`` members, every one
weighted) with :class:`evograd.mpi.ShardedUpdate` (blocks of 1,024 coordinates):

* ``slice``: :func:`evograd.noise.weighted_sum` over the rank's own coordinates only (the
  regeneration work), and ``c_slice``, its seconds per regenerated coordinate (``size`` rows x the
  rank's width);
* ``allgatherv``: one ``Allgatherv`` of the D float32 of the sum;
* ``sharded``: the whole ``ShardedUpdate`` call (slice + Allgatherv), what ``tell`` pays;
* ``whole``: the same sum over whole rows in one process (the unsharded update, ``c_tell`` per
  coordinate), on every rank at once.

``--simulate N`` (no mpiexec) times one rank's share of a larger run in one process instead: the
slice of the widest of N shares for ``size`` members (the regeneration a rank of N does), and the
rest of an OpenES ``tell`` at that size (ranks, the Adam step on D numbers, the state: what every
rank still repeats), with the sum handed in ready-made::

    python benchmarks/sharded_update.py --simulate 1000 --size 10000 --chunk-size 64

Rank 0 prints one JSON line with the median and best (lowest) seconds of each over the repeats,
the maximum over ranks taken per repeat (a collective finishes with its slowest rank). Figures and
the scaling model: benchmarks/RESULTS.rst.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from evograd import Mutation, OpenES, noise
from evograd.mpi import ShardedUpdate, coordinate_shares


class ReadySum:
    """A :class:`evograd.protocols.WeightedSum` that hands back a fixed sum: ``tell`` minus its regeneration."""

    def __init__(self, dim: int) -> None:
        self.regenerated = 0
        self.total = torch.full((dim,), 1e-3)

    def __call__(self, mutation, seeds, weights, dim, **_: object) -> tuple[torch.Tensor, None]:
        return self.total.clone(), None


def simulate(args: argparse.Namespace) -> dict:
    """One rank's share of an N-rank sharded update, and the rest of ``tell``, timed in this process."""
    block = 1024
    widest = max(coordinate_shares(args.dim, args.simulate, block=block), key=len)
    mutation = Mutation(sigma=0.02, antithetic=True)
    seeds = noise.member_seeds(0, 0, args.size, antithetic=True)
    weights = torch.linspace(-0.5, 0.5, args.size)
    columns = slice(widest.start, widest.stop)
    es = OpenES(size=args.size, mutation=mutation, update=ReadySum(args.dim))
    state = es.init(torch.zeros(args.dim), seed=0)
    fitness = torch.randn(args.size, generator=torch.Generator().manual_seed(0))
    pieces = {
        "slice": lambda: noise.weighted_sum(
            mutation, seeds, weights, args.dim, columns=columns, chunk_size=args.chunk_size
        ),
        "tell without the sum": lambda: es.tell(state, seeds, fitness),
    }
    times = {name: [] for name in pieces}
    cpu = {name: [] for name in pieces}
    for work in pieces.values():
        work()
    for _ in range(args.repeats):
        for name, work in pieces.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            work()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    result = {"simulated ranks": args.simulate, "dim": args.dim, "size": args.size, "widest": len(widest)}
    result["chunk_size"] = args.chunk_size
    for name, values in times.items():
        # CPU seconds too: on a shared machine they leave out the time spent waiting for a core
        result[name] = {"median": statistics.median(values), "best": min(values), "cpu": min(cpu[name])}
    result["ns per coordinate (slice)"] = {
        key: 1e9 * value / (args.size * len(widest)) for key, value in result["slice"].items()
    }
    return result


def timed(comm, work) -> float:
    """Seconds of ``work()`` on the slowest rank, after a barrier."""
    from mpi4py import MPI

    comm.Barrier()
    start = time.perf_counter()
    work()
    mine = time.perf_counter() - start
    return comm.allreduce(mine, op=MPI.MAX)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--simulate", type=int, default=None, help="time one rank of this many, in one process")
    parser.add_argument("--chunk-size", type=int, default=None, help="member rows per chunk (default: chunk_rows)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    if args.simulate is not None:
        print(json.dumps(simulate(args)), flush=True)
        return
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, ranks = comm.Get_rank(), comm.Get_size()
    update = ShardedUpdate(comm, block=1024)
    mutation = Mutation(sigma=0.02, antithetic=True)
    seeds = noise.member_seeds(0, 0, args.size, antithetic=True)
    weights = torch.linspace(-0.5, 0.5, args.size)
    mine = coordinate_shares(args.dim, ranks, block=update.block)[rank]
    columns = slice(mine.start, mine.stop)
    part = torch.zeros(len(mine))
    counts = [len(share) for share in coordinate_shares(args.dim, ranks, block=update.block)]
    gathered = torch.empty(args.dim)

    def allgatherv() -> None:
        comm.Allgatherv(part.numpy(), [gathered.numpy(), counts, MPI.FLOAT])

    pieces = {
        "slice": lambda: noise.weighted_sum(mutation, seeds, weights, args.dim, columns=columns),
        "allgatherv": allgatherv,
        "sharded": lambda: update(mutation, seeds, weights, args.dim, with_norms=False),
        "whole": lambda: noise.weighted_sum(mutation, seeds, weights, args.dim),
    }
    for work in pieces.values():  # warm up: the noise table, the buffers, the connections
        timed(comm, work)
    times: dict[str, list[float]] = {name: [] for name in pieces}
    for _ in range(args.repeats):  # interleaved, so a busy moment of the machine hits every piece
        for name, work in pieces.items():
            times[name].append(timed(comm, work))
    widest = max(counts)
    result = {"ranks": ranks, "dim": args.dim, "size": args.size, "widest": widest}
    for name, values in times.items():
        result[name] = {"median": statistics.median(values), "best": min(values)}
    for name, coordinates in (("slice", args.size * widest), ("whole", args.size * args.dim)):
        result[f"ns per coordinate ({name})"] = {key: 1e9 * value / coordinates for key, value in result[name].items()}
    if rank == 0:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
