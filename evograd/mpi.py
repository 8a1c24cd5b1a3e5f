"""Distributed fitness evaluation over MPI ranks (SPMD), with mpi4py.

Every rank runs the same training loop. :class:`MPIEvaluator` wraps an ordinary evaluator: each
rank scores its share of the seeds, the ranks all-gather the fitness scalars, and every rank
returns the full ``(n,)`` vector, so the deterministic ``tell`` (docs/design.rst, contract 4) moves every
rank's state identically. Only fitness values cross the wire, O(population) numbers per
generation whatever the model size; parameters never do::

    evaluate = MPIEvaluator(VmapEvaluator(model, loss, chunk_size=32))
    for generation in range(generations):
        seeds = strategy.ask(state)
        state, metrics = strategy.tell(state, seeds, evaluate(state.center, seeds, state.mutation))
        evaluate.check_sync(state, state.generation)   # a collective every ``sync_every`` generations

Launch with ``mpiexec -n 4 python -m mpi4py train.py`` (or ``srun python -m mpi4py train.py``).
The ``-m mpi4py`` runner turns an uncaught exception on any rank into ``MPI_Abort``: the job ends
with a non-zero exit code and that rank's traceback instead of leaving the other ranks waiting
forever in a collective, which is what plain ``python train.py`` does.

Bit-for-bit reproducibility across rank counts. A member's fitness must not depend on which other
members share its chunk, but vectorized evaluation does not guarantee that: torch picks matrix
kernels by shape, and measured here a 20-50-1 MLP under :class:`~evograd.VmapEvaluator` scored a
member differently in its last bit when it was alone in a chunk of one than inside a larger chunk.
So ranks receive whole *blocks* of ``block`` consecutive members (by default the local evaluator's
``chunk_size``), each rank's share starts at a multiple of ``block``, and the local evaluator's
chunks are therefore exactly the chunks a single process would form. The price: shares are
balanced to within one block, so for balanced ranks pick ``chunk_size <= population / ranks``
(the first call warns when a block is larger than a fair share); ``block=1`` balances to within
one member, but then results can differ from a single process in the last bits.

The hybrid optimizer over MPI. ``HybridOptimizer(..., evaluator=MPIEvaluator(VmapEvaluator(model,
loss)))`` with ``step(closure, batch=...)`` runs every direction source on every rank, each rank
holding the same model and handing the same batch. A design decision keeps the result the same bit
for bit on any number of ranks: populations (:func:`~evograd.directions.improvement`,
:func:`~evograd.directions.es`) are split across the ranks by :class:`MPIEvaluator`, while the
closure (backprop, feedback rules) and the loss of :func:`~evograd.directions.spsa` and
:func:`~evograd.directions.forward_gradient` are computed in full on every rank, on the same batch,
with the same result and no reduction whose float order depends on the rank count. The optimizer's
FE counts the algorithmic cost once, not once per rank (see ``mpi/hybrid.py``)::

    evaluator = MPIEvaluator(VmapEvaluator(model, F.cross_entropy, chunk_size=16))
    optimizer = HybridOptimizer(model.parameters(), direction, evaluator=evaluator, lr=0.1)
    for step in range(steps):
        x, y = batch_of(seed, step)                   # the same on every rank
        optimizer.step(closure, batch=(x, y))

A sharded update. Exchanging fitness only leaves every rank repeating the whole update, ``P·D``
regenerated coordinates per generation. ``strategy.replace(update=ShardedUpdate())`` shares it:
each rank regenerates only its coordinates of every weighted row (a slice of a row is drawn without
the rest, :func:`evograd.noise.iter_rows`), sums them, and one ``Allgatherv`` of D floats assembles
the sum on every rank, so a rank's update work is ``P·D/N``. The coordinates are cut into a fixed
partition of ``block``-coordinate blocks that does not depend on N, ranks own whole blocks, and each
coordinate is summed over the same chunks of members in the same order as in one process, so the
result is the one-process result bit for bit on any number of ranks. Row norms (the ``"slope"``
weighting of :class:`~evograd.RollingImprovement`, ``"loguniform"`` rows) need whole rows: each
rank computes those of a share of the members, the same bits as one process, and the ranks
all-gather them (P floats).

mpi4py is imported only when a communicator is needed; without it (or without an MPI library) the
error names the ``mpi`` extra.

References:
    Salimans, Ho, Chen, Sidor & Sutskever (2017), Evolution strategies as a scalable alternative to
    reinforcement learning (seeds and fitness scalars are all the workers exchange).
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from evograd import noise, tree, validate
from evograd.collectives import Collectives, PositionError, resolve_timeout
from evograd.evaluate import ChunkedEvaluator
from evograd.protocols import (
    Batch,
    Evaluator,
    ModelEvaluator,
    ParamsLoss,
    StatisticsEvaluator,
    VectorEvaluator,
    VectorLoss,
)

__all__ = [
    "MPIEvaluator",
    "MPIModelEvaluator",
    "MPIVectorEvaluator",
    "PositionError",
    "ShardedUpdate",
    "SyncError",
    "allreduce_mean_",
    "check_settings",
    "check_sync",
    "coordinate_shares",
    "split",
    "state_digest",
]


def _mpi() -> Any:
    """The ``mpi4py.MPI`` module, or an ImportError that names the extra to install."""
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as err:  # RuntimeError: mpi4py found, no MPI library to load
        raise ImportError(
            "evograd.mpi needs mpi4py and an MPI library: pip install 'evograd-torch[mpi]' "
            "(on a cluster, pip install mpi4py against the system MPI instead; see "
            f"mpi/README.rst). Import failed with: {err}"
        ) from err
    return MPI


def _world(comm: Any) -> Any:
    return _mpi().COMM_WORLD if comm is None else comm


class SyncError(RuntimeError):
    """Ranks that should hold identical state do not (raised on every rank at once)."""


def split(n: int, parts: int, *, block: int = 1) -> list[range]:
    """Contiguous, balanced shares of ``range(n)`` for ``parts`` ranks, cut at multiples of ``block``.

    Every index lands in exactly one share, in order. With ``block=1`` share sizes differ by at
    most one; with a larger block every cut except the end ``n`` is a multiple of ``block`` and
    each share is within one block of ``n / parts``. Shares may be empty (more ranks than blocks).

    Args:
        n: number of members, >= 0.
        parts: number of ranks, >= 1.
        block: cut granularity, >= 1.

    Returns:
        ``parts`` ranges, the share of rank ``r`` at position ``r``.

    Raises:
        ValueError: an argument out of range, naming it.

    Examples:
        >>> split(10, 3)
        [range(0, 3), range(3, 7), range(7, 10)]
        >>> split(257, 2, block=32)
        [range(0, 128), range(128, 257)]
    """
    for name, value, low in (("n", n, 0), ("parts", parts, 1), ("block", block, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}={value!r} is out of range; allowed integers in [{low}, inf)")
    # cut r sits at r*n/parts rounded to the nearest multiple of block (integer arithmetic, no floats)
    cuts = [min(n, block * ((2 * r * n + parts * block) // (2 * parts * block))) for r in range(parts)] + [n]
    return [range(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:])]


def coordinate_shares(dim: int, parts: int, *, block: int) -> list[range]:
    """Each rank's coordinates of a sharded update: whole blocks of a fixed partition of ``range(dim)``.

    The blocks (``[0, block)``, ``[block, 2·block)``, ..., the last one shorter) do not depend on
    ``parts``; rank ``r`` owns a contiguous run of them, balanced to within one block (ranks beyond
    the number of blocks own none).

    Examples:
        >>> coordinate_shares(10, 3, block=2)
        [range(0, 4), range(4, 6), range(6, 10)]
        >>> [len(share) for share in coordinate_shares(100_810, 3, block=1024)]
        [33792, 33792, 33226]
    """
    return split(dim, parts, block=block)


def _scalar(obj: Any) -> bytes:
    """The bytes of a leaf that is not a tensor (None, bool, int, float, str): repr is exact for floats."""
    return f"{type(obj).__name__}:{obj!r};".encode()


def state_digest(obj: Any) -> int:
    """A 64-bit digest of a tensor, a strategy state or a nested container of them.

    Equal inputs (same values, dtypes, shapes and structure) give equal digests on every rank and
    platform; a change in any bit of any tensor, or in any number such as ``mutation.sigma``, changes
    it.

    Examples:
        >>> a = torch.arange(4.0)
        >>> state_digest(a) == state_digest(a.clone()), state_digest(a) == state_digest(a + 1e-7)
        (True, False)
    """
    hasher = hashlib.blake2b(digest_size=8)
    nodes: dict[tree.Path, Any] = {}
    for path, node in tree.walk(obj):  # parents first: each child's key is hashed as its parent dictates
        nodes[path] = node
        if path:
            parent, key = nodes[path[:-1]], path[-1]
            if tree.is_dataclass(parent):
                hasher.update(key.encode())
            elif isinstance(parent, dict):
                hasher.update(_scalar(key))
        if isinstance(node, torch.Tensor):
            data = node.detach().cpu().contiguous().reshape(-1)
            hasher.update(f"tensor{node.dtype}{tuple(node.shape)}".encode())
            hasher.update(data.view(torch.uint8).numpy().tobytes())
        elif tree.is_dataclass(node):
            hasher.update(type(node).__name__.encode())
        elif isinstance(node, dict):
            hasher.update(b"dict")
        elif isinstance(node, (list, tuple)):
            hasher.update(f"{type(node).__name__}{len(node)}".encode())
        else:
            hasher.update(_scalar(node))
    return int.from_bytes(hasher.digest(), "little")


def _collectives(comm: Any, timeout: float | None) -> Collectives | None:
    """The deadline-guarded collectives of ``comm``, or None for a single rank (nothing to wait for)."""
    return Collectives(comm, timeout=timeout) if comm.Get_size() > 1 else None


def check_sync(obj: Any, *, generation: int, comm: Any = None, timeout: float | None = None) -> int:
    """Check that every rank holds the same ``obj``; a collective call, made by all ranks together.

    Each rank hashes ``obj`` (see :func:`state_digest`) and the ranks all-gather the 8-byte digests,
    with a deadline (see :mod:`evograd.collectives`).

    Args:
        obj: what must agree: usually the strategy state (center, estimate, optimizer state, sigma).
        generation: reported in the error.
        comm: an mpi4py communicator (default ``MPI.COMM_WORLD``).
        timeout: seconds to wait for the other ranks before aborting the job (default
            ``$EVOGRAD_MPI_TIMEOUT`` or 300).

    Returns:
        The common digest.

    Raises:
        SyncError: on every rank when any digest differs, naming the generation and the ranks
            outside the largest group of agreeing ranks.
        PositionError: on every rank when the ranks are not all in this check at this generation.
    """
    comm = _world(comm)
    return _check_digests(obj, generation, comm, _collectives(comm, timeout))


def _check_digests(obj: Any, generation: int, comm: Any, collectives: Collectives | None) -> int:
    digests = np.empty(comm.Get_size(), dtype=np.uint64)
    mine = np.array([state_digest(obj)], dtype=np.uint64)
    if collectives is None:
        comm.Allgather(mine, digests)
    else:
        collectives.allgather(mine, digests, kind="sync check", generation=generation)
    groups = collections.defaultdict(list)
    for rank, digest in enumerate(digests.tolist()):
        groups[digest].append(rank)
    if len(groups) > 1:
        reference = max(groups.values(), key=len)  # ties: the group of the lowest rank (insertion order)
        differing = [rank for rank in range(len(digests)) if rank not in reference]
        detail = ", ".join(f"ranks {ranks}: {digest:016x}" for digest, ranks in groups.items())
        raise SyncError(
            f"ranks out of sync at generation {generation}: rank(s) {differing} differ from "
            f"rank(s) {reference} (state digests {detail})"
        )
    return int(digests[0])


def check_settings(
    settings: Mapping[str, Any], *, comm: Any = None, generation: int = 0, timeout: float | None = None
) -> None:
    """Check that every rank runs with the same settings and data; a collective call.

    Call it once before training, with everything the ranks must share: the task, batch size,
    budget, generations, sync interval, seed, and a fingerprint of the data (e.g.
    ``state_digest(train_tensors)``), so that ranks that would silently compute different things end
    the job at once instead of finishing "in sync" with a wrong result. Values are compared as
    JSON (tensors by :func:`state_digest`).

    Args:
        settings: field name -> value (numbers, strings, None, bools, lists, tensors).
        comm: an mpi4py communicator (default ``MPI.COMM_WORLD``).
        generation: reported in the error.
        timeout: seconds to wait for the other ranks (see :func:`check_sync`).

    Raises:
        SyncError: on every rank when any field differs, naming each differing field with the
            value of every rank.
        TypeError: ``settings`` is not a mapping of str keys.

    Examples:
        >>> check_settings({"task": "digits", "batch_size": 128})  # doctest: +SKIP
    """
    if not isinstance(settings, Mapping) or not all(isinstance(key, str) for key in settings):
        raise TypeError(f"settings must be a mapping of str field names to values, got {type(settings).__name__}")
    mine = {key: _setting(value) for key, value in sorted(settings.items())}
    comm = _world(comm)
    collectives = _collectives(comm, timeout)
    if collectives is None:
        return
    data = json.dumps(mine, sort_keys=True).encode()
    texts = collectives.allgather_bytes(data, kind="settings check", generation=generation)
    everyone = [json.loads(text) for text in texts]
    problems = []
    for field in sorted(set().union(*everyone)):
        values = [ranks.get(field, "<missing>") for ranks in everyone]
        if any(value != values[0] for value in values):
            groups: dict[str, list[int]] = collections.defaultdict(list)
            for rank, value in enumerate(values):
                groups[json.dumps(value)].append(rank)
            problems.append(f"{field} (" + ", ".join(f"rank(s) {r}: {v}" for v, r in groups.items()) + ")")
    if problems:
        raise SyncError(f"ranks run with different settings at generation {generation}: " + "; ".join(problems))


def _setting(value: Any) -> Any:
    """A setting as JSON-ready data: tensors and arrays by digest, containers element by element."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        tensor = torch.as_tensor(value)
        return f"digest {state_digest(tensor):016x} of {tuple(tensor.shape)} {tensor.dtype}"
    if isinstance(value, Mapping):
        return {str(key): _setting(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_setting(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def allreduce_mean_(
    tensors: Iterable[torch.Tensor | None], comm: Any = None, *, generation: int = 0, timeout: float | None = None
) -> None:
    """Average tensors across ranks in place (data-parallel gradients), with one ``Allreduce`` per dtype.

    Every rank must pass the same shapes in the same order. ``None`` entries (parameters without a
    gradient) are skipped. Tensors are packed into one flat host buffer per reduction dtype (float16
    and bfloat16 are summed in float32, other dtypes in their own), summed with ``MPI.SUM`` and
    divided by the number of ranks; every rank receives the same bits.

    Args:
        tensors: floating tensors, e.g. ``[p.grad for p in model.parameters()]``.
        comm: an mpi4py communicator (default ``MPI.COMM_WORLD``).
        generation: the step, reported if a rank does not arrive in time.
        timeout: seconds to wait for the other ranks (see :func:`check_sync`).

    Raises:
        ValueError: a tensor is not floating point.

    Examples:
        >>> grads = [torch.ones(3), None]
        >>> allreduce_mean_(grads)  # doctest: +SKIP
    """
    MPI, comm = _mpi(), _world(comm)
    groups: dict[torch.dtype, list[torch.Tensor]] = collections.defaultdict(list)
    for tensor in tensors:
        if tensor is None:
            continue
        if not tensor.is_floating_point():
            raise ValueError(f"tensors must be floating point, got dtype {tensor.dtype}")
        groups[torch.promote_types(tensor.dtype, torch.float32)].append(tensor)
    size = comm.Get_size()
    collectives = _collectives(comm, timeout)
    for dtype, group in groups.items():
        flat = torch.cat([t.detach().reshape(-1).to(device="cpu", dtype=dtype) for t in group])  # (total,)
        if collectives is None:
            comm.Allreduce(MPI.IN_PLACE, flat.numpy(), op=MPI.SUM)
        else:
            collectives.allreduce_sum(flat.numpy(), kind="gradient average", generation=generation)
        flat /= size
        start = 0
        for t in group:
            t.detach().copy_(flat[start : start + t.numel()].view(t.shape))
            start += t.numel()


def _allgatherv(
    comm: Any, collectives: Collectives | None, mine: torch.Tensor, counts: list[int], *, kind: str, call: int
) -> torch.Tensor:
    """Every rank's ``mine`` (a 1-d CPU tensor, ``counts[r]`` entries on rank ``r``), concatenated in rank order.

    Through ``collectives`` (with its deadline, at position ``(call, kind, sum(counts))``) when there
    are several ranks, else a plain ``Allgatherv`` of one rank.
    """
    MPI = _mpi()
    send = mine.contiguous().numpy()
    itemsize = send.dtype.itemsize
    gathered = np.empty(sum(counts), dtype=send.dtype)
    offsets = np.cumsum([0] + counts[:-1]).tolist()
    receive = [gathered.view(np.uint8), [c * itemsize for c in counts], [o * itemsize for o in offsets], MPI.BYTE]
    if collectives is None:
        comm.Allgatherv(send.view(np.uint8), receive)
    else:
        collectives.allgatherv(send.view(np.uint8), receive, kind=kind, generation=call, size=sum(counts))
    return torch.from_numpy(gathered)


class ShardedUpdate:
    """A strategy's update sum shared by MPI ranks: each regenerates only its coordinates of every row.

    An :class:`evograd.protocols.WeightedSum`: ``OpenES(..., update=ShardedUpdate())`` (any seed
    strategy) has every rank sum its own coordinates (:func:`coordinate_shares`), and an
    ``Allgatherv`` of D floats hands every rank the whole sum. Equal bit for bit to the one-process
    sum with the same ``chunk_size``, on any number of ranks (see the module docstring), so the
    strategy's state stays in lockstep and :meth:`MPIEvaluator.check_sync` still holds. Per
    generation a rank regenerates ``P·D/N`` coordinates (plus ``P·D/N`` more when the update needs
    row norms) instead of ``P·D``; the rest of ``tell`` (an optimizer step on D numbers) is still
    repeated on every rank.

    A collective: every rank's strategy must call it in the same order, as every rank's ``tell``
    does. With one member chunk per call of ``chunk_size`` rows, a slice of ``D/N`` coordinates is a
    small piece of work; at large N a larger ``chunk_size`` than the default (which is sized for
    whole rows) cuts the per-chunk overhead, and changes the bits the same way in one process.

    Its all-gathers run through :class:`evograd.collectives.Collectives`, like :class:`MPIEvaluator`'s:
    a rank that dies, stops or leaves early during an update ends the job within the deadline,
    named with the call (``the sharded update of call C``, calls counted from 0 on every rank; the
    :class:`~evograd.protocols.WeightedSum` seam does not pass the generation).

    Args:
        comm: an mpi4py communicator (default ``MPI.COMM_WORLD``).
        block: coordinates per block of the fixed partition; a rank owns whole blocks, so N ranks
            share the work evenly while ``D / block >= N``.
        timeout: seconds each all-gather waits for the other ranks before the job is aborted with a
            message naming the missing rank(s) and the call (default ``$EVOGRAD_MPI_TIMEOUT`` or
            300; see :mod:`evograd.collectives`).

    Attributes:
        regenerated: coordinates of noise rows this rank has drawn (slices and whole rows).
        calls: updates formed so far (the number the deadline's messages report).

    Raises:
        ValueError: ``block`` or ``timeout`` out of range.
        ImportError: mpi4py or an MPI library is missing and no ``comm`` was given.

    Examples:
        >>> from evograd import OpenES, Mutation
        >>> es = OpenES(size=64, mutation=Mutation(antithetic=True), update=ShardedUpdate())  # doctest: +SKIP
    """

    def __init__(self, comm: Any = None, *, block: int = 1024, timeout: float | None = None) -> None:
        self.block = validate.integer("block", block, low=1)
        self.timeout = resolve_timeout(timeout)
        self.comm = _world(comm)
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.regenerated = 0
        self.calls = 0
        self._collectives = _collectives(self.comm, self.timeout)

    def __repr__(self) -> str:
        return f"ShardedUpdate(rank={self.rank}, size={self.size}, block={self.block})"

    def __call__(
        self,
        mutation: noise.Mutation,
        seeds: torch.Tensor,
        weights: torch.Tensor,
        dim: int,
        *,
        norm_power: float = 0.0,
        chunk_size: int | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        with_norms: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The (dim,) sum on every rank, and the (n,) row norms (None when not asked for nor needed).

        Raises:
            ValueError: ``weights`` do not match ``seeds``.
        """
        weights = torch.as_tensor(weights)
        if weights.shape != (len(seeds),):
            raise ValueError(f"weights must have shape ({len(seeds)},), got {tuple(weights.shape)}")
        device = torch.device("cpu") if device is None else torch.device(device)
        norms = directions = None
        if with_norms or norm_power or mutation.kind == "loguniform":
            norms, directions = self._norms(mutation, seeds, weights, dim, chunk_size, device, dtype)
        mine = coordinate_shares(dim, self.size, block=self.block)[self.rank]
        part = torch.zeros(0, dtype=dtype)
        if len(mine):
            part, _ = noise.weighted_sum(
                mutation,
                seeds,
                weights,
                dim,
                norm_power=norm_power,
                chunk_size=chunk_size,
                device=device,
                dtype=dtype,
                columns=slice(mine.start, mine.stop),
                norms=norms,
                directions=directions,
            )  # (len(mine),)
            self.regenerated += int((weights != 0).sum()) * len(mine)
        counts = [len(share) for share in coordinate_shares(dim, self.size, block=self.block)]
        gathered = _allgatherv(self.comm, self._collectives, part.cpu(), counts, kind="sharded update", call=self.calls)
        self.calls += 1
        return gathered.to(device), norms if (with_norms or norm_power) else None  # (dim,), (n,)

    def _norms(
        self,
        mutation: noise.Mutation,
        seeds: torch.Tensor,
        weights: torch.Tensor,
        dim: int,
        chunk_size: int | None,
        device: torch.device,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The (n,) norms of the weighted rows (and their window norms): a share of them per rank, all-gathered."""
        active = torch.nonzero(weights != 0).reshape(-1).cpu()  # (k,)
        shares = split(len(active), self.size)
        mine = shares[self.rank]
        norms, directions = noise.row_norms(
            mutation, seeds[active[mine.start : mine.stop]], dim, chunk_size=chunk_size, device=device, dtype=dtype
        )  # (len(mine),) each
        self.regenerated += len(mine) * dim
        both = torch.cat([norms] if directions is None else [norms, directions]).cpu().double()  # exact for floats
        width = 1 if directions is None else 2
        counts = [len(share) * width for share in shares]
        gathered = _allgatherv(self.comm, self._collectives, both, counts, kind="sharded norms", call=self.calls)
        parts = [gathered[width * s.start : width * s.stop].view(width, len(s)) for s in shares]
        found = torch.cat(parts, dim=1).to(device=device, dtype=dtype)  # (width, k)
        full = torch.zeros(width, len(seeds), device=device, dtype=dtype)  # (width, n)
        full[:, active.to(device)] = found
        return full[0], (full[1] if directions is not None else None)


class MPIEvaluator:
    """Evaluate a population across MPI ranks; every rank returns the whole ``(n,)`` fitness.

    Each rank calls ``local(center, its_seeds, mutation)`` once per call, even when its share is
    empty, so per-call side effects of the local evaluator, such as drawing the generation's
    minibatch, stay in step on every rank. The batch must therefore be the same on every rank:
    derive it from ``(seed, generation)`` (``set_batch(...)`` each generation) or from a generator
    seeded identically on every rank. The ranks then all-gather the fitness values (``Allgatherv``
    of float64, exact for every float dtype) and the rank's forward-pass count. A local
    :class:`~evograd.protocols.StatisticsEvaluator` (e.g. episodes with observation normalization)
    also sends each member's row of statistics with its fitness, and every rank merges the whole
    population's rows in member order (``local.absorb``): the same bits as one process.

    The wrapper declares what it wraps (docs/design.rst, contract 9): ``MPIEvaluator(local)`` is an
    :class:`MPIModelEvaluator` when ``local`` is a :class:`~evograd.protocols.ModelEvaluator`, an
    :class:`MPIVectorEvaluator` when it is a :class:`~evograd.protocols.VectorEvaluator`, and a
    plain :class:`MPIEvaluator` otherwise; the subclasses forward the loss and the batch to
    ``local``, so a :class:`~evograd.HybridOptimizer` runs every direction source over MPI.

    Args:
        local: the evaluator of one rank's share, e.g. a :class:`~evograd.VmapEvaluator`.
        comm: an mpi4py communicator (default ``MPI.COMM_WORLD``); anything with ``Get_rank``,
            ``Get_size``, ``Allgatherv`` and ``Allgather`` works.
        block: members handed out together (see the module docstring); default the local
            evaluator's ``chunk_size`` when it is a :class:`~evograd.ChunkedEvaluator`
            (bit-identical to one process with that evaluator), else 1.
        sync_every: :meth:`check_sync` compares the ranks' states every this many generations.
        timeout: seconds each collective waits for the other ranks before the job is aborted with
            a message naming the missing rank(s) and the generation (default
            ``$EVOGRAD_MPI_TIMEOUT`` or 300; see :mod:`evograd.collectives`).

    Attributes:
        evaluations: members scored, summed over all ranks (the same number on every rank).
        fe: forward-pass equivalents spent, summed over all ranks: the population's
            cost, counted once. ``self.local`` keeps this rank's own counters.

    Raises:
        TypeError: ``local`` is not an :class:`~evograd.protocols.Evaluator`.
        ValueError: ``block``, ``sync_every`` or ``timeout`` out of range.
        PositionError: (when called) the ranks reached different collectives or generations.
        ImportError: mpi4py or an MPI library is missing and no ``comm`` was given.

    Examples:
        >>> from evograd import FunctionEvaluator, Mutation, noise
        >>> evaluate = MPIEvaluator(FunctionEvaluator(lambda x: (x ** 2).sum(1)))  # doctest: +SKIP
        >>> evaluate(torch.zeros(3), noise.member_seeds(0, 0, 5), Mutation()).shape  # doctest: +SKIP
        torch.Size([5])
        >>> type(evaluate).__name__  # doctest: +SKIP
        'MPIVectorEvaluator'

    References:
        Salimans et al. (2017).
    """

    def __new__(cls, local: Evaluator | None = None, *args: Any, **kwargs: Any) -> MPIEvaluator:
        # ``local`` may be absent only when ``copy`` rebuilds an instance without calling __init__
        if cls is MPIEvaluator:  # the class that declares what ``local`` offers
            if isinstance(local, ModelEvaluator):
                cls = MPIModelEvaluator
            elif isinstance(local, VectorEvaluator):
                cls = MPIVectorEvaluator
        return super().__new__(cls)

    def __init__(
        self,
        local: Evaluator,
        comm: Any = None,
        *,
        block: int | None = None,
        sync_every: int = 100,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(local, Evaluator):
            raise TypeError(
                f"local must be an evograd.Evaluator (__call__(center, seeds, mutation), evaluations, "
                f"fe), got {type(local).__name__}"
            )
        if block is None:
            block = local.chunk_size if isinstance(local, ChunkedEvaluator) else 1
        block = validate.integer("block", block, low=1)
        sync_every = validate.integer("sync_every", sync_every, low=1)
        self.timeout = resolve_timeout(timeout)
        self.local = local
        self.comm = _world(comm)
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.block, self.sync_every = block, sync_every
        self.evaluations = 0
        self.fe = 0
        self._collectives = _collectives(self.comm, self.timeout)
        self._generation, self._calls = 0, 0  # the last generation check_sync saw, evaluations since

    @property
    def generation(self) -> int:
        """The generation of the next evaluation: the last one :meth:`check_sync` saw, plus the calls since."""
        return self._generation + self._calls

    def shares(self, n: int) -> list[range]:
        """Which members each rank scores for a population of ``n``."""
        return split(n, self.size, block=self.block)

    def __call__(self, center: torch.Tensor, seeds: torch.Tensor, mutation: noise.Mutation) -> torch.Tensor:
        """Fitness of every member, identical on every rank; a collective call.

        Returns:
            (n,) float64 fitness (exact for every float dtype) on the device the local evaluator uses.
        """
        MPI = _mpi()
        n = len(seeds)
        shares = self.shares(n)
        self._warn_if_unbalanced(n, shares)
        mine = shares[self.rank]
        before = self.local.fe
        if isinstance(self.local, StatisticsEvaluator):  # rows of statistics travel with the fitness
            fitness, rows = self.local.evaluate(center, seeds[mine.start : mine.stop], mutation)
            width = self.local.statistics_width
        else:
            fitness, rows, width = self.local(center, seeds[mine.start : mine.stop], mutation), None, 0

        # --- all-gather: each rank sends its fitness, its members' rows, then the forward passes it spent
        send = np.empty(len(mine) * (1 + width) + 1, dtype=np.float64)
        send[: len(mine)] = fitness.detach().cpu().double().numpy()
        if width:
            send[len(mine) : -1] = rows.detach().cpu().double().numpy().reshape(-1)
        send[-1] = self.local.fe - before
        counts = [len(share) * (1 + width) + 1 for share in shares]
        offsets = [share.start * (1 + width) + r for r, share in enumerate(shares)]
        gathered = np.empty(n * (1 + width) + self.size, dtype=np.float64)
        receive = [gathered, counts, offsets, MPI.DOUBLE]
        if self._collectives is None:
            self.comm.Allgatherv(send, receive)
        else:
            self._collectives.allgatherv(send, receive, kind="evaluation", generation=self.generation, size=n)
        self._calls += 1

        parts = [gathered[offset : offset + count] for offset, count in zip(offsets, counts)]
        self.evaluations += n
        self.fe += int(sum(part[-1] for part in parts))
        if rows is not None:  # every rank merges the whole population's rows, in member order
            everyone = [part[len(share) : -1].reshape(len(share), width) for part, share in zip(parts, shares)]
            self.local.absorb(torch.from_numpy(np.concatenate(everyone)))
        everything = np.concatenate([part[: len(share)] for part, share in zip(parts, shares)])
        return torch.from_numpy(everything).to(device=fitness.device)  # (n,) float64, as gathered

    def _warn_if_unbalanced(self, n: int, shares: list[range]) -> None:
        """Warn once, on the first call, when a block is larger than a fair share of the population."""
        largest, fair = max(len(share) for share in shares), math.ceil(n / self.size)
        if self.evaluations == 0 and self.block > fair and largest > fair:
            warnings.warn(
                f"MPIEvaluator: ranks receive whole blocks of {self.block} members so fitness does not "
                f"depend on the rank count; with {n} members on {self.size} ranks the largest share is "
                f"{largest} (ideal {fair}). Lower the local evaluator's chunk_size "
                f"to at most {max(1, n // self.size)}, or pass block=1 (balanced, float-tolerance "
                "equality only).",
                RuntimeWarning,
                stacklevel=3,
            )

    def check_sync(self, obj: Any, generation: int, *, final: bool = False) -> int | None:
        """Compare ``obj`` across ranks when ``generation`` is a multiple of ``sync_every`` or ``final``.

        All ranks must call it with the same ``generation``; when no check is due it returns at once
        without communicating.

        It also tells the evaluator the generation, which the deadline's messages report.

        Returns:
            The common digest when a check ran, else None.

        Raises:
            SyncError: see :func:`check_sync`.
            PositionError: the ranks are not all in this check at this generation.
        """
        self._generation, self._calls = validate.integer("generation", generation, low=0), 0
        if self._collectives is not None:
            self._collectives.note(generation)
        if final or generation % self.sync_every == 0:
            return _check_digests(obj, generation, self.comm, self._collectives)
        return None


class MPIModelEvaluator(MPIEvaluator):
    """An :class:`MPIEvaluator` of a :class:`~evograd.protocols.ModelEvaluator`, and one itself.

    Populations are split across the ranks; ``model``, ``batch``, ``set_batch`` and ``objective``
    are the local evaluator's. Every rank must set the same batch (every rank runs the same loop),
    and the loss ``objective`` returns is computed in full on every rank: the same batch gives the
    same value everywhere, with no reduction whose float order depends on the number of ranks.
    """

    local: ModelEvaluator

    @property
    def model(self) -> nn.Module:
        """The local evaluator's model (every rank holds the same parameters)."""
        return self.local.model

    @property
    def batch(self) -> Batch:
        """The batch the local evaluator scores on."""
        return self.local.batch

    def set_batch(self, batch: Batch) -> None:
        """Hand ``batch`` to the local evaluator; every rank must hand the same one."""
        self.local.set_batch(batch)

    def objective(self) -> tuple[ParamsLoss, int]:
        """The local evaluator's loss on one batch (see :meth:`evograd.protocols.ModelEvaluator.objective`)."""
        return self.local.objective()


class MPIVectorEvaluator(MPIEvaluator):
    """An :class:`MPIEvaluator` of a :class:`~evograd.protocols.VectorEvaluator`, and one itself.

    Populations are split across the ranks; ``vector_objective`` is the local evaluator's, computed
    in full on every rank.
    """

    local: VectorEvaluator

    def vector_objective(self) -> tuple[VectorLoss, int]:
        """The local evaluator's function of one vector (see :class:`evograd.protocols.VectorEvaluator`)."""
        return self.local.vector_objective()
