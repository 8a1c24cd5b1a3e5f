"""Throughput and memory of evograd's ask -> evaluate -> tell against plain torch (and EvoTorch).

Supervised rows: a population of P perturbations of an MLP (ReLU hidden layers, cross-entropy on
10 classes) scored on one shared batch of 256 samples. P = 256 and 1024 for a 64-64-10 MLP (4,810
parameters) and a 64-384-192-10 MLP (100,810 parameters); on a GPU, P = 1024 and 8192.

RL-like rows: members that see few samples each (an environment step, one sequence, an
inference-sized batch), where a full-rank population reads P·D weights per step: P = 4096 with 1
and 8 samples per member, for the 100,810-parameter MLP and a 64-1024-896-10 MLP (993,930
parameters); on a GPU, P = 65,536. Only evograd's two OpenES runs take part: the hand-written
step would hold P x D floats (16 GB at 1M parameters).

Contenders:

* ``bmm fwd``: the population's loss by a hand-written ``torch.baddbmm`` forward of candidates that
  are already materialized, the whole population at once: forward only, no noise, no update.
* ``plain ES``: one antithetic ES step written by hand in plain torch (:class:`PlainES`) with the
  forward of ``bmm fwd``: activations (member, sample, feature), as ``vmap`` lays them out.
* ``plain ES fast``: the same step with the forward in the fast layout
  (:func:`population_loss_fast`): activations (member, feature, sample) and logits (member,
  class, sample). The target: evograd >= 0.95 of the faster of the two plain steps.
* ``evograd OpenES`` and ``evograd Rolling``: ``OpenES`` / ``RollingImprovement`` ask/tell with a
  ``VmapEvaluator`` of the ``nn.Module`` and ``F.cross_entropy``, everything at its defaults
  (Rolling scores the parent too: P + 1 members). The evaluator computes that loss outside
  ``vmap`` with the class dimension second.
* ``OpenES rank 1``: the same ``OpenES`` with a rank-1 mutation (``Mutation(rank=1)``: every weight
  matrix perturbed by sigma·a bᵀ, EGGROLL) and a ``LowRankEvaluator`` at its defaults, which never
  forms a member's weights; its update is one GEMM of stacked factors per matrix.
* ``EvoTorch PGPE``: EvoTorch's functional PGPE (``pgpe_ask``/``pgpe_tell``, Adam, symmetric
  sampling) scoring its population with the ``plain ES`` forward, if EvoTorch is installed (a
  benchmark-only dependency, never one of evograd's).
* ``OpenES compiled`` (with ``--compiled``): ``evograd OpenES`` with ``VmapEvaluator(compile=True)``;
  each worker compiles first (minutes on a CPU), untimed.

All losses are the mean ``F.cross_entropy`` over 10 classes per member. On this CPU its kernel is
slow when the classes are the last dimension (``log_softmax`` over 10 numbers at a time) and
several times faster with the class dimension second, which is why the two plain steps differ.

How it is timed: each contender lives in its own worker process, like a user's training run, and
the parent has them run in turn, one at a time, so a busy neighbour on the machine slows them
alike; a figure is the median of ``--repeats`` timings. Separate processes matter: glibc's malloc
adapts its mmap threshold to the blocks freed, so in one shared process a neighbour's big tensors
decide whether yours are recycled or page-faulted afresh (it swung one contender by 40% here).

Then the peak memory of one generation, each configuration in a fresh subprocess (see
:func:`memory_probe` for the method): the 100,810-parameter MLP at P=1024 and batch 256 (P=8192 on
a GPU), and the RL-like row with the 993,930-parameter MLP at P=4096 and 1 sample (P=65,536 on a
GPU).

``--quick`` checks that every row runs, in a few minutes: one timing per contender, the small
supervised rows, the RL-like rows and the memory rows at a sixteenth of their population.

Usage::

    PYTHONPATH=. python benchmarks/throughput.py [--threads 1] [--repeats N] [--rl-repeats N]
                                                 [--device cpu|cuda] [--rows small|all|gpu|none]
                                                 [--rl-rows cpu|gpu|none] [--compiled] [--no-memory]
                                                 [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from evograd import LowRankEvaluator, Mutation, OpenES, RollingImprovement, VmapEvaluator, flat, lowrank

BATCH = 256
SIGMA = 0.02
LR = 0.01
SMALL, LARGE, HUGE = (64, 64, 10), (64, 384, 192, 10), (64, 1024, 896, 10)
ROWS = {  # supervised: (P, sizes, samples per member)
    "small": [(256, SMALL, BATCH), (1024, SMALL, BATCH)],
    "all": [(256, SMALL, BATCH), (1024, SMALL, BATCH), (256, LARGE, BATCH), (1024, LARGE, BATCH)],
    "gpu": [(1024, SMALL, BATCH), (8192, SMALL, BATCH), (1024, LARGE, BATCH), (8192, LARGE, BATCH)],
    "none": [],
}
RL_ROWS = {  # few samples per member
    "cpu": [(4096, LARGE, 1), (4096, LARGE, 8), (4096, HUGE, 1), (4096, HUGE, 8)],
    "gpu": [(65536, LARGE, 1), (65536, LARGE, 8), (65536, HUGE, 1), (65536, HUGE, 8)],
    "none": [],
}
MEMORY_ROWS = {  # (P, sizes, samples per member, contenders)
    "cpu": [
        (1024, LARGE, BATCH, ("evograd OpenES", "OpenES rank 1", "plain ES")),
        (4096, HUGE, 1, ("evograd OpenES", "OpenES rank 1")),
    ],
    "cuda": [
        (8192, LARGE, BATCH, ("evograd OpenES", "OpenES rank 1", "plain ES")),
        (65536, HUGE, 1, ("evograd OpenES", "OpenES rank 1")),
    ],
}
CONTENDERS = (
    "bmm fwd",
    "plain ES",
    "plain ES fast",
    "evograd OpenES",
    "evograd Rolling",
    "OpenES rank 1",
    "EvoTorch PGPE",
    "OpenES compiled",
)
PLAIN = ("plain ES", "plain ES fast")
RL_CONTENDERS = ("evograd OpenES", "OpenES rank 1")
QUICK = 16  # --quick divides the RL-like and memory rows' populations by this


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


def data(sizes: tuple[int, ...], device: torch.device, samples: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch of ``samples``: standard normal inputs and uniformly random labels."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(samples, sizes[0], generator=gen)
    y = torch.randint(0, sizes[-1], (samples,), generator=gen)
    return x.to(device), y.to(device)


def population_loss(sizes: tuple[int, ...], x: torch.Tensor, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The hand-written forward: (P, dim) candidates -> (P,) mean cross-entropy, by ``baddbmm``.

    Activations in the (member, sample, feature) layout that ``vmap`` produces, logits flattened to
    (member·sample, class) for ``F.cross_entropy``. Parameters are laid out as ``nn.Linear``
    flattens them (weight (out, in), then bias, per layer).
    """

    def loss(candidates: torch.Tensor) -> torch.Tensor:
        pop, h = len(candidates), x.expand(len(candidates), *x.shape)  # (P, B, in)
        for last, w, b in _layers(sizes, candidates):
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))  # (P, B, out)
            h = h if last else h.relu()
        per_sample = F.cross_entropy(h.reshape(-1, sizes[-1]), y.repeat(pop), reduction="none")  # (P*B,)
        return per_sample.view(pop, -1).mean(1)  # (P,)

    return loss


def population_loss_fast(
    sizes: tuple[int, ...], x: torch.Tensor, y: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The same forward in the fast layout: activations (member, feature, sample), logits (member, class, sample).

    ``W h`` instead of ``h Wᵀ`` keeps the samples on the last dimension, and ``F.cross_entropy``
    then takes the class dimension second, the fast kernel on this CPU (see the module docstring).
    """
    xt = x.T.contiguous()  # (in, B)

    def loss(candidates: torch.Tensor) -> torch.Tensor:
        pop, h = len(candidates), xt.expand(len(candidates), *xt.shape)  # (P, in, B)
        for last, w, b in _layers(sizes, candidates):
            h = torch.baddbmm(b.unsqueeze(2), w, h)  # (P, out, B)
            h = h if last else h.relu()
        return F.cross_entropy(h, y.expand(pop, len(y)), reduction="none").mean(1)  # (P,)

    return loss


def _layers(sizes: tuple[int, ...], candidates: torch.Tensor):
    """(is the last layer, (P, out, in) weights, (P, out) biases) of each layer, as views of the candidates."""
    pop, start = len(candidates), 0
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = candidates[:, start : start + fan_in * fan_out].view(pop, fan_out, fan_in)  # (P, out, in)
        start += fan_in * fan_out
        yield i == len(sizes) - 2, w, candidates[:, start : start + fan_out]  # (P, out)
        start += fan_out


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
    """evograd's ask -> evaluate -> tell, one generation per :meth:`step`, everything at defaults.

    A low-rank mutation is scored by a ``LowRankEvaluator``, any other by a ``VmapEvaluator``.
    """

    def __init__(self, strategy, model: nn.Module, batch: tuple, center: torch.Tensor, **options) -> None:
        self.strategy = strategy
        low_rank = strategy.mutation.rank is not None
        self.evaluate = (LowRankEvaluator if low_rank else VmapEvaluator)(model, F.cross_entropy, batch, **options)
        self.state = strategy.init(center, seed=0)

    def step(self) -> None:
        seeds = self.strategy.ask(self.state)
        fitness = self.evaluate(self.state.center, seeds, self.state.mutation)
        self.state, _ = self.strategy.tell(self.state, seeds, fitness)


def mutation(rank: int | None = None, model: nn.Module | None = None) -> Mutation:
    """The benchmark's antithetic Gaussian mutation; with a ``rank``, resolved for ``model``."""
    full = Mutation(kind="gaussian", sigma=SIGMA, antithetic=True)
    return full if rank is None else full.replace(rank=rank).resolve(model)


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


def make_step(
    name: str, pop: int, sizes: tuple[int, ...], device: torch.device, samples: int = BATCH
) -> Callable[[], None]:
    """One generation (one population forward for ``bmm fwd``) of the named contender."""
    model = mlp(sizes).to(device)
    batch = data(sizes, device, samples)
    center = flat.flatten(model)
    loss = population_loss(sizes, *batch)
    if name == "bmm fwd":
        noise = torch.randn(pop, len(center), generator=torch.Generator().manual_seed(2)).to(device)
        candidates = center + SIGMA * noise  # (P, dim), materialized once
        return lambda: loss(candidates)
    if name == "plain ES":
        return PlainES(center, pop, loss).step
    if name == "plain ES fast":
        return PlainES(center, pop, population_loss_fast(sizes, *batch)).step
    if name == "evograd OpenES":
        return EvogradLoop(OpenES(size=pop, mutation=mutation(), lr=LR), model, batch, center).step
    if name == "OpenES compiled":
        return EvogradLoop(OpenES(size=pop, mutation=mutation(), lr=LR), model, batch, center, compile=True).step
    if name == "OpenES rank 1":
        return EvogradLoop(OpenES(size=pop, mutation=mutation(1, model), lr=LR), model, batch, center).step
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

    ``("setup", pop, sizes, samples)`` builds the contender's step for a row with ``factory`` and
    times one generation after an untimed first one; ``("run", count)`` times ``count`` generations.
    """
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # over-fitted batches produce denormals that slow steps up to 5x
    device = torch.device(device_type)
    step = None
    with torch.no_grad():
        for command, *args in iter(conn.recv, ("stop",)):
            if command == "setup":
                step = None  # free the previous row's state before building the next
                pop, sizes, samples = args
                step = factory(name, pop, sizes, device, samples)
                step()  # first-call costs: noise tables, vmap, allocator
                conn.send(_timed(step, 1, device))
            else:
                conn.send(_timed(step, *args, device))


class Contenders:
    """One worker process per contender, driven one at a time (a context manager).

    ``factory(name, pop, sizes, device, samples)`` builds a contender's step: :func:`make_step`, or
    any importable function, to time variants (e.g. other chunk sizes) the same way.
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

    def measure(
        self, pop: int, sizes: tuple[int, ...], samples: int, repeats: int, min_seconds: float = 0.25
    ) -> dict[str, float]:
        """Generations per second of every contender on one row: the median of ``repeats`` timings.

        Each timing runs as many generations as fill about ``min_seconds``; contenders take turns,
        starting from a different one every repeat, so a busy neighbour slows them alike, and the
        median drops the timings it hit hardest.
        """
        names = list(self.pipes)
        setup = {name: self.ask(name, "setup", pop, sizes, samples) for name in names}
        counts = {name: max(1, math.ceil(min_seconds / seconds)) for name, seconds in setup.items()}
        timings: dict[str, list[float]] = {name: [] for name in names}
        for r in range(repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                timings[name].append(self.ask(name, "run", counts[name]))
        return {name: 1.0 / statistics.median(seconds) for name, seconds in timings.items()}


# ----------------------------------------------------------------------------------------------
# memory


def _status_bytes(field: str) -> int:
    """A memory field of ``/proc/self/status`` (``VmRSS``: resident now; ``VmHWM``: its peak), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_probe(kind: str, pop: int, sizes: tuple[int, ...], samples: int, device: torch.device) -> dict[str, float]:
    """Peak extra memory of one generation of ``kind`` on one row, in this (fresh) process.

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
    step = make_step(kind, pop, sizes, device, samples)
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


def _budgets(pop: int, sizes: tuple[int, ...], samples: int, device: torch.device) -> list[tuple[str, float]]:
    """What a generation should need, in floats: the full-rank chunk and the low-rank one, with activations.

    Activations per member: every layer's output for its samples (hidden layers twice: the linear
    layer's output and the ReLU's, which is not in place). A full-rank chunk adds its candidates
    (chunk × D); a low-rank one the center (D) and its draws (chunk × r·(in + out) per matrix).
    """
    model = mlp(sizes).to(device)
    dim = n_params(sizes)
    activations = samples * (2 * sum(sizes[1:-1]) + sizes[-1])
    full = min(pop, VmapEvaluator(model, F.cross_entropy).chunk_size)
    low = min(pop, LowRankEvaluator(model, F.cross_entropy, data(sizes, device, samples)).chunk_size)
    length = lowrank.factor_layout(flat.layout_of(model), 1).length
    return [
        (f"full rank, one chunk ({full}) + activations", full * (dim + activations)),
        (f"rank 1, D + one chunk ({low}) of draws + activations", dim + low * (length + activations)),
    ]


def memory_report(threads: int, device: torch.device, quick: bool = False) -> list[str]:
    """Run :func:`memory_probe` in fresh subprocesses for every memory row and compare with the budgets."""
    floats = torch.finfo(torch.float32).bits // 8
    lines = []
    for pop, sizes, samples, kinds in MEMORY_ROWS[device.type]:
        pop = pop // QUICK if quick else pop
        dim = n_params(sizes)
        full = pop * dim * floats
        lines.append(
            f"Peak memory of one generation, P={pop}, {dim:,} parameters, {samples} sample(s) per member "
            f"(fresh process each; {device.type}):"
        )
        lines.append(f"  {'P x D floats:':55}{full / 2**20:9.1f} MiB")
        for label, budget in _budgets(pop, sizes, samples, device):
            lines.append(f"  {label + ':':55}{budget * floats / 2**20:9.1f} MiB")
        # glibc's malloc would keep some freed blocks resident for reuse; serving every block of 64 KiB
        # or more by mmap returns them at once, so resident memory counts live tensors only.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        for kind in kinds:
            row = json.dumps([pop, list(sizes), samples])
            command = [sys.executable, __file__, "--probe", kind, "--probe-row", row, "--threads", str(threads)]
            out = subprocess.run(
                command + ["--device", device.type], capture_output=True, text=True, check=True, env=env
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            figure = "masked by setup" if result["masked"] else f"{result['peak'] / 2**20:9.1f} MiB"
            lines.append(f"  {kind + ':':55}{figure}  ({result['peak'] / full:.3f} x P x D)")
    return lines


# ----------------------------------------------------------------------------------------------
# report


def supervised_table(rows: list, names: list[str], repeats: int, threads: int, device: torch.device, **kw) -> None:
    """The supervised rows: every contender, and evograd's ratios to the best plain step, EvoTorch and full rank."""
    shown = [c for c in CONTENDERS if c in names]
    ratios = {  # column -> (numerator, denominator); "plain" is the faster of the two hand-written steps
        "OpenES/plain": ("evograd OpenES", "plain"),
        "Rolling/plain": ("evograd Rolling", "plain"),
        "rank1/plain": ("OpenES rank 1", "plain"),
        "rank1/OpenES": ("OpenES rank 1", "evograd OpenES"),
        "OpenES/EvoTorch": ("evograd OpenES", "EvoTorch PGPE"),
        "compiled/OpenES": ("OpenES compiled", "evograd OpenES"),
    }
    ratios = {k: v for k, v in ratios.items() if {*v} - {"plain"} <= {*names}}
    print(f"{'P':>5} {'params':>8} " + " ".join(f"{c:>15}" for c in shown + list(ratios)), flush=True)
    with Contenders(names, threads, device) as contenders:
        for pop, sizes, samples in rows:
            rate = contenders.measure(pop, sizes, samples, repeats, **kw)
            rate["plain"] = max(rate[c] for c in PLAIN)
            cells = [f"{rate[c]:15.2f}" for c in shown] + [f"{rate[a] / rate[b]:15.2f}" for a, b in ratios.values()]
            print(f"{pop:5d} {n_params(sizes):8,d} " + " ".join(cells), flush=True)


def rl_table(rows: list, repeats: int, threads: int, device: torch.device, **kw) -> None:
    """The RL-like rows: full-rank and rank-1 OpenES, and their ratio (the issue's target: >= 10 at 1 sample)."""
    print(
        f"{'P':>6} {'params':>9} {'samples':>7} " + " ".join(f"{c:>15}" for c in RL_CONTENDERS) + f" {'rank1/full':>11}"
    )
    with Contenders(list(RL_CONTENDERS), threads, device) as contenders:
        for pop, sizes, samples in rows:
            rate = contenders.measure(pop, sizes, samples, repeats, **kw)
            cells = " ".join(f"{rate[c]:15.3f}" for c in RL_CONTENDERS)
            ratio = rate["OpenES rank 1"] / rate["evograd OpenES"]
            print(f"{pop:6d} {n_params(sizes):9,d} {samples:7d} {cells} {ratio:11.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=7, help="timings per contender and row (default 7)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--rows",
        choices=list(ROWS),
        help="supervised rows. small: the 4,810-parameter MLP only; all: both MLPs (default on a CPU); "
        "gpu: both MLPs at P=1024 and 8192 (default on a GPU); none: skip them",
    )
    parser.add_argument(
        "--rl-rows",
        choices=list(RL_ROWS),
        help="RL-like rows (1 and 8 samples per member). cpu: P=4096 (default on a CPU); "
        "gpu: P=65,536 (default on a GPU); none: skip them",
    )
    parser.add_argument("--rl-repeats", type=int, help="timings per RL-like row (default: --repeats)")
    parser.add_argument(
        "--compiled", action="store_true", help="add OpenES with VmapEvaluator(compile=True) to the supervised rows"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory rows")
    parser.add_argument("--quick", action="store_true", help="check that every row runs: see the module docstring")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: one memory probe, JSON to stdout
    parser.add_argument("--probe-row", help=argparse.SUPPRESS)  # internal: [P, sizes, samples] of the probe
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = torch.device(args.device)
    if args.probe:
        pop, sizes, samples = json.loads(args.probe_row)
        print(json.dumps(memory_probe(args.probe, pop, tuple(sizes), samples, device)))
        return
    gpu = device.type == "cuda"
    rows = ROWS[args.rows or ("small" if args.quick else "gpu" if gpu else "all")]
    rl_rows = RL_ROWS[args.rl_rows or ("gpu" if gpu else "cpu")]
    repeats, timing = (1, {"min_seconds": 0.0}) if args.quick else (args.repeats, {})
    if args.quick:
        rl_rows = [(pop // QUICK, sizes, samples) for pop, sizes, samples in rl_rows]

    names = [n for n in CONTENDERS if n != "OpenES compiled" or args.compiled]
    names = [n for n in names if n != "EvoTorch PGPE" or importlib.util.find_spec("evotorch")]
    where = torch.cuda.get_device_name(device) if gpu else f"{args.threads} threads"
    print(f"torch {torch.__version__}, {where}, device {device}, median of {repeats}; figures in generations/s")
    if rows:
        print(f"\nSupervised rows, batch {BATCH}:")
        supervised_table(rows, names, repeats, args.threads, device, **timing)
        if "EvoTorch PGPE" not in names:
            print("EvoTorch is not installed: its column is skipped.")
    if rl_rows:
        print("\nRL-like rows, few samples per member:")
        rl_table(rl_rows, args.rl_repeats or repeats if not args.quick else 1, args.threads, device, **timing)
    if not args.no_memory:
        print()
        print("\n".join(memory_report(args.threads, device, quick=args.quick)))


if __name__ == "__main__":
    main()
