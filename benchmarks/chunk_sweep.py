"""How the two chunk sizes of a generation set its speed: the evaluator's and the update's.

A generation materializes its candidates a chunk at a time twice: ``VmapEvaluator`` scores
``chunk_size`` members per vectorized call, and the strategy's ``tell`` regenerates ``chunk_size``
rows at a time for its weighted sum (:func:`evograd.noise.weighted_sum`). This sweeps both on the
workload of ``benchmarks/throughput.py`` (MLPs at batch 256) and prints milliseconds per call, so
the defaults (:func:`evograd.evaluate.default_chunk_size`, :func:`evograd.noise.chunk_rows`) can be
checked on a device. Each figure is the best of ``--repeats`` timings in this one process.

Usage::

    PYTHONPATH=. python benchmarks/chunk_sweep.py --device cuda [--pops 1024 8192] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from throughput import BATCH, LARGE, SMALL, data, mlp, mutation, n_params

from evograd import VmapEvaluator, evaluate, flat, noise

EVALUATOR_CHUNKS = (64, 128, 256, 512, 1024, 2048, 4096)
UPDATE_CHUNK_MIB = (4, 16, 64, 256, 1024)


def best_ms(call: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best wall time of one call, in milliseconds, after one untimed call."""
    call()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def sweep(pop: int, sizes: tuple[int, ...], device: torch.device, repeats: int) -> list[str]:
    model = mlp(sizes).to(device)
    center = flat.flatten(model)
    seeds = noise.member_seeds(0, 0, pop, antithetic=True)
    weights = torch.linspace(-0.5, 0.5, pop, device=device)
    dim = len(center)
    lines = [
        f"P={pop}, {n_params(sizes):,} parameters (defaults: evaluator "
        f"{evaluate.default_chunk_size(dim, device=device)}, update "
        f"{noise.chunk_rows(dim, device=device)} rows)"
    ]
    cells = []
    for chunk in EVALUATOR_CHUNKS:
        if chunk > pop:
            break
        evaluator = VmapEvaluator(model, F.cross_entropy, data(sizes, device), chunk_size=chunk)
        try:
            ms = best_ms(lambda: evaluator(center, seeds, mutation()), device, repeats)
            cells.append(f"{chunk}: {ms:.1f}")
        except torch.OutOfMemoryError:
            cells.append(f"{chunk}: out of memory")
        evaluator = None  # free its buffers before the next size allocates its own
    lines.append("  evaluate, ms by evaluator chunk:  " + "  ".join(cells))
    cells = []
    for mib in UPDATE_CHUNK_MIB:
        rows = noise.chunk_rows(dim, nbytes=mib << 20)
        ms = best_ms(
            lambda: noise.weighted_sum(mutation(), seeds, weights, dim, chunk_size=rows, device=device), device, repeats
        )
        cells.append(f"{mib} MiB ({rows}): {ms:.1f}")
    lines.append("  update, ms by chunk:  " + "  ".join(cells))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--pops", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, {name}, batch {BATCH}; best of {args.repeats}")
    for sizes in (SMALL, LARGE):
        for pop in args.pops:
            print("\n".join(sweep(pop, sizes, device, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
