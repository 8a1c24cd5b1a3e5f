"""MPI scaling of evograd's SPMD loop: generations/s on 1 and 2 ranks, bytes on the wire vs model size.

    python benchmarks/mpi_scaling.py [--repeats 3] [--generations 10] [--device cpu|cuda]

The driver launches ``mpiexec -n R python -m mpi4py`` on this file in worker mode, alternating 1 and 2
ranks, each launch after the CPUs have been >= 90% idle for a second (other users of the machine
distort a 2-core measurement badly), and prints the best and median rate of each. The speed
workload is OpenES with a population of 256 on an MLP 64-128-10 (9,610 parameters) scored on a
batch of 1,024: evaluation is ~99% of a generation, as in the regime MPI is for.

Bytes are counted by wrapping the communicator: every buffer handed to an MPI call is measured, and
the wrapper offers no other call, so nothing can bypass the count. Per generation each rank sends
its share of the fitness values plus one count (8 bytes each) and receives the population's, at
5k, 100k and 1M parameters alike, and on a GPU (``--device cuda``: every rank on the same device) as
on the CPU, since only the fitness leaves the device. Figures and a scaling model:
benchmarks/RESULTS.rst.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from torch.nn import functional as F

from evograd import Mutation, OpenES, VmapEvaluator, flat
from evograd.tasks import mlp

ROOT = pathlib.Path(__file__).resolve().parents[1]
POPULATION = 256
SPEED_MODEL = (64, 128, 10)
MODELS = {"5k": (64, 64, 10), "100k": (64, 512, 128, 10), "1M": (64, 1024, 896, 10)}


class CountingComm:
    """A communicator that measures the buffers of the calls evograd.mpi makes, and offers no others."""

    def __init__(self, comm) -> None:
        self.comm, self.sent, self.received = comm, 0, 0

    def Get_rank(self) -> int:
        return self.comm.Get_rank()

    def Get_size(self) -> int:
        return self.comm.Get_size()

    def Allgatherv(self, send, recv) -> None:
        self.sent, self.received = self.sent + send.nbytes, self.received + recv[0].nbytes
        self.comm.Allgatherv(send, recv)

    def Allgather(self, send, recv) -> None:
        self.sent, self.received = self.sent + send.nbytes, self.received + recv.nbytes
        self.comm.Allgather(send, recv)


def setup(sizes, batch, comm, chunk_size, device):
    from evograd.mpi import MPIEvaluator

    model = mlp(sizes, seed=0).to(device)
    gen = torch.Generator().manual_seed(0)
    data = (
        torch.randn(batch, sizes[0], generator=gen).to(device),
        torch.randint(0, sizes[-1], (batch,), generator=gen).to(device),
    )
    evaluate = MPIEvaluator(VmapEvaluator(model, F.cross_entropy, data, chunk_size=chunk_size), comm, sync_every=1)
    strategy = OpenES(size=POPULATION, mutation=Mutation(sigma=0.02, antithetic=True), lr=0.01, chunk_size=chunk_size)
    return evaluate, strategy, strategy.init(flat.flatten(model), seed=0)


def speed(generations: int, device: str) -> dict:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    evaluate, strategy, state = setup(SPEED_MODEL, 1024, comm, chunk_size=32, device=device)
    evaluating = telling = 0.0
    for generation in range(generations + 2):
        if generation == 2:  # two warm-up generations build the noise table and the kernels
            comm.Barrier()
            start, evaluating, telling = time.perf_counter(), 0.0, 0.0
        seeds = strategy.ask(state)
        tick = time.perf_counter()
        fitness = evaluate(state.center, seeds, state.mutation)
        tock = time.perf_counter()
        state, _ = strategy.tell(state, seeds, fitness)
        evaluating, telling = evaluating + tock - tick, telling + time.perf_counter() - tock
    comm.Barrier()
    elapsed = time.perf_counter() - start
    # the collective alone: the fitness all-gather of one generation, timed over many repetitions
    send, gathered = np.zeros(POPULATION // comm.Get_size() + 1), np.zeros(POPULATION + comm.Get_size())
    shares = [POPULATION // comm.Get_size() + 1] * comm.Get_size()
    comm.Barrier()
    tick = time.perf_counter()
    for _ in range(1000):
        comm.Allgatherv(send, [gathered, shares, [i * shares[0] for i in range(comm.Get_size())], MPI.DOUBLE])
    allgather = (time.perf_counter() - tick) / 1000
    return {
        "ranks": comm.Get_size(),
        "generations_per_s": generations / elapsed,
        "evaluate_fraction": evaluating / elapsed,
        "tell_s": telling / generations,
        "allgather_s": allgather,
        "dim": state.center.numel(),
        "digest": f"{evaluate.check_sync(state, state.generation, final=True):016x}",
    }


def traffic(generations: int, device: str) -> dict:
    from mpi4py import MPI

    out = {}
    for name, sizes in MODELS.items():
        comm = CountingComm(MPI.COMM_WORLD)
        evaluate, strategy, state = setup(sizes, 8, comm, chunk_size=16, device=device)
        telling = 0.0
        for generation in range(generations + 1):
            if generation == 1:  # the first generation warms up (noise table, kernels): not counted
                comm.sent, comm.received, telling = 0, 0, 0.0
            seeds = strategy.ask(state)
            fitness = evaluate(state.center, seeds, state.mutation)
            tick = time.perf_counter()
            state, _ = strategy.tell(state, seeds, fitness)
            telling += time.perf_counter() - tick
            evaluate.check_sync(state, state.generation)  # sync_every=1: its 8 bytes are included
        per_rank = MPI.COMM_WORLD.allgather((comm.sent / generations, comm.received / generations))
        out[name] = {
            "dim": state.center.numel(),
            "sent": [s for s, _ in per_rank],
            "received": [r for _, r in per_rank],
            "tell_s": telling / generations,
        }
    return {"ranks": MPI.COMM_WORLD.Get_size(), "models": out}


def idle_fraction(seconds: float = 1.0) -> float:
    """Share of the machine's CPU time left idle over the next ``seconds`` (Linux /proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in pathlib.Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_for_quiet(threshold: float = 0.9, limit: float = 600.0) -> float:
    """Wait (up to ``limit`` s) until other processes leave the CPUs idle; returns the idle share seen."""
    deadline = time.monotonic() + limit
    idle = idle_fraction()
    while idle < threshold and time.monotonic() < deadline:
        idle = idle_fraction(2.0)
    return idle


def launch(ranks: int, worker: str, generations: int, device: str) -> dict:
    mpiexec = pathlib.Path(sys.executable).parent / "mpiexec"
    command = [
        str(mpiexec) if mpiexec.exists() else "mpiexec",
        "-n",
        str(ranks),
        sys.executable,
        "-m",
        "mpi4py",
        __file__,
        "--worker",
        worker,
        "--generations",
        str(generations),
        "--device",
        device,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--worker", choices=("speed", "traffic"), default=None)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where every rank computes")
    args = parser.parse_args()
    if args.worker is not None:
        torch.set_num_threads(1)
        torch.set_flush_denormal(True)
        from mpi4py import MPI

        result = speed(args.generations, args.device) if args.worker == "speed" else traffic(3, args.device)
        if MPI.COMM_WORLD.Get_rank() == 0:
            print(json.dumps(result), flush=True)
        return

    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    rates: dict[int, list[float]] = {1: [], 2: []}
    digests = set()
    for _ in range(args.repeats):
        for ranks in (1, 2):
            idle = wait_for_quiet()
            result = launch(ranks, "speed", args.generations, args.device)
            rates[ranks].append(result["generations_per_s"])
            digests.add(result["digest"])
            print(
                f"  {ranks} rank(s), CPUs {idle:.0%} idle before: {result['generations_per_s']:.2f} gen/s "
                f"(evaluation {result['evaluate_fraction']:.0%} of the time, tell {1e3 * result['tell_s']:.1f} ms, "
                f"fitness all-gather alone "
                f"{1e6 * result['allgather_s']:.1f} us)",
                flush=True,
            )
    print(
        f"population {POPULATION}, MLP 64-128-10 ({result['dim']} parameters), batch 1024, 1 thread per rank, "
        f"device {args.device}"
    )
    for ranks, values in rates.items():
        print(f"{ranks} rank(s): best {max(values):.2f} gen/s, median {statistics.median(values):.2f} gen/s")
    print(
        f"speed-up 2 vs 1 rank: best {max(rates[2]) / max(rates[1]):.2f}x, "
        f"median {statistics.median(rates[2]) / statistics.median(rates[1]):.2f}x; "
        f"final states identical across all runs: {len(digests) == 1}"
    )

    result = launch(2, "traffic", 3, args.device)
    print(
        f"bytes per generation per rank, population {POPULATION}, {result['ranks']} ranks "
        "(fitness all-gather + sync check):"
    )
    for name, row in result["models"].items():
        print(
            f"  {name:>4} ({row['dim']:>9,d} parameters): sent {row['sent']}, received {row['received']}; "
            f"a parameter broadcast would be {4 * row['dim']:,d}; tell {1e3 * row['tell_s']:.0f} ms "
            f"({1e9 * row['tell_s'] / (POPULATION * row['dim']):.2f} ns per member x parameter)"
        )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
