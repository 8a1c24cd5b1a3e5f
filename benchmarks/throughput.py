"""Throughput and memory of evograd's ask -> evaluate -> tell against plain torch (and EvoTorch).

Workload: a population of P perturbations of an MLP (ReLU hidden layers, cross-entropy on 10
classes) scored on one shared batch of 256 samples. Rows: P = 256 and 1024 for a 64-64-10 MLP
(4,810 parameters) and a 64-384-192-10 MLP (100,810 parameters); on a GPU, P = 1024 and 8192.

Contenders:

* ``bmm fwd``: the population's loss by a hand-written ``torch.baddbmm`` forward of candidates that
  are already materialized, the whole population at once: forward only, no noise, no update.
* ``plain ES``: one antithetic ES step written by hand in plain torch (:class:`PlainES`): the
  reference evograd must stay within 80% of.
* ``evograd OpenES`` and ``evograd Rolling``: ``OpenES`` / ``RollingImprovement`` ask/tell with a
  ``VmapEvaluator`` of the ``nn.Module`` and ``F.cross_entropy``, everything at its defaults
  (Rolling scores the parent too: P + 1 members).
* ``EvoTorch PGPE``: EvoTorch's functional PGPE (``pgpe_ask``/``pgpe_tell``, Adam, symmetric
  sampling) scoring its population with the same hand-written forward, if EvoTorch is installed
  (a benchmark-only dependency, never one of evograd's).

All losses are the same function: ``F.cross_entropy`` of (samples, 10) logits averaged per member;
the hand-written forward feeds it the logits in the same (member, sample, class) layout that
``vmap`` produces, so the comparison measures the frameworks, not two different loss kernels.
(On this CPU that kernel, ``log_softmax`` over a last dimension of 10, is slow: a fifth to a third
of a small-MLP generation on every side. The cross-entropy would be ~15x faster on a (member,
class, sample) layout, but a ``VmapEvaluator`` user writes the loss per member and cannot choose it.)

How it is timed: each contender lives in its own worker process, like a user's training run, and
the parent has them run in turn, one at a time, so a busy neighbour on the machine slows them
alike; a figure is the best of ``--repeats`` timings. Separate processes matter: glibc's malloc
adapts its mmap threshold to the blocks freed, so in one shared process a neighbour's big tensors
decide whether yours are recycled or page-faulted afresh (it swung one contender by 40% here).

Then the peak memory of one generation with the 100,810-parameter MLP at P=1024 (P=8192 on a GPU),
each configuration in a fresh subprocess (see :func:`memory_probe` for the method).

Usage::

    PYTHONPATH=. python benchmarks/throughput.py [--threads 2] [--repeats N] [--device cpu|cuda]
                                                 [--rows small|all|gpu]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from evograd import Mutation, OpenES, RollingImprovement, VmapEvaluator, flat

BATCH = 256
SIGMA = 0.02
LR = 0.01
SMALL, LARGE = (64, 64, 10), (64, 384, 192, 10)
ROWS = {
    "small": [(256, SMALL), (1024, SMALL)],
    "all": [(256, SMALL), (1024, SMALL), (256, LARGE), (1024, LARGE)],
    "gpu": [(1024, SMALL), (8192, SMALL), (1024, LARGE), (8192, LARGE)],
}
MEMORY_ROWS = {"cpu": (1024, LARGE), "cuda": (8192, LARGE)}
CONTENDERS = ("bmm fwd", "plain ES", "evograd OpenES", "evograd Rolling", "EvoTorch PGPE")


# ----------------------------------------------------------------------------------------------
# workload


def mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them; fixed initial weights."""
    torch.manual_seed(0)  # the benchmark's own process; evograd itself never seeds globally
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(fan_in, fan_out)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


def n_params(sizes: tuple[int, ...]) -> int:
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))


def data(sizes: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch: standard normal inputs and uniformly random labels."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, sizes[0], generator=gen)
    y = torch.randint(0, sizes[-1], (BATCH,), generator=gen)
    return x.to(device), y.to(device)


def population_loss(sizes: tuple[int, ...], x: torch.Tensor, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The hand-written forward: (P, dim) candidates -> (P,) mean cross-entropy, by ``baddbmm``.

    Parameters are laid out as ``nn.Linear`` flattens them (weight (out, in), then bias, per layer).
    """

    def loss(candidates: torch.Tensor) -> torch.Tensor:
        pop, start, h = len(candidates), 0, x.expand(len(candidates), *x.shape)  # (P, B, in)
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            w = candidates[:, start : start + fan_in * fan_out].view(pop, fan_out, fan_in)  # (P, out, in)
            start += fan_in * fan_out
            b = candidates[:, start : start + fan_out]  # (P, out)
            start += fan_out
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))  # (P, B, out)
            if i < len(sizes) - 2:
                h = h.relu()
        per_sample = F.cross_entropy(h.reshape(-1, sizes[-1]), y.repeat(pop), reduction="none")  # (P*B,)
        return per_sample.view(pop, -1).mean(1)  # (P,)

    return loss


class PlainES:
    """The reference: one antithetic OpenAI-ES step with Adam, written directly in torch."""

    def __init__(self, center: torch.Tensor, pop: int, loss: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.param = nn.Parameter(center.clone())
        self.opt = torch.optim.Adam([self.param], lr=LR)
        self.pop, self.loss = pop, loss
        self.gen = torch.Generator(device=center.device).manual_seed(0)

    def step(self) -> None:
        half = torch.randn(self.pop // 2, len(self.param), generator=self.gen, device=self.param.device)
        eps = torch.cat([half, -half])  # (P, dim), antithetic pairs
        with torch.no_grad():
            fitness = self.loss(self.param + SIGMA * eps)  # (P,)
            ranks = torch.empty_like(fitness)
            ranks[fitness.argsort()] = torch.arange(self.pop, device=fitness.device, dtype=fitness.dtype)
            ranks = ranks / (self.pop - 1) - 0.5  # centered ranks, -0.5 for the best
            self.param.grad = (ranks @ eps) / (self.pop * SIGMA)  # (dim,) uphill estimate
        self.opt.step()


class EvogradLoop:
    """evograd's ask -> evaluate -> tell, one generation per :meth:`step`, everything at defaults."""

    def __init__(self, strategy, model: nn.Module, batch: tuple, center: torch.Tensor) -> None:
        self.strategy = strategy
        self.evaluate = VmapEvaluator(model, F.cross_entropy, batch)
        self.state = strategy.init(center, seed=0)

    def step(self) -> None:
        seeds = self.strategy.ask(self.state)
        fitness = self.evaluate(self.state.center, seeds, self.state.mutation)
        self.state, _ = self.strategy.tell(self.state, seeds, fitness)


def mutation() -> Mutation:
    return Mutation(kind="gaussian", sigma=SIGMA, antithetic=True)


def evotorch_step(center: torch.Tensor, pop: int, loss: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
    """One generation of EvoTorch's functional PGPE (EvoTorch imported here, only if it is used)."""
    from evotorch.algorithms.functional import pgpe, pgpe_ask, pgpe_tell

    box = [
        pgpe(
            center_init=center.clone(),
            center_learning_rate=LR,
            stdev_learning_rate=0.1,
            objective_sense="min",
            optimizer="adam",
            stdev_init=SIGMA,
            ranking_method="centered",
            symmetric=True,
        )
    ]

    def step() -> None:
        population = pgpe_ask(box[0], popsize=pop)  # (P, dim)
        box[0] = pgpe_tell(box[0], population, loss(population))

    return step


def make_step(name: str, pop: int, sizes: tuple[int, ...], device: torch.device) -> Callable[[], None]:
    """One generation (one population forward for ``bmm fwd``) of the named contender."""
    model = mlp(sizes).to(device)
    batch = data(sizes, device)
    center = flat.flatten(model)
    loss = population_loss(sizes, *batch)
    if name == "bmm fwd":
        noise = torch.randn(pop, len(center), generator=torch.Generator().manual_seed(2)).to(device)
        candidates = center + SIGMA * noise  # (P, dim), materialized once
        return lambda: loss(candidates)
    if name == "plain ES":
        return PlainES(center, pop, loss).step
    if name == "evograd OpenES":
        return EvogradLoop(OpenES(size=pop, mutation=mutation(), lr=LR), model, batch, center).step
    if name == "evograd Rolling":
        return EvogradLoop(RollingImprovement(size=pop, mutation=mutation()), model, batch, center).step
    if name == "EvoTorch PGPE":
        return evotorch_step(center, pop, loss)
    raise ValueError(f"unknown contender {name!r}")


# ----------------------------------------------------------------------------------------------
# timing


def _timed(step: Callable[[], None], count: int, device: torch.device) -> float:
    """Seconds per call of ``step``, over ``count`` calls."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(count):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / count


def _worker(conn, name: str, threads: int, device_type: str, factory) -> None:
    """A contender's process: answers each command with seconds per generation.

    ``("setup", pop, sizes)`` builds the contender's step for a row with ``factory`` and times one
    generation after an untimed first one; ``("run", count)`` times ``count`` generations.
    """
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # over-fitted batches produce denormals that slow steps up to 5x
    device = torch.device(device_type)
    step = None
    with torch.no_grad():
        for command, *args in iter(conn.recv, ("stop",)):
            if command == "setup":
                step = None  # free the previous row's state before building the next
                step = factory(name, *args, device)
                step()  # first-call costs: noise tables, vmap, allocator
                conn.send(_timed(step, 1, device))
            else:
                conn.send(_timed(step, *args, device))


class Contenders:
    """One worker process per contender, driven one at a time (a context manager).

    ``factory(name, pop, sizes, device)`` builds a contender's step: :func:`make_step`, or any
    importable function, to time variants (e.g. other chunk sizes) the same way.
    """

    def __init__(self, names: list[str], threads: int, device: torch.device, factory=make_step) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes, self.processes = {}, []
        for name in names:
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(child, name, threads, device.type, factory), daemon=True)
            process.start()
            child.close()  # the worker's end: if the worker dies, recv() here raises instead of waiting
            self.pipes[name] = parent
            self.processes.append(process)

    def ask(self, name: str, *command) -> float:
        self.pipes[name].send(command)
        return self.pipes[name].recv()

    def __enter__(self) -> Contenders:
        return self

    def __exit__(self, *exc) -> None:
        for pipe in self.pipes.values():
            pipe.send(("stop",))
        for process in self.processes:
            process.join(timeout=30)

    def measure(self, pop: int, sizes: tuple[int, ...], repeats: int, min_seconds: float = 0.25) -> dict[str, float]:
        """Generations per second of every contender on one row: best of ``repeats`` timings.

        Each timing runs as many generations as fill about ``min_seconds``; contenders take turns,
        starting from a different one every repeat.
        """
        names = list(self.pipes)
        counts = {name: max(1, math.ceil(min_seconds / self.ask(name, "setup", pop, sizes))) for name in names}
        best = {name: math.inf for name in names}
        for r in range(repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                best[name] = min(best[name], self.ask(name, "run", counts[name]))
        return {name: 1.0 / seconds for name, seconds in best.items()}


# ----------------------------------------------------------------------------------------------
# memory


def _status_bytes(field: str) -> int:
    """A memory field of ``/proc/self/status`` (``VmRSS``: resident now; ``VmHWM``: its peak), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_probe(kind: str, device: torch.device) -> dict[str, float]:
    """Peak extra memory of one generation at the device's row of :data:`MEMORY_ROWS`, in this (fresh) process.

    Method, CPU: torch's CPU allocator takes large blocks from the OS and gives them back on free
    (with the malloc setting :func:`memory_report` passes), so resident memory tracks what the
    tensors need. The setup (model, batch, strategy) and one warm-up generation run first (it
    builds the noise table and pages in library code, neither of which a later generation pays
    again); then the kernel's resident-memory high-water mark (``VmHWM``) is reset to the current
    resident size (``/proc/self/clear_refs``), one generation runs, and its peak is the high-water
    mark minus the resident size before it. (``getrusage().ru_maxrss`` would not do: a subprocess
    inherits its parent's high-water mark across fork and exec.) If the reset is not permitted, a
    setup transient could hide the generation's peak: that case is reported as ``masked``. CUDA:
    ``torch.cuda.max_memory_allocated`` over the generation, minus what was allocated before it.
    """
    step = make_step(kind, *MEMORY_ROWS[device.type], device)
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return {"peak": float(torch.cuda.max_memory_allocated(device) - before), "masked": False}
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to VmRSS
    except OSError:
        pass
    before, high_before = _status_bytes("VmRSS"), _status_bytes("VmHWM")
    step()
    high_after = _status_bytes("VmHWM")
    return {"peak": float(high_after - before), "masked": high_after == high_before > before}


def memory_report(threads: int, device: torch.device) -> list[str]:
    """Run :func:`memory_probe` in fresh subprocesses and compare with the two budgets."""
    pop, sizes = MEMORY_ROWS[device.type]
    dim = n_params(sizes)
    chunk = min(pop, VmapEvaluator(mlp(sizes).to(device), F.cross_entropy).chunk_size)
    floats = torch.finfo(torch.float32).bits // 8
    # one chunk of candidates, plus every layer's output for that chunk (hidden layers twice:
    # the linear layer's output and the ReLU's, which is not in place)
    activations = chunk * BATCH * (2 * sum(sizes[1:-1]) + sizes[-1])
    budget = (chunk * dim + activations) * floats
    full = pop * dim * floats
    lines = [
        f"Peak memory of one generation, P={pop}, {dim:,} parameters, batch {BATCH} "
        f"(fresh process each; {device.type}):",
        f"  {'P x D floats:':37}{full / 2**20:8.1f} MiB",
        f"  {f'one chunk ({chunk}) + its activations:':37}{budget / 2**20:8.1f} MiB",
    ]
    # glibc's malloc would keep some freed blocks resident for reuse; serving every block of 64 KiB
    # or more by mmap returns them at once, so resident memory counts live tensors only.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    for kind in ("evograd OpenES", "plain ES"):
        out = subprocess.run(
            [sys.executable, __file__, "--probe", kind, "--threads", str(threads), "--device", device.type],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        figure = "masked by setup" if result["masked"] else f"{result['peak'] / 2**20:8.1f} MiB"
        lines.append(
            f"  {kind + ':':37}{figure}  ({result['peak'] / full:.2f} x P x D, "
            f"{result['peak'] / budget:.2f} x chunk budget)"
        )
    return lines


# ----------------------------------------------------------------------------------------------
# report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=7, help="timings per contender and row (default 7)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--rows",
        choices=list(ROWS),
        help="small: the 4,810-parameter MLP only; all: both MLPs (default on a CPU); "
        "gpu: both MLPs at P=1024 and 8192 (default on a GPU)",
    )
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: one memory probe, JSON to stdout
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = torch.device(args.device)
    rows = ROWS[args.rows or ("gpu" if device.type == "cuda" else "all")]
    if args.probe:
        print(json.dumps(memory_probe(args.probe, device)))
        return

    names = [n for n in CONTENDERS if n != "EvoTorch PGPE" or importlib.util.find_spec("evotorch")]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} threads"
    print(
        f"torch {torch.__version__}, {where}, device {device}, batch {BATCH}, "
        f"best of {args.repeats}; figures in generations/s"
    )
    header = f"{'P':>5} {'params':>8} " + " ".join(f"{c:>15}" for c in CONTENDERS)
    print(header + f" {'OpenES/plain':>13} {'Rolling/plain':>14} {'OpenES/EvoTorch':>16}")
    with Contenders(names, args.threads, device) as contenders:
        for pop, sizes in rows:
            rate = contenders.measure(pop, sizes, args.repeats)
            cells = " ".join(f"{rate[c]:15.2f}" if c in rate else f"{'n/a':>15}" for c in CONTENDERS)
            evotorch = rate.get("EvoTorch PGPE")
            ratio = f"{rate['evograd OpenES'] / evotorch:16.2f}" if evotorch else f"{'n/a':>16}"
            print(
                f"{pop:5d} {n_params(sizes):8,d} {cells} {rate['evograd OpenES'] / rate['plain ES']:13.2f} "
                f"{rate['evograd Rolling'] / rate['plain ES']:14.2f} {ratio}",
                flush=True,
            )
    if "EvoTorch PGPE" not in names:
        print("EvoTorch is not installed: its column is skipped.")
    print()
    print("\n".join(memory_report(args.threads, device)))


if __name__ == "__main__":
    main()
