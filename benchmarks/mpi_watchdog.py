"""What the MPI watchdog costs: blocking collectives vs guarded ones on mpi/train.py's default task.

    mpiexec -n 2 python -m mpi4py benchmarks/mpi_watchdog.py GENERATIONS BLOCKS

Alternates blocks of GENERATIONS generations with the plain blocking collectives (``old``) and the
deadline-guarded ones of evograd/collectives.py (``new``) in one job, swapping the order every
block, checks that both end in the same state bit for bit, and prints the median times. Figures:
benchmarks/RESULTS.rst, section "MPI watchdog".
"""

import importlib.util
import pathlib
import statistics
import sys
import time

import torch

torch.set_num_threads(1)
torch.set_flush_denormal(True)
ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("train", ROOT / "mpi" / "train.py")
train = sys.modules["train"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)

import evograd  # noqa: E402
from evograd import flat  # noqa: E402
from evograd.mpi import MPIEvaluator, state_digest  # noqa: E402

args = train.parse_args([])
task = train.make_task(args.task, args.hidden, args.seed)
strategy = train.make_strategy(args.strategy, args.population, None, None, args.chunk_size)
new = MPIEvaluator(evograd.VmapEvaluator(task.model, task.loss, chunk_size=args.chunk_size), sync_every=args.sync_every)
old = MPIEvaluator(evograd.VmapEvaluator(task.model, task.loss, chunk_size=args.chunk_size), sync_every=args.sync_every)
old._collectives = None  # the plain blocking Allgatherv / Allgather of a single-rank-style call
state0 = strategy.init(flat.flatten(task.model), seed=args.seed)
G, R = int(sys.argv[1]), int(sys.argv[2])
times = {"old": [], "new": []}
for rep in range(R):
    finals = {}
    for name, ev in (("old", old), ("new", new)) if rep % 2 == 0 else (("new", new), ("old", old)):
        state = state0
        ev.comm.Barrier()
        t = time.perf_counter()
        while state.generation < G:
            state, _ = train.generation(args, task, strategy, ev, state)
        ev.check_sync(state, state.generation, final=True)
        times[name].append(time.perf_counter() - t)
        finals[name] = state_digest(state)
    assert finals["old"] == finals["new"], finals
if new.rank == 0:
    o, n = statistics.median(times["old"]), statistics.median(times["new"])
    print(
        f"{G} generations x {R} reps, 2 ranks: old median {o:.3f} s, new median {n:.3f} s, new/old {n / o:.4f}; "
        f"per generation old {o / G * 1e3:.2f} ms new {n / G * 1e3:.2f} ms; final states bit-identical",
        flush=True,
    )
    print("old", [round(x, 3) for x in times["old"]])
    print("new", [round(x, 3) for x in times["new"]])
