"""Evaluators: turn ``(center, seeds, mutation)`` into one fitness per member.

Every evaluator scores members in chunks of at most ``chunk_size``, materializing candidates
``center + noise.sample(mutation, seeds)`` a chunk at a time (or, for low-rank mutations, not at
all), so a population of P never needs P × dim floats at once (docs/design.rst, contract 3), and
reports non-finite losses as +inf (contract 6). What differs is how a chunk is scored:

* :class:`SerialEvaluator`: one member at a time through the ordinary module; the reference, and
  the way to score fitness functions that cannot be vectorized (episodic RL, Python-side logic).
* :class:`VmapEvaluator`: the whole chunk at once with ``torch.func.functional_call`` under
  ``vmap``, on the device the center lives on.
* :class:`LowRankEvaluator`: members of a low-rank mutation (:mod:`evograd.lowrank`) a chunk at
  a time without materializing them: the linear layers share one ``x Wᵀ`` and add a rank-r term
  per member.
* :class:`FunctionEvaluator`: a function of flat parameter vectors, e.g. a benchmark function.

All of them count what they spent in ``fe``: forward-pass equivalents (samples pushed through the
network, 1 per member for a plain function), the one name of cost in evograd (contract 8): the
evaluators', :class:`~evograd.HybridOptimizer`'s and :func:`evograd.optimize`'s. ``evaluations``
counts members scored, a count rather than a cost.

**Train mode.** Models are scored in the mode they are in, and a member's fitness is a function of
its seed and the batch alone:

* Normalization layers with running statistics (``nn.BatchNorm1d/2d/3d``, ``nn.SyncBatchNorm``,
  ``nn.InstanceNorm*`` with ``track_running_stats``) in ``train()`` mode normalize each member by its
  own batch statistics, as a training forward pass of that member would, and never update the
  model's running statistics (the user's closure does, once per step, as in plain torch). In
  ``eval()`` mode they use the running statistics.
* Dropout in ``train()`` mode (``nn.Dropout*``, ``nn.AlphaDropout``, ``nn.MultiheadAttention`` with
  ``dropout > 0``) would draw from torch's global generator, so members' fitness would be noise that
  no seed reproduces: it is refused, with what to do, when the evaluator is made and at every call
  (the mode may change in between), unless the evaluator was made with ``dropout="off"``, which
  scores members with those layers switched to eval mode during the call (the model keeps training
  with dropout in the closure). Any other random operation in the forward is refused by ``vmap``
  and reported the same way.

An empty batch (0 samples) is refused: no fitness can be measured on it.

**Threads.** A model evaluator swaps the model's parameters during a call (``functional_call``), so
the evaluators of one model take that model's lock for each call, for each call of the loss
:meth:`~evograd.protocols.ModelEvaluator.objective` returns, and while they are constructed:
threads sharing a model wait for one another and get exactly the single-threaded fitness. A thread
that runs the model itself while others may evaluate it holds :func:`model_lock` meanwhile.
Evaluators without a model take a lock of their own, so their counters stay exact. One lock per
call, never per member.

Each implements the protocols of :mod:`evograd.protocols` it can (docs/design.rst, contract 9): all
are an :class:`~evograd.protocols.Evaluator`; ``SerialEvaluator``, ``VmapEvaluator`` and ``LowRankEvaluator`` are a
:class:`~evograd.protocols.ModelEvaluator` (``model``, ``batch``, ``set_batch``, ``objective``);
``FunctionEvaluator`` is a :class:`~evograd.protocols.VectorEvaluator` (``vector_objective``).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evograd import flat, lowrank, noise, validate
from evograd.shaping import finite_or_worst

__all__ = [
    "model_lock",
    "ChunkedEvaluator",
    "SerialEvaluator",
    "VmapEvaluator",
    "LowRankEvaluator",
    "FunctionEvaluator",
    "default_chunk_size",
    "default_low_rank_chunk_size",
]

Batch = tuple | torch.Tensor
BatchSource = Batch | Callable[[], Batch]


def default_chunk_size(dim: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> int:
    """:class:`VmapEvaluator`'s default chunk: how many candidates of ``dim`` it scores per call.

    On a CPU, as many as fit in 16 MiB, at most 64. Every chunk has a fixed cost (about 0.3 ms for
    a ``vmap`` of ``functional_call`` on this CPU) that small models must spread over many members,
    while large models run faster when a chunk and its activations stay in cache. On 2 EPYC cores at
    batch 256 this picks 64 members for a 4,810-parameter MLP and 41 for a 100,810-parameter one,
    both within 5% of the best chunk size from 24 to 256 and up to 2.2x faster than 256.

    On a GPU, as many as fit in 512 MiB, at most 8192. There every chunk costs a fixed ~2 ms of
    host-side work (``vmap``, kernel launches) whatever its size, so a chunk must be large enough to
    keep the device busy: on an H100 at P=8192, a 4,810-parameter MLP scored in 150 ms in chunks of
    64, 11.9 ms in 1024 and 3.7 ms in 4096; a 100,810-parameter one in 194, 30 and 29 ms
    (``benchmarks/chunk_sweep.py``). The activations of a chunk take memory too: pass a smaller
    ``chunk_size`` for models whose activations dwarf their parameters (convolutions, long
    sequences).

    Examples:
        >>> default_chunk_size(4_810), default_chunk_size(100_810)
        (64, 41)
        >>> default_chunk_size(4_810, device="cuda"), default_chunk_size(100_810, device="cuda")
        (8192, 1331)
    """
    if device is None or torch.device(device).type == "cpu":
        return min(64, noise.chunk_rows(dim, dtype, nbytes=16 << 20))
    return min(8192, noise.chunk_rows(dim, dtype, nbytes=512 << 20))


_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(owner: Any) -> threading.RLock:
    """The lock evaluators of ``owner`` (a model, or an evaluator without one) hold for each call.

    A model evaluator swaps the model's parameters while it scores (``functional_call``); hold
    this lock to run the model yourself while other threads may be evaluating it. Made on first
    use and kept in a registry, not on the evaluator, so evaluators still copy and pickle like
    plain objects. Reentrant.

    Examples:
        >>> model = nn.Linear(2, 1)
        >>> with model_lock(model):  # no evaluator of model scores in another thread meanwhile
        ...     y = model(torch.zeros(1, 2))
        >>> model_lock(model) is model_lock(model)
        True
    """
    with _LOCKS_GUARD:
        lock = _LOCKS.get(owner)
        if lock is None:
            lock = _LOCKS[owner] = threading.RLock()
        return lock


#: Layers whose running statistics a training forward pass updates in place.
RUNNING_STATS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)
#: Layers that draw random numbers in a training forward pass.
DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
DROPOUT_MODES = ("refuse", "off")


def _random_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules of ``model`` that would draw random numbers now: dropout with p > 0 in train mode."""
    found = []
    for name, module in model.named_modules():
        if not module.training:
            continue
        if isinstance(module, DROPOUT) and module.p > 0:
            found.append((name, module))
        elif isinstance(module, nn.MultiheadAttention) and module.dropout > 0:
            found.append((name, module))
    return found


def _random_forward_error(who: str, names: list[str]) -> ValueError:
    where = f" (modules {', '.join(repr(n) for n in names)})" if names else ""
    return ValueError(
        f"{who}: the model draws random numbers in its forward pass{where}, dropout in train() mode, so a "
        "member's fitness would not be a function of its seed; call model.eval() while evaluating, or make the "
        f"evaluator with dropout='off' to score members without dropout while the model trains with it"
    )


_malloc_primed = False


def _prime_malloc() -> None:
    """Once per process: let glibc recycle the blocks an evaluation allocates instead of mapping them anew.

    glibc's malloc takes blocks above ``M_MMAP_THRESHOLD`` (128 KiB at start) straight from the OS
    and returns a free heap top above ``M_TRIM_THRESHOLD``; both thresholds rise only when a mapped
    block is freed, to its size (at most 32 MiB). A chunked evaluation allocates and frees the same
    few activations of a few MiB, chunk after chunk, so in a process that never freed anything
    larger every one of them is mapped afresh and pays a page fault per 4 KiB it touches: measured
    here, 8,000-57,000 page faults per generation, up to 40% of its time, for the MLPs of
    ``benchmarks/throughput.py``. Freeing one 30 MiB block raises the thresholds to 30 and 60 MiB,
    the state glibc reaches by itself once a program frees any block that size; in exchange up to
    about 60 MiB of freed memory may stay resident for reuse. Other allocators are unaffected.
    """
    global _malloc_primed
    if not _malloc_primed:
        _malloc_primed = True
        block = torch.empty(30 << 20, dtype=torch.uint8)  # mapped but never touched: no page faults
        del block  # freeing it is what raises the thresholds


class ChunkedEvaluator:
    """Shared machinery: chunked candidate materialization, cost counters, non-finite handling.

    Subclasses implement :meth:`_score`, which receives a (c, dim) chunk of candidates and the
    context :meth:`_begin` prepared for this call (e.g. the minibatch every member shares), or
    replace :meth:`_score_members` to score chunks of members without materializing them.
    Chunks are written into one buffer per call (see :func:`evograd.noise.iter_rows`), so
    :meth:`_score` must not keep the candidates, unless the subclass sets ``reuses_chunks`` False.
    """

    reuses_chunks = True

    def __init__(self, *, chunk_size: int = 256, layout: flat.Layout | None = None) -> None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size!r} is out of range; allowed integers in [1, inf)")
        self.chunk_size = chunk_size
        self.layout = layout
        self.evaluations = 0
        self.fe = 0

    def __call__(self, center: torch.Tensor, seeds: torch.Tensor, mutation: noise.Mutation) -> torch.Tensor:
        """Fitness (lower is better, non-finite reported as +inf) of ``center`` perturbed by each seed.

        Args:
            center: (dim,) parameter vector; candidates live on its device and dtype.
            seeds: (n,) int64 member seeds.
            mutation: how seeds become perturbations.

        Returns:
            (n,) fitness on ``center``'s device.
        """
        if center.dim() != 1:
            raise ValueError(f"center must be a (dim,) vector, got shape {tuple(center.shape)}")
        if self.layout is not None and center.numel() != self.layout.dim:
            raise ValueError(f"center has {center.numel()} entries but the model has {self.layout.dim} parameters")
        if center.device.type == "cpu":
            _prime_malloc()
        with self._guard():
            return self._evaluate(center, seeds, mutation)

    def _evaluate(self, center: torch.Tensor, seeds: torch.Tensor, mutation: noise.Mutation) -> torch.Tensor:
        """:meth:`__call__` once its checks passed, under :meth:`_guard`."""
        context = self._begin()
        fitness = torch.empty(len(seeds), dtype=center.dtype, device=center.device)
        with torch.no_grad():
            for part, scores in self._score_members(center, seeds, mutation, context):
                fitness[part] = scores.to(fitness.dtype)
        return self._finish(fitness, context)

    def _score_members(
        self, center: torch.Tensor, seeds: torch.Tensor, mutation: noise.Mutation, context: Any
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """The members' fitness a chunk at a time: candidates materialized, then scored by :meth:`_score`."""
        for part, rows in noise.iter_rows(
            mutation,
            seeds,
            center.numel(),
            chunk_size=self.chunk_size,
            device=center.device,
            dtype=center.dtype,
            layout=self.layout,
            reuse=self.reuses_chunks,
        ):
            candidates = rows.add_(center)  # (c, dim)
            yield part, self._score(candidates, context)

    def score(self, candidates: torch.Tensor) -> torch.Tensor:
        """Fitness of explicit (n, dim) candidates (e.g. a DEAP population), scored chunk by chunk.

        Same counting and non-finite handling as a call with seeds; for callers whose candidates
        are not ``center + noise`` rows.
        """
        if candidates.dim() != 2:
            raise ValueError(f"candidates must be an (n, dim) matrix, got shape {tuple(candidates.shape)}")
        if self.layout is not None and candidates.shape[1] != self.layout.dim:
            raise ValueError(
                f"candidates have {candidates.shape[1]} entries but the model has {self.layout.dim} parameters"
            )
        with self._guard():
            context = self._begin()
            fitness = torch.empty(len(candidates), dtype=candidates.dtype, device=candidates.device)
            with torch.no_grad():
                for start in range(0, len(candidates), self.chunk_size):
                    part = slice(start, start + self.chunk_size)
                    fitness[part] = self._score(candidates[part], context).to(fitness.dtype)
            return self._finish(fitness, context)

    def _finish(self, fitness: torch.Tensor, context: Any) -> torch.Tensor:
        """Count what was spent and rank non-finite fitness worst."""
        self.evaluations += len(fitness)
        self.fe += len(fitness) * self._samples(context)
        return finite_or_worst(fitness)

    def _lock(self) -> threading.RLock:
        """The lock a call holds: this evaluator's own; an evaluator of a model returns the model's."""
        return model_lock(self)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Held for a whole call: :meth:`_lock`, and what a subclass adds."""
        with self._lock():
            yield

    def _begin(self) -> Any:
        return None

    def _samples(self, context: Any) -> int:
        """Samples one member's evaluation pushes through the network (1 for a plain function)."""
        return 1

    def _score(self, candidates: torch.Tensor, context: Any) -> torch.Tensor:
        raise NotImplementedError


class _ModelEvaluator(ChunkedEvaluator):
    """An evaluator of a torch model on a batch ``(inputs, targets)`` shared by every member."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor] | None,
        batch: BatchSource | None,
        *,
        chunk_size: int,
        dropout: str = "refuse",
    ) -> None:
        super().__init__(chunk_size=chunk_size, layout=flat.layout_of(model))
        self.model = model
        self.loss_fn = loss_fn
        self.batch = batch
        self.dropout = validate.choice("dropout", dropout, DROPOUT_MODES)
        random = _random_layers(model)
        if random and self.dropout == "refuse":  # refused now, and again at a call if the model changed since
            raise _random_forward_error(type(self).__name__, [name for name, _ in random])

    def _lock(self) -> threading.RLock:
        return model_lock(self.model)

    def set_batch(self, batch: BatchSource) -> None:
        """Score the next calls on ``batch`` (a tuple ``(inputs, targets)`` or a callable returning one)."""
        self.batch = batch

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """The model's lock for the call, and dropout refused or switched off for it (see the module docstring)."""
        with self._lock():
            random = _random_layers(self.model)
            if random and self.dropout == "refuse":
                raise _random_forward_error(type(self).__name__, [name for name, _ in random])
            for _, module in random:
                module.training = False  # dropout="off": restored below, before the lock is released
            try:
                yield
            except RuntimeError as err:
                if "randomness" in str(err) and "vmap" in str(err):  # a random op vmap refused
                    raise _random_forward_error(type(self).__name__, []) from err
                raise
            finally:
                for _, module in random:
                    module.training = True

    def _begin(self) -> tuple:
        if self.batch is None:
            raise ValueError("no batch: pass batch= or call set_batch() before evaluating")
        batch = self.batch() if callable(self.batch) else self.batch
        batch = batch if isinstance(batch, (tuple, list)) else (batch,)
        if len(batch[0]) == 0:
            raise ValueError("batch is empty (0 samples); allowed: a batch of at least one sample")
        return batch

    def _samples(self, context: tuple) -> int:
        return len(context[0])

    def _fixed_tensors(self) -> dict[str, torch.Tensor | None]:
        """Buffers and frozen parameters: shared, unperturbed, by every member.

        The running statistics of normalization layers in train mode are given as ``None``, so they
        normalize by the batch's statistics and update nothing (see the module docstring).
        """
        frozen = {n: p.detach() for n, p in self.model.named_parameters() if not p.requires_grad}
        buffers: dict[str, torch.Tensor | None] = dict(self.model.named_buffers())
        for prefix, module in self.model.named_modules():
            if module.training and isinstance(module, RUNNING_STATS):
                for name in ("running_mean", "running_var", "num_batches_tracked"):
                    key = f"{prefix}.{name}" if prefix else name
                    if key in buffers:
                        buffers[key] = None
        return {**frozen, **buffers}

    def objective(self) -> tuple[Callable[[dict[str, torch.Tensor]], torch.Tensor], int]:
        """The loss as a function of parameters on one batch, and that batch's number of samples.

        For direction sources that need the loss itself rather than a population's fitness
        (forward gradients, SPSA). ``loss(params)`` uses ``params`` (name -> tensor) in place of
        the model's own and the model's current values for the rest; it is differentiable
        (``torch.func.jvp`` works through it) and counts nothing: the caller charges its FE. A
        callable batch is drawn once, here, so every call of ``loss`` sees the same data. Each
        call of ``loss`` holds the model's lock, as a population call does.
        """
        if self.loss_fn is None:
            raise ValueError(f"{type(self).__name__} built with fitness= has no loss on a batch")
        with self._guard():
            batch = self._begin()

        def loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
            with self._guard():
                return self._loss(params, batch)

        return loss, self._samples(batch)

    def _loss(self, params: dict[str, torch.Tensor], batch: tuple) -> torch.Tensor:
        inputs, *rest = batch
        return self.loss_fn(self._forward(params, inputs), *rest)

    def _forward(self, params: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """The model's output on ``inputs`` with ``params`` in place of its trainable parameters."""
        return torch.func.functional_call(self.model, {**params, **self._fixed_tensors()}, (inputs,))


class SerialEvaluator(_ModelEvaluator):
    """The reference evaluator: members scored one at a time.

    Either a loss on a batch: ``SerialEvaluator(model, loss_fn, batch)`` with
    ``loss_fn(model(inputs), targets) -> scalar``; or any fitness of the model:
    ``SerialEvaluator(model, fitness=f)`` with ``f(module) -> float``, called on a private copy of
    the model holding the candidate's parameters (the user's model is never modified; the copy
    takes the model's buffers, frozen parameters and train/eval modes at every call).

    Args:
        model: the network; its trainable parameters define the flat vector.
        loss_fn: ``loss_fn(model(inputs), targets) -> scalar``; or None with ``fitness``.
        batch: ``(inputs, targets)``, or a callable returning one per call.
        fitness: ``f(module) -> float``, instead of ``loss_fn`` and ``batch``.
        chunk_size: members materialized at once.
        dropout: ``"refuse"`` (dropout in train mode is an error) or ``"off"`` (scored without it);
            see the module docstring.

    Examples:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1)
        >>> batch = (torch.ones(4, 2), torch.zeros(4, 1))
        >>> ev = SerialEvaluator(model, torch.nn.functional.mse_loss, batch)
        >>> from evograd import flat, noise
        >>> ev(flat.flatten(model), noise.member_seeds(0, 0, 3), noise.Mutation()).shape
        torch.Size([3])
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        batch: BatchSource | None = None,
        *,
        fitness: Callable[[nn.Module], float] | None = None,
        chunk_size: int = 64,
        dropout: str = "refuse",
    ) -> None:
        if (fitness is None) == (loss_fn is None):
            raise ValueError("pass exactly one of loss_fn (with batch) or fitness")
        with model_lock(model):  # another thread's call swaps the model's parameters out
            super().__init__(model, loss_fn, batch, chunk_size=chunk_size, dropout=dropout)
            self.fitness = fitness
            self._work = copy.deepcopy(model) if fitness is not None else None

    def _begin(self) -> tuple | None:
        if self.fitness is None:
            return super()._begin()
        with torch.no_grad():  # the private copy takes what the model holds now, except the candidates
            for mine, theirs in zip(self._work.buffers(), self.model.buffers()):
                mine.copy_(theirs)
            for mine, theirs in zip(self._work.parameters(), self.model.parameters()):
                if not theirs.requires_grad:
                    mine.copy_(theirs)
        for mine, theirs in zip(self._work.modules(), self.model.modules()):
            mine.training = theirs.training
        return None

    def _samples(self, context: tuple | None) -> int:
        return 1 if context is None else super()._samples(context)

    def _score(self, candidates: torch.Tensor, context: tuple | None) -> torch.Tensor:
        scores = []
        for candidate in candidates:
            if self.fitness is not None:
                flat.assign(self._work, candidate)
                scores.append(float(self.fitness(self._work)))
            else:
                scores.append(self._loss(flat.unflatten(candidate, self.layout), context))
        return torch.as_tensor(scores, dtype=torch.float64) if self.fitness is not None else torch.stack(scores)


class VmapEvaluator(_ModelEvaluator):
    """Members scored a chunk at a time with ``torch.func.vmap`` over ``functional_call``.

    Agrees with :class:`SerialEvaluator` to float tolerance. ``loss_fn(output, targets)`` must be
    vmappable (the ``torch.nn.functional`` losses are) and return a scalar. BatchNorm in train mode
    uses each member's batch statistics; dropout in train mode is refused unless ``dropout="off"``
    (see the module docstring).

    Args:
        model: the network; its trainable parameters define the flat vector.
        loss_fn: ``loss_fn(model(inputs), targets) -> scalar``.
        batch: ``(inputs, targets)``, or a callable returning one per call (a minibatch shared by
            all members of that call).
        chunk_size: members per vectorized call; bounds memory to chunk_size × (dim + activations).
            By default :func:`default_chunk_size` of the model's parameters and their device.
        dropout: ``"refuse"`` (dropout in train mode is an error) or ``"off"`` (scored without it);
            see the module docstring.
        compile: score chunks with a ``torch.compile``-d function (the forward under ``vmap`` and
            the loss). Off by default: measured on this project's 2-core CPU with the
            4,810-parameter MLP (64 members × 256 samples per chunk), compiling took 3 minutes
            and needs a C++ compiler at run time, and every new chunk or batch shape compiles
            again, against a steady-state gain of 1.7x per chunk; turn it on for long runs with
            fixed shapes (``benchmarks/RESULTS.rst``).

    A classifier trained with ``loss_fn=F.cross_entropy`` on (B,) class indices takes a fast
    path: the chunk's logits are computed under ``vmap`` and the cross-entropy outside it, for all
    members at once, in the (member, class, sample) layout that is fast on a CPU (see
    ``_cross_entropy_per_member``); results equal the per-member loss to float tolerance.

    Examples:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1)
        >>> batch = (torch.ones(4, 2), torch.zeros(4, 1))
        >>> ev = VmapEvaluator(model, torch.nn.functional.mse_loss, batch)
        >>> from evograd import flat, noise
        >>> ev(flat.flatten(model), noise.member_seeds(0, 0, 3), noise.Mutation()).shape
        torch.Size([3])
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor],
        batch: BatchSource | None = None,
        *,
        chunk_size: int | None = None,
        dropout: str = "refuse",
        compile: bool = False,
    ) -> None:
        with model_lock(model):  # another thread's call swaps the model's parameters out
            if chunk_size is None:
                layout = flat.layout_of(model)
                trainable = next(p for p in model.parameters() if p.requires_grad)
                chunk_size = default_chunk_size(layout.dim, trainable.dtype, trainable.device)
            super().__init__(model, loss_fn, batch, chunk_size=chunk_size, dropout=dropout)
        compiled = validate.flag("compile", compile)
        self._score_chunk = torch.compile(self._score_chunk) if compiled else self._score_chunk

    def _score(self, candidates: torch.Tensor, context: tuple) -> torch.Tensor:
        return self._score_chunk(candidates, *context)

    def _score_chunk(self, candidates: torch.Tensor, *batch: torch.Tensor) -> torch.Tensor:
        """(c,) losses of (c, dim) candidates on ``batch`` (the function ``compile`` compiles)."""
        params = flat.stacked(candidates, self.layout)  # name -> (c, *shape)
        return self._members_loss(lambda p: self._forward(p, batch[0]), (params,), batch)

    def _members_loss(self, forward: Callable[..., torch.Tensor], members: tuple, batch: tuple) -> torch.Tensor:
        """(c,) losses of a chunk: ``loss_fn(forward(*member), *targets)`` for each member, under ``vmap``.

        ``forward`` maps one member's slice of ``members`` (tensors or dicts of them with a leading
        member dimension) to the model's output. A cross-entropy over class indices is computed
        outside ``vmap``, on all the chunk's logits at once (:func:`_cross_entropy_per_member`).
        """
        _, *targets = batch
        if self.loss_fn is F.cross_entropy and len(targets) == 1 and _class_indices(targets[0]):
            logits = torch.func.vmap(forward)(*members)  # (c, B, classes) for a classifier
            if logits.dim() == 3 and logits.shape[1] == len(targets[0]):
                return _cross_entropy_per_member(logits, targets[0])
            return torch.func.vmap(lambda output: self.loss_fn(output, *targets))(logits)  # other shapes
        return torch.func.vmap(lambda *member: self.loss_fn(forward(*member), *targets))(*members)


class LowRankEvaluator(VmapEvaluator):
    """Low-rank members scored without their weight matrices: a shared ``x Wᵀ`` plus a rank-r term each.

    For a low-rank mutation (``Mutation(rank=r)``, :mod:`evograd.lowrank`), member i's
    ``nn.Linear`` layers compute ``x Wᵀ + b_i + σ/√r (x B_i) A_iᵀ``; ``W + σ/√r A_i B_iᵀ`` is
    never formed. Under ``vmap`` the first product is one matrix product of all the chunk's inputs
    with W, which is read once per chunk instead of once per member, and the second costs
    r·(in + out) per sample. Every other parameter is materialized per member (biases, LayerNorm,
    Embedding, and any 2-d parameter that is not the weight of a plain ``nn.Linear``, such as
    ``nn.MultiheadAttention``'s projections), and everything between (activations, attention,
    residuals) runs under ``vmap`` with a leading member dimension, as in :class:`VmapEvaluator`.
    Memory per call: the center (D), a chunk's draws (c·r·(in + out) per matrix), the other
    modules' materialized parameters and the chunk's activations, never c × D.

    Fitness equals that of the materialized candidates (``center + noise.sample(...)`` under
    :class:`VmapEvaluator`) to float tolerance. The ``nn.Linear`` layers must be plain
    ``nn.Linear`` modules (not subclasses) whose weight is used through their own forward only:
    a weight tied to another module is materialized instead, and code that reads ``layer.weight``
    directly would see the unperturbed center. During a call the evaluator adds a forward hook to
    each such layer of ``model`` and removes it before returning.

    Args:
        model: the network; its trainable parameters define the flat vector.
        loss_fn: ``loss_fn(model(inputs), targets) -> scalar``, vmappable (as for :class:`VmapEvaluator`).
        batch: ``(inputs, targets)``, or a callable returning one per call.
        chunk_size: members per vectorized call. By default :func:`default_low_rank_chunk_size`
            of the batch given here (or 64 without one): chunks of members hold no copies of the
            weights, so they can be far larger than a :class:`VmapEvaluator`'s when members see
            few samples each.
        dropout: as for :class:`VmapEvaluator`.

    Raises:
        ValueError: a call with a full-rank mutation (``mutation.rank`` None: use
            :class:`VmapEvaluator`), or a mutation resolved for another model.

    Examples:
        >>> import torch
        >>> from evograd import flat, noise
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        >>> batch = (torch.ones(2, 4), torch.zeros(2, 1))
        >>> mutation = noise.Mutation(sigma=0.1, rank=1).resolve(model)
        >>> seeds = noise.member_seeds(0, 0, 3)
        >>> fast = LowRankEvaluator(model, torch.nn.functional.mse_loss, batch)(flat.flatten(model), seeds, mutation)
        >>> slow = VmapEvaluator(model, torch.nn.functional.mse_loss, batch)(flat.flatten(model), seeds, mutation)
        >>> torch.allclose(fast, slow)
        True

    References:
        Sarkar, Fellows, Duque et al. (2025), Evolution strategies at the hyperscale (EGGROLL).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor],
        batch: BatchSource | None = None,
        *,
        chunk_size: int | None = None,
        dropout: str = "refuse",
    ) -> None:
        if chunk_size is None:
            chunk_size = default_low_rank_chunk_size(None if batch is None or callable(batch) else batch)
        super().__init__(model, loss_fn, batch, chunk_size=chunk_size, dropout=dropout)
        self._linears = _factored_linears(model, self.layout)
        self._factors: dict[str, list[torch.Tensor]] | None = None  # a member's [kA, B(, δb)] per layer, in a call

    def _score_members(
        self, center: torch.Tensor, seeds: torch.Tensor, mutation: noise.Mutation, context: tuple
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        if mutation.rank is None:
            raise ValueError(
                "mutation.rank=None: LowRankEvaluator scores low-rank mutations; use VmapEvaluator for full rank"
            )
        if mutation.layout is not None and mutation.layout != self.layout:
            raise ValueError("mutation.layout is another model's: resolve the mutation with this evaluator's model")
        hooks = [
            module.register_forward_hook(functools.partial(self._add_low_rank, name))
            for name, (module, _) in self._linears.items()
        ]
        try:
            for part, members in noise.iter_members(
                mutation,
                seeds,
                center.numel(),
                chunk_size=self.chunk_size,
                device=center.device,
                dtype=center.dtype,
                layout=self.layout,
            ):
                yield part, self._score_factored(center, members, context)
        finally:
            for hook in hooks:
                hook.remove()

    def _score_factored(self, center: torch.Tensor, members: lowrank.Members, context: tuple) -> torch.Tensor:
        """Fitness of a chunk of low-rank members: shared weights and factors for the linear layers."""
        biases = {bias: weight for weight, (_, bias) in self._linears.items() if bias is not None}
        shared, stacked, factors, bias_steps = {}, {}, {}, {}
        for block in members.factors.blocks:
            value = center[block.coords].view(block.shape)
            if block.name in self._linears:
                shared[block.name] = value  # (out, in), one for the whole chunk
                a = block.a(members.draws) * members.matrix_coef(block)[:, None, None]  # (c, out, r) σ/√r·A
                factors[block.name] = [a, block.b(members.draws)]  # (c, out, r), (c, in, r)
            elif block.name in biases:
                shared[block.name] = value  # (out,)
                bias_steps[biases[block.name]] = members.perturbation(block)  # (c, out)
            else:
                stacked[block.name] = value + members.perturbation(block)  # (c, *shape)
        for weight, step in bias_steps.items():
            factors[weight].append(step)  # (c, out) δb, added by the layer's hook

        def member_forward(params: dict[str, torch.Tensor], member: dict) -> torch.Tensor:
            self._factors = member  # read by the hooks of the linear layers
            return self._forward({**shared, **params}, context[0])

        try:
            return self._members_loss(member_forward, (stacked, factors), context)
        finally:
            self._factors = None

    def _add_low_rank(self, name: str, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        """Forward hook of a linear layer: ``x Wᵀ + b`` (shared) plus the member's ``σ/√r (x B) Aᵀ + δb``.

        ``x B`` is computed as ``(Bᵀ xᵀ)ᵀ``: under ``vmap`` that is one matrix product of all
        members' Bᵀ with a shared input, and a faster batched product than ``x B`` otherwise (a
        product with r = 1 columns is a slow kernel on CPUs). At rank 1 the outer product and the
        sum are one ``addcmul``.
        """
        if self._factors is None:  # a call that is not a low-rank chunk (e.g. explicit candidates)
            return None
        a, b, *bias_step = self._factors[name]  # (out, r), (in, r) and the (out,) δb of one member under vmap
        x = args[0]  # (..., in)
        xb = (b.T @ x.mT).mT if x.dim() > 1 else x @ b  # (..., r)
        if a.shape[-1] == 1:
            result = torch.addcmul(output, xb, a[:, 0])  # (..., out)
        else:
            result = output + xb @ a.T  # (..., out)
        return result + bias_step[0] if bias_step else result


def _class_indices(targets: object) -> bool:
    """Whether ``targets`` are a (B,) vector of class indices (the targets of a classifier's cross-entropy)."""
    return isinstance(targets, torch.Tensor) and targets.dim() == 1 and targets.dtype == torch.long


def _cross_entropy_per_member(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy(logits[i], targets)`` for every member i at once, in the layout that is fast on a CPU.

    ``F.cross_entropy`` of a (member, sample, class) tensor, under ``vmap`` or flattened to
    (member·sample, class), runs ``log_softmax`` over a last dimension of a few classes, a slow
    kernel on CPUs (about 15x slower per number than over a long dimension, docs in
    ``benchmarks/RESULTS.rst``). Here the class dimension comes second, (member, class, sample),
    as a transposed view: measured on a 64 × 256 × 10 chunk, 2.0x faster than under ``vmap`` and
    as fast as first copying it into that layout (the copy costs what the faster kernel saves).
    Samples whose target is ``ignore_index`` (-100) are left out of the mean, as
    ``F.cross_entropy`` does.

    Args:
        logits: (c, B, classes) outputs of c members on the same B samples.
        targets: (B,) class indices.

    Returns:
        (c,) mean cross-entropy of each member.
    """
    members, samples, _ = logits.shape
    per_sample = F.cross_entropy(logits.transpose(1, 2), targets.expand(members, samples), reduction="none")  # (c, B)
    return per_sample.sum(1) / (targets != -100).sum()  # (c,)


def default_low_rank_chunk_size(batch: Batch | None) -> int:
    """:class:`LowRankEvaluator`'s default chunk: members per vectorized call, from the samples each sees.

    A low-rank chunk holds no weight copies, so its memory is its activations: about 16,384
    member-samples per chunk keeps them small (at most 1,024 members, at least 16). Without a batch
    (given later, or a callable) 64.

    Examples:
        >>> import torch
        >>> default_low_rank_chunk_size((torch.zeros(1, 3),)), default_low_rank_chunk_size((torch.zeros(256, 3),))
        (1024, 64)
    """
    if batch is None:
        return 64
    inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
    return max(16, min(1024, 16_384 // max(1, len(inputs))))


def _factored_linears(model: nn.Module, layout: flat.Layout) -> dict[str, tuple[nn.Module, str | None]]:
    """The plain ``nn.Linear`` layers whose weight is trainable and tied to no other module.

    Returns:
        By weight name: the layer, and its bias's name if that is trainable and untied too (else None).
    """
    uses = collections.Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))

    def own(name: str, param: torch.Tensor | None) -> bool:
        return param is not None and name in layout.slices and uses[id(param)] == 1

    found = {}
    for prefix, module in model.named_modules():
        if type(module) is nn.Linear:
            weight, bias = (f"{prefix}.weight", f"{prefix}.bias") if prefix else ("weight", "bias")
            if own(weight, module.weight):
                found[weight] = (module, bias if own(bias, module.bias) else None)
    return found


class FunctionEvaluator(ChunkedEvaluator):
    """Fitness of flat parameter vectors: ``fn((c, dim) candidates) -> (c,)``.

    For benchmark functions and any objective already written on vectors.

    Examples:
        >>> from evograd import noise
        >>> sphere = FunctionEvaluator(lambda x: (x ** 2).sum(1))
        >>> sphere(torch.zeros(3), noise.member_seeds(0, 0, 2), noise.Mutation()).shape
        torch.Size([2])
    """

    reuses_chunks = False  # fn is user code, free to keep the candidates it is given

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *, chunk_size: int = 1024) -> None:
        super().__init__(chunk_size=chunk_size)
        self.fn = fn

    def vector_objective(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
        """``fn`` of one (dim,) vector, and the samples a call costs (1); it counts nothing.

        Examples:
            >>> loss, samples = FunctionEvaluator(lambda x: (x ** 2).sum(1)).vector_objective()
            >>> loss(torch.tensor([1.0, 2.0])), samples
            (tensor(5.), 1)
        """
        return (lambda vector: self._score(vector[None], None)[0]), 1

    def _score(self, candidates: torch.Tensor, context: None) -> torch.Tensor:
        scores = self.fn(candidates)
        if scores.shape != candidates.shape[:1]:
            raise ValueError(
                f"fn must return one fitness per candidate, shape ({len(candidates)},), got {tuple(scores.shape)}"
            )
        return scores
